#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = [
#   "requests>=2.32.4,<3",
#   "python-dotenv>=1.2.2,<2; python_version >= '3.10'",
#   "python-dotenv>=1.0,<2; python_version < '3.10'",
# ]
# ///
"""Validate a batch JSONL file, split it into server-sized chunks, upload them and create one batch each.

Validates first (nothing is sent if any line is bad), then uploads each chunk (at most
--max-requests requests and --max-bytes bytes) as a byte range of the input and creates its
batch. Progress is remembered in a job directory (default: INPUT.dwjob beside the input), so
running the same command again resumes: it finishes what is missing and never uploads or
creates anything twice, even after a crash or a killed process. Run it again after any
error, timeout or interruption.

A new job sends only what has no answer yet: a request whose endpoint and body an earlier
job in the same folder answered well (not empty, cut, invalid JSON or failed) takes that
answer, and a request repeated within the file is sent once; by default only deterministic
requests (temperature 0, embeddings), so that sampling stays fresh (--reuse-sampled: all);
--no-reuse sends everything. The answers live in .dwb-answers/ beside the job directories
(list_batches.py --answers).

examples:
  python3 scripts/submit.py requests.jsonl
  python3 scripts/submit.py requests.jsonl --dry-run          # plan and local cost estimate, no network
  python3 scripts/submit.py requests.jsonl -w 1h --metadata project=reviews
  python3 scripts/submit.py requests.jsonl --max-cost 5       # create nothing if the estimate is over $5

--max-cost: the files are uploaded and the server's estimate is summed; when it is over the
limit no batch is created (exit 2) and running again with a higher --max-cost, or without
it, creates them. A different input in an existing job, or a different -w, is refused."""

from __future__ import annotations

from typing import Optional, Sequence

from _dwbatches.core import output
from _dwbatches.workflow import cli
from _dwbatches.workflow.submitting import SubmitCommand, submit_command

OPTIONS = SubmitCommand


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True, script=__file__)
    return cli.run(parser, OPTIONS, argv, submit_command)


if __name__ == "__main__":
    raise SystemExit(main())
