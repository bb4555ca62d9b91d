#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = [
#   "requests>=2.32.4,<3",
#   "python-dotenv>=1.2.2,<2; python_version >= '3.10'",
#   "python-dotenv>=1.0,<2; python_version < '3.10'",
# ]
# ///
"""Check the status of a job's batches (or of batch ids): once by default, or --wait until they end.

One status check and an immediate answer by default: record the job directory, leave, and
come back later (a later conversation can run the same command). --wait polls politely
(after 2, 5 and 10 s, then every --interval seconds) until every batch is terminal or --timeout passes; the default
timeout stays below common 10-minute tool limits. With --job the last-known status and
counts are recorded in job.json (skipped without complaint while another process holds the
job's lock, or when the job directory cannot be written: a read-only job is still reported).

examples:
  python3 scripts/poll.py --job data.dwjob
  python3 scripts/poll.py --job data.dwjob --wait --timeout 540
  python3 scripts/poll.py 6f1c2e0a-1b2c-4d5e-8f90-0123456789ab

job status: not_submitted (a chunk has no batch yet: run `next`), in_progress (a batch is
still validating/in_progress/finalizing/cancelling), completed (every request succeeded),
partially_failed (batches completed, some requests failed), failed / cancelled / expired
(every deciding batch ended so), deleted (the server no longer has the batch: deleted on the
dashboard or by another tool; its results stay downloadable, fetch_results.py delivers what it
finished and retry_failed.py reruns only what it never ran), mixed (they ended differently). For a job with retry
rounds the latest round decides, and request_counts count each input request once
(completed over all rounds, failed as of the latest round). Terminal batch statuses:
completed, failed, cancelled, and expired (accepted if the server ever sends it); here also
deleted and unreachable (gone from the server with no result file known).

stderr: counts, rate and ETA. Exit 0 = reported (finished with every request completed, or
not finished without --wait); 5 = finished unsuccessfully: a batch ended failed, cancelled
or expired, requests failed or never ran, or the answers checked are not all good (as
fetch_results.py); 6 = --wait timed out (or nothing to wait for: the job is not fully
submitted)."""

from __future__ import annotations

from typing import Optional, Sequence

from _dwbatches.core import output
from _dwbatches.workflow import cli
from _dwbatches.workflow.checking import PollOptions, poll

OPTIONS = PollOptions


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True, script=__file__)
    return cli.run(parser, OPTIONS, argv, poll)


if __name__ == "__main__":
    raise SystemExit(main())
