"""submit.py against the sandbox: splitting, crash recovery, resume, cost cap, faults, dry run.

Every test runs the real script (``helpers.run``; ``sandbox.env()`` supplies the key and base
URL) and checks what the sandbox received, not only what the script says.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import is_error, ok_json, run, run_script
from sandbox_helper import CHAT_MODEL

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


# -- helpers ------------------------------------------------------------------------------------


def request_line(i, model=CHAT_MODEL, pad=0, prefix="q"):
    content = f"Question {i}" + ("x" * pad)
    return {
        "custom_id": f"{prefix}-{i:06d}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 8},
    }


def write_requests(path, n, blank_every=0, pad=0, prefix="q"):
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(1, n + 1):
            fh.write(json.dumps(request_line(i, pad=pad, prefix=prefix), separators=(",", ":")) + "\n")
            if blank_every and i % blank_every == 0:
                fh.write("\n")
    return Path(path)


def input_requests(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def server_batches(sandbox, job_id):
    """Every batch on the sandbox whose metadata names this job."""
    found, after = [], None
    while True:
        params = {"limit": 100}
        if after:
            params["after"] = after
        page = sandbox.get_json("batches", params=params)
        found += [b for b in page["data"] if (b.get("metadata") or {}).get("dwb_job") == job_id]
        if not page.get("has_more"):
            return found
        after = page["last_id"]


def server_input(sandbox, file_id):
    res = sandbox.content(file_id)
    assert res.status == 200, res
    return res.lines()


def posts(sandbox, what):
    return sandbox.stats()["requests"].get(f"POST /v1/{what}", 0)


def load_job(doc):
    with open(os.path.join(doc["job"], "job.json"), encoding="utf-8") as fh:
        return json.load(fh)


def assert_chunks_hold_input_in_order(sandbox, doc, path, max_requests, max_bytes):
    """The batches' input files, concatenated, are the input's requests, once each, in order,
    and no uploaded file is over either limit."""
    expected = input_requests(path)
    got = []
    for b in sorted(doc["batches"], key=lambda b: (b["round"], b["chunk"])):
        f = sandbox.get_json(f"files/{b['input_file_id']}")
        assert f["bytes"] <= max_bytes
        lines = server_input(sandbox, b["input_file_id"])
        assert 0 < len(lines) <= max_requests
        assert len(lines) == b["requests"]
        got += lines
    assert [r["custom_id"] for r in got] == [r["custom_id"] for r in expected]
    assert [r["body"] for r in got] == [r["body"] for r in expected]


# -- splitting ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_120k_lines_become_three_batches_that_hold_every_line_once_in_order(sandbox_factory, tmp_path):
    sandbox = sandbox_factory("--validating-delay", "600")  # keep the server from running 120k requests
    path = write_requests(tmp_path / "big.jsonl", 120_000)
    doc = ok_json(run("submit.py", path, env=sandbox.env()))
    assert doc["chunks"] == 3 and doc["requests"] == 120_000
    assert [b["requests"] for b in doc["batches"]] == [50_000, 50_000, 20_000]
    assert all(b["batch_id"] and b["status"] == "validating" for b in doc["batches"])
    assert not doc["resumed"] and doc["next"].endswith("--job big.dwjob")
    assert doc["job"] == str(tmp_path / "big.dwjob")
    on_server = server_batches(sandbox, doc["job_id"])
    assert sorted(b["id"] for b in on_server) == sorted(b["batch_id"] for b in doc["batches"])
    assert sandbox.stats()["files"] == 3
    assert_chunks_hold_input_in_order(sandbox, doc, path, 50_000, 200_000_000)


@pytest.mark.slow
def test_small_max_bytes_splits_by_bytes_and_blank_lines_never_push_a_chunk_over(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 300, blank_every=7, pad=40)
    line_size = len(json.dumps(request_line(1, pad=40), separators=(",", ":"))) + 1
    max_bytes = line_size * 10 + 3  # room for 10 lines, not for 10 lines and their blank lines
    doc = ok_json(run("submit.py", path, "--max-bytes", max_bytes, "--all-batches", env=sandbox.env()))
    assert doc["chunks"] >= 30
    state = load_job(doc)
    for ch in state["rounds"][0]["chunks"]:
        assert ch["bytes"] <= max_bytes and ch["end_byte"] - ch["start_byte"] == ch["bytes"]
    assert_chunks_hold_input_in_order(sandbox, doc, path, 50_000, max_bytes)


def test_max_requests_splits_and_every_batch_runs_to_completion(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 25)
    doc = ok_json(run("submit.py", path, "--max-requests", 10, "--metadata", "project=demo", env=sandbox.env()))
    assert [b["requests"] for b in doc["batches"]] == [10, 10, 5]
    assert [b["lines"] for b in doc["batches"]] == [[1, 10], [11, 20], [21, 25]]
    for b in doc["batches"]:
        done = sandbox.wait_batch(b["batch_id"])
        assert done["status"] == "completed"
        assert done["request_counts"]["completed"] == b["requests"]
        meta = done["metadata"]
        assert meta["project"] == "demo" and meta["dwb_job"] == doc["job_id"]
        assert meta["dwb_chunk"] == f"r1c{b['chunk']}"
    intents = {c["intent_id"] for c in load_job(doc)["rounds"][0]["chunks"]}
    assert {sandbox.batch(b["batch_id"])["metadata"]["dwb_intent"] for b in doc["batches"]} == intents


# -- crash recovery -----------------------------------------------------------------------------

# These tests follow the chunks one after another (a kill lands between two known steps);
# with parallel uploads the same guarantees are checked below and by the crash trials.
ONE_AT_A_TIME = ("--parallel", "1")


def crash_env(sandbox, point):
    env = sandbox.env()
    env["DOUBLEWORD_BATCHES_CRASH_AT"] = point
    return env


def test_killed_between_upload_and_create_then_rerun_makes_one_batch_per_chunk(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 30)
    crashed = run("submit.py", path, "--max-requests", 10, *ONE_AT_A_TIME, env=crash_env(sandbox, "after_upload:2"))
    assert crashed.returncode == 137 and crashed.stdout == ""
    assert posts(sandbox, "files") == 2 and posts(sandbox, "batches") == 0
    state = json.loads((tmp_path / "in.dwjob" / "job.json").read_text())
    chunk2 = state["rounds"][0]["chunks"][1]
    assert chunk2["upload_started_at"] and chunk2["file_id"] is None  # uploaded, but not recorded

    again = run("submit.py", path, "--max-requests", 10, *ONE_AT_A_TIME, env=sandbox.env())
    doc = ok_json(again)
    assert "chunk 2/3: found the file uploaded by an earlier run" in again.stderr
    assert doc["resumed"] and doc["this_run"] == {"uploaded": 1, "created": 3, "found": 1}
    on_server = server_batches(sandbox, doc["job_id"])
    assert len(on_server) == 3
    assert sorted(b["metadata"]["dwb_chunk"] for b in on_server) == ["r1c1", "r1c2", "r1c3"]
    assert posts(sandbox, "files") == 3  # the unrecorded upload was found, not repeated
    assert_chunks_hold_input_in_order(sandbox, doc, path, 10, 200_000_000)


def test_killed_between_create_and_recording_it_then_rerun_finds_the_batch(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 30)
    crashed = run("submit.py", path, "--max-requests", 10, *ONE_AT_A_TIME, env=crash_env(sandbox, "after_create:2"))
    assert crashed.returncode == 137 and crashed.stdout == ""
    assert posts(sandbox, "batches") == 2
    again = run("submit.py", path, "--max-requests", 10, *ONE_AT_A_TIME, env=sandbox.env())
    doc = ok_json(again)
    assert "chunk 2/3: found the batch created by an earlier run" in again.stderr
    on_server = server_batches(sandbox, doc["job_id"])
    assert len(on_server) == 3
    assert sorted(b["id"] for b in on_server) == sorted(b["batch_id"] for b in doc["batches"])
    assert posts(sandbox, "batches") == 3 and posts(sandbox, "files") == 3
    assert doc["this_run"] == {"uploaded": 0, "created": 1, "found": 1}


@pytest.mark.slow  # several script runs or a server restart: in make test, not the inner loop
@pytest.mark.parametrize("point", ["after_upload", "after_create"])
def test_killed_at_every_chunk_still_ends_with_exactly_one_batch_per_chunk(sandbox, tmp_path, point):
    path = write_requests(tmp_path / "in.jsonl", 40)
    codes = []
    for _ in range(10):
        proc = run("submit.py", path, "--max-requests", 10, *ONE_AT_A_TIME, env=crash_env(sandbox, point))
        codes.append(proc.returncode)
        if proc.returncode == 0:
            break
    assert codes[:4] == [137] * 4 and codes[-1] == 0
    doc = json.loads(proc.stdout)
    assert len(server_batches(sandbox, doc["job_id"])) == 4 == len({b["batch_id"] for b in doc["batches"]})
    assert posts(sandbox, "batches") == 4 and posts(sandbox, "files") == 4
    assert_chunks_hold_input_in_order(sandbox, doc, path, 10, 200_000_000)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_upload:2", "after_create:2"])
def test_killed_while_chunks_go_up_in_parallel_then_rerun_makes_one_file_and_batch_per_chunk(sandbox, tmp_path, point):
    path = write_requests(tmp_path / "in.jsonl", 40)
    crashed = run("submit.py", path, "--max-requests", 10, "--parallel", 3, env=crash_env(sandbox, point))
    assert crashed.returncode == 137
    # a create under way in another thread may have been cut off before it was sent: the rerun
    # waits for it as long as the server could be working on it (160 s, here scaled to 0.8 s)
    env = dict(sandbox.env(), DOUBLEWORD_BATCHES_TIME_SCALE="0.005")
    doc = ok_json(run("submit.py", path, "--max-requests", 10, "--parallel", 3, env=env))
    assert len(server_batches(sandbox, doc["job_id"])) == 4 == len({b["batch_id"] for b in doc["batches"]})
    # one file and one batch per chunk on the server: what reached it was found, not sent again.
    # (The POSTs are not counted: a request the crash cut off in another thread is counted by the
    # server when its head arrives, stores nothing, and is rightly sent again by the rerun.)
    assert sandbox.stats()["batches"] == 4 and sandbox.stats()["files"] == 4
    assert_chunks_hold_input_in_order(sandbox, doc, path, 10, 200_000_000)


@pytest.mark.slow
def test_parallel_uploads_overlap_and_each_chunk_goes_up_once(sandbox, tmp_path, monkeypatch, capsys):
    """--parallel 4: four chunks on their way at once (each thread its own connection); 1: one."""
    import threading

    import submit
    from _dwbatches.core import http

    real = http.Client.upload_file
    state = {"now": 0, "most": 0}
    lock = threading.Lock()

    def counting_upload(self, *args, **kwargs):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        try:
            threading.Event().wait(0.3)  # long enough for the other threads to start theirs
            return real(self, *args, **kwargs)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(http.Client, "upload_file", counting_upload)
    for k, v in sandbox.env().items():
        monkeypatch.setenv(k, v)
    for parallel, most, name in ((4, 4, "a"), (1, 1, "b")):
        state["most"] = 0
        path = write_requests(tmp_path / f"{name}.jsonl", 40, prefix=name)
        assert submit.main([str(path), "--max-requests", "10", "--parallel", str(parallel)]) == 0
        out, err = capsys.readouterr()
        doc = json.loads(out)
        assert state["most"] == most, (parallel, state)
        assert len(server_batches(sandbox, doc["job_id"])) == 4
    assert posts(sandbox, "files") == 8 and posts(sandbox, "batches") == 8


# -- resume -------------------------------------------------------------------------------------


def test_second_submit_creates_nothing_and_reports_the_same_batches(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 12)
    first = ok_json(run("submit.py", path, "--max-requests", 5, env=sandbox.env()))
    before = sandbox.stats()["requests"]
    again = run("submit.py", path, env=sandbox.env())
    second = ok_json(again)
    assert second["resumed"] is True and second["this_run"] == {"uploaded": 0, "created": 0, "found": 0}
    assert [b["batch_id"] for b in second["batches"]] == [b["batch_id"] for b in first["batches"]]
    assert second["job_id"] == first["job_id"]
    after = sandbox.stats()["requests"]
    assert after.get("POST /v1/files") == before.get("POST /v1/files") == 3
    assert after.get("POST /v1/batches") == before.get("POST /v1/batches") == 3
    assert "nothing to do" in again.stderr


def test_changed_input_in_an_existing_job_is_refused_and_a_new_job_dir_works(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 4)
    ok_json(run("submit.py", path, env=sandbox.env()))
    write_requests(path, 5)
    refused = run("submit.py", path, env=sandbox.env())
    assert refused.returncode == 2 and is_error(refused.stdout)
    assert "not the file this job was started with" in refused.stderr and "--job" in refused.stderr
    assert posts(sandbox, "files") == 1
    doc = ok_json(run("submit.py", path, "--job", tmp_path / "second", env=sandbox.env()))
    assert doc["job"] == str(tmp_path / "second") and doc["requests"] == 5 and not doc["resumed"]


def test_a_different_window_or_metadata_on_resume_is_refused(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 3)
    ok_json(run("submit.py", path, "-w", "1h", "--metadata", "team=a", env=sandbox.env()))
    refused = run("submit.py", path, "-w", "24h", env=sandbox.env())
    assert refused.returncode == 2 and is_error(refused.stdout) and "-w 1h" in refused.stderr
    refused = run("submit.py", path, "--metadata", "team=b", env=sandbox.env())
    assert refused.returncode == 2 and is_error(refused.stdout) and "metadata" in refused.stderr
    doc = ok_json(run("submit.py", path, env=sandbox.env()))  # no -w: the job's own window
    assert doc["completion_window"] == "1h" and doc["resumed"]
    assert sandbox.batch(doc["batches"][0]["batch_id"])["completion_window"] == "1h"
    assert posts(sandbox, "batches") == 1


def test_rerun_with_smaller_max_bytes_after_413_resplits_what_was_not_uploaded(sandbox_factory, tmp_path):
    sandbox = sandbox_factory("--max-file-bytes", "6000")
    path = tmp_path / "in.jsonl"
    with open(path, "w") as fh:  # 10 short lines, then 40 of about 700 bytes
        for i in range(1, 51):
            fh.write(json.dumps(request_line(i, pad=0 if i <= 10 else 600)) + "\n")
    first = run("submit.py", path, "--max-requests", 10, env=sandbox.env())
    assert first.returncode == 2 and is_error(first.stdout)
    assert "chunk 2/5" in first.stderr and "too large" in first.stderr and "--max-bytes" in first.stderr
    assert posts(sandbox, "batches") == 0 and sandbox.stats()["files"] == 1
    kept = json.loads((tmp_path / "in.dwjob" / "job.json").read_text())["rounds"][0]["chunks"][0]

    again = run("submit.py", path, "--max-bytes", 5000, "--all-batches", env=sandbox.env())
    doc = ok_json(again)
    assert "re-split the 4 chunk(s) not yet uploaded" in again.stderr
    chunks = load_job(doc)["rounds"][0]["chunks"]
    assert chunks[0]["file_id"] == kept["file_id"] and chunks[0]["intent_id"] == kept["intent_id"]
    assert [c["index"] for c in chunks] == list(range(1, len(chunks) + 1)) and len(chunks) > 5
    assert all(b["batch_id"] for b in doc["batches"])
    assert len(server_batches(sandbox, doc["job_id"])) == doc["chunks"]
    assert sandbox.stats()["files"] == doc["chunks"]  # the first chunk was not uploaded again
    assert_chunks_hold_input_in_order(sandbox, doc, path, 10, 6000)


def test_server_request_limit_names_the_flag_to_use(sandbox_factory, tmp_path):
    sandbox = sandbox_factory("--max-requests-per-file", "10")
    path = write_requests(tmp_path / "in.jsonl", 25)
    first = run("submit.py", path, env=sandbox.env())
    assert first.returncode == 2 and is_error(first.stdout) and "--max-requests 10" in first.stderr
    doc = ok_json(run("submit.py", path, "--max-requests", 10, env=sandbox.env()))
    assert [b["requests"] for b in doc["batches"]] == [10, 10, 5]
    assert_chunks_hold_input_in_order(sandbox, doc, path, 10, 200_000_000)


def test_a_server_line_error_is_translated_to_the_physical_line(sandbox, tmp_path):
    rows = [request_line(i) for i in range(1, 9)]
    rows[6]["body"]["model"] = "no-such/model"  # the 7th request: line 3 of chunk 2 for the server
    path = tmp_path / "in.jsonl"
    path.write_text(
        "\n".join(json.dumps(r) for r in rows[:5]) + "\n\n\n" + "\n".join(json.dumps(r) for r in rows[5:]) + "\n"
    )
    proc = run("submit.py", path, "--max-requests", 5, env=sandbox.env())
    assert proc.returncode in (2, 3) and is_error(proc.stdout)
    assert "no-such/model" in proc.stderr and "line 9 of in.jsonl" in proc.stderr
    assert posts(sandbox, "batches") == 0


# -- cost -----------------------------------------------------------------------------------------


def test_max_cost_holds_the_batches_and_a_rerun_without_it_creates_them(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 20)
    held = run("submit.py", path, "--max-requests", 10, "--max-cost", "0.0000001", env=sandbox.env())
    assert held.returncode == 2 and is_error(held.stdout)
    assert "--max-cost" in held.stderr and "no batch was created" in held.stderr
    assert posts(sandbox, "files") == 2 and posts(sandbox, "batches") == 0
    state = json.loads((tmp_path / "in.dwjob" / "job.json").read_text())
    chunks = state["rounds"][0]["chunks"]
    assert all(c["held"] and c["file_id"] and c["cost_estimate"] for c in chunks)

    still = run("submit.py", path, "--max-cost", "0.0000002", env=sandbox.env())
    assert still.returncode == 2 and posts(sandbox, "batches") == 0
    doc = ok_json(run("submit.py", path, "--max-cost", "1000", env=sandbox.env()))
    assert all(b["batch_id"] for b in doc["batches"]) and doc["this_run"]["uploaded"] == 0
    assert posts(sandbox, "files") == 2 and posts(sandbox, "batches") == 2
    assert float(doc["estimated_cost"]["usd"]) > 0 and doc["estimated_cost"]["chunks_estimated"] == 2
    assert not any(c["held"] for c in load_job(doc)["rounds"][0]["chunks"])


def test_rerun_without_max_cost_goes_on(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 5)
    assert run("submit.py", path, "--max-cost", "0", env=sandbox.env()).returncode == 2
    doc = ok_json(run("submit.py", path, env=sandbox.env()))
    assert doc["batches"][0]["batch_id"] and posts(sandbox, "files") == 1 and posts(sandbox, "batches") == 1


# -- faults -----------------------------------------------------------------------------------------


def test_ambiguous_create_500_after_the_server_acted_still_makes_one_batch(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 5)
    sandbox.set_faults(
        {"http": [{"method": "POST", "path": "/v1/batches", "status": 500, "times": 1, "after_body": True}]}
    )
    proc = run("submit.py", path, env=sandbox.env())
    doc = ok_json(proc)
    assert "may or may not have worked" in proc.stderr
    on_server = server_batches(sandbox, doc["job_id"])
    assert len(on_server) == 1 and on_server[0]["id"] == doc["batches"][0]["batch_id"]
    assert posts(sandbox, "batches") == 1  # found by its intent, not created again


def test_ambiguous_create_500_before_the_server_acted_creates_exactly_once_more(sandbox, tmp_path, monkeypatch, capsys):
    path = write_requests(tmp_path / "in.jsonl", 5)
    sandbox.set_faults({"http": [{"method": "POST", "path": "/v1/batches", "status": 500, "times": 1}]})
    code, out, err, sleeps = run_main(monkeypatch, capsys, sandbox, path)
    assert code == 0, err
    doc = json.loads(out)
    assert "no batch was created; creating it again" in err
    assert len(sleeps) == 2  # it looked three times, in case the batch was still being committed
    assert len(server_batches(sandbox, doc["job_id"])) == 1 and posts(sandbox, "batches") == 2


def run_main(monkeypatch, capsys, sandbox, *args):
    """submit.main() in this process, with the client's backoff sleeps recorded instead of slept."""
    import submit
    from _dwbatches.core import clock

    monkeypatch.setenv("DOUBLEWORD_API_KEY", sandbox.api_key)
    monkeypatch.setenv("DOUBLEWORD_BASE_URL", sandbox.base_url)
    sleeps = []
    monkeypatch.setattr(clock, "sleep", sleeps.append)
    code = submit.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err, sleeps


