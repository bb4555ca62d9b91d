#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = []
# ///
"""Local sandbox of the Doubleword Batch API (OpenAI-Batch compatible).

A standard-library-only HTTP server that behaves like the Doubleword
files and batches API: same routes, status codes, plain-text error bodies, bare UUID
ids, list pagination, ``GET /files/{id}/content`` with ``skip``/``limit``/``search`` and
the ``X-Incomplete`` / ``X-Last-Line`` headers, live partial results, cancel, retry and
delete semantics.  Requests are answered by a deterministic built-in model (or
forwarded to an OpenAI-compatible ``--upstream``), so batch clients can be developed
and tested offline, fast and without spending credits.

State lives in SQLite (WAL) inside ``--data-dir``; a restarted sandbox on the same
directory carries on where it stopped.  Failures can be injected with a JSON fault
document (``--faults`` or ``PUT /_sandbox/faults``).

Run ``python3 scripts/sandbox_server.py --help`` for flags, endpoints and examples.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import math
import os
import queue
import re
import signal
import socket
import sqlite3
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from http.client import responses as http_reasons
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

# Standard library only as well: platform differences (Windows, macOS, Linux) live there.
# The import works from any working directory: Python puts this script's directory on sys.path.
from _dwbatches import compat, pricing, urls

__version__ = "1.0.0"

# --------------------------------------------------------------------------------------
# Product constants
# --------------------------------------------------------------------------------------

DEFAULT_CHAT_MODELS = (
    "Qwen/Qwen3.5-35B-A3B-FP8",
    "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8",
    "Qwen/Qwen3.5-9B",
    "openai/gpt-oss-20b",
)
DEFAULT_EMBEDDING_MODELS = ("Qwen/Qwen3-Embedding-8B",)
ALLOWED_URL_PATHS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
)
COMPLETION_WINDOWS = {"24h": 86400, "1h": 3600}
RESERVED_METADATA_KEYS = frozenset(
    {"created_by_email", "context_name", "context_type", "request_source", "created_by", "dw_user_agent"}
)
BATCH_STATUS_FILTERS = ("in_progress", "completed", "failed", "cancelled", "expired")
RESULT_STATUS_FILTERS = ("completed", "failed", "pending", "in_progress")
PAGE_DEFAULT = 20
PAGE_MAX = 101
MULTIPART_OVERHEAD = 10 * 1024
INPUT_FILE_TTL = 30 * 86400
MAX_JSON_BODY = 16 * 1024 * 1024
SANDBOX_USER_ID = "5a9d1b7e-0c3f-4f6a-9a51-5b0d0a11ce00"
SANDBOX_USER_EMAIL = "sandbox-user@localhost"
MODEL_CREATED = 1735689600

# Per 1M tokens (input, output) by window: the client's dated price table, so that the sandbox's
# estimates and the client's figures agree.
PRICES = pricing.PRICES

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def log(msg: str) -> None:
    sys.stderr.write(f"[sandbox] {msg}\n")
    sys.stderr.flush()


def parse_uuid(value: str) -> str | None:
    """Return the canonical lowercase UUID string, or None when ``value`` is not a UUID."""
    value = (value or "").strip()
    if value.startswith("{") and value.endswith("}"):
        value = value[1:-1]
    if value.lower().startswith("urn:uuid:"):
        value = value[9:]
    if not UUID_RE.match(value):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def dec_str(value: Decimal) -> str:
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def describe_json(value: Any) -> str:
    """Describe a JSON value the way serde does in type errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean `{}`".format("true" if value else "false")
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f"string {json.dumps(value)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


def serde_json_error(err: json.JSONDecodeError) -> str:
    msg = err.msg
    mapping = (
        ("Expecting value", "expected value"),
        ("Extra data", "trailing characters"),
        ("Unterminated string", "EOF while parsing a string"),
        ("Expecting ',' delimiter", "expected `,` or `}`"),
        ("Expecting property name", "key must be a string"),
        ("Expecting ':' delimiter", "expected `:`"),
        ("Invalid control character", "control character (\\u0000-\\u001F) found while parsing a string"),
        ("Invalid \\escape", "invalid escape"),
    )
    for prefix, text in mapping:
        if msg.startswith(prefix):
            msg = text
            break
    return f"{msg} at line {err.lineno} column {err.colno}"


def is_retriable_status(status: int) -> bool:
    return status >= 500 or status in (429, 408, 404, 499)


# --------------------------------------------------------------------------------------
# Errors and responses
# --------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered to the client.

    ``style`` is ``text`` (plain-text body, the default for the files and batches API),
    ``busy`` (the JSON body used for 429 and 503) or ``openai`` (the OpenAI error
    envelope used by /v1/models).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        style: str = "text",
        retry_after: float | None = None,
        retry_after_header: bool = True,
        code: str | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.close = close
        self.status = status
        self.message = message
        self.style = style
        self.retry_after = retry_after
        self.retry_after_header = retry_after_header
        self.code = code

    def response(self) -> Response:
        resp = self._build()
        resp.close = self.close
        return resp

    def _build(self) -> Response:
        if self.style == "busy" or (self.style == "text" and self.status in (429, 503)):
            kind = "too_many_requests" if self.status == 429 else "service_unavailable"
            body_after = self.retry_after if self.retry_after is not None else 30
            header_after = (
                self.retry_after if self.retry_after is not None else (60 if self.status == 429 else 30)
            )
            payload = {"error": kind, "message": self.message, "retry_after_seconds": _num(body_after)}
            resp = json_response(payload, self.status)
            if self.retry_after_header:
                resp.headers.append(("Retry-After", str(int(math.ceil(header_after)))))
            return resp
        if self.style == "openai":
            etype = "invalid_request_error"
            if self.status == 401:
                etype = "authentication_error"
            elif self.status == 403:
                etype = "permission_error"
            elif self.status >= 500:
                etype = "server_error"
            payload = {"error": {"message": self.message, "type": etype, "param": None, "code": self.code}}
            return json_response(payload, self.status)
        return text_response(self.status, self.message)


def _num(value: float) -> Any:
    return int(value) if float(value).is_integer() else value


class Response:
    """A reply: a buffered ``body`` or a ``stream`` of byte pieces (chunked encoding)."""

    DROP = object()  # yielded by a stream to abort the connection mid-body

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        content_type: str | None = None,
        headers: list | None = None,
        stream: Iterator[Any] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = list(headers or [])
        if content_type:
            self.headers.insert(0, ("Content-Type", content_type))
        self.stream = stream
        self.drop = False
        self.close = False

    def discard(self) -> None:
        if self.stream is not None and hasattr(self.stream, "close"):
            with contextlib.suppress(Exception):
                self.stream.close()
        self.stream = None


class ContentStream:
    """A streamed body holding a database connection until it is closed."""

    def __init__(self, pieces: Iterator[Any], release: Callable[[], None]) -> None:
        self._pieces = pieces
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[Any]:
        return iter(self._pieces)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._pieces.close()  # type: ignore[attr-defined]
        release, self._release = self._release, None
        if release is not None:
            release()


def json_response(obj: Any, status: int = 200, headers: list | None = None) -> Response:
    return Response(status, compact(obj).encode("utf-8"), "application/json", headers)


def text_response(status: int, message: str) -> Response:
    return Response(status, message.encode("utf-8"), "text/plain; charset=utf-8")


# --------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------


