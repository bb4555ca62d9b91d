#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = ["requests>=2.28,<3", "python-dotenv>=1.0,<2"]
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

output (stdout, JSON): job, job_id, submitted (resumed, this_run {uploaded, created, found},
chunks), status, request_counts, batches, next, finished (only without --wait while the
job runs: false), (once finished, or with --wait, also the fields of fetch_results.py's
report:) complete, requests, succeeded, failed, missing, output, errors, format,
failed_sample, missing_sample, unexpected, usage, cost, warnings, unsubmitted (only when a
chunk has no batch), unreachable (only when a batch is gone from the server). Exit codes as fetch_results.py
(0 all succeeded; 5 finished with failed or missing requests: next is retry_failed.py; 6
--wait timed out); without --wait an unfinished job exits 0."""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import fetch_results
from _dwbatches import clock, commands, download, fetch, jobstatus, output
from _dwbatches.cli import add_submit_args
from _dwbatches.config import load_config
from _dwbatches.errors import EXIT_OK, JobError, UsageError
from _dwbatches.http import Client
from _dwbatches.job import Job, default_job_dir, recorded_server
from _dwbatches.planning import open_job, parse_metadata, validate_input
from _dwbatches.submitter import Submitter
from _dwbatches.validate import MAX_FILE_BYTES, MAX_REQUESTS_PER_FILE


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True)
    parser.add_argument("input", metavar="INPUT.jsonl", help="the batch file (see create_batch_file.py)")
    g = parser.add_argument_group("submit (as submit.py)")
    add_submit_args(g)
    g = parser.add_argument_group("waiting")
    g.add_argument("--wait", action="store_true", help="wait for the batches and fetch the results")
    g.add_argument("--interval", type=float, default=30.0, metavar="SECONDS",
                   help="seconds between checks (default 30)")
    g.add_argument("--timeout", type=float, default=540.0, metavar="SECONDS",
                   help="stop waiting after this many seconds, exit 6 (default 540)")
    fetch_results.add_output_arguments(parser)
    args = output.parse_args(parser, argv)

    def body() -> int:
        for name in ("max_requests", "max_bytes"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if args.interval <= 0 or args.timeout < 0:
            raise UsageError("--interval must be > 0 and --timeout >= 0")
        if not os.path.isfile(args.input):
            raise UsageError(f"{args.input}: no such file", hint="Pass the path of a JSONL batch file.")
        if args.csv and not os.path.isfile(args.csv):
            raise UsageError(f"{args.csv}: no such file", hint="--csv names the original CSV file.")
        metadata = parse_metadata(args.metadata)
        job_url, insecure = recorded_server(args.job or default_job_dir(args.input))
        cfg = load_config(args.base_url, args.allow_insecure_http, job_url=job_url, job_allows_insecure_http=insecure)
        client = Client(cfg)
        job, submitted = submit(args, cfg, client, metadata)
        doc: Dict[str, Any] = {"job": job.dir, "job_id": job.record.job_id, "submitted": submitted}
        rerun = rerun_command(args, job)

        if not args.wait:
            summary, summaries = check(client, job)
            if not summary["finished"]:
                doc.update(status=summary["status"], finished=False, request_counts=summary["request_counts"],
                           batches=summaries, next=rerun)
                output.narrate(f"next: {rerun}")
                output.emit(doc)
                return EXIT_OK
        else:
            wait(client, job, args.interval, args.timeout)

        with job:
            job.load()
            fetched = fetch.fetch_job(client, job, fmt=args.format, out=args.output, err=args.errors,
                                        csv_path=args.csv, column=args.column)
        doc.update(fetched)
        doc["next"] = fetch_results.next_for(doc, job, [], fetch_results.output_args(args))
        if doc["exit_code"] == 6 and not doc.get("unsubmitted"):
            doc["next"] = rerun
        fetch_results.narrate_summary(doc)
        return fetch_results.finish(doc)

    return output.run(body)


def submit(args: Any, cfg: Any, client: Any, metadata: Dict[str, str]) -> Tuple[Job, Dict[str, Any]]:
    job = Job(os.path.abspath(args.job or default_job_dir(args.input)))
    max_requests = args.max_requests or MAX_REQUESTS_PER_FILE
    max_bytes = args.max_bytes or MAX_FILE_BYTES
    report = None if job.exists() else validate_input(args.input, max_requests, max_bytes, args.max_body_bytes)
    with job:
        resumed = open_job(job, args.input, base_url=cfg.base_url, completion_window=args.completion_window,
                           metadata=metadata, max_requests=args.max_requests, max_bytes=args.max_bytes,
                           max_body_bytes=args.max_body_bytes, report=report)
        if any((args.format, args.output, args.errors, args.csv, args.column)):
            fetch.remember_output(job, *fetch.resolve_output(job.record, args.format, args.output, args.errors,
                                                                 args.csv, args.column))
        sub = Submitter(job, client, max_cost=args.max_cost)
        sub.run()
    return job, {"resumed": resumed, "chunks": sum(1 for _ in job.record.chunks()),
                 "this_run": {"uploaded": sub.uploaded, "created": sub.created,
                              "found": sub.files_found + sub.batches_found}}


def check(client: Any, job: Job) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    job.load()
    targets = [t for t in jobstatus.job_targets(job.record) if t["batch_id"]]
    objs = jobstatus.get_batches(client, [t["batch_id"] for t in targets])
    summaries = [jobstatus.summarize_batch(objs[t["batch_id"]], t["round"], t["chunk"]) for t in targets]
    summary = jobstatus.job_status(summaries, job.record)
    jobstatus.record_status(job, objs)
    running = [b for b in objs.values() if not jobstatus.is_terminal(b.get("status"))]
    speed = jobstatus.rate_and_eta(running)
    output.narrate(jobstatus.progress_line(summary["request_counts"], summary["status"], speed["rate"],
                                     speed["eta_seconds"]))
    return summary, summaries


def wait(client: Any, job: Job, interval: float, timeout: float) -> None:
    """Poll until every batch ended or the timeout; download new lines between polls."""
    deadline = time.monotonic() + timeout
    checks = 0
    while True:
        summary, _ = check(client, job)
        if summary["finished"] or summary["status"] == "not_submitted":
            return
        try:
            job.lock(wait=2.0)
        except JobError:
            pass  # another process works on the job; it downloads for us
        else:
            try:
                job.load()
                download.update(client, download.JobStore(job), fetch.job_targets(job.record))
            finally:
                job.unlock()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            output.narrate("timed out waiting; partial results are saved")
            return
        checks += 1
        clock.sleep(min(jobstatus.wait_delay(checks, interval), remaining))


def rerun_command(args: Any, job: Job) -> str:
    extra: List[str] = [commands.display_path(args.input)]
    if args.job:
        extra += ["--job", commands.display_path(job.dir)]
    extra += ["--wait"] + fetch_results.output_args(args)
    return commands.command("run_batch.py", *extra)


if __name__ == "__main__":
    raise SystemExit(main())
