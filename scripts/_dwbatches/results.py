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
import time
from dataclasses import dataclass, field
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Tuple

from . import batches as dwb
from . import clock, compat, jobstate
from .errors import (
    EXIT_NOT_FINISHED,
    EXIT_OK,
    EXIT_UNSUCCESSFUL,
    APIConnectionError,
    DWError,
    JobError,
    UsageError,
    file_error,
)
from .files import atomic_output
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
def _new_entry() -> Dict[str, Any]:
    return {"output": {"skip": 0, "local_bytes": 0}, "error": {"skip": 0, "local_bytes": 0}, "verified": False}


class Store:
    """Where download cursors live and where raw files go."""

    fetch: Dict[str, Any]
    raw_dir: str

    def entry(self, batch_id: str) -> Dict[str, Any]:
        e = self.fetch.setdefault(batch_id, _new_entry())
        for kind in KINDS:
            rec = e.setdefault(kind, {"skip": 0, "local_bytes": 0})
            rec.setdefault("skip", 0)
            rec.setdefault("local_bytes", 0)
        e.setdefault("verified", False)
        return e

    def raw_path(self, batch_id: str, kind: str) -> str:
        return os.path.join(self.raw_dir, f"{batch_id}.{kind}.jsonl")

    def save(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class JobStore(Store):
    """Cursors in job.json (``fetch``), raw files in ``<job>/results/``. Caller holds the lock."""

    def __init__(self, job: jobstate.Job):
        self.job = job
        self.fetch = job.state.setdefault("fetch", {})
        self.raw_dir = job.path("results")

    def save(self) -> None:
        self.job.save()


class FileStore(Store):
    """For bare batch ids: cursors in ``OUT.dwstate.json``, raw files in ``OUT.dwraw/``."""

    def __init__(self, out_path: str):
        base = os.path.abspath(out_path)
        self.path = base + STATE_SUFFIX
        self.raw_dir = base + ".dwraw"
        self._lock: Optional[compat.FileLock] = None
        self.state: Dict[str, Any] = {"format": 1, "kind": "dwbatches-fetch", "batches": [], "fetch": {}}
        self.fetch = self.state["fetch"]

    def lock(self) -> None:
        lock = compat.FileLock(os.path.abspath(self.path)[: -len(".json")] + ".lock")
        if not lock.try_acquire():
            raise JobError(f"another process is fetching into {self.path[: -len(STATE_SUFFIX)]}",
                           hint="Wait for it to finish (or stop it), then run the command again.")
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
        self.state = doc
        self.fetch = doc["fetch"]

    def set_batches(self, batch_ids: Sequence[str]) -> None:
        known = list(self.state.get("batches") or [])
        for bid in batch_ids:
            if bid not in known:
                known.append(bid)
        self.state["batches"] = known

    def save(self) -> None:
        self.state["updated_at"] = time.time()
        jobstate.atomic_write_json(self.path, self.state)


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

    @property
    def status(self) -> Optional[str]:
        return self.batch.get("status")

    @property
    def terminal(self) -> bool:
        return dwb.is_terminal(self.status)


class Fetcher:
    """Brings the local raw files of batches up to date with the server."""

    def __init__(self, client: Any, store: Store):
        self.client = client
        self.store = store

    # one file --------------------------------------------------------------------------
    def _open_raw(self, batch_id: str, kind: str, rec: Dict[str, Any]) -> IO[bytes]:
        jobstate.make_private_dir(self.store.raw_dir)
        path = self.store.raw_path(batch_id, kind)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | compat.O_BINARY, 0o600)
        fh = os.fdopen(fd, "r+b")
        size = os.fstat(fd).st_size
        recorded = int(rec.get("local_bytes") or 0)
        if size < recorded:
            narrate(f"{os.path.basename(path)} is shorter than recorded ({size} < {recorded} bytes); "
                    "downloading that file again from the start")
            rec["skip"], rec["local_bytes"] = 0, 0
            recorded = 0
            fh.truncate(0)
            fh.flush()
            os.fsync(fd)
            self.store.save()
        elif size > recorded:
            fh.truncate(recorded)  # lines written after the last checkpoint are fetched again
        fh.seek(recorded)
        return fh

    def _checkpoint(self, fh: IO[bytes], rec: Dict[str, Any], skip: int) -> None:
        try:
            fh.flush()
            os.fsync(fh.fileno())
            pos = fh.tell()
        except OSError as exc:
            raise _SinkError(exc) from None
        if rec.get("skip") == skip and rec.get("local_bytes") == pos:
            return
        rec["skip"], rec["local_bytes"] = skip, pos
        self.store.save()

    def download(self, batch_id: str, kind: str, file_id: str) -> Tuple[Optional[bool], int]:
        """Append new lines of one file; return (X-Incomplete of the last read, new lines)."""
        entry = self.store.entry(batch_id)
        rec = entry[kind]
        fh = self._open_raw(batch_id, kind, rec)
        total_new = 0
        resumes = 0
        try:
            while True:
                base = int(rec["skip"])
                state = {"written": 0, "ck_lines": 0, "ck_time": time.monotonic()}

                def on_line(line: bytes, _base: int = base, _st: Dict[str, Any] = state) -> None:
                    try:
                        fh.write(line)
                        fh.write(b"\n")
                    except OSError as exc:
                        raise _SinkError(exc) from None
                    _st["written"] += 1
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
                        f"{rec['skip']} lines are saved",
                        hint="Run the same command again later; it continues where it stopped.")
                resumes += 1
                delay = 0.0 if resumes == 1 else min(30.0, 0.25 * 2 ** (resumes - 1))
                narrate(f"the {kind} download of batch {batch_id} broke after {res.lines} lines "
                        f"({res.interrupted}); continuing from line {rec['skip']} in {delay:.1f}s "
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
        counts = dwb.counts_of(batch)
        if entry.get("final") and entry.get("status") == batch.get("status") and \
                entry.get("request_counts") == counts:
            rep.batch, rep.drained, rep.verified, rep.skipped = batch, True, entry.get("verified", False), True
            return rep
        incomplete: Dict[str, Optional[bool]] = {}
        for _ in range(2):
            terminal_before = dwb.is_terminal(batch.get("status"))
            for kind in KINDS:
                file_id = batch.get(f"{kind}_file_id")
                if not file_id:
                    incomplete[kind] = not terminal_before
                    continue
                inc, n = self.download(batch_id, kind, file_id)
                rep.new_lines[kind] += n
                incomplete[kind] = inc
            if terminal_before or not all(v is False for v in incomplete.values()):
                break
            # X-Incomplete turned false while the status was not yet terminal: look again and drain
            batch = self.client.get_batch(batch_id)
        rep.batch = batch
        # a missing X-Incomplete header counts as "finished" once the status is terminal
        rep.drained = dwb.is_terminal(batch.get("status")) and all(v is not True for v in incomplete.values())
        entry["status"] = batch.get("status")
        entry["request_counts"] = dwb.counts_of(batch)
        if rep.drained:
            self._verify(rep, entry)
        else:
            entry["verified"] = False
            entry.pop("final", None)
        self.store.save()
        return rep

    def _verify(self, rep: BatchReport, entry: Dict[str, Any]) -> None:
        counts = dwb.counts_of(rep.batch)
        ok = True
        for kind in KINDS:
            expected = counts[COUNT_FOR_KIND[kind]]
            if expected == 0:
                continue
            have = count_unique_lines(self.store.raw_path(rep.batch_id, kind))
            rec = entry[kind]
            file_id = rep.batch.get(f"{kind}_file_id")
            if have < expected and file_id and int(rec.get("rereads") or 0) < MAX_REREADS:
                narrate(f"batch {rep.batch_id}: {have} unique {kind} lines but the server counts {expected}; "
                        "reading the whole file again")
                rec["rereads"] = int(rec.get("rereads") or 0) + 1
                rec["skip"] = 0  # the local file keeps its lines; duplicates are dropped when merging
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
        entry["verified"] = ok
        if ok and rep.batch.get("status") in ("completed", "failed"):
            entry["final"] = True
        else:
            entry.pop("final", None)


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

    def write_csv(self, rows: CsvRows, out_path: str, err_path: str) -> MergeCounts:
        with atomic_output(out_path, text=True) as out_fh, atomic_output(err_path) as err_fh:
            writer = csv.writer(out_fh, dialect=rows.dialect)
            writer.writerow(rows.header + [rows.response_col, rows.error_col])
            seen: set = set()
            for cid, row in rows:
                if cid is None:  # a row that produced no request (e.g. skipped as empty)
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


# -- CSV sources ---------------------------------------------------------------------------
class CsvRows:
    """Rows of the original CSV, each with the custom_id create_batch_file.py gave it.

    With the job's ``source`` (``id_prefix``, ``id_column``) the custom_id is computed the way
    the builder computes it (``<prefix>-<id column value>`` or ``<prefix>-<zero-padded row
    number>``); without it, rows are matched to the input's requests in order (the builder
    writes one request per non-blank row, in row order). Blank rows are skipped, as the
    builder skips them. Yields (custom_id or None, row values).
    """

    def __init__(self, csv_path: str, source: Optional[Dict[str, Any]], input_path: Optional[str]):
        from . import builder
        self._builder = builder
        self.csv_path = csv_path
        self.source = source or {}
        self.input_path = input_path
        self.dialect: Any = csv.excel
        with builder.CsvRows(csv_path) as rows:
            self.header = list(rows.header)
        names = set(self.header)
        self.response_col = "response" if "response" not in names else "dw_response"
        self.error_col = "error" if "error" not in names else "dw_error"

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
        with b.CsvRows(self.csv_path) as rows:
            number = 0
            for line, row in rows:
                number += 1
                values = [row.get(h, "") for h in self.header]
                if ids is not None:
                    yield next(ids, None), values
                elif isinstance(limit, int) and number > limit:
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
           batch_objs: Optional[Dict[str, Dict[str, Any]]] = None) -> List[BatchReport]:
    """Download what is new for every target batch (no merge)."""
    fetcher = Fetcher(client, store)
    reports = []
    for t in targets:
        rep = fetcher.fetch_batch(t.batch_id, (batch_objs or {}).get(t.batch_id))
        rep.round, rep.chunk = t.round, t.chunk
        reports.append(rep)
        got = rep.new_lines
        if got["output"] or got["error"]:
            narrate(f"batch {t.batch_id}: +{got['output']} results, +{got['error']} errors ({rep.status})")
        for note in rep.notes:
            narrate(f"batch {t.batch_id}: {note}")
    return reports


