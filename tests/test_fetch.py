"""fetch_results.py against the sandbox: partial results, resume after drops and kill -9,
dedupe, merge order across chunks, formats (raw, simple, csv), bare batch ids."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from _dwbatches.jobs.job import Job
from helpers import (
    ThrottleProxy,
    assert_each_once,
    batch_ids_of,
    is_error,
    job_state,
    make_job,
    raw_lines,
    read_jsonl,
    run_script,
    wait_job,
    wait_until,
    write_input,
)
from sandbox_helper import SCRIPTS, jsonl_bytes

# -- tests ------------------------------------------------------------------------------------


@pytest.mark.slow  # several seconds of a slowed sandbox
def test_fetch_while_running_then_after_gets_each_result_once(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.15", "--concurrency", "2")
    ids = write_input("data.jsonl", 40)
    job = make_job(sb, "data.jsonl")
    bid = batch_ids_of(job)[0]
    wait_until(lambda: sb.batch(bid)["request_counts"]["completed"] >= 6)
    sb.set_faults({"pause_requests": True})  # still running when the fetch looks, however late

    code, doc, err = run_script("fetch_results.py", "--job", job, "--format", "simple", env=sb.env())
    assert code == 6, err
    assert doc["complete"] is False and doc["status"] == "in_progress"
    assert 6 <= doc["succeeded"] < 40 and doc["missing"] == 40 - doc["succeeded"]
    assert "poll.py --job" in doc["next"] and ";" not in doc["next"]  # one command, runnable in any shell
    rows = assert_each_once(doc["output"], ids)  # simple: one line per request, in input order
    done = [r for r in rows if r["ok"]]
    assert len(done) == doc["succeeded"] and all(r["content"] for r in done)
    assert {r["error"] for r in rows if not r["ok"]} == {"missing: no result yet"}
    first_cursor = job_state(job)["fetch"][bid]["output"]["skip"]
    assert first_cursor == doc["succeeded"]

    sb.clear_faults()
    sb.wait_batch(bid)
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sb.env())
    assert code == 0, err
    assert doc["complete"] and doc["succeeded"] == 40 and doc["failed"] == 0 and doc["missing"] == 0
    assert doc["next"] is None
    assert doc["format"] == "simple"  # the format given once is remembered by the job
    assert doc["batches"][0]["verified"] is True
    assert doc["batches"][0]["new_lines"]["output"] == 40 - first_cursor
    assert all(r["ok"] for r in assert_each_once(doc["output"], ids))
    # the local raw file holds every line exactly once: the cursor never re-read a line
    assert sorted(r["custom_id"] for r in raw_lines(job, bid)) == sorted(ids)
    assert Path("data.errors.jsonl").read_text() == ""

    # again, as raw: nothing new is downloaded; the server's lines come back in input order
    code, doc, _ = run_script("fetch_results.py", "--job", job, "--format", "raw", env=sb.env())
    assert code == 0 and doc["batches"][0]["new_lines"] == {"output": 0, "error": 0}
    out = assert_each_once(Path("data.results.jsonl"), ids)
    assert all(r["response"]["status_code"] == 200 and r["id"].startswith("batch_req_") for r in out)
    before = Path("data.results.jsonl").read_bytes()
    code, doc, _ = run_script("fetch_results.py", "--job", job, env=sb.env())
    assert code == 0 and doc["format"] == "raw"
    assert Path("data.results.jsonl").read_bytes() == before


def test_dropped_connection_mid_download_resumes_from_cursor(sandbox, tmp_path):
    ids = write_input("data.jsonl", 30)
    job = make_job(sandbox, "data.jsonl")
    bid = batch_ids_of(job)[0]
    sandbox.wait_batch(bid)
    sandbox.set_faults({"drop_content_after_lines": 7, "drop_content_times": 3})

    code, doc, err = run_script("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 0, err
    assert "broke after 7 lines" in err
    assert doc["succeeded"] == 30 and doc["batches"][0]["verified"] is True
    assert_each_once(doc["output"], ids)
    assert len(raw_lines(job, bid)) == 30  # no line written twice, none lost
    assert sandbox.faults()["_remaining"]["drop_content_times"] == 0


def test_download_that_keeps_breaking_saves_progress_and_exits_1(sandbox, tmp_path, monkeypatch):
    ids = write_input("data.jsonl", 30)
    job = make_job(sandbox, "data.jsonl")
    bid = batch_ids_of(job)[0]
    sandbox.wait_batch(bid)
    sandbox.set_faults({"drop_content_after_lines": 4, "drop_content_times": 100})
    for k, v in sandbox.env().items():
        monkeypatch.setenv(k, v)
    import fetch_results
    from _dwbatches.core import clock

    monkeypatch.setattr(clock, "sleep", lambda s: None)
    code = fetch_results.main(["--job", job])
    assert code == 1
    saved = job_state(job)["fetch"][bid]["output"]["skip"]
    assert saved == 4 * 6  # first try + 5 resumes, 4 lines each, all recorded
    sandbox.clear_faults()
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 0, err
    assert doc["batches"][0]["new_lines"]["output"] == 30 - saved
    assert_each_once(doc["output"], ids)
    assert len(raw_lines(job, bid)) == 30


@pytest.mark.slow
def test_fetch_killed_mid_stream_then_rerun_is_complete_without_duplicates(sandbox, tmp_path):
    proxy = ThrottleProxy(sandbox.port)
    try:
        sandbox.base_url = proxy.base_url  # everything, the job's base_url included, goes through the proxy
        ids = write_input("data.jsonl", 3000)
        job = make_job(sandbox, "data.jsonl")
        bid = batch_ids_of(job)[0]
        sandbox.wait_batch(bid, timeout=60)
        proxy.rate = 150_000  # bytes/s: the ~1.5 MB output file takes ~10 s to stream
        state_path = Path(job, "job.json")
        raw = Path(job, "results", f"{bid}.output.jsonl")
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPTS / "fetch_results.py"), "--job", job],
            env=sandbox.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:

            def checkpointed_and_more():
                st = json.loads(state_path.read_text()).get("fetch", {}).get(bid)
                return bool(
                    st
                    and st["output"]["skip"] > 0
                    and raw.exists()
                    and raw.stat().st_size > st["output"]["local_bytes"]
                )

            wait_until(checkpointed_and_more, timeout=30, interval=0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        st = job_state(job)["fetch"][bid]["output"]
        assert 0 < st["skip"] < 3000
        assert raw.stat().st_size > st["local_bytes"]  # lines after the last checkpoint, to be dropped

        proxy.rate = None
        code, doc, err = run_script("fetch_results.py", "--job", job, env=sandbox.env())
        assert code == 0, err
        assert doc["batches"][0]["new_lines"]["output"] == 3000 - st["skip"]
        assert_each_once(doc["output"], ids)
        lines = raw_lines(job, bid)
        assert len(lines) == 3000 and len({r["custom_id"] for r in lines}) == 3000
    finally:
        proxy.close()


@pytest.mark.slow
def test_duplicated_output_line_is_deduped_and_cursor_not_overrun(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.1", "--concurrency", "2")
    ids = write_input("data.jsonl", 24)
    job = make_job(sb, "data.jsonl")
    bid = batch_ids_of(job)[0]
    sb.set_faults({"duplicate_output_line": True})
    wait_until(lambda: sb.batch(bid)["request_counts"]["completed"] >= 5)
    sb.set_faults({"duplicate_output_line": True, "pause_requests": True})  # still running at the fetch
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sb.env())
    assert code == 6, err
    sb.set_faults({"duplicate_output_line": True})
    sb.wait_batch(bid)
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sb.env())
    assert code == 0, err
    assert doc["succeeded"] == 24 and doc["batches"][0]["verified"] is True
    assert_each_once(doc["output"], ids)
    raw = raw_lines(job, bid)
    assert len(raw) > 24  # the server did send duplicates ...
    assert len({r["custom_id"] for r in raw}) == 24  # ... and nothing was skipped


def test_short_output_file_is_read_again_from_the_start(sandbox, tmp_path):
    """A cursor past lines never received (the server's insert race) is caught by verification."""
    ids = write_input("data.jsonl", 20)
    job = make_job(sandbox, "data.jsonl")
    bid = batch_ids_of(job)[0]
    sandbox.wait_batch(bid)
    code, doc, _ = run_script("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 0
    # simulate the race: the local file lacks three lines the cursor already counted
    raw = Path(job, "results", f"{bid}.output.jsonl")
    kept = raw.read_bytes().splitlines(keepends=True)[3:]
    raw.write_bytes(b"".join(kept))
    with Job(job) as j:
        j.load()
        j.record.fetch[bid].output.local_bytes = raw.stat().st_size
        j.record.fetch[bid].final = False
        j.record.fetch[bid].request_counts = None
        j.save()
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 0, err
    assert "reading the whole file again" in err
    assert doc["batches"][0]["verified"] is True and doc["succeeded"] == 20
    assert_each_once(doc["output"], ids)


def test_three_chunk_job_is_merged_in_input_order(sandbox_factory, tmp_path):
    sb = sandbox_factory("--concurrency", "4")
    ids = write_input("data.jsonl", 45)
    job = make_job(sb, "data.jsonl", chunks=3)
    wait_job(sb, job)
    code, doc, err = run_script(
        "fetch_results.py", "--job", job, "--format", "simple", "-o", "answers.jsonl", env=sb.env()
    )
    assert code == 0, err
    assert [b["chunk"] for b in doc["batches"]] == [1, 2, 3]
    assert doc["output"] == str(tmp_path / "answers.jsonl") and doc["errors"] == str(tmp_path / "answers.errors.jsonl")
    rows = assert_each_once("answers.jsonl", ids)
    assert all(
        r["ok"] and r["content"].startswith("Echo: Question number") and r["usage"]["total_tokens"] > 0 for r in rows
    )
    for r, i in zip(rows, range(45)):
        assert f"Question number {i}" in r["content"]


def test_embeddings_simple_format_gives_the_vector(sandbox, tmp_path):
    items = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "Qwen/Qwen3-Embedding-8B", "input": f"text {i}"},
        }
        for i in range(3)
    ]
    Path("emb.jsonl").write_bytes(jsonl_bytes(items))
    job = make_job(sandbox, "emb.jsonl")
    wait_job(sandbox, job)
    code, doc, err = run_script("fetch_results.py", "--job", job, "--format", "simple", env=sandbox.env())
    assert code == 0, err
    rows = read_jsonl(doc["output"])
    assert [r["custom_id"] for r in rows] == ["e0", "e1", "e2"]
    assert all(
        isinstance(r["content"], list) and len(r["content"]) >= 8 and isinstance(r["content"][0], float) for r in rows
    )


