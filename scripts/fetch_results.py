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
