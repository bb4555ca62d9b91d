"""Sandbox: every fault-injection knob and the /_sandbox control endpoints."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time

import pytest
import requests
from sandbox_helper import Sandbox, SandboxError, chat_requests, jsonl_bytes, new_api_key


def wait_for(pred, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def auth(sb: Sandbox) -> dict:
    return {"Authorization": f"Bearer {sb.api_key}"}


def raw_get(sb: Sandbox, path: str) -> tuple:
    """GET with http.client; returns (response, body, complete?)."""
    conn = http.client.HTTPConnection("127.0.0.1", sb.port, timeout=10)
    try:
        conn.request("GET", "/v1/" + path, headers=auth(sb))
        resp = conn.getresponse()
        try:
            return resp, resp.read(), True
        except http.client.IncompleteRead as err:
            return resp, err.partial, False
    finally:
        conn.close()


# --- fault document -------------------------------------------------------------------------


def test_fault_document_roundtrip_and_validation(sandbox):
    doc = {"fail_rate": 0.25, "http": [{"path": "/v1/files", "status": 500, "times": 2}]}
    stored = sandbox.set_faults(doc)
    assert stored["fail_rate"] == 0.25
    assert stored["_remaining"]["http_times"] == [2]
    assert sandbox.faults()["http"] == doc["http"]
    res = sandbox.request("PUT", "/_sandbox/faults", json_body={"fail_rat": 1})
    assert res.status == 400 and "Unknown fault field 'fail_rat'" in res.text
    res = sandbox.request("PUT", "/_sandbox/faults", json_body={"fail_rate": 2})
    assert res.status == 400
    res = sandbox.request("PUT", "/_sandbox/faults", json_body={"http": [{"path": "/v1/files"}]})
    assert res.status == 400
    assert sandbox.clear_faults() == {"_remaining": {"http_times": [], "drop_content_times": 0}}


def test_faults_from_cli_and_environment(sandbox_factory, tmp_path):
    sb = sandbox_factory("--faults", json.dumps({"fail_custom_ids": ["req-0"]}))
    assert sb.faults()["fail_custom_ids"] == ["req-0"]
    batch = sb.submit(chat_requests(2))
    assert sb.wait_batch(batch["id"])["request_counts"]["failed"] == 1
    env = dict(os.environ, DW_SANDBOX_FAULTS=json.dumps({"extra_latency": 0.01}))
    sb2 = Sandbox(tmp_path / "env-data", api_key=new_api_key(), env=env).start()
    try:
        assert sb2.faults()["extra_latency"] == 0.01
    finally:
        sb2.stop()


# --- http rules -----------------------------------------------------------------------------


def test_429_json_with_retry_after(sandbox):
    sandbox.set_faults({"http": [{"method": "POST", "path": "/v1/files", "status": 429, "times": 1, "retry_after": 2}]})
    res = sandbox.upload(jsonl_bytes(chat_requests(1)))
    assert res.status == 429
    assert res.header("Content-Type") == "application/json"
    assert res.header("Retry-After") == "2"
    body = res.json()
    assert body["error"] == "too_many_requests"
    assert body["retry_after_seconds"] == 2
    assert isinstance(body["message"], str)
    assert sandbox.upload(jsonl_bytes(chat_requests(1))).status == 201  # the rule is spent
    assert sandbox.stats()["files"] == 1


def test_429_defaults_and_body_only(sandbox):
    sandbox.set_faults(
        {
            "http": [
                {"path": "/v1/batches", "status": 429, "times": 1},
                {"path": "/v1/batches", "status": 429, "times": 1, "retry_after": 1, "retry_after_header": False},
            ]
        }
    )
    first = sandbox.get("batches")
    assert first.header("Retry-After") == "60"  # header and body disagree, like the real server
    assert first.json()["retry_after_seconds"] == 30
    second = sandbox.get("batches")
    assert second.status == 429
    assert second.header("Retry-After") is None
    assert second.json()["retry_after_seconds"] == 1
    assert sandbox.get("batches").status == 200


def test_503_and_500(sandbox):
    sandbox.set_faults(
        {
            "http": [
                {"method": "GET", "path": "/v1/files", "status": 503, "times": 1, "retry_after": 1},
                {"method": "GET", "path": "/v1/files", "status": 500, "times": 1},
                {"method": "GET", "path": "/v1/files", "status": 502, "times": 1, "message": "upstream went away"},
            ]
        }
    )
    res = sandbox.get("files")
    assert res.status == 503
    assert res.json()["error"] == "service_unavailable"
    assert res.header("Retry-After") == "1"
    res = sandbox.get("files")
    assert res.status == 500
    assert res.header("Content-Type").startswith("text/plain")
    res = sandbox.get("files")
    assert (res.status, res.text) == (502, "upstream went away")
    assert sandbox.get("files").status == 200


def test_rule_matching_method_prefix_and_wildcard(sandbox):
    sandbox.set_faults({"http": [{"method": "DELETE", "path": "/v1/batches", "status": 500}]})
    assert sandbox.get("batches").status == 200  # method does not match
    sandbox.set_faults({"http": [{"path": "/v1/files/", "status": 500}]})
    assert sandbox.get("files").status == 200  # "/v1/files" is not under the prefix "/v1/files/"
    assert sandbox.get("files/00000000-0000-0000-0000-000000000000").status == 500
    sandbox.set_faults({"http": [{"path": "*", "status": 500, "times": 3}]})
    assert [sandbox.get(p).status for p in ("models", "files", "batches", "files")] == [500, 500, 500, 200]
    sandbox.set_faults({"http": [{"path": "*", "status": 500}]})  # without "times": never wears out
    assert sandbox.stats()["files"] == 0  # /_sandbox routes are never faulted
    assert [sandbox.get("batches").status for _ in range(3)] == [500, 500, 500]
    sandbox.set_faults({"http": [{"path": "/ai/v1/batches", "status": 500, "times": 1}]})
    assert sandbox.get("/ai/v1/batches").status == 500


def test_after_body_runs_the_route_then_fails(sandbox):
    file_obj = sandbox.upload_requests(chat_requests(1))
    sandbox.set_faults(
        {"http": [{"method": "POST", "path": "/v1/batches", "status": 500, "times": 1, "after_body": True}]}
    )
    res = sandbox.create_batch(file_obj["id"])
    assert res.status == 500
    batches = sandbox.get_json("batches")["data"]
    assert len(batches) == 1  # the batch was created although the reply was an error
    sandbox.set_faults(
        {"http": [{"method": "POST", "path": "/v1/files", "status": 429, "after_body": True, "times": 1}]}
    )
    assert sandbox.upload(jsonl_bytes(chat_requests(1))).status == 429
    assert sandbox.stats()["files"] == 2


def test_drop_before_and_after_body(sandbox):
    file_obj = sandbox.upload_requests(chat_requests(1))
    headers = {**auth(sandbox), "Content-Type": "application/json"}
    body = {"input_file_id": file_obj["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    sandbox.set_faults({"http": [{"method": "POST", "path": "/v1/batches", "drop": True, "times": 1}]})
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{sandbox.base_url}/batches", json=body, headers=headers, timeout=10)
    assert sandbox.get_json("batches")["data"] == []
    sandbox.set_faults(
        {"http": [{"method": "POST", "path": "/v1/batches", "drop": True, "after_body": True, "times": 1}]}
    )
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{sandbox.base_url}/batches", json=body, headers=headers, timeout=10)
    assert len(sandbox.get_json("batches")["data"]) == 1  # created, but the reply was lost
    assert requests.post(f"{sandbox.base_url}/batches", json=body, headers=headers, timeout=10).status_code == 201


def test_fault_before_body_on_upload_still_answers(sandbox):
    sandbox.set_faults({"http": [{"method": "POST", "path": "/v1/files", "status": 503, "times": 1}]})
    content = jsonl_bytes(chat_requests(20000))  # ~2 MB that the server never reads
    res = sandbox.upload(content)
    assert res.status == 503
    assert sandbox.stats()["uploads_received"] == 0
    assert sandbox.upload(jsonl_bytes(chat_requests(2))).status == 201


# --- content faults -------------------------------------------------------------------------


@pytest.fixture
def done_batch(sandbox):
    batch = sandbox.submit(chat_requests(10))
    sandbox.wait_batch(batch["id"])
    return batch


def test_drop_content_after_lines(sandbox, done_batch):
    out_id = done_batch["output_file_id"]
    sandbox.set_faults({"drop_content_after_lines": 3, "drop_content_times": 2})
    # a limited (buffered) page is not affected and does not use up a drop
    assert len(sandbox.content(out_id, limit=5).lines()) == 5
    for _ in range(2):
        resp, partial, complete = raw_get(sandbox, f"files/{out_id}/content")
        assert resp.status == 200
        assert not complete  # connection closed without the terminating chunk
        text = partial.decode()
        full_lines, _, rest = text.rpartition("\n")
        assert len(full_lines.split("\n")) == 3
        assert rest and not rest.endswith("}")  # half of the 4th line
    resp, body, complete = raw_get(sandbox, f"files/{out_id}/content")
    assert complete and len(body.decode().splitlines()) == 10


def test_duplicate_output_line(sandbox, done_batch):
    sandbox.set_faults({"duplicate_output_line": True})
    lines = sandbox.content(done_batch["output_file_id"]).lines()
    assert len(lines) == 11
    assert lines[0] == lines[1]
    page = sandbox.content(done_batch["output_file_id"], limit=3, skip=2)
    assert len(page.lines()) == 4 and page.lines()[0] == page.lines()[1]
    assert page.header("X-Last-Line") == "5"  # the header still counts real rows
    assert len(sandbox.content(done_batch["input_file_id"]).lines()) == 10  # output files only


@pytest.mark.slow
def test_late_line_after_cancel(sandbox_factory):
    sb = sandbox_factory("--latency", "0.3", "--concurrency", "2")
    sb.set_faults({"late_line_after_cancel": 2})  # two seconds after the cancel: looked at before then
    batch = sb.submit(chat_requests(20))
    sb.wait_batch(batch["id"], statuses={"in_progress"})
    time.sleep(0.1)
    cancelled = sb.post(f"batches/{batch['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    before = cancelled["request_counts"]["completed"]
    out = sb.content(batch["output_file_id"])
    assert out.header("X-Incomplete") == "false"
    assert len(out.lines()) == before
    wait_for(lambda: sb.batch(batch["id"])["request_counts"]["completed"] != before)
    after = sb.batch(batch["id"])
    assert after["status"] == "cancelled"
    assert after["request_counts"]["completed"] == before + 1
    lines = sb.content(batch["output_file_id"]).lines()
    assert len(lines) == before + 1  # the late completion is appended


def test_pause_requests_keeps_every_batch_unfinished_until_it_is_lifted(sandbox):
    sandbox.set_faults({"pause_requests": True})
    batch = sandbox.submit(chat_requests(4))
    sandbox.wait_batch(batch["id"], statuses={"in_progress", "completed"})
    deadline = time.monotonic() + 0.5  # unpaused, four instant requests end in milliseconds
    while time.monotonic() < deadline:
        running = sandbox.batch(batch["id"])
        assert running["status"] == "in_progress" and running["request_counts"]["completed"] == 0, running
        time.sleep(0.05)
    with pytest.raises(SandboxError, match="pause_requests"):
        sandbox.set_faults({"pause_requests": "yes"})
    sandbox.set_faults({"pause_requests": False})
    done = sandbox.wait_batch(batch["id"])
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 4


# --- request failures -----------------------------------------------------------------------


def test_fail_rate_is_a_fresh_draw_per_batch(sandbox):
    sandbox.set_faults({"fail_rate": 0.5})
    failed_sets = []
    for _ in range(2):
        batch = sandbox.submit(chat_requests(40))
        done = sandbox.wait_batch(batch["id"])
        assert 0 < done["request_counts"]["failed"] < 40
        errors = sandbox.content(batch["error_file_id"]).lines()
        reason = json.loads(errors[0]["error"]["message"])
        assert reason["type"] == "RetriableHttpStatus"
        assert reason["details"]["status"] == 500
        failed_sets.append({e["custom_id"] for e in errors})
    assert failed_sets[0] != failed_sets[1]


def test_fail_status_400_is_non_retriable(sandbox):
    sandbox.set_faults({"fail_custom_ids": ["req-1"], "fail_status": 400})
    batch = sandbox.submit(chat_requests(2))
    sandbox.wait_batch(batch["id"])
    (error,) = sandbox.content(batch["error_file_id"]).lines()
    assert error["custom_id"] == "req-1"
    assert json.loads(error["error"]["message"])["type"] == "NonRetriableHttpStatus"


# --- latency faults -------------------------------------------------------------------------


def test_extra_latency(sandbox):
    # (a delay of 5 s: a reply that comes sooner was not delayed, however busy the machine)
    sandbox.set_faults({"extra_latency": 5, "extra_latency_paths": ["/v1/batches"]})
    with pytest.raises(requests.ReadTimeout):
        requests.get(f"{sandbox.base_url}/batches", headers=auth(sandbox), timeout=(2, 0.2))
    started = time.monotonic()
    assert sandbox.get("files").status == 200
    assert time.monotonic() - started < 5  # other paths are not delayed
    sandbox.set_faults({"extra_latency": 5})
    started = time.monotonic()
    sandbox.stats()
    assert time.monotonic() - started < 5  # /_sandbox is never delayed
    sandbox.set_faults({"extra_latency": 0.3})
    started = time.monotonic()
    sandbox.get("models")
    assert time.monotonic() - started >= 0.3


@pytest.mark.slow
def test_hold_create_stores_the_batch_late_or_answers_late(sandbox):
    file_id = sandbox.upload_requests(chat_requests(2))["id"]
    listed = lambda: [b["id"] for b in sandbox.get_json("batches")["data"]]  # noqa: E731
    sandbox.set_faults({"hold_create": {"seconds": 2, "times": 1}})  # "visible": "after"
    with pytest.raises(requests.ReadTimeout):  # the client gives up; the server goes on
        requests.post(
            f"{sandbox.base_url}/batches",
            json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
            headers=auth(sandbox),
            timeout=(2, 0.2),
        )
    assert listed() == []  # still being worked on: nothing to be found yet
    wait_for(listed)  # stored when the hold ends, though the client is gone
    (late,) = listed()
    assert sandbox.faults()["_remaining"]["hold_create_times"] == 0
    started = time.monotonic()
    assert sandbox.create_batch(file_id).status == 201  # worn out: the next create is not held
    assert time.monotonic() - started < 2

    sandbox.set_faults({"hold_create": {"seconds": 2, "visible": "before"}})
    seen = []
    thread = threading.Thread(target=lambda: seen.append(sandbox.create_batch(file_id).json()["id"]))
    thread.start()
    wait_for(lambda: len(listed()) == 3)
    assert not seen  # stored and listed while its reply still waits
    now = listed()
    thread.join()
    assert seen and seen[0] in now and late in now
    with pytest.raises(SandboxError, match="hold_create"):
        sandbox.set_faults({"hold_create": {"seconds": 1, "visible": "sometimes"}})


def test_slow_upload_read(sandbox):
    sandbox.set_faults({"slow_upload_read": {"after_bytes": 100, "pause": 0.5}})
    started = time.monotonic()
    res = sandbox.upload(jsonl_bytes(chat_requests(5)))
    assert res.status == 201
    assert time.monotonic() - started >= 0.5


# --- stats ------------------------------------------------------------------------------------


def test_stats_counts_by_route_template(sandbox):
    sandbox.reset_stats()
    file_obj = sandbox.upload_requests(chat_requests(1))
    batch = sandbox.create_batch(file_obj["id"]).json()
    sandbox.wait_batch(batch["id"])
    sandbox.content(batch["output_file_id"])
    sandbox.content(batch["output_file_id"], skip=1)
    sandbox.get("/ai/v1/files")
    sandbox.get("files/not-a-uuid")
    stats = sandbox.stats()
    requests_by_route = stats["requests"]
    assert requests_by_route["POST /v1/files"] == 1
    assert requests_by_route["POST /v1/batches"] == 1
    assert requests_by_route["GET /v1/files/{id}/content"] == 2
    assert requests_by_route["GET /v1/files"] == 1
    assert requests_by_route["GET /v1/files/{id}"] == 1
    assert requests_by_route["GET /v1/batches/{id}"] >= 1
    assert not any(key.startswith(("GET /_sandbox", "PUT /_sandbox")) for key in requests_by_route)
    assert (stats["files"], stats["batches"], stats["uploads_received"]) == (1, 1, 1)
    reset = sandbox.reset_stats()
    assert reset["requests"] == {} and reset["uploads_received"] == 0
    assert reset["files"] == 1  # stored objects are not reset