def build_index(store: Store, targets: Sequence[Target], keep_order: bool) -> ResultIndex:
    """Index raw files in target order (rounds in order), so that later rounds win."""
    index = ResultIndex(keep_order=keep_order)
    for t in targets:
        for kind in KINDS:
            index.add_file(store.raw_path(t.batch_id, kind), kind)
    return index


def job_targets(state: Dict[str, Any]) -> List[Target]:
    return [Target(t["batch_id"], t["round"], t["chunk"]) for t in dwb.job_targets(state) if t["batch_id"]]


def batch_report_doc(rep: BatchReport, store: Store) -> Dict[str, Any]:
    entry = store.entry(rep.batch_id)
    doc = dwb.summarize_batch(rep.batch, rep.round, rep.chunk) if rep.batch else {"batch_id": rep.batch_id}
    doc["fetched"] = {k: int(entry[k]["skip"]) for k in KINDS}
    doc["new_lines"] = dict(rep.new_lines)
    doc["verified"] = bool(entry.get("verified")) if rep.drained else None
    if rep.notes:
        doc["notes"] = rep.notes
    return doc


def default_error_path(out_path: str) -> str:
    base = os.path.abspath(out_path)
    for suffix in (".results.jsonl", ".results.csv", ".jsonl", ".csv", ".json"):
        if base.endswith(suffix):
            return base[: -len(suffix)] + ".errors.jsonl"
    return base + ".errors.jsonl"


