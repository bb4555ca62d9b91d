"""The agent contract, pinned to the code: what `--help` promises is what the scripts do.

- For each script, the JSON fields listed in its `--help` ("output (stdout, JSON): ...") are
  exactly the top-level fields it prints, over the situations its report covers.
- Each exit code in SKILL.md's table is produced by at least one test.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest
from helpers import ROOT, SCRIPTS, make_job, run_script, wait_job, write_input

TESTS = ROOT / "tests"


def help_text(script: str) -> str:
    return subprocess.run([sys.executable, str(SCRIPTS / script), "--help"], capture_output=True, text=True,
                          timeout=60, check=True).stdout


def documented_fields(script: str) -> Tuple[Set[str], Set[str]]:
    """(fields, optional fields) of the "output ... (stdout, JSON): ..." paragraphs of a
    script's --help: the first word of each comma-separated item, outside parentheses and
    braces, up to the sentence's end. A field whose note starts with "only" may be absent."""
    text = " ".join(help_text(script).split())
    fields: Set[str] = set()
    optional: Set[str] = set()
    for m in re.finditer(r"output[^:(]*\(stdout, JSON[^)]*\): ", text):
        depth, item, note, items = 0, "", "", []
        for i in range(m.end(), len(text)):
            ch = text[i]
            if ch in "({[":
                depth += 1
            elif ch in ")}]":
                depth -= 1
            elif depth == 0 and ch == "." and (i + 1 == len(text) or text[i + 1] == " "):
                break
            elif depth == 0 and ch == ",":
                items.append((item, note))
                item, note = "", ""
                continue
            if depth == 0 and ch not in ")}]":
                item += ch
            else:
                note += ch
        items.append((item, note))
        for item, note in items:
            for part in re.split(r"\band\b", item):
                word = part.strip().split(" ")[0]
                if re.fullmatch(r"[a-z][a-z0-9_]*", word):
                    fields.add(word)
                    if note.lstrip("({[ ").startswith("only"):
                        optional.add(word)
    assert fields, f"{script} --help lists no output fields"
    return fields, optional


SCENARIOS: Dict[str, List[List[str]]] = {
    "create_batch_file.py": [["built.jsonl"]],
    "submit.py": [["other.jsonl"], ["other.jsonl", "--dry-run"]],
    "poll.py": [["--job", "ex.dwjob"]],
    "fetch_results.py": [["--job", "ex.dwjob"], ["BATCH", "-o", "bare.jsonl"]],
    "retry_failed.py": [["--job", "ex.dwjob"], ["--job", "ex.dwjob", "--dry-run"]],
    "run_batch.py": [["ex.jsonl", "--wait", "--interval", "0.2"], ["late.jsonl"]],
    "list_batches.py": [[]],
    "list_models.py": [[]],
    "cancel_batch.py": [["--job", "ex.dwjob", "--dry-run"], ["--job", "ex.dwjob"]],
    "check_setup.py": [[]],
}


@pytest.fixture
def workspace(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.05", "--concurrency", "4")
    write_input("ex.jsonl", 4)
    write_input("other.jsonl", 3, prefix="o-")
    write_input("late.jsonl", 200, prefix="l-")
    sb.set_faults({"fail_custom_ids": ["req-1"], "fail_status": 500})
    job = make_job(sb, "ex.jsonl")
    wait_job(sb, job)
    return sb


def test_help_lists_exactly_the_fields_each_script_prints(workspace):
    sb = workspace
    printed: Dict[str, Set[str]] = {}
    bid = json.loads(Path("ex.dwjob", "job.json").read_text())["rounds"][0]["chunks"][0]["batch_id"]
    for script, runs in SCENARIOS.items():
        seen: Set[str] = set()
        for args in runs:
            args = [bid if a == "BATCH" else a for a in args]
            code, doc, err = run_script(script, *args, env=sb.env())
            assert doc is not None, (script, args, code, err)
            seen |= set(doc)
        printed[script] = seen
    problems = []
    for script, seen in printed.items():
        doc, optional = documented_fields(script)
        if seen - doc or doc - optional - seen:
            problems.append(f"{script}: printed but not in --help {sorted(seen - doc)}; "
                            f"in --help but never printed {sorted(doc - optional - seen)}")
    assert not problems, "\n".join(problems)


def test_every_exit_code_in_skill_md_is_produced_by_a_test():
    table = (ROOT / "SKILL.md").read_text(encoding="utf-8").split("## Exit codes", 1)[1].split("##", 1)[0]
    codes = [int(c) for c in re.findall(r"^\| (\d+) \|", table, re.M)]
    assert codes[:7] == [0, 1, 2, 3, 4, 5, 6], codes
    tests = "\n".join(p.read_text(encoding="utf-8") for p in TESTS.glob("test_*.py"))
    for code in codes:
        pattern = rf"\b(?:code|rc|returncode|exit_code)\s*==\s*{code}\b|\bEXIT_\w+\b.*# {code}\b"
        if code == 130:
            pattern = r"\b130\b|EXIT_INTERRUPTED"
        assert re.search(pattern, tests), f"no test checks exit code {code}"