def test_an_unresolvable_ambiguous_create_exits_1_and_the_rerun_finds_the_batch(sandbox, tmp_path, monkeypatch, capsys):
    path = write_requests(tmp_path / "in.jsonl", 5)
    sandbox.set_faults(
        {
            "http": [
                {"method": "POST", "path": "/v1/batches", "status": 502, "times": 1, "after_body": True},
                {"method": "GET", "path": "/v1/batches", "status": 503, "times": 6},
            ]
        }
    )
    # (--resubmit: the look for earlier submissions of the file would meet the GET faults first)
    code, out, err, sleeps = run_main(monkeypatch, capsys, sandbox, path, "--resubmit")
    assert code == 1 and is_error(out)
    assert "could not check whether the batch was created" in err and "Run the same command again" in err
    assert len(sleeps) == 4  # the lookup's GET was retried, the POST was not
    assert posts(sandbox, "batches") == 1
    sandbox.clear_faults()
    code, out, err, _ = run_main(monkeypatch, capsys, sandbox, path)
    assert code == 0 and "found the batch created by an earlier run" in err
    doc = json.loads(out)
    assert len(server_batches(sandbox, doc["job_id"])) == 1 and posts(sandbox, "batches") == 1


def test_two_ambiguous_create_failures_stop_and_the_rerun_creates_exactly_one(sandbox, tmp_path, monkeypatch, capsys):
    path = write_requests(tmp_path / "in.jsonl", 5)
    sandbox.set_faults({"http": [{"method": "POST", "path": "/v1/batches", "status": 500, "times": 2}]})
    code, out, err, _ = run_main(monkeypatch, capsys, sandbox, path)
    assert code == 1 and is_error(out)
    assert "could not tell whether the batch for chunk 1/1 was created" in err
    assert posts(sandbox, "batches") == 2 and sandbox.stats()["batches"] == 0
    code, out, err, _ = run_main(monkeypatch, capsys, sandbox, path)
    assert code == 0
    doc = json.loads(out)
    assert len(server_batches(sandbox, doc["job_id"])) == 1 and posts(sandbox, "batches") == 3


