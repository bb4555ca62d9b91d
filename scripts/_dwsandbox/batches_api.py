"""The batches API: create, get, list (filters, search, active first, analytics), cancel,
delete, retry (all or some requests), per-request results and analytics."""

from __future__ import annotations

import copy
import json
import sqlite3
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Dict, Tuple

from _dwbatches.cost import pricing

from .app import live_row
from .config import (
    ALLOWED_URLS,
    BATCH_STATUS_FILTERS,
    RESERVED_METADATA_KEYS,
    RESULT_STATUS_FILTERS,
    SANDBOX_USER_EMAIL,
    SANDBOX_USER_ID,
    UNSUPPORTED_WINDOW,
    WINDOW_SECONDS,
)
from .store import TERMINAL_STATUSES, derive_status, ended_stamp, request_counts
from .wire import ApiError, Response, compact, dec_str, describe_json, json_response, list_response, parse_uuid

if TYPE_CHECKING:
    from .app import App
    from .routing import Request

DESERIALIZE = "Failed to deserialize the JSON body into the target type: "


def batch_row(conn: sqlite3.Connection, raw_id: str) -> Any:
    return live_row(conn, "batches", "Batch", raw_id)


def batch_obj(conn: sqlite3.Connection, row: Any, counts: dict | None = None) -> dict:
    if counts is None:
        counts = request_counts(conn, row["id"])
    status = derive_status(row, counts)
    obj: dict = {
        "id": row["id"],
        "object": "batch",
        "endpoint": row["endpoint"],
        "input_file_id": row["input_file_id"] or "",
        "completion_window": row["completion_window"],
        "status": status,
        "output_file_id": row["output_file_id"],
        "error_file_id": row["error_file_id"],
        "created_at": row["created_at"],
    }
    if row["in_progress_at"] is not None and status != "validating":
        obj["in_progress_at"] = row["in_progress_at"]
    obj["expires_at"] = row["expires_at"]
    if row["finalizing_at"] is not None and status in ("finalizing", "completed"):
        obj["finalizing_at"] = row["finalizing_at"]
    for key in ("completed_at", "failed_at"):
        if row[key] is not None:
            obj[key] = row[key]
    if time.time() > row["expires_at"]:
        obj["expired_at"] = row["expires_at"]
    for key in ("cancelling_at", "cancelled_at"):
        if row[key] is not None:
            obj[key] = row[key]
    obj["request_counts"] = {"total": row["total"], "completed": counts["completed"], "failed": counts["failed"]}
    metadata = json.loads(row["metadata"] or "{}")
    metadata["created_by_email"] = SANDBOX_USER_EMAIL
    metadata["context_name"] = SANDBOX_USER_EMAIL
    metadata["context_type"] = "personal"
    obj["metadata"] = metadata
    return obj


def batch_obj_by_id(conn: sqlite3.Connection, batch_id: str) -> dict:
    return batch_obj(conn, conn.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone())


