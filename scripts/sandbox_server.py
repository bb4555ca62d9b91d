#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = []
# ///
"""Local sandbox of the Doubleword Batch API (OpenAI-Batch compatible).

A standard-library-only HTTP server that behaves like the Doubleword
files and batches API: same routes, status codes, plain-text error bodies, bare UUID
ids, list pagination, ``GET /files/{id}/content`` with ``skip``/``limit``/``search`` and
the ``X-Incomplete`` / ``X-Last-Line`` headers, live partial results, cancel, retry and
delete semantics.  Requests are answered by a deterministic built-in model (or
forwarded to an OpenAI-compatible ``--upstream``), so batch clients can be developed
and tested offline, fast and without spending credits.

State lives in SQLite (WAL) inside ``--data-dir``; a restarted sandbox on the same
directory carries on where it stopped.  Failures can be injected with a JSON fault
document (``--faults`` or ``PUT /_sandbox/faults``).

Run ``python3 scripts/sandbox_server.py --help`` for flags, endpoints and examples. The code
lives in the package ``scripts/_dwsandbox/`` (its ``__init__`` lists the modules).
"""

from __future__ import annotations

# The imports work from any working directory: Python puts this script's directory on sys.path.
from _dwsandbox import __version__
from _dwsandbox.server import SandboxHTTPServer, build_parser, main

__all__ = ["SandboxHTTPServer", "__version__", "build_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
