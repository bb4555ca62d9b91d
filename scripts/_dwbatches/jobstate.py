"""Durable job state: one JSON document per job directory, written atomically and locked.

A job directory holds ``job.json`` (the state), ``job.lock`` (an advisory lock held by the
process working on the job), and the job's own files (retry inputs, downloaded results).
Every write goes to a temp file that is fsynced and renamed over the old one, so a
``kill -9`` at any moment leaves either the old or the new state, never a torn one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from typing import Any, Dict, Iterator, List, Optional

from . import compat
from .errors import EXIT_API, JobError
from .files import atomic_output, refuse_overwrite, same_file  # noqa: F401 (the last two lived here)

STATE_FILE = "job.json"
LOCK_FILE = "job.lock"
FORMAT_VERSION = 1
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "expired"})


fsync_dir = compat.fsync_dir


def atomic_write_bytes(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically (see ``files.atomic_output``); the directory
    must exist. A failure is a FileSystemError naming ``path``."""
    with atomic_output(path, mode, make_dirs=False) as fh:
        fh.write(data)


def atomic_write_json(path: str, doc: Any, mode: int = 0o600) -> None:
    atomic_write_bytes(path, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"), mode)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    compat.set_mode(path, 0o700)


def default_job_dir(input_path: str) -> str:
    """``data.jsonl`` → ``data.dwjob`` beside it."""
    base = os.path.abspath(input_path)
    stem, ext = os.path.splitext(base)
    return (stem if ext else base) + ".dwjob"


class Job:
    """A job directory. Use as a context manager to hold its lock."""

    def __init__(self, path: str):
        self.dir = os.path.abspath(path)
        self.state: Dict[str, Any] = {}
        self._lock: Optional[compat.FileLock] = None

    # -- files ------------------------------------------------------------------------------
    @property
    def state_path(self) -> str:
        return os.path.join(self.dir, STATE_FILE)

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    def exists(self) -> bool:
        return os.path.exists(self.state_path)

    def _check_dir(self) -> None:
        if os.path.exists(self.dir) and not os.path.isdir(self.dir):
            raise JobError(f"{self.dir} is a file, not a job directory",
                           hint="Pass the job directory printed by submit.py (the 'job' field, e.g. data.dwjob), "
                                "not the input file.")

    def load(self) -> Dict[str, Any]:
        self._check_dir()
        try:
            with open(self.state_path, encoding="utf-8") as fh:
                self.state = json.load(fh)
        except FileNotFoundError:
            raise JobError(f"no job found at {self.dir}",
                           hint="Pass the job directory printed by submit.py (the 'job' field).") from None
        except ValueError as exc:
            raise JobError(f"the job file {self.state_path} is not valid JSON: {exc}",
                           hint="It was written atomically, so this means it was edited by hand; restore it.") from None
        if self.state.get("format") != FORMAT_VERSION:
            raise JobError(f"{self.state_path} has an unknown format {self.state.get('format')!r}",
                           hint="It was written by a different version of doubleword-batches.")
        return self.state

    def save(self) -> None:
        self.state["updated_at"] = time.time()
        atomic_write_json(self.state_path, self.state)

    # -- locking ----------------------------------------------------------------------------
    def lock(self, wait: float = 10.0) -> None:
        self._check_dir()
        make_private_dir(self.dir)
        lock = compat.FileLock(self.path(LOCK_FILE))
        if not lock.acquire(wait):
            raise JobError(f"another process is working on the job at {self.dir}",
                           hint="Wait for it to finish (or stop it), then run the command again.",
                           exit_code=EXIT_API)
        self._lock = lock

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Job:
        self.lock()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unlock()

    # -- state helpers ----------------------------------------------------------------------
    @classmethod
    def create_state(cls, input_path: str, input_sha256: str, completion_window: str,
                     metadata: Dict[str, str], requests: int, bytes_: int) -> Dict[str, Any]:
        now = time.time()
        return {
            "format": FORMAT_VERSION,
            "job_id": str(uuid.uuid4()),
            "created_at": now,
            "updated_at": now,
            "input": {"path": os.path.abspath(input_path), "sha256": input_sha256, "requests": requests,
                      "bytes": bytes_},
            "completion_window": completion_window,
            "metadata": metadata,
            "source": None,  # {"kind": "csv", "path": ..., "id_column": ...} when built from a CSV
            "rounds": [],
            "fetch": {},
        }

    def chunks(self) -> Iterator[Dict[str, Any]]:
        for rnd in self.state.get("rounds", []):
            yield from rnd.get("chunks", [])

    def batch_ids(self) -> List[str]:
        return [c["batch_id"] for c in self.chunks() if c.get("batch_id")]


def new_intent_id() -> str:
    return str(uuid.uuid4())
