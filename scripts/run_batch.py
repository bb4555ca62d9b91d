#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = [
#   "requests>=2.32.4,<3",
#   "python-dotenv>=1.2.2,<2; python_version >= '3.10'",
#   "python-dotenv>=1.0,<2; python_version < '3.10'",
# ]
# ///
"""Submit (or resume) a batch file, wait for it, and fetch the results in input order: one command.

Without --wait it submits (or resumes the job: nothing is uploaded or created twice),
checks once and returns the job and the command to run next; use this when tool calls time
out. With --wait it polls (after 2, 5 and 10 s, then every --interval seconds), downloading partial results as they
come, until every batch has ended or --timeout passes, then writes the merged results
(exit 6 on timeout: partial results are saved, and running the same command again goes on
where it stopped). Run it again after any interruption: it resumes without resubmitting.

examples:
  python3 scripts/run_batch.py requests.jsonl --wait
  python3 scripts/run_batch.py requests.jsonl --wait --format simple -o answers.jsonl
  python3 scripts/run_batch.py reviews.jsonl -w 1h --wait --timeout 3000
  python3 scripts/run_batch.py requests.jsonl                   # submit, check once, return

Exit codes as fetch_results.py (0 every answer good; 5 finished with failed or missing
requests or answers that are not good, e.g. empty because a reasoning model spent
max_tokens thinking: next is the retry_failed.py command that fixes them; 6 --wait timed
out); without --wait an unfinished job exits 0."""

from __future__ import annotations

from typing import Optional, Sequence

from _dwbatches.core import output
from _dwbatches.workflow import cli
from _dwbatches.workflow.running import RunOptions, run_command

OPTIONS = RunOptions


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True, script=__file__)
    return cli.run(parser, OPTIONS, argv, run_command)


if __name__ == "__main__":
    raise SystemExit(main())
