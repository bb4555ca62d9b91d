"""Planning a job: validate the input, split it into chunks, create or resume the job record.

A job (``job.Job``) holds rounds; a round is one input file split into chunks of at most
``max_requests`` requests and ``max_bytes`` bytes; each chunk becomes one uploaded file (a byte
range of the round's input, never a copy) and one batch. Nothing here talks to the server:
``submitter.Submitter`` uploads and creates what is planned.

    rep = validate_input(path, max_requests=..., max_bytes=...)   # InputError (exit 2) if invalid
    resumed = prepare_job(job, path, base_url=..., completion_window="24h", metadata={...}, report=rep)
    rnd = add_retry_round(job, "retry.jsonl")                      # a round of failed requests

On resume a different input (sha256), base URL, window or metadata is refused (``JobError``,
exit 2) unless no batch of the job exists yet, in which case it is planned again.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Callable, Dict, Iterable, List, Optional
from urllib.parse import urlsplit

from ..core import apifacts, events
from ..core.commands import command, display_path
from ..core.errors import DWError, InputError, JobError, UsageError
from ..core.files import atomic_output, make_private_dir
from ..core.flags import check_number
from ..core.urls import is_loopback
from ..cost.cost import local_estimate
from ..cost.estimate import recorded
from ..jobs import answerstore
from ..jobs.job import Job, check_server, new_intent_id
from ..jobs.jobrecord import Chunk, Fingerprint, Limits, Round, Source, sha256_file
from ..validation.chunkplan import Chunk as PlanChunk
from ..validation.validate import (
    MAX_BODY_BYTES,
    MAX_FILE_BYTES,
    MAX_REQUESTS_PER_FILE,
    Report,
    check_chunk_size,
    print_errors,
    validate_file,
)

WINDOWS = apifacts.COMPLETION_WINDOWS

# Plans a new job's round 1 given (job dir, input, its report, window, max_requests, max_bytes,
# max_body_bytes): an object with ``record`` (``jobrecord.Reuse``), ``send_path`` (None: the
# input itself) and ``send_report`` (``results.answerreuse.planner``).
RoundOne = Callable[..., Any]


# Batch metadata keys this tool sets, and keys the server drops silently.
RESERVED_PREFIX = "dwb_"


SERVER_RESERVED_KEYS = apifacts.RESERVED_METADATA_KEYS


def validate_input(
    path: str,
    max_requests: int = MAX_REQUESTS_PER_FILE,
    max_bytes: int = MAX_FILE_BYTES,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_errors: int = 50,
) -> Report:
    """Validate and plan ``path``. Invalid: list the errors (``line N: ...``, events) and raise
    ``InputError`` (exit 2). Nothing is sent either way."""
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file", hint="Pass the path of a JSONL batch file.")
    check_number("--max-requests", max_requests, "1000", at_least=1)
    check_number("--max-bytes", max_bytes, "50000000", at_least=1)
    rep = validate_file(
        path, max_requests=max_requests, max_bytes=max_bytes, max_body_bytes=max_body_bytes, line_limit=MAX_FILE_BYTES
    )
    if rep.valid:
        check_chunk_size(rep, max_bytes)
        for w in rep.warnings:
            events.warning(w)
        return rep
    print_errors(rep, max_errors)
    first = rep.errors[0]["line"] if rep.errors else None
    raise InputError(
        f"{path}: {rep.errors_total} invalid line(s); nothing was sent",
        hint=f"Fix the lines listed above ({command('validate_batch_file.py', display_path(path))} "
        "checks a file without sending anything), then run the command again.",
        line=first,
    )


def plan_range(
    path: str,
    start_byte: int,
    end_byte: Optional[int],
    start_line: int,
    max_requests: int,
    max_bytes: int,
    first_index: int = 1,
) -> List[PlanChunk]:
    """Split the requests of an already validated file between two byte offsets into chunks
    (the same rule as ``validate_file``'s plan)."""
    chunks: List[PlanChunk] = []
    chunk: Optional[PlanChunk] = None
    with open(path, "rb") as fh:
        fh.seek(start_byte)
        offset, n = start_byte, start_line - 1
        for raw in fh:
            if end_byte is not None and offset >= end_byte:
                break
            n += 1
            size = len(raw)
            if raw.strip():
                if size > max_bytes:
                    raise UsageError(
                        f"line {n} is {size} bytes, more than --max-bytes {max_bytes}",
                        hint="Use a --max-bytes larger than the longest line.",
                    )
                if chunk is None or chunk.requests + 1 > max_requests or offset + size - chunk.start_byte > max_bytes:
                    chunk = PlanChunk(
                        index=first_index + len(chunks),
                        start_line=n,
                        end_line=n,
                        start_byte=offset,
                        end_byte=offset + size,
                    )
                    chunks.append(chunk)
                chunk.requests += 1
                try:
                    url = json.loads(raw).get("url", "")
                except (ValueError, RecursionError):  # not JSON, or nested past any real answer
                    url = ""
                chunk.urls[url] = chunk.urls.get(url, 0) + 1
                chunk.end_line, chunk.end_byte = n, offset + size
            offset += size
    return chunks


def upload_name(job_id: str, round_no: int, index: int) -> str:
    return f"dwb-{job_id[:8]}-r{round_no}-c{index}.jsonl"


def new_chunk(job_id: str, round_no: int, chunk: PlanChunk, completion_window: str) -> Chunk:
    return Chunk(
        index=chunk.index,
        start_line=chunk.start_line,
        end_line=chunk.end_line,
        start_byte=chunk.start_byte,
        end_byte=chunk.end_byte,
        requests=chunk.requests,
        bytes=chunk.bytes,
        endpoint=chunk.endpoint,
        upload_name=upload_name(job_id, round_no, chunk.index),
        intent_id=new_intent_id(),
        completion_window=completion_window,
    )


def new_round(
    job: Job,
    round_no: int,
    kind: str,
    input_path: str,
    input_sha256: str,
    completion_window: str,
    chunks: Iterable[PlanChunk],
    max_requests: int,
    max_bytes: int,
) -> Round:
    job_id = job.record.job_id
    return Round(
        round=round_no,
        kind=kind,
        input_path=os.path.abspath(input_path),
        input_sha256=input_sha256,
        completion_window=completion_window,
        created_at=time.time(),
        limits=Limits(max_requests=max_requests, max_bytes=max_bytes),
        chunks=[new_chunk(job_id, round_no, c, completion_window) for c in chunks],
    )


def parse_metadata(pairs: Iterable[str]) -> Dict[str, str]:
    """``KEY=VALUE`` strings → dict. Refuses ``dwb_*`` keys (this tool's own) and the keys the
    server drops."""
    meta: Dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--metadata {pair!r} is not KEY=VALUE", hint="e.g. --metadata project=reviews")
        if key.lower().startswith(RESERVED_PREFIX):
            raise UsageError(
                f"--metadata key {key!r} is reserved (dwb_* keys are set by this tool)", hint="Pick another key name."
            )
        if key in SERVER_RESERVED_KEYS:
            raise UsageError(
                f"--metadata key {key!r} is reserved by the server, which would drop it", hint="Pick another key name."
            )
        if key in meta and meta[key] != value:
            raise UsageError(f"--metadata key {key!r} is given twice with different values")
        meta[key] = value
    if len(meta) > 13:
        events.warning(f"{len(meta)} metadata keys; OpenAI-style APIs allow 16 in all and this tool adds 3")
    return meta


def prepare_job(
    job: Job,
    input_path: str,
    *,
    base_url: str,
    completion_window: Optional[str] = None,
    metadata: Optional[Dict[str, str]] = None,
    max_requests: Optional[int] = None,
    max_bytes: Optional[int] = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    report: Optional[Report] = None,
    input_sha256: Optional[str] = None,
    source: Optional[Dict[str, Any]] = None,
    reuse: Optional[RoundOne] = None,
) -> bool:
    """Create the job for ``input_path`` (round 1 planned, nothing sent), or load and check an
    existing one. Returns True when resuming. ``reuse`` plans a new job's round 1: the requests
    without an answer at hand (``results.answerreuse.planner``; None: every request).

    ``completion_window``/``metadata``/limits of None mean "as recorded" on resume (defaults
    for a new job). On resume a different input (sha256), base URL, window or metadata is
    refused (``JobError``, exit 2); different limits re-split the chunks not yet uploaded."""
    if job.exists():
        rec = job.load()
        if rec.cancel is not None:
            raise JobError(
                f"the job at {job.dir} was cancelled; it creates no further batch",
                hint=f"Fetch what finished: {command('fetch_results.py', '--job', display_path(job.dir))}. "
                "To run what did not finish with the same model and settings (finished requests are not "
                f"paid again): {command('retry_failed.py', '--job', display_path(job.dir), '--after-cancel')}. "
                "To change them, build a new batch file and submit it as a new job (--job NEW_DIR).",
            )
        sha = input_sha256 or sha256_file(input_path)
        recorded = rec.input
        same_url = (rec.base_url or "").rstrip("/") == base_url.rstrip("/")
        changed = (
            sha != recorded.sha256
            or not same_url
            or (completion_window is not None and completion_window != rec.completion_window)
            or bool(metadata and metadata != rec.metadata)
        )
        if changed and rec.nothing_created():
            # No batch exists (or may exist) for this job, so nothing can be billed twice.
            if not (sha == recorded.sha256 and same_url):
                events.step(f"the job at {job.dir} has no batch yet; planning it again with this input and settings")
                return _new_job(
                    job,
                    input_path,
                    base_url,
                    completion_window,
                    metadata,
                    max_requests,
                    max_bytes,
                    max_body_bytes,
                    report,
                    sha,
                    source,
                    reuse,
                )
            # same input on the same server: keep the uploaded files, change the settings
            if completion_window is not None and completion_window != rec.completion_window:
                events.step(f"the job has no batch yet; switching it to the {completion_window} window")
                rec.completion_window = completion_window
                for rnd in rec.rounds:
                    rnd.completion_window = completion_window
                    for c in rnd.chunks:
                        c.completion_window = completion_window
                        c.cost_estimate = None
                        c.held = None
            if metadata and metadata != rec.metadata:
                rec.metadata = dict(metadata)
            job.save()
        if sha != recorded.sha256:
            raise JobError(
                f"{input_path} is not the file this job was started with (its contents changed since; "
                f"job at {job.dir})",
                hint="Restore the original input to resume this job, or pass --job NEW_DIR to submit the "
                "changed file as a new job (the old job's batches keep running).",
            )
        check_server(job, base_url, new_job_hint=True)
        if completion_window is not None and completion_window != rec.completion_window:
            raise JobError(
                f"the job at {job.dir} uses completion window {rec.completion_window}, not {completion_window}",
                hint=f"Run again with -w {rec.completion_window} (or without -w) to resume it, "
                "or pass --job NEW_DIR to submit the input again with another window.",
            )
        if metadata and metadata != rec.metadata:
            raise JobError(
                f"the job at {job.dir} was started with metadata {rec.metadata}",
                hint="Run again without --metadata (or with the same values) to resume it.",
            )
        job.verified_inputs[os.path.abspath(input_path)] = sha
        if os.path.abspath(input_path) != recorded.path:
            events.step(f"the input moved to {os.path.abspath(input_path)} (same contents); updating the job")
            moved_from, recorded.path = recorded.path, os.path.abspath(input_path)
            for rnd in rec.rounds:
                if rnd.kind == "initial" and rnd.input_path == moved_from:  # (not round 1's own input)
                    rnd.input_path = recorded.path
        fp = Fingerprint.of(input_path, sha)
        recorded.bytes, recorded.mtime = fp.bytes, fp.mtime
        if source and not rec.source:
            rec.source = Source.from_dict(source)
        for rnd in rec.rounds:
            limits = rnd.limits
            want = Limits(max_requests=max_requests or limits.max_requests, max_bytes=max_bytes or limits.max_bytes)
            if (want.max_requests, want.max_bytes) != (limits.max_requests, limits.max_bytes) and any(
                not c.file_id and not c.batch_id for c in rnd.chunks
            ):
                rnd.replan = want
        job.save()
        return True

    return _new_job(
        job,
        input_path,
        base_url,
        completion_window,
        metadata,
        max_requests,
        max_bytes,
        max_body_bytes,
        report,
        input_sha256,
        source,
        reuse,
    )


def refuses(job_dir: str, input_path: str, sha: Optional[str] = None) -> bool:
    """Whether a submit of ``input_path`` into the existing job at ``job_dir`` would be refused
    (``prepare_job``'s rules, read locally): the job was cancelled, cannot be read, or holds
    another input and has batches."""
    job = Job(job_dir)
    if not job.exists():
        return False
    try:
        rec = job.load()
    except DWError:
        return True
    if rec.cancel is not None:
        return True
    return (sha or sha256_file(input_path)) != rec.input.sha256 and not rec.nothing_created()


def job_dir_for_next(input_path: str, job_dir: str, sha: Optional[str] = None) -> Optional[str]:
    """For a printed submit command: None when ``job_dir`` takes ``input_path``; else the job
    directory to pass as --job (said: an event): the first of ``data.2.dwjob``, ``data.3.dwjob``,
    ... beside it that holds this input's job (it resumes: nothing is sent twice) or does not
    exist yet."""
    if not refuses(job_dir, input_path, sha):
        return None
    sha = sha or sha256_file(input_path)
    stem, suffix = (job_dir[:-6], ".dwjob") if job_dir.endswith(".dwjob") else (job_dir, "")
    n = 2
    while True:
        other = f"{stem}.{n}{suffix}"
        if not os.path.exists(other) or (Job(other).exists() and not refuses(other, input_path, sha)):
            break
        n += 1
    what = "resumes this input's job at" if os.path.exists(other) else "submits it as a new job,"
    events.step(
        f"note: the job at {display_path(job_dir)} was started with another input (or was cancelled), so a "
        f"submit of {display_path(input_path)} there is refused; next {what} {display_path(other)}"
    )
    return os.path.abspath(other)


def plan_or_resume(
    job: Job,
    input_path: str,
    *,
    base_url: str,
    completion_window: Optional[str],
    metadata: Optional[Dict[str, str]],
    max_requests: Optional[int],
    max_bytes: Optional[int],
    max_body_bytes: int,
    report: Optional[Report],
    input_sha256: Optional[str] = None,
    reuse: Optional[RoundOne] = None,
) -> bool:
    """Create or resume the job for ``input_path`` (a locked job), taking the source
    recorded by create_batch_file.py's sidecar, and say which (an event). Returns True when resuming."""
    job.require_lock()
    from ..build.builder import read_sidecar

    sha = input_sha256 or sha256_file(input_path)
    source, note = read_sidecar(input_path, sha)
    if note:
        events.step(note)
    resumed = prepare_job(
        job,
        input_path,
        base_url=base_url,
        completion_window=completion_window,
        metadata=metadata,
        max_requests=max_requests,
        max_bytes=max_bytes,
        max_body_bytes=max_body_bytes,
        report=report,
        input_sha256=sha,
        source=source,
        reuse=reuse,
    )
    if resumed:
        events.step(f"resuming the job at {display_path(job.dir)}")
    else:
        events.step(
            f"new job at {display_path(job.dir)}: {job.record.input.requests} requests in "
            f"{len(job.record.rounds[0].chunks)} chunk(s)"
        )
    return resumed


def _new_job(
    job: Job,
    input_path: str,
    base_url: str,
    completion_window: Optional[str],
    metadata: Optional[Dict[str, str]],
    max_requests: Optional[int],
    max_bytes: Optional[int],
    max_body_bytes: int,
    report: Optional[Report],
    input_sha256: Optional[str],
    source: Optional[Dict[str, Any]],
    reuse: Optional[RoundOne] = None,
) -> bool:
    max_requests = max_requests or MAX_REQUESTS_PER_FILE
    max_bytes = max_bytes or MAX_FILE_BYTES
    if report is None:
        report = validate_input(input_path, max_requests, max_bytes, max_body_bytes)
    sha = input_sha256 or sha256_file(input_path)
    window = completion_window or "24h"
    rec = Job.create_record(
        input_path, Fingerprint.of(input_path, sha), window, dict(metadata or {}), report.requests, base_url
    )
    rec.source = Source.from_dict(source) if source else None
    parts = urlsplit(base_url)
    # plain http to another host is only accepted with --allow-insecure-http: later commands need not repeat it
    rec.allow_insecure_http = parts.scheme == "http" and not is_loopback(parts.hostname or "")
    job.record = rec
    round_input, round_sha, round_chunks = input_path, sha, report.chunks
    answerstore.clear_job_files(job.dir)  # (a job planned again)
    if reuse is not None:  # round 1 sends only what has no answer at hand
        planned = reuse(job.dir, input_path, report, window, max_requests, max_bytes, max_body_bytes)
        rec.reuse = planned.record
        if planned.send_path is not None:
            round_input, round_sha = planned.send_path, sha256_file(planned.send_path)
            round_chunks = planned.send_report.chunks if planned.send_report else []
            report = planned.send_report or Report(path=planned.send_path)  # the estimate is of what is sent
    rec.local_estimate = recorded(local_estimate(report, window), window)
    job.verified_inputs[os.path.abspath(input_path)] = sha
    job.verified_inputs[os.path.abspath(round_input)] = round_sha
    rec.rounds = [new_round(job, 1, "initial", round_input, round_sha, window, round_chunks, max_requests, max_bytes)]
    job.save()
    return False


def next_round_path(job: Job) -> str:
    """Where the next retry round's input belongs: ``<job>/rounds/round-N.jsonl``."""
    return job.path("rounds", f"round-{len(job.record.rounds) + 1}.jsonl")


def add_retry_round(
    job: Job,
    input_path: str,
    *,
    completion_window: Optional[str] = None,
    max_requests: int = MAX_REQUESTS_PER_FILE,
    max_bytes: int = MAX_FILE_BYTES,
    max_body_bytes: int = MAX_BODY_BYTES,
    kind: str = "retry",
    changes: Optional[Dict[str, Any]] = None,
) -> Round:
    """Add a round that submits ``input_path`` (e.g. the failed requests) within this job.

    The file is validated (``InputError`` if not), copied to ``<job>/rounds/round-N.jsonl``
    unless it is already there, planned into chunks and recorded; nothing is sent until
    ``submit_pending``. Idempotent: if a round with the same contents exists and is not
    finished (a chunk without a batch, or a batch not in a terminal state), that round is
    returned instead of adding another, so a crash between adding and submitting cannot
    submit the same retry twice. A locked job."""
    job.require_lock()
    rep = validate_input(input_path, max_requests, max_bytes, max_body_bytes)
    sha = sha256_file(input_path)
    rounds = job.record.rounds
    for rnd in rounds:
        if rnd.input_sha256 == sha and not rnd.done:
            events.step(f"round {rnd.round} already holds this input and is not finished; reusing it")
            return rnd
    round_no = len(rounds) + 1
    dest = job.path("rounds", f"round-{round_no}.jsonl")
    if os.path.abspath(input_path) != dest:
        make_private_dir(os.path.dirname(dest))
        with atomic_output(dest, mode=0o600) as out, open(input_path, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
    window = completion_window or job.record.completion_window or "24h"
    rnd = new_round(job, round_no, kind, dest, sha, window, rep.chunks, max_requests, max_bytes)
    rnd.changes = changes or None
    job.verified_inputs[dest] = sha
    rounds.append(rnd)
    job.save()
    return rnd
