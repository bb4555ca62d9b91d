"""The job record, ``job.json``, as typed records (read and written only by ``job.Job``).

Schema of ``job.json`` (``version`` 2; the version-1 files of earlier releases, marked
``"format": 1`` and holding absolute paths, load as they are)::

    version            2
    job_id             uuid of the job; sent to the server in every batch's metadata (dwb_job)
    created_at, updated_at     unix seconds
    input              {path, sha256, bytes, mtime, requests}: the file submitted (round 1)
    completion_window  "24h" or "1h"
    metadata           {key: value} the user's batch metadata
    base_url           the API the job was submitted to; later commands use it when given no URL
    allow_insecure_http  true when it was submitted with --allow-insecure-http
    source             null, or {kind: "csv", path, id_column, id_prefix, rows, sha256, bytes,
                       mtime, delimiter, bom, ...}: the CSV the input was built from
    rounds             [{round, kind ("initial" | "retry"), input_path, input_sha256,
                       completion_window, created_at, limits {max_requests, max_bytes},
                       replan (limits to re-split with, or absent), chunks: [chunk]}]
    chunk              {index, start_line, end_line, start_byte, end_byte, requests, bytes,
                       endpoint, upload_name, file_id, intent_id, batch_id, completion_window,
                       status, request_counts {total, completed, failed}, output_file_id,
                       error_file_id, expires_at, expired_at, cost_estimate, held,
                       upload_started_at, create_started_at, and only when set:
                       create_posts, duplicates, watch_duplicates_until}
                       create_started_at: when the last attempt of POST /batches started;
                       create_posts: the creates sent that may have made a batch (counted
                       before each is sent); duplicates: [batch ids] other batches the server
                       made for the chunk's intent (a create still in progress when it was
                       sent again): cancelled when found running, billed for what they ran,
                       their results the same requests' (merged once); watch_duplicates_until:
                       unix seconds; a batch sent more than once is checked for such batches
                       until a check made after this time
    fetch              {batch_id: {output: cursor, error: cursor, verified, final, status,
                       request_counts, unreachable}}; cursor = {skip, local_bytes, rereads}:
                       lines read from the server and bytes of them on disk
    results            null, or {format, output, errors, csv, column}: the output settings last used
    local_estimate     null, or {window, low_usd, high_usd, as_of, input_tokens, output_tokens_low,
                       output_tokens_high, high_basis, models, unpriced_models}: the price-table
                       range at submit (cost/estimate.py; earlier versions kept the first four)
    cancel             null, or {at, rounds}: cancelled by the user; no batch is created for
                       a chunk of those rounds any more
    reuse              null, or {sent, reused, copies, sampled, saved_low_usd, saved_high_usd,
                       from_jobs {job directory: answers}}: the requests of the input that
                       were not sent because their answers were at hand (``answerreuse``):
                       reused from earlier jobs' answers, or copies of an identical request
                       of this job; round 1 then sends ``rounds/round-1.jsonl``: only the
                       requests whose answers were not at hand
    merged             null, or {settings_sha256, inputs: [{what, stamp}], outputs: [stamp],
                       report, warnings, narration, usage, at}: the last merge, so that a
                       fetch with nothing new proves it and reports it without merging again
                       (results/unchanged.py); settings_sha256 covers the output settings and
                       the merge's own (format, paths, columns, order); inputs are what was
                       read (each raw file, the requests, the source CSV, ...); outputs the
                       results and errors files as written; report, warnings and narration
                       what the merge added to the fetch's report and said; usage its tokens
                       per raw file and model ([file, model, answers, input, output, reasoning])
    stamp              {bytes, mtime_ns, ctime_ns, inode, sample}: a file's identity without
                       reading it whole; sample = sha256 of its first and last 64 KiB; null
                       for a file that was not there

Paths (``input.path``, ``source.path``, ``rounds[].input_path``, ``results.*``) are stored
relative to the job directory when they lie inside the project folder (the working directory
when the job lies inside it, else the folder that holds the job), absolute otherwise; so a project folder moved or copied with its job keeps working.
In memory every path is absolute.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple, Type, TypeVar

VERSION = 2


TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "expired"})

# A chunk whose batch the server no longer has (deleted on the dashboard or by another tool):
# it has ended (a delete cancels what had not run), and its result files stay downloadable
# by the ids the chunk recorded.
DELETED = "deleted"


COUNT_KEYS = ("total", "completed", "failed")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def counts_of(batch: Dict[str, Any]) -> Dict[str, int]:
    """``request_counts`` of a batch object (or of a stored record) as three ints."""
    rc = batch.get("request_counts") if isinstance(batch, dict) else None
    rc = rc if isinstance(rc, dict) else {}
    return {k: int(rc.get(k) or 0) for k in COUNT_KEYS}


_R = TypeVar("_R", bound="_Record")


class _Record:
    """A dataclass stored as a JSON object; keys it does not know are kept in ``extra``."""

    extra: Dict[str, Any]

    @classmethod
    def from_dict(cls: Type[_R], doc: Optional[Dict[str, Any]]) -> _R:
        doc = dict(doc or {})
        # (every subclass is a dataclass; this mixin is not, so the checker cannot know it)
        names = {f.name for f in dataclasses.fields(cls) if f.name != "extra"}  # type: ignore[arg-type]
        known = {k: doc.pop(k) for k in list(doc) if k in names}
        obj = cls(**known)
        obj.extra = doc
        return obj

    def to_dict(self) -> Dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}  # type: ignore[arg-type]
        out.update(self.extra)
        return out


@dataclass
class Fingerprint:
    """Size, modification time and sha256 of a file, to tell whether it changed."""

    bytes: Optional[int] = None
    mtime: Optional[float] = None
    sha256: Optional[str] = None

    @classmethod
    def of(cls, path: str, sha256: Optional[str] = None) -> Fingerprint:
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime, sha256 or sha256_file(path))

    def check(self, path: Optional[str]) -> str:
        """ "same", "changed" or "missing", checked before the file's contents are used. Another
        size: changed. Otherwise the sha256 decides, also when the modification time is the same:
        an edit that keeps the size and the time (``cp -p``, ``rsync -t``, a sort saved with its
        old timestamp, file systems with coarse times) must not put answers on the wrong rows.
        The time alone decides only for a record without a sha256."""
        if not path:
            return "missing"
        try:
            st = os.stat(path)
        except OSError:
            return "missing"
        if not os.path.isfile(path):
            return "missing"
        if self.bytes is not None and st.st_size != self.bytes:
            return "changed"
        if not self.sha256:
            if self.mtime is not None and self.bytes is not None and abs(st.st_mtime - self.mtime) < 1e-6:
                return "same"
            return "same" if self.bytes is not None else "changed"
        try:
            return "same" if sha256_file(path) == self.sha256 else "changed"
        except OSError:
            return "missing"


SAMPLE_BYTES = 64 * 1024


@dataclass
class FileStamp(_Record):
    """A file's identity, taken without reading it whole: size, modification time, the kernel's
    change time (None where there is none), inode, and the sha256 of its first and last 64 KiB.

    Two equal stamps prove the file unchanged: a write changes the size or the change time,
    which no program can set back (``touch -r``, ``cp -p`` and ``rsync -t`` restore the
    modification time, not the change time), and a file replaced by another (a rename, an
    editor's save) has another inode. Where there is no change time (Windows) the sample
    still catches an edit of a header or of the last lines that keeps the size and the time."""

    bytes: int = 0
    mtime_ns: int = 0
    ctime_ns: Optional[int] = None
    inode: int = 0
    sample: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, path: Optional[str], change_time: Any = None) -> Optional[FileStamp]:
        """The stamp of ``path``, or None when it is not a file there. ``change_time``: how to
        read the change time from a stat result (``compat.change_time_ns``)."""
        if not path:
            return None
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                h = hashlib.sha256(fh.read(SAMPLE_BYTES))
                if st.st_size > SAMPLE_BYTES:
                    fh.seek(max(SAMPLE_BYTES, st.st_size - SAMPLE_BYTES))
                    h.update(fh.read(SAMPLE_BYTES))
        except OSError:  # missing, a folder, unreadable: not the file that was merged
            return None
        ctime = change_time(st) if change_time is not None else None
        return cls(st.st_size, st.st_mtime_ns, ctime, st.st_ino, h.hexdigest())


@dataclass
class MergeInput(_Record):
    """One thing a merge read, named (``what``), with its stamp (None: it was not there)."""

    what: str = ""
    stamp: Optional[FileStamp] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Optional[Dict[str, Any]]) -> MergeInput:
        doc = dict(doc or {})
        stamp = doc.pop("stamp", None)
        obj = super().from_dict(doc)
        obj.stamp = FileStamp.from_dict(stamp) if isinstance(stamp, dict) else None
        return obj

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        out["stamp"] = self.stamp.to_dict() if self.stamp else None
        return out


@dataclass
class Merged(_Record):
    """The last merge of a job's results: what it read, what it wrote, what it reported."""

    settings_sha256: str = ""
    inputs: List[MergeInput] = field(default_factory=list)
    outputs: List[Optional[FileStamp]] = field(default_factory=list)
    report: Dict[str, Any] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    narration: List[str] = field(default_factory=list)
    usage: List[List[Any]] = field(default_factory=list)
    at: float = 0.0
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Optional[Dict[str, Any]]) -> Merged:
        doc = dict(doc or {})
        inputs = [MergeInput.from_dict(i) for i in doc.pop("inputs", None) or []]
        outputs = [FileStamp.from_dict(o) if isinstance(o, dict) else None for o in doc.pop("outputs", None) or []]
        obj = super().from_dict(doc)
        obj.inputs, obj.outputs = inputs, outputs
        return obj

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        out["inputs"] = [i.to_dict() for i in self.inputs]
        out["outputs"] = [o.to_dict() if o else None for o in self.outputs]
        return out