def test_failed_requests_go_to_errors_and_exit_5(sandbox, tmp_path):
    ids = write_input("data.jsonl", 12)
    sandbox.set_faults({"fail_custom_ids": ["req-3", "req-7"], "fail_status": 400})
    job = make_job(sandbox, "data.jsonl")
    wait_job(sandbox, job)
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 5, err
    assert doc["succeeded"] == 10 and doc["failed"] == 2 and doc["missing"] == 0
    assert "retry_failed.py" in doc["next"] and "--job" in doc["next"]
    assert [s["custom_id"] for s in doc["failed_sample"]] == ["req-3", "req-7"]
    assert "HTTP 400" in doc["failed_sample"][0]["error"]
    out = read_jsonl(doc["output"])
    assert [r["custom_id"] for r in out] == [i for i in ids if i not in ("req-3", "req-7")]
    errs = read_jsonl(doc["errors"])
    assert [e["custom_id"] for e in errs] == ["req-3", "req-7"]
    assert all(e["error"]["message"] for e in errs)


def test_csv_in_csv_out_with_new_columns(sandbox, tmp_path):
    with open("reviews.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "stars"])
        for i, (t, s) in enumerate([("great, loved it", 5), ("meh", 3), ('awful "really"', 1), ("multi\nline", 4)]):
            w.writerow([f"r{i}", t, s])
    code, built, err = run_script(
        "create_batch_file.py",
        "reviews.jsonl",
        "--csv",
        "reviews.csv",
        "--id-column",
        "id",
        "--template",
        "Sentiment of: {text}",
    )
    assert code == 0, err
    assert built["source"]["id_column"] == "id"
    # the fault is set before the submit, so the batch cannot finish before it applies
    sandbox.set_faults({"fail_custom_ids": [read_jsonl("reviews.jsonl")[2]["custom_id"]], "fail_status": 400})
    job = make_job(sandbox, "reviews.jsonl")
    wait_job(sandbox, job)
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 5, err
    assert doc["format"] == "csv" and doc["output"] == str(tmp_path / "reviews.results.csv")
    with open(doc["output"], newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", "text", "stars", "response", "error", "answer_check"]
    assert [r[0] for r in rows[1:]] == ["r0", "r1", "r2", "r3"]
    assert rows[4][1] == "multi\nline"
    assert "Sentiment of: great, loved it" in rows[1][3] and rows[1][4] == ""
    assert rows[3][3] == "" and "HTTP 400" in rows[3][4]


def test_csv_numbered_rows_without_id_column(sandbox, tmp_path):
    Path("q.csv").write_text("prompt,topic\nwhat is 1,a\n\nwhat is 2,b\nwhat is 3,c\n")
    code, built, err = run_script("create_batch_file.py", "q.jsonl", "--csv", "q.csv")
    assert code == 0, err
    job = make_job(sandbox, "q.jsonl")
    wait_job(sandbox, job)
    out = tmp_path / "answers.csv"
    code, doc, err = run_script("fetch_results.py", "--job", job, "--format", "csv", "-o", out, env=sandbox.env())
    assert code == 0, err
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["topic"] for r in rows] == ["a", "b", "c"]
    assert all(f"what is {i}" in r["response"] for i, r in zip((1, 2, 3), rows))


@pytest.mark.slow
def test_bare_batch_ids_use_a_state_file_beside_out(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.15", "--concurrency", "2")
    ids = write_input("data.jsonl", 20)
    batch = sb.submit(read_jsonl("data.jsonl"))
    bid = batch["id"]
    wait_until(lambda: sb.batch(bid)["request_counts"]["completed"] >= 4)
    sb.set_faults({"pause_requests": True})  # still running when the fetch looks
    code, doc, err = run_script("fetch_results.py", bid, "-o", "out.jsonl", env=sb.env())
    assert code == 6, err
    assert doc["job"] is None and doc["state"] == str(tmp_path / "out.jsonl.dwstate.json")
    assert f"fetch_results.py {bid} -o out.jsonl" in doc["next"]
    first = doc["batches"][0]["fetched"]["output"]
    sb.clear_faults()
    sb.wait_batch(bid)
    code, doc, err = run_script("fetch_results.py", bid, "-o", "out.jsonl", "--input", "data.jsonl", env=sb.env())
    assert code == 0, err
    assert doc["batches"][0]["new_lines"]["output"] == 20 - first
    assert_each_once("out.jsonl", ids)  # --input gives the input order
    assert len(read_jsonl(Path("out.jsonl.dwraw", f"{bid}.output.jsonl"))) == 20


def test_usage_errors_leave_stdout_empty(sandbox, tmp_path):
    code, doc, err = run_script("fetch_results.py", env=sandbox.env())
    assert code == 2 and is_error(doc) and "either batch ids or --job" in err
    code, doc, err = run_script("fetch_results.py", "batch_123", env=sandbox.env())
    assert code == 2 and is_error(doc) and "not a valid batch id" in err
    code, doc, err = run_script("fetch_results.py", str(uuid.uuid4()), env=sandbox.env())
    assert code == 4 and is_error(doc)
    code, doc, err = run_script("fetch_results.py", "--job", "nope.dwjob", env=sandbox.env())
    assert code == 4 and is_error(doc) and "no job found" in err  # not found, as the exit code table says


@pytest.mark.parametrize("script", ["fetch_results.py", "poll.py", "list_batches.py", "cancel_batch.py"])
def test_help_lists_exit_codes(script):
    proc = subprocess.run([sys.executable, str(SCRIPTS / script), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "exit codes:" in proc.stdout and "examples:" in proc.stdout


def test_the_report_says_what_the_results_cost_by_round(sandbox, tmp_path):
    """usage = the tokens the server reported for every answer received (reasoning included);
    cost = what the server billed (the batches' analytics), beside the price-table estimate,
    for each round's window."""
    write_input("data.jsonl", 4)
    sandbox.set_faults({"fail_custom_ids": ["req-2"], "fail_status": 500})
    code, doc, err = run_script("run_batch.py", "data.jsonl", "--wait", "--interval", "0.2", env=sandbox.env())
    assert code == 5, err
    lines = [json.loads(x) for x in Path(doc["output"]).read_text().splitlines()]
    reported = [ln["response"]["body"]["usage"] for ln in lines]
    assert doc["usage"] == {
        "requests": 3,
        "input_tokens": sum(u["prompt_tokens"] for u in reported),
        "output_tokens": sum(u["completion_tokens"] for u in reported),
        "reasoning_tokens": sum(u["completion_tokens_details"]["reasoning_tokens"] for u in reported),
    }
    price_in, price_out = 0.03, 0.29  # Qwen/Qwen3.5-9B, 24h, per 1M tokens
    expected = (doc["usage"]["input_tokens"] * price_in + doc["usage"]["output_tokens"] * price_out) / 1e6
    assert abs(float(doc["cost"]["estimated_usd"]) - expected) < expected * 0.05
    assert doc["cost"]["usd"] == doc["cost"]["billed_usd"] and doc["cost"]["basis"] == "billed"
    assert [r["round"] for r in doc["cost"]["rounds"]] == [1] and doc["cost"]["prices_as_of"] == "2026-04-13"
    assert f"cost ${doc['cost']['usd']}" in err

    sandbox.clear_faults()
    code, doc, err = run_script("retry_failed.py", "--job", "data.dwjob", "-w", "1h", env=sandbox.env())
    assert code == 0, err
    wait_job(sandbox, "data.dwjob")
    code, doc, err = run_script("fetch_results.py", "--job", "data.dwjob", env=sandbox.env())
    assert code == 0 and doc["usage"]["requests"] == 4, err
    rounds = {r["round"]: r for r in doc["cost"]["rounds"]}
    assert set(rounds) == {1, 2} and rounds[2]["completion_window"] == "1h" and rounds[2]["requests"] == 1
    assert Decimal(doc["cost"]["usd"]) == sum(Decimal(r["usd"]) for r in rounds.values())  # they add up
    assert f"cost ${doc['cost']['usd']}" in err


def test_the_round_costs_add_up_to_the_job_cost_as_shown():
    """Each round's cost is rounded for display; the job's cost is the sum of those figures
    (0.000028 + 0.000013 = 0.000041), not the rounded exact sum (0.000040)."""
    from types import SimpleNamespace

    from _dwbatches.cost.cost import usage_and_cost
    from _dwbatches.results.download import BatchReport

    model = "Qwen/Qwen3.5-9B"  # 24h input: $0.03 per 1M tokens
    index = SimpleNamespace(usage={(0, model): (1, 917, 0, 0), (2, model): (1, 417, 0, 0)})  # $0.00002751, $0.00001251
    reports = [BatchReport("a", round=1), BatchReport("b", round=2)]
    usage, cost = usage_and_cost(index, reports, {1: "24h", 2: "24h"}, {})
    assert [r["usd"] for r in cost["rounds"]] == ["0.000028", "0.000013"]
    assert cost["usd"] == cost["estimated_usd"] == "0.000041" and cost["billed_usd"] is None
    assert usage == {"requests": 2, "input_tokens": 1334, "output_tokens": 0, "reasoning_tokens": 0}
    billed = {"a": Decimal("0.00001"), "b": Decimal("0.0000049")}  # what the server says it billed wins
    usage, cost = usage_and_cost(index, reports, {1: "24h", 2: "24h"}, billed)
    assert [r["usd"] for r in cost["rounds"]] == ["0.000010", "0.0000049"] and cost["usd"] == "0.0000149"
    assert cost["estimated_usd"] == "0.000041" and cost["basis"] == "billed"


def test_csv_for_a_prompts_job_with_a_named_answer_column(sandbox, tmp_path):
    """A job built from a prompts file gives a question/answer CSV; --column names the answer."""
    Path("prompts.txt").write_text("What is 2+2?\nName a colour, with a comma, please\n", encoding="utf-8")
    code, doc, err = run_script("create_batch_file.py", "q.jsonl", "--prompts", "prompts.txt")
    assert code == 0, err
    code, doc, err = run_script(
        "run_batch.py",
        "q.jsonl",
        "--wait",
        "--interval",
        "0.2",
        "--format",
        "csv",
        "--column",
        "answer",
        env=sandbox.env(),
    )
    assert code == 0 and doc["output"].endswith("q.results.csv"), err
    with open(doc["output"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["custom_id", "prompt", "answer", "error", "answer_check"]
    assert [r["prompt"] for r in rows] == ["What is 2+2?", "Name a colour, with a comma, please"]
    assert all(r["prompt"] in r["answer"] and r["error"] == "" for r in rows)  # the sandbox echoes the prompt
    # remembered: a later fetch without options writes the same shape
    code, doc, err = run_script("fetch_results.py", "--job", "q.dwjob", env=sandbox.env())
    assert code == 0 and doc["format"] == "csv", err
    with open(doc["output"], newline="", encoding="utf-8") as fh:
        assert next(csv.reader(fh)) == ["custom_id", "prompt", "answer", "error", "answer_check"]


def test_column_names_the_answer_column_of_a_csv_job(sandbox, tmp_path):
    (tmp_path / "reviews.csv").write_text("id,text\n1,great\n2,awful\n", encoding="utf-8")
    code, doc, err = run_script(
        "create_batch_file.py",
        "r.jsonl",
        "--csv",
        "reviews.csv",
        "--id-column",
        "id",
        "--template",
        "Sentiment of: {text}",
    )
    assert code == 0, err
    code, doc, err = run_script(
        "run_batch.py", "r.jsonl", "--wait", "--interval", "0.2", "--column", "sentiment", env=sandbox.env()
    )
    assert code == 0, err
    with open(doc["output"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["id", "text", "sentiment", "error", "answer_check"] and all(r["sentiment"] for r in rows)
    code, doc, err = run_script("fetch_results.py", "--job", "r.dwjob", "--column", "text", env=sandbox.env())
    assert code == 2 and is_error(doc) and "already a column" in err


def test_progress_counts_distinct_results_not_repeated_lines(sandbox, tmp_path):
    write_input("data.jsonl", 12)
    sandbox.set_faults({"duplicate_output_line": True})
    job = make_job(sandbox, "data.jsonl")
    wait_job(sandbox, job)
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 0, err
    assert len(raw_lines(job, batch_ids_of(job)[0])) > 12  # the server repeated lines ...
    assert "+12 results, +0 errors" in err  # ... and stderr counts each result once


def test_fetched_and_new_lines_say_what_the_help_says_when_the_server_repeats_a_line(sandbox):
    """fetched: how far the saved download reaches in the server's own line count; new_lines:
    lines this run downloaded, a repeated one included; the results count each request once."""
    write_input("d.jsonl", 8)
    sandbox.set_faults({"duplicate_output_line": True})
    job = make_job(sandbox, "d.jsonl")
    wait_job(sandbox, job)
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 0 and doc["succeeded"] == 8, err
    batch = doc["batches"][0]
    assert batch["fetched"] == {"output": 8, "error": 0} and batch["new_lines"] == {"output": 9, "error": 0}
    assert len(read_jsonl(doc["output"])) == 8
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sandbox.env())
    assert doc["batches"][0]["fetched"] == {"output": 8, "error": 0}
    assert doc["batches"][0]["new_lines"] == {"output": 0, "error": 0}
    text = " ".join(
        subprocess.run(
            [sys.executable, str(SCRIPTS / "fetch_results.py"), "--help"], capture_output=True, text=True
        ).stdout.split()
    )
    assert "a line the server sent twice counts once" in text and "a line sent twice counts twice" in text


def test_one_rounding_rule_for_every_amount():
    """Cents from $1, two significant digits below, never exponent notation."""
    from _dwbatches.cost.pricing import money

    got = [money(Decimal(v)) for v in ("0", "0.00026", "0.000083", "1.234", "0.5", "1.4E-7", "12.345")]
    assert got == ["0", "0.00026", "0.000083", "1.23", "0.50", "0.00000014", "12.35"]
    assert money(Decimal("0.000081"), up=True) == "0.000081" and money(Decimal("0.0000811"), up=True) == "0.000082"