def test_upload_connection_dropped_after_the_server_stored_the_file_is_not_repeated(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 5)
    sandbox.set_faults(
        {"http": [{"method": "POST", "path": "/v1/files", "drop": True, "times": 1, "after_body": True}]}
    )
    proc = run("submit.py", path, env=sandbox.env())
    doc = ok_json(proc)
    assert "may or may not have arrived" in proc.stderr
    assert posts(sandbox, "files") == 1 and sandbox.stats()["files"] == 1
    assert doc["batches"][0]["input_file_id"] == sandbox.get_json("files", params={"purpose": "batch"})["data"][0]["id"]


def test_upload_429_with_retry_after_is_retried_and_succeeds(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 5)
    sandbox.set_faults({"http": [{"method": "POST", "path": "/v1/files", "status": 429, "times": 1, "retry_after": 1}]})
    proc = run("submit.py", path, env=sandbox.env())
    doc = ok_json(proc)
    assert "retrying POST /files after HTTP 429 in 1.0s" in proc.stderr
    assert posts(sandbox, "files") == 2 and sandbox.stats()["files"] == 1
    assert doc["batches"][0]["batch_id"]


@pytest.mark.slow
def test_slow_upload_shows_throttled_progress(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 30_000, pad=600)  # about 22 MB: more than socket buffers hold
    sandbox.set_faults({"slow_upload_read": {"after_bytes": 1_000_000, "pause": 2.5}})
    proc = run("submit.py", path, env=sandbox.env())
    ok_json(proc)
    progress = [line for line in proc.stderr.splitlines() if "uploading:" in line and "%" in line]
    assert progress and progress[-1].split("uploading:")[1].strip().startswith("100.0%")
    assert len(progress) < 20


