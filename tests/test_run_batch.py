"""run_batch.py against the sandbox: submit → poll → fetch in one command, resume, exit 0/5/6."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import is_error, job_state, read_jsonl, run_script, wait_until, write_input
from sandbox_helper import INSTRUCT_MODEL, SCRIPTS


def test_wait_on_example_input_exits_0_with_results_in_order(sandbox, tmp_path):
    code, built, err = run_script("create_batch_file.py", "examples.jsonl")
    assert code == 0, err
    ids = [r["custom_id"] for r in read_jsonl("examples.jsonl")]
    code, doc, err = run_script("run_batch.py", "examples.jsonl", "--wait", "--interval", "0.2", env=sandbox.env())
    assert code == 0, err
    assert doc["complete"] and doc["status"] == "completed" and doc["succeeded"] == len(ids) == 5
    assert doc["submitted"] == {"resumed": False, "chunks": 1, "this_run": {"uploaded": 1, "created": 1, "found": 0}}
    assert doc["output"] == str(tmp_path / "examples.results.jsonl") and doc["next"] is None
    assert [r["custom_id"] for r in read_jsonl(doc["output"])] == ids
    assert Path(doc["job"], "job.json").exists()


@pytest.mark.slow
def test_without_wait_returns_next_and_rerun_never_resubmits(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.05", "--concurrency", "2")
    ids = write_input("data.jsonl", 30)
    code, doc, err = run_script(
        "run_batch.py", "data.jsonl", "--max-requests", "10", "--format", "simple", env=sb.env()
    )
    assert code == 0, err
    assert doc["finished"] is False and doc["status"] in ("in_progress", "completed")
    assert len(doc["batches"]) == 3
    assert doc["next"].endswith("run_batch.py data.jsonl --wait --max-requests 10 --format simple")

    # a --wait run killed while waiting, then the same command again: nothing is submitted twice
    proc = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPTS / "run_batch.py"),
            "data.jsonl",
            "--wait",
            "--interval",
            "0.1",
            "--format",
            "simple",
        ],
        env=sb.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: any(Path("data.dwjob", "results").glob("*.output.jsonl")), timeout=30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    code, doc, err = run_script("run_batch.py", "data.jsonl", "--wait", "--interval", "0.2", env=sb.env())
    assert code == 0, err
    assert doc["submitted"]["resumed"] is True and doc["submitted"]["this_run"]["created"] == 0
    assert doc["format"] == "simple"  # remembered from the first run
    rows = read_jsonl("data.results.jsonl")
    assert [r["custom_id"] for r in rows] == ids and all(r["ok"] for r in rows)
    stats = sb.stats()["requests"]
    assert stats["POST /v1/files"] == 3 and stats["POST /v1/batches"] == 3


@pytest.mark.slow
def test_timeout_exits_6_with_partial_results_then_resumes(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.1", "--concurrency", "1")
    ids = write_input("data.jsonl", 25)
    code, doc, err = run_script(
        "run_batch.py", "data.jsonl", "--wait", "--timeout", "1", "--interval", "0.3", env=sb.env()
    )
    assert code == 6, err
    assert doc["complete"] is False and 0 < doc["succeeded"] < 25
    assert doc["missing"] == 25 - doc["succeeded"]
    assert "run_batch.py data.jsonl --wait" in doc["next"]
    partial = read_jsonl(doc["output"])
    assert len(partial) == doc["succeeded"]
    code, doc, err = run_script("run_batch.py", "data.jsonl", "--wait", "--interval", "0.3", env=sb.env())
    assert code == 0, err
    assert [r["custom_id"] for r in read_jsonl(doc["output"])] == ids
    assert sb.stats()["requests"]["POST /v1/batches"] == 1


def test_failed_requests_exit_5_and_point_to_retry(sandbox, tmp_path):
    write_input("data.jsonl", 10)
    sandbox.set_faults({"fail_custom_ids": ["req-6"], "fail_status": 400})
    code, doc, err = run_script("run_batch.py", "data.jsonl", "--wait", "--interval", "0.2", env=sandbox.env())
    assert code == 5, err
    assert doc["failed"] == 1 and doc["succeeded"] == 9
    assert "retry_failed.py --job" in doc["next"]
    assert job_state(doc["job"])["rounds"][0]["chunks"][0]["status"] == "completed"


def test_csv_source_comes_back_as_csv(sandbox, tmp_path):
    Path("items.csv").write_text("sku,name\nA1,apple\nB2,banana\n")
    code, _, err = run_script(
        "create_batch_file.py",
        "items.jsonl",
        "--csv",
        "items.csv",
        "--id-column",
        "sku",
        "--template",
        "Describe {name}",
    )
    assert code == 0, err
    code, doc, err = run_script("run_batch.py", "items.jsonl", "--wait", "--interval", "0.2", env=sandbox.env())
    assert code == 0, err
    assert doc["format"] == "csv" and doc["output"] == str(tmp_path / "items.results.csv")
    text = Path(doc["output"]).read_text().splitlines()
    assert text[0] == "sku,name,response,error,answer_check"
    assert text[1].startswith("A1,apple,") and "Describe apple" in text[1]


def test_bad_input_sends_nothing(sandbox, tmp_path):
    Path("bad.jsonl").write_text('{"custom_id": "a", "method": "POST"}\n')
    code, doc, err = run_script("run_batch.py", "bad.jsonl", "--wait", env=sandbox.env())
    assert code == 2 and is_error(doc) and "line 1" in err
    assert "POST /v1/files" not in sandbox.stats()["requests"]


def test_a_job_talks_only_to_its_server_and_only_when_the_user_names_it(sandbox, tmp_path):
    """Submitted with --base-url, the job remembers its server, but never chooses it: a later
    command whose configuration points elsewhere (here: Doubleword's API, the default) is
    refused before anything is sent, and runs once the user names the job's server."""
    write_input("data.jsonl", 3)
    key_only = {k: v for k, v in sandbox.env().items() if k != "DOUBLEWORD_BASE_URL"}
    code, doc, err = run_script("submit.py", "data.jsonl", "--base-url", sandbox.base_url, env=key_only)
    assert code == 0, err
    for bid in [b["batch_id"] for b in doc["batches"]]:
        sandbox.wait_batch(bid)
    for script in ("poll.py", "fetch_results.py", "retry_failed.py", "cancel_batch.py", "submit.py"):
        args = ["data.jsonl"] if script == "submit.py" else ["--job", "data.dwjob"]
        code, doc, err = run_script(script, *args, env=key_only)
        assert code == 3 and "was submitted to" in err and f"--base-url {sandbox.base_url}" in err, (script, err)
        code, doc, err = run_script(script, *args, "--base-url", sandbox.base_url, env=key_only)
        assert code == 0, (script, err)
    other = dict(key_only, DOUBLEWORD_BASE_URL="http://127.0.0.1:9/v1")
    code, doc, err = run_script("poll.py", "--job", "data.dwjob", env=other)
    assert code == 3 and "was submitted to" in err


def test_max_tokens_bounds_what_the_answers_cost(sandbox):
    """--max-tokens 5 on 8 prompts to a model that does not reason: the sandbox's model stops at
    5 tokens, so the output tokens and the actual cost stay within the dry run's "high" (every
    max_tokens used)."""
    Path("p.txt").write_text("".join(f"Write a long essay about topic number {i}, please\n" for i in range(8)))
    code, built, err = run_script(
        "create_batch_file.py", "r.jsonl", "--prompts", "p.txt", "--max-tokens", "5", "-m", INSTRUCT_MODEL
    )
    assert code == 0, err
    code, dry, err = run_script("submit.py", "r.jsonl", "--dry-run")
    assert code == 0, err
    est = dry["estimated_cost"]
    assert est["models"][0]["output_tokens_high"] == 40 and est["high_usd"] is not None
    code, doc, err = run_script(
        "run_batch.py", "r.jsonl", "--wait", "--interval", "0.2", "--format", "simple", env=sandbox.env()
    )
    assert code == 5, err  # cut answers are not answers
    assert doc["answers"]["truncated"] == 8 and doc["succeeded"] == 0
    assert doc["usage"]["output_tokens"] == 40  # every answer cut at 5 tokens, and billed
    rows = read_jsonl(doc["output"])
    assert all(r["usage"]["completion_tokens"] == 5 and len(r["content"]) == 20 for r in rows)
    assert all(r["ok"] is False and r["answer_check"] == "truncated" for r in rows)
    assert float(doc["cost"]["usd"]) <= float(est["high_usd"])


def test_run_batch_reports_the_cost_estimate_as_submit_does(sandbox):
    write_input("data.jsonl", 6)
    code, doc, err = run_script("run_batch.py", "data.jsonl", "--wait", "--interval", "0.2", env=sandbox.env())
    assert code == 0, err
    est = doc["estimated_cost"]
    assert est["basis"] == "server" and float(est["usd"]) > 0 and est["usd"] == est["server_usd"]
    assert est["chunks_estimated"] == est["chunks"] == 1
    assert est["low_usd"] is not None and est["high_usd"] is None and est["input_tokens"] > 0
    assert [m["output_tokens_high"] for m in est["models"]] == [None]  # no request sets max_tokens
    assert (
        f"estimated cost: ${est['usd']}, the server's estimate (answers as long as their prompts); "
        f"price table: from ${est['low_usd']} (no max_tokens bound)"
    ) in err.splitlines()  # (these requests set no max_tokens)
    code, sub, err = run_script("submit.py", "data.jsonl", env=sandbox.env())  # the same job, resumed
    assert code == 0 and sub["estimated_cost"] == est, err
    assert f"estimated cost: ${est['usd']}" in err
    # --max-cost compares that figure: below it nothing is created
    write_input("more.jsonl", 6, prefix="m-")
    code, doc, err = run_script("run_batch.py", "more.jsonl", "--max-cost", "0.0000001", env=sandbox.env())
    assert code == 2 and is_error(doc) and "more than --max-cost" in err


@pytest.mark.slow
def test_new_lines_count_every_line_the_run_downloaded_while_waiting_too(sandbox_factory, tmp_path):
    """A run that downloads partial results while it waits reports, in each batch's new_lines,
    every line it downloaded: with one batch that had nothing before, all of its results."""
    sb = sandbox_factory("--latency", "0.05", "--concurrency", "1")
    write_input("data.jsonl", 40)
    code, doc, err = run_script("run_batch.py", "data.jsonl", "--wait", "--interval", "0.1", env=sb.env())
    assert code == 0, err
    assert sb.stats()["requests"].get("GET /v1/files/{id}/content", 0) >= 2, "nothing was downloaded while waiting"
    [batch] = doc["batches"]
    assert batch["new_lines"]["output"] == 40 == doc["succeeded"], batch
