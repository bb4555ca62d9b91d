"""The claim on an input: one submit of the same contents at a time.

A new job is refused when the server already holds batches of the same file
(``lookup.earlier_submissions``); but that look runs before the upload, and the batches come
after it, so two submits of one file into two job directories started together would both
find nothing and both pay for every request. A submit therefore claims its input's contents
before that look and holds the claim until its batches are recorded (``submit_or_resume``):

- the claim is an exclusive lock (``compat.FileLock``) on
  ``.dwb-claims/<first 16 hex digits of the sha256>.lock`` in the input's folder (its real
  path: the one place that two submits of the same file share; a copy elsewhere is caught by
  the server-side look once the first job's batches exist);
- a submit that dies, even by ``kill -9``, leaves no claim behind: flock (POSIX) and msvcrt
  (Windows) locks end with their holder's process; an exclusive lock file (where neither
  exists) names its holder's pid and is taken over once that process is gone;
- beside it, ``<...>.json`` says who holds or last held it (job directory, pid, host,
  since): written atomically once the lock is taken, and left after it is released, so that
  a later refusal names the job directory that submitted the file (``previous``: the holder
  before this one);
- a submit that finds the claim held for another job directory is refused at once (exit 2,
  nothing sent), naming it; held for its own job directory (the same job submitted twice at
  once), it waits as long as for the job's lock (``errors.LOCK_WAIT``), then stops as busy
  (exit 1); a folder where no claim can be written (read-only) is a warning event and the
  submit goes on with the server-side look alone.

    with InputClaim(input_path, sha256, job_dir) as claim:
        claim.previous                                # {"job", "pid", ...}: who held it before, or None
        ...                                           # look for earlier submissions, submit
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Dict, Optional

from ..core import clock, compat, events
from ..core.commands import command, display_path
from ..core.errors import LOCK_WAIT, JobError, busy_error
from ..core.files import atomic_write_json, make_private_dir, same_file

CLAIMS_DIR = ".dwb-claims"
POLL = 0.1  # seconds between tries while the claim is busy
HOLDER_GRACE = 2.0  # seconds a new holder may take to write who it is


def claim_paths(input_path: str, sha256: str) -> Dict[str, str]:
    folder = os.path.join(os.path.dirname(os.path.realpath(input_path)), CLAIMS_DIR)
    key = sha256[:16]
    return {"folder": folder, "lock": os.path.join(folder, key + ".lock"), "info": os.path.join(folder, key + ".json")}


def _read_info(path: str) -> Optional[Dict[str, Any]]:
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("job"), str) else None


class InputClaim:
    """``with InputClaim(input_path, sha256, job_dir):`` holds the claim (see the module docstring)."""

    def __init__(self, input_path: str, sha256: str, job_dir: str):
        self.input_path = input_path
        self.paths = claim_paths(input_path, sha256)
        self.job_dir = os.path.abspath(job_dir)
        self._lock: Optional[compat.FileLock] = None
        self.previous: Optional[Dict[str, Any]] = None  # who held it last, before this submit

    def _current_holder(self) -> Optional[Dict[str, Any]]:
        """The holder the info file names, if it says who holds the lock now: written by a
        process that is alive, no earlier than the lock was taken."""
        info = _read_info(self.paths["info"])
        if info is None:
            return None
        try:
            taken = os.stat(self.paths["lock"]).st_mtime
        except OSError:
            return None
        mine = info.get("host") in (None, socket.gethostname())
        alive = not mine or not isinstance(info.get("pid"), int) or compat.pid_alive(info["pid"])
        recent = isinstance(info.get("since"), (int, float)) and info["since"] >= taken - 2.0
        return info if alive and recent else None

    def take(self) -> None:
        try:
            make_private_dir(self.paths["folder"])
            lock = compat.FileLock(self.paths["lock"])
            got = lock.try_acquire()
        except OSError as exc:
            events.warning(
                f"cannot claim {display_path(self.input_path)} for this submit "
                f"({exc.strerror or exc}); a submit of the same file started at this moment would not be noticed"
            )
            return
        started = time.monotonic()
        while not got:
            holder = self._current_holder()
            ours = holder is not None and same_file(holder["job"], self.job_dir)
            if holder is not None and not ours:
                raise self._refusal(holder)
            # the wait for a busy job is scaled like every such wait (clock.py); the grace for a
            # new holder to write its name is the other process's real time
            limit = LOCK_WAIT * clock.scale() if ours else HOLDER_GRACE
            if time.monotonic() - started >= limit:
                if ours:
                    raise busy_error(f"the job at {self.job_dir}")
                raise self._refusal(None)
            clock.sleep(POLL)
            got = lock.try_acquire()
        self._lock = lock
        self.previous = _read_info(self.paths["info"])
        try:
            atomic_write_json(
                self.paths["info"],
                {
                    "job": self.job_dir,
                    "input": os.path.abspath(self.input_path),
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": round(time.time(), 3),
                },
            )
        except OSError as exc:  # the lock holds all the same; only the name of the job is missing
            events.warning(f"cannot write {self.paths['info']} ({exc.strerror or exc})")

    def _refusal(self, holder: Optional[Dict[str, Any]]) -> JobError:
        name = display_path(self.input_path)
        if holder is None:
            return JobError(
                f"{name} is being submitted right now by another command (its job directory is not known "
                "yet); a second job would pay for every request again. Nothing was sent",
                hint="Wait for the other submit to finish. To submit the file again anyway after that (and pay "
                "again), add --resubmit.",
            )
        job = display_path(holder["job"])
        return JobError(
            f"{name} is being submitted right now, with the same contents, by the job at {job} "
            f"(process {holder.get('pid')}); a second job would pay for every request again. Nothing was sent",
            hint=f"Follow that job: {command('poll.py', '--job', job)}. To submit the file again anyway once "
            "it has finished (and pay again), add --resubmit.",
        )

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> InputClaim:
        self.take()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
