"""The job directory: the only code that reads or writes its record, ``job.json``.

A job directory (default ``<input stem>.dwjob`` beside the input) holds:

- ``job.json``: the record (``jobrecord.JobRecord``, whose docstring gives the schema),
  written atomically (temp file, fsync, rename), so a ``kill -9`` at any moment leaves the
  old or the new record, never a torn one;
- ``job.lock``: held by the process working on the job (``with Job(dir) as job:``);
- ``cancel.json``: written by ``cancel_batch.py --job`` without the lock, so that a submit
  running at that moment sees it (see ``jobrecord.Cancel``);
- ``rounds/round-N.jsonl``: the inputs of retry rounds; ``results/``: downloaded raw files.

Paths are stored relative to the job directory when they lie inside the project folder (the
working directory when the job lies inside it, else the folder that holds the job), absolute
otherwise; so a project folder moved or copied with its job keeps working. In memory every
path is absolute.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from typing import Any, Dict, Optional, overload

from ..core import clock, compat
from ..core.errors import LOCK_WAIT, ConfigError, JobError, busy_error
from ..core.files import atomic_write_json, make_private_dir
from .jobrecord import VERSION, Cancel, Fingerprint, InputInfo, JobRecord

STATE_FILE = "job.json"
LOCK_FILE = "job.lock"
CANCEL_FILE = "cancel.json"


# -- records ---------------------------------------------------------------------------------


# -- the directory ---------------------------------------------------------------------------


class Job:
    """A job directory. ``with Job(dir) as job:`` holds its lock; ``job.record`` is the record
    (after ``load()`` or ``create()``)."""

    def __init__(self, path: str):
        self.dir = os.path.abspath(path)
        self.record: JobRecord = JobRecord()
        self._lock: Optional[compat.FileLock] = None
        # saves from several threads (parallel uploads) are serialised, so that each one writes
        # every change made before it started: a later rename never undoes an earlier save
        self._save_lock = threading.RLock()
        # input files hashed by this process: path -> sha256 (never stored)
        self.verified_inputs: Dict[str, str] = {}

    # -- files ---------------------------------------------------------------------------
    @property
    def state_path(self) -> str:
        return os.path.join(self.dir, STATE_FILE)

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    def exists(self) -> bool:
        return os.path.exists(self.state_path)

    def _check_dir(self) -> None:
        if os.path.exists(self.dir) and not os.path.isdir(self.dir):
            raise JobError(
                f"{self.dir} is a file, not a job directory",
                hint="Pass the job directory printed by submit.py (the 'job' field, e.g. data.dwjob), "
                "not the input file.",
            )

    # -- paths ---------------------------------------------------------------------------
    @overload
    def resolve(self, stored: str) -> str: ...
    @overload
    def resolve(self, stored: None) -> None: ...
    @overload
    def resolve(self, stored: Optional[str]) -> Optional[str]: ...
    def resolve(self, stored: Optional[str]) -> Optional[str]:
        """A stored path as an absolute path (relative ones are relative to the job dir)."""
        if not stored:
            return stored
        if os.path.isabs(stored):
            return os.path.normpath(stored)
        return os.path.normpath(os.path.join(self.dir, stored))

    def project_folder(self) -> str:
        """The folder a job belongs to: the working directory when the job dir lies inside it
        (``--job jobs/x.dwjob`` run from the project, with inputs in ``data/``), unless that is
        the home folder or a file-system root; else the folder holding the job dir."""
        here = os.path.abspath(os.getcwd())
        broad = here == os.path.dirname(here) or _same_dir(here, os.path.expanduser("~"))
        if not broad and _inside(self.dir, here):
            return here
        return os.path.dirname(self.dir)

    def portable(self, path: Optional[str]) -> Optional[str]:
        """How a path is stored: relative to the job dir when it lies in the job's project
        folder (``project_folder``), else absolute."""
        if not path:
            return path
        path = os.path.abspath(path)
        project = self.project_folder()
        if not (_inside(path, project) or _inside(path, os.path.dirname(self.dir))):
            return path
        return os.path.relpath(path, self.dir).replace(os.sep, "/")

    def _check_owner(self) -> None:
        """A job directory (and its job.json) another user owns, or others may write, is not this
        user's record of what was sent and paid for: refused, not read (POSIX; compat.untrusted_by)."""
        for path, what in ((self.dir, "job directory"), (self.state_path, "job file")):
            try:
                why = compat.untrusted_by(os.stat(path))
            except OSError:
                continue  # missing: load says so
            if why:
                raise JobError(
                    f"the {what} {path} cannot be trusted: {why}",
                    hint="A job directory is yours alone (submit.py makes it 0700). If it came from someone "
                    "else, fetch its results with your own new job, or make it yours (chown, chmod go-w) "
                    "once you have checked its job.json.",
                )

    # -- load and save -------------------------------------------------------------------
    def load(self) -> JobRecord:
        self._check_dir()
        self._check_owner()
        try:
            with open(self.state_path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except FileNotFoundError:
            from ..core.commands import job_dirs_here

            here = job_dirs_here()
            raise JobError(
                f"no job found at {self.dir}",
                hint="Pass the job directory printed by submit.py (the 'job' field)"
                + (f"; job directories here: {', '.join(here)}." if here else "."),
                exit_code=4,
            ) from None
        except ValueError as exc:
            raise JobError(
                f"the job file {self.state_path} is not valid JSON: {exc}",
                hint="It was written atomically, so this means it was edited by hand; restore it.",
            ) from None
        if not isinstance(doc, dict) or (doc.get("format") != 1 and doc.get("version") not in (1, VERSION)):
            found = doc.get("version", doc.get("format")) if isinstance(doc, dict) else None
            raise JobError(
                f"{self.state_path} has an unknown format {found!r}",
                hint="It was written by a different version of doubleword-batches.",
            )
        try:
            rec = JobRecord.from_dict(doc)
            self._absolutize(rec)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:  # a field of the wrong kind
            raise JobError(
                f"the job file {self.state_path} is damaged: a field has the wrong form ({exc})",
                hint="It was written atomically, so this means it was edited by hand; restore it.",
            ) from None
        cancel = self.read_cancel()
        if cancel is not None and (rec.cancel is None or cancel.at > rec.cancel.at):
            rec.cancel = cancel
        self.record = rec
        return rec

    def _absolutize(self, rec: JobRecord) -> None:
        rec.input.path = self.resolve(rec.input.path) or ""
        if rec.source and rec.source.path:
            rec.source.path = self.resolve(rec.source.path)
        for rnd in rec.rounds:
            rnd.input_path = self.resolve(rnd.input_path) or ""
        if rec.results:
            for name in ("output", "errors", "csv"):
                setattr(rec.results, name, self.resolve(getattr(rec.results, name)))

    def save(self) -> None:
        self.require_lock()
        with self._save_lock:
            self._save()

    def _save(self) -> None:
        rec = self.record
        rec.updated_at = time.time()
        doc = rec.to_dict()
        doc["input"]["path"] = self.portable(rec.input.path)
        if rec.source and rec.source.path:
            doc["source"]["path"] = self.portable(rec.source.path)
        for rd, rnd in zip(doc["rounds"], rec.rounds):
            rd["input_path"] = self.portable(rnd.input_path)
        if rec.results:
            for name in ("output", "errors", "csv"):
                doc["results"][name] = self.portable(getattr(rec.results, name))
        atomic_write_json(self.state_path, doc)

    @classmethod
    def create_record(
        cls,
        input_path: str,
        fingerprint: Fingerprint,
        completion_window: str,
        metadata: Dict[str, str],
        requests: int,
        base_url: str,
    ) -> JobRecord:
        now = time.time()
        return JobRecord(
            job_id=str(uuid.uuid4()),
            created_at=now,
            updated_at=now,
            input=InputInfo(
                path=os.path.abspath(input_path),
                sha256=fingerprint.sha256,
                requests=requests,
                bytes=fingerprint.bytes,
                mtime=fingerprint.mtime,
            ),
            completion_window=completion_window,
            metadata=dict(metadata),
            base_url=base_url,
        )

    # -- cancel --------------------------------------------------------------------------
    def read_cancel(self) -> Optional[Cancel]:
        try:
            with open(self.path(CANCEL_FILE), encoding="utf-8") as fh:
                doc = json.load(fh)
        except (OSError, ValueError):
            return None
        return Cancel.from_dict(doc) if isinstance(doc, dict) else None

    def request_cancel(self) -> Cancel:
        """Record a cancel of every round the job has now (no lock needed: a submit holding the
        lock reads it before each batch it creates)."""
        cancel = Cancel(at=time.time(), rounds=len(self.record.rounds) or 1)
        atomic_write_json(self.path(CANCEL_FILE), cancel.to_dict())
        self.record.cancel = cancel
        return cancel

    def withdraw_cancel(self, previous: Optional[Cancel]) -> None:
        """Take back a cancel that stopped nothing (every batch had finished, none was left to
        create), so that the job is not reported as cancelled: ``previous`` is the cancel the
        job had before, if any."""
        if previous is not None:
            atomic_write_json(self.path(CANCEL_FILE), previous.to_dict())
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(CANCEL_FILE))
        self.record.cancel = previous

    def refresh_cancel(self) -> Optional[Cancel]:
        """Re-read a cancel written by another process since this one loaded the job."""
        cancel = self.read_cancel()
        if cancel is not None and (self.record.cancel is None or cancel.at > self.record.cancel.at):
            self.record.cancel = cancel
        return self.record.cancel

    # -- locking -------------------------------------------------------------------------
    def lock(self, wait: float = LOCK_WAIT) -> None:
        self._check_dir()
        if not os.path.isdir(self.dir):  # a new job: private from the start; an existing one keeps its mode
            make_private_dir(self.dir)
        lock = compat.FileLock(self.path(LOCK_FILE))
        if not lock.acquire(wait * clock.scale()):  # (scaled like every wait: see clock.py)
            raise busy_error(f"the job at {self.dir}")
        self._lock = lock

    def require_lock(self) -> None:
        """Fail at once unless this process holds the job lock: only the workflow layer takes
        it (``workflow.common.holding``); the functions below it work on a locked job."""
        if self._lock is None:
            raise RuntimeError(f"the job at {self.dir} is used without its lock (a bug: report it)")

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Job:
        self.lock()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unlock()


