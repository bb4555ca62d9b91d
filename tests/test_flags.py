"""Numeric flags are checked before anything is read, uploaded or sent: a bad value (out of
range, NaN, infinity) is blamed on the flag by name, exit 2, stdout empty, the server untouched.
A --max-bytes smaller than a line is the flag's fault, not the line's."""

from __future__ import annotations

import json
import os

import pytest
from _dwbatches.core.apifacts import MAX_FILE_BYTES
from helpers import is_error, ok_json, run, run_script, write_input


def assert_blamed(proc, flag, value):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert is_error(proc.stdout)
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"error: {flag} must be ") and first.endswith(f", not {value}"), proc.stderr
    assert f"hint: e.g. {flag} " in proc.stderr
    assert "unexpected" not in proc.stderr


SUBMIT_CASES = [
    ("--max-cost", "nan"),
    ("--max-cost", "inf"),
    ("--max-cost", "-1"),
    ("--max-requests", "0"),
    ("--max-bytes", "0"),
    ("--max-body-bytes", "0"),
    ("--parallel", "0"),
]


@pytest.mark.parametrize("flag, value", SUBMIT_CASES)
@pytest.mark.parametrize("script", ["submit.py", "run_batch.py"])
def test_submit_flags_are_refused_before_anything_is_sent(sandbox, script, flag, value):
    write_input("in.jsonl", 3)
    before = sandbox.stats()
    proc = run(script, "in.jsonl", flag, value, env=sandbox.env())
    assert_blamed(proc, flag, value)
    assert sandbox.stats() == before  # nothing uploaded, nothing created
    assert not os.path.exists("in.dwjob")


def test_a_dry_run_refuses_them_too(sandbox):
    write_input("in.jsonl", 3)
    assert_blamed(run("submit.py", "in.jsonl", "--dry-run", "--max-cost", "nan"), "--max-cost", "nan")


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--timeout", "nan"),
        ("--interval", "nan"),
        ("--interval", "0"),
        ("--timeout", "-1"),
        ("--timeout", "inf"),
        ("--interval", "-0.5"),
    ],
)
def test_wait_flags_are_refused(sandbox, flag, value):
    write_input("in.jsonl", 2)
    job = ok_json(run("submit.py", "in.jsonl", env=sandbox.env()))["job"]
    before = sandbox.stats()
    assert_blamed(run("poll.py", "--job", job, "--wait", flag, value, env=sandbox.env()), flag, value)
    assert_blamed(run("run_batch.py", "in.jsonl", "--wait", flag, value, env=sandbox.env()), flag, value)
    assert sandbox.stats() == before


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--top-p", "5"),
        ("--top-p", "0"),
        ("--top-p", "-0.5"),
        ("--top-p", "nan"),
        ("--temperature", "-1"),
        ("--temperature", "nan"),
        ("--temperature", "inf"),
        ("--limit", "0"),
        ("--max-tokens", "0"),
        ("--max-tokens", "-3"),
    ],
)
def test_build_flags_are_refused_and_nothing_is_written(flag, value):
    with open("p.txt", "w") as fh:
        fh.write("hi\n")
    assert_blamed(run("create_batch_file.py", "o.jsonl", "--prompts", "p.txt", flag, value), flag, value)
    assert sorted(os.listdir(".")) == ["p.txt"]


def test_build_accepts_the_edges_of_the_ranges():
    with open("p.txt", "w") as fh:
        fh.write("hi\n")
    ok_json(run("create_batch_file.py", "o.jsonl", "--prompts", "p.txt", "--top-p", "1", "--temperature", "0"))
    with open("o.jsonl") as fh:
        body = json.loads(fh.readline())["body"]
    assert body["top_p"] == 1.0 and body["temperature"] == 0.0


@pytest.mark.parametrize(
    "flag, value", [("--max-bytes", "0"), ("--max-requests", "0"), ("--max-body-bytes", "-1"), ("--max-errors", "-1")]
)
def test_validate_flags_are_refused(flag, value):
    write_input("in.jsonl", 2)
    assert_blamed(run("validate_batch_file.py", "in.jsonl", flag, value), flag, value)


def test_a_max_bytes_below_a_line_blames_the_flag_not_the_lines(sandbox):
    write_input("in.jsonl", 3)
    size = len(open("in.jsonl", "rb").readline())
    before = sandbox.stats()
    for args in (["--max-bytes", "10"], ["--max-bytes", "10", "--dry-run"]):
        code, doc, err = run_script("submit.py", "in.jsonl", *args, env=sandbox.env())
        assert code == 2 and is_error(doc)
        assert f"error: --max-bytes 10 is smaller than line 1 ({size} bytes) and 2 more line(s)" in err
        assert f"hint: Use --max-bytes {size} or more (the longest line), or leave --max-bytes out" in err
        assert f"{MAX_FILE_BYTES} bytes" in err
        assert "file limit" not in err.split("hint:")[0]  # no line is blamed
        assert "line 2" not in err
    assert sandbox.stats() == before and not os.path.exists("in.dwjob")
    code, doc, err = run_script("validate_batch_file.py", "in.jsonl", "--max-bytes", "10")
    assert code == 2 and is_error(doc) and "--max-bytes 10 is smaller than line 1" in err
    # a chunk size every line fits in still splits the file
    code, doc, err = run_script("submit.py", "in.jsonl", "--max-bytes", str(size), "--dry-run")
    assert code == 0 and doc["chunks"] == 3, err


def test_with_a_bad_line_too_the_bad_line_is_reported_first():
    write_input("in.jsonl", 2)
    with open("in.jsonl", "a") as fh:
        fh.write("{not json\n")
    code, doc, err = run_script("submit.py", "in.jsonl", "--max-bytes", "10", "--dry-run")
    assert code == 2 and is_error(doc)
    assert "line 3: invalid JSON" in err and "1 invalid line(s)" in err and "smaller than line" not in err
