"""retry_failed.py against the sandbox: failed requests, cancelled batches, crash-resume, refusals."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
from helpers import batch_ids_of, is_error, job_state, make_job, read_jsonl, run_script, wait_until, write_input


def server_batches(sb):
    return sb.get_json("batches", params={"limit": 100})["data"]


def test_failed_requests_are_retried_then_every_request_succeeds(sandbox, tmp_path):
    ids = write_input("data.jsonl", 30)
    bad = ["req-4", "req-17", "req-29"]
    sandbox.set_faults({"fail_custom_ids": bad, "fail_status": 400})
    job = make_job(sandbox, "data.jsonl", 2)
    for bid in batch_ids_of(job):
        sandbox.wait_batch(bid)
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 5 and doc["failed"] == 3, err

    sandbox.clear_faults()
    code, doc, err = run_script("retry_failed.py", "--job", job, env=sandbox.env())
    assert code == 0, err
    assert doc["round"] == 2 and doc["requests"] == 3 and doc["failed"] == 3 and doc["missing"] == 0
    assert doc["client_errors"] == 3 and "client errors (HTTP 4xx)" in err
    assert len(doc["batches"]) == 1 and doc["batches"][0]["batch_id"]
    assert "poll.py --job" in doc["next"]
    # the retry input is the failed lines, verbatim and in input order
    original = {json.loads(line)["custom_id"]: line for line in Path("data.jsonl").read_text().splitlines()}
    retry_lines = Path(job, "rounds", "round-2.jsonl").read_text().splitlines()
    assert retry_lines == [original[c] for c in bad]

    code, doc, err = run_script("poll.py", "--job", job, "--wait", "--interval", "0.2", env=sandbox.env())
    assert code == 0 and doc["status"] == "completed", err
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 0, err
    assert doc["succeeded"] == 30 and doc["failed"] == 0 and doc["missing"] == 0 and doc["next"] is None
    assert [r["custom_id"] for r in read_jsonl(doc["output"])] == ids
    assert read_jsonl(doc["errors"]) == []
    # nothing that succeeded was sent again
    totals = sorted(b["request_counts"]["total"] for b in server_batches(sandbox))
    assert totals == [3, 15, 15]

    code, doc, err = run_script("retry_failed.py", "--job", job, env=sandbox.env())
    assert code == 0 and doc["round"] is None and "nothing to retry" in err


@pytest.mark.slow  # several seconds of a slowed sandbox
def test_cancel_then_retry_runs_only_what_never_finished(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.2", "--concurrency", "2")
    ids = write_input("data.jsonl", 60)
    job = make_job(sb, "data.jsonl", 2)
    # the batches run one after the other; which one starts first depends on the order they
    # were created in (chunks are created in parallel): wait for 5 requests of either, then let
    # no more start, so that both still run when the cancel comes
    wait_until(lambda: max(sb.batch(b)["request_counts"]["completed"] for b in batch_ids_of(job)) >= 5)
    sb.set_faults({"pause_requests": True})
    code, doc, err = run_script("cancel_batch.py", "--job", job, env=sb.env())
    assert code == 0 and doc["cancelled"] == 2, err
    for bid in batch_ids_of(job):
        sb.wait_batch(bid)

    code, doc, err = run_script("poll.py", "--job", job, env=sb.env())
    assert code == 5 and doc["status"] == "cancelled", err
    code, doc, err = run_script("fetch_results.py", "--job", job, "--format", "simple", env=sb.env())
    assert code == 5, err
    done_first = doc["succeeded"]
    assert 5 <= done_first < 60 and doc["missing"] == 60 - done_first and doc["failed"] == 0
    rows = read_jsonl(doc["output"])
    assert {r["error"] for r in rows if not r["ok"]} == {"not run"}
    succeeded = {r["custom_id"] for r in rows if r["ok"]}

    sb.clear_faults()
    code, doc, err = run_script("retry_failed.py", "--job", job, "--after-cancel", env=sb.env())
    assert code == 0, err
    assert doc["requests"] == 60 - done_first and doc["missing"] == 60 - done_first
    retried = [json.loads(line)["custom_id"] for line in Path(doc["input"]).read_text().splitlines()]
    assert not succeeded & set(retried) and succeeded | set(retried) == set(ids)
    assert retried == [i for i in ids if i in set(retried)]  # input order

    code, doc, err = run_script("poll.py", "--job", job, "--wait", "--interval", "0.2", env=sb.env())
    assert code == 0 and doc["status"] == "completed", err  # the retry round decides
    assert doc["request_counts"] == {"total": 60, "completed": 60, "failed": 0}
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sb.env())
    assert code == 0 and doc["succeeded"] == 60, err
    assert [r["custom_id"] for r in read_jsonl(doc["output"])] == ids
    # every request ran exactly once on the server: completions over all batches add up to 60
    assert sum(b["request_counts"]["completed"] for b in server_batches(sb)) == 60
    created = len([c for r in job_state(job)["rounds"] for c in r["chunks"]])
    assert created == 2 + len(job_state(job)["rounds"][1]["chunks"])  # the retry round keeps the chunk size
    assert sb.stats()["requests"]["POST /v1/batches"] == created


@pytest.mark.slow  # the wait after a cancel (scaled)
def test_late_completion_after_cancel_is_kept_and_not_retried(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.1", "--concurrency", "1")
    write_input("data.jsonl", 20)
    sb.set_faults({"late_line_after_cancel": True})
    job = make_job(sb, "data.jsonl")
    bid = batch_ids_of(job)[0]
    wait_until(lambda: sb.batch(bid)["request_counts"]["completed"] >= 2)
    sb.set_faults({"late_line_after_cancel": True, "pause_requests": True})  # still running at the cancel
    code, doc, err = run_script("cancel_batch.py", "--job", job, env=sb.env())
    assert code == 0, err
    before = doc["batches"][0]["request_counts"]["completed"]  # as the cancel left it
    wait_until(lambda: sb.batch(bid)["request_counts"]["completed"] > before)  # the late line
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sb.env())
    assert code == 5, err
    assert doc["succeeded"] == before + 1 and doc["batches"][0]["verified"] is True
    code, doc, err = run_script("retry_failed.py", "--job", job, "--dry-run", "--after-cancel", env=sb.env())
    assert code == 0 and doc["requests"] == 20 - before - 1 and doc["dry_run"], err
    assert doc["next"].endswith(" --after-cancel")


@pytest.mark.slow  # several seconds of a slowed sandbox
def test_a_cancelled_job_is_not_retried_unless_asked_after_cancel(sandbox_factory, tmp_path):
    """The user stopped the work: retry_failed.py (and its --dry-run) refuses to rerun it, says
    why and points at the fetch; --after-cancel reruns it on purpose."""
    sb = sandbox_factory("--latency", "0.2", "--concurrency", "1")
    write_input("data.jsonl", 12)
    job = make_job(sb, "data.jsonl")
    bid = batch_ids_of(job)[0]
    wait_until(lambda: sb.batch(bid)["request_counts"]["completed"] >= 2)
    sb.set_faults({"pause_requests": True})  # still running when the cancel comes
    code, doc, err = run_script("cancel_batch.py", "--job", "data.dwjob", env=sb.env())
    assert code == 0 and doc["cancelled"] == 1, err
    sb.wait_batch(bid)
    for extra in ([], ["--dry-run"]):
        code, doc, err = run_script("retry_failed.py", "--job", "data.dwjob", *extra, env=sb.env())
        assert code == 2 and is_error(doc), err
        assert "error: the job at data.dwjob was cancelled" in err
        assert "retrying would rerun the requests you stopped" in err
        assert "fetch_results.py --job data.dwjob" in err.split("hint: Fetch what finished with ", 1)[1]
        assert "new job" in err and "--after-cancel" in err
        assert "would retry" not in err
    assert len(job_state(job)["rounds"]) == 1 and sb.stats()["requests"]["POST /v1/batches"] == 1
    code, doc, err = run_script("retry_failed.py", "--job", "data.dwjob", "--dry-run", "--after-cancel", env=sb.env())
    assert code == 0 and doc["dry_run"] and doc["missing"] == doc["requests"] > 0, err
    assert doc["next"].split("retry_failed.py ", 1)[1] == "--job data.dwjob --after-cancel"
    sb.clear_faults()
    code, doc, err = run_script("retry_failed.py", "--job", "data.dwjob", "--after-cancel", env=sb.env())
    assert code == 0 and doc["round"] == 2 and doc["requests"] > 0, err
    code, doc, err = run_script("poll.py", "--job", "data.dwjob", "--wait", "--interval", "0.2", env=sb.env())
    assert code == 0 and doc["status"] == "completed", err
    code, doc, err = run_script("fetch_results.py", "--job", "data.dwjob", env=sb.env())
    assert code == 0 and doc["succeeded"] == 12, err


def test_refuses_while_batches_run(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.3", "--concurrency", "1")
    sb.set_faults({"pause_requests": True})  # the batch runs, and cannot finish before the retry looks
    write_input("data.jsonl", 10)
    job = make_job(sb, "data.jsonl")
    code, doc, err = run_script("retry_failed.py", "--job", job, env=sb.env())
    assert code == 6, err
    assert doc["round"] is None and "poll.py --job" in doc["next"] and doc["running"]
    assert len(job_state(job)["rounds"]) == 1


def test_dry_run_writes_and_sends_nothing(sandbox, tmp_path):
    write_input("data.jsonl", 8)
    sandbox.set_faults({"fail_custom_ids": ["req-1", "req-5"], "fail_status": 500})
    job = make_job(sandbox, "data.jsonl")
    sandbox.wait_batch(batch_ids_of(job)[0])
    uploads = sandbox.stats()["requests"].get("POST /v1/files")
    code, doc, err = run_script("retry_failed.py", "--job", job, "--dry-run", env=sandbox.env())
    assert code == 0, err
    assert doc["dry_run"] and doc["requests"] == 2 and doc["sample"] == ["req-1", "req-5"]
    assert doc["client_errors"] == 0
    assert not Path(job, "rounds").exists() and len(job_state(job)["rounds"]) == 1
    assert sandbox.stats()["requests"].get("POST /v1/files") == uploads

    # the dry run's next is the same retry with every flag given, and runs as printed
    flags = ["-w", "1h", "--force", "--rerun", "failed,missing", "--max-tokens", "64"]
    code, doc, err = run_script("retry_failed.py", "--job", job, "--dry-run", *flags, env=sandbox.env())
    assert code == 0 and doc["next"].split()[2:] == ["--job", Path(job).name, "--max-tokens", "64", *flags[:5]], doc
    code, doc, err = run_script(*shlex.split(doc["next"])[1:], env=sandbox.env())
    assert code == 0 and doc["requests"] == 2 and job_state(job)["rounds"][1]["completion_window"] == "1h", err


def test_crash_during_retry_submit_resumes_the_same_round(sandbox, tmp_path):
    write_input("data.jsonl", 12)
    sandbox.set_faults({"fail_custom_ids": ["req-0", "req-11"], "fail_status": 400})
    job = make_job(sandbox, "data.jsonl")
    sandbox.wait_batch(batch_ids_of(job)[0])
    sandbox.clear_faults()
    env = dict(sandbox.env(), DOUBLEWORD_BATCHES_CRASH_AT="after_create")
    code, doc, err = run_script("retry_failed.py", "--job", job, env=env)
    assert code == 137 and doc is None
    st = job_state(job)
    assert len(st["rounds"]) == 2 and st["rounds"][1]["chunks"][0]["batch_id"] is None

    code, doc, err = run_script("retry_failed.py", "--job", job, env=sandbox.env())
    assert code == 0, err
    assert doc["round"] == 2 and doc.get("resumed") is True and "found the batch" in err
    assert len(job_state(job)["rounds"]) == 2
    stats = sandbox.stats()["requests"]
    assert stats["POST /v1/batches"] == 2 and stats["POST /v1/files"] == 2
    code, doc, err = run_script("poll.py", "--job", job, "--wait", "--interval", "0.2", env=sandbox.env())
    assert code == 0, err
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 0 and doc["succeeded"] == 12, err


def test_a_moved_input_is_retried_from_the_servers_copy(sandbox, tmp_path):
    """The retry input is copied from what was submitted: when the local input is gone (or
    changed), the server's copy of the uploaded requests is the source."""
    write_input("data.jsonl", 4)
    sandbox.set_faults({"fail_custom_ids": ["req-1"], "fail_status": 400})
    job = make_job(sandbox, "data.jsonl")
    sandbox.wait_batch(batch_ids_of(job)[0])
    os.rename("data.jsonl", "moved.jsonl")
    code, doc, err = run_script("retry_failed.py", "--job", job, env=sandbox.env())
    assert code == 0, err
    assert "is gone; reading the requests as submitted from the server" in err
    assert doc["requests"] == 1 and doc["failed"] == 1 and doc["sample"] == ["req-1"]
    assert [r["custom_id"] for r in read_jsonl(doc["input"])] == ["req-1"]
