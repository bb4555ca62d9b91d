"""SQLite state: the schema, the Store (a pool of read connections, one lock serialising
writes) and what is derived from rows (request counts, a batch's status).

State lives in ``sandbox.db`` (WAL) inside the data dir; a restarted sandbox on the same
directory carries on where it stopped. The database is created 0600 (SQLite gives its -wal and
-shm files the database's mode), and one made by an earlier version is made 0600.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sqlite3
import threading
import time
import uuid
from typing import Any, Dict, Iterator, Optional, Tuple

from _dwbatches.core import compat

TERMINAL_STATUSES = ("completed", "failed", "cancelled")


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
    reasoning_tokens INTEGER,
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
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | compat.O_BINARY, 0o600))  # SQLite keeps the mode
        for name in (path, path + "-wal", path + "-shm"):
            if os.path.exists(name):
                compat.set_mode(name, 0o600)
        conn = self._connect()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        columns = {r[1] for r in conn.execute("PRAGMA table_info(requests)")}
        if "reasoning_tokens" not in columns:  # a data dir of an earlier version
            conn.execute("ALTER TABLE requests ADD COLUMN reasoning_tokens INTEGER")
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

    def checkout(self) -> sqlite3.Connection:
        """A pooled connection inside a read transaction (one snapshot) that the caller keeps,
        e.g. for as long as a download streams; hand it back with ``checkin``."""
        conn = self._get()
        try:
            conn.execute("BEGIN")
        except BaseException:
            self._put(conn)
            raise
        return conn

    def checkin(self, conn: sqlite3.Connection) -> None:
        """Give back a connection from ``checkout`` (its transaction is rolled back)."""
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        self._put(conn)

    def clear(self) -> None:
        """Forget every file, batch and request; ids and sequences start afresh."""
        with self.write() as conn:
            for table in ("requests", "templates", "batches", "files"):
                conn.execute(f"DELETE FROM {table}")
            conn.execute("DELETE FROM sqlite_sequence")
            _ENDED_COUNTS.clear()
            self._done_seq = 0
            self._last_done_ts = 0.0

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                break


# The counts of batches whose every request has ended, with what proves them current (see
# ended_stamp): counting a finished 50,000-request batch's rows again at each listing would
# make the listing of a ten-million-request job take seconds.
_ENDED_COUNTS: Dict[str, Tuple[Tuple[Any, ...], dict]] = {}
_ENDED_STATES = ("completed", "failed", "canceled")


def ended_stamp(conn: sqlite3.Connection, batch_id: str) -> Optional[Tuple[Any, ...]]:
    """None while a request of the batch is pending or running; else the last done_seq of each
    ended state (index look-ups): a requeue puts requests back to pending, and their new end
    gives them a later done_seq, so equal stamps mean equal counts."""
    if conn.execute(
        "SELECT 1 FROM requests WHERE batch_id = ? AND state IN ('pending', 'in_progress') LIMIT 1", (batch_id,)
    ).fetchone():
        return None
    return tuple(
        conn.execute(
            "SELECT done_seq FROM requests WHERE batch_id = ? AND state = ? ORDER BY done_seq DESC LIMIT 1",
            (batch_id, state),
        ).fetchone()
        for state in _ENDED_STATES
    )


def request_counts(conn: sqlite3.Connection, batch_id: str) -> dict:
    stamp = ended_stamp(conn, batch_id)
    known = _ENDED_COUNTS.get(batch_id)
    if stamp is not None and known is not None and known[0] == stamp:
        return dict(known[1])
    counts = {"pending": 0, "in_progress": 0, "completed": 0, "failed": 0, "canceled": 0}
    for state, n in conn.execute("SELECT state, COUNT(*) FROM requests WHERE batch_id = ? GROUP BY state", (batch_id,)):
        counts[state] = n
    if stamp is not None and not counts["pending"] and not counts["in_progress"]:
        _ENDED_COUNTS[batch_id] = (stamp, dict(counts))
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
