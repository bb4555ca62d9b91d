"""Checking a job or batch ids: one status check, or checks until they end or time runs out.

``check_once`` is the one status check (poll.py, and run_batch.py while it waits): it reads
every batch, computes the job-level status, narrates progress and records the statuses in
the job when the job is free. ``wait_until_done`` repeats it (after 2, 5 and 10 s, then
every ``interval``), calling ``between(check)`` after each check that is not the last
(run_batch.py downloads partial results there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

from ..core import clock, commands, progress
from ..core.errors import EXIT_NOT_FINISHED, EXIT_OK, EXIT_UNSUCCESSFUL, FileSystemError
from ..core.optiongroups import Target, Wait
from ..core.optionspec import group, to_argv
from ..core.output import Outcome, narrate
from ..jobs import jobstatus
from ..jobs.job import Job
from ..jobs.jobrecord import counts_of
from ..results import answers
from ..submit import duplicates
from .common import Connection, open_target, when_free

if TYPE_CHECKING:  # annotations only
    from ..core.http import Client


@dataclass
class PollOptions:
    """What poll.py checks and how it waits (each field is also its flag, ``optionspec``)."""

    target: Target = group(Target)
    wait: Wait = group(Wait)


@dataclass
class Check:
    """The result of one status check."""

    summary: Dict[str, Any]
    summaries: List[Dict[str, Any]]
    speed: Dict[str, Optional[float]] = field(default_factory=dict)
    done: int = 0  # requests done in the batches still running
    batches: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # the batch objects read


def check_once(
    client: Client,
    job: Optional[Job],
    batch_ids: Sequence[str],
    previous: Optional[Check] = None,
    elapsed: Optional[float] = None,
) -> Check:
    """One check of every batch (``previous`` and ``elapsed`` give the observed rate)."""
    if job is not None:
        job.load()
        targets = [t for t in jobstatus.job_targets(job.record) if t["batch_id"]]
        ids = [t["batch_id"] for t in targets]
    else:
        targets = [{"batch_id": b, "round": None, "chunk": None} for b in batch_ids]
        ids = list(batch_ids)
    if job is not None:
        objs = jobstatus.get_job_batches(client, job.record)
        for bid in ids:  # gone from the server with no file of it known: nothing can be read
            objs.setdefault(bid, {"id": bid, "status": jobstatus.UNREACHABLE})
    else:
        objs = jobstatus.get_batches(client, ids)
    summaries = [jobstatus.summarize_batch(objs[t["batch_id"]], t["round"], t["chunk"]) for t in targets]
    summary = jobstatus.job_status(summaries, job.record if job is not None else None)
    running = [objs[b] for b in ids if not jobstatus.is_terminal(objs[b].get("status"))]
    done = sum(counts_of(b)["completed"] + counts_of(b)["failed"] for b in running)
    observed = None
    if previous is not None and elapsed and done > previous.done:
        observed = (done - previous.done) / elapsed
    speed = jobstatus.rate_and_eta(running, now=client.server_now(), observed=observed)
    counts = summary["request_counts"]
    progress.wait_line(
        jobstatus.progress_line(counts, summary["status"], speed["rate"], speed["eta_seconds"]),
        _seen(summary),
        _seen(previous.summary) if previous is not None else None,
        100.0 * (counts["completed"] + counts["failed"]) / counts["total"] if counts["total"] else None,
    )
    if job is not None and objs:
        reached = {b: o for b, o in objs.items() if o.get("status") != jobstatus.UNREACHABLE}
        try:
            when_free(job, lambda: jobstatus.record_status(job, reached))  # else the command holding it records
        except (OSError, FileSystemError):
            pass  # a job directory that cannot be written (read-only disk, another user's) is still reported
    if job is not None:
        try:
            if duplicates.watched(job):  # a second batch for a chunk: recorded and cancelled
                when_free(job, lambda: duplicates.check(client, job))
        except (OSError, FileSystemError):
            pass
    return Check(summary, summaries, speed, done, objs)


def _seen(summary: Dict[str, Any]) -> tuple:
    """What a check found that a person wants to hear about when it changes."""
    counts = summary["request_counts"]
    return (summary["status"], counts["total"], counts["completed"], counts["failed"])


def wait_until_done(
    client: Client,
    job: Optional[Job],
    batch_ids: Sequence[str],
    interval: float,
    timeout: float,
    between: Optional[Callable[[Check], None]] = None,
) -> tuple[Check, bool]:
    """Check until every batch has ended (or nothing can be waited for); (last check, timed out)."""
    deadline = clock.monotonic() + timeout
    checks = 0
    last: Optional[Check] = None
    last_at = clock.monotonic()
    while True:
        now = clock.monotonic()
        current = check_once(client, job, batch_ids, last, now - last_at if last else None)
        last, last_at = current, now
        if current.summary["finished"] or current.summary["status"] == "not_submitted":
            return current, False
        if between is not None:
            between(current)
        remaining = deadline - clock.monotonic()
        if remaining <= 0:
            return current, True
        checks += 1
        clock.sleep(min(jobstatus.wait_delay(checks, interval), remaining))


def unsuccessful(summary: Dict[str, Any]) -> bool:
    """Finished, but not every request succeeded: a batch ended badly, or requests failed or
    never ran (the same rule as fetch_results.py's exit 5)."""
    counts = summary["request_counts"]
    return bool(summary["ended_badly"] or counts["failed"] or counts["completed"] < counts["total"])


def answers_checked(job: Optional[Job], last: Check) -> Optional[Dict[str, int]]:
    """The answer checks of the job's last fetch when it covered every batch seen now, finished
    (``answers.CHECKS`` counts), else None: poll.py reads no results itself."""
    rec = job.record.answers if job is not None else None
    if not rec or not rec.get("complete") or set(rec.get("batches") or ()) != set(last.batches):
        return None
    return dict(rec.get("counts") or {})


def check(client: Client, job: Optional[Job], batch_ids: Sequence[str], waiting: Wait) -> Outcome:
    """poll.py: one check, or (``waiting.wait``) checks until the end or ``waiting.timeout``."""
    wait = waiting.wait
    if wait:
        last, timed_out = wait_until_done(client, job, batch_ids, waiting.interval, waiting.timeout)
    else:
        last, timed_out = check_once(client, job, batch_ids), False
    summary = last.summary
    target = Target([] if job is not None else list(batch_ids), job.dir if job is not None else None)
    checked = answers_checked(job, last)
    rate = last.speed.get("rate")
    doc: Dict[str, Any] = {
        "status": summary["status"],
        "finished": summary["finished"],
        "request_counts": summary["request_counts"],
        "answers": checked,
        "batches": last.summaries,
        "unsubmitted": summary["unsubmitted"],
        "duplicates": duplicates.report(job.record) if job is not None else [],
        "rate": round(rate, 3) if rate else None,
        "eta_seconds": last.speed.get("eta_seconds"),
        "timed_out": timed_out,
        "job": job.dir if job is not None else None,
        "next": commands.after_check(
            summary["status"],
            summary["finished"],
            job.dir if job is not None else None,
            job.record if job is not None else None,
            to_argv(target),
            to_argv(PollOptions(target)),  # one check later, not a wait (an agent comes back to it)
        ),
    }
    if summary["finished"]:
        bad = sum(n for k, n in (checked or {}).items() if k != answers.GOOD)
        code = EXIT_UNSUCCESSFUL if unsuccessful(summary) or bad else EXIT_OK
        if checked is None and summary["request_counts"]["completed"]:
            narrate("the answers are not checked yet: the fetch checks them (an HTTP 200 can hold an empty answer)")
    elif wait:
        code = EXIT_NOT_FINISHED
    else:
        code = EXIT_OK
    return Outcome(doc, code)


def poll_line(target: Target) -> str:
    """The poll.py command for ``target`` (a job or batch ids): one check."""
    return commands.command("poll.py", *to_argv(PollOptions(target)))


def poll(options: PollOptions, conn: Connection) -> Outcome:
    """poll.py: its job or batch ids, checked once or until they end."""
    client, job, ids = open_target("poll.py", conn, options.target.job, options.target.batch_ids)
    return check(client, job, ids, options.wait)
