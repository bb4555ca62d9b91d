"""The submit engine: upload each planned chunk once, check the cost, create each batch once.

Each chunk of a job (planned by ``planning``) is uploaded as a byte range of its round's
input (streamed, never copied or held in memory) and becomes one batch.

Nothing is sent twice, even across ``kill -9``:

- before a chunk's upload starts, ``upload_started_at`` is saved; a later run that finds it
  without a ``file_id`` looks the file up by its unique ``upload_name`` (and byte count)
  before uploading again;
- before each attempt of ``POST /batches``, ``create_started_at`` (and, once per create,
  ``create_posts``) is saved; the chunk's ``intent_id`` (made when the chunk was planned)
  travels in the batch metadata as ``dwb_intent``, and a later run that finds no
  ``batch_id`` looks the batch up by intent (``GET /batches?search=``, then paging recent
  batches) before creating;
- an upload cut off less than ten minutes before may still be on its way to the server (its
  bytes in socket buffers or a buffering proxy): its lookup is repeated after 1 and 2 seconds
  before it is sent again;
- a create is looked for as long as the server may still be working on it: up to
  ``lookup.create_in_progress()`` seconds (the client's connect and read timeouts for the
  create plus a margin) after its last attempt started, with back-off (``lookup.until_created``);
- an ambiguous failure (the connection broke or timed out after the request was sent, or a
  5xx) is resolved the same way at once (after a 5xx other than a gateway's 502 or 504, sent
  once the server has stopped working on the request, over 1 and 2 seconds only); only when
  the lookup finds nothing is the request sent again, once. If that cannot be resolved the
  run stops (exit 1) and the next run resolves it;
- a second batch for one chunk all the same (a create that outlasted that bound) is recorded
  on the chunk (``duplicates``) and cancelled (see ``duplicates.py``).

API (a locked job: the workflow layer takes the lock; the job is planned by
``planning.prepare_job`` or ``planning.add_retry_round``)::

    chunks = submit_pending(job, client, max_cost=None)           # every chunk of the job

``submit_pending`` uploads every chunk without a file, asks the server for each file's cost
estimate, and then creates the missing batches. With ``max_cost`` it creates nothing when
the summed estimate of the rounds being submitted exceeds it: the chunks are marked
``held`` and ``CostLimitExceeded`` (exit 2) is raised; a later call without (or with a
higher) ``max_cost`` creates them. It returns the chunks of every round, in order.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from ..core import events
from ..core.commands import command, display_path
from ..core.errors import (
    EXIT_API,
    EXIT_CONFIG,
    APIConnectionError,
    APIStatusError,
    CostLimitExceeded,
    DWError,
    JobError,
)
from ..cost.cost import sum_estimates
from ..cost.pricing import money
from ..jobs.job import Job
from ..jobs.jobrecord import Chunk, Round, sha256_file
from . import duplicates, lookup
from .planning import new_chunk, plan_range
from .uploadreport import Progress, explain_upload_error, mb

if TYPE_CHECKING:  # annotations only
    from ..core.http import Client

# -- submitting -------------------------------------------------------------------------------


def _ambiguous(exc: DWError) -> bool:
    if isinstance(exc, APIConnectionError):
        return exc.sent
    return isinstance(exc, APIStatusError) and exc.status >= 500


# Replies that do not mean the server has stopped working on the request: a gateway's (bad
# gateway, gateway timeout), given while the server behind it may still be at work. (A 503 is
# the server's own "busy", or a gateway's with no server to pass the request to.)
GATEWAY_STATUSES = frozenset({502, 504})


def _may_be_in_progress(exc: DWError) -> bool:
    """After this failure the server may still be working on the request: the connection broke
    or timed out after it was sent, or a gateway answered for the server."""
    return not isinstance(exc, APIStatusError) or exc.status in GATEWAY_STATUSES


DEFAULT_PARALLEL = 3  # chunks uploaded and created at once


class Submitter:
    """Runs ``submit_pending`` for one job; the counters say what this run did.

    Up to ``parallel`` chunks are uploaded and created at once, each in its own thread with its
    own connection; every guarantee holds per chunk (each step is saved before and after it,
    and ``Job.save`` serialises the saves of the threads)."""

    def __init__(self, job: Job, client: Client, max_cost: Optional[float] = None, parallel: int = DEFAULT_PARALLEL):
        job.require_lock()
        self.job = job
        self._client = client
        self._local = threading.local()
        self.max_cost = max_cost
        self.parallel = max(1, int(parallel))
        self._count_lock = threading.Lock()
        self.uploaded = 0
        self.files_found = 0
        self.created = 0
        self.batches_found = 0

    @property
    def client(self) -> Client:
        """The API client of this thread (the given one in the calling thread)."""
        if threading.current_thread() is threading.main_thread() or not hasattr(self._client, "clone"):
            return self._client
        own = getattr(self._local, "client", None)
        if own is None:
            own = self._local.client = self._client.clone()
        return own

    def _count(self, name: str) -> None:
        with self._count_lock:
            setattr(self, name, getattr(self, name) + 1)

    # -- lookups (see lookup.py) -------------------------------------------------------------
    def find_upload(self, ch: Chunk) -> Optional[Dict[str, Any]]:
        return lookup.find_upload(self.client, ch)

    def find_batch(self, ch: Chunk) -> Optional[Dict[str, Any]]:
        return lookup.find_batch(self.client, ch)

    def intent_batches(self, ch: Chunk) -> Optional[List[Dict[str, Any]]]:
        """Every batch made for ``ch``'s intent, oldest first; None when there is none."""
        return lookup.intent_batches(self.client, ch) or None

    def _sent_earlier(
        self, find: Any, ch: Chunk, started_at: Optional[float], label: str, what: str
    ) -> Optional[Dict[str, Any]]:
        """What an earlier run sent for ``ch`` (an attempt was started), looked up on the server."""
        if not started_at:
            return None
        found = lookup.settled(find, ch, lookup.recent(started_at), label)
        if found:
            events.step(f"{label}: found {what} by an earlier run ({found['id']})")
        return found

    # -- steps -----------------------------------------------------------------------------
    def _routine(self, step: str, rnd: Round, ch: Chunk, text: str) -> None:
        """A step that went as planned: an event with the chunk and its round's count, so that
        the narration can say the first chunks and the last one by one, and those between as
        one line (``workflow/narration``)."""
        events.step(text, routine=step, round=rnd.round, chunk=ch.index, chunks=len(rnd.chunks), job=self.job.dir)

    def _label(self, rnd: Round, ch: Chunk) -> str:
        n = len(rnd.chunks)
        r = f"round {rnd.round} " if rnd.round > 1 else ""
        return f"{r}chunk {ch.index}/{n}"

    def _upload(self, rnd: Round, ch: Chunk) -> Dict[str, Any]:
        progress = Progress(f"{self._label(rnd, ch)}: uploading")
        try:
            return self.client.upload_file(
                rnd.input_path, filename=ch.upload_name, start=ch.start_byte, end=ch.end_byte, progress=progress
            )
        finally:
            progress.close()

    def ensure_uploaded(self, rnd: Round, ch: Chunk) -> None:
        if ch.file_id:
            return
        label = self._label(rnd, ch)
        f = self._sent_earlier(self.find_upload, ch, ch.upload_started_at, label, "the file uploaded")
        if f:
            self._count("files_found")
            self._record_file(ch, f)
            return
        self._check_input(rnd)
        ch.upload_started_at = time.time()
        self.job.save()
        self._routine(
            "uploaded",
            rnd,
            ch,
            f"{label}: uploading lines {ch.start_line}-{ch.end_line} ({ch.requests} requests, {mb(ch.bytes)})",
        )
        try:
            f = self._upload(rnd, ch)
        except APIStatusError as exc:
            if not _ambiguous(exc):
                raise explain_upload_error(self._label(rnd, ch), rnd, ch, exc) from None
            f = self._resolve_upload(rnd, ch, exc)
        except APIConnectionError as exc:
            if not exc.sent:
                raise
            f = self._resolve_upload(rnd, ch, exc)
        self._count("uploaded")
        self._record_file(ch, f)
        self._routine("uploaded", rnd, ch, f"{label}: uploaded as file {f['id']}")

    def _resolve_upload(self, rnd: Round, ch: Chunk, exc: DWError) -> Dict[str, Any]:
        label = self._label(rnd, ch)
        events.step(f"{label}: the upload may or may not have arrived ({exc.message}); checking")
        f = lookup.settled(self.find_upload, ch, True, label)
        if f:
            return f
        events.step(f"{self._label(rnd, ch)}: not on the server; uploading again")
        try:
            return self._upload(rnd, ch)
        except APIStatusError as exc2:
            if not _ambiguous(exc2):
                raise explain_upload_error(self._label(rnd, ch), rnd, ch, exc2) from None
            err: DWError = exc2
        except APIConnectionError as exc2:
            err = exc2
        f = lookup.settled(self.find_upload, ch, True, label)
        if f:
            return f
        raise DWError(
            f"uploading {self._label(rnd, ch)} failed twice ({err.message})",
            hint="Run the same command again later; it checks what reached the server first.",
            exit_code=EXIT_API,
        )

    def _record_file(self, ch: Chunk, f: Dict[str, Any]) -> None:
        ch.file_id = f["id"]
        self.job.save()

    def _check_input(self, rnd: Round) -> None:
        """The bytes about to be uploaded must still be the planned ones (hashed once per process)."""
        path = rnd.input_path
        verified = self.job.verified_inputs
        if verified.get(path) == rnd.input_sha256:
            return
        try:
            sha = sha256_file(path)
        except FileNotFoundError:
            raise JobError(f"the input {path} is gone", hint="Restore it to resume the job.") from None
        if sha != rnd.input_sha256:
            raise JobError(
                f"the input {path} changed since the job was planned",
                hint="Restore the original file, or submit the new one as a new job (--job NEW_DIR).",
            )
        verified[path] = sha

    def ensure_estimate(self, rnd: Round, ch: Chunk) -> None:
        if ch.cost_estimate is not None or not ch.file_id:
            return
        try:
            est = self.client.cost_estimate(ch.file_id, ch.completion_window or rnd.completion_window)
        except DWError as exc:
            # The estimate is an optional Doubleword extra: without --max-cost, a failing
            # estimate must not stop the batch from being created.
            if self.max_cost is None or getattr(exc, "status", None) in (400, 404, 405, 501):
                events.step(f"{self._label(rnd, ch)}: no cost estimate from the server ({exc.message})")
                return
            raise
        ch.cost_estimate = {
            k: est.get(k)
            for k in (
                "total_requests",
                "total_estimated_input_tokens",
                "total_estimated_output_tokens",
                "total_estimated_cost",
                "models",
            )
        }
        self.job.save()

    def ensure_created(self, rnd: Round, ch: Chunk, reupload: bool = True) -> None:
        if ch.batch_id:
            return
        label = self._label(rnd, ch)
        if self._cancelled(rnd, refresh=True):
            events.step(f"{label}: the job was cancelled; no batch is created for it")
            return
        if ch.create_started_at:  # an earlier run sent the create: look for it while it may be in progress
            found = self._find_created(ch, label, in_progress=True)
            if found:
                events.step(f"{label}: found the batch created by an earlier run ({found[0]['id']})")
                self._count("batches_found")
                self._record_batch(ch, found)
                return
        try:
            found = [self._create(ch)]
        except APIStatusError as exc:
            if exc.status == 404 and reupload:
                events.step(f"{label}: the uploaded file {ch.file_id} is gone (expired or deleted); uploading again")
                ch.file_id = None
                ch.upload_started_at = None
                ch.cost_estimate = None
                self._not_created(ch)
                self.ensure_uploaded(rnd, ch)
                self.ensure_created(rnd, ch, reupload=False)
                return
            if not _ambiguous(exc):
                self._not_created(ch)
                raise
            found = self._resolve_create(rnd, ch, exc)
        except APIConnectionError as exc:
            if not exc.sent:
                self._not_created(ch)
                raise
            found = self._resolve_create(rnd, ch, exc)
        self._count("created")
        self._record_batch(ch, found)
        self._routine(
            "created", rnd, ch, f"{label}: created batch {ch.batch_id} ({ch.requests} requests, {ch.completion_window})"
        )
        if self._cancelled(rnd, refresh=True):  # cancelled while this create was on its way
            self._cancel_created(ch)

    def _cancelled(self, rnd: Round, refresh: bool = False) -> bool:
        if refresh:
            self.job.refresh_cancel()
        return self.job.record.cancelled_round(rnd)

    def _check_cancel(self) -> None:
        """A cancelled job creates nothing more, and a batch created after the cancel was
        recorded (a submit that was running at that moment) is cancelled too."""
        rec = self.job.record
        self.job.refresh_cancel()
        if rec.cancel is None:
            return
        for rnd, ch in rec.round_chunks():
            if (
                self._cancelled(rnd)
                and ch.batch_id
                and ch.status not in ("cancelled", "cancelling", "finalizing")
                and not ch.terminal
                and (ch.create_started_at or 0) >= rec.cancel.at - lookup.CLOCK_SKEW
            ):
                self._cancel_created(ch)

    def _cancel_created(self, ch: Chunk) -> None:
        assert ch.batch_id is not None  # called once the chunk's batch is recorded
        try:
            b = self.client.cancel_batch(ch.batch_id)
        except DWError as exc:
            events.step(
                f"batch {ch.batch_id} was created as the job was being cancelled; cancelling it failed "
                f"({exc.message}); run {command('cancel_batch.py', '--job', display_path(self.job.dir))}"
            )
            return
        ch.record_batch(b)
        self.job.save()
        events.step(f"batch {ch.batch_id} was created as the job was being cancelled; cancelled it")

    def _not_created(self, ch: Chunk) -> None:
        """The server refused the create outright (or it never arrived): no batch can exist for
        this attempt; with no earlier create either, the job may still change window or settings."""
        ch.create_posts = (ch.create_posts or 1) - 1 or None
        if not ch.create_posts:
            ch.create_started_at = None
        self.job.save()

    def _create(self, ch: Chunk) -> Dict[str, Any]:
        assert ch.file_id is not None  # ensure_uploaded ran first: it records a file or raises
        rec = self.job.record
        meta = dict(rec.metadata)
        rnd = rec.round_of(ch)
        rnd_no = rnd.round
        meta.update({"dwb_intent": ch.intent_id, "dwb_job": rec.job_id, "dwb_chunk": f"r{rnd_no}c{ch.index}"})
        if rnd_no == 1 and rec.input.sha256:  # the user's file, to notice it submitted again
            meta[lookup.INPUT_KEY] = lookup.input_mark(rec.input.sha256) or ""
        ch.create_posts = (ch.create_posts or 0) + 1

        def attempt() -> None:  # saved before each attempt is sent: where a look-up must start from
            ch.create_started_at = time.time()
            self.job.save()

        return self.client.create_batch(
            ch.file_id,
            ch.completion_window or rnd.completion_window,  # the window its estimate was asked for
            meta,
            endpoint=ch.endpoint or "/v1/chat/completions",
            on_attempt=attempt,
        )

    def _resolve_create(self, rnd: Round, ch: Chunk, exc: DWError) -> List[Dict[str, Any]]:
        label = self._label(rnd, ch)
        events.step(f"{label}: creating the batch may or may not have worked ({exc.message}); checking")
        found = self._find_created(ch, label, _may_be_in_progress(exc))
        if found:
            return found
        events.step(f"{label}: no batch was created; creating it again")
        try:
            return [self._create(ch)]
        except APIStatusError as exc2:
            if not _ambiguous(exc2):
                raise
            err: DWError = exc2
        except APIConnectionError as exc2:
            if not exc2.sent:
                raise
            err = exc2
        found = self._find_created(ch, label, _may_be_in_progress(err))
        if found:
            return found
        raise DWError(
            f"could not tell whether the batch for {label} was created ({err.message})",
            hint="Run the same command again: it looks the batch up by its intent id before creating "
            "anything, so nothing is created twice.",
            exit_code=EXIT_API,
        )

    def _find_created(self, ch: Chunk, label: str, in_progress: bool) -> Optional[List[Dict[str, Any]]]:
        """The batches made for ``ch``'s intent, oldest first, looked for as long as the server may
        still be working on the last create (``in_progress``), else over the settle delays."""
        try:
            if in_progress:
                return lookup.until_created(self.intent_batches, ch, label)
            return lookup.settled(self.intent_batches, ch, True, label)
        except DWError as exc:
            if exc.exit_code == EXIT_CONFIG:
                raise
            raise DWError(
                f"could not check whether the batch was created ({exc.message})",
                hint="Run the same command again when the server is reachable: it looks the batch up "
                "by its intent id before creating anything.",
                exit_code=EXIT_API,
            ) from None

    def _record_batch(self, ch: Chunk, found: List[Dict[str, Any]]) -> None:
        """Record the chunk's batch (the first of ``found``; any other is a second batch for the
        same requests: recorded as a duplicate and cancelled)."""
        b = found[0]
        ch.batch_id = b["id"]
        ch.held = None
        ch.record_batch(b)
        if (ch.create_posts or 0) > 1:  # sent more than once: a second batch may still turn up
            ch.watch_duplicates_until = lookup.create_deadline(ch)
        if b.get("input_file_id") and ch.file_id and b["input_file_id"] != ch.file_id:
            events.warning(f"batch {b['id']} was made from file {b['input_file_id']}, not {ch.file_id}")
        self.job.save()
        duplicates.record(self.job, self.client, ch, found[1:])

    def refresh(self) -> None:
        """Best effort: update the last known status of batches not created by this run."""
        for ch in self.job.record.chunks():
            if not ch.batch_id or ch.terminal:
                continue
            try:
                b = self.client.get_batch(ch.batch_id)
            except DWError as exc:
                if exc.exit_code == EXIT_CONFIG:
                    raise  # a refused key must not look like success
                events.step(f"could not refresh batch {ch.batch_id}: {exc.message}")
                return
            ch.record_batch(b)
        self.job.save()

    # -- replanning ------------------------------------------------------------------------
    def replan(self, rnd: Round) -> None:
        want, rnd.replan = rnd.replan, None
        if not want:
            return
        chunks = rnd.chunks
        # settle uploads that may have arrived, then re-split the tail that never reached the server
        for ch in chunks:
            if not ch.file_id and not ch.batch_id and ch.upload_started_at:
                f = lookup.settled(self.find_upload, ch, lookup.recent(ch.upload_started_at), f"chunk {ch.index}")
                if f:
                    self._count("files_found")
                    self._record_file(ch, f)
        k = len(chunks)
        while k > 0 and not chunks[k - 1].file_id and not chunks[k - 1].batch_id:
            k -= 1
        tail = chunks[k:]
        rnd.limits = want
        if tail:
            self._check_input(rnd)
            first = tail[0]
            new = plan_range(
                rnd.input_path,
                first.start_byte,
                tail[-1].end_byte,
                first.start_line,
                want.max_requests,
                want.max_bytes,
                first_index=first.index,
            )
            rnd.chunks = chunks[:k] + [
                new_chunk(self.job.record.job_id, rnd.round, c, rnd.completion_window) for c in new
            ]
            events.step(
                f"re-split the {len(tail)} chunk(s) not yet uploaded into {len(new)} "
                f"(max {want.max_requests} requests, {want.max_bytes} bytes each)"
            )
        self.job.save()

    # -- the whole thing -------------------------------------------------------------------
    def run(self) -> List[Chunk]:
        rounds = self.job.record.rounds
        self._check_cancel()
        duplicates.check(self.client, self.job)
        for rnd in rounds:
            self.replan(rnd)
        active = [r for r in rounds if any(not c.batch_id for c in r.chunks) and not self._cancelled(r)]
        pending = [(r, c) for r in active for c in r.chunks if not c.batch_id]

        # every chunk uploaded (and so checked by the server) before any batch is created, so a
        # refused line or a file over the limit can still be fixed and the same command rerun
        def upload(rnd: Round, ch: Chunk) -> None:
            self.ensure_uploaded(rnd, ch)
            self.ensure_estimate(rnd, ch)

        self._each(pending, upload)
        if pending and self.max_cost is not None:
            self._check_cost(active, pending)
        elif any(c.held for _, c in pending):
            for _, ch in pending:
                ch.held = None
            self.job.save()
        self._each(pending, self.ensure_created)
        return [c for r in rounds for c in r.chunks]

    def _each(self, pending: List[Tuple[Round, Chunk]], step: Callable[[Round, Chunk], Any]) -> None:
        """``step`` for every pending chunk, ``parallel`` at a time, in chunk order. The first
        error is raised once the chunks already under way have finished (their state is saved)."""
        if self.parallel <= 1 or len(pending) <= 1:
            for rnd, ch in pending:
                step(rnd, ch)
            return
        first: List[BaseException] = []
        with ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="dwb-submit") as pool:
            futures = []
            for rnd, ch in pending:
                if first:
                    break
                futures.append(pool.submit(step, rnd, ch))
                # no more than ``parallel`` queued: a failure stops chunks not yet started
                while sum(1 for f in futures if not f.done()) >= self.parallel:
                    done, _ = wait([f for f in futures if not f.done()], return_when=FIRST_COMPLETED)
                    for f in done:
                        exc = f.exception()
                        if exc is not None and not first:
                            first.append(exc)
            for f in futures:
                exc = f.exception()
                if exc is not None and not first:
                    first.append(exc)
        if first:
            raise first[0]

    def _check_cost(self, active: List[Round], pending: List[Tuple[Round, Chunk]]) -> None:
        chunks = [c for r in active for c in r.chunks]
        total, unknown = sum_estimates(chunks)
        limit = Decimal(str(self.max_cost))
        if unknown:
            reason = "the server gave no cost estimate for some files"
            for _, ch in pending:
                ch.held = reason
            self.job.save()
            raise CostLimitExceeded(
                f"cannot check --max-cost ${format(limit, 'f')}: {reason}; the files are uploaded, no batch was created",
                hint="Run the same command again without --max-cost to create the batches anyway.",
                total=None,
            )
        if total > limit:
            reason = f"estimated cost ${money(total)} is over --max-cost ${format(limit, 'f')}"
            for _, ch in pending:
                ch.held = reason
            self.job.save()
            raise CostLimitExceeded(
                f"the server estimates ${money(total)} for this job, more than --max-cost ${format(limit, 'f')}; "
                f"the files are uploaded (job {self.job.dir}), no batch was created",
                hint=f"To go on, run the same command again with --max-cost {money(total, up=True)} or higher, or "
                "without --max-cost; it creates the held batches without uploading again. To drop the job and "
                f"delete its uploaded files: {command('cancel_batch.py', '--job', display_path(self.job.dir))}",
                total=total,
            )
        for _, ch in pending:
            ch.held = None
        self.job.save()


def submit_pending(job: Job, client: Client, max_cost: Optional[float] = None) -> List[Chunk]:
    """Upload, estimate and create everything in ``job`` that has no batch yet (see the module
    docstring). Returns every chunk of every round, in order."""
    return Submitter(job, client, max_cost=max_cost).run()
