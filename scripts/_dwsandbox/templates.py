"""An uploaded JSONL file, line by line: each line is checked as the server checks it (the
same messages) and stored as a request template; a file is accepted whole or not at all."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from _dwbatches.api import reasoning

from .config import ALLOWED_URLS, MAX_CUSTOM_ID_BYTES
from .wire import ApiError, compact, describe_json, serde_json_error

if TYPE_CHECKING:
    from .app import App


def import_templates(app: App, path: str, file_id: str) -> int:
    """Validate the uploaded JSONL line by line and store it (all or nothing)."""
    accepted = 0
    over_limit = False
    total = 0
    batch: list = []
    batch_bytes = 0
    offset = 0
    max_requests = app.cfg.max_requests_per_file

    def flush() -> None:
        nonlocal batch, batch_bytes
        if batch:
            with app.store.write() as conn:
                conn.executemany("INSERT INTO templates VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch)
            batch = []
            batch_bytes = 0

    try:
        with open(path, "rb") as fh:
            for raw in fh:
                start = offset
                offset += len(raw)
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise ApiError(
                        400,
                        f"File contains invalid UTF-8 on/near line {accepted + 1} at byte offset "
                        f"{start + err.start}. Error: invalid utf-8 sequence of {err.end - err.start} bytes "
                        f"from index {err.start}",
                    ) from None
                line = text.strip()
                if not line:
                    continue
                if over_limit:
                    total += 1
                    continue
                tpl = parse_line(app, line, accepted + 1)
                accepted += 1
                if max_requests and accepted > max_requests:
                    over_limit = True
                    total = accepted
                    batch = []
                    continue
                batch.append((file_id, accepted - 1) + tpl)
                batch_bytes += tpl[5]
                if len(batch) >= 2000 or batch_bytes >= 4 * 1024 * 1024:
                    flush()
        if over_limit:
            raise ApiError(400, f"File contains {total} requests, which exceeds the maximum of {max_requests}")
        if accepted == 0:
            raise ApiError(400, "File contains no valid request templates")
        flush()
    except BaseException:
        with app.store.write() as conn:
            conn.execute("DELETE FROM templates WHERE file_id = ?", (file_id,))
        raise
    return accepted


def parse_line(app: App, line: str, n: int) -> tuple:
    """One non-blank line: (custom_id, method, url, body text, model, body bytes) or an ApiError."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise ApiError(400, f"Invalid JSON on line {n}: {serde_json_error(err)}") from None
    col = len(line)
    if "\\u" in line:  # a \u escape of a lone surrogate: no character (a strict parser's error)
        try:
            compact(obj).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(
                400, f"Invalid JSON on line {n}: lone leading surrogate in hex escape at line 1 column {col}"
            ) from None
    if not isinstance(obj, dict):
        raise ApiError(
            400,
            f"Invalid JSON on line {n}: invalid type: {describe_json(obj)}, expected struct "
            f"OpenAIBatchRequest at line 1 column {col}",
        )
    for field in ("custom_id", "method", "url", "body"):
        if field not in obj:
            raise ApiError(400, f"Invalid JSON on line {n}: missing field `{field}` at line 1 column {col}")
    for field in ("custom_id", "method", "url"):
        if not isinstance(obj[field], str):
            raise ApiError(
                400,
                f"Invalid JSON on line {n}: invalid type: {describe_json(obj[field])}, expected a string "
                f"at line 1 column {col}",
            )
    custom_id, method, url, body = obj["custom_id"], obj["method"], obj["url"], obj["body"]
    cid_len = len(custom_id.encode("utf-8"))
    if cid_len > MAX_CUSTOM_ID_BYTES:
        raise ApiError(
            400, f"Line {n}: custom_id exceeds maximum length of {MAX_CUSTOM_ID_BYTES} characters (got {cid_len})"
        )
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in custom_id):
        raise ApiError(
            400, f"Line {n}: custom_id contains invalid characters: must be valid ASCII without control characters"
        )
    if method.upper() != "POST":
        raise ApiError(400, f"Line {n}: Unsupported HTTP method '{method}'. Only POST is currently supported.")
    if url not in ALLOWED_URLS:
        raise ApiError(400, f"Line {n}: Unsupported URL path '{url}'. Allowed paths are: {', '.join(ALLOWED_URLS)}")
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(model, str):
        raise ApiError(400, f"Line {n}: Missing 'model' field in request body")
    is_embedding = model in app.embedding_models
    if not is_embedding and model not in app.chat_models:
        raise ApiError(403, f"Line {n}: Model '{model}' has not been configured or is not available to user")
    if url == "/v1/embeddings" and not is_embedding:
        raise ApiError(
            400, f"Line {n}: Model '{model}' is a CHAT model but endpoint '{url}' requires a EMBEDDINGS model"
        )
    if url != "/v1/embeddings" and is_embedding:
        raise ApiError(
            400, f"Line {n}: Model '{model}' is a EMBEDDINGS model but endpoint '{url}' requires a CHAT model"
        )
    effort = reasoning.requested_effort(body, url)
    if effort is not None and url != "/v1/embeddings":
        problem = reasoning.effort_problem(model, effort)
        if problem is None and effort not in reasoning.EFFORTS:
            problem = f"reasoning effort '{effort}' is not one of {', '.join(reasoning.EFFORTS)}"
        if problem is not None:
            raise ApiError(400, f"Line {n}: {problem}")
    if "priority" in body:
        body = {k: v for k, v in body.items() if k != "priority"}
    body_text = compact(body)
    size = len(body_text.encode("utf-8"))
    if size > app.cfg.max_body_bytes:
        raise ApiError(
            400,
            f"Line {n}: Request body is {size} bytes, which exceeds the maximum allowed size of "
            f"{app.cfg.max_body_bytes} bytes",
        )
    return (custom_id, method, url, body_text, model, size)
