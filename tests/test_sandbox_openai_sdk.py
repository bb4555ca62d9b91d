"""Sandbox: the official OpenAI Python SDK works against it unchanged (only base_url/api_key)."""

from __future__ import annotations

import json

import pytest
from sandbox_helper import chat_requests, jsonl_bytes


@pytest.mark.slow
def test_openai_sdk_end_to_end(sandbox, tmp_path):
    # imported here, not at collection: the SDK takes most of a second of CPU to import, which
    # every test process would pay for one test that `make test-fast` does not even run
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=sandbox.base_url, api_key=sandbox.api_key, max_retries=0, timeout=30)
    path = tmp_path / "requests.jsonl"
    path.write_bytes(jsonl_bytes(chat_requests(4)))
    with open(path, "rb") as fh:
        uploaded = client.files.create(file=fh, purpose="batch")
    assert uploaded.id and uploaded.purpose == "batch"
    assert uploaded.filename == "requests.jsonl"

    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"project": "sdk-test"},
    )
    assert batch.status == "validating"
    assert batch.metadata["project"] == "sdk-test"

    other = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    cancelled = client.batches.cancel(other.id)
    assert cancelled.status == "cancelled"

    sandbox.wait_batch(batch.id)
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.request_counts.completed == 4

    listed = client.batches.list(limit=10)
    assert {b.id for b in listed.data} == {batch.id, other.id}

    text = client.files.content(done.output_file_id).text
    lines = [json.loads(line) for line in text.splitlines()]
    assert sorted(line["custom_id"] for line in lines) == [f"req-{i}" for i in range(4)]
    assert lines[0]["response"]["body"]["choices"][0]["message"]["content"].startswith("Echo:")

    raw = client.files.with_raw_response.content(done.output_file_id, extra_query={"skip": 2})
    assert raw.headers["X-Last-Line"] == "4"
    assert len(raw.text.splitlines()) == 2

    info = client.files.retrieve(done.output_file_id)
    assert info.purpose == "batch_output"
    models = [m.id for m in client.models.list()]
    assert "Qwen/Qwen3.5-9B" in models
