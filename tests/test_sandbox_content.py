"""Sandbox: GET /files/{id}/content semantics (skip, limit, search, X-Incomplete, X-Last-Line)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests
from sandbox_helper import Sandbox, chat_requests, new_api_key


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A sandbox holding one finished 150-request batch (3 failed requests)."""
    sb = Sandbox(tmp_path_factory.mktemp("sandbox-content") / "data", api_key=new_api_key()).start()
    sb.set_faults({"fail_custom_ids": ["req-7", "req-70", "req-140"], "fail_status": 400})
    sb.batch_obj = sb.submit(chat_requests(150))
    sb.wait_batch(sb.batch_obj["id"])
    sb.clear_faults()
    sb.out_id = sb.batch_obj["output_file_id"]
    sb.err_id = sb.batch_obj["error_file_id"]
    yield sb
    sb.stop()


def test_output_line_shape(finished):
    res = finished.content(finished.out_id)
    assert res.status == 200
    assert res.header("Content-Type") == "application/x-ndjson"
    assert res.body.endswith(b"\n")
    lines = res.lines()
    assert len(lines) == 147
    first = lines[0]
    assert set(first) == {"id", "custom_id", "response", "error"}
    assert first["id"].startswith("batch_req_")
    uuid.UUID(first["id"][len("batch_req_") :])
    assert first["error"] is None
    assert first["response"]["status_code"] == 200
    assert first["response"]["request_id"] is None
    assert first["response"]["body"]["object"] == "chat.completion"
    assert len({line["custom_id"] for line in lines}) == 147


def test_error_line_shape(finished):
    lines = finished.content(finished.err_id).lines()
    assert sorted(line["custom_id"] for line in lines) == ["req-140", "req-7", "req-70"]
    line = lines[0]
    assert set(line) == {"id", "custom_id", "response", "error"}
    assert line["id"].startswith("batch_req_")
    assert line["response"] is None
    assert line["error"]["code"] is None
    reason = json.loads(line["error"]["message"])  # a JSON-serialised FailureReason
    assert reason["type"] == "NonRetriableHttpStatus"
    assert reason["details"]["status"] == 400
    assert isinstance(reason["details"]["body"], str)


def test_unlimited_mode_headers(finished):
    res = requests.get(
        f"{finished.base_url}/files/{finished.out_id}/content",
        headers={"Authorization": f"Bearer {finished.api_key}"},
        timeout=10,
    )
    assert res.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in res.headers
    assert res.headers["X-Last-Line"] == "147"
    assert res.headers["X-Incomplete"] == "false"
    skipped = finished.content(finished.out_id, skip=140)
    assert len(skipped.lines()) == 7
    assert skipped.header("X-Last-Line") == "147"
    beyond = finished.content(finished.out_id, skip=500)
    assert beyond.body == b""
    assert beyond.header("X-Last-Line") == "500"
    errors = finished.content(finished.err_id, skip=1)
    assert (len(errors.lines()), errors.header("X-Last-Line")) == (2, "3")


def test_limit_mode_and_clamp(finished):
    page = finished.content(finished.out_id, limit=10, skip=5)
    assert len(page.lines()) == 10
    assert page.header("X-Last-Line") == "15"
    assert page.header("X-Incomplete") == "true"  # more rows exist after this page
    assert page.header("Content-Length") == str(len(page.body))
    big = finished.content(finished.out_id, limit=1000)
    assert len(big.lines()) == 101  # clamped to 101
    assert big.header("X-Last-Line") == "101"
    tail = finished.content(finished.out_id, limit=10, skip=140)
    assert len(tail.lines()) == 7
    assert (tail.header("X-Last-Line"), tail.header("X-Incomplete")) == ("147", "false")
    zero = finished.content(finished.out_id, limit=0)
    assert len(zero.lines()) == 1  # clamped up to 1
    empty = finished.content(finished.out_id, limit=10, skip=1000)
    assert (empty.body, empty.header("X-Last-Line")) == (b"", "1000")


