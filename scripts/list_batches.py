#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = [
#   "requests>=2.32.4,<3",
#   "python-dotenv>=1.2.2,<2; python_version >= '3.10'",
#   "python-dotenv>=1.0,<2; python_version < '3.10'",
# ]
# ///
"""List the account's batches, newest first, with their status and request counts.

--search matches metadata, file names and ids (e.g. a job id: batches created by submit.py
carry metadata dwb_job, dwb_chunk and dwb_intent). --all follows the server's pages
(after / has_more) to the end.

Finding a job from a later conversation: --jobs lists the job directories below the working
directory (from their job.json: input, job_id, status as last seen, answers of the last
fetch, the poll command; no key needed); --input FILE finds every job and batch of that batch
file (new jobs mark their batches with the file's sha256), with the job directories here that
hold it.

The answer store (no key needed): --answers [FOLDER] shows the store of the job directories in
FOLDER (default: here), .dwb-answers/, which holds the good answers of their finished batches
so that a new job sends only requests not answered yet; --answers-limit MB sets its size limit
(default 1000; the answers used least recently are dropped to meet it); --clear-answers
[FOLDER] drops every answer in it (the jobs so far are not read in again).

examples:
  python3 scripts/list_batches.py
  python3 scripts/list_batches.py --status in_progress
  python3 scripts/list_batches.py --search 3f2c9a10 --all
  python3 scripts/list_batches.py --jobs
  python3 scripts/list_batches.py --input requests.jsonl
  python3 scripts/list_batches.py --answers"""

from __future__ import annotations

from typing import Optional, Sequence

from _dwbatches.core import output
from _dwbatches.workflow import cli
from _dwbatches.workflow.listing import ListOptions, listing

OPTIONS = ListOptions


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True, script=__file__)
    return cli.run(parser, OPTIONS, argv, listing)


if __name__ == "__main__":
    raise SystemExit(main())
