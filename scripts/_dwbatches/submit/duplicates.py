"""Second batches for one chunk: a create the server was still working on when it was sent again.

A chunk's create is sent again only after the look-up for the first one found nothing for as
long as the server could still be working on it (``lookup.until_created``), or after the
server itself answered it with an error (a 5xx other than 502 or 504). Should the first
create take effect all the same, the server holds two batches with the chunk's intent
(``dwb_intent``), and every request would run, and be billed, twice. So a chunk whose create
was sent more than once (``create_posts`` > 1) is watched: each check (poll.py, run_batch.py
while it waits, every submit of the job) looks its intent up, until a check made after
``watch_duplicates_until`` (the last create's ``lookup.create_deadline``) leaves no second
batch running. A batch found there (or found beside the chunk's own when an interrupted
create is looked up) is:

- recorded in ``job.json`` on the chunk, under ``duplicates`` (its id);
- cancelled when it is still running (a finished one is never cancelled: that would only
  relabel it);
- reported: an event when found (said on stderr), and in poll.py's ``duplicates``.

What it ran is billed all the same: the fetch downloads its results with the chunk's (the
merge keeps one answer per custom_id) and the cost counts its billed cost.

API::

    found = record(job, client, ch, batches)    # batches of ch's intent besides ch.batch_id
    found = check(client, job)                  # a locked job (the workflow takes the lock)
    rows = report(job.record)                   # every recorded duplicate, for the JSON
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional

from ..core import events
from ..core.errors import EXIT_CONFIG, DWError
from ..jobs.jobrecord import TERMINAL_STATUSES, Chunk
from . import lookup

if TYPE_CHECKING:  # annotations only
    from ..core.http import Client
    from ..jobs.job import Job
    from ..jobs.jobrecord import JobRecord

# a batch in these states has run all it will: cancelling it would only relabel it
FINISHED = TERMINAL_STATUSES | {"finalizing", "cancelling"}


def watched(job: Job) -> List[Chunk]:
    """The chunks of the job that may still get a second batch."""
    return [c for c in job.record.chunks() if c.batch_id and c.watch_duplicates_until is not None]


def _cancel(client: Client, batch_id: str) -> Optional[str]:
    """Cancel a running second batch: its status after the cancel, or None when that failed
    (an event; the next check tries again). A refused key is raised."""
    try:
        status = str(client.cancel_batch(batch_id).get("status") or "cancelling")
    except DWError as exc:
        if exc.exit_code == EXIT_CONFIG:
            raise
        events.step(f"cancelling batch {batch_id} failed ({exc.message}); the next check tries again")
        return None
    events.step(f"batch {batch_id}: cancelled ({status})")
    return status


def record(job: Job, client: Client, ch: Chunk, batches: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Record ``batches`` (other batches made for ``ch``'s intent) on the chunk and cancel those
    still running; the ones not recorded before are returned ({batch_id, duplicate_of, status},
    the status after the cancel; a running one when the cancel failed, which keeps the chunk
    watched so that the next check tries again)."""
    found = []
    for b in batches:
        if not ch.add_duplicate(b.get("id", "")):
            continue
        job.save()  # recorded before anything else is tried: the cost must count it whatever happens
        status = b.get("status")
        running = status not in FINISHED
        events.step(
            f"batch {b['id']} is a second batch for the requests of batch {ch.batch_id} (a create the server "
            f"was still working on when it was sent again); "
            + ("cancelling it" if running else f"left alone: it is {status} (what it ran is billed, merged once)")
        )
        if running:
            status = _cancel(client, b["id"]) or status
            if status not in FINISHED and ch.watch_duplicates_until is None:
                ch.watch_duplicates_until = time.time()
                job.save()
        found.append({"batch_id": b["id"], "duplicate_of": ch.batch_id, "status": status})
    return found


def check(client: Client, job: Job) -> List[Dict[str, Any]]:
    """Look the watched chunks' intents up (a locked job): record and cancel
    second batches; end the watch of a chunk once a check after its deadline has left none
    running. A duplicate recorded earlier that still runs (its cancel failed) is cancelled
    again. A look-up that fails is an event and left to the next check (only a refused key
    is raised)."""
    job.require_lock()
    found: List[Dict[str, Any]] = []
    for ch in watched(job):
        started = time.time()
        try:
            batches = lookup.intent_batches(client, ch)
        except DWError as exc:  # never fails the command it runs in: the next check looks again
            if exc.exit_code == EXIT_CONFIG:
                raise
            events.step(
                f"could not look for a second batch of batch {ch.batch_id} ({exc.message}); the next check does"
            )
            continue
        known = set(ch.duplicates or [])
        others = [b for b in batches if b.get("id") != ch.batch_id]
        new = record(job, client, ch, [b for b in others if b["id"] not in known])
        found += new
        running = [row for row in new if row["status"] not in FINISHED]
        for b in others:
            if b["id"] in known and b.get("status") not in FINISHED and _cancel(client, b["id"]) is None:
                running.append(b)
        if started > (ch.watch_duplicates_until or 0) and not running:
            ch.watch_duplicates_until = None  # nothing can appear any more, and none runs
            job.save()
    return found


def report(rec: JobRecord) -> List[Dict[str, Any]]:
    """Every recorded duplicate: {batch_id, duplicate_of, round, chunk}."""
    return [
        {"batch_id": d, "duplicate_of": ch.batch_id, "round": rnd.round, "chunk": ch.index}
        for rnd, ch in rec.round_chunks()
        for d in ch.duplicates or []
    ]
