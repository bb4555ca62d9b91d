"""The answer store (``.dwb-answers/answers.sqlite3`` beside the job directories): the good
answers of a folder's jobs, keyed by the request that got them (``request_key``: its endpoint
and body, canonical). No paths (jobs by directory name), never the key; bounded (least used
dropped first); WAL and a busy timeout for commands at once; a job keeps the keys of what it
sent (``keys_path``), so a deleted store is made again from the job directories. See
ARCHITECTURE.md ("Answers at hand") and ``results.answerreuse``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from typing import Any, Dict, Iterable, Iterator, Optional, Sequence, Set, Tuple

from ..core import clock, compat, events
from ..core.files import make_private_dir

STORE_DIR = ".dwb-answers"
DB_NAME = "answers.sqlite3"
DEFAULT_LIMIT = 1_000_000_000  # bytes of answer lines
BUSY_WAIT = 60.0  # seconds a command waits for another one's write
TOUCH_AFTER = 86400.0  # a reused answer's last use is recorded at most once a day
BATCH = 500  # keys or ids per statement
SCHEMA = 1
# A job's own files (``<job>/reuse/``): reused answers, copies, copies' answers (see answerreuse).
REUSE_DIR = "reuse"
JOB_FILES = ("reused.jsonl", "copies.jsonl", "copies.results.jsonl")


def _number(text: str) -> Any:
    value = float(text)
    return int(value) if value.is_integer() and abs(value) < 1e18 else value


_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


_decode = json.JSONDecoder(parse_float=_number).decode


def parse_line(raw: bytes) -> Any:
    """A request line (UTF-8), parsed with floats that have no fraction as integers."""
    return _decode(raw.decode("utf-8"))


def request_key(obj: Dict[str, Any]) -> bytes:
    """The store's key of a request line parsed by ``parse_line``."""
    return hashlib.sha256(_canonical([obj.get("url"), obj.get("body")]).encode("ascii")).digest()[:16]


def deterministic(obj: Dict[str, Any]) -> bool:
    """Whether asking again gives the same answer: temperature 0, or an embedding. Without a
    temperature a request samples (the server's default)."""
    if obj.get("url") == "/v1/embeddings":
        return True
    body = obj.get("body")
    temp = body.get("temperature") if isinstance(body, dict) else None
    return isinstance(temp, (int, float)) and not isinstance(temp, bool) and temp == 0


def strip_custom_id(raw: bytes, obj: Dict[str, Any]) -> bytes:
    """A result line as stored: without its custom_id (cut from the bytes where the line holds
    that one key once, as the server writes it; else written anew)."""
    raw = raw.strip()
    if raw.count(b'"custom_id"') == 1:
        for text in {json.dumps(obj["custom_id"]), json.dumps(obj["custom_id"], ensure_ascii=False)}:
            for sep in (b":", b": "):
                pair = b'"custom_id"' + sep + text.encode("utf-8")
                at = raw.find(pair)
                if at > 0:
                    left, right = raw[:at].rstrip(), raw[at + len(pair) :].lstrip()
                    if right.startswith(b","):
                        right = right[1:].lstrip()
                    elif left.endswith(b","):
                        left = left[:-1]
                    return left + right
    return json.dumps({k: v for k, v in obj.items() if k != "custom_id"}, ensure_ascii=False).encode("utf-8")


def with_custom_id(rest: bytes, custom_id: str, origin: Dict[str, Any]) -> bytes:
    """A stored line as the result line of ``custom_id``, marked ``dwb_reused`` with where its
    answer came from ({job, job_id, custom_id})."""
    head = b'{"custom_id":' + json.dumps(custom_id).encode("ascii") + b',"dwb_reused":'
    head += json.dumps(origin, ensure_ascii=False).encode("utf-8")
    body = rest.strip()
    return head + (b"}" if body == b"{}" else b"," + body[1:])


class Found:
    """A stored answer: its line (without custom_id), where it came from, its last use."""

    __slots__ = ("line", "job", "job_id", "custom_id", "used_at")

    def __init__(self, line: bytes, job: str, job_id: str, custom_id: str, used_at: float):
        self.line, self.job, self.job_id, self.custom_id, self.used_at = line, job, job_id, custom_id, used_at

    def origin(self) -> Dict[str, Any]:
        return {"job": self.job, "job_id": self.job_id, "custom_id": self.custom_id}


def store_folder(job_dir: str) -> str:
    """The folder whose store a job uses: the one holding its directory."""
    return os.path.dirname(os.path.abspath(job_dir))


def store_path(folder: str) -> str:
    return os.path.join(os.path.abspath(folder), STORE_DIR, DB_NAME)