# -- dry run, metadata, source ------------------------------------------------------------------


def test_dry_run_sends_nothing_needs_no_key_and_estimates_locally(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 30)
    env = {k: v for k, v in os.environ.items() if k not in ("DOUBLEWORD_API_KEY", "DOUBLEWORD_BASE_URL")}
    env["DOUBLEWORD_BASE_URL"] = sandbox.base_url
    before = sandbox.stats()
    doc = ok_json(run("submit.py", path, "--dry-run", "--max-requests", 8, "-w", "1h", env=env))
    assert sandbox.stats() == before
    assert not (tmp_path / "in.dwjob").exists()
    assert doc["dry_run"] and doc["chunks"] == 4 and [c["requests"] for c in doc["plan"]] == [8, 8, 8, 6]
    est = doc["estimated_cost"]
    assert est["basis"] == "price_table" and est["window"] == "1h"
    assert est["usd"] == est["low_usd"] and est["high_usd"] is not None and est["server_usd"] is None
    assert float(est["low_usd"]) <= float(est["high_usd"])
    assert (est["chunks_estimated"], est["chunks"]) == (0, 4)
    model = est["models"][0]
    assert model["model"] == CHAT_MODEL and model["output_tokens_high"] == 30 * 8  # every max_tokens used
    assert 0 < model["output_tokens_low"] <= model["output_tokens_high"]
    assert model["price_per_1m_tokens"] == {"input": 0.04, "output": 0.35}  # the 1h price
    assert doc["next"].endswith("in.jsonl -w 1h --max-requests 8")