@dataclass
class InputInfo(_Record):
    path: str = ""
    sha256: Optional[str] = None
    requests: int = 0
    bytes: Optional[int] = None
    mtime: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint(self.bytes, self.mtime, self.sha256)


@dataclass
class Source(_Record):
    """The CSV a batch input was built from (create_batch_file.py's sidecar)."""

    kind: str = "csv"
    path: Optional[str] = None
    id_column: Optional[str] = None
    id_prefix: Optional[str] = None
    rows: Optional[int] = None
    sha256: Optional[str] = None
    bytes: Optional[int] = None
    mtime: Optional[float] = None
    template: Optional[str] = None  # what made each row's prompt: rows are matched by content with it
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> Optional[Fingerprint]:
        if self.sha256 is None and self.bytes is None:
            return None  # recorded by an earlier release: nothing to check against
        return Fingerprint(self.bytes, self.mtime, self.sha256)

    def as_dict(self) -> Dict[str, Any]:
        return self.to_dict()


@dataclass
class Limits(_Record):
    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Chunk(_Record):
    """One uploaded file and the batch made from it."""

    index: int = 1
    start_line: int = 1
    end_line: int = 1
    start_byte: int = 0
    end_byte: int = 0
    requests: int = 0
    bytes: int = 0
    endpoint: Optional[str] = None
    upload_name: str = ""
    file_id: Optional[str] = None
    intent_id: str = ""
    batch_id: Optional[str] = None
    completion_window: Optional[str] = None
    status: Optional[str] = None
    request_counts: Optional[Dict[str, int]] = None
    output_file_id: Optional[str] = None
    error_file_id: Optional[str] = None
    expires_at: Optional[int] = None
    expired_at: Optional[int] = None
    cost_estimate: Optional[Dict[str, Any]] = None
    analytics: Optional[Dict[str, Any]] = None  # the server's analytics of the batch (tokens, billed cost)
    held: Optional[str] = None
    upload_started_at: Optional[float] = None
    create_started_at: Optional[float] = None  # when the last attempt of POST /batches started
    create_posts: Optional[int] = None  # creates sent that may have made a batch
    duplicates: Optional[List[str]] = None  # other batches made for this chunk's intent
    watch_duplicates_until: Optional[float] = None  # look for such batches until a check after this
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        for key in ("expired_at", "create_posts", "duplicates", "watch_duplicates_until"):
            if out.get(key) is None:
                out.pop(key, None)
        return out

    def add_duplicate(self, batch_id: str) -> bool:
        """Record another batch made for this chunk's intent; False if already recorded."""
        if not batch_id or batch_id == self.batch_id or batch_id in (self.duplicates or []):
            return False
        self.duplicates = [*(self.duplicates or []), batch_id]
        return True

    def record_batch(self, batch: Dict[str, Any]) -> None:
        """The one way a batch object's status, counts, files and expiry get into the chunk."""
        if batch.get("id") and not self.batch_id:
            self.batch_id = batch["id"]
        self.status = batch.get("status")
        if isinstance(batch.get("request_counts"), dict):
            self.request_counts = counts_of(batch)
        for key in ("output_file_id", "error_file_id", "expires_at", "expired_at"):
            if batch.get(key) is not None:
                setattr(self, key, batch[key])
        if isinstance(batch.get("analytics"), dict):
            self.analytics = batch["analytics"]

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES or self.status == DELETED

    def deleted_batch(self) -> Optional[Dict[str, Any]]:
        """What is known of this chunk's batch once the server has deleted it, as a batch object
        (status ``deleted``, its recorded files and counts), or None when no file of it is known."""
        if not self.batch_id or not (self.output_file_id or self.error_file_id):
            return None
        counts = dict(self.request_counts or {"total": self.requests, "completed": 0, "failed": 0})
        return {
            "id": self.batch_id,
            "object": "batch",
            "status": DELETED,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "request_counts": counts,
            "completion_window": self.completion_window,
            "expires_at": self.expires_at,
        }


