#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = ["requests>=2.28,<3", "python-dotenv>=1.0,<2"]
# ///
"""Rerun the failed and never-run requests of a job as a new round of the same job.

First brings the job's results up to date (the same engine as fetch_results.py), then
copies every request without a successful result (failed, or missing because its batch was
cancelled or expired) verbatim from what was submitted (the original input, or the
server's copy of it when the local file changed or is gone), in input order, into
<job>/rounds/round-N.jsonl and submits it through the same engine as submit.py. Nothing
that succeeded is sent again. Safe to run again after a crash or timeout: a round that was
recorded but not fully submitted is resumed, never submitted twice. Refuses (exit 6) while
batches of the job are still running: run poll.py --job DIR --wait first.

The retry reruns the same requests: the same model and parameters. To change them (another
model, a longer max_tokens), build a new batch file and submit it as a new job (--job
NEW_DIR). After a cancel (cancel_batch.py --job) the retry is refused (exit 2), --dry-run
too: the user stopped that work, and the job's next step is fetching what finished. Only
when the user wants the rest run as it was (same model and settings) add --after-cancel.

examples:
  python3 scripts/retry_failed.py --job data.dwjob
  python3 scripts/retry_failed.py --job data.dwjob --dry-run     # count, write and send nothing
  python3 scripts/retry_failed.py --job data.dwjob -w 1h         # the retry round in the 1h window

Requests that failed with a client error (HTTP 4xx: a bad request, a model not allowed)
usually fail again; their count is shown on stderr. Afterwards poll the job and fetch the
results as usual: fetch_results.py merges all rounds (a success in any round counts).

output (stdout, JSON): job, round (the new or resumed round, null if none), requests (in
that round), failed and missing (how many of each it retries), sample (first custom_ids),
client_errors (only when some failures were HTTP 4xx: how many), input (only when a round
was written: its file), batches (batch_id, chunk, requests, status), dry_run, status (only
when nothing was submitted: the job's status), reason (only when nothing was submitted:
why), running (only while batches run: their ids), resumed (only when an interrupted round
was resumed), next. Exit 0 = submitted, or nothing
to retry; 2 = the job was cancelled (without --after-cancel); 6 = batches still running, or
the job is not fully submitted (see next)."""

from __future__ import annotations

from typing import Optional, Sequence

from _dwbatches import cli, output
from _dwbatches.planning import WINDOWS
from _dwbatches.workflow.common import open_job_for
from _dwbatches.workflow.retrying import retry


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True)
    parser.add_argument("--job", metavar="DIR", required=True, help="the job directory")
    parser.add_argument(
        "-w", "--completion-window", choices=WINDOWS, help="window of the retry round (default: the job's)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="bring results up to date and count what would be retried; write and send nothing",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="retry even when a finished batch's result files look short of its counts "
        "(those requests may have succeeded and would be paid twice)",
    )
    parser.add_argument(
        "--after-cancel",
        action="store_true",
        help="retry a job the user cancelled (cancel_batch.py --job) anyway: reruns the requests "
        "the cancel stopped, with the same model and settings",
    )
    args = output.parse_args(parser, argv)

    def body() -> int:
        client, job = open_job_for(cli.connection(args), args.job)
        with job:
            job.load()
            outcome = retry(
                client,
                job,
                args.completion_window,
                dry_run=args.dry_run,
                force=args.force,
                after_cancel=args.after_cancel,
            )
        return output.finish(outcome)

    return output.run(body)


if __name__ == "__main__":
    raise SystemExit(main())