def test_metadata_reaches_the_batch_and_reserved_keys_are_refused(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 2)
    for bad in ("dwb_intent=x", "created_by=me", "novalue"):
        proc = run("submit.py", path, "--metadata", bad, env=sandbox.env())
        assert proc.returncode == 2 and is_error(proc.stdout) and "metadata" in proc.stderr
    assert sandbox.stats()["requests"] == {}
    doc = ok_json(run("submit.py", path, "--metadata", "owner=ana", "--metadata", "run=7", env=sandbox.env()))
    meta = sandbox.batch(doc["batches"][0]["batch_id"])["metadata"]
    assert meta["owner"] == "ana" and meta["run"] == "7" and meta["dwb_chunk"] == "r1c1"


def test_csv_source_sidecar_is_copied_into_the_job(sandbox, tmp_path):
    (tmp_path / "reviews.csv").write_text("id,text\nr1,great\nr2,awful\n")
    built = ok_json(
        run(
            "create_batch_file.py",
            "reviews.jsonl",
            "--csv",
            "reviews.csv",
            "--id-column",
            "id",
            "--template",
            "Sentiment of: {text}",
            "-q",
        )
    )
    assert built["source"]["kind"] == "csv"
    doc = ok_json(run("submit.py", tmp_path / "reviews.jsonl", env=sandbox.env()))
    assert doc["source"]["path"] == str(tmp_path / "reviews.csv") and doc["source"]["id_column"] == "id"
    assert load_job(doc)["source"]["kind"] == "csv"


