"""Finding on the server what an interrupted run sent: an uploaded file, a created batch.

A chunk records when its upload and its batch creation started. A later run that finds no
file id (or no batch id) looks for the file by its unique upload name and size, and for the
batch by the intent id it sent in the batch metadata (``dwb_intent``): first with
``?search=``, then paging recent objects back to when the attempt started. A request cut off
less than ``SETTLE_WINDOW`` seconds before may still be on its way (in socket buffers or a
buffering proxy), so the lookup is repeated after each of ``SETTLE_DELAYS`` before anything
is sent again.

A new job also looks for earlier submissions of the same file (``earlier_submissions``):
round 1's batches carry the first 16 hex digits of the input's sha256 (``dwb_input``), so a
file submitted again after its job directory was deleted or moved is noticed before it is
paid for twice.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional

from . import clock
from .errors import APIStatusError
from .jobrecord import Chunk
from .output import narrate

LOOKUP_PAGES = 20  # recent batches (x100) searched for an intent when ?search= finds nothing
# An upload or a create interrupted less than SETTLE_WINDOW seconds ago may still be on its way
# to the server (its bytes sit in socket buffers or a buffering proxy when the client dies, and
# arrive a moment later). Before sending it again, it is looked up once more after each of
# SETTLE_DELAYS seconds.
SETTLE_WINDOW = 600.0
SETTLE_DELAYS = (1.0, 2.0)
CLOCK_SKEW = 600.0  # seconds of server/local clock difference tolerated when paging back


def recent(started_at: Any) -> bool:
    """An attempt started so recently that its request may still be on its way to the server."""
    try:
        return time.time() - float(started_at) < SETTLE_WINDOW
    except (TypeError, ValueError):
        return False


def find_upload(client: Any, ch: Chunk) -> Optional[Dict[str, Any]]:
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


def find_batch(client: Any, ch: Chunk) -> Optional[Dict[str, Any]]:
    """The batch created for ``ch``'s intent, if one exists."""
    intent = ch.intent_id
    since = (ch.create_started_at or 0) - CLOCK_SKEW

    def match(b: Dict[str, Any]) -> bool:
        return isinstance(b.get("metadata"), dict) and b["metadata"].get("dwb_intent") == intent

    try:
        body = client.list_batches(limit=100, search=intent)
        for b in body.get("data", []):
            if isinstance(b, dict) and match(b):
                return b
    except APIStatusError as exc:
        if exc.status not in (400, 422):
            raise
    after: Optional[str] = None
    for _ in range(LOOKUP_PAGES):
        body = client.list_batches(limit=100, after=after)
        data = [b for b in body.get("data", []) if isinstance(b, dict)]
        for b in data:
            if match(b):
                return b
        old = any(isinstance(b.get("created_at"), (int, float)) and b["created_at"] < since for b in data)
        if old or not body.get("has_more") or not data:
            return None
        after = body.get("last_id") or data[-1].get("id")
    return None


def settled(
    lookup: Callable[[Chunk], Optional[Dict[str, Any]]], ch: Chunk, settle: bool, label: str
) -> Optional[Dict[str, Any]]:
    """``lookup(ch)``; with ``settle``, look again after each of SETTLE_DELAYS while nothing is
    found, since a request cut off mid-flight may still arrive and take effect."""
    found = lookup(ch)
    if found or not settle:
        return found
    for delay in SETTLE_DELAYS:
        narrate(
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


def earlier_submissions(client: Any, sha256: str) -> List[Dict[str, Any]]:
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
