"""Downloads: resumable, verified copies of batches' output and error files on disk.

Downloads append to local raw files (one per batch and kind). The ``skip`` cursor of each
file is recorded together with the local byte length, only after the lines it covers were
flushed and fsynced; on start the local file is truncated to the recorded length. So a
download killed at any moment continues where it stopped and never records a line twice;
a line the server's own races deliver twice is deduplicated by ``custom_id`` (results) and
by the line ``id`` (verification). A raw file that was deleted or cut short is downloaded
again from the first line. Cursors live in job.json (``JobStore``) or, for bare batch ids,
in ``OUT.dwstate.json`` (``FileStore``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ..core import clock, compat, events, files, progress
from ..core.apifacts import is_uuid
from ..core.errors import LOCK_WAIT, APIConnectionError, APIStatusError, DWError, JobError, busy_error, file_error
from ..jobs import jobstatus
from ..jobs.job import Job
from ..jobs.jobrecord import DELETED, BatchDownload, Cursor, counts_of

if TYPE_CHECKING:  # annotations only
    from ..core.http import Client

KINDS = ("output", "error")


COUNT_FOR_KIND = {"output": "completed", "error": "failed"}
PLAIN_PROGRESS_SECONDS = 30.0  # a plain progress line of a long download (none on a terminal: it is rewritten)


CHECKPOINT_LINES = 5000


CHECKPOINT_SECONDS = 2.0


MAX_RESUMES = 5


MAX_REREADS = 3  # full re-reads from skip=0 per file, over the life of the job


STATE_SUFFIX = ".dwstate.json"


class _SinkError(Exception):
    """Writing a downloaded line to disk failed (raised through the download loop)."""

    def __init__(self, exc: OSError):
        super().__init__(str(exc))
        self.exc = exc


class Store:
    """Where download cursors live and where raw files go."""

    fetch: Dict[str, BatchDownload]
    raw_dir: str

    def entry(self, batch_id: str) -> BatchDownload:
        if batch_id not in self.fetch:
            self.fetch[batch_id] = BatchDownload()
        return self.fetch[batch_id]

    def raw_path(self, batch_id: str, kind: str) -> str:
        if not is_uuid(batch_id) or kind not in KINDS:  # a server's id never becomes a path of its choosing
            raise DWError(f"{batch_id!r} is not a batch id of the API's form (a bare UUID)")
        return os.path.join(self.raw_dir, f"{batch_id}.{kind}.jsonl")

    def save(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class JobStore(Store):
    """Cursors in job.json (``fetch``), raw files in ``<job>/results/``. The job is locked."""

    def __init__(self, job: Job):
        self.job = job
        self.fetch = job.record.fetch
        self.raw_dir = job.path("results")

    def save(self) -> None:
        self.job.save()


class FileStore(Store):
    """For bare batch ids: cursors in ``OUT.dwstate.json`` (``{format: 1, kind:
    "dwbatches-fetch", batches: [ids], fetch: {batch_id: download}}``, the downloads as in
    job.json), raw files in ``OUT.dwraw/``."""

    def __init__(self, out_path: str):
        base = os.path.abspath(out_path)
        self.path = base + STATE_SUFFIX
        self.raw_dir = base + ".dwraw"
        self._lock: Optional[compat.FileLock] = None
        self.batches: List[str] = []
        self.fetch = {}

    def lock(self, wait: float = LOCK_WAIT) -> None:
        lock = compat.FileLock(os.path.abspath(self.path)[: -len(".json")] + ".lock")
        if not lock.acquire(wait * clock.scale()):  # (scaled like every wait: see clock.py)
            raise busy_error(f"the results {self.path[: -len(STATE_SUFFIX)]}")
        self._lock = lock

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except FileNotFoundError:
            return
        except ValueError as exc:
            raise JobError(
                f"the fetch state {self.path} is not valid JSON: {exc}",
                hint="Delete it (and the .dwraw directory beside it) to download everything again.",
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != 1 or not isinstance(doc.get("fetch"), dict):
            raise JobError(
                f"{self.path} is not a fetch state file this version understands",
                hint="Delete it (and the .dwraw directory beside it) to download everything again.",
            )
        self.batches = [b for b in doc.get("batches") or [] if isinstance(b, str)]
        self.fetch = {k: BatchDownload.from_dict(v) for k, v in doc["fetch"].items() if isinstance(v, dict)}

    def set_batches(self, batch_ids: Sequence[str]) -> None:
        for bid in batch_ids:
            if bid not in self.batches:
                self.batches.append(bid)

    def save(self) -> None:
        doc = {
            "format": 1,
            "kind": "dwbatches-fetch",
            "batches": self.batches,
            "fetch": {k: v.to_dict() for k, v in self.fetch.items()},
            "updated_at": time.time(),
        }
        files.atomic_write_json(self.path, doc)


@dataclass
class BatchReport:
    batch_id: str
    batch: Dict[str, Any] = field(default_factory=dict)
    new_lines: Dict[str, int] = field(default_factory=lambda: {"output": 0, "error": 0})
    drained: bool = False  # terminal, and both files read to X-Incomplete: false
    verified: Optional[bool] = None
    skipped: bool = False  # final and unchanged: nothing downloaded
    notes: List[str] = field(default_factory=list)
    round: Optional[int] = None
    chunk: Optional[int] = None
    unreachable: Optional[str] = None  # why the batch or one of its files cannot be read (404)

    @property
    def status(self) -> Optional[str]:
        return self.batch.get("status")

    @property
    def terminal(self) -> bool:
        return jobstatus.is_terminal(self.status)


_CUSTOM_ID = re.compile(rb'"custom_id"\s*:\s*"((?:[^"\\]|\\.)*)"')


class Fetcher:
    """Brings the local raw files of batches up to date with the server."""

    def __init__(self, client: Client, store: Store):
        self.client = client
        self.store = store
        self.new_ids: Dict[Tuple[str, str], set] = {}

    # one file --------------------------------------------------------------------------
    def _open_raw(self, batch_id: str, kind: str, rec: Cursor) -> IO[bytes]:
        files.make_private_dir(self.store.raw_dir)
        path = self.store.raw_path(batch_id, kind)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | compat.O_BINARY | compat.O_NOFOLLOW, 0o600)
        except OSError as exc:
            if os.path.islink(path):
                raise JobError(
                    f"{path} is a symbolic link; the downloaded results of a job are never written through one",
                    hint="Delete the link (the job downloads the file again), and check who put it there.",
                ) from None
            raise file_error(exc, path, what="downloaded results", action="write") from exc
        fh = os.fdopen(fd, "r+b")
        size = os.fstat(fd).st_size
        recorded = int(rec.local_bytes or 0)
        if size < recorded:
            events.step(
                f"{os.path.basename(path)} is shorter than recorded ({size} < {recorded} bytes); "
                "downloading that file again from the start"
            )
            rec.skip, rec.local_bytes = 0, 0
            recorded = 0
            fh.truncate(0)
            fh.flush()
            os.fsync(fd)
            self.store.save()
        elif size > recorded:
            fh.truncate(recorded)  # lines written after the last checkpoint are fetched again
        fh.seek(recorded)
        return fh

    def _checkpoint(self, fh: IO[bytes], rec: Cursor, skip: int) -> None:
        try:
            fh.flush()
            os.fsync(fh.fileno())
            pos = fh.tell()
        except OSError as exc:
            raise _SinkError(exc) from None
        if rec.skip == skip and rec.local_bytes == pos:
            return
        rec.skip, rec.local_bytes = skip, pos
        self.store.save()

    def download(
        self, batch_id: str, kind: str, file_id: str, expected: Optional[int] = None
    ) -> Tuple[Optional[bool], int]:
        """Append new lines of one file; return (X-Incomplete of the last read, new lines). The
        distinct custom_ids among them (a line the server repeats counts once) are added to
        ``self.new_ids[(batch_id, kind)]``. ``expected``: the lines the server counts, for the
        progress line."""
        rec = self.store.entry(batch_id).cursor(kind)
        fh = self._open_raw(batch_id, kind, rec)
        ids = self.new_ids.setdefault((batch_id, kind), set())
        total_new = 0
        resumes = 0
        meter = events.Transfer(
            f"batch {batch_id}: downloading {'results' if kind == 'output' else 'errors'}",
            progress.lines,
            plain_every=PLAIN_PROGRESS_SECONDS,
        )
        try:
            while True:
                base = int(rec.skip)
                state: Dict[str, Any] = {"written": 0, "ck_lines": 0, "ck_time": time.monotonic()}

                def on_line(line: bytes, _base: int = base, _st: Dict[str, Any] = state) -> None:
                    if looks_like_object(line):  # only result lines are stored; others are counted and dropped
                        try:
                            fh.write(line)
                            fh.write(b"\n")
                        except OSError as exc:
                            raise _SinkError(exc) from None
                    _st["written"] += 1
                    if not _st["written"] & 255:  # the progress line, every 256 lines
                        meter(_base + _st["written"], max(expected or 0, _base + _st["written"]))
                    m = _CUSTOM_ID.search(line)
                    ids.add(m.group(1) if m else line)
                    if (
                        _st["written"] - _st["ck_lines"] >= CHECKPOINT_LINES
                        or time.monotonic() - _st["ck_time"] >= CHECKPOINT_SECONDS
                    ):
                        self._checkpoint(fh, rec, _base + _st["written"])
                        _st["ck_lines"], _st["ck_time"] = _st["written"], time.monotonic()

                res = self.client.stream_content(file_id, base, on_line)
                cursor = base + res.lines
                if res.last_line is not None and cursor > res.last_line >= base:
                    # more lines than the server says it sent: one was repeated; never skip past its count
                    cursor = res.last_line
                self._checkpoint(fh, rec, cursor)
                total_new += state["written"]
                if not res.interrupted:
                    return res.incomplete, total_new
                if resumes >= MAX_RESUMES:
                    raise APIConnectionError(
                        f"the download of the {kind} file of batch {batch_id} kept breaking ({res.interrupted}); "
                        f"{rec.skip} lines are saved",
                        hint="Run the same command again later; it continues where it stopped.",
                    )
                resumes += 1
                delay = 0.0 if resumes == 1 else min(30.0, 0.25 * 2 ** (resumes - 1))
                events.step(
                    f"the {kind} download of batch {batch_id} broke after {res.lines} lines "
                    f"({res.interrupted}); continuing from line {rec.skip} in {delay:.1f}s "
                    f"(retry {resumes}/{MAX_RESUMES})"
                )
                clock.sleep(delay)
        except _SinkError as exc:
            raise file_error(
                exc.exc, self.store.raw_path(batch_id, kind), what="downloaded results", action="write"
            ) from exc.exc
        finally:
            meter.close()
            with contextlib.suppress(OSError):  # saved lines were flushed at the last checkpoint
                fh.close()

    # one batch -------------------------------------------------------------------------
    def fetch_batch(self, batch_id: str, batch: Optional[Dict[str, Any]] = None) -> BatchReport:
        rep = BatchReport(batch_id)
        if batch is None:
            batch = self.client.get_batch(batch_id)
        entry = self.store.entry(batch_id)
        entry.unreachable = None
        counts = counts_of(batch)
        self._check_raw_files(batch_id, entry, rep)
        if entry.final and entry.status == batch.get("status") and entry.request_counts == counts:
            rep.batch, rep.drained, rep.verified, rep.skipped = batch, True, entry.verified, True
            return rep
        incomplete: Dict[str, Optional[bool]] = {}
        for _ in range(2):
            terminal_before = jobstatus.is_terminal(batch.get("status"))
            for kind in KINDS:
                file_id = batch.get(f"{kind}_file_id")
                if not file_id:
                    incomplete[kind] = not terminal_before
                    continue
                try:
                    inc, n = self.download(batch_id, kind, file_id, counts[COUNT_FOR_KIND[kind]])
                except APIStatusError as exc:
                    if exc.status != 404:
                        raise
                    rep.batch = batch
                    rep.unreachable = f"its {kind} file {file_id} is gone from the server (404: {exc.body})"
                    entry.unreachable = rep.unreachable
                    entry.final = entry.verified = False
                    self.store.save()
                    return rep
                rep.new_lines[kind] += n
                incomplete[kind] = inc
            if terminal_before or not all(v is False for v in incomplete.values()):
                break
            # X-Incomplete turned false while the status was not yet terminal: look again and drain
            batch = self.client.get_batch(batch_id)
        if batch.get("status") == DELETED:  # the server's counts are gone: the files say what it did
            batch = dict(batch, request_counts=self._counts_on_disk(batch_id, counts_of(batch)["total"]))
        rep.batch = batch
        # a missing X-Incomplete header counts as "finished" once the status is terminal
        rep.drained = jobstatus.is_terminal(batch.get("status")) and all(v is not True for v in incomplete.values())
        entry.status = batch.get("status")
        entry.request_counts = counts_of(batch)
        if rep.drained:
            self._verify(rep, entry)
        else:
            entry.verified = False
            entry.final = False
        self.store.save()
        return rep

    def _counts_on_disk(self, batch_id: str, total: int) -> Dict[str, int]:
        done = {kind: count_unique_lines(self.store.raw_path(batch_id, kind)) for kind in KINDS}
        return {
            "total": max(total, done["output"] + done["error"]),
            "completed": done["output"],
            "failed": done["error"],
        }

    def _check_raw_files(self, batch_id: str, entry: BatchDownload, rep: BatchReport) -> None:
        """The raw files must hold what the cursors say was saved: a file deleted or cut short
        (by the user, a sync tool, a restore) is downloaded again from the first line, so that
        no result is reported missing, and paid for again, because its local copy vanished."""
        for kind in KINDS:
            rec = entry.cursor(kind)
            if not rec.skip and not rec.local_bytes:
                continue
            path = self.store.raw_path(batch_id, kind)
            try:
                size = os.path.getsize(path)
            except OSError:
                size = -1
            if size >= int(rec.local_bytes or 0) and size >= 0:
                continue
            what = "is missing" if size < 0 else f"is shorter than recorded ({size} < {rec.local_bytes} bytes)"
            rep.notes.append(f"the downloaded {kind} file {what}; downloading it again from the start")
            rec.skip, rec.local_bytes, rec.rereads = 0, 0, 0
            entry.final = entry.verified = False
            with contextlib.suppress(OSError):
                os.unlink(path)
            self.store.save()

    def _verify(self, rep: BatchReport, entry: BatchDownload) -> None:
        counts = counts_of(rep.batch)
        ok = True
        for kind in KINDS:
            expected = counts[COUNT_FOR_KIND[kind]]
            if expected == 0:
                continue
            have = count_unique_lines(self.store.raw_path(rep.batch_id, kind))
            rec = entry.cursor(kind)
            file_id = rep.batch.get(f"{kind}_file_id")
            if have < expected and file_id and int(rec.rereads or 0) < MAX_REREADS:
                events.step(
                    f"batch {rep.batch_id}: {have} unique {kind} lines but the server counts {expected}; "
                    "reading the whole file again"
                )
                rec.rereads = int(rec.rereads or 0) + 1
                rec.skip = 0  # the local file keeps its lines; duplicates are dropped when merging
                self.store.save()
                before = have
                _, n = self.download(rep.batch_id, kind, file_id, expected)
                have = count_unique_lines(self.store.raw_path(rep.batch_id, kind))
                rep.new_lines[kind] += have - before
                rep.notes.append(f"{kind} file read again from the start ({n} lines, {have - before} of them new)")
            if have < expected:
                ok = False
                rep.notes.append(f"{kind} file: {have} unique lines, the server counts {expected}")
        rep.verified = ok
        entry.verified = ok
        entry.final = ok and rep.batch.get("status") in ("completed", "failed", DELETED)


def looks_like_object(line: bytes) -> bool:
    """A line that can be a result (a JSON object); anything else a server sends is not stored."""
    text = line.strip()
    return text[:1] == b"{" and text[-1:] == b"}"


def count_unique_lines(path: str) -> int:
    """Distinct requests in a raw file (by line ``id``, else ``custom_id``)."""
    seen = set()
    for _, _, obj in iter_raw(path):
        key = obj.get("id") or ("cid", obj.get("custom_id"))
        seen.add(key if isinstance(key, (str, tuple)) else json.dumps(key))
    return len(seen)


def iter_raw(path: str) -> Iterator[Tuple[int, int, Dict[str, Any]]]:
    """Yield (byte offset, length, parsed object) of the complete lines of a raw file."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    with fh:
        off = 0
        for line in fh:
            n = len(line)
            if line.endswith(b"\n") and line.strip():
                try:
                    obj = json.loads(line)
                except (ValueError, RecursionError):  # not JSON, or nested past any real answer
                    obj = None
                if isinstance(obj, dict):
                    yield off, n, obj
            off += n