def test_a_stale_sidecar_is_ignored(sandbox, tmp_path):
    path = write_requests(tmp_path / "data.jsonl", 2)
    (tmp_path / "data.source.json").write_text(
        json.dumps({"kind": "csv", "path": "/x.csv", "id_column": None, "output_sha256": "0" * 64})
    )
    proc = run("submit.py", path, env=sandbox.env())
    assert ok_json(proc)["source"] is None and "earlier version" in proc.stderr


# -- the Python API used by retry_failed.py / run_batch.py -----------------------------------------


def test_retry_round_api_submits_once_and_is_idempotent(sandbox, tmp_path, monkeypatch):
    from _dwbatches.core import config
    from _dwbatches.core.http import Client
    from _dwbatches.jobs.job import Job
    from _dwbatches.submit.planning import add_retry_round, next_round_path
    from _dwbatches.submit.submitter import submit_pending
    from _dwbatches.workflow.submitting import job_report

    path = write_requests(tmp_path / "in.jsonl", 6)
    doc = ok_json(run("submit.py", path, env=sandbox.env()))
    monkeypatch.setenv("DOUBLEWORD_API_KEY", sandbox.api_key)
    client = Client(config.load_config(sandbox.base_url))
    retry = tmp_path / "failed.jsonl"
    write_requests(retry, 2, prefix="q")
    with Job(doc["job"]) as job:
        job.load()
        assert next_round_path(job) == str(tmp_path / "in.dwjob" / "rounds" / "round-2.jsonl")
        rnd = add_retry_round(job, str(retry), completion_window="1h")
        assert rnd.round == 2 and rnd.kind == "retry" and os.path.exists(rnd.input_path)
        again = add_retry_round(job, str(retry))
        assert again is rnd and len(job.record.rounds) == 2
        chunks = submit_pending(job, client)
        assert [c.batch_id is not None for c in chunks] == [True, True]
        assert submit_pending(job, client) == chunks
        report = job_report(job)
    assert [(b["round"], b["chunk"]) for b in report["batches"]] == [(1, 1), (2, 1)]
    b2 = sandbox.batch(report["batches"][1]["batch_id"])
    assert b2["completion_window"] == "1h" and b2["metadata"]["dwb_chunk"] == "r2c1"
    assert posts(sandbox, "batches") == 2
    # submit.py on the same input also resumes the retry round's chunks, creating nothing
    resumed = ok_json(run("submit.py", path, env=sandbox.env()))
    assert len(resumed["batches"]) == 2 and resumed["this_run"]["created"] == 0