def default_job_output(state: Dict[str, Any], fmt: str) -> str:
    # Results go beside the job's input (the file the user submitted), never into the folder
    # of a source CSV, which may be read-only or shared.
    stem = os.path.splitext(os.path.abspath(state["input"]["path"]))[0]
    return stem + (".results.csv" if fmt == "csv" else ".results.jsonl")


def exit_code_for(complete: bool, failed: int, missing: int) -> int:
    if not complete:
        return EXIT_NOT_FINISHED
    return EXIT_UNSUCCESSFUL if (failed or missing) else EXIT_OK


def input_order_usable(state: Dict[str, Any]) -> Optional[str]:
    """The job's input path when it is still there and unchanged in size, else None."""
    info = state.get("input") or {}
    path = info.get("path")
    if not path or not os.path.isfile(path):
        narrate(f"the job's input {path} is gone; results are written in the order they arrived "
                "and requests without any result cannot be listed")
        return None
    if info.get("bytes") is not None and os.path.getsize(path) != info["bytes"]:
        narrate(f"the job's input {path} changed since it was submitted; results are written in the "
                "order they arrived")
        return None
    return path


def resolve_output(state: Dict[str, Any], fmt: Optional[str], out: Optional[str], err: Optional[str],
                   csv_path: Optional[str]) -> Tuple[str, str, str, Optional[str]]:
    """(format, OUT, ERR, CSV) from the options given, else the job's remembered ones, else defaults.

    Output settings given once (e.g. to run_batch.py) are remembered in job.json (``results``)
    and used by later fetches that give none."""
    source = state.get("source") or {}
    last = state.get("results") if isinstance(state.get("results"), dict) else {}
    csv_path = csv_path or last.get("csv")
    if fmt is None:
        fmt = last.get("format") or ("csv" if source.get("kind") == "csv" or csv_path else "raw")
    if out:
        out_path = os.path.abspath(out)
    elif last.get("output") and last.get("format") == fmt:
        out_path = last["output"]
    else:
        out_path = default_job_output(state, fmt)
    if err:
        err_path = os.path.abspath(err)
    elif last.get("errors") and last.get("output") == out_path:
        err_path = last["errors"]
    else:
        err_path = default_error_path(out_path)
    protected = {"job's input": (state.get("input") or {}).get("path"), "source CSV": source.get("path"),
                 "CSV given with --csv": csv_path}
    for rnd in state.get("rounds", []):
        protected[f"input of round {rnd.get('round')}"] = rnd.get("input_path")
    jobstate.refuse_overwrite({"OUT": out_path, "ERR": err_path}, protected)
    return fmt, out_path, err_path, os.path.abspath(csv_path) if csv_path else None