def open_job(path: str) -> Job:
    """The job at ``path`` (a job directory, or its job.json), loaded."""
    job = Job(path)
    if not os.path.isdir(job.dir) and os.path.isfile(path) and path.endswith(".json"):
        job = Job(os.path.dirname(os.path.abspath(path)))
    job.load()
    return job


def check_server(job: Job, base_url: str, new_job_hint: bool = False) -> None:
    """A job talks only to the server it was submitted to, and only when the user's own
    configuration names it: a job directory never chooses where the key goes (nor is its
    recorded URL ever shown with a user name or password in it)."""
    recorded = (job.record.base_url or "").rstrip("/")
    if not recorded:
        return
    from ..core.config import check_base_url  # (python-dotenv: only for commands that talk to the API)

    recorded = check_base_url(recorded, allow_insecure_http=True, source="job")
    if recorded != base_url.rstrip("/"):
        from ..core.commands import display_path
        from ..core.rehearsal import base_url_of

        if recorded == base_url_of():
            raise ConfigError(
                f"the job at {display_path(job.dir)} was submitted to the rehearsal sandbox ({recorded}), but this "
                "command talks to the server your configuration names",
                hint="Add --sandbox to talk to the rehearsal sandbox again; for the real run, submit the input as a "
                "new job (--job NEW_DIR).",
            )
        raise ConfigError(
            f"the job at {display_path(job.dir)} was submitted to {recorded}, but your configuration points at "
            f"{base_url}; a job talks only to its own server, and only when you name it",
            hint=f"If {recorded} is a server you trust with this key, name it: add --base-url {recorded} (or set "
            "DOUBLEWORD_BASE_URL), with its key in DOUBLEWORD_API_KEY"
            + ("; or pass --job NEW_DIR to submit to this server as a new job." if new_job_hint else "."),
        )


def default_job_dir(input_path: str) -> str:
    """``data.jsonl`` → ``data.dwjob`` beside it."""
    base = os.path.abspath(input_path)
    stem, ext = os.path.splitext(base)
    return (stem if ext else base) + ".dwjob"


def new_intent_id() -> str:
    return str(uuid.uuid4())


def _inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([folder, path]) == folder
    except ValueError:  # another drive
        return False


def _same_dir(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
