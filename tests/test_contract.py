"""The agent contract, pinned to the code: what `--help` and SKILL.md promise is what the scripts do.

- For each script, the JSON fields listed in its `--help` ("output (stdout, JSON): ...", and
  validate_batch_file.py's "report fields") are exactly the fields it prints, over the
  situations its report covers; where the `--help` lists the fields of a field (in
  parentheses or braces), those too: every key printed there is named, and every field
  named is printed somewhere below it.
- Each exit code in SKILL.md's table is produced here, by the scripts against the sandbox,
  with the stdout the table promises (JSON for 5 and 6, nothing otherwise, `error:` on stderr).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Set, Tuple

import pytest
from helpers import ROOT, SCRIPTS, is_error, make_job, run, run_script, wait_job, write_input

# -- what the --help texts document ----------------------------------------------------------


def help_text(script: str) -> str:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / script), "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout


def split_top(text: str, seps: str) -> List[Tuple[str, str]]:
    """Items of ``text`` split at ``seps`` outside brackets: (the item's text at depth 0, the
    text inside its brackets, brackets included), up to the end of the first sentence."""
    depth, item, note, items = 0, "", "", []
    for i, ch in enumerate(text):
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        elif depth == 0 and ch == "." and (i + 1 == len(text) or text[i + 1] == " "):
            break
        elif depth == 0 and ch in seps:
            items.append((item, note))
            item, note = "", ""
            continue
        if depth == 0 and ch not in ")}]":
            item += ch
        else:
            note += ch
    items.append((item, note))
    return items


WORD = re.compile(r"[a-z][a-z0-9_]*")


def named_fields(text: str, seps: str = ",") -> List[Tuple[str, bool, str]]:
    """(field, optional, note) for each item of a field list: the item's first word, when the
    item names a field (the word alone, or followed by = : ( { [, or a snake_case word); an
    item whose note starts with "only", or followed by "when", may be absent."""
    out = []
    for item, note in split_top(text, seps):
        parts = re.split(r"\band\b", item)
        for k, part in enumerate(parts):
            part = part.strip()
            m = WORD.match(part)
            if not m:
                continue
            word, rest = m.group(), part[m.end() :].strip()
            last = k == len(parts) - 1
            if rest and rest[0] not in "=:({[" and "_" not in word:
                continue  # prose ("which --max-cost compares", "null when ...")
            optional = rest.startswith("when") or (last and note.lstrip("({[ ").startswith("only"))
            out.append((word, optional, note if last else ""))
    return out


def documented(script: str) -> Tuple[Dict[str, List[str]], Set[str]]:
    """({field: the notes that list its fields, one per paragraph}, optional fields) of a
    script's --help."""
    text = " ".join(help_text(script).split())
    fields: Dict[str, List[str]] = {}
    optional: Set[str] = set()
    if script == "validate_batch_file.py":
        block = help_text(script).split("report fields", 1)[1].split("\n\n", 1)[0]
        for name in re.findall(r"^  ([a-z_]+)\s{2,}", block, re.M):
            fields[name] = []
    for m in re.finditer(r"output[^:(]*\(stdout, JSON[^)]*\): ", text):
        for word, opt, note in named_fields(text[m.end() :]):
            fields.setdefault(word, []).append(note)
            if opt:
                optional.add(word)
    assert fields, f"{script} --help lists no output fields"
    return fields, optional


def nested_fields(note: str) -> Tuple[Set[str], Set[str]]:
    """(fields, optional fields) a note lists: the items of its outer brackets."""
    inner = note.strip()
    if not inner or inner[0] not in "({[":
        return set(), set()
    inner = inner[1:-1] if inner[-1] in ")}]" else inner[1:]
    inner = inner.lstrip("{[")  # [{round, ...}]: a list of objects
    items = named_fields(inner, ",;")
    return {w for w, _, _ in items}, {w for w, opt, _ in items if opt}


def keys_below(value: Any, deep: bool) -> Set[str]:
    """The keys of an object (or of the objects in a list); ``deep``: at every level."""
    out: Set[str] = set()
    values = value if isinstance(value, list) else [value]
    for v in values:
        if isinstance(v, dict):
            out |= set(v)
            if deep:
                for x in v.values():
                    out |= keys_below(x, True)
        elif isinstance(v, list) and deep:
            out |= keys_below(v, True)
    return out


def contract_problems(script: str, docs: List[Dict[str, Any]]) -> List[str]:
    fields, optional = documented(script)
    seen = set().union(*(set(d) for d in docs))
    problems = []
    if seen - set(fields) or set(fields) - optional - seen:
        problems.append(
            f"{script}: printed but not in --help {sorted(seen - set(fields))}; "
            f"in --help but never printed {sorted(set(fields) - optional - seen)}"
        )
    for name, notes in fields.items():
        listed, maybe = set(), set()
        for note in notes:
            a, b = nested_fields(note)
            listed, maybe = listed | a, maybe | b
        note = " ".join(notes)
        values = [d[name] for d in docs if d.get(name) is not None]
        first = set().union(*(keys_below(v, False) for v in values)) if values else set()
        every = set().union(*(keys_below(v, True) for v in values)) if values else set()
        if not listed & every:
            continue  # the help lists no fields of it (a prose note, or a map of names)
        unnamed = {k for k in first if not re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", note)}
        never = listed - maybe - every
        if unnamed or never:
            problems.append(
                f"{script}: {name}: printed but not in --help {sorted(unnamed)}; "
                f"in --help but never printed {sorted(never)}"
            )
    return problems


# -- the scenarios ---------------------------------------------------------------------------

SCENARIOS: Dict[str, List[List[str]]] = {
    "create_batch_file.py": [
        ["built.jsonl"],
        [
            "rebuilt.jsonl",
            "--from-batch",
            "ex.jsonl",
            "-m",
            "Qwen/Qwen3.5-9B",
            "--max-tokens",
            "50",
            "--reasoning",
            "none",
        ],
    ],
    "submit.py": [["other.jsonl"], ["other.jsonl", "--dry-run"]],
    "poll.py": [["--job", "ex.dwjob"]],
    "fetch_results.py": [["--job", "ex.dwjob"], ["BATCH", "-o", "bare.jsonl"]],
    "retry_failed.py": [["--job", "ex.dwjob", "--dry-run"], ["--job", "ex.dwjob"]],
    "run_batch.py": [["ex.jsonl", "--wait", "--interval", "0.2"], ["late.jsonl"]],
    "list_batches.py": [[]],
    "list_models.py": [[], ["--for", "ex.jsonl"]],
    "cancel_batch.py": [["--job", "ex.dwjob", "--dry-run"], ["--job", "ex.dwjob"]],
    "check_setup.py": [[]],
    "validate_batch_file.py": [
        ["ex.jsonl", "--report", "valid.report.json"],
        ["broken.jsonl", "--report", "broken.report.json"],
    ],
}


@pytest.fixture
def workspace(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.05", "--concurrency", "4")
    write_input("ex.jsonl", 4)
    write_input("other.jsonl", 3, prefix="o-")
    write_input("late.jsonl", 200, prefix="l-")
    Path("broken.jsonl").write_text(Path("ex.jsonl").read_text() + "{not json\n")
    sb.set_faults({"fail_custom_ids": ["req-1"], "fail_status": 500})
    job = make_job(sb, "ex.jsonl")
    wait_job(sb, job)
    return sb


@pytest.mark.slow  # several script runs or a server restart: in make test, not the inner loop
def test_help_lists_exactly_the_fields_each_script_prints(workspace):
    sb = workspace
    bid = json.loads(Path("ex.dwjob", "job.json").read_text())["rounds"][0]["chunks"][0]["batch_id"]
    problems = []
    for script, runs in SCENARIOS.items():
        docs = []
        for args in runs:
            args = [bid if a == "BATCH" else a for a in args]
            code, doc, err = run_script(script, *args, env=sb.env())
            if "--report" in args:  # validate_batch_file.py: the report file, and stdout when valid
                report = json.loads(Path(args[args.index("--report") + 1]).read_text())
                assert is_error(doc) or doc == report, (script, args)
                doc = report
            assert doc is not None, (script, args, code, err)
            docs.append(doc)
        problems += contract_problems(script, docs)
    assert not problems, "\n".join(problems)


def test_the_field_parser_reads_nested_lists_and_skips_prose():
    fields = named_fields(
        "job, batches (batch_id, round), estimated_cost (usd = the server's estimate, which "
        "--max-cost compares; low and high: usd; chunks_estimated of chunks; null when unknown), "
        "hint (only for batch ids), next."
    )
    assert [(w, opt) for w, opt, _ in fields] == [
        ("job", False),
        ("batches", False),
        ("estimated_cost", False),
        ("hint", True),
        ("next", False),
    ]
    listed, _ = nested_fields({w: n for w, _, n in fields}["estimated_cost"])
    assert listed == {"usd", "low", "high", "chunks_estimated"}


# -- every exit code of SKILL.md's table, produced here ----------------------------------------


def skill_exit_codes() -> List[int]:
    table = (ROOT / "SKILL.md").read_text(encoding="utf-8").split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    return [int(c) for c in re.findall(r"^\| (\d+) \|", table, re.M)]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def interrupted(sb: Any, job: str) -> Tuple[int, str, str]:
    """poll.py --wait on a running job, interrupted (Ctrl-C) while it waits."""
    # A child inherits an ignored SIGINT (as the tests have it when they run in the background
    # of a shell without job control): it starts with the default disposition here, as in a terminal.
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPTS / "poll.py"), "--job", job, "--wait", "--interval", "5"],
            env=sb.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        first = proc.stderr.readline()  # the first progress line: it is waiting now
        assert "done" in first, first
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"SIGINT ignored; stderr: {exc.stderr!r}"[:3000]) from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return proc.returncode, out, first + err


@pytest.mark.slow
def test_every_exit_code_in_skill_md_is_produced_here(workspace, sandbox_factory):
    codes = skill_exit_codes()
    assert codes[:7] == [0, 1, 2, 3, 4, 5, 6], codes
    sb = workspace
    # a job still running whenever it is looked at, however busy the machine: one request at a
    # time, ten minutes each
    slow = sandbox_factory("--latency", "600", "--concurrency", "1")
    write_input("slow.jsonl", 30, prefix="s-")
    running = make_job(slow, "slow.jsonl")
    wrong_key = dict(sb.env(), DOUBLEWORD_API_KEY="sk-wrong-key-0123456789")
    offline = dict(sb.env(), DOUBLEWORD_BASE_URL=f"http://127.0.0.1:{closed_port()}/v1")
    # exit 1 for a busy job: another command holds the job's lock (this test, here) while a
    # fetch waits for it (about 10 s, alongside the other scenarios)
    from _dwbatches.core.compat import FileLock

    write_input("held.jsonl", 2, prefix="h-")
    held = make_job(sb, "held.jsonl")
    lock = FileLock(os.path.join(held, "job.lock"))
    assert lock.acquire()
    busy = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "fetch_results.py"), "--job", held],
        env=sb.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def script(name: str, *args: str, env: Dict[str, str]) -> Callable[[], Tuple[int, str, str]]:
        def go() -> Tuple[int, str, str]:
            proc = run(name, *args, env=env)
            return proc.returncode, proc.stdout, proc.stderr

        return go

    def busy_fetch() -> Tuple[int, str, str]:
        try:
            out, err = busy.communicate(timeout=60)
        finally:
            lock.release()
        assert "another command is working on the job at" in err, err
        return busy.returncode, out, err

    scenarios: Dict[int, List[Callable[[], Tuple[int, str, str]]]] = {
        0: [script("poll.py", "--job", running, env=slow.env())],  # one check: reported
        1: [script("list_batches.py", env=offline), busy_fetch],  # the API cannot be reached; a busy job
        2: [script("submit.py", "other.jsonl", "--max-cost", "nan", env=sb.env())],
        3: [script("list_batches.py", env=wrong_key)],  # 401
        4: [
            script("poll.py", "--job", "nowhere.dwjob", env=sb.env()),
            script("poll.py", "00000000-0000-4000-8000-000000000000", env=sb.env()),
        ],  # no job; 404
        5: [script("fetch_results.py", "--job", "ex.dwjob", env=sb.env())],  # req-1 failed
        6: [script("fetch_results.py", "--job", running, env=slow.env())],  # still running
        130: [lambda: interrupted(slow, running)],
    }
    assert set(codes) <= set(scenarios), f"no scenario for {sorted(set(codes) - set(scenarios))}"
    for code in codes:
        for scenario in scenarios[code]:
            if code == 130 and os.name == "nt":
                continue  # (no SIGINT to a child there)
            got, out, err = scenario()
            assert got == code, f"expected exit {code}, got {got}\nstdout: {out}\nstderr: {err}"
            if code in (0, 5, 6):
                assert json.loads(out), (code, out)  # the JSON report is printed
            else:
                assert is_error(out), (code, out)  # nothing on stdout
                assert "error: " in err, (code, err)
                if code != 130:
                    assert "hint: " in err, (code, err)


@pytest.mark.slow
def test_every_printed_next_runs_as_printed_and_succeeds(workspace):
    """Each scenario's ``next`` (a command for the agent to run next) runs exactly as printed, from
    the same folder, and ends in an outcome (exit 0, 5 finished unsuccessfully, or 6 not finished
    yet), never in a refusal or an error."""
    sb = workspace
    bid = json.loads(Path("ex.dwjob", "job.json").read_text())["rounds"][0]["chunks"][0]["batch_id"]
    ran, problems = 0, []
    for script, runs in SCENARIOS.items():
        for args in runs:
            args = [bid if a == "BATCH" else a for a in args]
            code, doc, err = run_script(script, *args, env=sb.env())
            nxt = (doc or {}).get("next")
            if not nxt:
                continue
            argv = shlex.split(nxt)
            assert Path(argv[1]).parent.resolve() == SCRIPTS.resolve(), nxt
            code, after, err = run_script(Path(argv[1]).name, *argv[2:], env=sb.env())
            ran += 1
            if code not in (0, 5, 6) or is_error(after):
                problems.append(f"{script} {' '.join(args)} printed {nxt!r}: exit {code}: {err.strip()[-300:]}")
    assert ran >= 10, ran
    assert not problems, "\n".join(problems)
