"""The bad-input corpus (tests/data/bad, described by MANIFEST.json).

Every bad batch file must be refused locally by submit.py and validate_batch_file.py: exit 2,
the error document on stdout, the physical line number and the reason on stderr, and no upload reaching
the sandbox. Every bad build input must be refused by create_batch_file.py the same way,
leaving no output file behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import is_error
from sandbox_helper import Sandbox

DATA = Path(__file__).resolve().parent / "data" / "bad"
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
MANIFEST = json.loads((DATA / "MANIFEST.json").read_text(encoding="utf-8"))["cases"]
BATCH_CASES = sorted(name for name, case in MANIFEST.items() if case.get("tool") != "create_batch_file")
BUILD_CASES = sorted(name for name, case in MANIFEST.items() if case.get("tool") == "create_batch_file")


@pytest.fixture(scope="module")
def shared_sandbox(tmp_path_factory):
    """One sandbox for the whole corpus: none of these cases may reach it."""
    sb = Sandbox(tmp_path_factory.mktemp("bad-inputs") / "data", api_key="sk-test-bad-inputs-" + "k" * 24)
    sb.start()
    yield sb
    sb.stop()


def run_main(module_name, args, capsys):
    module = __import__(module_name)
    code = module.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def case_args(name):
    return [a.replace("{file}", str(DATA / name)) for a in MANIFEST[name].get("args", [])]


def assert_refused(name, code, out, err):
    case = MANIFEST[name]
    assert code == 2, err
    assert is_error(out)
    assert f"line {case['line']}" in err, err
    assert case["message"] in err, err
    if case.get("also_line"):
        assert f"line {case['also_line']}" in err


def test_the_corpus_covers_the_required_cases():
    assert len(MANIFEST) >= 40
    for name in MANIFEST:
        assert (DATA / name).is_file(), name
    assert sorted(p.name for p in DATA.iterdir() if p.name != "MANIFEST.json") == sorted(MANIFEST)
    messages = " ".join(c["message"] for c in MANIFEST.values())
    for needed in (
        "invalid JSON",
        "missing field(s) custom_id",
        "missing field(s) method",
        "missing field(s) url",
        "missing field(s) body",
        "duplicate custom_id",
        "65 bytes",
        "control character",
        "only POST",
        "is not allowed",
        "body.model is missing",
        '"stream": true',
        "invalid UTF-8",
        "byte-order mark",
        "no requests",
        "got array",
        "got string",
        "body.messages is missing",
        "body.input is missing",
        "NaN",
        "the server allows at most",
        "{review}",
        "id column",
        "CSV is empty",
    ):
        assert needed in messages, needed


@pytest.mark.parametrize("name", BATCH_CASES)
def test_submit_refuses_bad_file_locally(name, shared_sandbox, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("DOUBLEWORD_API_KEY", shared_sandbox.api_key)
    monkeypatch.setenv("DOUBLEWORD_BASE_URL", shared_sandbox.base_url)
    code, out, err = run_main("submit", [DATA / name, "--job", tmp_path / "job", *case_args(name)], capsys)
    assert_refused(name, code, out, err)
    assert "nothing was sent" in err
    assert not (tmp_path / "job").exists()
    stats = shared_sandbox.stats()
    assert stats["uploads_received"] == 0 and stats["files"] == 0 and stats["batches"] == 0
    assert stats["requests"] == {}


@pytest.mark.parametrize("name", BATCH_CASES)
def test_validate_refuses_bad_file(name, capsys, tmp_path):
    report = tmp_path / "report.json"
    code, out, err = run_main("validate_batch_file", [DATA / name, "--report", report, *case_args(name)], capsys)
    assert_refused(name, code, out, err)
    if MANIFEST[name].get("flag"):  # a usage error: the flag is wrong, not the file; no report
        assert f"error: {MANIFEST[name]['flag']} " in err and not report.exists()
        return
    doc = json.loads(report.read_text())
    assert doc["valid"] is False and doc["errors"][0]["line"] == MANIFEST[name]["line"]
    assert doc["errors_total"] == MANIFEST[name].get("errors", 1)


@pytest.mark.parametrize("name", BUILD_CASES)
def test_create_batch_file_refuses_bad_input(name, capsys, tmp_path):
    out_path = tmp_path / "out.jsonl"
    code, out, err = run_main("create_batch_file", [out_path, *case_args(name)], capsys)
    assert_refused(name, code, out, err)
    assert list(tmp_path.iterdir()) == []  # no output, no temp file, no sidecar


@pytest.mark.parametrize("script", ["submit.py", "validate_batch_file.py"])
def test_a_real_10_mib_body_is_refused_by_the_real_scripts(script, shared_sandbox, tmp_path):
    line = {
        "custom_id": "huge",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "Qwen/Qwen3.5-9B", "messages": [{"role": "user", "content": "x" * (10 * 1024 * 1024)}]},
    }
    path = tmp_path / "huge.jsonl"
    path.write_text(
        '{"custom_id": "small", "method": "POST", "url": "/v1/chat/completions", "body": '
        '{"model": "Qwen/Qwen3.5-9B", "messages": [{"role": "user", "content": "hi"}]}}\n' + json.dumps(line) + "\n"
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DOUBLEWORD_API_KEY": shared_sandbox.api_key,
        "DOUBLEWORD_BASE_URL": shared_sandbox.base_url,
    }
    env.update((k, os.environ[k]) for k in ("SYSTEMROOT", "TEMP", "TMP") if k in os.environ)  # Windows needs them
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / script), str(path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 2 and is_error(proc.stdout)
    assert "line 2 (custom_id 'huge'): body is" in proc.stderr and "at most 10485760" in proc.stderr
    assert shared_sandbox.stats()["uploads_received"] == 0


def test_every_error_is_listed_even_with_quiet(capsys):
    code, out, err = run_main("submit", [DATA / "several_errors.jsonl", "-q", "--dry-run"], capsys)
    assert code == 2 and is_error(out)
    assert "line 2 (custom_id 'x-1'): missing field(s) url" in err and "line 4: invalid JSON" in err