def remember_output(job: jobstate.Job, fmt: str, out_path: str, err_path: str, csv_path: Optional[str]) -> None:
    """Record the output settings in job.json (caller holds the lock)."""
    remember = {"format": fmt, "output": out_path, "errors": err_path, "csv": csv_path}
    if job.state.get("results") != remember:
        job.state["results"] = remember
        job.save()


@dataclass
class JobRefresh:
    store: JobStore
    targets: List[Target]
    reports: List[BatchReport]
    summary: Dict[str, Any]
    complete: bool  # every batch terminal, drained, and the job fully submitted


def refresh_job(client: Any, job: jobstate.Job) -> JobRefresh:
    """Download what is new for every batch of the job and record statuses (caller holds the lock)."""
    targets = job_targets(job.state)
    store = JobStore(job)
    reports = update(client, store, targets)
    dwb.apply_status(job, {r.batch_id: r.batch for r in reports if r.batch})
    job.save()
    summaries = [dwb.summarize_batch(r.batch, r.round, r.chunk) for r in reports]
    summary = dwb.job_status(summaries, job.state)
    complete = summary["finished"] and all(r.drained for r in reports)
    return JobRefresh(store, targets, reports, summary, complete)


def fetch_job(client: Any, job: jobstate.Job, fmt: Optional[str] = None, out: Optional[str] = None,
              err: Optional[str] = None, csv_path: Optional[str] = None, merge: bool = True) -> Dict[str, Any]:
    """Download, verify and (with ``merge``) write OUT/ERR for a job. The caller holds the lock.

    Returns the report document; ``doc["exit_code"]`` is the outcome (0, 5 or 6)."""
    state = job.state
    ref = refresh_job(client, job)
    store, targets, reports, summary, complete = ref.store, ref.targets, ref.reports, ref.summary, ref.complete
    doc: Dict[str, Any] = {
        "complete": complete,
        "status": summary["status"],
        "request_counts": summary["request_counts"],
    }
    if merge:
        source = state.get("source") or None
        fmt, out_path, err_path, csv_path = resolve_output(state, fmt, out, err, csv_path)
        input_path = input_order_usable(state)
        index = build_index(store, targets, keep_order=input_path is None)
        reason = MISSING_NOT_RUN if summary["finished"] else MISSING_PENDING
        merger = Merger(index, reason)
        try:
            if fmt == "csv":
                src_csv = csv_path or (source or {}).get("path")
                if not src_csv:
                    raise UsageError("--format csv needs the original CSV",
                                     hint="Pass --csv FILE (the CSV the batch input was built from).")
                if not os.path.isfile(src_csv):
                    raise UsageError(f"{src_csv}: no such file", hint="Pass --csv FILE with the original CSV.")
                counts = merger.write_csv(CsvRows(src_csv, source, input_path or state["input"]["path"]),
                                          out_path, err_path)
            else:
                order = iter_input_ids(input_path) if input_path else iter(index.order or [])
                counts = merger.write_jsonl(order, fmt, out_path, err_path)
        finally:
            index.close()
        if input_path is None:
            total = int((state.get("input") or {}).get("requests") or 0)
            counts.missing = max(counts.missing, total - counts.succeeded - counts.failed)
            counts.requests = max(counts.requests, total)
        doc.update(_counts_doc(counts, out_path, err_path, fmt))
        remember_output(job, fmt, out_path, err_path, csv_path)
    doc["batches"] = [batch_report_doc(r, store) for r in reports]
    if summary["unsubmitted"]:
        doc["unsubmitted"] = summary["unsubmitted"]
    doc["job"] = job.dir
    if merge:
        doc["exit_code"] = exit_code_for(complete, doc["failed"], doc["missing"])
    else:
        doc["exit_code"] = EXIT_NOT_FINISHED if not complete else EXIT_OK
    return doc


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
               input_path: Optional[str] = None, csv_path: Optional[str] = None) -> Dict[str, Any]:
    """Fetch bare batch ids into OUT with the state in ``OUT.dwstate.json``."""
    out_path = os.path.abspath(out)
    err_path = os.path.abspath(err) if err else default_error_path(out_path)
    jobstate.refuse_overwrite({"OUT": out_path, "ERR": err_path},
                              {"input given with --input": input_path, "CSV given with --csv": csv_path})
    store = FileStore(out_path)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    store.lock()
    try:
        store.load()
        store.set_batches(batch_ids)
        targets = [Target(bid) for bid in batch_ids]
        reports = update(client, store, targets)
        store.save()
        summaries = [dwb.summarize_batch(r.batch) for r in reports]
        summary = dwb.job_status(summaries, None)
        complete = summary["finished"] and all(r.drained for r in reports)
        index = build_index(store, targets, keep_order=input_path is None and fmt != "csv")
        merger = Merger(index, MISSING_NOT_RUN if summary["finished"] else MISSING_PENDING)
        try:
            if fmt == "csv":
                if not csv_path or not input_path:
                    raise UsageError("--format csv with batch ids needs --csv FILE and --input FILE",
                                     hint="Or use --job DIR, which remembers both.")
                counts = merger.write_csv(CsvRows(csv_path, None, input_path), out_path, err_path)
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
        doc["batches"] = [batch_report_doc(r, store) for r in reports]
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
