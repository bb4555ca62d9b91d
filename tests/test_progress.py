"""Progress people can read: on a terminal (stderr is one) uploads, downloads and waits are one
line rewritten in place (percent, rate, ETA), which steps aside for other messages and is gone
(or, for a wait, kept as its last word) at the end; elsewhere plain lines, a wait's only when
something changed (never "in_progress: 0/N done" again and again).

Runs under a pseudo-terminal (tests/ptyrun.py; POSIX only) against the sandbox.
"""

from __future__ import annotations

import json
import re

import pytest
from helpers import make_job, run_script, wait_job, write_input
from ptyrun import HAVE_PTY, run_in_pty, screen

needs_pty = pytest.mark.skipif(not HAVE_PTY, reason="no pseudo-terminals (Windows)")


def batch_gets(sandbox) -> int:
    return sum(n for route, n in sandbox.stats()["requests"].items() if route.startswith("GET /v1/batches"))


@pytest.mark.slow
@needs_pty
def test_a_wait_on_a_terminal_is_one_line_rewritten_and_its_last_state_stays(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.05", "--concurrency", "2")
    write_input(tmp_path / "data.jsonl", 40)
    res = run_in_pty(
        "run_batch.py", "data.jsonl", "--wait", "--interval", "1", env=sb.env(), cwd=tmp_path, stderr_tty=True
    )
    assert res.code == 0, res.stderr
    rewrites = re.findall(r"\r(in_progress: \d+/40 done \(\d+%\)[^\r\n]*)", res.stderr)
    assert rewrites, res.stderr  # the checks while it ran, each over the last
    shown = screen(res.stderr)
    assert not [ln for ln in shown if ln.startswith("in_progress:")], shown
    assert shown[-1].startswith("completed: 40/40 done (100%)"), shown
    assert "new job at data.dwjob: 40 requests in 1 chunk(s)" in shown  # plain messages stay lines of their own


@pytest.mark.slow
def test_a_wait_off_a_terminal_prints_a_line_only_when_something_changed(sandbox, tmp_path):
    write_input(tmp_path / "data.jsonl", 6)
    sandbox.set_faults({"pause_requests": True})  # nothing moves while poll waits
    job = make_job(sandbox, tmp_path / "data.jsonl")
    sandbox.reset_stats()
    code, doc, err = run_script(
        "poll.py", "--job", job, "--wait", "--interval", "1", "--timeout", "2", env=sandbox.env()
    )
    assert code == 6 and doc["timed_out"] is True
    assert batch_gets(sandbox) >= 4  # several checks...
    lines = [ln for ln in err.splitlines() if ln.startswith("in_progress:")]
    assert lines == ["in_progress: 0/6 done"], err  # ...one line
    sandbox.set_faults({"pause_requests": False})
    wait_job(sandbox, job)
    code, doc, err = run_script("poll.py", "--job", job, "--wait", env=sandbox.env())
    assert code == 0 and [ln for ln in err.splitlines() if ln.startswith("completed")] == ["completed: 6/6 done"]


@needs_pty
def test_a_download_on_a_terminal_shows_its_progress_and_leaves_no_trace(sandbox, tmp_path):
    write_input(tmp_path / "data.jsonl", 700)
    job = make_job(sandbox, tmp_path / "data.jsonl")
    wait_job(sandbox, job)
    res = run_in_pty("fetch_results.py", "--job", job, env=sandbox.env(), cwd=tmp_path, stderr_tty=True)
    assert res.code == 0, res.stderr
    live = re.findall(r"\rbatch [0-9a-f-]{36}: downloading results: (\d+)% \(([\d,]+) lines of 700 lines\)", res.stderr)
    assert live and all(int(p) < 100 for p, _ in live), res.stderr
    shown = screen(res.stderr)
    assert not [ln for ln in shown if "downloading" in ln], shown
    assert re.match(r"batch [0-9a-f-]{36}: \+700 results, \+0 errors \(completed\)", shown[0]), shown
    assert run_script("fetch_results.py", "--job", job, env=sandbox.env())[1]["succeeded"] == 700


@needs_pty
@pytest.mark.slow
def test_a_slow_upload_on_a_terminal_shows_percent_rate_and_eta_then_goes(sandbox, tmp_path):
    pad = "x" * 600
    with open(tmp_path / "big.jsonl", "w", encoding="utf-8") as fh:  # about 22 MB: more than socket buffers hold
        for i in range(30_000):
            body = {"model": "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8", "messages": [{"role": "user", "content": pad}]}
            fh.write(json.dumps({"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}))
            fh.write("\n")
    sandbox.set_faults({"slow_upload_read": {"after_bytes": 1_000_000, "pause": 2.5}})
    res = run_in_pty("submit.py", "big.jsonl", env=sandbox.env(), cwd=tmp_path, stderr_tty=True)
    assert res.code == 0, res.stderr
    live = re.findall(r"\rchunk 1/1: uploading: (\d+)% \([\d.]+ [kM]B of [\d.]+ MB\)([^\r\n]*)", res.stderr)
    assert live, res.stderr
    assert any(re.match(r", [\d.]+ [kM]B/s, ETA \d", rest) for _, rest in live), live
    shown = screen(res.stderr)
    assert not [ln for ln in shown if "uploading:" in ln], shown
    assert any(ln.startswith("chunk 1/1: uploaded as file ") for ln in shown)


def test_a_long_download_off_a_terminal_prints_plain_progress_lines(sandbox, tmp_path, monkeypatch):
    from _dwbatches.results import download

    monkeypatch.setattr(download, "PLAIN_PROGRESS_SECONDS", 0.0)  # as if every read took longer than that
    write_input(tmp_path / "data.jsonl", 700)
    job = make_job(sandbox, tmp_path / "data.jsonl")
    wait_job(sandbox, job)
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 0 and doc["succeeded"] == 700, err
    lines = [ln for ln in err.splitlines() if "downloading results" in ln]
    assert [re.sub(r", [\d,.]+ lines/s\)$", ")", ln.split(": ", 2)[2]) for ln in lines] == [
        "37% (256 lines of 700 lines)",
        "73% (512 lines of 700 lines)",
    ], err
    assert "\r" not in err
