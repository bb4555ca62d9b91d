"""Answers, checked: an HTTP 200 is not an answer until its content is one.

Each successful result line is one of ``CHECKS``: ``good``; ``empty`` (no text: a reasoning
model that spent its whole budget thinking gives this, with finish_reason "length");
``truncated`` (text cut at the token limit: finish_reason "length", a Responses result
"incomplete", a Messages stop_reason "max_tokens"); ``invalid_json`` (JSON mode or a schema
was asked and the text does not parse as a JSON object, or lacks the schema's required
fields); ``filtered`` (a content filter stopped it). Pure functions over parsed bodies, no I/O.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Tuple

GOOD = "good"
EMPTY = "empty"
TRUNCATED = "truncated"
INVALID_JSON = "invalid_json"
FILTERED = "filtered"
CHECKS = (GOOD, EMPTY, TRUNCATED, INVALID_JSON, FILTERED)
BAD = CHECKS[1:]

# What each bad check means, in words (the error column of a CSV, the error of a simple line).
MEANING = {
    EMPTY: "empty answer (HTTP 200 with no text)",
    TRUNCATED: "answer cut at the token limit",
    INVALID_JSON: "the answer is not the JSON object asked for",
    FILTERED: "answer stopped by a content filter",
}

# A request's expectation: None (text), or the required top-level fields of the JSON object
# asked for (() for JSON mode or a schema without required fields).
Expect = Optional[Tuple[str, ...]]


def expectation(request: Any) -> Expect:
    """What a request line (or its body, with ``url``) asks the answer to be."""
    if not isinstance(request, dict):
        return None
    body = request.get("body")
    if not isinstance(body, dict):
        return None
    url = request.get("url")
    if url == "/v1/responses":
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
    else:
        fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        return None
    kind = fmt.get("type")
    if kind == "json_object":
        return ()
    if kind != "json_schema":
        return None
    holder = fmt.get("json_schema")
    holder = holder if isinstance(holder, dict) else fmt
    schema = holder.get("schema")
    required = schema.get("required") if isinstance(schema, dict) else None
    if isinstance(required, list):
        return tuple(r for r in required if isinstance(r, str))
    return ()


def _finish_of(body: Dict[str, Any]) -> Tuple[Any, Optional[str]]:
    """(text, how it ended: "length", "filter" or None) of a response body of any endpoint; the
    text is None when the body holds no text answer of a known shape."""
    choices = body.get("choices")
    if isinstance(choices, list):
        choice = choices[0] if choices and isinstance(choices[0], dict) else {}
        msg = choice.get("message")
        if isinstance(msg, dict):
            text = msg.get("content")
            if text is None and msg.get("tool_calls"):
                text = msg["tool_calls"]  # a tool call is an answer
        else:
            text = choice.get("text")
        finish = choice.get("finish_reason")
        return text, "length" if finish == "length" else "filter" if finish == "content_filter" else None
    if body.get("object") == "response" or "output" in body:
        details = body.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        end = None
        if body.get("status") == "incomplete":
            end = "filter" if reason == "content_filter" else "length"
        text = body.get("output_text")
        if not isinstance(text, str):
            parts = []
            for item in body.get("output") or []:
                if isinstance(item, dict) and item.get("type") == "message":
                    for part in item.get("content") or []:
                        if isinstance(part, dict) and part.get("type") in ("output_text", "text"):
                            parts.append(part.get("text") or "")
            text = "".join(parts)
        return text, end
    if body.get("type") == "message" and isinstance(body.get("content"), list):
        parts = [p.get("text") or "" for p in body["content"] if isinstance(p, dict) and p.get("type") == "text"]
        stop = body.get("stop_reason")
        return "".join(parts), "length" if stop == "max_tokens" else "filter" if stop == "refusal" else None
    return None, None


def check(body: Any, expect: Expect = None, text_good: bool = False) -> str:
    """The check of a successful result's response body (one of ``CHECKS``). Bodies that are
    not text answers (embeddings, unknown shapes) are good when they hold anything.
    ``text_good``: the body is known to pass the checks that need no request (the merge's
    index ran them), so only the JSON asked for is left to check."""
    if text_good:
        if expect is None:
            return GOOD
        text = _finish_of(body)[0] if isinstance(body, dict) else None
        return GOOD if not isinstance(text, str) or _is_object_with(text, expect) else INVALID_JSON
    if not isinstance(body, dict):
        return GOOD if body else EMPTY
    if "choices" not in body and isinstance(body.get("data"), list):
        return GOOD if body["data"] else EMPTY  # embeddings
    text, end = _finish_of(body)
    if end == "filter":
        return FILTERED
    if text is None and end is None and "choices" not in body:
        return GOOD  # a body of a shape this module does not read: not judged
    if not (text.strip() if isinstance(text, str) else text):
        return EMPTY
    if end == "length":
        return TRUNCATED
    if expect is not None and isinstance(text, str) and not _is_object_with(text, expect):
        return INVALID_JSON
    return GOOD


def _is_object_with(text: str, required: Tuple[str, ...]) -> bool:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested past any real answer
        return False
    return isinstance(value, dict) and all(name in value for name in required)


def reasoning_tokens(body: Any) -> int:
    """The reasoning tokens a response body reports (0 when it reports none)."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return 0
    details = usage.get("completion_tokens_details") or usage.get("output_tokens_details")
    value = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return int(value) if isinstance(value, int) else 0


def budget_used(body: Any) -> Optional[int]:
    """The output tokens of an answer that stopped at its token limit (the budget it used up),
    or None when it was not stopped by the limit."""
    if not isinstance(body, dict) or _finish_of(body)[1] != "length":
        return None
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return 0
    value = usage.get("completion_tokens", usage.get("output_tokens"))
    return int(value) if isinstance(value, int) else 0


def detail(body: Any, result: str) -> str:
    """A bad check in words, with what the body shows (its reasoning tokens when it thought)."""
    text = MEANING.get(result, result)
    thought = reasoning_tokens(body)
    if result in (EMPTY, TRUNCATED) and thought:
        text += f"; the model spent {thought} token(s) reasoning first"
    return text


__all__ = [
    "BAD",
    "CHECKS",
    "EMPTY",
    "FILTERED",
    "GOOD",
    "INVALID_JSON",
    "MEANING",
    "TRUNCATED",
    "budget_used",
    "check",
    "detail",
    "expectation",
    "reasoning_tokens",
]