@dataclass
class Target:
    batch_id: str
    round: Optional[int] = None
    chunk: Optional[int] = None


def update(
    client: Client,
    store: Store,
    targets: Sequence[Target],
    batch_objs: Optional[Dict[str, Dict[str, Any]]] = None,
    job_batches: bool = True,
) -> List[BatchReport]:
    """Download what is new for every target batch (no merge). A result file the server no
    longer has (404) makes its batch unreachable, and so does a missing batch of a job
    (``job_batches``; a batch id the user typed that does not exist stays an error, exit 4);
    the other batches are downloaded all the same."""
    fetcher = Fetcher(client, store)
    reports = []
    for t in targets:
        try:
            rep = fetcher.fetch_batch(t.batch_id, (batch_objs or {}).get(t.batch_id))
        except APIStatusError as exc:
            if exc.status != 404 or not job_batches:
                raise
            rep = BatchReport(t.batch_id, unreachable=f"the batch is gone from the server (404: {exc.body})")
            store.entry(t.batch_id).unreachable = rep.unreachable
            store.save()
        rep.round, rep.chunk = t.round, t.chunk
        reports.append(rep)
        # distinct requests, counted per batch (the sets are dropped at once: memory stays flat)
        got = {k: len(fetcher.new_ids.pop((t.batch_id, k), ())) for k in KINDS}
        if got["output"] or got["error"]:
            events.step(f"batch {t.batch_id}: +{got['output']} results, +{got['error']} errors ({rep.status})")
        for note in rep.notes:
            events.step(f"batch {t.batch_id}: {note}")
        if rep.unreachable:
            where = f"round {t.round} chunk {t.chunk}, " if t.chunk is not None else ""
            events.step(f"batch {t.batch_id} ({where}unreachable): {rep.unreachable}")
    return reports
