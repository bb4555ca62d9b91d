"""The sandbox's own endpoints (``/_sandbox/...``, not part of the real API, never counted in
stats): the fault document, the counters, and a reset to a fresh state."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .config import MAX_JSON_BODY
from .wire import ApiError, Response, json_response

if TYPE_CHECKING:
    from .app import App
    from .routing import Request


def get_faults(app: App, req: Request) -> Response:
    return json_response(app.faults.document())


def put_faults(app: App, req: Request) -> Response:
    raw = req.read_body(MAX_JSON_BODY)
    try:
        doc = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, f"Failed to parse the request body as JSON: {err}") from None
    try:
        app.faults.replace(doc)
    except ValueError as err:
        raise ApiError(400, str(err)) from None
    return json_response(app.faults.document())


def get_stats(app: App, req: Request) -> Response:
    counts, uploads = app.stats.snapshot()
    with app.store.read() as conn:
        files = conn.execute("SELECT COUNT(*) FROM files WHERE deleted = 0 AND purpose = 'batch'").fetchone()[0]
        batches = conn.execute("SELECT COUNT(*) FROM batches WHERE deleted = 0").fetchone()[0]
    return json_response(
        {"requests": dict(sorted(counts.items())), "files": files, "batches": batches, "uploads_received": uploads}
    )


def reset_stats(app: App, req: Request) -> Response:
    app.stats.reset()
    return get_stats(app, req)


def reset(app: App, req: Request) -> Response:
    """Forget every file, batch and request, restore the faults given at start, zero the counters."""
    app.reset()
    return get_stats(app, req)