class UntrustedStore(Exception):
    pass


_TABLES = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value)",
    "CREATE TABLE IF NOT EXISTS answers (id INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, line BLOB NOT NULL, "
    "job TEXT NOT NULL, job_id TEXT NOT NULL, custom_id TEXT NOT NULL, size INTEGER NOT NULL, used_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS answers_used ON answers (used_at, id)",
    "CREATE TABLE IF NOT EXISTS batches (batch_id TEXT PRIMARY KEY, job TEXT, job_id TEXT, answers INTEGER, at REAL)",
    "CREATE TRIGGER IF NOT EXISTS answers_added AFTER INSERT ON answers BEGIN "
    "UPDATE meta SET value = value + NEW.size WHERE name = 'bytes'; END",
    "CREATE TRIGGER IF NOT EXISTS answers_dropped AFTER DELETE ON answers BEGIN "
    "UPDATE meta SET value = value - OLD.size WHERE name = 'bytes'; END",
    f"INSERT OR IGNORE INTO meta VALUES ('schema', {SCHEMA})",
    f"INSERT OR IGNORE INTO meta VALUES ('limit', {DEFAULT_LIMIT})",
    "INSERT OR IGNORE INTO meta VALUES ('bytes', 0)",
)


class AnswerStore:
    """One connection to a folder's store (``open``); ``created``: it was made just now."""

    def __init__(self, folder: str):
        self.folder = os.path.abspath(folder)
        self.path = store_path(folder)
        self.created = False
        self.dropped = 0  # answers dropped to keep within the limit, through this connection
        self.db: Optional[sqlite3.Connection] = None

    @classmethod
    def open(cls, folder: str, create: bool = True) -> Optional[AnswerStore]:
        """The store of ``folder``, made when missing (``create``); None when there is none or it
        cannot be used (a warning event: the command goes on without it)."""
        store = cls(folder)
        try:
            store._connect(create)
        except (OSError, sqlite3.Error, UntrustedStore) as exc:
            store.close()
            if not isinstance(exc, FileNotFoundError) or create:
                events.warning(f"the answer store {store.path} cannot be used ({exc}); every request is sent")
            return None
        return store

    def _connect(self, create: bool) -> None:
        folder = os.path.dirname(self.path)
        if not os.path.exists(self.path):
            if not create:
                raise FileNotFoundError(self.path)
            make_private_dir(folder)
            with contextlib.suppress(FileExistsError):  # another command made it meanwhile
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | compat.O_BINARY, 0o600))
                self.created = True
        for path in (folder, self.path):
            why = compat.untrusted_by(os.stat(path))
            if why:
                raise UntrustedStore(f"{path} cannot be trusted: {why}")
        self.db = sqlite3.connect(self.path, timeout=max(1.0, BUSY_WAIT * clock.scale()), isolation_level=None)
        with contextlib.suppress(sqlite3.DatabaseError):  # a file system without shared memory: a rollback journal
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        with self.transaction() as db:
            for stmt in _TABLES:
                db.execute(stmt)
        if self._meta("schema") != SCHEMA:
            raise sqlite3.DatabaseError(f"written by another version (schema {self._meta('schema')})")

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def __enter__(self) -> AnswerStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        assert self.db is not None
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _meta(self, name: str) -> Any:
        assert self.db is not None
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def lookup(self, keys: Sequence[bytes]) -> Dict[bytes, Found]:
        """The stored answers of those ``keys`` the store holds."""
        assert self.db is not None
        found: Dict[bytes, Found] = {}
        for start in range(0, len(keys), BATCH):
            part = keys[start : start + BATCH]
            for key, line, job, job_id, cid, used in self.db.execute(
                "SELECT key, line, job, job_id, custom_id, used_at FROM answers "
                f"WHERE key IN ({','.join('?' * len(part))})",
                part,
            ):
                found[bytes(key)] = Found(bytes(line), job, job_id, cid, used)
        return found

    def touch(self, keys: Iterable[bytes]) -> None:
        """These answers were used now (their last use orders what a full store drops first)."""
        now = time.time()
        with self.transaction() as db:
            db.executemany("UPDATE answers SET used_at = ? WHERE key = ?", [(now, k) for k in keys])

    def known_batches(self) -> Set[str]:
        assert self.db is not None
        return {row[0] for row in self.db.execute("SELECT batch_id FROM batches")}

    def stats(self) -> Dict[str, Any]:
        assert self.db is not None
        db = self.db
        jobs = db.execute("SELECT job, job_id, COUNT(*) FROM answers GROUP BY job, job_id ORDER BY job").fetchall()
        return {
            "answers": db.execute("SELECT COUNT(*) FROM answers").fetchone()[0],
            "bytes": int(self._meta("bytes") or 0),
            "limit_bytes": int(self._meta("limit") or DEFAULT_LIMIT),
            "file_bytes": sum(os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p)),
            "batches_read": db.execute("SELECT COUNT(*) FROM batches").fetchone()[0],
            "jobs": [{"job": job, "job_id": job_id, "answers": n} for job, job_id, n in jobs],
        }

    def add_batch(self, batch_id: str, job: str, job_id: str, rows: Iterable[Tuple[bytes, bytes, str]]) -> int:
        """Add one batch's good answers, (key, line without custom_id, custom_id) each, and
        record it as read in; returns the answers added."""
        now = time.time()
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM batches WHERE batch_id = ?", (batch_id,)).fetchone():
                return 0  # another command read it in meanwhile
            added = db.executemany(
                "INSERT OR IGNORE INTO answers (key, line, job, job_id, custom_id, size, used_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                ((key, line, job, job_id, cid, len(line), now) for key, line, cid in rows),
            ).rowcount  # (the triggers' own changes are not counted)
            db.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?)", (batch_id, job, job_id, max(0, added), now))
            self._evict(db)
        return max(0, added)

    def _evict(self, db: sqlite3.Connection) -> int:
        """Over the limit: drop the answers used least recently, down to 90% of it."""
        limit, held = int(self._meta("limit") or DEFAULT_LIMIT), int(self._meta("bytes") or 0)
        if held <= limit:
            return 0
        excess = held - limit * 9 // 10
        ids = []
        for row_id, size in db.execute("SELECT id, size FROM answers ORDER BY used_at, id"):
            ids.append(row_id)
            excess -= size
            if excess <= 0:
                break
        for start in range(0, len(ids), BATCH):
            part = ids[start : start + BATCH]
            db.execute(f"DELETE FROM answers WHERE id IN ({','.join('?' * len(part))})", part)
        self.dropped += len(ids)
        return len(ids)

    def set_limit(self, limit: int) -> int:
        """A new limit in bytes; returns the answers dropped to meet it."""
        with self.transaction() as db:
            db.execute("UPDATE meta SET value = ? WHERE name = 'limit'", (int(limit),))
            return self._evict(db)

    def clear(self) -> int:
        """Drop every answer (the batches stay read in: they are not read in again) and give the
        space back; returns how many were dropped."""
        with self.transaction() as db:
            n = db.execute("DELETE FROM answers").rowcount
        assert self.db is not None
        with contextlib.suppress(sqlite3.OperationalError):  # busy: the space is given back later
            self.db.execute("VACUUM")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return max(0, n)


