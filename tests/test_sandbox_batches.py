"""Sandbox: batch creation, lifecycle, listing, cancel, retry, delete, results, analytics, models."""

from __future__ import annotations

import time
import uuid

import pytest
from sandbox_helper import CHAT_MODEL, EMBEDDING_MODEL, INSTRUCT_MODEL, Sandbox, chat_requests, jsonl_bytes, new_api_key


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One sandbox (with an uploaded file) for stateless request-validation tests."""
    sb = Sandbox(tmp_path_factory.mktemp("sandbox-batches") / "data", api_key=new_api_key()).start()
    sb.file_id = sb.upload_requests(chat_requests(2))["id"]
    yield sb
    sb.stop()


def is_plain_text(res) -> bool:
    return (res.header("Content-Type") or "").startswith("text/plain")


def assert_no_nulls(obj):
    if isinstance(obj, dict):
        for key, value in obj.items():
            assert value is not None, f"{key} is null"
            assert_no_nulls(value)


# --- create -------------------------------------------------------------------------------


def test_create_batch_201_and_shape(sandbox_factory):
    sb = sandbox_factory("--validating-delay", "0.5")
    file_obj = sb.upload_requests(chat_requests(3))
    res = sb.create_batch(file_obj["id"], metadata={"project": "demo", "created_by": "me", "request_source": "x"})
    assert res.status == 201
    batch = res.json()
    assert str(uuid.UUID(batch["id"])) == batch["id"]
    assert batch["object"] == "batch"
    assert batch["status"] == "validating"
    assert batch["endpoint"] == "/v1/chat/completions"
    assert batch["input_file_id"] == file_obj["id"]
    assert batch["completion_window"] == "24h"
    assert batch["expires_at"] == batch["created_at"] + 86400
    assert batch["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    for key in ("output_file_id", "error_file_id"):
        assert str(uuid.UUID(batch[key])) == batch[key]
    for key in ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelled_at", "errors"):
        assert key not in batch
    assert_no_nulls(batch)
    meta = batch["metadata"]
    assert meta["project"] == "demo"
    assert meta["request_source"] == "api"  # reserved keys are replaced by the server's values
    assert meta["created_by"] != "me"
    # the virtual output file exists already: empty body, X-Incomplete true
    content = sb.content(batch["output_file_id"])
    assert (content.status, content.body, content.header("X-Incomplete")) == (200, b"", "true")
    done = sb.wait_batch(batch["id"])
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert done["created_at"] <= done["in_progress_at"] <= done["finalizing_at"] <= done["completed_at"]
    assert_no_nulls(done)


def test_one_hour_window(shared):
    batch = shared.create_batch(shared.file_id, completion_window="1h").json()
    assert batch["completion_window"] == "1h"
    assert batch["expires_at"] == batch["created_at"] + 3600


CREATE_ERRORS = [
    ({"completion_window": "48h"}, 400, "Unsupported completion_window. Allowed values: 24h, 1h"),
    ({"completion_window": "Standard (24h)"}, 400, "Unsupported completion_window. Allowed values: 24h, 1h"),
    (
        {"endpoint": "/v1/images"},
        400,
        "Unsupported endpoint '/v1/images'. Supported: /v1/chat/completions, /v1/completions, /v1/embeddings, "
        "/v1/responses, /v1/messages",
    ),
    ({"input_file_id": "file-abc123"}, 400, "Invalid input_file_id format"),
    ({"metadata": {"n": 5}}, 422, "Failed to deserialize the JSON body into the target type: "),
    ({"metadata": ["a"]}, 422, "Failed to deserialize the JSON body into the target type: "),
    ({"endpoint": None}, 422, "Failed to deserialize the JSON body into the target type: "),
]


@pytest.mark.parametrize(("change", "status", "message"), CREATE_ERRORS)
def test_create_batch_errors(shared, change, status, message):
    body = {"input_file_id": shared.file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    body.update(change)
    res = shared.post("batches", {k: v for k, v in body.items() if v is not None})
    assert res.status == status, res.text
    assert res.text.startswith(message)
    assert is_plain_text(res)


def test_create_batch_request_level_errors(shared):
    missing = str(uuid.uuid4())
    res = shared.create_batch(missing)
    assert (res.status, res.text) == (404, f"File with ID {missing} not found")
    res = shared.request("POST", "batches", data=b'{"input_file_id": "x"}', headers={"Content-Type": "text/plain"})
    assert (res.status, res.text) == (415, "Expected request with `Content-Type: application/json`")
    res = shared.request("POST", "batches", data=b"{oops", headers={"Content-Type": "application/json"})
    assert res.status == 400
    assert res.text.startswith("Failed to parse the request body as JSON")


def test_batch_id_format_and_not_found(shared):
    for method, path in (
        ("GET", "batches/batch_abc123"),
        ("POST", "batches/batch_abc123/cancel"),
        ("POST", "batches/batch_abc123/retry"),
        ("DELETE", "batches/batch_abc123"),
        ("GET", "batches/batch_abc123/results"),
    ):
        res = shared.request(method, path)
        assert (res.status, res.text) == (400, "Invalid batch ID format"), path
        assert is_plain_text(res)
    missing = str(uuid.uuid4())
    res = shared.get(f"batches/{missing}")
    assert (res.status, res.text) == (404, f"Batch with ID {missing} not found")


def test_all_failed_batch_is_failed(sandbox):
    sandbox.set_faults({"fail_rate": 1.0})
    batch = sandbox.submit(chat_requests(3))
    done = sandbox.wait_batch(batch["id"])
    assert done["status"] == "failed"
    assert done["request_counts"] == {"total": 3, "completed": 0, "failed": 3}
    deadline = time.time() + 2
    while "failed_at" not in done and time.time() < deadline:
        time.sleep(0.02)
        done = sandbox.batch(batch["id"])
    assert "failed_at" in done and "completed_at" not in done


def test_partial_failure_is_completed(sandbox):
    sandbox.set_faults({"fail_custom_ids": ["req-1"]})
    done = sandbox.wait_batch(sandbox.submit(chat_requests(3))["id"])
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}


def test_each_line_goes_to_its_own_url(sandbox):
    items = [
        {"custom_id": "chat", "method": "POST", "url": "/v1/chat/completions", "body": {"model": INSTRUCT_MODEL, "messages": [{"role": "user", "content": "Hi there"}]}},
        {"custom_id": "emb", "method": "POST", "url": "/v1/embeddings", "body": {"model": EMBEDDING_MODEL, "input": ["a", "b"]}},
        {"custom_id": "resp", "method": "POST", "url": "/v1/responses", "body": {"model": INSTRUCT_MODEL, "input": "Tell me"}},
        {"custom_id": "cmpl", "method": "POST", "url": "/v1/completions", "body": {"model": INSTRUCT_MODEL, "prompt": "Once"}},
        {"custom_id": "msg", "method": "POST", "url": "/v1/messages", "body": {"model": INSTRUCT_MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "Yo"}]}},
    ]  # fmt: skip
    batch = sandbox.submit(items)
    sandbox.wait_batch(batch["id"])
    out = {line["custom_id"]: line["response"]["body"] for line in sandbox.content(batch["output_file_id"]).lines()}
    chat = out["chat"]
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"]["role"] == "assistant"
    assert chat["choices"][0]["message"]["content"].startswith("Echo: Hi there")
    assert chat["choices"][0]["finish_reason"] == "stop"
    usage = chat["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert out["emb"]["object"] == "list" and len(out["emb"]["data"]) == 2
    assert len(out["emb"]["data"][0]["embedding"]) == 8
    assert out["resp"]["object"] == "response"
    assert out["resp"]["output_text"] == out["resp"]["output"][0]["content"][0]["text"]
    assert out["cmpl"]["object"] == "text_completion" and out["cmpl"]["choices"][0]["text"].startswith("Echo: Once")
    assert out["msg"]["type"] == "message" and out["msg"]["content"][0]["text"].startswith("Echo: Yo")


def test_builtin_model_honours_the_token_limit_of_each_endpoint(sandbox):
    """A model stops at max_tokens (max_completion_tokens, max_output_tokens): the echo is cut,
    the finish reason says so, and usage counts what was returned."""
    long = "a long prompt that the echo repeats " * 3
    chat = [{"role": "user", "content": long}]
    items = [
        {"custom_id": "chat", "method": "POST", "url": "/v1/chat/completions", "body": {"model": INSTRUCT_MODEL, "messages": chat, "max_tokens": 3}},
        {"custom_id": "chat-mct", "method": "POST", "url": "/v1/chat/completions", "body": {"model": INSTRUCT_MODEL, "messages": chat, "max_completion_tokens": 2}},
        {"custom_id": "chat-free", "method": "POST", "url": "/v1/chat/completions", "body": {"model": INSTRUCT_MODEL, "messages": chat}},
        {"custom_id": "chat-roomy", "method": "POST", "url": "/v1/chat/completions", "body": {"model": INSTRUCT_MODEL, "messages": chat, "max_tokens": 500}},
        {"custom_id": "resp", "method": "POST", "url": "/v1/responses", "body": {"model": INSTRUCT_MODEL, "input": long, "max_output_tokens": 4}},
        {"custom_id": "cmpl", "method": "POST", "url": "/v1/completions", "body": {"model": INSTRUCT_MODEL, "prompt": long, "max_tokens": 1}},
        {"custom_id": "msg", "method": "POST", "url": "/v1/messages", "body": {"model": INSTRUCT_MODEL, "max_tokens": 2, "messages": chat}},
    ]  # fmt: skip
    batch = sandbox.submit(items)
    sandbox.wait_batch(batch["id"])
    out = {line["custom_id"]: line["response"]["body"] for line in sandbox.content(batch["output_file_id"]).lines()}
    free = out["chat-free"]["choices"][0]
    assert free["finish_reason"] == "stop" and out["chat-free"]["usage"]["completion_tokens"] > 5
    roomy = out["chat-roomy"]["choices"][0]
    assert roomy["finish_reason"] == "stop" and roomy["message"]["content"].startswith(f"Echo: {long[:60]} [")
    for cid, limit in (("chat", 3), ("chat-mct", 2)):
        body = out[cid]
        choice = body["choices"][0]
        assert choice["finish_reason"] == "length"
        assert choice["message"]["content"] == f"Echo: {long}"[: limit * 4]
        usage = body["usage"]
        assert usage["completion_tokens"] == limit
        assert usage["total_tokens"] == usage["prompt_tokens"] + limit
    resp = out["resp"]
    assert resp["status"] == "incomplete" and resp["incomplete_details"] == {"reason": "max_output_tokens"}
    assert resp["usage"]["output_tokens"] == 4 and len(resp["output_text"]) == 16
    assert resp["output_text"] == resp["output"][0]["content"][0]["text"]
    assert resp["usage"]["total_tokens"] == resp["usage"]["input_tokens"] + 4
    cmpl = out["cmpl"]["choices"][0]
    assert (
        cmpl["finish_reason"] == "length" and cmpl["text"] == "Echo" and out["cmpl"]["usage"]["completion_tokens"] == 1
    )
    msg = out["msg"]
    assert msg["stop_reason"] == "max_tokens" and msg["content"][0]["text"] == "Echo: a "
    assert msg["usage"]["output_tokens"] == 2


def test_builtin_model_is_deterministic(sandbox):
    first = sandbox.submit(chat_requests(2))
    second = sandbox.submit(chat_requests(2))
    texts = []
    for batch in (first, second):
        sandbox.wait_batch(batch["id"])
        lines = sorted(sandbox.content(batch["output_file_id"]).lines(), key=lambda x: x["custom_id"])
        texts.append([x["response"]["body"]["choices"][0]["message"]["content"] for x in lines])
    assert texts[0] == texts[1]


# --- listing ------------------------------------------------------------------------------


def test_list_batches_pagination_status_and_search(sandbox):
    file_a = sandbox.upload_requests(chat_requests(1), filename="alpha-input.jsonl")
    file_b = sandbox.upload_requests(chat_requests(1), filename="beta-input.jsonl")
    ids = []
    for i in range(5):
        file_id = file_a["id"] if i % 2 == 0 else file_b["id"]
        ids.append(sandbox.create_batch(file_id, metadata={"job": f"Nightly-{i}"}).json()["id"])
    for batch_id in ids:
        sandbox.wait_batch(batch_id)
    sandbox.post(f"batches/{ids[1]}/cancel")
    page = sandbox.get_json("batches", params={"limit": 2})
    assert [b["id"] for b in page["data"]] == [ids[4], ids[3]]  # newest first
    assert page["has_more"] is True
    assert (page["first_id"], page["last_id"]) == (ids[4], ids[3])
    seen, after = [], None
    while True:
        page = sandbox.get_json("batches", params={"limit": 2, **({"after": after} if after else {})})
        seen += [b["id"] for b in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ids[::-1]
    assert sandbox.get_json("batches", params={"after": "not-a-uuid"})["data"][0]["id"] == ids[4]
    cancelled = sandbox.get_json("batches", params={"status": "cancelled"})["data"]
    assert [b["id"] for b in cancelled] == [ids[1]]
    completed = sandbox.get_json("batches", params={"status": "completed"})["data"]
    assert [b["id"] for b in completed] == [ids[4], ids[3], ids[2], ids[0]]
    assert sandbox.get_json("batches", params={"status": "in_progress"})["data"] == []
    bad = sandbox.get("batches", params={"status": "finalizing"})
    assert bad.status == 400 and is_plain_text(bad)
    assert [b["id"] for b in sandbox.get_json("batches", params={"search": "nightly-3"})["data"]] == [ids[3]]
    assert len(sandbox.get_json("batches", params={"search": "BETA-input"})["data"]) == 2
    assert [b["id"] for b in sandbox.get_json("batches", params={"search": ids[2][:13]})["data"]] == [ids[2]]
    limit_one = sandbox.get_json("batches", params={"limit": 0})
    assert len(limit_one["data"]) == 1  # clamped to at least 1


def test_list_include_analytics(sandbox):
    batch = sandbox.submit(chat_requests(2))
    sandbox.wait_batch(batch["id"])
    data = sandbox.get_json("batches", params={"include": "analytics"})["data"]
    assert data[0]["analytics"]["total_requests"] == 2
    assert "analytics" not in sandbox.get_json("batches")["data"][0]


# --- cancel / retry / delete --------------------------------------------------------------


def test_cancel_running_batch(sandbox_factory):
    sb = sandbox_factory("--latency", "0.1", "--concurrency", "2")
    batch = sb.submit(chat_requests(30))
    sb.wait_batch(batch["id"], statuses={"in_progress"})
    time.sleep(0.15)
    res = sb.post(f"batches/{batch['id']}/cancel")
    assert res.status == 200
    cancelled = res.json()
    assert cancelled["status"] == "cancelled"
    assert "cancelling_at" in cancelled and "cancelled_at" in cancelled
    counts = cancelled["request_counts"]
    assert set(counts) == {"total", "completed", "failed"}  # no cancelled count
    assert counts["completed"] + counts["failed"] < counts["total"] == 30
    time.sleep(0.3)
    later = sb.batch(batch["id"])
    assert later["status"] == "cancelled"
    assert later["request_counts"] == counts  # in-flight requests were cancelled too
    out = sb.content(batch["output_file_id"])
    assert out.header("X-Incomplete") == "false"
    assert len(out.lines()) == counts["completed"]


def test_cancel_completed_batch_flips_status(sandbox):
    batch = sandbox.submit(chat_requests(2))
    sandbox.wait_batch(batch["id"])
    res = sandbox.post(f"batches/{batch['id']}/cancel")
    assert res.status == 200
    flipped = res.json()
    assert flipped["status"] == "cancelled"  # no terminal-state guard, like the real server
    assert flipped["request_counts"]["completed"] == 2
    assert "completed_at" in flipped


def test_retry_after_failures(sandbox):
    sandbox.set_faults({"fail_custom_ids": ["req-1", "req-3"]})
    batch = sandbox.submit(chat_requests(5))
    done = sandbox.wait_batch(batch["id"])
    assert done["request_counts"] == {"total": 5, "completed": 3, "failed": 2}
    assert len(sandbox.content(batch["error_file_id"]).lines()) == 2
    sandbox.clear_faults()
    res = sandbox.post(f"batches/{batch['id']}/retry")
    assert res.status == 200
    assert res.json()["id"] == batch["id"]  # same batch, not a new one
    assert res.json()["status"] == "in_progress"
    again = sandbox.wait_batch(batch["id"])
    assert again["status"] == "completed"
    assert again["request_counts"] == {"total": 5, "completed": 5, "failed": 0}
    assert sandbox.content(batch["error_file_id"]).lines() == []
    out = [line["custom_id"] for line in sandbox.content(batch["output_file_id"]).lines()]
    assert sorted(out) == [f"req-{i}" for i in range(5)]
    assert out[-2:] == ["req-1", "req-3"]  # ordered by completion time, not input order
    nothing = sandbox.post(f"batches/{batch['id']}/retry")
    assert nothing.status == 400 and is_plain_text(nothing)


def test_retry_after_cancel_resumes(sandbox_factory):
    sb = sandbox_factory("--latency", "0.02", "--concurrency", "2")
    batch = sb.submit(chat_requests(40))
    sb.wait_batch(batch["id"], statuses={"in_progress"})
    cancelled = sb.post(f"batches/{batch['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    res = sb.post(f"batches/{batch['id']}/retry")
    assert res.status == 200
    resumed = res.json()
    assert resumed["status"] == "in_progress"
    assert "cancelled_at" not in resumed
    done = sb.wait_batch(batch["id"])
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 40, "completed": 40, "failed": 0}


def test_retry_requests(sandbox):
    sandbox.set_faults({"fail_custom_ids": ["req-0", "req-2"]})
    batch = sandbox.submit(chat_requests(3))
    sandbox.wait_batch(batch["id"])
    sandbox.clear_faults()
    res = sandbox.post(f"batches/{batch['id']}/retry-requests", {"request_ids": ["batch_req_x", "nope"]})
    assert (res.status, res.text) == (400, "No valid request IDs provided")
    failed = sandbox.get(f"batches/{batch['id']}/results", params={"status": "failed"}).lines()
    assert [r["custom_id"] for r in failed] == ["req-0", "req-2"]
    res = sandbox.post(f"batches/{batch['id']}/retry-requests", {"request_ids": [failed[0]["id"]]})
    assert res.status == 200
    done = sandbox.wait_batch(batch["id"])
    assert done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}


def test_delete_batch(sandbox):
    batch = sandbox.submit(chat_requests(2))
    sandbox.wait_batch(batch["id"])
    res = sandbox.delete(f"batches/{batch['id']}")
    assert res.status == 204
    assert res.body == b""
    assert sandbox.get(f"batches/{batch['id']}").status == 404
    assert sandbox.get_json("batches")["data"] == []
    assert len(sandbox.content(batch["output_file_id"]).lines()) == 2  # results stay downloadable
    assert sandbox.delete(f"batches/{batch['id']}").status == 404


def test_delete_running_batch_cancels_it(sandbox_factory):
    sb = sandbox_factory("--latency", "0.1", "--concurrency", "1")
    batch = sb.submit(chat_requests(20))
    sb.wait_batch(batch["id"], statuses={"in_progress"})
    assert sb.delete(f"batches/{batch['id']}").status == 204
    time.sleep(0.3)
    assert sb.content(batch["output_file_id"]).header("X-Incomplete") == "false"


# --- results and analytics ----------------------------------------------------------------


def test_results_endpoint(sandbox):
    sandbox.set_faults({"fail_custom_ids": ["req-1"], "fail_status": 400})
    batch = sandbox.submit(chat_requests(4))
    sandbox.wait_batch(batch["id"])
    res = sandbox.get(f"batches/{batch['id']}/results")
    assert res.header("Content-Type") == "application/x-ndjson"
    rows = res.lines()
    assert [r["custom_id"] for r in rows] == ["req-0", "req-1", "req-2", "req-3"]  # input order
    assert set(rows[0]) == {"id", "custom_id", "model", "input_body", "response_body", "error", "status"}
    assert str(uuid.UUID(rows[0]["id"])) == rows[0]["id"]
    assert rows[0]["status"] == "completed" and rows[0]["error"] is None
    assert rows[0]["response_body"]["object"] == "chat.completion"
    assert rows[1]["status"] == "failed" and rows[1]["response_body"] is None
    assert '"NonRetriableHttpStatus"' in rows[1]["error"]
    assert res.header("X-Incomplete") == "false"
    assert res.header("X-Last-Line") == "4"
    page = sandbox.get(f"batches/{batch['id']}/results", params={"limit": 2, "skip": 1})
    assert [r["custom_id"] for r in page.lines()] == ["req-1", "req-2"]
    assert (page.header("X-Last-Line"), page.header("X-Incomplete")) == ("3", "true")
    assert [
        r["custom_id"] for r in sandbox.get(f"batches/{batch['id']}/results", params={"search": "Q-3"}).lines()
    ] == ["req-3"]
    assert sandbox.get(f"batches/{batch['id']}/results", params={"status": "cancelled"}).status == 400


def test_analytics(sandbox_factory):
    sb = sandbox_factory("--validating-delay", "0.3")
    batch = sb.submit(chat_requests(3), completion_window="1h")
    fresh = sb.get_json(f"batches/{batch['id']}/analytics")
    assert fresh["total_requests"] == 0 and fresh["total_tokens"] == 0  # zeros before any row is done
    sb.wait_batch(batch["id"])
    stats = sb.get_json(f"batches/{batch['id']}/analytics")
    assert stats["total_requests"] == 3
    assert stats["total_tokens"] == stats["total_prompt_tokens"] + stats["total_completion_tokens"] > 0
    assert isinstance(stats["total_cost"], str)


# --- time ---------------------------------------------------------------------------------


def test_expired_at_with_window_scale(sandbox_factory):
    sb = sandbox_factory("--window-scale", "0.0002")  # 1h -> ~1 s, 24h -> ~17 s
    batch = sb.submit(chat_requests(2), completion_window="1h")
    assert batch["expires_at"] - batch["created_at"] == 1
    assert "expired_at" not in batch
    sb.wait_batch(batch["id"])
    deadline = time.time() + 5
    while "expired_at" not in sb.batch(batch["id"]) and time.time() < deadline:
        time.sleep(0.1)
    late = sb.batch(batch["id"])
    assert late["expired_at"] == late["expires_at"]
    assert late["status"] == "completed"  # never "expired"
    expired = sb.get_json("batches", params={"status": "expired"})["data"]
    assert expired == []  # it finished before its deadline
    slow = sb.submit(chat_requests(1), completion_window="24h")
    assert slow["expires_at"] - slow["created_at"] == round(86400 * 0.0002)
    assert "expired_at" not in slow


def test_expired_status_filter(sandbox_factory):
    # a window of 0.72 s, and requests that take a minute each: overdue long before the end
    sb = sandbox_factory("--window-scale", "0.0002", "--latency", "60", "--concurrency", "1")
    batch = sb.submit(chat_requests(10), completion_window="1h")
    seen = []

    def overdue_and_started() -> bool:  # (in either order: a busy machine may start it late)
        seen[:] = [sb.batch(batch["id"])]
        return "expired_at" in seen[0] and seen[0]["status"] != "validating"

    deadline = time.monotonic() + 30
    while not overdue_and_started():
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)
    late = seen[0]
    assert late["status"] == "in_progress"  # overdue batches keep running
    assert "expired_at" in late
    assert [b["id"] for b in sb.get_json("batches", params={"status": "expired"})["data"]] == [batch["id"]]


# --- models -------------------------------------------------------------------------------


def test_models_list(sandbox):
    res = sandbox.get("models")
    assert res.status == 200
    body = res.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids == [
        "Qwen/Qwen3.5-35B-A3B-FP8",
        "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8",
        "Qwen/Qwen3.5-9B",
        "openai/gpt-oss-20b",
        "Qwen/Qwen3-Embedding-8B",
    ]
    assert all(m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"] for m in body["data"])
    one = sandbox.get_json("models/Qwen/Qwen3.5-9B")
    assert one["id"] == "Qwen/Qwen3.5-9B"
    missing = sandbox.get("models/acme/none")
    assert missing.status == 404
    assert missing.json()["error"]["message"]  # OpenAI envelope on /models
    unauth = sandbox.get("models", auth=False)
    assert unauth.status == 401
    assert unauth.json()["error"]["message"] == "Authentication required"


def test_models_flag_replaces_chat_list(sandbox_factory):
    sb = sandbox_factory("--models", "acme/tiny-1b, acme/small-3b")
    ids = [m["id"] for m in sb.get_json("models")["data"]]
    assert ids == ["acme/tiny-1b", "acme/small-3b", "Qwen/Qwen3-Embedding-8B"]
    res = sb.upload(jsonl_bytes(chat_requests(1)))
    assert res.status == 403
    assert res.text == f"Line 1: Model '{CHAT_MODEL}' has not been configured or is not available to user"
    assert sb.upload(jsonl_bytes(chat_requests(1, model="acme/tiny-1b"))).status == 201
