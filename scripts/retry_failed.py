#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = [
#   "requests>=2.32.4,<3",
#   "python-dotenv>=1.2.2,<2; python_version >= '3.10'",
#   "python-dotenv>=1.0,<2; python_version < '3.10'",
# ]
# ///
"""Rerun what did not give a good answer in a job, as a new round of the same job: requests
that failed or never ran, and answers that are not answers (empty, cut at the token limit,
not the JSON asked for), optionally with new settings (-m, --max-tokens, --reasoning).

First brings the job's results up to date (the same engine as fetch_results.py), then copies
every request without a good answer from what was submitted (the original input, or the
server's copy of it when the local file changed or is gone), in input order, into
<job>/rounds/round-N.jsonl and submits it through the same engine as submit.py. Nothing with
a good answer is sent again. Safe to run again after a crash or timeout: a round that was
recorded but not fully submitted is resumed, never submitted twice. Refuses (exit 6) while
batches of the job are still running: run poll.py --job DIR --wait first.

What it reruns (--rerun, comma-separated): failed, missing, empty, truncated, invalid_json,
filtered; by default all but filtered (a filtered answer would be filtered again). New
settings apply to every request rerun, in this round and the job's later retries (the round
records them): another model (-m), another token limit (--max-tokens: the reasoning of a
reasoning model counts against it), another reasoning effort (--reasoning none switches
thinking off where the model allows it). Answers cut at their token limit are not rerun
unchanged (exit 2): they would be cut again; the hint gives the fix. fetch_results.py prints
the fix for a job's bad answers in its next command, with the reason in its fix field.

After a cancel (cancel_batch.py --job) the retry is refused (exit 2), --dry-run too: the user
stopped that work, and the job's next step is fetching what finished. Only when the user
wants the rest run anyway add --after-cancel.

examples:
  python3 scripts/retry_failed.py --job data.dwjob
  python3 scripts/retry_failed.py --job data.dwjob --dry-run     # count, write and send nothing
  python3 scripts/retry_failed.py --job data.dwjob --reasoning none      # empty answers of a reasoning model
  python3 scripts/retry_failed.py --job data.dwjob --max-tokens 2000     # cut answers
  python3 scripts/retry_failed.py --job data.dwjob --rerun failed,missing -w 1h

Requests that failed with a client error (HTTP 4xx) may fail again: a malformed request or a
model not allowed does, a refusal of the moment (a limit) may not; their count is shown on stderr. Afterwards poll the job and fetch the
results as usual: fetch_results.py merges all rounds (the newest good answer of each request).

Exit 0 = submitted, or nothing to retry; 2 = the job was cancelled (without
--after-cancel), cut answers asked to rerun unchanged, or settings the model cannot take; 6
= batches still running, or the job is not fully submitted (see next)."""

from __future__ import annotations

from typing import Optional, Sequence

from _dwbatches.core import output
from _dwbatches.workflow import cli
from _dwbatches.workflow.retrying import RetryCommand, retry_command

OPTIONS = RetryCommand


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True, script=__file__)
    return cli.run(parser, OPTIONS, argv, retry_command)


if __name__ == "__main__":
    raise SystemExit(main())
