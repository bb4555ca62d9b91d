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
from _dwbatches.workflow.cancelling import cancel
from _dwbatches.workflow.common import open_target


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True, script=__file__)
    cli.add_target_args(parser, job_help="cancel the running batches of this job")
    parser.add_argument("--dry-run", action="store_true", help="show what would be cancelled; cancel nothing")
    args = output.parse_args(parser, argv)

    def body() -> int:
        client, job, ids = open_target("cancel_batch.py", cli.connection(args), args.job, args.batch_ids)
        return output.finish(cancel(client, job, ids, dry_run=args.dry_run))

    return output.run(body)


if __name__ == "__main__":
    raise SystemExit(main())
