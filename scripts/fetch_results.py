#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = [
#   "requests>=2.32.4,<3",
#   "python-dotenv>=1.2.2,<2; python_version >= '3.10'",
#   "python-dotenv>=1.0,<2; python_version < '3.10'",
# ]
# ///
"""Download the results and errors of a job (or of batch ids), resumably, into files in input order.

Works while batches run (partial results) and after. Output and error files are streamed
with ?skip= from a cursor saved on disk only after the lines it covers are fsynced, so an
interrupted or repeated fetch continues where it stopped and never counts a line twice.
Results are deduplicated by custom_id and checked against the batch's request counts once it
has finished (a short file is read again from the start). All chunks and retry rounds are
merged into OUT in the order of the original input: the newest good answer per custom_id;
ERR gets the error line of every request without a good answer, plus a line with error code
"missing" for each request with no result at all ("missing: no result yet" while batches
run, "not run" after they ended, e.g. cancelled).

Every answer is checked: an HTTP 200 is good only when its answer is. answer_check is one of
good; empty (no text: a reasoning model that spent its whole max_tokens thinking gives this);
truncated (cut at the token limit: finish_reason length, a Responses result incomplete);
invalid_json (JSON mode or a schema was asked and the text does not parse as an object with
the schema's required fields); filtered (a content filter stopped it); failed; missing.
Answers that are not good count in answers, go to ERR (the server's line with error.code
set to the check), keep their text in OUT (ok false, error saying why), and make the exit 5;
fix says what rerun would fix them and why, and next is that retry_failed.py command.

examples:
  python3 scripts/fetch_results.py --job data.dwjob
  python3 scripts/fetch_results.py --job data.dwjob --format simple -o answers.jsonl
  python3 scripts/fetch_results.py --job reviews.dwjob --format csv      # job built from a CSV
  python3 scripts/fetch_results.py 6f1c2e0a-1b2c-4d5e-8f90-0123456789ab -o out.jsonl --input data.jsonl

Answers a job did not send (see submit.py: reused from an earlier job of the folder, or a
repeat of a request of this job) are merged like the others and say where they came from: in
raw lines dwb_reused {job, job_id, custom_id}, in simple lines reused (the same), in a CSV a
reused_from column (the job directory; empty for answers this job got itself).

formats: raw = the server's output lines ({id, custom_id, response{status_code, body}, error});
simple = one line per input request {custom_id, ok, answer_check, content, usage, error,
reused only for an answer not sent}
where content is the chat/completion text (never the reasoning), the Responses output text
or the embedding vector, and ok is true only for a good answer; csv = the original CSV
(--csv FILE, or the job's source) with new response, error and answer_check columns, each
answer on its own row even after the CSV was re-sorted or rows were added or deleted (rows
are matched by their --id-column, else by the prompt each makes); an
answer, error or prompt that starts like a spreadsheet formula (= + - @) gets a leading ' so
that a spreadsheet shows it as text (--raw-cells writes it as it is; the CSV's own cells are
never changed). Default:
csv for a job built from a CSV, else raw. OUT defaults to <input stem>.results.jsonl (.csv)
beside the input (for a job directory not named after its input, e.g. data.2.dwjob:
data.2.results.jsonl, so that two jobs of one input never share a file; a results file
another job remembers is never written over: exit 2); ERR to <OUT stem>.errors.jsonl. Without --job the download state lives in
OUT.dwstate.json (with its lock file OUT.dwstate.lock) and OUT.dwraw/ beside OUT; results are in order of first appearance unless
--input names the original batch input. Output settings given once for a job (format, -o,
--errors, --csv; also via run_batch.py) are remembered in job.json and reused by later
fetches that give none.

output (stdout, JSON): complete, status (job-level, see poll.py), request_counts, requests,
succeeded (good answers), failed, missing, answers (the HTTP 200 results by check: good,
empty, truncated, invalid_json, filtered), output, errors, format, failed_sample (up to 5
custom_id + error), missing_sample (up to 5 custom_ids), bad_answer_sample (up to 5
custom_id + answer_check + detail), fix (only when answers are not good: changes {model,
max_tokens, reasoning} for the rerun and reason, one sentence; null when a rerun would not
help), unexpected (results whose custom_id is not in the input), usage (requests,
input_tokens, output_tokens, reasoning_tokens of every answer received in every round, good
or not: each was billed; reasoning counts in the output tokens) and
cost (usd: what the job cost, the billed figure once the server reports one for every batch,
else the estimate; basis: which of the two, in words; billed_usd: the sum of the batches'
billed total_cost (their analytics), null until every batch has one; estimated_usd: the
tokens the server reported for every answer received x the price table; prices_as_of;
rounds [{round, completion_window, requests, input_tokens, output_tokens, reasoning_tokens,
billed_usd, estimated_usd, usd}]; amounts in dollars: cents from $1, two significant digits
below), batches_omitted (how many batches the report leaves out: at most 5 are listed and those that need attention come first; --all-batches lists every one), batches (batch_id, status, request_counts, output_file_id, error_file_id,
expires_at, expired_at when present, round, chunk, fetched {output, error}: how far into
each of the server's files the saved download reaches, in the server's line count (a line
the server sent twice counts once), new_lines {output, error}: the lines this run
downloaded (a line sent twice counts twice; results are matched by custom_id, so a repeat
is never a second result), verified), unreachable (only when a batch or its files are gone
from the server: batch_id, round, chunk, reason, results_lost: requests it completed whose
results were never downloaded; then next is null, as a retry would pay for them twice),
reuse (only for a job: null when it was submitted with --no-reuse, else sent, reused: answers
of earlier jobs, copies: repeats of a request of this job, from_jobs {job directory: answers},
saved_usd_low and saved_usd_high: the local estimate of what was not sent, saved_usd: what
those answers cost when they were got, their tokens priced for this job's window), warnings
(e.g. the job's input or source CSV changed since it was submitted), job (null for batch ids), state (only for batch ids: the state file),
hint (only for batch ids that finished unsuccessfully: how to rerun them), next.

Results come from the downloads saved in the job and are checked against them first: a
downloaded file that was deleted or cut short is downloaded again; when the job's input
changed or is gone, results follow the requests as submitted (read from the server's copy).
A batch the server no longer has (404) is reported in unreachable, and the other batches'
results are written all the same (exit 5).

Exit 0 = complete and every request succeeded; 5 = finished with failed or missing
requests (next: retry_failed.py, or null for a job the user cancelled); 6 = not finished
yet (partial results saved; next: poll.py for a job, whose next is this fetch once it has
finished; the same fetch again for batch ids)."""

from __future__ import annotations

from typing import Optional, Sequence

from _dwbatches.core import output
from _dwbatches.workflow import cli
from _dwbatches.workflow.fetching import FetchOptions, fetch_command

OPTIONS = FetchOptions


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True, script=__file__)
    return cli.run(parser, OPTIONS, argv, fetch_command)


if __name__ == "__main__":
    raise SystemExit(main())