# -- lookups when the server ignores ?search= ---------------------------------------------------


class PagingOnlyServer:
    """A stand-in for a server that ignores ``search``: newest first, 100 per page."""

    def __init__(self, batches, files=()):
        self.batches = batches
        self.files = list(files)
        self.pages = 0

    def _page(self, items, limit, after):
        start = 0
        if after:
            start = next(i for i, x in enumerate(items) if x["id"] == after) + 1
        data = items[start : start + limit]
        self.pages += 1
        return {
            "object": "list",
            "data": data,
            "has_more": start + limit < len(items),
            "last_id": data[-1]["id"] if data else None,
        }

    def list_batches(self, limit=100, after=None, status=None, search=None, include=None):
        return self._page(self.batches, limit, after)

    def find_files(self, search, limit=100):
        return self._page(self.files, limit, None)["data"]

    def get_json(self, path, params=None):
        assert path == "files"
        return self._page(self.files, params["limit"], params.get("after"))


def test_intent_lookup_pages_back_when_search_is_ignored(tmp_path):
    from _dwbatches.jobs.job import Job
    from _dwbatches.jobs.jobrecord import Chunk
    from _dwbatches.submit.submitter import Submitter

    now = 1_800_000_000
    batches = [{"id": f"b{i}", "created_at": now - i, "metadata": {"dwb_intent": f"i{i}"}} for i in range(350)]
    server = PagingOnlyServer(batches)
    job = Job(str(tmp_path / "j"))
    job.lock()  # as the workflow layer does before a submitter works on the job
    sub = Submitter(job, server)
    assert sub.find_batch(Chunk(intent_id="i250", create_started_at=now - 300))["id"] == "b250"
    assert server.pages == 1 + 3  # the (ignored) search, then pages until the batch shows up
    server.pages = 0
    assert sub.find_batch(Chunk(intent_id="missing", create_started_at=now - 10 + 600)) is None
    assert server.pages == 2  # stops at batches older than the attempt (minus clock skew)


def test_upload_lookup_pages_back_and_checks_the_size(tmp_path):
    from _dwbatches.jobs.job import Job
    from _dwbatches.jobs.jobrecord import Chunk
    from _dwbatches.submit.submitter import Submitter

    now = 1_800_000_000
    files = [
        {"id": f"f{i}", "filename": f"dwb-x-r1-c{i}.jsonl", "purpose": "batch", "bytes": 100 + i, "created_at": now - i}
        for i in range(250)
    ]
    server = PagingOnlyServer([], files)
    job = Job(str(tmp_path / "j"))
    job.lock()  # as the workflow layer does before a submitter works on the job
    sub = Submitter(job, server)
    chunk = Chunk(upload_name="dwb-x-r1-c180.jsonl", bytes=280, upload_started_at=now - 200)
    assert sub.find_upload(chunk)["id"] == "f180"
    chunk.bytes = 281
    assert sub.find_upload(chunk) is None  # same name, other size: not ours


def test_a_held_chunk_whose_file_was_deleted_is_uploaded_again_before_creating(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 4)
    assert run("submit.py", path, "--max-cost", "0", env=sandbox.env()).returncode == 2
    state = json.loads((tmp_path / "in.dwjob" / "job.json").read_text())
    old_file = state["rounds"][0]["chunks"][0]["file_id"]
    assert sandbox.delete(f"files/{old_file}").status == 200
    proc = run("submit.py", path, env=sandbox.env())
    doc = ok_json(proc)
    assert "is gone (expired or deleted); uploading again" in proc.stderr
    assert doc["batches"][0]["input_file_id"] != old_file
    assert len(server_batches(sandbox, doc["job_id"])) == 1 and posts(sandbox, "files") == 2
    assert sandbox.wait_batch(doc["batches"][0]["batch_id"])["status"] == "completed"


# -- a job with nothing created yet can change ---------------------------------------------------


