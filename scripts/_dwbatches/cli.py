"""Command-line pieces shared by several scripts: the submit flags and the result flags."""

from __future__ import annotations

from typing import Any

from .planning import WINDOWS
from .validate import MAX_BODY_BYTES, MAX_FILE_BYTES, MAX_REQUESTS_PER_FILE


def add_submit_args(parser: Any) -> None:
    """The submit flags, shared by submit.py and run_batch.py (a parser or an argument group)."""
    parser.add_argument("-w", "--completion-window", choices=WINDOWS,
                        help="24h (batch price, the default) or 1h (async price, faster)")
    parser.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                        help="batch metadata (repeatable; string values)")
    parser.add_argument("--job", metavar="DIR", help="job directory (default: INPUT.dwjob beside the input)")
    parser.add_argument("--max-requests", type=int, metavar="N",
                        help=f"requests per uploaded file (default {MAX_REQUESTS_PER_FILE})")
    parser.add_argument("--max-bytes", type=int, metavar="N",
                        help=f"bytes per uploaded file (default {MAX_FILE_BYTES})")
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES, metavar="N",
                        help="bytes per request body (default %(default)s)")
    parser.add_argument("--max-cost", type=float, metavar="USD",
                        help="create no batch when the server's cost estimate is over USD")
