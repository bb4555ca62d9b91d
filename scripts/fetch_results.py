#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = ["requests>=2.28,<3", "python-dotenv>=1.0,<2"]
# ///
"""Download the results and errors of a job (or of batch ids), resumably, into files in input order.

Works while batches run (partial results) and after. Output and error files are streamed
with ?skip= from a cursor saved on disk only after the lines it covers are fsynced, so an
interrupted or repeated fetch continues where it stopped and never counts a line twice.
Results are deduplicated by custom_id and checked against the batch's request counts once it
has finished (a short file is read again from the start). All chunks and retry rounds are
merged into OUT in the order of the original input: the newest success per custom_id; ERR
gets the error line of every request without a success, plus a line with error code
"missing" for each request with no result at all ("missing: no result yet" while batches
run, "not run" after they ended, e.g. cancelled).

examples:
  python3 scripts/fetch_results.py --job data.dwjob
  python3 scripts/fetch_results.py --job data.dwjob --format simple -o answers.jsonl
  python3 scripts/fetch_results.py --job reviews.dwjob --format csv      # job built from a CSV
  python3 scripts/fetch_results.py 6f1c2e0a-1b2c-4d5e-8f90-0123456789ab -o out.jsonl --input data.jsonl

formats: raw = the server's output lines ({id, custom_id, response{status_code, body}, error});
simple = one line per input request {custom_id, ok, content, usage, error} where content is
the chat/completion text, the Responses output text or the embedding vector; csv = the
original CSV (--csv FILE, or the job's source) with new response and error columns. Default:
csv for a job built from a CSV, else raw. OUT defaults to <input stem>.results.jsonl (.csv)
beside the input; ERR to <OUT stem>.errors.jsonl. Without --job the download state lives in
OUT.dwstate.json (with its lock file OUT.dwstate.lock) and OUT.dwraw/ beside OUT; results are in order of first appearance unless
--input names the original batch input. Output settings given once for a job (format, -o,
--errors, --csv; also via run_batch.py) are remembered in job.json and reused by later
fetches that give none.

output (stdout, JSON): complete, status (job-level, see poll.py), request_counts, requests,
succeeded, failed, missing, output, errors, format, failed_sample (up to 5 custom_id +
error), missing_sample (up to 5 custom_ids), unexpected (results whose custom_id is not in
the input), usage (requests, input_tokens, output_tokens of the successful results) and
cost (usd, prices_as_of, basis, rounds [{round, completion_window, requests, input_tokens,
output_tokens, usd}]: what the results cost, from the server's token counts and the price
table), batches (batch_id, status, request_counts, fetched {output, error} lines,
new_lines, verified), unreachable (only when a batch or its files are gone from the server:
batch_id, round, chunk, reason), warnings (e.g. the job's input or source CSV changed since
it was submitted), job (null for batch ids), state (only for batch ids: the state file),
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

import os
from typing import Any, Dict, List, Optional, Sequence

from _dwbatches import commands, fetch, merge, output
from _dwbatches import job as job_mod
from _dwbatches.config import load_config
from _dwbatches.errors import EXIT_NOT_FINISHED, EXIT_UNSUCCESSFUL, UsageError
from _dwbatches.http import Client, check_id
from _dwbatches.job import recorded_server


def add_output_arguments(parser: Any) -> None:
    g = parser.add_argument_group("results")
    g.add_argument("-o", "--output", metavar="OUT", help="merged results file (default: <input stem>.results.jsonl "
                                                          "beside the input; .csv for --format csv)")
    g.add_argument("--errors", metavar="ERR", help="errors file (default: <OUT stem>.errors.jsonl)")
    g.add_argument("--format", choices=merge.FORMATS, default=None,
                   help="raw (server lines), simple (custom_id, ok, content, usage, error) or csv: the "
                        "original CSV with answer and error columns for a job built from a CSV, else one row per "
                        "request (custom_id, prompt, answer, error) (default: csv for a job built from a CSV, "
                        "else raw)")
    g.add_argument("--csv", metavar="FILE", help="the original CSV, for --format csv (default: the job's source)")
    g.add_argument("--column", metavar="NAME", help="--format csv: the name of the answer column (default: response)")


def output_args(args: Any, with_input: bool = False) -> List[str]:
    """The result options the user gave, to repeat them in `next` commands."""
    out: List[str] = []
    for flag, value in (("-o", args.output), ("--errors", args.errors), ("--format", args.format),
                        ("--csv", args.csv), ("--column", args.column),
                        ("--input", args.input if with_input else None)):
        if value:
            out += [flag, commands.display_path(value) if flag not in ("--format", "--column") else value]
    return out


def next_for(doc: Dict[str, Any], job: Any, batch_ids: Sequence[str], extra: Sequence[str]) -> Optional[str]:
    code = doc["exit_code"]
    target = commands.target_args(job.dir if job is not None else None, batch_ids)
    if code == EXIT_UNSUCCESSFUL:
        if job is None or job.record.cancel is not None:
            return None  # a cancelled job is not rerun unless the user asks (retry_failed.py)
        return commands.command("retry_failed.py", *target)
    if code == EXIT_NOT_FINISHED:
        if job is not None and doc.get("unsubmitted"):
            return commands.resume_command(job.record, job.dir)
        if job is None:  # bare ids: this fetch again (it remembers nothing, so the options go along)
            return commands.command("fetch_results.py", *target, *extra)
        return commands.command("poll.py", *target)  # one check; its next is the fetch once finished
    return None


def narrate_summary(doc: Dict[str, Any]) -> None:
    if "succeeded" not in doc:
        return
    text = f"{doc['succeeded']}/{doc['requests']} succeeded"
    if doc["failed"]:
        text += f", {doc['failed']} failed"
    if doc["missing"]:
        text += f", {doc['missing']} without a result"
    text += f" ({doc['status']}); results: {commands.display_path(doc['output'])}"
    cost, usage = doc.get("cost") or {}, doc.get("usage") or {}
    if cost.get("usd") is not None and usage.get("requests"):
        text += (f"; cost ${cost['usd']} ({usage['input_tokens']} input + {usage['output_tokens']} output tokens, "
                 f"prices of {cost['prices_as_of']})")
    if doc["failed"] or doc["missing"]:
        text += f"; errors: {commands.display_path(doc['errors'])}"
    output.narrate(text)
    if doc.get("next"):
        output.narrate(f"next: {doc['next']}")


def finish(doc: Dict[str, Any]) -> int:
    code = doc.pop("exit_code")
    output.emit(doc)
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True)
    parser.add_argument("batch_ids", nargs="*", metavar="BATCH_ID", help="batch ids (or use --job)")
    parser.add_argument("--job", metavar="DIR", help="the job directory made by submit.py / run_batch.py")
    add_output_arguments(parser)
    parser.add_argument("--input", metavar="FILE",
                        help="with batch ids: the original batch input, for input order and missing requests")
    args = output.parse_args(parser, argv)

    def body() -> int:
        if bool(args.job) == bool(args.batch_ids):
            raise UsageError("pass either batch ids or --job DIR", hint="e.g. " + commands.command("fetch_results.py", "--job", "data.dwjob"))
        if args.input and not os.path.isfile(args.input):
            raise UsageError(f"{args.input}: no such file", hint="--input names the original batch JSONL file.")
        if args.csv and not os.path.isfile(args.csv):
            raise UsageError(f"{args.csv}: no such file", hint="--csv names the original CSV file.")
        job_url, insecure = recorded_server(args.job)
        cfg = load_config(args.base_url, args.allow_insecure_http, job_url=job_url, job_allows_insecure_http=insecure)
        client = Client(cfg)
        extra = output_args(args, with_input=True)
        if args.job:
            if args.input:
                raise UsageError("--input is only for batch ids; a job knows its input")
            job = job_mod.open_job(args.job)
            job_mod.check_server(job, client.base_url)
            with job:
                job.load()
                doc = fetch.fetch_job(client, job, fmt=args.format, out=args.output, err=args.errors,
                                        csv_path=args.csv, column=args.column)
            doc["next"] = next_for(doc, job, [], extra)
        else:
            ids = list(dict.fromkeys(check_id(b, "batch") for b in args.batch_ids))
            fmt = args.format or ("csv" if args.csv else "raw")
            out = args.output or f"{ids[0]}.results.{'csv' if fmt == 'csv' else 'jsonl'}"
            doc = fetch.fetch_bare(client, ids, out, args.errors, fmt, input_path=args.input, csv_path=args.csv,
                                     column=args.column)
            doc["next"] = next_for(doc, None, ids, extra if args.output else extra + ["-o", out])
            if doc["exit_code"] == EXIT_UNSUCCESSFUL:
                doc["hint"] = ("the failed and missing requests are listed in the errors file; to rerun them "
                               "automatically, submit with submit.py / run_batch.py (a job) and use retry_failed.py")
        narrate_summary(doc)
        return finish(doc)

    return output.run(body)


if __name__ == "__main__":
    raise SystemExit(main())
