"""Sandbox: file upload, validation, listing, deletion, input content and cost estimate."""

from __future__ import annotations

import json
import uuid

import pytest
import requests
from sandbox_helper import CHAT_MODEL, EMBEDDING_MODEL, Sandbox, chat_requests, jsonl_bytes, multipart_body, new_api_key


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One sandbox for the stateless validation tests of this module."""
    sb = Sandbox(
        tmp_path_factory.mktemp("sandbox-files") / "data",
        api_key=new_api_key(),
        extra_args=["--max-requests-per-file", "4", "--max-body-bytes", "400"],
    ).start()
    yield sb
    sb.stop()


def line(custom_id="a", method="POST", url="/v1/chat/completions", model=CHAT_MODEL, **body):
    body = dict({"model": model, "messages": [{"role": "user", "content": "hi"}]}, **body)
    if model is None:
        body.pop("model")
    return {"custom_id": custom_id, "method": method, "url": url, "body": body}


def is_plain_text(res) -> bool:
    return (res.header("Content-Type") or "").startswith("text/plain")


# --- successful uploads -----------------------------------------------------------------


def test_upload_returns_201_and_file_object(sandbox):
    res = sandbox.upload(jsonl_bytes(chat_requests(3)), filename="my-batch.jsonl")
    assert res.status == 201
    obj = res.json()
    assert str(uuid.UUID(obj["id"])) == obj["id"]  # a bare UUID, no "file-" prefix
    assert obj["object"] == "file"
    assert obj["purpose"] == "batch"
    assert obj["filename"] == "my-batch.jsonl"
    assert obj["bytes"] == len(jsonl_bytes(chat_requests(3)))
    assert obj["expires_at"] == obj["created_at"] + 30 * 86400
    assert None not in obj.values()
    assert sandbox.get_json(f"files/{obj['id']}") == obj


def test_purpose_is_case_insensitive_and_optional(sandbox):
    assert sandbox.upload(jsonl_bytes(chat_requests(1)), purpose="BATCH").json()["purpose"] == "batch"
    assert sandbox.upload(jsonl_bytes(chat_requests(1)), purpose=None).json()["purpose"] == "batch"


def test_expires_after_seconds(sandbox):
    res = sandbox.upload(
        jsonl_bytes(chat_requests(1)), fields={"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"}
    )
    obj = res.json()
    assert obj["expires_at"] == obj["created_at"] + 3600


def test_fields_after_file_part_are_read(sandbox):
    boundary = "xyzBOUNDARY"
    body = (
        (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="late.jsonl"\r\n\r\n').encode()
        + jsonl_bytes(chat_requests(1))
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n--{boundary}--\r\n'.encode()
    )
    res = sandbox.request(
        "POST", "files", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert res.status == 400
    assert res.text == "Invalid purpose 'assistants'. Only 'batch' is supported."


def test_blank_lines_crlf_and_duplicate_custom_ids_accepted(sandbox):
    raw = (
        b"\r\n"
        + json.dumps(line("dup")).encode()
        + b"\r\n\r\n   \r\n"
        + json.dumps(line("dup")).encode()
        + b"\r\n"
        + json.dumps(line("other", priority=5)).encode()
    )  # no trailing newline
    res = sandbox.upload(raw)
    assert res.status == 201, res.text
    content = sandbox.content(res.json()["id"])
    items = content.lines()
    assert [i["custom_id"] for i in items] == ["dup", "dup", "other"]
    assert all(set(i) == {"custom_id", "method", "url", "body"} for i in items)
    assert "priority" not in items[2]["body"]  # stripped, like the real server
    assert content.header("X-Incomplete") == "false"
    assert content.header("X-Last-Line") is None  # never sent for input files in unlimited mode
    assert content.header("Content-Type") == "application/x-ndjson"


def test_input_content_pages(sandbox):
    file_obj = sandbox.upload_requests(chat_requests(7))
    page = sandbox.content(file_obj["id"], limit=3, skip=2)
    assert [i["custom_id"] for i in page.lines()] == ["req-2", "req-3", "req-4"]
    assert page.header("X-Last-Line") == "5"
    assert page.header("X-Incomplete") == "true"  # more rows exist
    assert page.header("Content-Length") == str(len(page.body))
    last = sandbox.content(file_obj["id"], limit=3, skip=5)
    assert last.header("X-Last-Line") == "7"
    assert last.header("X-Incomplete") == "false"
    assert sandbox.content(file_obj["id"], search="zzz").lines() == []
    found = sandbox.content(file_obj["id"], search="REQ-3")
    assert [i["custom_id"] for i in found.lines()] == ["req-3"]


def test_all_models_and_urls_accepted(sandbox):
    items = [
        line("c", url="/v1/chat/completions"),
        {"custom_id": "e", "method": "post", "url": "/v1/embeddings", "body": {"model": EMBEDDING_MODEL, "input": "x"}},
        {"custom_id": "r", "method": "POST", "url": "/v1/responses", "body": {"model": CHAT_MODEL, "input": "x"}},
        {"custom_id": "p", "method": "POST", "url": "/v1/completions", "body": {"model": CHAT_MODEL, "prompt": "x"}},
        line("m", url="/v1/messages", model="openai/gpt-oss-20b"),
    ]
    assert sandbox.upload(jsonl_bytes(items)).status == 201


# --- validation messages (section 9) ------------------------------------------------------

GOOD = json.dumps(line("ok"))

VALIDATION_CASES = [
    ("bad-json", ["{not json"], 400, "Invalid JSON on line 1: "),
    ("not-object", ["[1, 2]"], 400, "Invalid JSON on line 1: invalid type: sequence"),
    (
        "lone-surrogate",  # half of a \u surrogate pair: no character (never a 500)
        [GOOD, json.dumps(line("ok-2")).replace('"ok-2"', '"ok-\\ud83d"')],
        400,
        "Invalid JSON on line 2: lone leading surrogate in hex escape",
    ),
    (
        "missing-body",
        ['{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}'],
        400,
        "Invalid JSON on line 1: missing field `body`",
    ),
    (
        "missing-custom-id",
        ['{"method": "POST", "url": "/v1/chat/completions", "body": {}}'],
        400,
        "Invalid JSON on line 1: missing field `custom_id`",
    ),
    (
        "custom-id-too-long",
        [json.dumps(line("x" * 65))],
        400,
        "Line 1: custom_id exceeds maximum length of 64 characters (got 65)",
    ),
    (
        "custom-id-control-char",
        [json.dumps(line("bad\u0001id"))],
        400,
        "Line 1: custom_id contains invalid characters: must be valid ASCII without control characters",
    ),
    (
        "method",
        [json.dumps(line(method="GET"))],
        400,
        "Line 1: Unsupported HTTP method 'GET'. Only POST is currently supported.",
    ),
    (
        "url",
        [json.dumps(line(url="/v1/images/generations"))],
        400,
        "Line 1: Unsupported URL path '/v1/images/generations'. Allowed paths are: /v1/chat/completions, "
        "/v1/completions, /v1/embeddings, /v1/responses, /v1/messages",
    ),
    ("no-model", [json.dumps(line(model=None))], 400, "Line 1: Missing 'model' field in request body"),
    (
        "unknown-model",
        [json.dumps(line(model="acme/unknown-7b"))],
        403,
        "Line 1: Model 'acme/unknown-7b' has not been configured or is not available to user",
    ),
    (
        "embedding-on-chat",
        [json.dumps(line(model=EMBEDDING_MODEL))],
        400,
        f"Line 1: Model '{EMBEDDING_MODEL}' is a EMBEDDINGS model but endpoint '/v1/chat/completions' "
        "requires a CHAT model",
    ),
    (
        "chat-on-embeddings",
        [json.dumps(line(url="/v1/embeddings"))],
        400,
        f"Line 1: Model '{CHAT_MODEL}' is a CHAT model but endpoint '/v1/embeddings' requires a EMBEDDINGS model",
    ),
    ("empty", [""], 400, "File contains no valid request templates"),
    ("only-blank", ["", "   ", "\t"], 400, "File contains no valid request templates"),
    ("too-many", [GOOD] * 6, 400, "File contains 6 requests, which exceeds the maximum of 4"),
    (
        "blank-lines-do-not-count",
        [GOOD, "", "", GOOD, "   ", json.dumps(line(method="PUT"))],
        400,
        "Line 3: Unsupported HTTP method 'PUT'. Only POST is currently supported.",
    ),
]


@pytest.mark.parametrize(
    ("lines", "status", "message"), [c[1:] for c in VALIDATION_CASES], ids=[c[0] for c in VALIDATION_CASES]
)
def test_validation_messages(shared, lines, status, message):
    before = shared.stats()["files"]
    res = shared.upload(("\n".join(lines) + "\n").encode())
    assert res.status == status, res.text
    assert res.text.startswith(message), res.text
    assert is_plain_text(res)
    assert shared.stats()["files"] == before  # all or nothing


def test_body_size_limit(shared):
    big = line("big", messages=[{"role": "user", "content": "x" * 500}])
    size = len(json.dumps(big["body"], separators=(",", ":")).encode())
    res = shared.upload(jsonl_bytes([line("a"), big]))
    assert res.status == 400
    assert res.text == f"Line 2: Request body is {size} bytes, which exceeds the maximum allowed size of 400 bytes"


def test_invalid_utf8(shared):
    res = shared.upload(GOOD.encode() + b"\n" + b'{"custom_id": "\xff\xfe"}\n')
    assert res.status == 400
    assert res.text.startswith("File contains invalid UTF-8 on/near line 2 at byte offset")


def test_no_file_field_and_not_multipart(shared):
    ctype, body = multipart_body({"purpose": "batch"}, b"")
    body = body.replace(b'name="file"', b'name="other"')
    res = shared.request("POST", "files", data=body, headers={"Content-Type": ctype})
    assert (res.status, res.text) == (400, "No file field found in multipart upload")
    res = shared.request("POST", "files", data=GOOD.encode(), headers={"Content-Type": "application/jsonl"})
    assert res.status == 400
    assert res.text.startswith("Invalid multipart request")


def test_failed_upload_stores_nothing(shared):
    before = shared.get_json("files", params={"limit": 100})["data"]
    res = shared.upload(jsonl_bytes([line("a"), line("b"), line("c", model="nope")]))
    assert res.status == 403
    assert shared.get_json("files", params={"limit": 100})["data"] == before


# --- size limit -----------------------------------------------------------------------------


def test_413_with_content_length(sandbox_factory):
    sb = sandbox_factory("--max-file-bytes", "2000")
    small = jsonl_bytes(chat_requests(40))  # ~5 KB: passes the early check, fails while streaming
    assert 2000 < len(small) < 2000 + 10 * 1024
    res = sb.upload(small)
    assert res.status == 413
    assert res.text == "File exceeds the maximum allowed size of 2000 bytes"
    assert is_plain_text(res)
    big = jsonl_bytes(chat_requests(400))  # ~50 KB: rejected on Content-Length alone
    res = sb.upload(big)
    assert res.status == 413
    assert res.text == "File exceeds the maximum allowed size of 2000 bytes"
    assert res.header("Connection") == "close"
    assert sb.upload(jsonl_bytes(chat_requests(2))).status == 201  # the server is still fine
    assert sb.stats()["files"] == 1


def test_413_with_chunked_upload(sandbox_factory):
    sb = sandbox_factory("--max-file-bytes", "2000")
    ctype, body = multipart_body({"purpose": "batch"}, jsonl_bytes(chat_requests(3000)))

    def chunks():
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    res = requests.post(
        f"{sb.base_url}/files",
        data=chunks(),  # a generator body is sent with Transfer-Encoding: chunked
        headers={"Content-Type": ctype, "Authorization": f"Bearer {sb.api_key}"},
        timeout=30,
    )
    assert res.request.headers.get("Transfer-Encoding") == "chunked"
    assert res.status_code == 413
    assert res.text == "File exceeds the maximum allowed size of 2000 bytes"


def test_chunked_upload_accepted(sandbox):
    ctype, body = multipart_body({"purpose": "batch"}, jsonl_bytes(chat_requests(500)))
    res = requests.post(
        f"{sandbox.base_url}/files",
        data=(body[i : i + 1000] for i in range(0, len(body), 1000)),
        headers={"Content-Type": ctype, "Authorization": f"Bearer {sandbox.api_key}"},
        timeout=30,
    )
    assert res.status_code == 201, res.text
    assert len(sandbox.content(res.json()["id"]).lines()) == 500


def test_boundary_split_across_reads(sandbox):
    """A boundary-like byte sequence inside the data and a 64 KiB-aligned part must parse."""
    filler = "x" * (65536 - 200)
    items = [line("a", messages=[{"role": "user", "content": filler + "\r\n--not-the-boundary"}]), line("b")]
    res = sandbox.upload(jsonl_bytes(items))
    assert res.status == 201, res.text
    assert [i["custom_id"] for i in sandbox.content(res.json()["id"]).lines()] == ["a", "b"]


# --- ids, listing, deletion -----------------------------------------------------------------


def test_non_uuid_file_id_is_400_plain_text(sandbox):
    for path in ("files/file-abc123", "files/file-abc123/content", "files/nope/cost-estimate"):
        res = sandbox.get(path)
        assert (res.status, res.text) == (400, "Invalid file ID format"), path
        assert is_plain_text(res)
    res = sandbox.delete("files/file-abc123")
    assert (res.status, res.text) == (400, "Invalid file ID format")
    missing = str(uuid.uuid4())
    res = sandbox.get(f"files/{missing}")
    assert (res.status, res.text) == (404, f"File with ID {missing} not found")
    assert is_plain_text(res)


def test_list_files_pagination_and_filters(sandbox):
    ids = [sandbox.upload_requests(chat_requests(1), filename=f"part-{i}.jsonl")["id"] for i in range(5)]
    page = sandbox.get_json("files", params={"limit": 2})
    assert [f["id"] for f in page["data"]] == ids[::-1][:2]  # newest first
    assert page["has_more"] is True
    assert (page["first_id"], page["last_id"]) == (ids[4], ids[3])
    seen = []
    after = None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = sandbox.get_json("files", params=params)
        seen += [f["id"] for f in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ids[::-1]
    # a non-UUID cursor is silently ignored: the first page comes back
    assert sandbox.get_json("files", params={"limit": 2, "after": "file-xyz"})["data"][0]["id"] == ids[4]
    asc = sandbox.get_json("files", params={"order": "asc"})
    assert [f["id"] for f in asc["data"]] == ids
    assert sandbox.get("files", params={"order": "newest"}).status == 400
    found = sandbox.get_json("files", params={"search": "PART-3"})
    assert [f["id"] for f in found["data"]] == [ids[3]]
    empty = sandbox.get_json("files", params={"search": "nothing-matches"})
    assert empty == {"object": "list", "data": [], "has_more": False}


def test_virtual_output_and_error_files_are_listed(sandbox):
    batch = sandbox.submit(chat_requests(2))
    listing = sandbox.get_json("files", params={"limit": 10})["data"]
    by_id = {f["id"]: f for f in listing}
    out, err = by_id[batch["output_file_id"]], by_id[batch["error_file_id"]]
    assert out["purpose"] == "batch_output"
    assert out["filename"] == f"batch-{batch['id']}-output.jsonl"
    assert err["purpose"] == "batch_error"
    assert err["filename"] == f"batch-{batch['id']}-error.jsonl"
    only_inputs = sandbox.get_json("files", params={"purpose": "batch"})["data"]
    assert {f["purpose"] for f in only_inputs} == {"batch"}
    sandbox.wait_batch(batch["id"])
    out = sandbox.get_json(f"files/{batch['output_file_id']}")
    assert out["bytes"] == len(sandbox.content(batch["output_file_id"]).body)


def test_delete_file_cancels_running_batches_and_unlinks(sandbox_factory):
    sb = sandbox_factory("--latency", "0.2", "--concurrency", "1")
    done_file = sb.upload_requests(chat_requests(1))
    done = sb.create_batch(done_file["id"]).json()
    sb.wait_batch(done["id"])
    file_obj = sb.upload_requests(chat_requests(20))
    running = sb.create_batch(file_obj["id"]).json()
    sb.wait_batch(running["id"], statuses={"in_progress"})
    other = sb.create_batch(file_obj["id"]).json()
    res = sb.delete(f"files/{file_obj['id']}")
    assert res.status == 200
    assert res.json() == {"id": file_obj["id"], "object": "file", "deleted": True}
    for batch_id in (running["id"], other["id"]):
        batch = sb.batch(batch_id)
        assert batch["status"] == "cancelled"
        assert batch["input_file_id"] == ""
    assert sb.get(f"files/{file_obj['id']}").status == 404
    assert sb.get(f"files/{file_obj['id']}/content").status == 404
    sb.delete(f"files/{done_file['id']}")
    done = sb.batch(done["id"])
    assert done["status"] == "completed"  # terminal batches are only unlinked
    assert done["input_file_id"] == ""
    assert len(sb.content(done["output_file_id"]).lines()) == 1


# --- cost estimate --------------------------------------------------------------------------


def test_cost_estimate(sandbox):
    items = chat_requests(3) + [
        {
            "custom_id": "e1",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": EMBEDDING_MODEL, "input": "abc"},
        }
    ]
    file_obj = sandbox.upload_requests(items)
    est = sandbox.get_json(f"files/{file_obj['id']}/cost-estimate", params={"completion_window": "24h"})
    assert set(est) == {
        "file_id",
        "total_requests",
        "total_estimated_input_tokens",
        "total_estimated_output_tokens",
        "total_estimated_cost",
        "models",
    }
    assert est["file_id"] == file_obj["id"]
    assert est["total_requests"] == 4
    assert isinstance(est["total_estimated_cost"], str)
    chat = next(m for m in est["models"] if m["model"] == CHAT_MODEL)
    expected_in = sum(len(json.dumps(i["body"], separators=(",", ":")).encode()) // 4 for i in chat_requests(3))
    assert chat["request_count"] == 3
    assert chat["estimated_input_tokens"] == expected_in
    assert chat["estimated_output_tokens"] == expected_in * 11 // 10
    assert set(chat) == {
        "model",
        "request_count",
        "estimated_input_tokens",
        "estimated_output_tokens",
        "estimated_cost",
    }
    assert est["total_estimated_input_tokens"] == sum(m["estimated_input_tokens"] for m in est["models"])
    default = sandbox.get_json(f"files/{file_obj['id']}/cost-estimate")
    assert default == est  # 24h is the default
    fast = sandbox.get_json(f"files/{file_obj['id']}/cost-estimate", params={"completion_window": "1h"})
    assert float(fast["total_estimated_cost"]) > float(est["total_estimated_cost"])
    bad = sandbox.get(f"files/{file_obj['id']}/cost-estimate", params={"completion_window": "7d"})
    assert (bad.status, bad.text) == (400, "Unsupported completion_window. Allowed values: 24h, 1h")
