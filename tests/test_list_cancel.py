"""list_batches.py and cancel_batch.py against the sandbox."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import uuid

from helpers import batch_ids_of, is_error, job_state, make_job, run_script, wait_until, write_input
from sandbox_helper import chat_requests


def test_list_pages_filters_and_all(sandbox, tmp_path):
    made = [sandbox.submit(chat_requests(2, prefix=f"b{i}-"), metadata={"project": f"p{i % 2}"}) for i in range(5)]
    for b in made:
        sandbox.wait_batch(b["id"])
    code, doc, err = run_script("list_batches.py", "--limit", "2", env=sandbox.env())
    assert code == 0, err
    assert doc["count"] == 2 and doc["has_more"] is True
    assert [b["batch_id"] for b in doc["batches"]] == [made[4]["id"], made[3]["id"]]  # newest first
    first = doc["batches"][0]
    assert first["status"] == "completed" and first["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    assert first["metadata"]["project"] == "p0" and first["completion_window"] == "24h"
    assert f"--after {doc['last_id']}" in doc["next"]

    code, doc, err = run_script("list_batches.py", "--limit", "2", "--all", env=sandbox.env())
    assert code == 0 and doc["count"] == 5 and doc["has_more"] is False and doc["next"] is None, err
    assert {b["batch_id"] for b in doc["batches"]} == {b["id"] for b in made}

    code, doc, err = run_script("list_batches.py", "--search", "p1", "--all", env=sandbox.env())
    assert code == 0, err
    assert {b["batch_id"] for b in doc["batches"]} == {made[1]["id"], made[3]["id"]}
    code, doc, _ = run_script("list_batches.py", "--status", "in_progress", env=sandbox.env())
    assert doc["count"] == 0
    code, doc, err = run_script("list_batches.py", "--limit", "0", env=sandbox.env())
    assert code == 2 and is_error(doc)


def test_cancel_skips_finished_batches_and_cancels_running_ones(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.2", "--concurrency", "1")
    done = sb.submit(chat_requests(1))
    sb.wait_batch(done["id"])
    sb.set_faults({"pause_requests": True})  # the second batch cannot finish before the cancel
    running = sb.submit(chat_requests(30))
    code, doc, err = run_script("cancel_batch.py", done["id"], running["id"], env=sb.env())
    assert code == 0, err
    rows = {r["batch_id"]: r for r in doc["batches"]}
    assert rows[done["id"]]["action"] == "skipped" and "already completed" in rows[done["id"]]["reason"]
    assert rows[running["id"]]["action"] == "cancelled"
    assert rows[running["id"]]["status"] in ("cancelling", "cancelled")
    assert doc["cancelled"] == 1 and doc["skipped"] == 1
    assert sb.batch(done["id"])["status"] == "completed"  # never flipped to cancelled
    assert sb.wait_batch(running["id"])["status"] == "cancelled"
    assert sb.stats()["requests"]["POST /v1/batches/{id}/cancel"] == 1

    # again: both are finished now, nothing is sent
    code, doc, err = run_script("cancel_batch.py", running["id"], env=sb.env())
    assert code == 0 and doc["batches"][0]["action"] == "skipped" and doc["cancelled"] == 0
    assert sb.stats()["requests"]["POST /v1/batches/{id}/cancel"] == 1


def test_cancel_job_records_status_and_dry_run_cancels_nothing(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.2", "--concurrency", "1")
    sb.set_faults({"pause_requests": True})  # both batches still run when the cancel comes
    write_input("data.jsonl", 20)
    job = make_job(sb, "data.jsonl", 2)
    code, doc, err = run_script("cancel_batch.py", "--job", job, "--dry-run", env=sb.env())
    assert code == 0 and doc["would_cancel"] == 2 and doc["cancelled"] == 0, err
    assert all(sb.batch(b)["status"] not in ("cancelled", "cancelling") for b in batch_ids_of(job))

    code, doc, err = run_script("cancel_batch.py", "--job", job, env=sb.env())
    assert code == 0 and doc["cancelled"] == 2, err
    assert "fetch_results.py --job" in doc["next"]
    assert {c["status"] for c in job_state(job)["rounds"][0]["chunks"]} <= {"cancelling", "cancelled"}


def test_unknown_id_cancels_nothing(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.2", "--concurrency", "1")
    running = sb.submit(chat_requests(10))
    code, doc, err = run_script("cancel_batch.py", running["id"], str(uuid.uuid4()), env=sb.env())
    assert code == 4 and is_error(doc)
    wait_until(lambda: sb.batch(running["id"])["request_counts"]["completed"] >= 1)  # it goes on
    sb.set_faults({"pause_requests": True})
    assert sb.batch(running["id"])["status"] == "in_progress"


def test_after_a_cancel_next_is_the_fetch_of_finished_work_never_a_retry(sandbox_factory, tmp_path):
    """The user cancels ("wrong model"): no command points at rerunning the rest."""
    sb = sandbox_factory("--latency", "0.2", "--concurrency", "1")
    write_input("data.jsonl", 20)
    job = make_job(sb, "data.jsonl")
    wait_until(lambda: sb.batch(batch_ids_of(job)[0])["request_counts"]["completed"] >= 2)
    sb.set_faults({"pause_requests": True})  # still running when the cancel comes
    code, doc, err = run_script("cancel_batch.py", "--job", job, env=sb.env())
    assert code == 0 and doc["cancelled"] == 1, err
    assert "fetch_results.py --job" in doc["next"]
    sb.wait_batch(batch_ids_of(job)[0])
    code, doc, err = run_script("poll.py", "--job", job, env=sb.env())
    assert code == 5 and doc["status"] == "cancelled" and "fetch_results.py" in doc["next"], err
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sb.env())
    assert code == 5 and doc["missing"] > 0 and doc["next"] is None, err
    assert "retry_failed.py" not in err


def test_a_cancel_of_a_finished_job_stops_nothing_and_leaves_it_retryable(sandbox, tmp_path):
    write_input("data.jsonl", 4)
    sandbox.set_faults({"fail_custom_ids": ["req-2"], "fail_status": 500})
    job = make_job(sandbox, "data.jsonl", 1)
    for bid in batch_ids_of(job):
        sandbox.wait_batch(bid)
    code, doc, err = run_script("cancel_batch.py", "--job", job, env=sandbox.env())
    assert code == 0 and (doc["cancelled"], doc["skipped"]) == (0, 1), err
    assert "the job is not marked cancelled" in err
    assert job_state(job).get("cancel") is None and not (tmp_path / job / "cancel.json").exists()
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 5 and doc["next"].endswith("retry_failed.py --job data.dwjob"), err  # a retry still fits
    sandbox.clear_faults()
    code, doc, err = run_script("retry_failed.py", "--job", job, env=sandbox.env())
    assert code == 0 and doc["requests"] == 1, err


def test_a_cancel_dry_run_points_at_the_cancel_it_previewed(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.3", "--concurrency", "1")
    sb.set_faults({"pause_requests": True})  # still running when the printed cancel runs
    write_input("data.jsonl", 20)
    job = make_job(sb, "data.jsonl")
    bid = batch_ids_of(job)[0]
    code, doc, err = run_script("cancel_batch.py", "--job", "data.dwjob", "--dry-run", env=sb.env())
    assert code == 0 and doc["would_cancel"] == 1 and doc["cancelled"] == 0, err
    assert doc["next"].endswith("cancel_batch.py --job data.dwjob") and "--dry-run" not in doc["next"]
    assert sb.batch(bid)["status"] in ("validating", "in_progress")  # the preview cancelled nothing
    code, bare, err = run_script("cancel_batch.py", bid, "--dry-run", env=sb.env())
    assert code == 0 and bare["next"].endswith(f"cancel_batch.py {bid}"), err
    ran = subprocess.run(shlex.split(doc["next"]), env=sb.env(), capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    after = json.loads(ran.stdout)
    assert after["cancelled"] == 1 and after["next"].endswith("fetch_results.py --job data.dwjob")
    sb.wait_batch(bid)
    code, doc, err = run_script("cancel_batch.py", bid, "--dry-run", env=sb.env())  # nothing left to cancel
    assert code == 0 and doc["would_cancel"] == 0 and doc["next"].endswith(f"fetch_results.py {bid}"), err


def test_finding_jobs_from_a_later_conversation(sandbox, tmp_path):
    """--jobs lists the project's job directories from their own records (no key); --input
    finds every job of a file by its contents, also one whose directory is elsewhere."""
    from helpers import run_script, write_input

    write_input("data.jsonl", 3)
    code, first, err = run_script("run_batch.py", "data.jsonl", "--wait", "--interval", "0.2", env=sandbox.env())
    assert code == 0, err
    os.makedirs("sub")
    code, second, err = run_script(
        "submit.py", "data.jsonl", "--job", "sub/again.dwjob", "--resubmit", env=sandbox.env()
    )
    assert code == 0, err
    no_key = {k: v for k, v in os.environ.items() if not k.startswith("DOUBLEWORD_")}
    code, doc, err = run_script("list_batches.py", "--jobs", env=no_key)
    assert code == 0 and doc["count"] == 2, err
    by_dir = {os.path.basename(j["job"]): j for j in doc["jobs"]}
    assert by_dir["data.dwjob"]["status"] == "completed" and by_dir["data.dwjob"]["answers"]["good"] == 3
    assert by_dir["again.dwjob"]["requests"] == 3 and by_dir["again.dwjob"]["next"].endswith(
        "poll.py --job sub/again.dwjob"
    )
    code, doc, err = run_script("list_batches.py", "--input", "data.jsonl", env=sandbox.env())
    assert code == 0, err
    assert {os.path.basename(j["job"] or "") for j in doc["jobs"]} == {"data.dwjob", "again.dwjob"}
    assert sum(len(j["batches"]) for j in doc["jobs"]) == 2