@dataclass
class Round(_Record):
    round: int = 1
    kind: str = "initial"  # or "retry"
    input_path: str = ""
    input_sha256: Optional[str] = None
    completion_window: str = "24h"
    created_at: Optional[float] = None
    limits: Limits = field(default_factory=Limits)
    replan: Optional[Limits] = None
    chunks: List[Chunk] = field(default_factory=list)
    # the settings its requests were sent with, changed from what was submitted (model,
    # max_tokens, reasoning; a retry's changes add to those of the rounds before it)
    changes: Optional[Dict[str, Any]] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Optional[Dict[str, Any]]) -> Round:
        doc = dict(doc or {})
        chunks = [Chunk.from_dict(c) for c in doc.pop("chunks", None) or []]
        limits = Limits.from_dict(doc.pop("limits", None))
        replan = doc.pop("replan", None)
        rnd = super().from_dict(doc)
        rnd.chunks, rnd.limits = chunks, limits
        rnd.replan = Limits.from_dict(replan) if replan else None
        return rnd

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        out["limits"] = self.limits.to_dict()
        out["chunks"] = [c.to_dict() for c in self.chunks]
        if self.replan is None:
            out.pop("replan")
        else:
            out["replan"] = self.replan.to_dict()
        return out

    @property
    def done(self) -> bool:
        """Every chunk has a batch in a terminal state."""
        return all(c.batch_id and c.terminal for c in self.chunks)


