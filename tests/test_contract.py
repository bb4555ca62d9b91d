"""The agent contract, pinned to the code: what `--help` and SKILL.md promise is what the scripts do.

- Each script's report is declared once (``workflow/reports.py``); its ``--help`` shows that
  declaration, and every document it prints over the situations below matches it: every key
  printed is declared, every value has the JSON type declared (objects and list items
  included, null only where declared nullable), every declared field that is not optional is
  printed. The checker itself is checked on doctored documents, so that this can fail.
- Each exit code in SKILL.md's table is produced here, by the scripts against the sandbox,
  with the stdout the table promises (JSON for 5 and 6, nothing otherwise, `error:` on stderr).
"""

from __future__ import annotations

import copy
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
from typing import Any, Callable, Dict, List, Tuple

import pytest
from _dwbatches.core import reportspec
from _dwbatches.core.errors import SCRIPT_EXITS
from _dwbatches.workflow.reports import REPORTS
from helpers import ROOT, SCRIPTS, is_error, make_job, run, run_script, wait_job, write_input

# -- the declarations ------------------------------------------------------------------------


def help_text(script: str) -> str:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / script), "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout


@pytest.mark.parametrize("script", sorted(SCRIPT_EXITS))
def test_every_script_declares_its_report_and_its_help_shows_it(script):
    assert script in REPORTS, f"{script}: no report declared in workflow/reports.py"
    shown = " ".join(help_text(script).split())
    assert " ".join(reportspec.help_text(REPORTS[script]).split()) in shown
    assert shown.count("(stdout, JSON): ") == len(REPORTS[script].shapes)  # no hand-written list beside it


def test_the_checker_catches_what_differs_from_the_declaration():
    rep = REPORTS["poll.py"]
    good: Dict[str, Any] = {
        "status": "in_progress",
        "finished": False,
        "request_counts": {"total": 2, "completed": 1, "failed": 0},
        "answers": None,
        "batches": [
            {
                "batch_id": "b1",
                "status": "in_progress",
                "request_counts": {"total": 2, "completed": 1, "failed": 0},
                "output_file_id": None,
                "error_file_id": None,
                "expires_at": 1700000000,
                "round": 1,
                "chunk": 1,
            }
        ],
        "unsubmitted": [],
        "duplicates": [],
        "rate": 0.5,
        "eta_seconds": 2,
        "timed_out": False,
        "job": "data.dwjob",
        "next": None,
        "batches_omitted": 0,
    }
    assert reportspec.problems(rep, good) == []

    def doctored(change: Callable[[Dict[str, Any]], None]) -> List[str]:
        doc = copy.deepcopy(good)
        change(doc)
        return reportspec.problems(rep, doc)

    assert doctored(lambda d: d.update(surprise=1)) == ["poll.py: surprise: printed but not declared"]
    assert doctored(lambda d: d["batches"][0].update(extra="x")) == [
        "poll.py: batches[0].extra: printed but not declared"
    ]
    assert doctored(lambda d: d.update(finished="no")) == ["poll.py: finished: str, declared bool"]
    assert doctored(lambda d: d["request_counts"].update(total=2.5)) == [
        "poll.py: request_counts.total: number, declared int"
    ]
    assert doctored(lambda d: d["batches"][0]["request_counts"].update(failed=True)) == [
        "poll.py: batches[0].request_counts.failed: bool, declared int"
    ]
    assert doctored(lambda d: d.update(timed_out=None)) == ["poll.py: timed_out: null, declared not nullable"]
    assert doctored(lambda d: d.pop("status")) == ["poll.py: status: declared but not printed"]
    assert doctored(lambda d: d.update(batches={})) == ["poll.py: batches: an object, declared a list"]
    assert doctored(lambda d: d["batches"][0].pop("round")) == []  # optional: only for a job
    assert doctored(lambda d: d.update(rate=3)) == []  # an int is a number
    # a report of several forms: each document is checked against the nearest one
    dry = {f.name: None for f in REPORTS["submit.py"].shapes[1].fields}
    assert any("dry_run: null" in p for p in reportspec.problems(REPORTS["submit.py"], dry))
    # one_of: either shape passes, neither does not
    either = reportspec.field("x", reportspec.one_of(reportspec.INT, reportspec.list_of(reportspec.STR)))
    assert reportspec.check_value(either, 3, "x") == reportspec.check_value(either, ["a"], "x") == []
    assert reportspec.check_value(either, "a", "x")


def test_the_help_reads_as_fields_with_their_notes():
    text = " ".join(reportspec.help_text(REPORTS["fetch_results.py"]).split())
    assert text.startswith("output (stdout, JSON): complete (every batch ended")
    assert "request_counts {total, completed, failed}" in text
    assert "failed_sample (up to 5) [{custom_id, error}]" in text
    assert "state (only for batch ids: the state file)" in text
    text = reportspec.help_text(REPORTS["submit.py"])
    assert "\n\noutput with --dry-run (stdout, JSON): dry_run," in text
    assert all(len(line) <= 95 for line in text.splitlines())


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
    "list_batches.py": [[], ["--jobs"], ["--input", "ex.jsonl"], ["--answers"]],
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
def test_every_report_printed_matches_its_declaration(workspace):
    sb = workspace
    bid = json.loads(Path("ex.dwjob", "job.json").read_text())["rounds"][0]["chunks"][0]["batch_id"]
    problems, forms = [], {}
    for script, runs in SCENARIOS.items():
        for args in runs:
            args = [bid if a == "BATCH" else a for a in args]
            code, doc, err = run_script(script, *args, env=sb.env())
            if "--report" in args:  # validate_batch_file.py: the report file, and stdout when valid
                report = json.loads(Path(args[args.index("--report") + 1]).read_text())
                assert is_error(doc) or doc == report, (script, args)
                doc = report
            assert doc is not None and not is_error(doc), (script, args, code, err)
            found = reportspec.problems(REPORTS[script], doc)
            problems += [f"{p}  ({' '.join(args)})" for p in found]
            forms.setdefault(script, set()).add(reportspec.form_of(REPORTS[script], doc))
    assert not problems, "\n".join(problems)
    for script, rep in REPORTS.items():  # every form of every report was printed
        assert forms.get(script) == set(range(len(rep.shapes))), (script, forms.get(script))


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
