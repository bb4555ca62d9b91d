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
it, creates them. A different input in an existing job, or a different -w, is refused.

output (stdout, JSON): job (the job directory; pass it to the other scripts as --job),
job_id, batches_omitted (how many batches the report leaves out: at most 5 are listed and those that need attention come first; --all-batches lists every one), batches (batch_id, input_file_id, round, chunk, lines [first, last line of the
input], requests, status), requests, chunks,
completion_window, estimated_cost (usd = the headline estimate; basis = what usd is, "server: ..." when the
server estimated every chunk, else "price table: ..."; server_usd = the sum of the server's
estimates, which --max-cost compares (null before an upload); chunks_estimated and chunks;
low_usd and high_usd = the price-table range (high_usd null when a request sets no
max_tokens); input_tokens and output_tokens behind usd; prices_as_of; models; note; also on
stderr; null when nothing is known), reuse (null with --no-reuse, else sent, reused, copies, from_jobs,
saved_usd_low, saved_usd_high, saved_usd: null until the results are fetched; see fetch_results.py),
source (the CSV the input was built from, or null), resumed, this_run (uploaded, created, found), next (the command
to run next).

output with --dry-run (stdout, JSON): dry_run, job, job_exists, resumes_job, requests,
bytes, chunks, plan (the files submit.py would upload), completion_window, metadata,
models, endpoints, estimated_cost (the same fields, of the requests that would be sent; server_usd null: nothing is
sent), reuse (as above: what a new job would send and not send; null with --no-reuse or for a job
that would resume), warnings, next (the submit command; with --job NEW_DIR, a directory that
does not exist yet or holds this input's job, when the job directory holds another input's
job or a cancelled one, which the real run would refuse)."""

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