class Faults:
    """The fault document and its consumable counters (thread safe)."""

    FIELDS = (
        "fail_rate",
        "fail_custom_ids",
        "fail_status",
        "http",
        "drop_content_after_lines",
        "drop_content_times",
        "duplicate_output_line",
        "late_line_after_cancel",
        "extra_latency",
        "extra_latency_paths",
        "slow_upload_read",
    )
    RULE_FIELDS = (
        "method",
        "path",
        "status",
        "times",
        "retry_after",
        "retry_after_header",
        "after_body",
        "drop",
        "message",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._doc: dict = {}
        self._rules: list = []
        self._drop_left = 0
        self._fail_ids: frozenset = frozenset()

    @staticmethod
    def validate(doc: Any) -> dict:
        if doc is None:
            return {}
        if not isinstance(doc, dict):
            raise ValueError("The fault document must be a JSON object")
        out = {}
        for key, value in doc.items():
            if key.startswith("_"):
                continue
            if key not in Faults.FIELDS:
                raise ValueError(
                    "Unknown fault field '{}'. Known fields: {}".format(key, ", ".join(Faults.FIELDS))
                )
            out[key] = value

        def number(name: str, lo: float, hi: float | None = None) -> None:
            if name in out:
                v = out[name]
                if (
                    isinstance(v, bool)
                    or not isinstance(v, (int, float))
                    or v < lo
                    or (hi is not None and v > hi)
                ):
                    rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
                    raise ValueError(f"'{name}' must be a number in {rng}")

        def integer(name: str, lo: int, src: dict | None = None) -> None:
            src = out if src is None else src
            if name in src:
                v = src[name]
                if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                    raise ValueError(f"'{name}' must be an integer >= {lo}")

        def boolean(name: str, src: dict | None = None) -> None:
            src = out if src is None else src
            if name in src and not isinstance(src[name], bool):
                raise ValueError(f"'{name}' must be true or false")

        def str_list(name: str) -> None:
            if name in out:
                v = out[name]
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    raise ValueError(f"'{name}' must be a list of strings")

        number("fail_rate", 0, 1)
        str_list("fail_custom_ids")
        integer("fail_status", 100)
        integer("drop_content_after_lines", 0)
        integer("drop_content_times", 1)
        boolean("duplicate_output_line")
        boolean("late_line_after_cancel")
        number("extra_latency", 0)
        str_list("extra_latency_paths")
        if "slow_upload_read" in out:
            slow = out["slow_upload_read"]
            if not isinstance(slow, dict):
                raise ValueError("'slow_upload_read' must be an object {after_bytes, pause}")
            integer("after_bytes", 0, slow)
            p = slow.get("pause", 0)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or p < 0:
                raise ValueError("'slow_upload_read.pause' must be a number >= 0")
        if "http" in out:
            rules = out["http"]
            if not isinstance(rules, list):
                raise ValueError("'http' must be a list of rules")
            for rule in rules:
                if not isinstance(rule, dict):
                    raise ValueError("each 'http' rule must be an object")
                for key in rule:
                    if key not in Faults.RULE_FIELDS:
                        raise ValueError(
                            "Unknown http rule field '{}'. Known fields: {}".format(
                                key, ", ".join(Faults.RULE_FIELDS)
                            )
                        )
                if not rule.get("drop"):
                    st = rule.get("status")
                    if isinstance(st, bool) or not isinstance(st, int) or not 100 <= st <= 599:
                        raise ValueError("each 'http' rule needs an integer 'status' (or \"drop\": true)")
                integer("times", 1, rule)
                boolean("after_body", rule)
                boolean("drop", rule)
                boolean("retry_after_header", rule)
                ra = rule.get("retry_after")
                if ra is not None and (isinstance(ra, bool) or not isinstance(ra, (int, float)) or ra < 0):
                    raise ValueError("'retry_after' must be a number >= 0")
                for key in ("method", "path", "message"):
                    if key in rule and not isinstance(rule[key], str):
                        raise ValueError(f"'{key}' must be a string")
        return out

    def replace(self, doc: Any) -> None:
        clean = self.validate(doc)
        with self._lock:
            self._doc = clean
            self._rules = [dict(r, _left=r.get("times")) for r in clean.get("http", [])]
            if "drop_content_after_lines" in clean:
                self._drop_left = int(clean.get("drop_content_times", 1))
            else:
                self._drop_left = 0
            self._fail_ids = frozenset(clean.get("fail_custom_ids", []))

    def document(self) -> dict:
        with self._lock:
            doc = json.loads(json.dumps(self._doc))
            doc["_remaining"] = {
                "http_times": [r["_left"] for r in self._rules],
                "drop_content_times": self._drop_left,
            }
            return doc

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._doc.get(key, default)

    def take_http(self, method: str, paths: tuple) -> dict | None:
        with self._lock:
            for rule in self._rules:
                if rule["_left"] is not None and rule["_left"] <= 0:
                    continue
                want = rule.get("method")
                if want and want != "*" and want.upper() != method:
                    continue
                prefix = rule.get("path", "*")
                if prefix != "*" and not any(p.startswith(prefix) for p in paths):
                    continue
                if rule["_left"] is not None:
                    rule["_left"] -= 1
                return dict(rule)
        return None

    def request_failure(self, request_id: str, custom_id: str) -> int | None:
        """The status a request must fail with, or None."""
        with self._lock:
            doc = self._doc
            if not doc:
                return None
            status = int(doc.get("fail_status", 500))
            if custom_id in self._fail_ids:
                return status
            rate = float(doc.get("fail_rate", 0) or 0)
        if rate <= 0:
            return None
        draw = int(hashlib.sha256(request_id.encode()).hexdigest()[:16], 16) / float(1 << 64)
        return status if draw < rate else None

    def take_content_drop(self) -> int | None:
        with self._lock:
            if self._drop_left <= 0 or "drop_content_after_lines" not in self._doc:
                return None
            self._drop_left -= 1
            return int(self._doc["drop_content_after_lines"])

    def extra_latency(self, path: str) -> float:
        with self._lock:
            delay = float(self._doc.get("extra_latency", 0) or 0)
            prefixes = self._doc.get("extra_latency_paths")
        if delay <= 0:
            return 0.0
        if prefixes and not any(path.startswith(p) for p in prefixes):
            return 0.0
        return delay

    def slow_upload(self) -> tuple | None:
        with self._lock:
            slow = self._doc.get("slow_upload_read")
        if not slow:
            return None
        return int(slow.get("after_bytes", 0)), float(slow.get("pause", 0))


# --------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    batch_id TEXT,
    request_count INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS templates (
    file_id TEXT NOT NULL,
    line_number INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    method TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    model TEXT NOT NULL,
    body_bytes INTEGER NOT NULL,
    PRIMARY KEY (file_id, line_number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    input_file_id TEXT NOT NULL DEFAULT '',
    input_filename TEXT,
    endpoint TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    output_file_id TEXT NOT NULL,
    error_file_id TEXT NOT NULL,
    total INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    created_ts REAL NOT NULL,
    expires_at INTEGER NOT NULL,
    populated INTEGER NOT NULL DEFAULT 0,
    in_progress_at INTEGER,
    finalizing_at INTEGER,
    finalizing_ts REAL,
    completed_at INTEGER,
    failed_at INTEGER,
    cancelling_at INTEGER,
    cancelled_at INTEGER,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    line_number INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    method TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    model TEXT NOT NULL,
    body_bytes INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    status_code INTEGER,
    response TEXT,
    error TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    duration_ms REAL,
    completed_at REAL,
    failed_at REAL,
    canceled_at REAL,
    done_seq INTEGER,
    out_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_requests_batch_state ON requests (batch_id, state, done_seq);
CREATE INDEX IF NOT EXISTS idx_requests_batch_line ON requests (batch_id, line_number);
CREATE INDEX IF NOT EXISTS idx_requests_pending ON requests (seq) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS idx_requests_id ON requests (id);
CREATE INDEX IF NOT EXISTS idx_batches_input ON batches (input_file_id);
"""


class Store:
    """SQLite access: a pool of connections for reads, one lock serialising writes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._pool: queue.LifoQueue = queue.LifoQueue()
        self._wlock = threading.Lock()
        self._last_done_ts = 0.0
        conn = self._connect()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        row = conn.execute("SELECT COALESCE(MAX(done_seq), 0) FROM requests").fetchone()
        self._done_seq = int(row[0])
        row = conn.execute(
            "SELECT COALESCE(MAX(completed_at), 0), COALESCE(MAX(failed_at), 0) FROM requests"
        ).fetchone()
        self._last_done_ts = float(max(row[0], row[1]))
        self._pool.put(conn)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=60000")
        conn.execute("PRAGMA cache_size=-16000")
        conn.create_function("uuid4", 0, lambda: str(uuid.uuid4()))
        return conn

    def _get(self) -> sqlite3.Connection:
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            return self._connect()

    def _put(self, conn: sqlite3.Connection) -> None:
        if self._pool.qsize() < 32:
            self._pool.put(conn)
        else:
            conn.close()

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        conn = self._get()
        try:
            yield conn
        finally:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            self._put(conn)

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        with self._wlock:
            conn = self._get()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            finally:
                self._put(conn)

    def next_done(self) -> tuple:
        """A (sequence, timestamp) pair for a finished request; call under the write lock."""
        self._done_seq += 1
        ts = time.time()
        if ts <= self._last_done_ts:
            ts = self._last_done_ts + 1e-6
        self._last_done_ts = ts
        return self._done_seq, ts

    def reset_counters(self) -> None:
        """After every request row was deleted (call under the write lock)."""
        self._done_seq = 0
        self._last_done_ts = 0.0

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                break


def request_counts(conn: sqlite3.Connection, batch_id: str) -> dict:
    counts = {"pending": 0, "in_progress": 0, "completed": 0, "failed": 0, "canceled": 0}
    for state, n in conn.execute(
        "SELECT state, COUNT(*) FROM requests WHERE batch_id = ? GROUP BY state", (batch_id,)
    ):
        counts[state] = n
    return counts


def batch_finished(row: Any, counts: dict) -> bool:
    if not row["populated"]:
        return False
    return counts["completed"] + counts["failed"] + counts["canceled"] >= row["total"]


def derive_status(row: Any, counts: dict) -> str:
    finished = batch_finished(row, counts)
    if row["cancelling_at"] is not None:
        return "cancelled" if finished else "cancelling"
    if row["failed_at"] is not None and row["in_progress_at"] is None:
        return "failed"
    if row["in_progress_at"] is None:
        return "validating"
    if finished and counts["failed"] >= row["total"]:
        return "failed"
    if finished:
        if row["completed_at"] is not None:
            return "completed"
        if row["failed_at"] is not None:
            return "failed"
        return "finalizing"
    return "in_progress"


def output_line(req_id: str, custom_id: str, status_code: int, response: str) -> str:
    cid = json.dumps(custom_id, ensure_ascii=False)
    return (
        f'{{"id":"batch_req_{req_id}","custom_id":{cid},"response":{{"status_code":{status_code},'
        f'"request_id":null,"body":{response}}},"error":null}}'
    )


def error_line(req_id: str, custom_id: str, error: str) -> str:
    cid = json.dumps(custom_id, ensure_ascii=False)
    message = json.dumps(error, ensure_ascii=False)
    return f'{{"id":"batch_req_{req_id}","custom_id":{cid},"response":null,"error":{{"code":null,"message":{message}}}}}'


def input_line(custom_id: str, method: str, url: str, body: str) -> str:
    cid = json.dumps(custom_id, ensure_ascii=False)
    return f'{{"custom_id":{cid},"method":{json.dumps(method)},"url":{json.dumps(url)},"body":{body}}}'


def failure_reason(kind: str, details: Any) -> str:
    return compact({"type": kind, "details": details})


# --------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return " ".join(parts)
    return ""


def _tokens(chars: int) -> int:
    return max(1, int(math.ceil(chars / 4.0)))


def _client_error(message: str) -> tuple:
    body = compact(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    )
    return 400, body, 0, 0


class BuiltinModel:
    """A deterministic stand-in model: echoes the prompt with a stable hash."""

    def __call__(self, url: str, body_text: str, model: str) -> tuple:
        try:
            body = json.loads(body_text)
        except ValueError:
            return _client_error("request body is not valid JSON")
        if not isinstance(body, dict):
            return _client_error("request body must be a JSON object")
        digest = hashlib.sha256(body_text.encode("utf-8")).hexdigest()
        now = int(time.time())
        if url == "/v1/embeddings":
            return self._embeddings(body, model, digest)
        if url == "/v1/completions":
            prompt = body.get("prompt")
            if isinstance(prompt, list):
                prompt = " ".join(str(p) for p in prompt)
            if not isinstance(prompt, str):
                return _client_error("'prompt' is required")
            text = f"Echo: {prompt[:60]} [{digest[:8]}]"
            pt, ct = _tokens(len(prompt)), _tokens(len(text))
            resp = {
                "id": "cmpl-" + digest[:24],
                "object": "text_completion",
                "created": now,
                "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
            }
            return 200, compact(resp), pt, ct
        if url == "/v1/responses":
            inp = body.get("input")
            if isinstance(inp, str):
                prompt, total_chars = inp, len(inp)
            elif isinstance(inp, list):
                texts = [
                    _text_of(item.get("content")) if isinstance(item, dict) else str(item) for item in inp
                ]
                users = [
                    _text_of(item.get("content"))
                    for item in inp
                    if isinstance(item, dict) and item.get("role", "user") == "user"
                ]
                prompt = users[-1] if users else (texts[-1] if texts else "")
                total_chars = sum(len(t) for t in texts)
            else:
                return _client_error("'input' is required")
            if isinstance(body.get("instructions"), str):
                total_chars += len(body["instructions"])
            text = f"Echo: {prompt[:60]} [{digest[:8]}]"
            it, ot = _tokens(total_chars), _tokens(len(text))
            resp = {
                "id": "resp_" + digest[:32],
                "object": "response",
                "created_at": now,
                "status": "completed",
                "model": model,
                "output": [
                    {
                        "type": "message",
                        "id": "msg_" + digest[32:56],
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}],
                    }
                ],
                "output_text": text,
                "usage": {"input_tokens": it, "output_tokens": ot, "total_tokens": it + ot},
            }
            return 200, compact(resp), it, ot
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _client_error("'messages' must be a non-empty array")
        texts = [_text_of(m.get("content")) if isinstance(m, dict) else "" for m in messages]
        users = [
            _text_of(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user"
        ]
        prompt = users[-1] if users else texts[-1]
        total_chars = sum(len(t) for t in texts)
        if isinstance(body.get("system"), str):
            total_chars += len(body["system"])
        text = f"Echo: {prompt[:60]} [{digest[:8]}]"
        pt, ct = _tokens(total_chars), _tokens(len(text))
        if url == "/v1/messages":
            resp = {
                "id": "msg_" + digest[:24],
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": pt, "output_tokens": ct},
            }
            return 200, compact(resp), pt, ct
        resp = {
            "id": "chatcmpl-" + digest[:24],
            "object": "chat.completion",
            "created": now,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
        }
        return 200, compact(resp), pt, ct

    @staticmethod
    def _embeddings(body: dict, model: str, digest: str) -> tuple:
        inp = body.get("input")
        if isinstance(inp, str) or (isinstance(inp, list) and inp and all(isinstance(x, int) for x in inp)):
            items = [inp]
        elif isinstance(inp, list) and inp:
            items = inp
        else:
            return _client_error("'input' is required")
        data = []
        chars = 0
        for index, item in enumerate(items):
            text = item if isinstance(item, str) else compact(item)
            chars += len(text)
            h = hashlib.sha256(text.encode("utf-8")).digest()
            vec = [round((b / 255.0) * 2 - 1, 6) for b in h[:8]]
            data.append({"object": "embedding", "index": index, "embedding": vec})
        pt = _tokens(chars)
        resp = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": pt, "total_tokens": pt},
        }
        return 200, compact(resp), pt, 0


class UpstreamBackend:
    """Forwards each request body to ``base + line url`` with urllib."""

    def __init__(
        self,
        base: str,
        api_key: str | None,
        timeout: float,
        retries: int,
        model: str | None,
        stop: threading.Event,
    ):
        self.base = base.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.model = model
        self.stop = stop

    def target(self, url: str) -> str:
        if self.base.endswith("/v1") and url.startswith("/v1/"):
            return self.base + url[3:]
        return self.base + url

    def __call__(self, url: str, body_text: str, model: str) -> tuple:
        """Return (status, text, prompt_tokens, completion_tokens, failure_or_None)."""
        payload = body_text
        if self.model:
            try:
                obj = json.loads(body_text)
                obj["model"] = self.model
                payload = compact(obj)
            except (ValueError, TypeError):
                pass
        data = payload.encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = "Bearer " + self.api_key
        attempt = 0
        while True:
            attempt += 1
            req = urllib.request.Request(self.target(url), data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    status, text = resp.status, resp.read().decode("utf-8", "replace")
            except urllib.error.HTTPError as err:
                status = err.code
                try:
                    text = err.read().decode("utf-8", "replace")
                except Exception:
                    text = ""
            except socket.timeout as err:
                return 0, "", 0, 0, failure_reason("Timeout", {"error": f"request timed out: {err}"})
            except (urllib.error.URLError, OSError, ValueError) as err:
                reason = getattr(err, "reason", err)
                if isinstance(reason, socket.timeout):
                    return 0, "", 0, 0, failure_reason("Timeout", {"error": "request timed out"})
                return 0, "", 0, 0, failure_reason("NetworkError", {"error": str(reason)})
            if status < 400:
                pt, ct = 0, 0
                try:
                    obj = json.loads(text)
                    text = compact(obj)
                    usage = obj.get("usage") if isinstance(obj, dict) else None
                    if isinstance(usage, dict):
                        pt = int(usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0)
                        ct = int(usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0)
                except (ValueError, TypeError):
                    text = json.dumps(text)
                return status, text, pt, ct, None
            if is_retriable_status(status) and attempt <= self.retries and not self.stop.is_set():
                self.stop.wait(min(5.0, 0.5 * (2 ** (attempt - 1))))
                continue
            kind = "RetriableHttpStatus" if is_retriable_status(status) else "NonRetriableHttpStatus"
            return status, "", 0, 0, failure_reason(kind, {"status": status, "body": text})


# --------------------------------------------------------------------------------------
# Processing engine
# --------------------------------------------------------------------------------------


class Engine:
    """Moves batches validating -> in_progress -> finalizing -> completed and runs requests."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.cfg = app.cfg
        self.store = app.store
        self.faults = app.faults
        self._stop = threading.Event()
        self._work = threading.Condition()
        self._tick = threading.Event()
        self._threads: list = []
        self.builtin = BuiltinModel()
        self.upstream = None
        if self.cfg.upstream:
            self.upstream = UpstreamBackend(
                self.cfg.upstream,
                self.cfg.upstream_api_key,
                self.cfg.upstream_timeout,
                self.cfg.upstream_retries,
                self.cfg.upstream_model,
                self._stop,
            )

    # lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        with self.store.write() as conn:
            conn.execute("UPDATE requests SET state = 'pending' WHERE state = 'in_progress'")
        t = threading.Thread(target=self._housekeeper, name="sandbox-housekeeper", daemon=True)
        t.start()
        self._threads.append(t)
        for i in range(max(1, self.cfg.concurrency)):
            t = threading.Thread(target=self._worker, name=f"sandbox-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.wake()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def wake(self) -> None:
        self._tick.set()
        with self._work:
            self._work.notify_all()

    # housekeeping ------------------------------------------------------------------
    def _housekeeper(self) -> None:
        while not self._stop.is_set():
            try:
                self._housekeep_once()
            except Exception:
                traceback.print_exc()
            self._tick.wait(0.02)
            self._tick.clear()

    def _housekeep_once(self) -> None:
        now = time.time()
        with self.store.read() as conn:
            rows = conn.execute(
                "SELECT id, created_ts, populated, finalizing_ts FROM batches "
                "WHERE completed_at IS NULL AND failed_at IS NULL AND cancelling_at IS NULL"
            ).fetchall()
        for row in rows:
            if not row["populated"]:
                if now >= row["created_ts"] + self.cfg.validating_delay:
                    self.populate(row["id"])
                continue
            self._maybe_finalize(row["id"])

    def populate(self, batch_id: str, canceled: bool = False) -> None:
        """Create the request rows of a batch from its input file templates."""
        with self.store.write() as conn:
            self._populate_locked(conn, batch_id, canceled)
        self.wake()

    def _populate_locked(self, conn: sqlite3.Connection, batch_id: str, canceled: bool = False) -> None:
        row = conn.execute(
            "SELECT input_file_id, populated, cancelling_at FROM batches WHERE id = ?", (batch_id,)
        ).fetchone()
        if row is None or row["populated"]:
            return
        now = time.time()
        cancel = canceled or row["cancelling_at"] is not None
        state = "canceled" if cancel else "pending"
        conn.execute(
            "INSERT INTO requests (id, batch_id, line_number, custom_id, method, url, body, model, body_bytes, "
            "state, canceled_at) SELECT uuid4(), ?, line_number, custom_id, method, url, body, model, body_bytes, "
            "?, ? FROM templates WHERE file_id = ? ORDER BY line_number",
            (batch_id, state, now if cancel else None, row["input_file_id"]),
        )
        if cancel:
            conn.execute("UPDATE batches SET populated = 1 WHERE id = ?", (batch_id,))
        else:
            conn.execute(
                "UPDATE batches SET populated = 1, in_progress_at = ? WHERE id = ?", (int(now), batch_id)
            )

    def _maybe_finalize(self, batch_id: str) -> None:
        with self.store.read() as conn:
            open_row = conn.execute(
                "SELECT 1 FROM requests WHERE batch_id = ? AND state IN ('pending', 'in_progress') LIMIT 1",
                (batch_id,),
            ).fetchone()
        if open_row is not None:
            return
        with self.store.write() as conn:
            row = conn.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if (
                row is None
                or not row["populated"]
                or row["cancelling_at"] is not None
                or row["completed_at"] is not None
                or row["failed_at"] is not None
            ):
                return
            counts = request_counts(conn, batch_id)
            if counts["pending"] or counts["in_progress"]:
                return
            now = time.time()
            if counts["failed"] >= row["total"]:
                conn.execute("UPDATE batches SET failed_at = ? WHERE id = ?", (int(now), batch_id))
                return
            if row["finalizing_ts"] is None:
                conn.execute(
                    "UPDATE batches SET finalizing_at = ?, finalizing_ts = ? WHERE id = ?",
                    (int(now), now, batch_id),
                )
                return
            if now < row["finalizing_ts"] + self.cfg.finalizing_delay:
                return
            conn.execute("UPDATE batches SET completed_at = ? WHERE id = ?", (int(now), batch_id))

    # workers -----------------------------------------------------------------------
    def _chunk_size(self) -> int:
        if self.upstream is not None or self.cfg.latency > 0 or self.cfg.latency_jitter > 0:
            return 1
        return 256

    def _claim(self, limit: int) -> list:
        with self.store.write() as conn:
            rows = conn.execute(
                "SELECT seq, id, batch_id, custom_id, url, body, model, attempts FROM requests "
                "WHERE state = 'pending' ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
            if rows:
                conn.executemany(
                    "UPDATE requests SET state = 'in_progress', attempts = attempts + 1 WHERE seq = ?",
                    [(r["seq"],) for r in rows],
                )
        return [dict(r, attempts=r["attempts"] + 1) for r in rows]

    def _worker(self) -> None:
        chunk = self._chunk_size()
        while not self._stop.is_set():
            try:
                rows = self._claim(chunk)
            except sqlite3.Error:
                traceback.print_exc()
                self._stop.wait(0.2)
                continue
            if not rows:
                with self._work:
                    self._work.wait(0.25)
                continue
            results = []
            for row in rows:
                if self._stop.is_set():
                    break
                result = self.execute(row)
                if result is not None:
                    results.append(result)
            if results:
                try:
                    self.finish(results)
                except sqlite3.Error:
                    traceback.print_exc()
            self._tick.set()

    def _latency_for(self, request_id: str) -> float:
        lat = self.cfg.latency
        if self.cfg.latency_jitter > 0:
            draw = int(hashlib.sha256(("jitter:" + request_id).encode()).hexdigest()[:8], 16) / float(1 << 32)
            lat += self.cfg.latency_jitter * draw
        return lat

    def execute(self, row: dict, apply_latency: bool = True, inject: bool = True) -> dict | None:
        started = time.time()
        if apply_latency:
            lat = self._latency_for(row["id"])
            if lat > 0 and self._stop.wait(lat):
                return None
        base = {
            "seq": row["seq"],
            "attempts": row["attempts"],
            "id": row["id"],
            "custom_id": row["custom_id"],
        }
        fail_status = self.faults.request_failure(row["id"], row["custom_id"]) if inject else None
        if fail_status is not None:
            body = compact(
                {
                    "error": {
                        "message": f"Simulated upstream error (HTTP {fail_status})",
                        "type": "server_error" if fail_status >= 500 else "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                }
            )
            kind = "RetriableHttpStatus" if is_retriable_status(fail_status) else "NonRetriableHttpStatus"
            return dict(
                base, state="failed", error=failure_reason(kind, {"status": fail_status, "body": body})
            )
        if self.upstream is not None:
            status, text, pt, ct, failure = self.upstream(row["url"], row["body"], row["model"])
            if failure is not None:
                return dict(base, state="failed", error=failure)
        else:
            status, text, pt, ct = self.builtin(row["url"], row["body"], row["model"])
            if status >= 400:
                return dict(
                    base,
                    state="failed",
                    error=failure_reason("NonRetriableHttpStatus", {"status": status, "body": text}),
                )
        return dict(
            base,
            state="completed",
            status_code=status,
            response=text,
            prompt_tokens=pt,
            completion_tokens=ct,
            duration_ms=(time.time() - started) * 1000.0,
        )

    def finish(self, results: list, from_state: str = "in_progress") -> int:
        done = []
        failed = []
        with self.store.write() as conn:
            for r in results:
                seq, ts = self.store.next_done()
                if r["state"] == "completed":
                    size = (
                        len(output_line(r["id"], r["custom_id"], r["status_code"], r["response"]).encode())
                        + 1
                    )
                    done.append(
                        (
                            r["status_code"],
                            r["response"],
                            r["prompt_tokens"],
                            r["completion_tokens"],
                            r["duration_ms"],
                            ts,
                            seq,
                            size,
                            r["seq"],
                            from_state,
                            r["attempts"],
                        )
                    )
                else:
                    size = len(error_line(r["id"], r["custom_id"], r["error"]).encode()) + 1
                    failed.append((r["error"], ts, seq, size, r["seq"], from_state, r["attempts"]))
            cur = conn.executemany(
                "UPDATE requests SET state = 'completed', status_code = ?, response = ?, prompt_tokens = ?, "
                "completion_tokens = ?, duration_ms = ?, completed_at = ?, done_seq = ?, out_bytes = ? "
                "WHERE seq = ? AND state = ? AND attempts = ?",
                done,
            )
            changed = cur.rowcount if done else 0
            cur = conn.executemany(
                "UPDATE requests SET state = 'failed', error = ?, failed_at = ?, done_seq = ?, out_bytes = ? "
                "WHERE seq = ? AND state = ? AND attempts = ?",
                failed,
            )
            changed += cur.rowcount if failed else 0
        return changed

    def complete_late(self, row: dict, delay: float) -> None:
        """Finish one request after its batch was cancelled (a late completion)."""

        def run() -> None:
            if self._stop.wait(delay):
                return
            result = self.execute(row, apply_latency=False, inject=False)
            if result is None:
                return
            try:
                self.finish([result], from_state="canceled")
            except sqlite3.Error:
                traceback.print_exc()

        threading.Thread(target=run, name="sandbox-late-completion", daemon=True).start()


# --------------------------------------------------------------------------------------
# HTTP body readers and multipart parsing
# --------------------------------------------------------------------------------------


class BodyTooLarge(Exception):
    pass


class MalformedBody(Exception):
    pass


class BodyReader:
    """Reads a request body framed by Content-Length or chunked transfer encoding."""

    def __init__(self, rfile: Any, length: int | None, chunked: bool, limit: int | None = None) -> None:
        self.rfile = rfile
        self.remaining = length or 0
        self.chunked = chunked
        self.limit = limit
        self.total = 0
        self.eof = (not chunked) and self.remaining <= 0
        self._chunk_left = 0
        self.on_progress: Callable[[int], None] | None = None

    def read(self, n: int = 65536) -> bytes:
        if self.eof:
            return b""
        if self.chunked:
            data = self._read_chunked(n)
            if not data:
                return b""
        else:
            data = self.rfile.read1(min(n, self.remaining))
            if not data:
                raise MalformedBody("connection closed before the end of the request body")
            self.remaining -= len(data)
            if self.remaining <= 0:
                self.eof = True
        self.total += len(data)
        if self.limit is not None and self.total > self.limit:
            raise BodyTooLarge()
        if self.on_progress is not None:
            self.on_progress(self.total)
        return data

    def _read_chunked(self, n: int) -> bytes:
        if self._chunk_left == 0:
            line = self.rfile.readline(4096)
            if not line:
                raise MalformedBody("connection closed inside a chunked body")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as err:
                raise MalformedBody("invalid chunk size line") from err
            if size == 0:
                while True:
                    trailer = self.rfile.readline(4096)
                    if trailer in (b"\r\n", b"\n", b""):
                        break
                self.eof = True
                return b""
            self._chunk_left = size
        data = self.rfile.read1(min(n, self._chunk_left))
        if not data:
            raise MalformedBody("connection closed inside a chunk")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self.rfile.readline(4096)
        return data

    def read_all(self) -> bytes:
        parts = []
        while True:
            data = self.read()
            if not data:
                return b"".join(parts)
            parts.append(data)

    def drain(self) -> None:
        while self.read():
            pass


class MultipartError(Exception):
    pass


class MultipartReader:
    """Streaming multipart/form-data parser; the boundary is searched across chunk edges."""

    def __init__(self, reader: BodyReader, boundary: bytes) -> None:
        self.reader = reader
        self.delim = b"\r\n--" + boundary
        self.buf = bytearray(b"\r\n")
        self.done = False
        for _ in self.iter_data():  # skip the preamble
            pass

    def _fill(self) -> bool:
        data = self.reader.read(65536)
        if not data:
            return False
        self.buf += data
        return True

    def _after_delimiter(self) -> None:
        while len(self.buf) < 2:
            if not self._fill():
                raise MultipartError("unexpected end of multipart body")
        if self.buf[:2] == b"--":
            self.done = True
            return
        while True:
            idx = self.buf.find(b"\r\n")
            if idx >= 0:
                del self.buf[: idx + 2]
                return
            if len(self.buf) > 1024 or not self._fill():
                raise MultipartError("malformed boundary line")

    def next_part(self) -> dict | None:
        if self.done:
            return None
        while True:
            if self.buf.startswith(b"\r\n"):
                del self.buf[:2]
                return {}
            idx = self.buf.find(b"\r\n\r\n")
            if idx >= 0:
                raw = bytes(self.buf[:idx]).decode("utf-8", "replace")
                del self.buf[: idx + 4]
                headers = {}
                for line in raw.split("\r\n"):
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                return headers
            if len(self.buf) > 65536:
                raise MultipartError("part headers too large")
            if not self._fill():
                raise MultipartError("unexpected end of multipart body")

    def iter_data(self) -> Iterator[bytes]:
        dl = len(self.delim)
        while True:
            idx = self.buf.find(self.delim)
            if idx >= 0:
                if idx:
                    yield bytes(self.buf[:idx])
                del self.buf[: idx + dl]
                self._after_delimiter()
                return
            if len(self.buf) >= dl:
                cut = len(self.buf) - (dl - 1)
                yield bytes(self.buf[:cut])
                del self.buf[:cut]
            if not self._fill():
                raise MultipartError("unexpected end of multipart body")


def parse_header_params(value: str) -> tuple:
    """Split ``type; a=b; c="d"`` into (type, {a: b, c: d})."""
    parts = re.findall(r'(?:[^;"]|"(?:\\.|[^"\\])*")+', value or "")
    if not parts:
        return "", {}
    main = parts[0].strip().lower()
    params = {}
    for part in parts[1:]:
        key, sep, val = part.strip().partition("=")
        if not sep:
            continue
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        params[key.strip().lower()] = val
    if "filename*" in params and "filename" not in params:
        enc, _, rest = params["filename*"].partition("''")
        params["filename"] = urllib.parse.unquote(rest or enc)
    return main, params


# --------------------------------------------------------------------------------------
# Application: configuration, routes and handlers
# --------------------------------------------------------------------------------------


class Config:
    def __init__(self, args: argparse.Namespace) -> None:
        self.host = args.host
        self.port = args.port
        self.data_dir = os.path.abspath(args.data_dir)
        self.api_key = args.api_key or os.environ.get("DW_SANDBOX_API_KEY") or None
        self.forbidden_key = args.forbidden_key or None
        self.chat_models = (
            tuple(m.strip() for m in args.models.split(",") if m.strip())
            if args.models
            else DEFAULT_CHAT_MODELS
        )
        self.embedding_models = (
            tuple(m.strip() for m in args.embedding_models.split(",") if m.strip())
            if args.embedding_models is not None
            else DEFAULT_EMBEDDING_MODELS
        )
        self.max_file_bytes = args.max_file_bytes
        self.max_requests_per_file = args.max_requests_per_file
        self.max_body_bytes = args.max_body_bytes
        self.validating_delay = max(0.0, args.validating_delay)
        self.finalizing_delay = max(0.0, args.finalizing_delay)
        self.concurrency = max(1, args.concurrency)
        self.latency = max(0.0, args.latency)
        self.latency_jitter = max(0.0, args.latency_jitter)
        self.upstream = args.upstream
        self.upstream_api_key = args.upstream_api_key or os.environ.get("DW_SANDBOX_UPSTREAM_API_KEY") or None
        self.upstream_model = args.upstream_model
        self.upstream_timeout = args.upstream_timeout
        self.upstream_retries = max(0, args.upstream_retries)
        self.window_scale = args.window_scale
        self.verbose = args.verbose


class Route:
    def __init__(self, method: str, template: str, handler: str, openai: bool = False) -> None:
        self.method = method
        self.template = template
        self.handler = handler
        self.openai = openai
        pattern = (
            re.escape(template).replace(r"\{id\}", r"(?P<id>[^/]+)").replace(r"\{model\}", r"(?P<model>.+)")
        )
        self.regex = re.compile("^" + pattern + "$")


ROUTES = (
    Route("GET", "/v1/models", "list_models", openai=True),
    Route("GET", "/v1/models/{model}", "get_model", openai=True),
    Route("POST", "/v1/files", "upload_file"),
    Route("GET", "/v1/files", "list_files"),
    Route("GET", "/v1/files/{id}/content", "file_content"),
    Route("GET", "/v1/files/{id}/cost-estimate", "cost_estimate"),
    Route("GET", "/v1/files/{id}", "get_file"),
    Route("DELETE", "/v1/files/{id}", "delete_file"),
    Route("POST", "/v1/batches", "create_batch"),
    Route("GET", "/v1/batches", "list_batches"),
    Route("POST", "/v1/batches/{id}/cancel", "cancel_batch"),
    Route("POST", "/v1/batches/{id}/retry", "retry_batch"),
    Route("POST", "/v1/batches/{id}/retry-requests", "retry_requests"),
    Route("GET", "/v1/batches/{id}/results", "batch_results"),
    Route("GET", "/v1/batches/{id}/analytics", "batch_analytics"),
    Route("GET", "/v1/batches/{id}", "get_batch"),
    Route("DELETE", "/v1/batches/{id}", "delete_batch"),
    Route("GET", "/_sandbox/faults", "get_faults"),
    Route("PUT", "/_sandbox/faults", "put_faults"),
    Route("GET", "/_sandbox/stats", "get_stats"),
    Route("POST", "/_sandbox/reset-stats", "reset_stats"),
    Route("POST", "/_sandbox/reset", "reset"),
)


class Request:
    def __init__(self, handler: Handler, method: str, path: str, query: dict, params: dict) -> None:
        self.handler = handler
        self.method = method
        self.path = path
        self.query = query
        self.params = params
        self.headers = handler.headers

    def q(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def q_int(self, name: str) -> int | None:
        raw = self.q(name)
        if raw is None or raw == "":
            return None
        try:
            return int(raw.strip())
        except ValueError:
            raise ApiError(
                400, f"Failed to deserialize query string: {name}: invalid digit found in string"
            ) from None

    def json_body(self) -> Any:
        ctype, _ = parse_header_params(self.headers.get("Content-Type", ""))
        if not (
            ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json"))
        ):
            self.handler.discard_body()
            raise ApiError(415, "Expected request with `Content-Type: application/json`")
        raw = self.handler.read_body(MAX_JSON_BODY)
        try:
            return json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            detail = serde_json_error(err) if isinstance(err, json.JSONDecodeError) else str(err)
            raise ApiError(400, f"Failed to parse the request body as JSON: {detail}") from None


def page_limit(req: Request) -> int:
    limit = req.q_int("limit")
    if limit is None:
        return PAGE_DEFAULT
    return max(1, min(PAGE_MAX, limit))


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict = {}
        self.uploads_received = 0

    def count(self, key: str) -> None:
        with self._lock:
            self.requests[key] = self.requests.get(key, 0) + 1

    def upload(self) -> None:
        with self._lock:
            self.uploads_received += 1

    def reset(self) -> None:
        with self._lock:
            self.requests = {}
            self.uploads_received = 0

    def snapshot(self) -> tuple:
        with self._lock:
            return dict(self.requests), self.uploads_received


class App:
    def __init__(self, cfg: Config, faults: Faults) -> None:
        self.cfg = cfg
        self.faults = faults
        os.makedirs(os.path.join(cfg.data_dir, "tmp"), exist_ok=True)
        for name in os.listdir(os.path.join(cfg.data_dir, "tmp")):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(cfg.data_dir, "tmp", name))
        self.store = Store(os.path.join(cfg.data_dir, "sandbox.db"))
        self.stats = Stats()
        self.engine = Engine(self)
        self.initial_faults = {k: v for k, v in faults.document().items() if k != "_remaining"}
        self._reset_lock = threading.Lock()
        self.chat_models = set(cfg.chat_models)
        self.embedding_models = set(cfg.embedding_models)

    # auth --------------------------------------------------------------------------
    def check_auth(self, header: str | None, openai: bool) -> ApiError | None:
        style = "openai" if openai else "text"
        token = None
        if header:
            scheme, _, value = header.strip().partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                token = value.strip()
        if (
            token is not None
            and self.cfg.forbidden_key
            and hmac.compare_digest(token.encode(), self.cfg.forbidden_key.encode())
        ):
            return ApiError(403, "API key purpose 'platform' is not allowed for this endpoint", style=style)
        if not self.cfg.api_key:
            return None
        if token is None:
            return ApiError(401, "Authentication required", style=style, code="invalid_api_key")
        if not hmac.compare_digest(token.encode(), self.cfg.api_key.encode()):
            return ApiError(401, "Invalid API key", style=style, code="invalid_api_key")
        return None

    # helpers -----------------------------------------------------------------------
    def window_seconds(self, window: str) -> int:
        return int(round(COMPLETION_WINDOWS[window] * self.cfg.window_scale))

    def _file_row(self, conn: sqlite3.Connection, raw_id: str) -> Any:
        file_id = parse_uuid(raw_id)
        if file_id is None:
            raise ApiError(400, "Invalid file ID format")
        row = conn.execute("SELECT * FROM files WHERE id = ? AND deleted = 0", (file_id,)).fetchone()
        if row is None:
            raise ApiError(404, f"File with ID {raw_id} not found")
        return row

    def _batch_row(self, conn: sqlite3.Connection, raw_id: str) -> Any:
        batch_id = parse_uuid(raw_id)
        if batch_id is None:
            raise ApiError(400, "Invalid batch ID format")
        row = conn.execute("SELECT * FROM batches WHERE id = ? AND deleted = 0", (batch_id,)).fetchone()
        if row is None:
            raise ApiError(404, f"Batch with ID {raw_id} not found")
        return row

    def file_obj(self, conn: sqlite3.Connection, row: Any) -> dict:
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

    def batch_obj(self, conn: sqlite3.Connection, row: Any, counts: dict | None = None) -> dict:
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
        obj["request_counts"] = {
            "total": row["total"],
            "completed": counts["completed"],
            "failed": counts["failed"],
        }
        metadata = json.loads(row["metadata"] or "{}")
        metadata["created_by_email"] = SANDBOX_USER_EMAIL
        metadata["context_name"] = SANDBOX_USER_EMAIL
        metadata["context_type"] = "personal"
        obj["metadata"] = metadata
        return obj

    # models ------------------------------------------------------------------------
    def _model_obj(self, model: str) -> dict:
        return {"id": model, "object": "model", "created": MODEL_CREATED, "owned_by": model.split("/", 1)[0]}

    def list_models(self, req: Request) -> Response:
        models = list(self.cfg.chat_models) + list(self.cfg.embedding_models)
        return json_response({"object": "list", "data": [self._model_obj(m) for m in models]})

    def get_model(self, req: Request) -> Response:
        model = urllib.parse.unquote(req.params["model"])
        if model not in self.chat_models and model not in self.embedding_models:
            raise ApiError(404, f"The model '{model}' does not exist", style="openai", code="model_not_found")
        return json_response(self._model_obj(model))

    # files -------------------------------------------------------------------------
    def upload_file(self, req: Request) -> Response:
        handler = req.handler
        ctype, params = parse_header_params(req.headers.get("Content-Type", ""))
        boundary = params.get("boundary")
        if ctype != "multipart/form-data" or not boundary:
            raise ApiError(
                400, "Invalid multipart request: Invalid `boundary` for `multipart/form-data` request"
            )
        self.stats.upload()
        max_bytes = self.cfg.max_file_bytes
        too_large = f"File exceeds the maximum allowed size of {max_bytes} bytes"
        length = handler.content_length()
        if length is not None and length > max_bytes + MULTIPART_OVERHEAD:
            raise ApiError(413, too_large, close=True)
        reader = handler.body_reader(limit=max_bytes + MULTIPART_OVERHEAD)
        slow = self.faults.slow_upload()
        if slow is not None:
            after, pause = slow
            paused = []

            def on_progress(total: int) -> None:
                if not paused and total >= after:
                    paused.append(True)
                    time.sleep(pause)

            reader.on_progress = on_progress
        tmp_path = os.path.join(self.cfg.data_dir, "tmp", f"upload-{uuid.uuid4().hex}.part")
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
            count = self._import_templates(tmp_path, file_id)
            now = int(time.time())
            with self.store.write() as conn:
                conn.execute(
                    "INSERT INTO files (id, filename, purpose, bytes, created_at, expires_at, request_count) "
                    "VALUES (?, ?, 'batch', ?, ?, ?, ?)",
                    (file_id, filename or "file.jsonl", file_bytes, now, now + ttl, count),
                )
                row = conn.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
                obj = self.file_obj(conn, row)
            return json_response(obj, 201)
        finally:
            with contextlib.suppress(OSError):
                os.remove(tmp_path)

    def _import_templates(self, path: str, file_id: str) -> int:
        """Validate the uploaded JSONL line by line and store it (all or nothing)."""
        accepted = 0
        over_limit = False
        total = 0
        batch: list = []
        batch_bytes = 0
        offset = 0
        max_requests = self.cfg.max_requests_per_file

        def flush() -> None:
            nonlocal batch, batch_bytes
            if batch:
                with self.store.write() as conn:
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
                    tpl = self._parse_line(line, accepted + 1)
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
                raise ApiError(
                    400, f"File contains {total} requests, which exceeds the maximum of {max_requests}"
                )
            if accepted == 0:
                raise ApiError(400, "File contains no valid request templates")
            flush()
        except BaseException:
            with self.store.write() as conn:
                conn.execute("DELETE FROM templates WHERE file_id = ?", (file_id,))
            raise
        return accepted

    def _parse_line(self, line: str, n: int) -> tuple:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ApiError(400, f"Invalid JSON on line {n}: {serde_json_error(err)}") from None
        col = len(line)
        if not isinstance(obj, dict):
            raise ApiError(
                400,
                f"Invalid JSON on line {n}: invalid type: {describe_json(obj)}, expected struct "
                f"OpenAIBatchRequest at line 1 column {col}",
            )
        for field in ("custom_id", "method", "url", "body"):
            if field not in obj:
                raise ApiError(
                    400, f"Invalid JSON on line {n}: missing field `{field}` at line 1 column {col}"
                )
        for field in ("custom_id", "method", "url"):
            if not isinstance(obj[field], str):
                raise ApiError(
                    400,
                    f"Invalid JSON on line {n}: invalid type: {describe_json(obj[field])}, expected a string "
                    f"at line 1 column {col}",
                )
        custom_id, method, url, body = obj["custom_id"], obj["method"], obj["url"], obj["body"]
        cid_len = len(custom_id.encode("utf-8"))
        if cid_len > 64:
            raise ApiError(
                400, f"Line {n}: custom_id exceeds maximum length of 64 characters (got {cid_len})"
            )
        if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in custom_id):
            raise ApiError(
                400,
                f"Line {n}: custom_id contains invalid characters: must be valid ASCII without control characters",
            )
        if method.upper() != "POST":
            raise ApiError(
                400, f"Line {n}: Unsupported HTTP method '{method}'. Only POST is currently supported."
            )
        if url not in ALLOWED_URL_PATHS:
            raise ApiError(
                400,
                f"Line {n}: Unsupported URL path '{url}'. Allowed paths are: {', '.join(ALLOWED_URL_PATHS)}",
            )
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str):
            raise ApiError(400, f"Line {n}: Missing 'model' field in request body")
        is_embedding = model in self.embedding_models
        if not is_embedding and model not in self.chat_models:
            raise ApiError(
                403, f"Line {n}: Model '{model}' has not been configured or is not available to user"
            )
        if url == "/v1/embeddings" and not is_embedding:
            raise ApiError(
                400,
                f"Line {n}: Model '{model}' is a CHAT model but endpoint '{url}' requires a EMBEDDINGS model",
            )
        if url != "/v1/embeddings" and is_embedding:
            raise ApiError(
                400,
                f"Line {n}: Model '{model}' is a EMBEDDINGS model but endpoint '{url}' requires a CHAT model",
            )
        if "priority" in body:
            body = {k: v for k, v in body.items() if k != "priority"}
        body_text = compact(body)
        size = len(body_text.encode("utf-8"))
        if size > self.cfg.max_body_bytes:
            raise ApiError(
                400,
                f"Line {n}: Request body is {size} bytes, which exceeds the maximum allowed size of "
                f"{self.cfg.max_body_bytes} bytes",
            )
        return (custom_id, method, url, body_text, model, size)

    def list_files(self, req: Request) -> Response:
        order = req.q("order") or "desc"
        if order not in ("asc", "desc"):
            raise ApiError(400, "Order must be 'asc' or 'desc'")
        limit = page_limit(req)
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
        with self.store.read() as conn:
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
            data = [self.file_obj(conn, r) for r in rows]
        body: dict = {"object": "list", "data": data}
        if data:
            body["first_id"] = data[0]["id"]
            body["last_id"] = data[-1]["id"]
        body["has_more"] = has_more
        return json_response(body)

    def get_file(self, req: Request) -> Response:
        with self.store.read() as conn:
            row = self._file_row(conn, req.params["id"])
            return json_response(self.file_obj(conn, row))

    def delete_file(self, req: Request) -> Response:
        with self.store.read() as conn:
            row = self._file_row(conn, req.params["id"])
        file_id = row["id"]
        now = time.time()
        with self.store.write() as conn:
            if row["purpose"] == "batch":
                for b in conn.execute(
                    "SELECT * FROM batches WHERE input_file_id = ? AND deleted = 0", (file_id,)
                ).fetchall():
                    counts = request_counts(conn, b["id"])
                    if derive_status(b, counts) not in ("completed", "failed", "cancelled"):
                        self._cancel_locked(conn, b["id"], now)
                conn.execute("UPDATE batches SET input_file_id = '' WHERE input_file_id = ?", (file_id,))
                conn.execute("DELETE FROM templates WHERE file_id = ?", (file_id,))
            conn.execute("UPDATE files SET deleted = 1 WHERE id = ?", (file_id,))
        self.engine.wake()
        return json_response({"id": file_id, "object": "file", "deleted": True})

    def file_content(self, req: Request) -> Response:
        skip = max(0, req.q_int("skip") or 0)
        limit = req.q_int("limit")
        if limit is not None:
            limit = max(1, min(PAGE_MAX, limit))
        search = req.q("search")
        search = search.lower() if search else None
        conn = self.store._get()
        try:
            conn.execute("BEGIN")
            row = self._file_row(conn, req.params["id"])
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
                cols = (
                    "id, custom_id, status_code, response" if state == "completed" else "id, custom_id, error"
                )
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
                lines = [self._content_line(purpose, r) for r in rows]
                if purpose == "batch_output" and lines and self.faults.get("duplicate_output_line"):
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
            stream = self._stream_content(conn, cursor, purpose, self.faults.take_content_drop())
            conn = None  # owned by the stream now
            return Response(200, b"", "application/x-ndjson", headers, stream=stream)
        finally:
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                self.store._put(conn)

    @staticmethod
    def _content_line(purpose: str, r: Any) -> str:
        if purpose == "batch":
            return input_line(r["custom_id"], r["method"], r["url"], r["body"])
        if purpose == "batch_output":
            return output_line(r["id"], r["custom_id"], r["status_code"], r["response"])
        return error_line(r["id"], r["custom_id"], r["error"])

    def _stream_content(
        self, conn: sqlite3.Connection, cursor: Any, purpose: str, drop_after: int | None
    ) -> ContentStream:
        def release() -> None:
            with contextlib.suppress(sqlite3.Error):
                cursor.close()
                conn.execute("ROLLBACK")
            self.store._put(conn)

        duplicate = purpose == "batch_output" and bool(self.faults.get("duplicate_output_line"))
        return ContentStream(self._content_pieces(cursor, purpose, drop_after, duplicate), release)

    def _content_pieces(
        self, cursor: Any, purpose: str, drop_after: int | None, duplicate: bool
    ) -> Iterator[Any]:
        sent = 0
        buf: list = []
        size = 0
        while True:
            rows = cursor.fetchmany(500)
            if not rows:
                break
            for r in rows:
                line = self._content_line(purpose, r) + "\n"
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

    def cost_estimate(self, req: Request) -> Response:
        window = req.q("completion_window") or "24h"
        if window not in COMPLETION_WINDOWS:
            raise ApiError(400, "Unsupported completion_window. Allowed values: 24h, 1h")
        with self.store.read() as conn:
            row = self._file_row(conn, req.params["id"])
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
            price_in, price_out = PRICES.get(model, {}).get(window, ("0", "0"))
            cost = (
                Decimal(in_tokens) * Decimal(price_in) + Decimal(out_tokens) * Decimal(price_out)
            ) / Decimal(1000000)
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

    # batches -----------------------------------------------------------------------
    def create_batch(self, req: Request) -> Response:
        data = req.json_body()
        prefix = "Failed to deserialize the JSON body into the target type: "
        if not isinstance(data, dict):
            raise ApiError(
                422, prefix + f"invalid type: {describe_json(data)}, expected struct CreateBatchRequest"
            )
        for field in ("input_file_id", "endpoint", "completion_window"):
            if field not in data:
                raise ApiError(422, prefix + f"missing field `{field}`")
            if not isinstance(data[field], str):
                raise ApiError(
                    422, prefix + f"{field}: invalid type: {describe_json(data[field])}, expected a string"
                )
        metadata = data.get("metadata")
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise ApiError(422, prefix + f"metadata: invalid type: {describe_json(metadata)}, expected a map")
        for key, value in metadata.items():
            if not isinstance(value, str):
                raise ApiError(
                    422, prefix + f"metadata.{key}: invalid type: {describe_json(value)}, expected a string"
                )
        file_id = parse_uuid(data["input_file_id"])
        if file_id is None:
            raise ApiError(400, "Invalid input_file_id format")
        endpoint = data["endpoint"]
        if endpoint not in ALLOWED_URL_PATHS:
            raise ApiError(
                400, "Unsupported endpoint '{}'. Supported: {}".format(endpoint, ", ".join(ALLOWED_URL_PATHS))
            )
        window = data["completion_window"]
        if window not in COMPLETION_WINDOWS:
            raise ApiError(400, "Unsupported completion_window. Allowed values: 24h, 1h")
        clean_meta = {k: v for k, v in metadata.items() if k not in RESERVED_METADATA_KEYS}
        clean_meta["request_source"] = "api"
        clean_meta["created_by"] = SANDBOX_USER_ID
        batch_id = str(uuid.uuid4())
        out_id, err_id = str(uuid.uuid4()), str(uuid.uuid4())
        now = time.time()
        created = int(now)
        with self.store.write() as conn:
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
            for (model,) in conn.execute(
                "SELECT DISTINCT model FROM templates WHERE file_id = ?", (file_id,)
            ):
                if model not in self.chat_models and model not in self.embedding_models:
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
                    created + self.window_seconds(window),
                ),
            )
            for fid, purpose, suffix in (
                (out_id, "batch_output", "output"),
                (err_id, "batch_error", "error"),
            ):
                conn.execute(
                    "INSERT INTO files (id, filename, purpose, bytes, created_at, batch_id) VALUES (?, ?, ?, 0, ?, ?)",
                    (fid, f"batch-{batch_id}-{suffix}.jsonl", purpose, created, batch_id),
                )
            row = conn.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
            obj = self.batch_obj(conn, row)
        self.engine.wake()
        return json_response(obj, 201)

    def get_batch(self, req: Request) -> Response:
        with self.store.read() as conn:
            row = self._batch_row(conn, req.params["id"])
            return json_response(self.batch_obj(conn, row))

    def list_batches(self, req: Request) -> Response:
        limit = page_limit(req)
        status_filter = req.q("status")
        if status_filter and status_filter not in BATCH_STATUS_FILTERS:
            raise ApiError(
                400,
                "Invalid status filter '{}'. Allowed values: {}".format(
                    status_filter, ", ".join(BATCH_STATUS_FILTERS)
                ),
            )
        search = (req.q("search") or "").lower()
        windows = [w.strip() for w in (req.q("completion_window") or "").split(",") if w.strip()]
        created_after = _parse_time(req.q("created_after"), "created_after")
        created_before = _parse_time(req.q("created_before"), "created_before")
        active_first = (req.q("active_first") or "").lower() == "true"
        include = {x.strip() for x in (req.q("include") or "").split(",") if x.strip()}
        after = parse_uuid(req.q("after") or "")
        now = time.time()
        with self.store.read() as conn:
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
                    if status_filter == "in_progress" and status not in (
                        "validating",
                        "in_progress",
                        "finalizing",
                    ):
                        continue
                    if status_filter in ("completed", "failed", "cancelled") and status != status_filter:
                        continue
                    if status_filter == "expired":
                        end = row["completed_at"] or row["failed_at"] or row["cancelled_at"] or now
                        if not end > row["expires_at"]:
                            continue
                entries.append((row, counts, status))
            if active_first:
                terminal = ("completed", "failed", "cancelled")
                entries.sort(key=lambda e: e[2] in terminal)
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
                obj = self.batch_obj(conn, row, counts)
                if "analytics" in include:
                    obj["analytics"] = self._analytics(conn, row)
                data.append(obj)
        body: dict = {"object": "list", "data": data}
        if data:
            body["first_id"] = data[0]["id"]
            body["last_id"] = data[-1]["id"]
        body["has_more"] = has_more
        return json_response(body)

    def _cancel_locked(self, conn: sqlite3.Connection, batch_id: str, now: float) -> dict | None:
        row = conn.execute("SELECT populated FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if row is not None and not row["populated"]:
            self.engine._populate_locked(conn, batch_id, canceled=True)
        late = None
        if self.faults.get("late_line_after_cancel"):
            late = conn.execute(
                "SELECT seq, id, batch_id, custom_id, url, body, model, attempts FROM requests WHERE batch_id = ? "
                "AND state IN ('in_progress', 'pending') ORDER BY state = 'pending', seq LIMIT 1",
                (batch_id,),
            ).fetchone()
        conn.execute(
            "UPDATE requests SET state = 'canceled', canceled_at = ? WHERE batch_id = ? AND state IN ('pending', 'in_progress')",
            (now, batch_id),
        )
        conn.execute(
            "UPDATE batches SET cancelling_at = ?, cancelled_at = ? WHERE id = ?",
            (int(now), int(now), batch_id),
        )
        return dict(late) if late is not None else None

    def cancel_batch(self, req: Request) -> Response:
        with self.store.read() as conn:
            row = self._batch_row(conn, req.params["id"])
        with self.store.write() as conn:
            late = self._cancel_locked(conn, row["id"], time.time())
            row = conn.execute("SELECT * FROM batches WHERE id = ?", (row["id"],)).fetchone()
            obj = self.batch_obj(conn, row)
        if late is not None:
            self.engine.complete_late(late, max(0.05, self.cfg.latency))
        self.engine.wake()
        return json_response(obj)

    def delete_batch(self, req: Request) -> Response:
        with self.store.read() as conn:
            row = self._batch_row(conn, req.params["id"])
        with self.store.write() as conn:
            row = conn.execute("SELECT * FROM batches WHERE id = ?", (row["id"],)).fetchone()
            if derive_status(row, request_counts(conn, row["id"])) not in (
                "completed",
                "failed",
                "cancelled",
            ):
                self._cancel_locked(conn, row["id"], time.time())
            conn.execute("UPDATE batches SET deleted = 1 WHERE id = ?", (row["id"],))
        self.engine.wake()
        return Response(204)

    def _reset_batch_locked(self, conn: sqlite3.Connection, batch_id: str) -> None:
        conn.execute(
            "UPDATE batches SET cancelling_at = NULL, cancelled_at = NULL, finalizing_at = NULL, "
            "finalizing_ts = NULL, completed_at = NULL, failed_at = NULL, "
            "in_progress_at = COALESCE(in_progress_at, ?) WHERE id = ?",
            (int(time.time()), batch_id),
        )

    def retry_batch(self, req: Request) -> Response:
        with self.store.read() as conn:
            row = self._batch_row(conn, req.params["id"])
        with self.store.write() as conn:
            cur = conn.execute(
                "UPDATE requests SET state = 'pending', error = NULL, failed_at = NULL, canceled_at = NULL, "
                "done_seq = NULL, out_bytes = 0 WHERE batch_id = ? AND state IN ('failed', 'canceled')",
                (row["id"],),
            )
            if cur.rowcount == 0:
                raise ApiError(400, "No failed or canceled requests to retry")
            self._reset_batch_locked(conn, row["id"])
            row = conn.execute("SELECT * FROM batches WHERE id = ?", (row["id"],)).fetchone()
            obj = self.batch_obj(conn, row)
        self.engine.wake()
        return json_response(obj)

    def retry_requests(self, req: Request) -> Response:
        with self.store.read() as conn:
            row = self._batch_row(conn, req.params["id"])
        data = req.json_body()
        prefix = "Failed to deserialize the JSON body into the target type: "
        if not isinstance(data, dict) or "request_ids" not in data:
            raise ApiError(422, prefix + "missing field `request_ids`")
        ids = data["request_ids"]
        if not isinstance(ids, list):
            raise ApiError(
                422, prefix + f"request_ids: invalid type: {describe_json(ids)}, expected a sequence"
            )
        valid = [u for u in (parse_uuid(x) if isinstance(x, str) else None for x in ids) if u]
        if not valid:
            raise ApiError(400, "No valid request IDs provided")
        with self.store.write() as conn:
            changed = 0
            for rid in valid:
                cur = conn.execute(
                    "UPDATE requests SET state = 'pending', error = NULL, failed_at = NULL, canceled_at = NULL, "
                    "done_seq = NULL, out_bytes = 0 WHERE batch_id = ? AND id = ? AND state IN ('failed', 'canceled')",
                    (row["id"], rid),
                )
                changed += cur.rowcount
            if changed == 0:
                raise ApiError(400, "No failed or canceled requests found for the given IDs")
            self._reset_batch_locked(conn, row["id"])
            row = conn.execute("SELECT * FROM batches WHERE id = ?", (row["id"],)).fetchone()
            obj = self.batch_obj(conn, row)
        self.engine.wake()
        return json_response(obj)

    def batch_results(self, req: Request) -> Response:
        skip = max(0, req.q_int("skip") or 0)
        limit = req.q_int("limit")
        if limit is not None:
            limit = max(1, min(PAGE_MAX, limit))
        search = req.q("search")
        status = req.q("status")
        if status and status not in RESULT_STATUS_FILTERS:
            raise ApiError(
                400,
                "Invalid status filter '{}'. Allowed values: {}".format(
                    status, ", ".join(RESULT_STATUS_FILTERS)
                ),
            )
        with self.store.read() as conn:
            conn.execute("BEGIN")
            row = self._batch_row(conn, req.params["id"])
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
                "response_body": json.loads(r["response"])
                if r["response"] and r["state"] == "completed"
                else None,
                "error": r["error"] if r["state"] == "failed" else None,
                "status": r["state"],
            }
            lines.append(compact(item) + "\n")
        return Response(200, "".join(lines).encode("utf-8"), "application/x-ndjson", headers)

    def _analytics(self, conn: sqlite3.Connection, row: Any) -> dict:
        window = row["completion_window"]
        groups = conn.execute(
            "SELECT model, COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
            "AVG(duration_ms) FROM requests WHERE batch_id = ? AND state = 'completed' GROUP BY model",
            (row["id"],),
        ).fetchall()
        failed = conn.execute(
            "SELECT COUNT(*) FROM requests WHERE batch_id = ? AND state = 'failed'", (row["id"],)
        ).fetchone()[0]
        total_requests = failed
        prompt = completion = 0
        cost = Decimal(0)
        durations = []
        for model, n, pt, ct, avg in groups:
            total_requests += n
            prompt += pt
            completion += ct
            if avg is not None:
                durations.append((avg, n))
            price_in, price_out = PRICES.get(model, {}).get(window, ("0", "0"))
            cost += (Decimal(pt) * Decimal(price_in) + Decimal(ct) * Decimal(price_out)) / Decimal(1000000)
        out: dict = {
            "total_requests": total_requests,
            "total_prompt_tokens": prompt,
            "total_completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if durations:
            n_total = sum(n for _, n in durations)
            out["avg_duration_ms"] = round(sum(a * n for a, n in durations) / n_total, 3)
        if total_requests:
            out["total_cost"] = dec_str(cost)
        return out

    def batch_analytics(self, req: Request) -> Response:
        with self.store.read() as conn:
            row = self._batch_row(conn, req.params["id"])
            return json_response(self._analytics(conn, row))

    # sandbox control ---------------------------------------------------------------
    def get_faults(self, req: Request) -> Response:
        return json_response(self.faults.document())

    def put_faults(self, req: Request) -> Response:
        raw = req.handler.read_body(MAX_JSON_BODY)
        try:
            doc = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError) as err:
            raise ApiError(400, f"Failed to parse the request body as JSON: {err}") from None
        try:
            self.faults.replace(doc)
        except ValueError as err:
            raise ApiError(400, str(err)) from None
        return json_response(self.faults.document())

    def get_stats(self, req: Request) -> Response:
        counts, uploads = self.stats.snapshot()
        with self.store.read() as conn:
            files = conn.execute(
                "SELECT COUNT(*) FROM files WHERE deleted = 0 AND purpose = 'batch'"
            ).fetchone()[0]
            batches = conn.execute("SELECT COUNT(*) FROM batches WHERE deleted = 0").fetchone()[0]
        return json_response(
            {
                "requests": dict(sorted(counts.items())),
                "files": files,
                "batches": batches,
                "uploads_received": uploads,
            }
        )

    def reset_stats(self, req: Request) -> Response:
        self.stats.reset()
        return self.get_stats(req)

    def reset(self, req: Request) -> Response:
        """Start afresh without a restart: no files, batches or requests, the faults the server
        was started with, zero counters. The workers are stopped first and started again, so
        nothing of the old state is written back."""
        with self._reset_lock:
            self.engine.stop()
            with self.store.write() as conn:
                for table in ("requests", "templates", "batches", "files"):
                    conn.execute(f"DELETE FROM {table}")
                conn.execute("DELETE FROM sqlite_sequence")
                self.store.reset_counters()
            self.faults.replace(self.initial_faults)
            self.stats.reset()
            self.engine = Engine(self)
            self.engine.start()
        return self.get_stats(req)


def _parse_time(value: str | None, name: str) -> int | None:
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


# --------------------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "DoublewordSandbox/" + __version__
    timeout = 600  # idle keep-alive connections are closed after this many seconds

    def version_string(self) -> str:
        return self.server_version

    # body handling -------------------------------------------------------------
    def content_length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        if raw is None:
            return None
        try:
            return max(0, int(raw))
        except ValueError:
            return None

    def is_chunked(self) -> bool:
        return "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()

    def body_reader(self, limit: int | None = None) -> BodyReader:
        reader = BodyReader(self.rfile, self.content_length(), self.is_chunked(), limit)
        self._reader = reader
        return reader

    def read_body(self, limit: int) -> bytes:
        reader = self.body_reader(limit)
        try:
            return reader.read_all()
        except BodyTooLarge:
            raise ApiError(
                413, f"Payload too large: request body exceeds {limit} bytes", close=True
            ) from None
        except MalformedBody as err:
            raise ApiError(400, f"Failed to read the request body: {err}", close=True) from None

    def discard_body(self) -> None:
        """Read and drop a small unread body so the connection can be kept alive."""
        length = self.content_length()
        reader = getattr(self, "_reader", None)
        if reader is not None and not reader.eof:
            return
        if not self.is_chunked() and length is not None and length <= 1024 * 1024:
            with contextlib.suppress(Exception):
                self.body_reader().drain()

    def _body_pending(self) -> bool:
        reader = getattr(self, "_reader", None)
        if reader is not None:
            return not reader.eof
        return self.is_chunked() or (self.content_length() or 0) > 0

    # plumbing ----------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        app: App = self.server.app  # type: ignore[attr-defined]
        started = time.monotonic()
        self._reader = None
        raw_path, _, query_string = self.path.partition("?")
        path = raw_path
        if path == "/ai/v1" or path.startswith("/ai/v1/"):
            path = path[3:]
        status = 0
        self._headers_sent = False
        try:
            resp = self._route(app, method, raw_path, path, query_string)
            status = resp.status
            if resp.drop:
                self._drop()
                return
            if resp.close:
                self.close_connection = True
            elif self._body_pending():
                self.discard_body()
            self._send(resp)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            traceback.print_exc()
            self.close_connection = True
            if not self._headers_sent:
                with contextlib.suppress(Exception):
                    self._send(text_response(500, "Internal server error"))
        finally:
            if app.cfg.verbose:
                log(
                    "{} {} {} {:.1f}ms".format(
                        method, self.path, status or "-", (time.monotonic() - started) * 1000.0
                    )
                )
            if not self.close_connection and self._body_pending():
                self.close_connection = True
            if self.close_connection and self._body_pending():
                self._linger()

    def _route(self, app: App, method: str, raw_path: str, path: str, query_string: str) -> Response:
        route = None
        params: dict = {}
        allowed = False
        for candidate in ROUTES:
            m = candidate.regex.match(path)
            if m is None:
                continue
            if candidate.method != method:
                allowed = True
                continue
            route, params = candidate, m.groupdict()
            break
        if route is None:
            if allowed:
                return text_response(405, "Method Not Allowed")
            return text_response(404, "Not Found")
        sandbox_route = route.template.startswith("/_sandbox")
        if not sandbox_route:
            app.stats.count(f"{method} {route.template}")
        err = app.check_auth(self.headers.get("Authorization"), route.openai)
        if err is not None:
            return err.response()
        rule = None
        if not sandbox_route:
            rule = app.faults.take_http(method, (raw_path, path))
        if rule is not None and not rule.get("after_body"):
            return self._fault_response(rule)
        req = Request(self, method, path, urllib.parse.parse_qs(query_string, keep_blank_values=True), params)
        try:
            resp = getattr(app, route.handler)(req)
        except ApiError as err:
            if route.openai and err.style == "text":
                err.style = "openai"
            resp = err.response()
        if rule is not None:
            resp.discard()
            return self._fault_response(rule)
        if not sandbox_route:
            delay = app.faults.extra_latency(path)
            if delay > 0:
                time.sleep(delay)
        return resp

    @staticmethod
    def _fault_response(rule: dict) -> Response:
        if rule.get("drop"):
            resp = Response(0)
            resp.drop = True
            return resp
        status = int(rule["status"])
        message = rule.get("message")
        if status in (429, 503):
            default = (
                "Too many requests. Please retry later."
                if status == 429
                else "Service temporarily unavailable."
            )
            err = ApiError(
                status,
                message or default,
                style="busy",
                retry_after=rule.get("retry_after"),
                retry_after_header=rule.get("retry_after_header", True),
            )
            return err.response()
        return text_response(status, message or http_reasons.get(status, "Error"))

    def _send(self, resp: Response) -> None:
        self.send_response(resp.status)
        for name, value in resp.headers:
            self.send_header(name, value)
        streaming = resp.stream is not None
        if streaming:
            self.send_header("Transfer-Encoding", "chunked")
        elif resp.status != 204 and resp.status >= 200:
            self.send_header("Content-Length", str(len(resp.body)))
        if self.close_connection or self._body_pending():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self._headers_sent = True
        if not streaming:
            if resp.body and resp.status != 204:
                self.wfile.write(resp.body)
            return
        stream = resp.stream
        try:
            for piece in stream:
                if piece is Response.DROP:
                    self._drop()
                    return
                if piece:
                    self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        finally:
            resp.discard()

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _linger(self) -> None:
        """Close gracefully while the client may still be sending a body we will not read."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                if not self.connection.recv(65536):
                    break
        except OSError:
            pass


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = compat.reuse_address()  # never on Windows: a busy port must stay busy
    request_queue_size = 128

    def __init__(self, address: tuple, handler: type, app: App, family: int = socket.AF_INET) -> None:
        self.address_family = family
        self.app = app
        super().__init__(address, handler)

    def server_bind(self) -> None:
        compat.exclusive_address(self.socket)
        super().server_bind()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout)):
            return
        super().handle_error(request, client_address)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------