def test_a_line_the_server_refuses_can_be_fixed_and_the_same_command_goes_on(sandbox, tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [request_line(i) for i in range(1, 4)]
    lines[1]["body"]["model"] = "Qwen/Qwen3-Embedding-8B"  # an embeddings model on the chat url
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    proc = run("submit.py", path, env=sandbox.env())
    assert proc.returncode == 2 and is_error(proc.stdout) and "line 2" in proc.stderr
    assert sandbox.stats()["batches"] == 0
    lines[1]["body"]["model"] = CHAT_MODEL
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    proc = run("submit.py", path, env=sandbox.env())
    doc = ok_json(proc)
    assert "planning it again" in proc.stderr
    assert len(server_batches(sandbox, doc["job_id"])) == 1 and sandbox.stats()["batches"] == 1


def test_capacity_429_fails_at_once_and_the_24h_window_reuses_the_uploaded_file(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 4)
    sandbox.set_faults(
        {
            "http": [
                {
                    "method": "POST",
                    "path": "/v1/batches",
                    "status": 429,
                    "retry_after": 60,
                    "times": 1,
                    "message": "Insufficient capacity for 1h completion window",
                }
            ]
        }
    )
    proc = run("submit.py", path, "-w", "1h", env=sandbox.env(), timeout=60)
    assert proc.returncode == 1 and is_error(proc.stdout)
    assert "-w 24h" in proc.stderr and posts(sandbox, "batches") == 1
    doc = ok_json(run("submit.py", path, "-w", "24h", env=sandbox.env()))
    assert doc["completion_window"] == "24h"
    batches = server_batches(sandbox, doc["job_id"])
    assert len(batches) == 1 and batches[0]["completion_window"] == "24h"
    assert posts(sandbox, "files") == 1  # the uploaded file was kept


def test_a_failing_cost_estimate_does_not_stop_the_batch_without_max_cost(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 3)
    sandbox.set_faults({"http": [{"method": "GET", "path": "/v1/files/", "status": 403}]})
    proc = run("submit.py", path, env=sandbox.env())
    doc = ok_json(proc)
    assert "no cost estimate" in proc.stderr and len(server_batches(sandbox, doc["job_id"])) == 1


def test_a_resumed_submit_with_a_refused_key_exits_3(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 3)
    ok_json(run("submit.py", path, env=sandbox.env()))
    env = dict(sandbox.env(), DOUBLEWORD_API_KEY="sk-wrong-" + "w" * 38)
    proc = run("submit.py", path, env=env)
    assert proc.returncode == 3 and is_error(proc.stdout)


@pytest.mark.parametrize("extra", [["--max-tokens", "500"], [], ["--endpoint", "/v1/responses", "--max-tokens", "300"]])
def test_the_local_range_holds_the_servers_estimate(sandbox, tmp_path, extra):
    """The local estimate counts input tokens as the server does (each body's bytes / 4, the
    envelope left out), so low <= the server's estimate <= high (when max_tokens bounds it)."""
    prompts = ["Summarise: " + "the quick brown fox jumps over the lazy dog, " * (i % 5 + 1) for i in range(8)]
    prompts += ["Übersetze ins Englische: Grüße aus Köln", "日本語で答えてください: 今日は何曜日ですか"]
    (tmp_path / "p.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    code, doc, err = run_script("create_batch_file.py", "in.jsonl", "--prompts", "p.txt", *extra)
    assert code == 0, err
    code, dry, err = run_script("submit.py", "in.jsonl", "--dry-run")
    assert code == 0, err
    code, doc, err = run_script("submit.py", "in.jsonl", env=sandbox.env())
    assert code == 0, err
    est = doc["estimated_cost"]
    assert est["chunks_estimated"] == 1
    assert dry["estimated_cost"]["input_tokens"] == est["input_tokens"]  # the same count as the server's
    low, high, server = est["low_usd"], est["high_usd"], est["usd"]
    assert server == est["server_usd"] and est["basis"] == "server"
    assert low == dry["estimated_cost"]["low_usd"] and high == dry["estimated_cost"]["high_usd"]
    assert set(dry["estimated_cost"]) == set(est)  # one shape, before and after the upload
    assert float(low) <= float(server), (low, server)
    if extra:
        assert float(server) <= float(high), (server, high)
    else:
        assert high is None


def test_a_job_of_many_chunks_narrates_the_first_and_last_and_the_rest_in_one_line(sandbox, tmp_path):
    path = write_requests(tmp_path / "in.jsonl", 12)
    proc = run("submit.py", path, "--max-requests", 1, env=sandbox.env())
    doc = ok_json(proc)
    assert doc["chunks"] == 12
    lines = proc.stderr.splitlines()
    for n in (1, 2, 3, 12):
        assert any(ln.startswith(f"chunk {n}/12: uploaded as file ") for ln in lines), proc.stderr
        assert any(ln.startswith(f"chunk {n}/12: created batch ") for ln in lines), proc.stderr
    assert not any(ln.startswith(("chunk 4/12", "chunk 11/12")) for ln in lines), proc.stderr
    assert lines.count("chunks 4-11: uploaded as planned (not listed one by one)") == 1
    assert lines.count("chunks 4-11: created as planned (not listed one by one)") == 1