@dataclass
class Cursor(_Record):
    """Where the download of one file stands: lines read, and their bytes on disk."""

    skip: int = 0
    local_bytes: int = 0
    rereads: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchDownload(_Record):
    """The downloads of one batch's output and error files."""

    output: Cursor = field(default_factory=Cursor)
    error: Cursor = field(default_factory=Cursor)
    verified: bool = False
    final: bool = False  # completed or failed, verified: nothing more can arrive
    status: Optional[str] = None
    request_counts: Optional[Dict[str, int]] = None
    unreachable: Optional[str] = None  # why the batch or its files cannot be read (404)
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Optional[Dict[str, Any]]) -> BatchDownload:
        doc = dict(doc or {})
        out, err = Cursor.from_dict(doc.pop("output", None)), Cursor.from_dict(doc.pop("error", None))
        obj = super().from_dict(doc)
        obj.output, obj.error = out, err
        return obj

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        out["output"], out["error"] = self.output.to_dict(), self.error.to_dict()
        return out

    def cursor(self, kind: str) -> Cursor:
        return self.output if kind == "output" else self.error


@dataclass
class ResultsSettings(_Record):
    format: Optional[str] = None
    output: Optional[str] = None
    errors: Optional[str] = None
    csv: Optional[str] = None
    column: Optional[str] = None
    columns: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Cancel(_Record):
    """A cancel the user asked for: rounds up to ``rounds`` create no further batch."""

    at: float = 0.0
    rounds: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Reuse(_Record):
    """The requests of a new job that were not sent: answered already by an earlier job of the
    project (``reused``), or identical to an earlier request of this job (``copies``, which
    take its answer); ``sent`` went to the server."""

    sent: int = 0
    reused: int = 0
    copies: int = 0
    sampled: bool = False  # sampled requests (temperature not 0) were reused too: --reuse-sampled
    saved_low_usd: Optional[str] = None  # the local estimate of what was not sent, as a range
    saved_high_usd: Optional[str] = None
    from_jobs: Dict[str, int] = field(default_factory=dict)  # job directory name -> answers reused from it
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def not_sent(self) -> int:
        return self.reused + self.copies


