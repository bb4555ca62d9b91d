"""The files API: upload (streamed multipart, checked line by line), list, get, delete,
content (``?skip``/``limit``/``search``, X-Incomplete / X-Last-Line, streamed) and cost estimate."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterator

from _dwbatches.cost import pricing

from .app import live_row
from .bodies import BodyTooLarge, MalformedBody, MultipartError, MultipartReader, parse_header_params
from .config import INPUT_FILE_TTL, MULTIPART_OVERHEAD, UNSUPPORTED_WINDOW, WINDOW_SECONDS
from .store import TERMINAL_STATUSES, batch_finished, derive_status, request_counts
from .templates import import_templates
from .wire import (
    ApiError,
    ContentStream,
    Response,
    dec_str,
    error_line,
    input_line,
    json_response,
    list_response,
    output_line,
    parse_uuid,
)

if TYPE_CHECKING:
    from .app import App
    from .routing import Request


def file_row(conn: sqlite3.Connection, raw_id: str) -> Any:
    return live_row(conn, "files", "File", raw_id)


def file_obj(conn: sqlite3.Connection, row: Any) -> dict:
    size = row["bytes"]
    if row["purpose"] in ("batch_output", "batch_error"):
        state = "completed" if row["purpose"] == "batch_output" else "failed"
        size = conn.execute(
            "SELECT COALESCE(SUM(out_bytes), 0) FROM requests WHERE batch_id = ? AND state = ?",
            (row["batch_id"], state),
        ).fetchone()[0]
    obj = {
        "id": row["id"],
        "object": "file",
        "bytes": size,
        "created_at": row["created_at"],
        "filename": row["filename"],
        "purpose": row["purpose"],
    }
    if row["expires_at"] is not None:
        obj["expires_at"] = row["expires_at"]
    return obj


def upload_file(app: App, req: Request) -> Response:
    ctype, params = parse_header_params(req.headers.get("Content-Type", ""))
    boundary = params.get("boundary")
    if ctype != "multipart/form-data" or not boundary:
        raise ApiError(400, "Invalid multipart request: Invalid `boundary` for `multipart/form-data` request")
    app.stats.upload()
    max_bytes = app.cfg.max_file_bytes
    too_large = f"File exceeds the maximum allowed size of {max_bytes} bytes"
    length = req.content_length()
    if length is not None and length > max_bytes + MULTIPART_OVERHEAD:
        raise ApiError(413, too_large, close=True)
    reader = req.body_reader(limit=max_bytes + MULTIPART_OVERHEAD)
    slow = app.faults.slow_upload()
    if slow is not None:
        after, pause = slow
        paused: list[bool] = []

        def on_progress(total: int) -> None:
            if not paused and total >= after:
                paused.append(True)
                time.sleep(pause)

        reader.on_progress = on_progress
    tmp_path = os.path.join(app.cfg.data_dir, "tmp", f"upload-{uuid.uuid4().hex}.part")
    fields: dict = {}
    filename = None
    file_bytes = 0
    have_file = False
    try:
        try:
            mp = MultipartReader(reader, boundary.encode("latin-1"))
            while True:
                headers = mp.next_part()
                if headers is None:
                    break
                _, disp = parse_header_params(headers.get("content-disposition", ""))
                name = disp.get("name")
                if name == "file" and not have_file:
                    have_file = True
                    filename = disp.get("filename")
                    with open(tmp_path, "wb") as out:
                        for piece in mp.iter_data():
                            file_bytes += len(piece)
                            if file_bytes > max_bytes:
                                raise BodyTooLarge()
                            out.write(piece)
                elif name in ("purpose", "expires_after[anchor]", "expires_after[seconds]"):
                    value = bytearray()
                    for piece in mp.iter_data():
                        if len(value) < 65536:
                            value += piece
                    fields[name] = value.decode("utf-8", "replace")
                else:
                    for _ in mp.iter_data():
                        pass
            reader.drain()
        except BodyTooLarge:
            raise ApiError(413, too_large, close=True) from None
        except (MultipartError, MalformedBody) as err:
            raise ApiError(400, f"Invalid multipart request: {err}", close=True) from None
        purpose = fields.get("purpose")
        if purpose is not None and purpose.strip().lower() != "batch":
            raise ApiError(400, f"Invalid purpose '{purpose}'. Only 'batch' is supported.")
        if not have_file:
            raise ApiError(400, "No file field found in multipart upload")
        ttl = INPUT_FILE_TTL
        anchor = fields.get("expires_after[anchor]", "created_at").strip()
        seconds = fields.get("expires_after[seconds]")
        if seconds is not None and anchor == "created_at":
            with contextlib.suppress(ValueError):
                ttl = int(seconds.strip())
        file_id = str(uuid.uuid4())
        count = import_templates(app, tmp_path, file_id)
        now = int(time.time())
        with app.store.write() as conn:
            conn.execute(
                "INSERT INTO files (id, filename, purpose, bytes, created_at, expires_at, request_count) "
                "VALUES (?, ?, 'batch', ?, ?, ?, ?)",
                (file_id, filename or "file.jsonl", file_bytes, now, now + ttl, count),
            )
            row = conn.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
            obj = file_obj(conn, row)
        return json_response(obj, 201)
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp_path)


def list_files(app: App, req: Request) -> Response:
    order = req.q("order") or "desc"
    if order not in ("asc", "desc"):
        raise ApiError(400, "Order must be 'asc' or 'desc'")
    limit = req.page_limit()
    purpose = req.q("purpose")
    search = (req.q("search") or "").lower()
    after = parse_uuid(req.q("after") or "")
    sql = "SELECT * FROM files WHERE deleted = 0"
    args: list = []
    if purpose:
        sql += " AND purpose = ?"
        args.append(purpose)
    if search:
        sql += " AND instr(lower(filename), ?) > 0"
        args.append(search)
    with app.store.read() as conn:
        if after:
            cursor = conn.execute("SELECT seq FROM files WHERE id = ?", (after,)).fetchone()
            if cursor is not None:
                sql += " AND seq %s ?" % ("<" if order == "desc" else ">")
                args.append(cursor[0])
        sql += " ORDER BY seq %s LIMIT ?" % ("DESC" if order == "desc" else "ASC")
        args.append(limit + 1)
        rows = conn.execute(sql, args).fetchall()
        has_more = len(rows) > limit
        rows = rows[:limit]
        data = [file_obj(conn, r) for r in rows]
    return list_response(data, has_more)


def get_file(app: App, req: Request) -> Response:
    with app.store.read() as conn:
        row = file_row(conn, req.params["id"])
        return json_response(file_obj(conn, row))


def delete_file(app: App, req: Request) -> Response:
    with app.store.read() as conn:
        row = file_row(conn, req.params["id"])
    file_id = row["id"]
    now = time.time()
    with app.store.write() as conn:
        if row["purpose"] == "batch":
            for b in conn.execute(
                "SELECT * FROM batches WHERE input_file_id = ? AND deleted = 0", (file_id,)
            ).fetchall():
                counts = request_counts(conn, b["id"])
                if derive_status(b, counts) not in TERMINAL_STATUSES:
                    app.engine.cancel_in(conn, b["id"], now)
            conn.execute("UPDATE batches SET input_file_id = '' WHERE input_file_id = ?", (file_id,))
            conn.execute("DELETE FROM templates WHERE file_id = ?", (file_id,))
        conn.execute("UPDATE files SET deleted = 1 WHERE id = ?", (file_id,))
    app.engine.wake()
    return json_response({"id": file_id, "object": "file", "deleted": True})


def file_content(app: App, req: Request) -> Response:
    skip = max(0, req.q_int("skip") or 0)
    limit = req.content_limit()
    search = req.q("search")
    search = search.lower() if search else None
    conn: sqlite3.Connection | None  # None once a stream owns it
    conn = app.store.checkout()
    try:
        row = file_row(conn, req.params["id"])
        purpose = row["purpose"]
        finished = True
        count = None
        if purpose == "batch":
            sql = "SELECT custom_id, method, url, body FROM templates WHERE file_id = ?"
            args: list = [row["id"]]
            order = " ORDER BY line_number"
        else:
            state = "completed" if purpose == "batch_output" else "failed"
            batch = conn.execute("SELECT * FROM batches WHERE id = ?", (row["batch_id"],)).fetchone()
            counts = request_counts(conn, row["batch_id"])
            finished = batch is not None and batch_finished(batch, counts)
            count = counts[state]
            cols = "id, custom_id, status_code, response" if state == "completed" else "id, custom_id, error"
            sql = f"SELECT {cols} FROM requests WHERE batch_id = ? AND state = ?"
            args = [row["batch_id"], state]
            order = " ORDER BY done_seq"
        if search:
            sql += " AND instr(lower(custom_id), ?) > 0"
            args.append(search)
        sql += order
        headers = []
        if limit is not None:
            rows = conn.execute(sql + " LIMIT ? OFFSET ?", args + [limit + 1, skip]).fetchall()
            has_more = len(rows) > limit
            rows = rows[:limit]
            lines = [content_line(purpose, r) for r in rows]
            if purpose == "batch_output" and lines and app.faults.get("duplicate_output_line"):
                lines.insert(0, lines[0])
            body = "".join(line + "\n" for line in lines).encode("utf-8")
            headers.append(("X-Incomplete", "true" if (has_more or not finished) else "false"))
            headers.append(("X-Last-Line", str(skip + len(rows))))
            return Response(200, body, "application/x-ndjson", headers)
        if count is not None and not search:
            n = max(0, count - skip)
            headers.append(("X-Incomplete", "false" if finished else "true"))
            headers.append(("X-Last-Line", str(skip + n)))
            cursor = conn.execute(sql + " LIMIT ? OFFSET ?", args + [n, skip])
        else:
            headers.append(("X-Incomplete", "false" if finished else "true"))
            cursor = conn.execute(sql + " LIMIT -1 OFFSET ?", args + [skip])
        stream = stream_content(app, conn, cursor, purpose, app.faults.take_content_drop())
        conn = None  # owned by the stream now
        return Response(200, b"", "application/x-ndjson", headers, stream=stream)
    finally:
        if conn is not None:
            app.store.checkin(conn)


def content_line(purpose: str, r: Any) -> str:
    if purpose == "batch":
        return input_line(r["custom_id"], r["method"], r["url"], r["body"])
    if purpose == "batch_output":
        return output_line(r["id"], r["custom_id"], r["status_code"], r["response"])
    return error_line(r["id"], r["custom_id"], r["error"])


def stream_content(
    app: App, conn: sqlite3.Connection, cursor: Any, purpose: str, drop_after: int | None
) -> ContentStream:
    def release() -> None:
        with contextlib.suppress(sqlite3.Error):
            cursor.close()
        app.store.checkin(conn)

    duplicate = purpose == "batch_output" and bool(app.faults.get("duplicate_output_line"))
    return ContentStream(content_pieces(cursor, purpose, drop_after, duplicate), release)


def content_pieces(cursor: Any, purpose: str, drop_after: int | None, duplicate: bool) -> Iterator[Any]:
    sent = 0
    buf: list = []
    size = 0
    while True:
        rows = cursor.fetchmany(500)
        if not rows:
            break
        for r in rows:
            line = content_line(purpose, r) + "\n"
            if duplicate:
                buf.append(line)
                duplicate = False
            if drop_after is not None and sent >= drop_after:
                encoded = line.encode("utf-8")
                buf.append(encoded[: max(1, len(encoded) // 2)].decode("utf-8", "ignore"))
                yield "".join(buf).encode("utf-8")
                yield Response.DROP
                return
            buf.append(line)
            sent += 1
            size += len(line)
            if size >= 65536:
                yield "".join(buf).encode("utf-8")
                buf = []
                size = 0
    if buf:
        yield "".join(buf).encode("utf-8")
    if drop_after is not None:
        yield Response.DROP


def cost_estimate(app: App, req: Request) -> Response:
    window = req.q("completion_window") or "24h"
    if window not in WINDOW_SECONDS:
        raise ApiError(400, UNSUPPORTED_WINDOW)
    with app.store.read() as conn:
        row = file_row(conn, req.params["id"])
        if row["purpose"] == "batch":
            groups = conn.execute(
                "SELECT model, COUNT(*), COALESCE(SUM(body_bytes / 4), 0) FROM templates WHERE file_id = ? "
                "GROUP BY model ORDER BY model",
                (row["id"],),
            ).fetchall()
        else:
            state = "completed" if row["purpose"] == "batch_output" else "failed"
            groups = conn.execute(
                "SELECT model, COUNT(*), COALESCE(SUM(body_bytes / 4), 0) FROM requests WHERE batch_id = ? "
                "AND state = ? GROUP BY model ORDER BY model",
                (row["batch_id"], state),
            ).fetchall()
    models = []
    total_in = total_out = total_requests = 0
    total_cost = Decimal(0)
    for model, n, in_tokens in groups:
        out_tokens = in_tokens * 11 // 10
        cost = pricing.cost(model, window, in_tokens, out_tokens) or Decimal(0)  # unknown model: 0
        models.append(
            {
                "model": model,
                "request_count": n,
                "estimated_input_tokens": in_tokens,
                "estimated_output_tokens": out_tokens,
                "estimated_cost": dec_str(cost),
            }
        )
        total_in += in_tokens
        total_out += out_tokens
        total_requests += n
        total_cost += cost
    return json_response(
        {
            "file_id": row["id"],
            "total_requests": total_requests,
            "total_estimated_input_tokens": total_in,
            "total_estimated_output_tokens": total_out,
            "total_estimated_cost": dec_str(total_cost),
            "models": models,
        }
    )
