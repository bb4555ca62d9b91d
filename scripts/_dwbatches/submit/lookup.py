"""Finding on the server what an interrupted run sent: an uploaded file, a created batch.

A chunk records when its upload and its batch creation started. A later run that finds no
file id (or no batch id) looks for the file by its unique upload name and size, and for the
batch by the intent id it sent in the batch metadata (``dwb_intent``): first with
``?search=``, then paging recent objects back to when the attempt started.

An upload cut off less than ``SETTLE_WINDOW`` seconds before may still be on its way (in
socket buffers or a buffering proxy), so its lookup is repeated after each of
``SETTLE_DELAYS`` before it is sent again.

A batch create is looked for as long as the server could still be working on it
(``until_created``): up to ``create_in_progress()`` seconds after its last attempt started,
which is the client's own bound on a create (the connect and read timeouts of POST
/batches, ``http.CREATE_TIMEOUT``: past them the client gives the reply up) plus
``CREATE_MARGIN`` for a buffering proxy or a commit that lands after the reply timed out;
with back-off between the looks (1, 2, 4, 8, then every 15 s). A create after which the
server replied itself (a 5xx other than a gateway's 502 or 504) is looked for only over
``SETTLE_DELAYS``. If a create
outlasts that bound all the same, the second batch made for the same intent is found later
(``duplicates.check``, run by poll and every submit of the job), recorded on the chunk and
cancelled.

A new job also looks for earlier submissions of the same file (``earlier_submissions``):
round 1's batches carry the first 16 hex digits of the input's sha256 (``dwb_input``), so a
file submitted again after its job directory was deleted or moved is noticed before it is
paid for twice.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, TypeVar

from ..core import clock, events
from ..core.errors import APIStatusError
from ..jobs.jobrecord import Chunk

if TYPE_CHECKING:  # annotations only
    from ..core.http import Client

LOOKUP_PAGES = 20  # recent batches (x100) searched for an intent when ?search= finds nothing
# An upload or a create interrupted less than SETTLE_WINDOW seconds ago may still be on its way
# to the server (its bytes sit in socket buffers or a buffering proxy when the client dies, and
# arrive a moment later). Before sending it again, it is looked up once more after each of
# SETTLE_DELAYS seconds.
SETTLE_WINDOW = 600.0
SETTLE_DELAYS = (1.0, 2.0)
CLOCK_SKEW = 600.0  # seconds of server/local clock difference tolerated when paging back
# How long after an attempt of POST /batches started the server may still be working on it
# (``create_in_progress``): the client's connect and read timeouts for the create
# (``http.CREATE_TIMEOUT``, 10 + 120 s: past them it stops waiting for the reply, so no create
# of its own is meant to take longer) plus CREATE_MARGIN, 160 s in all. Until then a create
# that is not found is not sent again.
CREATE_MARGIN = 30.0
CREATE_LOOK_DELAYS = (1.0, 2.0, 4.0, 8.0)  # then every CREATE_LOOK_EVERY seconds
CREATE_LOOK_EVERY = 15.0


def recent(started_at: Any) -> bool:
    """An attempt started so recently that its request may still be on its way to the server."""
    try:
        return time.time() - float(started_at) < SETTLE_WINDOW
    except (TypeError, ValueError):
        return False


def find_upload(client: Client, ch: Chunk) -> Optional[Dict[str, Any]]:
    """A file this job uploaded for ``ch`` earlier (same unique name, same size), if any."""
    name = ch.upload_name
    since = (ch.upload_started_at or 0) - CLOCK_SKEW

    def match(f: Dict[str, Any]) -> bool:
        return (
            f.get("filename") == name
            and f.get("purpose", "batch") == "batch"
            and (f.get("bytes") is None or int(f["bytes"]) == int(ch.bytes))
        )

    found = [f for f in client.find_files(name) if match(f)]
    if not found:  # the search may be unsupported: page recent input files
        after: Optional[str] = None
        for _ in range(LOOKUP_PAGES):
            params: Dict[str, Any] = {"purpose": "batch", "limit": 100}
            if after:
                params["after"] = after
            body = client.get_json("files", params=params)
            data = [f for f in body.get("data", []) if isinstance(f, dict)]
            found = [f for f in data if match(f)]
            old = any(isinstance(f.get("created_at"), (int, float)) and f["created_at"] < since for f in data)
            if found or old or not body.get("has_more") or not data:
                break
            after = body.get("last_id") or data[-1].get("id")
    if not found:
        return None
    return max(found, key=lambda f: f.get("created_at") or 0)


def intent_batches(client: Client, ch: Chunk) -> List[Dict[str, Any]]:
    """Every batch created for ``ch``'s intent, oldest first (one, unless a create was sent
    again while an earlier one was still in progress)."""
    intent = ch.intent_id
    since = (ch.create_started_at or 0) - CLOCK_SKEW

    def match(b: Any) -> bool:
        return isinstance(b, dict) and isinstance(b.get("metadata"), dict) and b["metadata"].get("dwb_intent") == intent

    found: List[Dict[str, Any]] = []
    try:
        found = [b for b in client.list_batches(limit=100, search=intent).get("data", []) if match(b)]
    except APIStatusError as exc:
        if exc.status not in (400, 422):
            raise
    if not found:  # the search may be unsupported: page recent batches (up to the first match)
        after: Optional[str] = None
        for _ in range(LOOKUP_PAGES):
            body = client.list_batches(limit=100, after=after)
            data = [b for b in body.get("data", []) if isinstance(b, dict)]
            found += [b for b in data if match(b)]
            old = any(isinstance(b.get("created_at"), (int, float)) and b["created_at"] < since for b in data)
            if found or old or not body.get("has_more") or not data:
                break
            after = body.get("last_id") or data[-1].get("id")
    unique = {b["id"]: b for b in found if b.get("id")}
    return sorted(unique.values(), key=lambda b: (b.get("created_at") or 0, b["id"]))


def find_batch(client: Client, ch: Chunk) -> Optional[Dict[str, Any]]:
    """The batch created for ``ch``'s intent, if one exists (the oldest, if several do)."""
    found = intent_batches(client, ch)
    return found[0] if found else None


