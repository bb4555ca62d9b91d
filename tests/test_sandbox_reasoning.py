"""The sandbox's reasoning models: thinking before the answer, counted against the token limit,
switched by the effort, listed by /v1/models, summed in analytics; bad answers on demand; JSON
answers when JSON is asked; the billed cost beside the list cost."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from sandbox_helper import CHAT_MODEL, INSTRUCT_MODEL

THINK = 64  # the sandbox's default --reasoning-tokens
GPT_OSS = "openai/gpt-oss-20b"


def chat(cid: str, body: dict, content: str = "Classify this review: great product") -> dict:
    body = dict({"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}]}, **body)
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body}


def run(sandbox, items: list) -> dict:
    batch = sandbox.submit(items)
    sandbox.wait_batch(batch["id"])
    lines = sandbox.content(batch["output_file_id"]).lines()
    out = {line["custom_id"]: line["response"]["body"] for line in lines}
    out["_batch"] = batch
    return out


def test_a_reasoning_model_thinks_first_and_the_thinking_counts_against_max_tokens(sandbox):
    out = run(
        sandbox,
        [
            chat("starved", {"max_tokens": 5}),
            chat("at-the-edge", {"max_tokens": THINK}),
            chat("cut", {"max_completion_tokens": THINK + 3}),
            chat("free", {}),
            chat("off", {"max_tokens": 50, "reasoning_effort": "none"}),
            chat("off-template", {"max_tokens": 50, "chat_template_kwargs": {"enable_thinking": False}}),
            chat("instruct", {"model": INSTRUCT_MODEL, "max_tokens": 50}),
        ],
    )
    for cid, limit in (("starved", 5), ("at-the-edge", THINK)):
        choice, usage = out[cid]["choices"][0], out[cid]["usage"]
        assert choice["message"]["content"] is None and choice["finish_reason"] == "length", cid
        assert len(choice["message"]["reasoning_content"]) == limit * 4
        assert usage["completion_tokens"] == limit == usage["completion_tokens_details"]["reasoning_tokens"]
    cut = out["cut"]["choices"][0]
    assert cut["finish_reason"] == "length" and cut["message"]["content"] == "Echo: Classi"  # 3 tokens of 4 characters
    assert out["cut"]["usage"]["completion_tokens"] == THINK + 3
    free = out["free"]
    assert free["choices"][0]["finish_reason"] == "stop"
    assert free["choices"][0]["message"]["content"].startswith("Echo: Classify this review")
    assert free["usage"]["completion_tokens_details"]["reasoning_tokens"] == THINK
    assert free["usage"]["completion_tokens"] > THINK
    for cid in ("off", "off-template", "instruct"):
        body = out[cid]
        msg = body["choices"][0]["message"]
        assert body["choices"][0]["finish_reason"] == "stop" and msg["content"].startswith("Echo: "), cid
        assert "reasoning_content" not in msg and "completion_tokens_details" not in body["usage"], cid


def test_the_effort_sets_how_long_the_model_thinks(sandbox):
    out = run(
        sandbox,
        [
            chat("low", {"model": GPT_OSS, "reasoning_effort": "low"}),
            chat("default", {"model": GPT_OSS}),
            chat("high", {"model": GPT_OSS, "reasoning_effort": "high"}),
        ],
    )
    got = {
        cid: out[cid]["usage"]["completion_tokens_details"]["reasoning_tokens"] for cid in ("low", "default", "high")
    }
    assert got == {"low": THINK // 4, "default": THINK, "high": THINK * 4}


def test_an_effort_the_model_cannot_take_is_refused_on_upload(sandbox):
    from sandbox_helper import jsonl_bytes

    items = [chat("ok", {}), chat("gpt-off", {"model": GPT_OSS, "reasoning_effort": "none"})]
    res = sandbox.upload(jsonl_bytes(items))
    assert res.status == 400
    assert res.text.startswith("Line 2: openai/gpt-oss-20b always reasons and cannot switch it off")
    res = sandbox.upload(jsonl_bytes([chat("odd", {"reasoning_effort": "extreme"})]))
    assert res.status == 400 and "Line 1" in res.text and "'extreme'" in res.text


def test_responses_and_messages_endpoints_think_too(sandbox):
    def resp(cid, body):
        return {
            "custom_id": cid,
            "method": "POST",
            "url": "/v1/responses",
            "body": dict({"model": CHAT_MODEL, "input": "Summarise this"}, **body),
        }  # noqa: E731

    msgs = {"custom_id": "msg", "method": "POST", "url": "/v1/messages", "body": {"model": CHAT_MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}}  # fmt: skip
    out = run(
        sandbox,
        [resp("r-starved", {"max_output_tokens": 10}), resp("r-free", {}), resp("r-off", {"reasoning": {"effort": "none"}}), msgs],
    )  # fmt: skip
    starved = out["r-starved"]
    assert starved["status"] == "incomplete" and starved["incomplete_details"] == {"reason": "max_output_tokens"}
    assert starved["output_text"] == "" and [o["type"] for o in starved["output"]] == ["reasoning"]
    assert starved["usage"]["output_tokens_details"]["reasoning_tokens"] == 10
    free = out["r-free"]
    assert free["status"] == "completed" and [o["type"] for o in free["output"]] == ["reasoning", "message"]
    assert free["output_text"].startswith("Echo: Summarise this")
    assert out["r-off"]["usage"]["output_tokens_details"]["reasoning_tokens"] == 0
    msg = out["msg"]
    assert msg["stop_reason"] == "max_tokens" and [c["type"] for c in msg["content"]] == ["thinking"]


def test_models_list_their_reasoning_efforts_when_asked(sandbox):
    plain = sandbox.get_json("/v1/models")["data"]
    assert all("supported_reasoning_efforts" not in m for m in plain)
    listed = {m["id"]: m.get("supported_reasoning_efforts") for m in sandbox.get_json("/v1/models", params={"include_reasoning_capabilities": "true"})["data"]}  # fmt: skip
    assert listed[CHAT_MODEL] == ["none", "low", "medium", "high"]
    assert listed[GPT_OSS] == ["low", "medium", "high"]
    assert listed[INSTRUCT_MODEL] is None and listed["Qwen/Qwen3-Embedding-8B"] is None


def test_json_is_answered_as_json_and_bad_answers_come_once_each(sandbox):
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": ["pos", "neg"]}, "score": {"type": "number"}},
        "required": ["label", "score"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    sandbox.set_faults({"bad_answers": {"e": "empty", "f": "filtered", "j": "invalid_json", "m": "missing_fields"}})
    items = [
        chat("mode", {"response_format": {"type": "json_object"}, "reasoning_effort": "none"}),
        chat("schema", {"response_format": fmt, "reasoning_effort": "none"}),
    ] + [chat(c, {"response_format": fmt, "reasoning_effort": "none"}) for c in "efjm"]
    out = run(sandbox, items)
    text = lambda cid: out[cid]["choices"][0]["message"]["content"]  # noqa: E731
    assert json.loads(text("mode"))["answer"].startswith("Echo: Classify")
    assert json.loads(text("schema")) == {"label": "pos", "score": json.loads(text("schema"))["score"]}
    assert text("e") == "" and out["e"]["choices"][0]["finish_reason"] == "stop"
    assert text("f") is None and out["f"]["choices"][0]["finish_reason"] == "content_filter"
    with pytest.raises(ValueError):
        json.loads(text("j"))
    assert json.loads(text("m")) == {}
    assert sandbox.faults()["_remaining"]["bad_answers"] == []
    again = run(sandbox, [chat(c, {"response_format": fmt, "reasoning_effort": "none"}) for c in "efjm"])
    assert all(set(json.loads(again[c]["choices"][0]["message"]["content"])) == {"label", "score"} for c in "efjm")


def test_analytics_count_the_thinking_and_bill_the_list_cost_times_the_factor(sandbox):
    sandbox.set_faults({"billed_price_factor": 0.5})
    out = run(sandbox, [chat("a", {"max_tokens": 5}), chat("b", {}), chat("c", {"model": INSTRUCT_MODEL})])
    stats = sandbox.get_json(f"/v1/batches/{out['_batch']['id']}/analytics")
    assert stats["total_reasoning_tokens"] == 5 + THINK
    completion = sum(out[c]["usage"]["completion_tokens"] for c in "abc")
    assert stats["total_completion_tokens"] == completion
    assert Decimal(stats["total_cost"]) * 2 == Decimal(stats["total_list_cost"]) > 0
