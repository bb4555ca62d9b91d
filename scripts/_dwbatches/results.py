"""Fetch engine: resumable downloads of output and error files, verification, merge, formats.

Downloads append to local raw files (one per batch and kind). The ``skip`` cursor of each
file is recorded together with the local byte length, only after the lines it covers were
flushed and fsynced; on start the local file is truncated to the recorded length. So a
download killed at any moment continues where it stopped and never records a line twice;
a line the server's own races deliver twice is deduplicated by ``custom_id`` (results) and
by the line ``id`` (verification).

Merging never holds result bodies in memory: an index maps ``custom_id`` to (file, byte
offset, length) and the lines are read back with seek.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Tuple

from . import clock, compat, files, jobstatus, pricing
from . import job as job_mod
from .errors import (
    EXIT_NOT_FINISHED,
    EXIT_OK,
    EXIT_UNSUCCESSFUL,
    LOCK_WAIT,
    APIConnectionError,
    APIStatusError,
    DWError,
    JobError,
    UsageError,
    busy_error,
    file_error,
)
from .files import atomic_output
from .job import BatchDownload, Chunk, Cursor, Job, JobRecord, ResultsSettings
from .output import narrate

KINDS = ("output", "error")
COUNT_FOR_KIND = {"output": "completed", "error": "failed"}
CHECKPOINT_LINES = 5000
CHECKPOINT_SECONDS = 2.0
MAX_RESUMES = 5
MAX_REREADS = 3  # full re-reads from skip=0 per file, over the life of the job
FORMATS = ("raw", "simple", "csv")
MISSING_PENDING = "missing: no result yet"
MISSING_NOT_RUN = "not run"
STATE_SUFFIX = ".dwstate.json"


class _SinkError(Exception):
    """Writing a downloaded line to disk failed (raised through the download loop)."""

    def __init__(self, exc: OSError):
        super().__init__(str(exc))
        self.exc = exc


# -- state stores --------------------------------------------------------------------------
class Store:
    """Where download cursors live and where raw files go."""

    fetch: Dict[str, BatchDownload]
    raw_dir: str

    def entry(self, batch_id: str) -> BatchDownload:
        if batch_id not in self.fetch:
            self.fetch[batch_id] = BatchDownload()
        return self.fetch[batch_id]

    def raw_path(self, batch_id: str, kind: str) -> str:
        return os.path.join(self.raw_dir, f"{batch_id}.{kind}.jsonl")

    def save(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class JobStore(Store):
    """Cursors in job.json (``fetch``), raw files in ``<job>/results/``. Caller holds the lock."""

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
        if not lock.acquire(wait):
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
            raise JobError(f"the fetch state {self.path} is not valid JSON: {exc}",
                           hint="Delete it (and the .dwraw directory beside it) to download everything again.") \
                from None
        if not isinstance(doc, dict) or doc.get("format") != 1 or not isinstance(doc.get("fetch"), dict):
            raise JobError(f"{self.path} is not a fetch state file this version understands",
                           hint="Delete it (and the .dwraw directory beside it) to download everything again.")
        self.batches = [b for b in doc.get("batches") or [] if isinstance(b, str)]
        self.fetch = {k: BatchDownload.from_dict(v) for k, v in doc["fetch"].items() if isinstance(v, dict)}

    def set_batches(self, batch_ids: Sequence[str]) -> None:
        for bid in batch_ids:
            if bid not in self.batches:
                self.batches.append(bid)

    def save(self) -> None:
        doc = {"format": 1, "kind": "dwbatches-fetch", "batches": self.batches,
               "fetch": {k: v.to_dict() for k, v in self.fetch.items()}, "updated_at": time.time()}
        files.atomic_write_json(self.path, doc)


# -- downloads -----------------------------------------------------------------------------
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

    def __init__(self, client: Any, store: Store):
        self.client = client
        self.store = store
        self.new_ids: Dict[Tuple[str, str], set] = {}

    # one file --------------------------------------------------------------------------
    def _open_raw(self, batch_id: str, kind: str, rec: Cursor) -> IO[bytes]:
        files.make_private_dir(self.store.raw_dir)
        path = self.store.raw_path(batch_id, kind)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | compat.O_BINARY, 0o600)
        fh = os.fdopen(fd, "r+b")
        size = os.fstat(fd).st_size
        recorded = int(rec.local_bytes or 0)
        if size < recorded:
            narrate(f"{os.path.basename(path)} is shorter than recorded ({size} < {recorded} bytes); "
                    "downloading that file again from the start")
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

    def download(self, batch_id: str, kind: str, file_id: str) -> Tuple[Optional[bool], int]:
        """Append new lines of one file; return (X-Incomplete of the last read, new lines). The
        distinct custom_ids among them (a line the server repeats counts once) are added to
        ``self.new_ids[(batch_id, kind)]``."""
        rec = self.store.entry(batch_id).cursor(kind)
        fh = self._open_raw(batch_id, kind, rec)
        ids = self.new_ids.setdefault((batch_id, kind), set())
        total_new = 0
        resumes = 0
        try:
            while True:
                base = int(rec.skip)
                state = {"written": 0, "ck_lines": 0, "ck_time": time.monotonic()}

                def on_line(line: bytes, _base: int = base, _st: Dict[str, Any] = state) -> None:
                    try:
                        fh.write(line)
                        fh.write(b"\n")
                    except OSError as exc:
                        raise _SinkError(exc) from None
                    _st["written"] += 1
                    m = _CUSTOM_ID.search(line)
                    ids.add(m.group(1) if m else line)
                    if _st["written"] - _st["ck_lines"] >= CHECKPOINT_LINES or \
                            time.monotonic() - _st["ck_time"] >= CHECKPOINT_SECONDS:
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
                        hint="Run the same command again later; it continues where it stopped.")
                resumes += 1
                delay = 0.0 if resumes == 1 else min(30.0, 0.25 * 2 ** (resumes - 1))
                narrate(f"the {kind} download of batch {batch_id} broke after {res.lines} lines "
                        f"({res.interrupted}); continuing from line {rec.skip} in {delay:.1f}s "
                        f"(retry {resumes}/{MAX_RESUMES})")
                clock.sleep(delay)
        except _SinkError as exc:
            raise file_error(exc.exc, self.store.raw_path(batch_id, kind), what="downloaded results",
                             action="write") from exc.exc
        finally:
            with contextlib.suppress(OSError):  # saved lines were flushed at the last checkpoint
                fh.close()

    # one batch -------------------------------------------------------------------------
    def fetch_batch(self, batch_id: str, batch: Optional[Dict[str, Any]] = None) -> BatchReport:
        rep = BatchReport(batch_id)
        if batch is None:
            batch = self.client.get_batch(batch_id)
        entry = self.store.entry(batch_id)
        entry.unreachable = None
        counts = job_mod.counts_of(batch)
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
                    inc, n = self.download(batch_id, kind, file_id)
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
        rep.batch = batch
        # a missing X-Incomplete header counts as "finished" once the status is terminal
        rep.drained = jobstatus.is_terminal(batch.get("status")) and all(v is not True for v in incomplete.values())
        entry.status = batch.get("status")
        entry.request_counts = job_mod.counts_of(batch)
        if rep.drained:
            self._verify(rep, entry)
        else:
            entry.verified = False
            entry.final = False
        self.store.save()
        return rep

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
            note = f"the downloaded {kind} file {what}; downloading it again from the start"
            narrate(f"batch {batch_id}: {note}")
            rep.notes.append(note)
            rec.skip, rec.local_bytes, rec.rereads = 0, 0, 0
            entry.final = entry.verified = False
            with contextlib.suppress(OSError):
                os.unlink(path)
            self.store.save()

    def _verify(self, rep: BatchReport, entry: BatchDownload) -> None:
        counts = job_mod.counts_of(rep.batch)
        ok = True
        for kind in KINDS:
            expected = counts[COUNT_FOR_KIND[kind]]
            if expected == 0:
                continue
            have = count_unique_lines(self.store.raw_path(rep.batch_id, kind))
            rec = entry.cursor(kind)
            file_id = rep.batch.get(f"{kind}_file_id")
            if have < expected and file_id and int(rec.rereads or 0) < MAX_REREADS:
                narrate(f"batch {rep.batch_id}: {have} unique {kind} lines but the server counts {expected}; "
                        "reading the whole file again")
                rec.rereads = int(rec.rereads or 0) + 1
                rec.skip = 0  # the local file keeps its lines; duplicates are dropped when merging
                self.store.save()
                before = have
                _, n = self.download(rep.batch_id, kind, file_id)
                have = count_unique_lines(self.store.raw_path(rep.batch_id, kind))
                rep.new_lines[kind] += have - before
                rep.notes.append(f"{kind} file read again from the start ({n} lines, {have - before} of them new)")
            if have < expected:
                ok = False
                rep.notes.append(f"{kind} file: {have} unique lines, the server counts {expected}")
        rep.verified = ok
        entry.verified = ok
        entry.final = ok and rep.batch.get("status") in ("completed", "failed")


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
                except ValueError:
                    obj = None
                if isinstance(obj, dict):
                    yield off, n, obj
            off += n


# -- result lines --------------------------------------------------------------------------
def is_success(obj: Dict[str, Any]) -> bool:
    resp = obj.get("response")
    if not isinstance(resp, dict) or obj.get("error"):
        return False
    status = resp.get("status_code")
    return not (isinstance(status, int) and status >= 400)


def error_text(obj: Dict[str, Any]) -> str:
    """A readable message for a failed line (error line, or an output line with status >= 400)."""
    err = obj.get("error")
    if isinstance(err, dict):
        msg = err.get("message")
        if isinstance(msg, str):
            try:
                reason = json.loads(msg)
            except ValueError:
                reason = None
            if isinstance(reason, dict) and reason.get("type"):
                details = reason.get("details")
                text = str(reason["type"])
                if isinstance(details, dict):
                    if details.get("status") is not None:
                        text += f" (HTTP {details['status']})"
                    body = details.get("body") or details.get("message") or details.get("error")
                    if body:
                        text += f": {_short(body)}"
                elif details:
                    text += f": {_short(details)}"
                return text
            return msg
        if msg is not None:
            return _short(msg)
        return _short(err)
    if isinstance(err, str):
        return err
    resp = obj.get("response")
    if isinstance(resp, dict):
        body = resp.get("body")
        detail = body
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            detail = body["error"].get("message") or body["error"]
        return f"HTTP {resp.get('status_code')}: {_short(detail)}"
    return "failed (no details)"


def _short(value: Any, limit: int = 1000) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"


def extract_content(body: Any) -> Any:
    """The useful payload of a response body: chat text, completion text, Responses output
    text, Messages text, or the embedding vector(s)."""
    if not isinstance(body, dict):
        return body
    choices = body.get("choices")
    if isinstance(choices, list) and choices:
        vals = []
        for c in choices:
            if not isinstance(c, dict):
                continue
            msg = c.get("message")
            if isinstance(msg, dict):
                content = msg.get("content")
                if content is None and msg.get("tool_calls"):
                    content = msg["tool_calls"]
                vals.append(content)
            else:
                vals.append(c.get("text"))
        return vals[0] if len(vals) == 1 else vals
    data = body.get("data")
    if isinstance(data, list) and data and isinstance(data[0], dict) and "embedding" in data[0]:
        vecs = [d.get("embedding") for d in data if isinstance(d, dict)]
        return vecs[0] if len(vecs) == 1 else vecs
    if isinstance(body.get("output_text"), str):
        return body["output_text"]
    output = body.get("output")
    if isinstance(output, list):
        texts = []
        for item in output:
            if isinstance(item, dict) and item.get("type") == "message":
                for part in item.get("content") or []:
                    if isinstance(part, dict) and part.get("type") in ("output_text", "text"):
                        texts.append(part.get("text") or "")
        if texts:
            return "".join(texts)
    content = body.get("content")
    if isinstance(content, list):
        texts = [p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if texts:
            return "".join(texts)
    return body


def simple_line(custom_id: str, obj: Optional[Dict[str, Any]], error: Optional[str]) -> Dict[str, Any]:
    if obj is not None and error is None:
        body = (obj.get("response") or {}).get("body")
        usage = body.get("usage") if isinstance(body, dict) else None
        return {"custom_id": custom_id, "ok": True, "content": extract_content(body), "usage": usage, "error": None}
    return {"custom_id": custom_id, "ok": False, "content": None, "usage": None, "error": error}


def csv_cell(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return json.dumps(content, ensure_ascii=False)


# -- index and merge -----------------------------------------------------------------------
class ResultIndex:
    """custom_id → where its newest successful result (or newest error) is on disk."""

    def __init__(self, keep_order: bool = False):
        self.files: List[str] = []
        self.success: Dict[str, Tuple[int, int, int]] = {}
        self.errors: Dict[str, Tuple[int, int, int]] = {}
        self.order: Optional[List[str]] = [] if keep_order else None
        self._seen: set = set()
        self._handles: Dict[int, IO[bytes]] = {}

    def add_file(self, path: str, kind: str) -> None:
        idx = len(self.files)
        self.files.append(path)
        for off, n, obj in iter_raw(path):
            cid = obj.get("custom_id")
            if not isinstance(cid, str):
                continue
            if self.order is not None and cid not in self._seen:
                self._seen.add(cid)
                self.order.append(cid)
            if kind == "output" and is_success(obj):
                self.success[cid] = (idx, off, n)
            else:
                self.errors[cid] = (idx, off, n)

    def read(self, loc: Tuple[int, int, int]) -> bytes:
        idx, off, n = loc
        fh = self._handles.get(idx)
        if fh is None:
            fh = self._handles[idx] = open(self.files[idx], "rb")
        fh.seek(off)
        return fh.read(n).rstrip(b"\r\n")

    def close(self) -> None:
        for fh in self._handles.values():
            fh.close()
        self._handles.clear()

    def ids(self) -> set:
        return self.success.keys() | self.errors.keys()


def iter_input_lines(path: str, purpose: str, hint: str) -> Iterator[Tuple[str, bytes]]:
    """(custom_id, raw line) of each request of a batch JSONL input, in file order (streamed).
    ``purpose`` and ``hint`` word the error for a line that is not JSON."""
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                raise UsageError(f"{path}, line {n}: not valid JSON; cannot {purpose}", hint=hint) from None
            cid = obj.get("custom_id") if isinstance(obj, dict) else None
            if isinstance(cid, str):
                yield cid, line


def iter_input_ids(path: str) -> Iterator[str]:
    """custom_ids of a batch JSONL input, in file order (streamed)."""
    for cid, _ in iter_input_lines(path, "read the request order", "Pass the original batch input file."):
        yield cid


@dataclass
class MergeCounts:
    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    missing: int = 0
    unexpected: int = 0  # results whose custom_id is not among the requests
    failed_sample: List[Dict[str, Any]] = field(default_factory=list)
    missing_sample: List[str] = field(default_factory=list)


SAMPLE = 5


class Merger:
    """Writes OUT and ERR from an index, in the order of the requests."""

    def __init__(self, index: ResultIndex, missing_reason: str):
        self.index = index
        self.missing_reason = missing_reason
        self.counts = MergeCounts()
        # usage of the successful results written: (raw file index, model) -> [requests, in, out]
        self.usage: Dict[Tuple[int, str], List[int]] = {}

    def _note_usage(self, cid: str, obj: Optional[Dict[str, Any]]) -> None:
        body = ((obj or {}).get("response") or {}).get("body")
        if not isinstance(body, dict):
            return
        u = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        tin = u.get("prompt_tokens", u.get("input_tokens")) or 0
        tout = u.get("completion_tokens", u.get("output_tokens")) or 0
        key = (self.index.success[cid][0], str(body.get("model") or "unknown"))
        acc = self.usage.setdefault(key, [0, 0, 0])
        acc[0] += 1
        acc[1] += int(tin) if isinstance(tin, (int, float)) else 0
        acc[2] += int(tout) if isinstance(tout, (int, float)) else 0

    def _classify(self, cid: str) -> Tuple[Optional[bytes], Optional[Dict[str, Any]], Optional[str]]:
        """(raw success line, parsed line, error text); error text None means success."""
        loc = self.index.success.get(cid)
        if loc is not None:
            raw = self.index.read(loc)
            return raw, json.loads(raw), None
        loc = self.index.errors.get(cid)
        if loc is not None:
            raw = self.index.read(loc)
            obj = json.loads(raw)
            return raw, obj, error_text(obj)
        return None, None, self.missing_reason

    def _count(self, cid: str, raw: Optional[bytes], err: Optional[str], err_fh: IO[bytes]) -> None:
        c = self.counts
        c.requests += 1
        if err is None:
            c.succeeded += 1
            if raw is not None:
                self._note_usage(cid, json.loads(raw))
            return
        if raw is not None:
            c.failed += 1
            if len(c.failed_sample) < SAMPLE:
                c.failed_sample.append({"custom_id": cid, "error": _short(err, 300)})
            err_fh.write(raw + b"\n")
        else:
            c.missing += 1
            if len(c.missing_sample) < SAMPLE:
                c.missing_sample.append(cid)
            line = {"id": None, "custom_id": cid, "response": None,
                    "error": {"code": "missing", "message": self.missing_reason}}
            err_fh.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")

    def write_jsonl(self, order: Iterator[str], fmt: str, out_path: str, err_path: str) -> MergeCounts:
        seen: set = set()
        with atomic_output(out_path) as out_fh, atomic_output(err_path) as err_fh:
            for cid in order:
                if cid in seen:
                    continue
                seen.add(cid)
                raw, obj, err = self._classify(cid)
                self._count(cid, raw, err, err_fh)
                if fmt == "raw":
                    if err is None and raw is not None:
                        out_fh.write(raw + b"\n")
                else:
                    doc = simple_line(cid, obj, err)
                    out_fh.write(json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n")
        self.counts.unexpected = len(self.index.ids() - seen)
        return self.counts

    def write_csv(self, rows: CsvRows, out_path: str, err_path: str,
                  submitted: Optional[set] = None) -> MergeCounts:
        """The CSV with answer and error columns. ``submitted``: the custom_ids of the job's
        requests, when known; a row whose id is not among them (a row added after the submit)
        gets no answer and is not counted."""
        with atomic_output(out_path, text=True) as out_fh, atomic_output(err_path) as err_fh:
            if rows.bom:  # as the source had (Excel needs it to show non-ASCII text)
                out_fh.write("\ufeff")
            writer = csv.writer(out_fh, dialect=rows.dialect)
            writer.writerow(rows.header + [rows.response_col, rows.error_col])
            seen: set = set()
            for cid, row in rows:
                if cid is None or (submitted is not None and cid not in submitted):
                    # a row that produced no request (skipped as empty, or added after the submit)
                    writer.writerow(row + ["", "no request was made for this row"])
                    continue
                raw, obj, err = self._classify(cid)
                if cid not in seen:
                    seen.add(cid)
                    self._count(cid, raw, err, err_fh)
                if err is None:
                    body = (obj or {}).get("response", {}).get("body")
                    writer.writerow(row + [csv_cell(extract_content(body)), ""])
                else:
                    writer.writerow(row + ["", err])
            self.counts.unexpected = len(self.index.ids() - seen)
        return self.counts


def request_text(line: bytes) -> str:
    """What a request asked, for a CSV of results: the last user message of a chat request,
    the prompt of a completion, the input of a Responses or an embeddings request."""
    try:
        body = (json.loads(line).get("body") or {})
    except (ValueError, AttributeError):
        return ""
    if not isinstance(body, dict):
        return ""
    messages = body.get("messages")
    if isinstance(messages, list):
        for msg in reversed(messages):
            if isinstance(msg, dict) and msg.get("role") == "user":
                return _text_of(msg.get("content"))
    for key in ("prompt", "input"):
        if key in body:
            return _text_of(body[key])
    return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in content]
        if all(isinstance(p, str) for p in parts):
            return "\n".join(x for x in parts if x)
    return json.dumps(content, ensure_ascii=False)


class RequestRows:
    """The requests of a job that was not built from a CSV, as CSV rows: custom_id, the prompt
    (``request_text``), then the answer and error columns."""

    def __init__(self, input_path: str, column: Optional[str] = None):
        self.input_path = input_path
        self.header = ["custom_id", "prompt"]
        self.response_col = column or "response"
        if self.response_col in self.header:
            raise UsageError(f"--column {self.response_col!r} is already a column of the results CSV",
                             hint="Name a new column for the answers, e.g. --column answer.")
        self.error_col = "error" if self.response_col != "error" else "dw_error"
        self.dialect: Any = csv.excel
        self.bom = False

    def __iter__(self) -> Iterator[Tuple[Optional[str], List[str]]]:
        for cid, line in iter_input_lines(self.input_path, "read the requests", "Restore the job's input."):
            yield cid, [cid, request_text(line)]


# -- CSV sources ---------------------------------------------------------------------------
class CsvRows:
    """Rows of the original CSV, each with the custom_id create_batch_file.py gave it.

    With the job's ``source`` (``id_prefix``, ``id_column``) the custom_id is computed the way
    the builder computes it (``<prefix>-<id column value>`` or ``<prefix>-<zero-padded row
    number>``); without it, rows are matched to the input's requests in order (the builder
    writes one request per non-empty row, in row order). Empty rows are skipped, as the
    builder skips them. Yields (custom_id or None, row values). The CSV is read with the
    delimiter the builder used; ``dialect`` and ``bom`` say how to write a CSV like it.
    """

    def __init__(self, csv_path: str, source: Optional[Dict[str, Any]], input_path: Optional[str],
                 column: Optional[str] = None):
        from . import builder
        self._builder = builder
        self.csv_path = csv_path
        self.source = source or {}
        self.input_path = input_path
        # a source that records no delimiter was built with commas, when only blank lines were skipped
        legacy = bool(self.source) and "delimiter" not in self.source
        delimiter = "," if legacy else None  # None: detected from the header, as the builder does
        if not legacy and self.source.get("path") == os.path.abspath(csv_path):
            delimiter = self.source.get("delimiter")
        self._read_as: Dict[str, Any] = {"delimiter": delimiter, "skip_empty_rows": not legacy}
        with builder.CsvRows(csv_path, **self._read_as) as rows:
            self.header = list(rows.header)
            self.dialect: Any = rows.dialect
            self.bom: bool = rows.bom
        names = set(self.header)
        if column and column in names:
            raise UsageError(f"--column {column!r} is already a column of {csv_path}",
                             hint="Name a new column for the answers, e.g. --column answer.")
        self.response_col = column or ("response" if "response" not in names else "dw_response")
        self.error_col = "error" if "error" not in names and self.response_col != "error" else "dw_error"

    def __iter__(self) -> Iterator[Tuple[Optional[str], List[str]]]:
        b = self._builder
        src = self.source
        prefix = src.get("id_prefix")
        id_column = src.get("id_column")
        limit = src.get("rows")
        ids: Optional[Iterator[str]] = None
        if prefix is None:
            if not self.input_path or not os.path.isfile(self.input_path):
                raise UsageError("cannot match the CSV rows to requests: the batch input file is missing",
                                 hint="Pass --format raw or simple, or restore the input file.")
            ids = iter_input_ids(self.input_path)
        with b.CsvRows(self.csv_path, **self._read_as) as rows:
            number = 0
            for line, row in rows:
                number += 1
                values = [row.get(h, "") for h in self.header]
                if ids is not None:
                    yield next(ids, None), values
                elif isinstance(limit, int) and number > limit and not id_column:  # (--limit builds)
                    yield None, values
                elif id_column:
                    try:
                        rid = b.row_id_text(row.get(id_column), line, id_column)
                    except DWError:
                        yield None, values
                        continue
                    yield b.custom_id_for(prefix, row_id=rid), values
                else:
                    yield b.custom_id_for(prefix, number), values


# -- the whole fetch -----------------------------------------------------------------------
@dataclass
class Target:
    batch_id: str
    round: Optional[int] = None
    chunk: Optional[int] = None


def update(client: Any, store: Store, targets: Sequence[Target],
           batch_objs: Optional[Dict[str, Dict[str, Any]]] = None, job_batches: bool = True) -> List[BatchReport]:
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
        got = {k: len(fetcher.new_ids.get((t.batch_id, k), ())) for k in KINDS}  # distinct requests
        if got["output"] or got["error"]:
            narrate(f"batch {t.batch_id}: +{got['output']} results, +{got['error']} errors ({rep.status})")
        for note in rep.notes:
            narrate(f"batch {t.batch_id}: {note}")
        if rep.unreachable:
            where = f"round {t.round} chunk {t.chunk}, " if t.chunk is not None else ""
            narrate(f"batch {t.batch_id} ({where}unreachable): {rep.unreachable}")
    return reports


def build_index(store: Store, targets: Sequence[Target], keep_order: bool) -> ResultIndex:
    """Index raw files in target order (rounds in order), so that later rounds win."""
    index = ResultIndex(keep_order=keep_order)
    for t in targets:
        for kind in KINDS:
            index.add_file(store.raw_path(t.batch_id, kind), kind)
    return index


def job_targets(rec: JobRecord) -> List[Target]:
    return [Target(t["batch_id"], t["round"], t["chunk"]) for t in jobstatus.job_targets(rec) if t["batch_id"]]


def batch_summary(rep: BatchReport, store: Store, chunk: Optional[Chunk] = None) -> Dict[str, Any]:
    """The summary of a batch as reported; an unreachable one keeps its last known counts."""
    if rep.batch and not rep.unreachable:
        return jobstatus.summarize_batch(rep.batch, rep.round, rep.chunk)
    known: Dict[str, Any] = dict(rep.batch or {})
    known.setdefault("id", rep.batch_id)
    if chunk is not None and not known.get("request_counts"):
        known["request_counts"] = chunk.request_counts or {"total": chunk.requests}
    summary = jobstatus.summarize_batch(known, rep.round, rep.chunk)
    summary["status"] = jobstatus.UNREACHABLE
    return summary


def batch_report_doc(rep: BatchReport, store: Store, summary: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    entry = store.entry(rep.batch_id)
    doc = dict(summary) if summary is not None else batch_summary(rep, store)
    doc["fetched"] = {k: int(entry.cursor(k).skip) for k in KINDS}
    doc["new_lines"] = dict(rep.new_lines)
    doc["verified"] = bool(entry.verified) if rep.drained else None
    if rep.notes:
        doc["notes"] = rep.notes
    if rep.unreachable:
        doc["unreachable"] = rep.unreachable
    return doc


def default_error_path(out_path: str) -> str:
    base = os.path.abspath(out_path)
    for suffix in (".results.jsonl", ".results.csv", ".jsonl", ".csv", ".json"):
        if base.endswith(suffix):
            return base[: -len(suffix)] + ".errors.jsonl"
    return base + ".errors.jsonl"


def default_job_output(rec: JobRecord, fmt: str) -> str:
    # Results go beside the job's input (the file the user submitted), never into the folder
    # of a source CSV, which may be read-only or shared.
    stem = os.path.splitext(os.path.abspath(rec.input.path))[0]
    return stem + (".results.csv" if fmt == "csv" else ".results.jsonl")


def exit_code_for(complete: bool, failed: int, missing: int) -> int:
    if not complete:
        return EXIT_NOT_FINISHED
    return EXIT_UNSUCCESSFUL if (failed or missing) else EXIT_OK


SUBMITTED_INPUT = "submitted-input.jsonl"


def submitted_input(client: Any, job: Job, warnings: List[str]) -> Optional[str]:
    """A file holding the job's requests as submitted, in order: the local input when it is the
    file that was submitted (size and mtime, else sha256), else the server's copy of the
    uploaded files (the truth of what was submitted), saved in the job; None when neither can
    be read (results then go in the order they arrived)."""
    rec = job.record
    state = rec.input.fingerprint.check(rec.input.path)
    if state == "same":
        return rec.input.path
    what = "is gone" if state == "missing" else "changed since it was submitted"
    cached = job.path("results", SUBMITTED_INPUT)
    try:
        if not os.path.isfile(cached):
            save_submitted_input(client, job, cached)
    except DWError as exc:
        note = (f"the job's input {rec.input.path} {what}, and the server's copy cannot be read ({exc.message}); "
                "results are written in the order they arrived")
        narrate(note)
        warnings.append(note)
        return None
    note = (f"the job's input {rec.input.path} {what}; results follow the requests as submitted (the server's "
            "copy)")
    narrate(note)
    warnings.append(note)
    return cached


def save_submitted_input(client: Any, job: Job, dest: str) -> None:
    """Write the requests of round 1 as the server holds them (its copy of each uploaded file,
    in order) to ``dest``: what was submitted, whatever became of the local input."""
    files.make_private_dir(os.path.dirname(dest))
    with atomic_output(dest, mode=0o600) as out:
        for ch in job.record.rounds[0].chunks if job.record.rounds else []:
            if not ch.file_id:
                continue

            def on_line(line: bytes) -> None:
                out.write(line.rstrip(b"\r\n") + b"\n")

            res = client.stream_content(ch.file_id, 0, on_line)
            if res.interrupted:
                raise APIConnectionError(f"reading the uploaded file {ch.file_id} broke ({res.interrupted})",
                                         hint="Run the same command again.")


def resolve_output(rec: JobRecord, fmt: Optional[str], out: Optional[str], err: Optional[str],
                   csv_path: Optional[str], column: Optional[str] = None
                   ) -> Tuple[str, str, str, Optional[str], Optional[str]]:
    """(format, OUT, ERR, CSV) from the options given, else the job's remembered ones, else defaults.

    Output settings given once (e.g. to run_batch.py) are remembered in job.json (``results``)
    and used by later fetches that give none. A remembered path whose folder is gone is refused
    (a moved project must not recreate its old place)."""
    source = rec.source
    last = rec.results or ResultsSettings()
    csv_path = csv_path or last.csv
    if fmt is None:
        fmt = last.format or ("csv" if (source and source.kind == "csv") or csv_path else "raw")
    if out:
        out_path = os.path.abspath(out)
    elif last.output and last.format == fmt:
        out_path = last.output
        _parent_must_exist(out_path, "results file")
    else:
        out_path = default_job_output(rec, fmt)
        _parent_must_exist(out_path, "results file")
    if err:
        err_path = os.path.abspath(err)
    elif last.errors and last.output == out_path:
        err_path = last.errors
        _parent_must_exist(err_path, "errors file")
    else:
        err_path = default_error_path(out_path)
    protected = {"job's input": rec.input.path, "source CSV": source.path if source else None,
                 "CSV given with --csv": csv_path}
    for rnd in rec.rounds:
        protected[f"input of round {rnd.round}"] = rnd.input_path
    files.refuse_overwrite({"OUT": out_path, "ERR": err_path}, protected)
    column = column or last.column
    return fmt, out_path, err_path, os.path.abspath(csv_path) if csv_path else None, column


def _parent_must_exist(path: str, what: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"the {what} of this job, {path}, is in a folder that no longer exists ({parent})",
                         hint="Pass -o PATH (and --errors PATH) to write the results elsewhere; the job does not "
                              "recreate folders that were moved or deleted.")


def remember_output(job: Job, fmt: str, out_path: str, err_path: str, csv_path: Optional[str],
                    column: Optional[str] = None) -> None:
    """Record the output settings in job.json (caller holds the lock)."""
    remember = ResultsSettings(format=fmt, output=out_path, errors=err_path, csv=csv_path, column=column)
    if job.record.results != remember:
        job.record.results = remember
        job.save()


@dataclass
class JobRefresh:
    store: JobStore
    targets: List[Target]
    reports: List[BatchReport]
    summaries: List[Dict[str, Any]]
    summary: Dict[str, Any]
    complete: bool  # every batch terminal and drained (or unreachable), and the job fully submitted

    @property
    def unreachable(self) -> List[Dict[str, Any]]:
        return [{"batch_id": r.batch_id, "round": r.round, "chunk": r.chunk, "reason": r.unreachable}
                for r in self.reports if r.unreachable]


def refresh_job(client: Any, job: Job) -> JobRefresh:
    """Download what is new for every batch of the job and record statuses (caller holds the lock)."""
    rec = job.record
    targets = job_targets(rec)
    store = JobStore(job)
    reports = update(client, store, targets)
    rec.record_batches({r.batch_id: r.batch for r in reports if r.batch})
    job.save()
    chunks = {c.batch_id: c for c in rec.chunks() if c.batch_id}
    summaries = [batch_summary(r, store, chunks.get(r.batch_id)) for r in reports]
    summary = jobstatus.job_status(summaries, rec)
    complete = summary["finished"] and all(r.drained or r.unreachable for r in reports)
    return JobRefresh(store, targets, reports, summaries, summary, complete)


def check_csv_source(rec: JobRecord, csv_path: str, warnings: List[str]) -> None:
    """The CSV the answers are written beside must be the one the requests were built from, unless
    rows are matched by an id column (then re-sorting or inserting rows is harmless)."""
    source = rec.source
    fp = source.fingerprint if source else None
    if fp is None:
        return
    state = fp.check(csv_path)
    if state != "changed":
        return
    if source is not None and source.id_column:
        note = (f"{csv_path} changed since the batch was built; rows are matched by the {source.id_column!r} "
                "column, so the answers still go beside their own rows")
        narrate(note)
        warnings.append(note)
        return
    raise UsageError(
        f"{csv_path} changed since the batch was built from it, and its rows were numbered by position: answers "
        "written into it now could land beside the wrong rows",
        hint="Restore the CSV as it was when the batch was built, or fetch with --format simple or --format raw "
             "(results keyed by custom_id).")


def fetch_job(client: Any, job: Job, fmt: Optional[str] = None, out: Optional[str] = None,
              err: Optional[str] = None, csv_path: Optional[str] = None, merge: bool = True,
              column: Optional[str] = None) -> Dict[str, Any]:
    """Download, verify and (with ``merge``) write OUT/ERR for a job. The caller holds the lock.

    Returns the report document; ``doc["exit_code"]`` is the outcome (0, 5 or 6)."""
    rec = job.record
    ref = refresh_job(client, job)
    store, targets, reports, summary, complete = ref.store, ref.targets, ref.reports, ref.summary, ref.complete
    warnings: List[str] = []
    doc: Dict[str, Any] = {
        "complete": complete,
        "status": summary["status"],
        "request_counts": summary["request_counts"],
    }
    if merge:
        source = rec.source
        fmt, out_path, err_path, csv_path, column = resolve_output(rec, fmt, out, err, csv_path, column)
        src_csv = None
        if fmt == "csv":
            src_csv = csv_path or (source.path if source else None)
            if src_csv and not os.path.isfile(src_csv):
                raise UsageError(f"{src_csv}: no such file", hint="Pass --csv FILE with the original CSV.")
            if src_csv:
                check_csv_source(rec, src_csv, warnings)
        requests_file = submitted_input(client, job, warnings)
        order = iter_input_ids(requests_file) if requests_file else None
        index = build_index(store, targets, keep_order=order is None)
        reason = MISSING_NOT_RUN if summary["finished"] else MISSING_PENDING
        if ref.unreachable:
            reason = "no result: a batch of the job cannot be read from the server (see unreachable)"
        merger = Merger(index, reason)
        try:
            if fmt == "csv" and src_csv:
                submitted = set(order) if order is not None else None
                counts = merger.write_csv(CsvRows(src_csv, source.to_dict() if source else None,
                                                  requests_file, column),
                                          out_path, err_path, submitted=submitted)
            elif fmt == "csv":  # a job built from prompts or JSONL: one row per request
                if requests_file is None:
                    raise UsageError("--format csv needs the job's requests, and neither the input nor the "
                                     "server's copy can be read",
                                     hint="Fetch with --format simple or raw, or restore the job's input.")
                counts = merger.write_csv(RequestRows(requests_file, column), out_path, err_path)
            else:
                counts = merger.write_jsonl(order if order is not None else iter(index.order or []), fmt,
                                            out_path, err_path)
        finally:
            index.close()
        if order is None:
            total = int(rec.input.requests or 0)
            counts.missing = max(counts.missing, total - counts.succeeded - counts.failed)
            counts.requests = max(counts.requests, total)
        doc.update(_counts_doc(counts, out_path, err_path, fmt))
        doc["usage"], doc["cost"] = usage_and_cost(merger, reports, {r.round: r.completion_window for r in rec.rounds})
        remember_output(job, fmt, out_path, err_path, csv_path, column)
    doc["batches"] = [batch_report_doc(r, store, s) for r, s in zip(reports, ref.summaries)]
    if summary["unsubmitted"]:
        doc["unsubmitted"] = summary["unsubmitted"]
    if ref.unreachable:
        doc["unreachable"] = ref.unreachable
    doc["warnings"] = warnings
    doc["job"] = job.dir
    if merge:
        doc["exit_code"] = exit_code_for(complete, doc["failed"], doc["missing"])
    else:
        doc["exit_code"] = EXIT_NOT_FINISHED if not complete else EXIT_OK
    return doc


def usage_and_cost(merger: Merger, reports: Sequence[BatchReport], windows: Dict[Optional[int], str]
                   ) -> Tuple[Dict[str, int], Dict[str, Any]]:
    """What the results written cost: the tokens the server reported for each successful
    request, priced with the price table for the window of its batch; by round and in all.
    (The raw files are indexed two per batch, output then error, in the order of ``reports``.)"""
    total = {"requests": 0, "input_tokens": 0, "output_tokens": 0}
    by_round: Dict[Any, Dict[str, Any]] = {}
    usd_total = Decimal(0)
    unpriced: List[str] = []
    for (file_idx, model), (n, tin, tout) in sorted(merger.usage.items()):
        rep = reports[file_idx // 2]
        window = (rep.batch or {}).get("completion_window") or windows.get(rep.round) or "24h"
        row = by_round.setdefault((rep.round, window), {"round": rep.round, "completion_window": window,
                                                        "requests": 0, "input_tokens": 0, "output_tokens": 0,
                                                        "usd": Decimal(0)})
        for key, value in (("requests", n), ("input_tokens", tin), ("output_tokens", tout)):
            row[key] += value
            total[key] += value
        cost = pricing.cost(model, window, tin, tout)
        if cost is None:
            if model not in unpriced:
                unpriced.append(model)
            continue
        row["usd"] += cost
        usd_total += cost
    rounds = []
    for row in by_round.values():
        row["usd"] = pricing.money(row["usd"])
        rounds.append(row)
    cost_doc: Dict[str, Any] = {
        "usd": pricing.money(usd_total) if total["requests"] and not (unpriced and not usd_total) else None,
        "prices_as_of": pricing.PRICES_AS_OF,
        "basis": "tokens the server reported for each successful request x the price table's price for its window",
        "rounds": rounds,
    }
    if unpriced:
        cost_doc["unpriced_models"] = unpriced
    return total, cost_doc


def _counts_doc(counts: MergeCounts, out_path: str, err_path: str, fmt: str) -> Dict[str, Any]:
    doc: Dict[str, Any] = {
        "requests": counts.requests,
        "succeeded": counts.succeeded,
        "failed": counts.failed,
        "missing": counts.missing,
        "output": out_path,
        "errors": err_path,
        "format": fmt,
    }
    doc["failed_sample"] = counts.failed_sample
    doc["missing_sample"] = counts.missing_sample
    doc["unexpected"] = counts.unexpected
    return doc


def fetch_bare(client: Any, batch_ids: Sequence[str], out: str, err: Optional[str], fmt: str,
               input_path: Optional[str] = None, csv_path: Optional[str] = None,
               column: Optional[str] = None) -> Dict[str, Any]:
    """Fetch bare batch ids into OUT with the state in ``OUT.dwstate.json``."""
    out_path = os.path.abspath(out)
    err_path = os.path.abspath(err) if err else default_error_path(out_path)
    files.refuse_overwrite({"OUT": out_path, "ERR": err_path},
                              {"input given with --input": input_path, "CSV given with --csv": csv_path})
    store = FileStore(out_path)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    store.lock()
    try:
        store.load()
        store.set_batches(batch_ids)
        targets = [Target(bid) for bid in batch_ids]
        reports = update(client, store, targets, job_batches=False)
        store.save()
        summaries = [batch_summary(r, store) for r in reports]
        summary = jobstatus.job_status(summaries, None)
        complete = summary["finished"] and all(r.drained or r.unreachable for r in reports)
        index = build_index(store, targets, keep_order=input_path is None and fmt != "csv")
        reason = MISSING_NOT_RUN if summary["finished"] else MISSING_PENDING
        merger = Merger(index, reason)
        try:
            if fmt == "csv":
                if not input_path:
                    raise UsageError("--format csv with batch ids needs --input FILE (and --csv FILE for a batch "
                                     "built from a CSV)", hint="Or use --job DIR, which remembers both.")
                rows = CsvRows(csv_path, None, input_path, column) if csv_path else RequestRows(input_path, column)
                counts = merger.write_csv(rows, out_path, err_path)
            else:
                order = iter_input_ids(input_path) if input_path else iter(index.order or [])
                counts = merger.write_jsonl(order, fmt, out_path, err_path)
        finally:
            index.close()
        if input_path is None:
            # requests never seen in any file: estimated from the servers' counts
            total = sum(s["request_counts"]["total"] for s in summaries)
            counts.missing = max(0, total - counts.succeeded - counts.failed)
            counts.requests = counts.succeeded + counts.failed + counts.missing
        doc: Dict[str, Any] = {"complete": complete, "status": summary["status"],
                               "request_counts": summary["request_counts"]}
        doc.update(_counts_doc(counts, out_path, err_path, fmt))
        doc["usage"], doc["cost"] = usage_and_cost(merger, reports, {})
        doc["batches"] = [batch_report_doc(r, store, s) for r, s in zip(reports, summaries)]
        unreachable = [{"batch_id": r.batch_id, "reason": r.unreachable} for r in reports if r.unreachable]
        if unreachable:
            doc["unreachable"] = unreachable
        doc["warnings"] = []
        doc["job"] = None
        doc["state"] = store.path
        doc["exit_code"] = exit_code_for(complete, doc["failed"], doc["missing"])
        return doc
    finally:
        store.unlock()


def write_subset(input_path: str, keep: Any, dest: Optional[str]) -> Tuple[int, List[str]]:
    """Copy the request lines of ``input_path`` whose custom_id satisfies ``keep`` to ``dest``,
    verbatim and in order (streamed; written atomically; ``dest`` None only counts). Returns
    (count, first custom_ids)."""
    count = 0
    sample: List[str] = []
    seen: set = set()
    sink = atomic_output(dest, mode=0o600) if dest else contextlib.nullcontext(io.BytesIO())
    with sink as out:
        for cid, line in iter_input_lines(input_path, "build the retry input",
                                          "Restore the original batch input of the job."):
            if cid in seen or not keep(cid):
                continue
            seen.add(cid)
            if dest:
                out.write(line if line.endswith(b"\n") else line + b"\n")
            count += 1
            if len(sample) < SAMPLE:
                sample.append(cid)
    return count, sample


__all__ = ["Fetcher", "JobStore", "FileStore", "ResultIndex", "Merger", "CsvRows", "Target", "update",
           "build_index", "job_targets", "extract_content", "error_text", "is_success", "iter_input_ids",
           "atomic_output", "default_error_path", "default_job_output", "MISSING_PENDING", "MISSING_NOT_RUN",
           "fetch_job", "refresh_job", "resolve_output", "remember_output", "JobRefresh", "fetch_bare", "exit_code_for", "write_subset"]
