"""poll.py against the sandbox: one check, --wait, exit codes 0/5/6, job.json recording."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
from _dwbatches.jobs import job as job_mod
from _dwbatches.jobs import jobstatus
from _dwbatches.jobs.jobrecord import JobRecord
from helpers import batch_ids_of, is_error, job_state, make_job, run_script, wait_until, write_input

BATCH_KEYS = {"batch_id", "status", "request_counts", "output_file_id", "error_file_id", "expires_at"}


def test_single_check_reports_running_job_and_records_status(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.15", "--concurrency", "1")
    write_input("data.jsonl", 40)
    job = make_job(sb, "data.jsonl", 2)
    bid = batch_ids_of(job)[0]
    wait_until(lambda: sb.batch(bid)["request_counts"]["completed"] >= 3)
    sb.set_faults({"pause_requests": True})  # still running when poll.py looks, however late
    code, doc, err = run_script("poll.py", "--job", job, env=sb.env())
    assert code == 0, err
    assert doc["status"] == "in_progress" and doc["finished"] is False
    assert doc["request_counts"]["total"] == 40 and doc["request_counts"]["completed"] >= 3
    assert len(doc["batches"]) == 2 and all(BATCH_KEYS <= set(b) for b in doc["batches"])
    assert [b["chunk"] for b in doc["batches"]] == [1, 2]
    assert doc["job"] == job and doc["next"].endswith(f"poll.py --job {Path(job).name}")
    assert "in_progress:" in err and "/40 done" in err and "ETA" in err
    chunks = job_state(job)["rounds"][0]["chunks"]
    assert chunks[0]["status"] == "in_progress" and chunks[0]["request_counts"]["completed"] >= 3


def test_wait_until_completed_then_next_is_fetch(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.02", "--concurrency", "4")
    write_input("data.jsonl", 30)
    job = make_job(sb, "data.jsonl", 3)
    code, doc, err = run_script("poll.py", "--job", job, "--wait", "--interval", "0.2", env=sb.env())
    assert code == 0, err
    assert doc["status"] == "completed" and doc["finished"] and doc["timed_out"] is False
    assert doc["request_counts"] == {"total": 30, "completed": 30, "failed": 0}
    assert "fetch_results.py --job" in doc["next"]
    assert all(c["status"] == "completed" for c in job_state(job)["rounds"][0]["chunks"])


@pytest.mark.slow
def test_wait_timeout_exits_6_with_json(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.5", "--concurrency", "1")
    write_input("data.jsonl", 20)
    job = make_job(sb, "data.jsonl")
    code, doc, err = run_script("poll.py", "--job", job, "--wait", "--timeout", "1", "--interval", "0.3", env=sb.env())
    assert code == 6, err
    assert doc["status"] == "in_progress" and doc["finished"] is False and doc["timed_out"] is True
    assert doc["next"].endswith(f"poll.py --job {Path(job).name}")  # one check later, not a wait


def test_cancelled_batch_exits_5(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.2", "--concurrency", "1")
    write_input("data.jsonl", 20)
    job = make_job(sb, "data.jsonl")
    bid = batch_ids_of(job)[0]
    assert sb.post(f"batches/{bid}/cancel").status == 200
    sb.wait_batch(bid)
    code, doc, err = run_script("poll.py", "--job", job, env=sb.env())
    assert code == 5, err
    assert doc["status"] == "cancelled" and doc["finished"] is True
    assert doc["batches"][0]["status"] == "cancelled"
    assert "fetch_results.py" in doc["next"]
    # bare batch id: same outcome
    code, doc, _ = run_script("poll.py", bid, env=sb.env())
    assert code == 5 and doc["job"] is None and doc["status"] == "cancelled"


def test_partially_failed_is_reported_and_exits_5_as_fetch_does(sandbox, tmp_path):
    write_input("data.jsonl", 10)
    sandbox.set_faults({"fail_custom_ids": ["req-2"], "fail_status": 400})
    job = make_job(sandbox, "data.jsonl")
    sandbox.wait_batch(batch_ids_of(job)[0])
    code, doc, err = run_script("poll.py", "--job", job, env=sandbox.env())
    assert code == 5, err  # finished with a failed request: the same outcome fetch_results.py reports
    assert doc["status"] == "partially_failed" and doc["request_counts"]["failed"] == 1


def test_busy_lock_reports_without_writing(sandbox, tmp_path):
    write_input("data.jsonl", 5)
    job = make_job(sandbox, "data.jsonl")
    sandbox.wait_batch(batch_ids_of(job)[0])
    before = Path(job, "job.json").read_bytes()
    with job_mod.Job(job):  # another process holds the lock
        code, doc, err = run_script("poll.py", "--job", job, env=sandbox.env())
    assert code == 0, err
    assert doc["status"] == "completed"
    assert Path(job, "job.json").read_bytes() == before
    code, doc, _ = run_script("poll.py", "--job", job, env=sandbox.env())
    assert job_state(job)["rounds"][0]["chunks"][0]["status"] == "completed"


def test_job_status_rules():
    def b(status, total, completed, failed, rnd=1):
        return {
            "batch_id": "x",
            "status": status,
            "round": rnd,
            "request_counts": {"total": total, "completed": completed, "failed": failed},
        }

    doc = {"input": {"requests": 20}, "rounds": [{"round": 1, "chunks": [{"batch_id": "a"}, {"batch_id": "b"}]}]}
    state = JobRecord.from_dict(doc)
    assert jobstatus.job_status([b("completed", 10, 10, 0), b("completed", 10, 10, 0)], state)["status"] == "completed"
    s = jobstatus.job_status([b("completed", 10, 9, 1), b("completed", 10, 10, 0)], state)
    assert s["status"] == "partially_failed" and not s["ended_badly"]
    s = jobstatus.job_status([b("completed", 10, 10, 0), b("cancelled", 10, 3, 0)], state)
    assert s["status"] == "mixed" and s["ended_badly"] and s["finished"]
    assert jobstatus.job_status([b("expired", 10, 3, 0), b("expired", 10, 0, 0)], state)["status"] == "expired"
    assert (
        jobstatus.job_status([b("in_progress", 10, 3, 0), b("completed", 10, 10, 0)], state)["status"] == "in_progress"
    )
    # a retry round decides; counts count each request once
    doc["rounds"].append({"round": 2, "kind": "retry", "chunks": [{"batch_id": "c"}]})
    state = JobRecord.from_dict(doc)
    s = jobstatus.job_status(
        [b("completed", 10, 10, 0), b("cancelled", 10, 3, 0), b("completed", 7, 7, 0, rnd=2)], state
    )
    assert s["status"] == "completed" and s["request_counts"] == {"total": 20, "completed": 20, "failed": 0}
    assert not s["ended_badly"]
    doc["rounds"].append({"round": 3, "kind": "retry", "chunks": [{"batch_id": None, "held": None}]})
    state = JobRecord.from_dict(doc)
    assert jobstatus.job_status([], state)["status"] == "not_submitted"


@pytest.mark.parametrize(
    "args,code",
    [
        ([], 2),
        (["--job", "x.dwjob", "6f1c2e0a-1b2c-4d5e-8f90-0123456789ab"], 2),
        (["batch_abc"], 2),
        (["6f1c2e0a-1b2c-4d5e-8f90-0123456789ab"], 4),
    ],
)
def test_usage_and_not_found_leave_stdout_empty(sandbox, args, code):
    rc, doc, err = run_script("poll.py", *args, env=sandbox.env())
    assert rc == code and is_error(doc) and err.startswith("error: ")


@pytest.mark.slow
def test_expired_at_is_reported(sandbox_factory, tmp_path):
    sb = sandbox_factory("--window-scale", "0.00002", "--latency", "0.3", "--concurrency", "1")
    write_input("data.jsonl", 3)
    job = make_job(sb, "data.jsonl")
    bid = batch_ids_of(job)[0]
    wait_until(lambda: "expired_at" in sb.batch(bid), timeout=20)
    code, doc, err = run_script("poll.py", "--job", job, env=sb.env())
    assert code == 0, err
    assert doc["batches"][0]["expired_at"] == doc["batches"][0]["expires_at"]
    assert json.loads(Path(job, "job.json").read_text())["rounds"][0]["chunks"][0].get("expired_at")


def test_a_check_costs_pages_of_the_job_not_one_request_per_batch(sandbox, tmp_path, monkeypatch):
    """A 30-batch job: one check lists the job's batches (a page of 100), not 30 GETs; with
    pages of 10, three requests; a server that refuses the list gets one GET per batch."""
    from _dwbatches.jobs import jobstatus

    write_input("data.jsonl", 30)
    job = make_job(sandbox, "data.jsonl", 30)
    for bid in batch_ids_of(job):
        sandbox.wait_batch(bid)

    def calls():
        req = sandbox.stats()["requests"]
        return req.get("GET /v1/batches", 0), req.get("GET /v1/batches/{id}", 0)

    sandbox.reset_stats()
    code, doc, err = run_script("poll.py", "--job", job, env=sandbox.env())
    assert code == 0 and doc["status"] == "completed" and len(doc["batches"]) + doc["batches_omitted"] == 30, err
    assert calls() == (1, 0)

    monkeypatch.setattr(jobstatus, "LIST_PAGE", 10)
    sandbox.reset_stats()
    code, doc, err = run_script("poll.py", "--job", job, env=sandbox.env())
    assert code == 0 and calls() == (3, 0)

    sandbox.set_faults({"http": [{"method": "GET", "path": "/v1/batches", "status": 400, "times": 1}]})
    sandbox.reset_stats()
    code, doc, err = run_script("poll.py", "--job", job, env=sandbox.env())
    assert code == 0 and doc["status"] == "completed", err
    assert calls() == (1, 30)  # the refused list, then each batch on its own


def test_a_fetch_round_lists_the_jobs_batches_too(sandbox, tmp_path):
    write_input("data.jsonl", 12)
    job = make_job(sandbox, "data.jsonl", 12)
    for bid in batch_ids_of(job):
        sandbox.wait_batch(bid)
    assert run_script("fetch_results.py", "--job", job, env=sandbox.env())[0] == 0
    sandbox.reset_stats()
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 0 and doc["succeeded"] == 12, err
    req = sandbox.stats()["requests"]
    assert req.get("GET /v1/batches") == 1 and req.get("GET /v1/batches/{id}", 0) == 0
    assert req.get("GET /v1/files/{id}/content", 0) == 0  # finished, verified batches are not read again


@pytest.mark.parametrize("script", ["poll.py", "fetch_results.py", "cancel_batch.py"])
def test_no_target_hint_names_the_real_job_dirs_and_runs_as_printed(sandbox, script):
    """A hint is runnable as printed: it names a job directory that is here, or no command."""
    code, doc, err = run_script(script, env=sandbox.env())
    assert code == 2 and is_error(doc) and "error: pass either batch ids or --job DIR" in err
    hint = err.split("hint: ", 1)[1]
    assert "data.dwjob" not in hint and "python3" not in hint and ".dwjob" not in hint, hint
    assert "the job directory that submit.py or run_batch.py printed" in hint

    write_input("first.jsonl", 2)
    make_job(sandbox, "first.jsonl")
    code, doc, err = run_script(script, env=sandbox.env())
    hint = err.split("hint: ", 1)[1].strip()
    assert hint.startswith("e.g. ") and hint.endswith(f"{script} --job first.dwjob"), hint
    if script == "poll.py":  # the printed command runs
        ran = subprocess.run(
            shlex.split(hint[len("e.g. ") :]), env=sandbox.env(), capture_output=True, text=True, timeout=60
        )
        assert ran.returncode in (0, 5) and json.loads(ran.stdout)["job"], ran.stderr

    write_input("second.jsonl", 2, prefix="second-")
    make_job(sandbox, "second.jsonl")
    code, doc, err = run_script(script, env=sandbox.env())
    hint = err.split("hint: ", 1)[1].strip()
    assert "--job second.dwjob" in hint and "(job directories here: second.dwjob, first.dwjob)" in hint, hint
    code, doc, err = run_script(script, "--job", "nope.dwjob", env=sandbox.env())
    assert code == 4 and "job directories here: second.dwjob, first.dwjob" in err


def test_a_job_of_many_batches_lists_a_few_those_that_need_attention_first(sandbox):
    """Eight chunks, one of them with a failed request: the report lists five batches, the one
    with the failure among them, and counts the three it leaves out; --all-batches lists all."""
    write_input("many.jsonl", 8)
    sandbox.set_faults({"fail_custom_ids": ["req-7"], "fail_status": 400})
    code, doc, err = run_script("submit.py", "many.jsonl", "--max-requests", "1", env=sandbox.env())
    assert code == 0 and doc["batches_omitted"] == 3 and len(doc["batches"]) == 5, err
    job = doc["job"]
    for bid in batch_ids_of(job):
        sandbox.wait_batch(bid)
    code, doc, err = run_script("poll.py", "--job", job, env=sandbox.env())
    assert code == 5 and len(doc["batches"]) == 5 and doc["batches_omitted"] == 3, err  # finished, one failed
    assert any(b["request_counts"]["failed"] for b in doc["batches"]), doc["batches"]
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 5 and len(doc["batches"]) == 5 and doc["batches_omitted"] == 3, err
    assert [b["chunk"] for b in doc["batches"]] == sorted(b["chunk"] for b in doc["batches"])  # in their order
    assert any(b["request_counts"]["failed"] for b in doc["batches"]), doc["batches"]
    code, doc, err = run_script("fetch_results.py", "--job", job, "--all-batches", env=sandbox.env())
    assert len(doc["batches"]) == 8 and doc["batches_omitted"] == 0, err