# -- the files a job keeps ---------------------------------------------------------------------


def job_file(job_dir: str, name: str) -> str:
    """``<job>/reuse/NAME``: one of ``JOB_FILES``, or a round's keys (``keys_path``)."""
    return os.path.join(job_dir, REUSE_DIR, name)


def keys_path(job_dir: str, round_no: int) -> str:
    return job_file(job_dir, f"keys-round-{round_no}.jsonl")


def key_line(custom_id: str, key: bytes, expect: Any) -> bytes:
    """One line of a keys file (``expect``: what the answer must be, ``answers.expectation``)."""
    return (
        f'[{json.dumps(custom_id)},"{key.hex()}",{"null" if expect is None else json.dumps(list(expect))}]\n'.encode()
    )


def read_keys(path: str) -> Iterator[Tuple[str, bytes, Any]]:
    """(custom_id, key, expectation) of each line of a keys file."""
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                cid, key, expect = json.loads(raw)
                yield cid, bytes.fromhex(key), tuple(expect) if isinstance(expect, list) else None
            except (ValueError, TypeError):
                continue


def clear_job_files(job_dir: str) -> None:
    """Remove what a job planned before kept (a job planned again)."""
    own_input = os.path.join(job_dir, "rounds", "round-1.jsonl")  # round 1's, when not every request was sent
    for path in [job_file(job_dir, n) for n in JOB_FILES] + [keys_path(job_dir, 1), own_input]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


__all__ = [
    "AnswerStore",
    "DEFAULT_LIMIT",
    "Found",
    "JOB_FILES",
    "STORE_DIR",
    "TOUCH_AFTER",
    "clear_job_files",
    "deterministic",
    "job_file",
    "key_line",
    "keys_path",
    "parse_line",
    "read_keys",
    "request_key",
    "store_folder",
    "store_path",
    "strip_custom_id",
    "with_custom_id",
]
