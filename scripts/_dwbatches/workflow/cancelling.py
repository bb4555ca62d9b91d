"""Cancelling: stop a job's (or batch ids') running batches, never finished ones.

Every batch is looked up first; a batch that has ended (or is finalizing, or has every request
done) is skipped, since cancelling it would only relabel it cancelled. With a job, the cancel
is recorded in the job first, without the lock, so that a submit running at that moment
creates no further batch; the job's batches include the second batches recorded for a chunk
(``duplicates``), normally cancelled already when they were found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from ..core import commands
from ..core.optiongroups import Target
from ..core.optionspec import group, option, to_argv
from ..core.output import Outcome, narrate
from ..jobs import jobstatus
from ..jobs.job import Job
from ..jobs.jobrecord import counts_of
from ..submit import duplicates
from .common import Connection, open_target, when_free

if TYPE_CHECKING:  # annotations only
    from ..core.http import Client


@dataclass
class CancelOptions:
    """What cancel_batch.py cancels (each field is also its flag, ``optionspec``)."""

    target: Target = group(Target)
    dry_run: bool = option("--dry-run", switch=True, help="show what would be cancelled; cancel nothing")


def drop_unused_uploads(client: Client, job: Job, dry_run: bool) -> List[str]:
    """The files a cancelled job uploaded for chunks that never got a batch (held over
    --max-cost, or a submit that stopped): deleted from the server, as nothing will use them
    (``dry_run``: only listed). Skipped while another command works on the job."""
    unused = [c for c in job.record.chunks() if c.file_id and not c.batch_id and not c.create_started_at]
    if dry_run or not unused:
        return [c.file_id for c in unused if c.file_id]

    def delete() -> List[str]:
        deleted: List[str] = []
        for ch in job.record.chunks():
            if ch.file_id and not ch.batch_id and not ch.create_started_at:
                client.delete_file(ch.file_id)
                narrate(f"chunk {ch.index}: deleted its uploaded file {ch.file_id} (the job is cancelled)")
                deleted.append(ch.file_id)
                ch.file_id, ch.held = None, "cancelled; its uploaded file was deleted"
                job.save()
        return deleted

    deleted = when_free(job, delete, wait=2.0)
    if deleted is None:
        narrate("another command works on the job; its uploaded files without a batch are left for now")
        return []
    return deleted


def cancel(client: Client, job: Optional[Job], batch_ids: Sequence[str], dry_run: bool = False) -> Outcome:
    """cancel_batch.py: cancel the running batches (``dry_run``: only say which)."""
    unsubmitted: List[Dict[str, Any]] = []
    ids = list(batch_ids)
    previous = job.record.cancel if job is not None else None
    if job is not None:
        if not dry_run:
            job.request_cancel()  # first: a submit running now creates no further batch
        targets = jobstatus.job_targets(job.record)
        ids = [t["batch_id"] for t in targets if t["batch_id"]]
        ids += [d["batch_id"] for d in duplicates.report(job.record)]  # second batches of a chunk, if any ran on
        unsubmitted = [
            {"round": t["round"], "chunk": t["chunk"], "held": t["held"]} for t in targets if not t["batch_id"]
        ]
    # all looked up before anything is cancelled
    if job is not None:
        current = jobstatus.get_job_batches(client, job.record)
        others = [b for b in ids if b not in current]  # second batches of a chunk
        current.update(jobstatus.get_batches(client, others, job.record.job_id, missing_ok=True))
        for bid in ids:  # gone from the server with no file of it known: nothing to cancel
            current.setdefault(bid, {"id": bid, "status": jobstatus.UNREACHABLE})
    else:
        current = jobstatus.get_batches(client, ids)
    rows: List[Dict[str, Any]] = []
    after: Dict[str, Dict[str, Any]] = {}
    for bid in ids:
        b = current[bid]
        status = b.get("status")
        row: Dict[str, Any] = {"batch_id": bid}
        c0 = counts_of(b)
        all_done = c0["total"] > 0 and c0["completed"] + c0["failed"] >= c0["total"]
        if jobstatus.is_terminal(status) or status == "finalizing" or all_done:
            why = status if jobstatus.is_terminal(status) else f"{status}, every request done"
            row.update(
                action="skipped",
                status=status,
                request_counts=c0,
                reason=f"already {why}",  # (why a finished batch is left alone: the declaration says)
            )
            narrate(f"batch {bid}: skipped (already {why})")
        elif dry_run:
            row.update(action="would_cancel", status=status, request_counts=counts_of(b))
            narrate(f"batch {bid}: would cancel ({status})")
        else:
            res = client.cancel_batch(bid)
            after[bid] = res
            c = counts_of(res)
            row.update(action="cancelled", status=res.get("status"), request_counts=c)
            narrate(
                f"batch {bid}: cancelled ({res.get('status')}; so far {c['completed']} completed and "
                f"{c['failed']} failed of {c['total']}, kept; requests already running may still finish)"
            )
        rows.append(row)
    if job is not None and after:
        when_free(job, lambda: jobstatus.record_status(job, after))
    if job is not None and not dry_run and not after and not unsubmitted and previous is None:
        job.withdraw_cancel(previous)  # every batch had finished: nothing was stopped
        narrate("every batch of the job had finished; nothing was cancelled and the job is not marked cancelled")
    discarded = drop_unused_uploads(client, job, dry_run) if job is not None else []
    if unsubmitted:
        narrate(
            f"{len(unsubmitted)} chunk(s) of the job have no batch yet; nothing to cancel there "
            "(do not resume the submit if you want them to stay unsent)"
        )
    doc: Dict[str, Any] = {
        "batches": rows,
        "cancelled": sum(1 for r in rows if r["action"] == "cancelled"),
        "skipped": sum(1 for r in rows if r["action"] == "skipped"),
    }
    if dry_run:
        doc["would_cancel"] = sum(1 for r in rows if r["action"] == "would_cancel")
    if unsubmitted:
        doc["unsubmitted"] = unsubmitted
    if discarded:
        doc["would_delete_files" if dry_run else "deleted_files"] = discarded
    doc["job"] = job.dir if job is not None else None
    preview = dry_run and bool(doc.get("would_cancel") or unsubmitted)
    target = Target([] if job is not None else ids, job.dir if job is not None else None)
    if preview:  # the cancel it previewed
        doc["next"] = commands.command("cancel_batch.py", *to_argv(CancelOptions(target, dry_run=False)))
    else:  # the fetch of what finished
        doc["next"] = commands.command("fetch_results.py", *to_argv(target)) if ids else None
    return Outcome(doc)


def cancel_command(options: CancelOptions, conn: Connection) -> Outcome:
    """cancel_batch.py: its job or batch ids, looked up and cancelled (or only listed)."""
    client, job, ids = open_target("cancel_batch.py", conn, options.target.job, options.target.batch_ids)
    return cancel(client, job, ids, dry_run=options.dry_run)