@dataclass
class JobRecord(_Record):
    job_id: str = ""
    version: int = VERSION
    created_at: float = 0.0
    updated_at: float = 0.0
    input: InputInfo = field(default_factory=InputInfo)
    completion_window: str = "24h"
    metadata: Dict[str, str] = field(default_factory=dict)
    base_url: Optional[str] = None
    source: Optional[Source] = None
    rounds: List[Round] = field(default_factory=list)
    fetch: Dict[str, BatchDownload] = field(default_factory=dict)
    results: Optional[ResultsSettings] = None
    cancel: Optional[Cancel] = None
    local_estimate: Optional[Dict[str, Any]] = None  # the price-table range at submit (cost.estimate.recorded)
    answers: Optional[Dict[str, Any]] = None  # the last merge's answer checks: {counts, batches, complete}
    allow_insecure_http: bool = False  # submitted with --allow-insecure-http to a plain-http host
    reuse: Optional[Reuse] = None  # the requests not sent, their answers at hand (answerreuse)
    merged: Optional[Merged] = None  # the last merge (results/unchanged.py)
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Optional[Dict[str, Any]]) -> JobRecord:
        doc = dict(doc or {})
        doc.pop("format", None)  # version 1 marked itself this way
        inp = InputInfo.from_dict(doc.pop("input", None))
        src = doc.pop("source", None)
        rounds = [Round.from_dict(r) for r in doc.pop("rounds", None) or []]
        fetch = {k: BatchDownload.from_dict(v) for k, v in (doc.pop("fetch", None) or {}).items()}
        res = doc.pop("results", None)
        cancel = doc.pop("cancel", None)
        reuse = doc.pop("reuse", None)
        merged = doc.pop("merged", None)
        rec = super().from_dict(doc)
        rec.merged = Merged.from_dict(merged) if isinstance(merged, dict) else None
        rec.input, rec.rounds, rec.fetch = inp, rounds, fetch
        rec.source = Source.from_dict(src) if isinstance(src, dict) else None
        rec.results = ResultsSettings.from_dict(res) if isinstance(res, dict) else None
        rec.cancel = Cancel.from_dict(cancel) if isinstance(cancel, dict) else None
        rec.reuse = Reuse.from_dict(reuse) if isinstance(reuse, dict) else None
        rec.metadata = dict(rec.metadata or {})
        return rec

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        out["version"] = VERSION
        out["input"] = self.input.to_dict()
        out["source"] = self.source.to_dict() if self.source else None
        out["rounds"] = [r.to_dict() for r in self.rounds]
        out["fetch"] = {k: v.to_dict() for k, v in self.fetch.items()}
        out["results"] = self.results.to_dict() if self.results else None
        out["cancel"] = self.cancel.to_dict() if self.cancel else None
        if self.reuse is None:
            out.pop("reuse")
        else:
            out["reuse"] = self.reuse.to_dict()
        out["merged"] = self.merged.to_dict() if self.merged else None
        return out

    # -- views ---------------------------------------------------------------------------
    def chunks(self) -> Iterator[Chunk]:
        for rnd in self.rounds:
            yield from rnd.chunks

    def round_chunks(self) -> Iterator[Tuple[Round, Chunk]]:
        for rnd in self.rounds:
            for ch in rnd.chunks:
                yield rnd, ch

    def batch_ids(self) -> List[str]:
        return [c.batch_id for c in self.chunks() if c.batch_id]

    def round_of(self, chunk: Chunk) -> Round:
        for rnd in self.rounds:
            if any(c is chunk for c in rnd.chunks):
                return rnd
        raise KeyError(chunk.index)

    def download(self, batch_id: str) -> BatchDownload:
        """The download record of a batch (made when first asked for)."""
        if batch_id not in self.fetch:
            self.fetch[batch_id] = BatchDownload()
        return self.fetch[batch_id]

    def record_batches(self, batches: Dict[str, Dict[str, Any]]) -> None:
        """Record fetched batch objects on the chunks they belong to."""
        for ch in self.chunks():
            b = batches.get(ch.batch_id or "")
            if b:
                ch.record_batch(b)

    def nothing_created(self) -> bool:
        """No batch of the job exists or may exist on the server (none recorded, no creation
        ever started), so the job may be planned again from scratch."""
        if len(self.rounds) > 1:
            return False
        return not any(c.batch_id or c.create_started_at for c in self.chunks())

    def cancelled_round(self, rnd: Round) -> bool:
        return self.cancel is not None and rnd.round <= self.cancel.rounds
