#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = [
#   "requests>=2.32.4,<3",
#   "python-dotenv>=1.2.2,<2; python_version >= '3.10'",
#   "python-dotenv>=1.0,<2; python_version < '3.10'",
# ]
# ///
"""Cancel batches (by id, or every running batch of a job) without touching finished ones.

The status of each batch is checked first: a batch that already completed, failed or was
cancelled is skipped with a note (the server would otherwise flip a completed batch to
cancelled). Requests already finished stay downloadable; in-flight ones may still complete.
Every id is looked up before anything is cancelled, so a mistyped id cancels nothing.
Never prompts.

examples:
  python3 scripts/cancel_batch.py --job data.dwjob
  python3 scripts/cancel_batch.py 6f1c2e0a-1b2c-4d5e-8f90-0123456789ab --dry-run

Afterwards, fetch_results.py keeps everything that finished. retry_failed.py --job refuses
a cancelled job (the user stopped that work); with --after-cancel it runs the requests that
never ran (nothing finished is redone)."""

from __future__ import annotations

from typing import Optional, Sequence

from _dwbatches.core import output
from _dwbatches.workflow import cli
from _dwbatches.workflow.cancelling import CancelOptions, cancel_command

OPTIONS = CancelOptions


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True, script=__file__)
    return cli.run(parser, OPTIONS, argv, cancel_command)


if __name__ == "__main__":
    raise SystemExit(main())