# what a look-up finds: a file (find_upload) or the batches of an intent (intent_batches)
_Found = TypeVar("_Found")


def create_in_progress() -> float:
    """Seconds after an attempt of POST /batches started during which the server may still be
    working on it (see CREATE_MARGIN)."""
    from ..core.http import CREATE_TIMEOUT  # (here: planning and dry runs do without ``requests``)

    return CREATE_TIMEOUT[0] + CREATE_TIMEOUT[1] + CREATE_MARGIN


def create_deadline(ch: Chunk) -> float:
    """Until when (unix seconds) the server may still be working on ``ch``'s last create."""
    return float(ch.create_started_at or 0) + create_in_progress()


def until_created(lookup: Callable[[Chunk], Optional[_Found]], ch: Chunk, label: str) -> Optional[_Found]:
    """``lookup(ch)``, repeated with back-off while nothing is found and the server may still be
    working on the chunk's last create (``create_deadline``): a create not found before then
    may still take effect, and creating it again would pay for every request twice. The
    waits go through the clock (scaled in tests); their nominal sum is what is bounded."""
    found = lookup(ch)
    bound = create_in_progress()
    left = create_deadline(ch) - time.time()
    delays = list(CREATE_LOOK_DELAYS)
    while not found and left > 0:
        delay = min(delays.pop(0) if delays else CREATE_LOOK_EVERY, left)
        events.step(
            f"{label}: no batch yet; the create sent {bound - left:.0f}s ago may still be in progress on the "
            f"server (for up to {bound:.0f}s: the client's timeouts for a create plus {CREATE_MARGIN:.0f}s), "
            f"looking again in {delay:.0f}s"
        )
        clock.sleep(delay)
        left -= delay
        found = lookup(ch)
    return found


def settled(lookup: Callable[[Chunk], Optional[_Found]], ch: Chunk, settle: bool, label: str) -> Optional[_Found]:
    """``lookup(ch)``; with ``settle``, look again after each of SETTLE_DELAYS while nothing is
    found, since a request cut off mid-flight may still arrive and take effect."""
    found = lookup(ch)
    if found or not settle:
        return found
    for delay in SETTLE_DELAYS:
        events.step(
            f"{label}: not on the server yet; the interrupted request may still arrive, looking again in {delay:.0f}s"
        )
        clock.sleep(delay)
        found = lookup(ch)
        if found:
            return found
    return None


INPUT_KEY = "dwb_input"  # batch metadata: the submitted file's sha256, first 16 hex digits
STOPPED = ("failed", "cancelled", "cancelling")  # stopped: counts only for the requests it completed


def input_mark(sha256: Optional[str]) -> Optional[str]:
    return sha256[:16] if sha256 else None


def earlier_submissions(client: Client, sha256: str) -> List[Dict[str, Any]]:
    """Batches created earlier from a file with this sha256, except those stopped (failed or
    cancelled) before any request completed: one ``?search=`` request. Empty when the server
    cannot search."""
    mark = input_mark(sha256)
    try:
        body = client.list_batches(limit=100, search=mark)
    except APIStatusError as exc:
        if exc.status in (400, 422):
            return []
        raise
    return [
        b
        for b in body.get("data", [])
        if isinstance(b, dict)
        and isinstance(b.get("metadata"), dict)
        and b["metadata"].get(INPUT_KEY) == mark
        and (b.get("status") not in STOPPED or (b.get("request_counts") or {}).get("completed"))
    ]