def create_batch(app: App, req: Request) -> Response:
    data = req.json_body()
    if not isinstance(data, dict):
        raise ApiError(422, DESERIALIZE + f"invalid type: {describe_json(data)}, expected struct CreateBatchRequest")
    for field in ("input_file_id", "endpoint", "completion_window"):
        if field not in data:
            raise ApiError(422, DESERIALIZE + f"missing field `{field}`")
        if not isinstance(data[field], str):
            raise ApiError(422, DESERIALIZE + f"{field}: invalid type: {describe_json(data[field])}, expected a string")
    metadata = data.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ApiError(422, DESERIALIZE + f"metadata: invalid type: {describe_json(metadata)}, expected a map")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise ApiError(
                422, DESERIALIZE + f"metadata.{key}: invalid type: {describe_json(value)}, expected a string"
            )
    file_id = parse_uuid(data["input_file_id"])
    if file_id is None:
        raise ApiError(400, "Invalid input_file_id format")
    endpoint = data["endpoint"]
    if endpoint not in ALLOWED_URLS:
        raise ApiError(400, "Unsupported endpoint '{}'. Supported: {}".format(endpoint, ", ".join(ALLOWED_URLS)))
    window = data["completion_window"]
    if window not in WINDOW_SECONDS:
        raise ApiError(400, UNSUPPORTED_WINDOW)
    clean_meta = {k: v for k, v in metadata.items() if k not in RESERVED_METADATA_KEYS}
    clean_meta["request_source"] = "api"
    clean_meta["created_by"] = SANDBOX_USER_ID
    hold = app.faults.take_create_hold()
    if hold is not None and not hold[1]:
        time.sleep(hold[0])  # the server is still working on the create: no batch to be found yet
    batch_id = str(uuid.uuid4())
    out_id, err_id = str(uuid.uuid4()), str(uuid.uuid4())
    now = time.time()
    created = int(now)
    with app.store.write() as conn:
        frow = conn.execute("SELECT * FROM files WHERE id = ? AND deleted = 0", (file_id,)).fetchone()
        if frow is None:
            raise ApiError(404, "File with ID {} not found".format(data["input_file_id"]))
        if frow["purpose"] != "batch":
            raise ApiError(
                400,
                "File {} has purpose '{}'; only 'batch' files can be used as batch input".format(
                    file_id, frow["purpose"]
                ),
            )
        for (model,) in conn.execute("SELECT DISTINCT model FROM templates WHERE file_id = ?", (file_id,)):
            if not app.has_model(model):
                raise ApiError(400, f"Model '{model}' is no longer available")
        conn.execute(
            "INSERT INTO batches (id, input_file_id, input_filename, endpoint, completion_window, metadata, "
            "output_file_id, error_file_id, total, created_at, created_ts, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                batch_id,
                file_id,
                frow["filename"],
                endpoint,
                window,
                compact(clean_meta),
                out_id,
                err_id,
                frow["request_count"],
                created,
                now,
                created + app.window_seconds(window),
            ),
        )
        for fid, purpose, suffix in ((out_id, "batch_output", "output"), (err_id, "batch_error", "error")):
            conn.execute(
                "INSERT INTO files (id, filename, purpose, bytes, created_at, batch_id) VALUES (?, ?, ?, 0, ?, ?)",
                (fid, f"batch-{batch_id}-{suffix}.jsonl", purpose, created, batch_id),
            )
        obj = batch_obj_by_id(conn, batch_id)
    app.engine.wake()
    if hold is not None and hold[1]:
        time.sleep(hold[0])  # the batch is stored and listed; its reply is late
    return json_response(obj, 201)


def get_batch(app: App, req: Request) -> Response:
    with app.store.read() as conn:
        row = batch_row(conn, req.params["id"])
        return json_response(batch_obj(conn, row))


def list_batches(app: App, req: Request) -> Response:
    limit = req.page_limit()
    status_filter = req.q("status")
    if status_filter and status_filter not in BATCH_STATUS_FILTERS:
        raise ApiError(
            400, "Invalid status filter '{}'. Allowed values: {}".format(status_filter, ", ".join(BATCH_STATUS_FILTERS))
        )
    search = (req.q("search") or "").lower()
    windows = [w.strip() for w in (req.q("completion_window") or "").split(",") if w.strip()]
    created_after = parse_time(req.q("created_after"), "created_after")
    created_before = parse_time(req.q("created_before"), "created_before")
    active_first = (req.q("active_first") or "").lower() == "true"
    include = {x.strip() for x in (req.q("include") or "").split(",") if x.strip()}
    after = parse_uuid(req.q("after") or "")
    now = time.time()
    with app.store.read() as conn:
        rows = conn.execute("SELECT * FROM batches WHERE deleted = 0 ORDER BY seq DESC").fetchall()
        entries = []
        for row in rows:
            if windows and row["completion_window"] not in windows:
                continue
            if created_after is not None and row["created_at"] < created_after:
                continue
            if created_before is not None and row["created_at"] > created_before:
                continue
            if search:
                meta = json.loads(row["metadata"] or "{}")
                haystack = [row["id"], row["input_filename"] or ""] + [str(v) for v in meta.values()]
                if not any(search in h.lower() for h in haystack):
                    continue
            counts = request_counts(conn, row["id"])
            status = derive_status(row, counts)
            if status_filter:
                if status_filter == "in_progress" and status not in ("validating", "in_progress", "finalizing"):
                    continue
                if status_filter in TERMINAL_STATUSES and status != status_filter:
                    continue
                if status_filter == "expired":
                    end = row["completed_at"] or row["failed_at"] or row["cancelled_at"] or now
                    if not end > row["expires_at"]:
                        continue
            entries.append((row, counts, status))
        if active_first:
            entries.sort(key=lambda e: e[2] in TERMINAL_STATUSES)
        if after:
            ids = [e[0]["id"] for e in entries]
            if after in ids:
                entries = entries[ids.index(after) + 1 :]
            else:
                cursor = conn.execute("SELECT seq FROM batches WHERE id = ?", (after,)).fetchone()
                if cursor is not None:
                    entries = [e for e in entries if e[0]["seq"] < cursor[0]]
        has_more = len(entries) > limit
        entries = entries[:limit]
        data = []
        for row, counts, _ in entries:
            obj = batch_obj(conn, row, counts)
            if "analytics" in include:
                obj["analytics"] = analytics(conn, row, app.faults.billed_price_factor())
            data.append(obj)
    return list_response(data, has_more)