EPILOG = """\
API (relative to the printed base_url; /ai/v1/... is accepted too):
  POST   /files                         upload JSONL (multipart: file, purpose=batch,
                                        expires_after[anchor], expires_after[seconds]) -> 201
  GET    /files                         ?after&limit&order&purpose&search
  GET    /files/{id}                    DELETE /files/{id}
  GET    /files/{id}/content            ?skip&limit&search; X-Incomplete, X-Last-Line
  GET    /files/{id}/cost-estimate      ?completion_window=24h|1h
  POST   /batches                       {input_file_id, endpoint, completion_window, metadata} -> 201
  GET    /batches                       ?after&limit&status&search&completion_window&include
  GET    /batches/{id}                  DELETE /batches/{id} -> 204
  POST   /batches/{id}/cancel           POST /batches/{id}/retry
  POST   /batches/{id}/retry-requests   {"request_ids": [...]}
  GET    /batches/{id}/results          GET /batches/{id}/analytics
  GET    /models

Sandbox-only endpoints (same auth; not part of the real API, never counted in stats):
  GET  /_sandbox/faults         read the fault document (plus remaining counters)
  PUT  /_sandbox/faults         replace the fault document (JSON body; {} clears it)
  GET  /_sandbox/stats          {"requests": {"POST /v1/files": 3, ...}, "files": N,
                                 "batches": N, "uploads_received": N}
                                requests: API calls by method + route template (faulted
                                ones included); files: stored input files; batches: not
                                deleted; uploads_received: uploads whose body was read
  POST /_sandbox/reset-stats    zero the request counters and uploads_received
  POST /_sandbox/reset          forget every file, batch and request, restore the faults
                                given at start, zero the counters (a fresh server, without
                                a restart; the test suite shares one server this way)

Fault document (all fields optional; --faults, DW_SANDBOX_FAULTS or PUT /_sandbox/faults):
  {"fail_rate": 0.2,                    fraction of requests that fail (hash of request id)
   "fail_custom_ids": ["req-3"],        these custom_ids always fail
   "fail_status": 500,                  500 -> RetriableHttpStatus, 400 -> NonRetriableHttpStatus
   "http": [{"method": "POST", "path": "/v1/files", "status": 429, "times": 2,
             "retry_after": 1, "retry_after_header": true, "after_body": false,
             "message": "optional body text"},
            {"path": "/v1/batches", "drop": true, "after_body": true, "times": 1}],
   "drop_content_after_lines": 5, "drop_content_times": 1,
   "duplicate_output_line": true, "late_line_after_cancel": true,
   "extra_latency": 2.0, "extra_latency_paths": ["/v1/batches"],
   "slow_upload_read": {"after_bytes": 1048576, "pause": 5}}
  An http rule answers instead of the route ("path" is a prefix, "*" matches all; without
  "times" it never wears out). With "after_body": true the route runs first and its reply is
  replaced. "drop": true closes the connection without a reply.
  drop_content_after_lines: the next drop_content_times (default 1) unlimited content
  downloads send N lines plus half a line, then close without the final chunk.
  duplicate_output_line: output-file downloads repeat their first line.
  late_line_after_cancel: after a cancel, one in-flight request still completes.
  extra_latency: seconds before every /v1 reply (only under extra_latency_paths if given).
  slow_upload_read: pause reading an upload body once, after after_bytes bytes.

Exit codes:
  0  clean shutdown (SIGTERM or SIGINT)
  2  bad arguments, invalid fault document, data dir not usable or port not free

Examples:
  python3 scripts/sandbox_server.py
  python3 scripts/sandbox_server.py --port 0 --data-dir /tmp/sb --api-key sk-test-123 --latency 0.05
  python3 scripts/sandbox_server.py --upstream http://localhost:11434 --upstream-model llama3.2
  python3 scripts/sandbox_server.py --faults '{"fail_rate": 0.1}' --window-scale 0.001
  DOUBLEWORD_BASE_URL=http://127.0.0.1:8089/v1 DOUBLEWORD_API_KEY=anything <client>
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sandbox_server.py",
        description="Local sandbox of the Doubleword Batch API (files, batches, content streaming, "
        "cancel/retry), with a deterministic built-in model and fault injection. "
        "Prints one JSON line {base_url, port, pid, data_dir} on stdout when ready.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("server")
    g.add_argument(
        "--host", default=None, help="bind address (default 127.0.0.1; non-loopback prints a warning)"
    )
    g.add_argument("--port", type=int, default=8089, help="port (default 8089; 0 picks a free port)")
    g.add_argument("--data-dir", default=".sandbox", help="directory for the SQLite state (default .sandbox)")
    g.add_argument(
        "--api-key", default=None, help="require 'Authorization: Bearer KEY' (or env DW_SANDBOX_API_KEY)"
    )
    g.add_argument(
        "--forbidden-key", default=None, help="a key that is answered with 403 (wrong key purpose)"
    )
    g.add_argument("-v", "--verbose", action="store_true", help="log each request line on stderr")
    g = p.add_argument_group("models and limits")
    g.add_argument("--models", default=None, help="comma-separated chat models (replaces the built-in list)")
    g.add_argument("--embedding-models", default=None, help="comma-separated embedding models")
    g.add_argument(
        "--max-file-bytes", type=int, default=200_000_000, help="upload size limit (default 200000000)"
    )
    g.add_argument(
        "--max-requests-per-file",
        type=int,
        default=50000,
        help="lines per file (default 50000; 0 = no limit)",
    )
    g.add_argument(
        "--max-body-bytes", type=int, default=10 * 1024 * 1024, help="request body limit (default 10 MiB)"
    )
    g = p.add_argument_group("processing")
    g.add_argument(
        "--validating-delay", type=float, default=0.1, help="seconds a new batch stays validating (0.1)"
    )
    g.add_argument(
        "--finalizing-delay", type=float, default=0.05, help="seconds a batch stays finalizing (0.05)"
    )
    g.add_argument("--concurrency", type=int, default=8, help="worker threads (default 8)")
    g.add_argument("--latency", type=float, default=0.0, help="seconds per request (default 0)")
    g.add_argument(
        "--latency-jitter",
        type=float,
        default=0.0,
        help="extra 0..J seconds per request (stable per request)",
    )
    g.add_argument("--window-scale", type=float, default=1.0, help="multiply completion windows (e.g. 0.001)")
    g.add_argument(
        "--faults",
        default=None,
        help="fault document as JSON, or @path to a JSON file (env DW_SANDBOX_FAULTS)",
    )
    g = p.add_argument_group("upstream (instead of the built-in model)")
    g.add_argument(
        "--upstream", default=None, help="OpenAI-compatible base URL; each line is POSTed to URL + line url"
    )
    g.add_argument(
        "--upstream-api-key",
        default=None,
        help="Bearer key for the upstream (or env DW_SANDBOX_UPSTREAM_API_KEY)",
    )
    g.add_argument("--upstream-model", default=None, help="replace body.model with this name when forwarding")
    g.add_argument(
        "--upstream-timeout", type=float, default=300.0, help="seconds per upstream call (default 300)"
    )
    g.add_argument("--upstream-retries", type=int, default=3, help="retries for 5xx/429/408/404 (default 3)")
    p.add_argument("--version", action="version", version="%(prog)s " + __version__)
    return p


def _is_loopback(host: str) -> bool:
    return urls.is_loopback(host)


def main(argv: list | None = None) -> int:
    args = build_parser().parse_args(argv)
    host = args.host or "127.0.0.1"
    if not _is_loopback(host):
        log(f"WARNING: binding {host} exposes the sandbox beyond this machine")
    faults = Faults()
    raw_faults = args.faults if args.faults is not None else os.environ.get("DW_SANDBOX_FAULTS")
    if raw_faults:
        try:
            if raw_faults.startswith("@"):
                with open(raw_faults[1:], encoding="utf-8") as fh:
                    raw_faults = fh.read()
            faults.replace(json.loads(raw_faults))
        except (OSError, ValueError) as err:
            log(f"invalid fault document: {err}")
            return 2
    args.host = host
    cfg = Config(args)
    try:
        app = App(cfg, faults)
    except (OSError, sqlite3.Error) as err:
        log(f"cannot open data dir {cfg.data_dir}: {err}")
        return 2
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        server = SandboxHTTPServer((host, cfg.port), Handler, app, family)
    except OSError as err:
        log(f"cannot bind {host}:{cfg.port}: {err}")
        return 2
    port = server.server_address[1]
    app.engine.start()
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)  # both exist on Windows too (SIGHUP and the rest do not)
    signal.signal(signal.SIGINT, on_signal)
    serve = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    serve.start()
    url_host = host
    if host in ("0.0.0.0", ""):
        url_host = "127.0.0.1"
    elif host == "::":
        url_host = "[::1]"
    elif ":" in host:
        url_host = f"[{host}]"
    ready = {
        "base_url": f"http://{url_host}:{port}/v1",
        "port": port,
        "pid": os.getpid(),
        "data_dir": cfg.data_dir,
    }
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    if cfg.verbose:
        log("listening on {} (data dir {})".format(ready["base_url"], cfg.data_dir))
    while not stop.wait(0.1):
        pass
    if cfg.verbose:
        log("shutting down")
    server.shutdown()
    server.server_close()
    app.engine.stop()
    app.store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
