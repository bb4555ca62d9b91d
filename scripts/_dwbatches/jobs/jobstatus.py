"""Batch and job status: per-batch summaries, the job-level status, progress lines.

Job-level ``status`` (documented in poll.py and SKILL.md):

- ``not_submitted``: some chunk of the job has no batch yet (held over a cost cap, or a
  submit was interrupted); run the submit command again.
- ``in_progress``: at least one batch is not terminal (validating, in_progress, finalizing,
  cancelling).
- ``completed``: every batch is terminal and every request has a result that succeeded.
- ``partially_failed``: the batches completed, but some requests failed.
- ``failed`` / ``cancelled`` / ``expired`` / ``deleted``: every deciding batch ended that way
  (``deleted``: the server no longer has the batch, deleted on the dashboard or by another
  tool; its results stay downloadable and are fetched, and what it never ran can be retried).
- ``mixed``: the deciding batches ended in different ways (e.g. one completed, one cancelled).

For a job with retry rounds the deciding batches are those of the latest round: a retry
round takes over every failed or never-run request of the rounds before it. Job-level
``request_counts`` then count each input request once: ``total`` = requests in the input,
``completed`` summed over all rounds (and the requests a job answered without sending them:
``JobRecord.reuse``), ``failed`` as of the latest round. For bare batch ids
they are plain sums.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Set

from ..core.progress import duration as fmt_duration
from .job import Job
from .jobrecord import DELETED, TERMINAL_STATUSES, JobRecord, counts_of

if TYPE_CHECKING:  # annotations only
    from ..core.http import Client

# The first re-checks come sooner than --interval, so that a small job that finishes in
# seconds is not left waiting a full interval; after them, every --interval seconds.
WARMUP_DELAYS = (2.0, 5.0, 10.0)


def wait_delay(checks_done: int, interval: float) -> float:
    """Seconds to sleep after the ``checks_done``-th status check (1-based)."""
    if 1 <= checks_done <= len(WARMUP_DELAYS):
        return min(interval, WARMUP_DELAYS[checks_done - 1])
    return interval


# A batch whose record or files the server no longer has (404): nothing more can be read from
# it, so it counts as ended, badly.
UNREACHABLE = "unreachable"


TERMINAL = TERMINAL_STATUSES | {UNREACHABLE, DELETED}


BAD_ENDINGS = frozenset({"failed", "cancelled", "expired", UNREACHABLE, DELETED})


def is_terminal(status: Optional[str]) -> bool:
    return status in TERMINAL


def summarize_batch(
    batch: Dict[str, Any], round_no: Optional[int] = None, chunk: Optional[int] = None
) -> Dict[str, Any]:
    """The fields a report needs from a batch object (optional fields are read with .get)."""
    s: Dict[str, Any] = {
        "batch_id": batch.get("id"),
        "status": batch.get("status"),
        "request_counts": counts_of(batch),
        "output_file_id": batch.get("output_file_id"),
        "error_file_id": batch.get("error_file_id"),
        "expires_at": batch.get("expires_at"),
    }
    if batch.get("expired_at") is not None:
        s["expired_at"] = batch["expired_at"]
    if round_no is not None:
        s["round"] = round_no
        s["chunk"] = chunk
    return s


def job_targets(rec: JobRecord) -> List[Dict[str, Any]]:
    """Every chunk of every round, in order: {round, chunk, batch_id, held, kind}."""
    return [
        {"round": rnd.round, "chunk": ch.index, "batch_id": ch.batch_id, "held": ch.held, "kind": rnd.kind}
        for rnd, ch in rec.round_chunks()
    ]


def job_status(summaries: Sequence[Dict[str, Any]], state: Optional[JobRecord] = None) -> Dict[str, Any]:
    """Job-level status, finished flag and request counts (see the module docstring)."""
    unsubmitted: List[Dict[str, Any]] = []
    latest_round = None
    total_requests = None
    if state is not None:
        rounds = state.rounds
        latest_round = rounds[-1].round if rounds else None
        for t in job_targets(state):
            if not t["batch_id"] and not (state.cancel is not None and t["round"] <= state.cancel.rounds):
                unsubmitted.append({"round": t["round"], "chunk": t["chunk"], "held": t["held"]})
        total_requests = state.input.requests
    statuses = [s.get("status") for s in summaries]
    running = [st for st in statuses if not is_terminal(st)]

    if state is not None and latest_round is not None:
        deciding = [s for s in summaries if s.get("round") == latest_round]
        completed = sum(s["request_counts"]["completed"] for s in summaries)
        completed += state.reuse.not_sent if state.reuse else 0  # answered without being sent (answerreuse)
        failed = sum(s["request_counts"]["failed"] for s in deciding)
        total = (
            total_requests
            if total_requests is not None
            else sum(s["request_counts"]["total"] for s in summaries if s.get("round") == 1)
        )
    else:
        deciding = list(summaries)
        completed = sum(s["request_counts"]["completed"] for s in summaries)
        failed = sum(s["request_counts"]["failed"] for s in summaries)
        total = sum(s["request_counts"]["total"] for s in summaries)
    counts = {"total": total, "completed": min(completed, total) if total else completed, "failed": failed}

    if state is not None and not state.rounds:
        status = "not_submitted"
    elif unsubmitted:
        status = "not_submitted"
    elif running:
        status = "in_progress"
    elif total and counts["completed"] >= total:
        status = "completed"
    elif (
        state is not None
        and state.cancel is not None
        and all(s.get("status") in ("cancelled", "completed", "failed") for s in deciding)
    ):
        status = "cancelled"  # the user cancelled the job; chunks without a batch stay unsent
    else:
        endings: Set[str] = {s["status"] for s in deciding}  # every one terminal here
        if endings == {"completed"}:
            status = "partially_failed" if total else "completed"
        elif len(endings) == 1:
            status = endings.pop()
        else:
            status = "mixed"
    finished = status not in ("in_progress", "not_submitted")
    bad = (
        finished
        and status != "completed"
        and (status == "cancelled" or any(s.get("status") in BAD_ENDINGS for s in deciding))
    )
    return {
        "status": status,
        "finished": finished,
        "request_counts": counts,
        "unsubmitted": unsubmitted,
        "ended_badly": bad,
    }


def rate_and_eta(
    batches: Iterable[Dict[str, Any]], now: Optional[float] = None, observed: Optional[float] = None
) -> Dict[str, Optional[float]]:
    """Requests per second and seconds left, over the batches still running.

    ``observed`` is a rate measured between two polls of this run; it is preferred over the
    rate since the batches started."""
    now = time.time() if now is None else now
    done = remaining = 0
    start = None
    for b in batches:
        if is_terminal(b.get("status")):
            continue
        c = counts_of(b)
        done += c["completed"] + c["failed"]
        remaining += max(0, c["total"] - c["completed"] - c["failed"])
        t = b.get("in_progress_at") or b.get("created_at")
        if isinstance(t, (int, float)):
            start = t if start is None else min(start, t)
    rate = observed
    if rate is None and done and start is not None:
        rate = done / max(1.0, now - float(start))
    eta = remaining / rate if rate and remaining else None
    return {"rate": rate, "eta_seconds": round(eta) if eta is not None else None}


def progress_line(
    counts: Dict[str, int], status: str, rate: Optional[float] = None, eta: Optional[float] = None
) -> str:
    """'in_progress: 412/1000 done (3 failed), 2.1 req/s, ETA 4m40s'."""
    total, done = counts["total"], counts["completed"] + counts["failed"]
    text = f"{status}: {done}/{total} done"
    if counts["failed"]:
        text += f" ({counts['failed']} failed)"
    if rate:
        text += f", {rate:.2f} req/s" if rate < 10 else f", {rate:.0f} req/s"
    if eta is not None:
        text += f", ETA {fmt_duration(eta)}"
    return text


LIST_PAGE = 100  # batches a page of GET /batches (the server allows up to 101)


def get_batches(
    client: Client, batch_ids: Sequence[str], job_id: Optional[str] = None, missing_ok: bool = False
) -> Dict[str, Dict[str, Any]]:
    """The batch objects of ``batch_ids``. For a job's batches (``job_id``, more than one) the
    cost of a check does not grow with the batches: the pages of ``GET /batches?search=<job
    id>`` (100 a page) give them all, and only a batch the list did not return is read on its
    own (``GET /batches/{id}``). Without ``job_id``, one request per batch. With ``missing_ok``
    a batch the server does not have (404) is left out instead of raising."""
    from ..core.errors import APIStatusError

    wanted = list(dict.fromkeys(batch_ids))
    found: Dict[str, Dict[str, Any]] = {}
    if job_id and len(wanted) > 1:
        found = list_job_batches(client, job_id, set(wanted))
    for bid in wanted:
        if bid not in found:
            try:
                found[bid] = client.get_batch(bid)
            except APIStatusError as exc:
                if exc.status != 404 or not missing_ok:
                    raise
    return {bid: found[bid] for bid in wanted if bid in found}


def get_job_batches(client: Client, rec: JobRecord) -> Dict[str, Dict[str, Any]]:
    """The batch objects of a job's batches; a batch the server no longer has (404: deleted)
    is what its chunk recorded, with status ``deleted`` (its files stay downloadable), or left
    out when no file of it was recorded."""
    ids = [c.batch_id for c in rec.chunks() if c.batch_id]
    objs = get_batches(client, ids, rec.job_id, missing_ok=True)
    for ch in rec.chunks():
        if ch.batch_id and ch.batch_id not in objs:
            gone = ch.deleted_batch()
            if gone is not None:
                objs[ch.batch_id] = gone
    return objs


def list_job_batches(client: Client, job_id: str, wanted: Set[str]) -> Dict[str, Dict[str, Any]]:
    """The batches of ``wanted`` that ``GET /batches?search=<job id>`` returns (matched by id and
    by the job id in their metadata), newest first, page after page until all are found."""
    from ..core.errors import APIStatusError

    found: Dict[str, Dict[str, Any]] = {}
    after: Optional[str] = None
    for _ in range(len(wanted) // LIST_PAGE + 3):
        try:
            page = client.list_batches(limit=LIST_PAGE, after=after, search=job_id, include="analytics")
        except APIStatusError as exc:
            if exc.status in (400, 404, 422):
                return found  # a server without search: one request per batch
            raise
        data = [b for b in page.get("data") or [] if isinstance(b, dict)]
        for b in data:
            meta = b.get("metadata")
            meta = meta if isinstance(meta, dict) else {}
            if b.get("id") in wanted and meta.get("dwb_job") == job_id:
                found[b["id"]] = b
        if len(found) == len(wanted) or not page.get("has_more") or not data:
            break
        after = page.get("last_id") or data[-1].get("id")
    return found


def record_status(job: Job, batches: Dict[str, Dict[str, Any]]) -> None:
    """Store last-known status and counts of the job's batches in job.json (a locked job)."""
    job.record.record_batches(batches)
    job.save()