def test_pages_concatenate_to_full_download(finished):
    full = finished.content(finished.out_id).lines()
    pages, skip = [], 0
    while True:
        page = finished.content(finished.out_id, limit=40, skip=skip)
        pages += page.lines()
        skip = int(page.header("X-Last-Line"))
        if page.header("X-Incomplete") == "false":
            break
    assert pages == full


def test_offset_is_ignored_and_negative_skip_is_zero(finished):
    full = finished.content(finished.out_id)
    with_offset = finished.content(finished.out_id, offset=100)
    assert with_offset.body == full.body
    assert with_offset.header("X-Last-Line") == "147"
    negative = finished.content(finished.out_id, skip=-5, limit=3)
    assert negative.lines() == full.lines()[:3]
    assert negative.header("X-Last-Line") == "3"
    bad = finished.content(finished.out_id, skip="abc")
    assert bad.status == 400


def test_search(finished):
    res = finished.content(finished.out_id, search="REQ-12")
    ids = sorted(line["custom_id"] for line in res.lines())
    assert ids == sorted(["req-12"] + [f"req-12{i}" for i in range(10)])
    assert res.header("X-Last-Line") is None  # omitted when search is used (unlimited mode)
    assert res.header("X-Incomplete") == "false"
    page = finished.content(finished.out_id, search="req-12", limit=3)
    assert len(page.lines()) == 3
    assert page.header("X-Last-Line") == "3"
    assert page.header("X-Incomplete") == "true"


def test_output_ordered_by_completion(sandbox):
    """Lines are in completion order: retried requests come last, offsets stay append-only."""
    sandbox.set_faults({"fail_custom_ids": ["req-0"]})
    batch = sandbox.submit(chat_requests(5))
    sandbox.wait_batch(batch["id"])
    before = sandbox.content(batch["output_file_id"]).lines()
    assert [line["custom_id"] for line in before] == ["req-1", "req-2", "req-3", "req-4"]
    sandbox.clear_faults()
    sandbox.post(f"batches/{batch['id']}/retry")
    sandbox.wait_batch(batch["id"])
    after = sandbox.content(batch["output_file_id"]).lines()
    assert after[:4] == before
    assert after[4]["custom_id"] == "req-0"
    results = sandbox.get(f"batches/{batch['id']}/results").lines()
    assert [r["custom_id"] for r in results] == [f"req-{i}" for i in range(5)]  # results: input order


@pytest.mark.slow
def test_partial_results_while_running(sandbox_factory):
    sb = sandbox_factory("--latency", "0.03", "--concurrency", "2", "--latency-jitter", "0.03")
    batch = sb.submit(chat_requests(40))
    out_id = batch["output_file_id"]
    collected, skip, saw_incomplete = [], 0, False
    deadline = time.time() + 30
    while time.time() < deadline:
        res = sb.content(out_id, skip=skip)
        lines = res.lines()
        assert int(res.header("X-Last-Line")) == skip + len(lines)
        collected += lines
        skip = int(res.header("X-Last-Line"))
        if res.header("X-Incomplete") == "true":
            saw_incomplete = True
        else:
            break
        time.sleep(0.05)
    assert saw_incomplete
    final = sb.content(out_id).lines()
    assert collected == final  # skip-based resume never misses or repeats a line
    assert len(final) == 40
    assert sb.batch(batch["id"])["status"] in ("finalizing", "completed")


def test_x_incomplete_for_limited_pages_of_running_batch(sandbox_factory):
    sb = sandbox_factory("--latency", "0.2", "--concurrency", "1")
    batch = sb.submit(chat_requests(10))
    sb.wait_batch(batch["id"], statuses={"in_progress"})
    page = sb.content(batch["output_file_id"], limit=100)
    assert page.header("X-Incomplete") == "true"  # the batch is not finished
    assert page.header("X-Last-Line") == str(len(page.lines()))
    errors = sb.content(batch["error_file_id"])
    assert (errors.body, errors.header("X-Incomplete"), errors.header("X-Last-Line")) == (b"", "true", "0")
    sb.post(f"batches/{batch['id']}/cancel")
    done = sb.content(batch["output_file_id"], limit=100)
    assert done.header("X-Incomplete") == "false"