def cancel_batch(app: App, req: Request) -> Response:
    with app.store.read() as conn:
        row = batch_row(conn, req.params["id"])
    with app.store.write() as conn:
        late = app.engine.cancel_in(conn, row["id"], time.time())
        obj = batch_obj_by_id(conn, row["id"])
    if late is not None:
        setting = app.faults.get("late_line_after_cancel")
        delay = setting if not isinstance(setting, bool) else max(0.05, app.cfg.latency)
        app.engine.complete_late(late, float(delay))
    app.engine.wake()
    return json_response(obj)


def delete_batch(app: App, req: Request) -> Response:
    with app.store.read() as conn:
        row = batch_row(conn, req.params["id"])
    with app.store.write() as conn:
        row = conn.execute("SELECT * FROM batches WHERE id = ?", (row["id"],)).fetchone()
        if derive_status(row, request_counts(conn, row["id"])) not in TERMINAL_STATUSES:
            app.engine.cancel_in(conn, row["id"], time.time())
        conn.execute("UPDATE batches SET deleted = 1 WHERE id = ?", (row["id"],))
    app.engine.wake()
    return Response(204)


def retry_batch(app: App, req: Request) -> Response:
    with app.store.read() as conn:
        row = batch_row(conn, req.params["id"])
    return requeue(app, row["id"], None, "No failed or canceled requests to retry")


def retry_requests(app: App, req: Request) -> Response:
    with app.store.read() as conn:
        row = batch_row(conn, req.params["id"])
    data = req.json_body()
    if not isinstance(data, dict) or "request_ids" not in data:
        raise ApiError(422, DESERIALIZE + "missing field `request_ids`")
    ids = data["request_ids"]
    if not isinstance(ids, list):
        raise ApiError(422, DESERIALIZE + f"request_ids: invalid type: {describe_json(ids)}, expected a sequence")
    valid = [u for u in (parse_uuid(x) if isinstance(x, str) else None for x in ids) if u]
    if not valid:
        raise ApiError(400, "No valid request IDs provided")
    return requeue(app, row["id"], valid, "No failed or canceled requests found for the given IDs")


def requeue(app: App, batch_id: str, request_ids: list | None, nothing: str) -> Response:
    """A retry: the failed or cancelled requests (all, or those named) back to pending and the
    batch in progress again; 400 ``nothing`` when there is none."""
    with app.store.write() as conn:
        if app.engine.requeue_in(conn, batch_id, request_ids) == 0:
            raise ApiError(400, nothing)
        app.engine.reopen_in(conn, batch_id)
        obj = batch_obj_by_id(conn, batch_id)
    app.engine.wake()
    return json_response(obj)


