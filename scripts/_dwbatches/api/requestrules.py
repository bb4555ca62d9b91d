"""The rules one batch request must follow: what the Doubleword server checks on upload, plus
what it lets through and that would fail per request (``"stream": true``, a body the model
cannot take). Used by the validator for each line and by the builder for each request it makes.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional, Tuple

from ..core.apifacts import ALLOWED_URLS, MAX_BODY_BYTES, MAX_CUSTOM_ID_BYTES
from .reasoning import LIMIT_FIELDS

# The field each endpoint cannot do without.
REQUIRED_BODY_FIELD = {
    "/v1/chat/completions": "messages",
    "/v1/completions": "prompt",
    "/v1/embeddings": "input",
    "/v1/responses": "input",
    "/v1/messages": "messages",
}


ERRORS_KEPT = 50


KNOWN_KEYS = frozenset({"custom_id", "method", "url", "body"})


JSON_TYPE_NAMES = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (object, array, string, number, boolean, null)."""
    return JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (the server's parser rejects NaN and Infinity)")


# The server parses lines with a strict JSON parser; Python's default accepts NaN and Infinity,
# and a \u escape of a lone UTF-16 surrogate (which the server's parser refuses: it is no
# character, and has no UTF-8).
DECODER = json.JSONDecoder(parse_constant=_reject_constant)


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]").search
_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def surrogate_problem(text: str, obj: Any) -> Optional[str]:
    """What is wrong with ``obj`` (parsed from ``text``) when one of its strings holds a lone
    surrogate, or None. Only a text with the escape of a surrogate is looked at further."""
    if "\\u" not in text or not _SURROGATE_ESCAPE(text):
        return None
    try:
        _compact(obj).encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"\\u{ord(exc.object[exc.start]):04x} is a lone surrogate, not a character (a character past U+FFFF "
            "is written as a pair of them, or as itself in UTF-8); the server's parser rejects it"
        )
    return None


def loads_strict(text: str) -> Any:
    """Parse one line as the server does (see above): ValueError when it would refuse it."""
    obj = DECODER.decode(text)
    problem = surrogate_problem(text, obj)
    if problem:
        raise ValueError(problem)
    return obj


def check_custom_id(cid: Any) -> Optional[str]:
    if type(cid) is str and 0 < len(cid) <= MAX_CUSTOM_ID_BYTES and cid.isascii() and cid.isprintable():
        return None  # the usual id, at once (ASCII without control characters)
    if not isinstance(cid, str):
        return f"custom_id must be a string, got {json_type(cid)}"
    if not cid:
        return "custom_id is empty"
    n = len(cid.encode("utf-8")) if not cid.isascii() else len(cid)
    if n > MAX_CUSTOM_ID_BYTES:
        return f"custom_id is {n} bytes; the server allows at most {MAX_CUSTOM_ID_BYTES}"
    for ch in cid:
        o = ord(ch)
        if (o < 0x20 and ch != "\t") or o == 0x7F:
            return f"custom_id contains the control character {ch!r}; the server rejects control characters"
    return None


# No model served takes a longer answer than this (context windows are at most a million
# tokens): a larger limit is a typo, and would make the cost estimate's "high" meaningless.
MAX_OUTPUT_LIMIT = 1 << 20


def limit_problem(body: Dict[str, Any]) -> Optional[str]:
    """What is wrong with a body's answer limit (max_tokens, max_completion_tokens or
    max_output_tokens), or None: each given must be a whole number from 1 to MAX_OUTPUT_LIMIT
    (the server would refuse "500", -5 or 1e30, or run it without the bound the estimate assumed)."""
    for key in LIMIT_FIELDS:
        value = body.get(key)
        if value is None:  # not given, or null: no limit
            continue
        if type(value) is not int:
            return f"body.{key} must be a whole number of tokens, got {json_type(value)} {json.dumps(value)[:40]}"
        if not 1 <= value <= MAX_OUTPUT_LIMIT:
            return f"body.{key} is {value}; it must be from 1 to {MAX_OUTPUT_LIMIT} tokens"
    return None


def check_request(obj: Any, max_body_bytes: int = MAX_BODY_BYTES, raw_len: int = 0) -> Tuple[Optional[str], List[str]]:
    """Check one parsed line. Returns (first error or None, notes for warnings)."""
    if not isinstance(obj, dict):
        return f"each line must be a JSON object, got {json_type(obj)}", []
    missing = [k for k in ("custom_id", "method", "url", "body") if k not in obj]
    if missing:
        return f"missing field(s) {', '.join(missing)}; each line needs custom_id, method, url and body", []
    err = check_custom_id(obj["custom_id"])
    if err:
        return err, []
    method = obj["method"]
    if not isinstance(method, str) or method.upper() != "POST":
        return f"method is {method!r}; only POST is supported", []
    url = obj["url"]
    if url not in ALLOWED_URLS:
        return f"url {url!r} is not allowed; use one of {', '.join(ALLOWED_URLS)}", []
    body = obj["body"]
    if not isinstance(body, dict):
        return f"body must be a JSON object, got {json_type(body)}", []
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        return "body.model is missing or not a string; every request must name its model", []
    if body.get("stream") is True:
        return '"stream": true is not supported in batches; remove it from body', []
    need = REQUIRED_BODY_FIELD[url]
    if need not in body:
        return f"body.{need} is missing; {url} requests need it", []
    if need == "messages" and (not isinstance(body[need], list) or not body[need]):
        return "body.messages must be a non-empty list", []
    if not model.isprintable():
        return "body.model contains control characters (a line break, a tab, ...); no model id has them", []
    problem = limit_problem(body)
    if problem:
        return problem, []
    if raw_len > max_body_bytes:
        size = len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        if size > max_body_bytes:
            return f"body is {size} bytes; the server allows at most {max_body_bytes} per request", []
    notes = []
    if len(obj) > 4:
        notes.append(
            "extra top-level keys (" + ", ".join(sorted(set(obj) - KNOWN_KEYS)) + ") are ignored by the server"
        )
    return None, notes


def model_kind_warning(model: str, url: str) -> Optional[str]:
    """Models are typed on the server (an embeddings model cannot serve chat); the API does not
    say which is which, so go by the name, as list_models.py does."""
    embed = "embed" in model.lower()
    if url == "/v1/embeddings" and not embed:
        return f"model {model!r} does not look like an embeddings model, but the url is /v1/embeddings"
    if url != "/v1/embeddings" and embed:
        return (
            f"model {model!r} looks like an embeddings model, but the url is {url}; the server refuses "
            "that on upload (use --endpoint /v1/embeddings)"
        )
    return None