def batch_results(app: App, req: Request) -> Response:
    skip = max(0, req.q_int("skip") or 0)
    limit = req.content_limit()
    search = req.q("search")
    status = req.q("status")
    if status and status not in RESULT_STATUS_FILTERS:
        raise ApiError(
            400, "Invalid status filter '{}'. Allowed values: {}".format(status, ", ".join(RESULT_STATUS_FILTERS))
        )
    with app.store.read() as conn:
        conn.execute("BEGIN")
        row = batch_row(conn, req.params["id"])
        counts = request_counts(conn, row["id"])
        open_rows = counts["pending"] + counts["in_progress"] > 0 or not row["populated"]
        sql = "SELECT id, custom_id, model, body, response, error, state FROM requests WHERE batch_id = ?"
        args: list = [row["id"]]
        if status:
            sql += " AND state = ?"
            args.append(status)
        if search:
            sql += " AND instr(lower(custom_id), ?) > 0"
            args.append(search.lower())
        sql += " ORDER BY line_number, seq LIMIT ? OFFSET ?"
        headers = []
        if limit is not None:
            rows = conn.execute(sql, args + [limit + 1, skip]).fetchall()
            has_more = len(rows) > limit
            rows = rows[:limit]
            headers.append(("X-Incomplete", "true" if (has_more or open_rows) else "false"))
            headers.append(("X-Last-Line", str(skip + len(rows))))
        else:
            rows = conn.execute(sql, args + [-1, skip]).fetchall()
            headers.append(("X-Incomplete", "true" if open_rows else "false"))
            if not search:
                headers.append(("X-Last-Line", str(skip + len(rows))))
    lines = []
    for r in rows:
        item = {
            "id": r["id"],
            "custom_id": r["custom_id"],
            "model": r["model"],
            "input_body": json.loads(r["body"]),
            "response_body": json.loads(r["response"]) if r["response"] and r["state"] == "completed" else None,
            "error": r["error"] if r["state"] == "failed" else None,
            "status": r["state"],
        }
        lines.append(compact(item) + "\n")
    return Response(200, "".join(lines).encode("utf-8"), "application/x-ndjson", headers)


# The analytics of batches whose every request has ended, with the stamp that proves them
# current (store.ended_stamp): summing a finished batch's rows again at each listing with
# analytics would make listing a ten-million-request job take seconds.
_ENDED_ANALYTICS: Dict[str, Tuple[Any, float, dict]] = {}


def analytics(conn: sqlite3.Connection, row: Any, factor: float = 1.0) -> dict:
    stamp = ended_stamp(conn, row["id"])
    known = _ENDED_ANALYTICS.get(row["id"])
    if stamp is not None and known is not None and known[0] == stamp and known[1] == factor:
        return copy.deepcopy(known[2])
    out = _analytics(conn, row, factor)
    if stamp is not None:
        _ENDED_ANALYTICS[row["id"]] = (stamp, factor, copy.deepcopy(out))
    return out


def _analytics(conn: sqlite3.Connection, row: Any, factor: float) -> dict:
    window = row["completion_window"]
    groups = conn.execute(
        "SELECT model, COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
        "COALESCE(SUM(reasoning_tokens), 0), AVG(duration_ms) FROM requests "
        "WHERE batch_id = ? AND state = 'completed' GROUP BY model",
        (row["id"],),
    ).fetchall()
    failed = conn.execute(
        "SELECT COUNT(*) FROM requests WHERE batch_id = ? AND state = 'failed'", (row["id"],)
    ).fetchone()[0]
    total_requests = failed
    prompt = completion = thinking = 0
    cost = Decimal(0)
    durations = []
    for model, n, pt, ct, rt, avg in groups:
        total_requests += n
        prompt += pt
        completion += ct
        thinking += rt
        if avg is not None:
            durations.append((avg, n))
        cost += pricing.cost(model, window, pt, ct) or Decimal(0)
    out: dict = {
        "total_requests": total_requests,
        "total_prompt_tokens": prompt,
        "total_completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if thinking:
        out["total_reasoning_tokens"] = thinking
    if durations:
        n_total = sum(n for _, n in durations)
        out["avg_duration_ms"] = round(sum(a * n for a, n in durations) / n_total, 3)
    if total_requests:
        # billed: the list cost (the price table) times the sandbox's billed_price_factor fault
        out["total_cost"] = dec_str(cost * Decimal(repr(factor)))
        out["total_list_cost"] = dec_str(cost)
    return out


def batch_analytics(app: App, req: Request) -> Response:
    with app.store.read() as conn:
        row = batch_row(conn, req.params["id"])
        return json_response(analytics(conn, row, app.faults.billed_price_factor()))


def parse_time(value: str | None, name: str) -> int | None:
    if not value:
        return None
    text = value.strip()
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, f"Failed to deserialize query string: {name}: invalid datetime") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp())
