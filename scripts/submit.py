#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = ["requests>=2.28,<3", "python-dotenv>=1.0,<2"]
# ///
"""Validate a batch JSONL file, split it into server-sized chunks, upload them and create one batch each.

Validates first (nothing is sent if any line is bad), then uploads each chunk (at most
--max-requests requests and --max-bytes bytes) as a byte range of the input and creates its
batch. Progress is remembered in a job directory (default: INPUT.dwjob beside the input), so
running the same command again resumes: it finishes what is missing and never uploads or
creates anything twice, even after a crash or a killed process. Run it again after any
error, timeout or interruption.

examples:
  python3 scripts/submit.py requests.jsonl
  python3 scripts/submit.py requests.jsonl --dry-run          # plan and local cost estimate, no network
  python3 scripts/submit.py requests.jsonl -w 1h --metadata project=reviews
  python3 scripts/submit.py requests.jsonl --max-cost 5       # create nothing if the estimate is over $5

--max-cost: the files are uploaded and the server's estimate is summed; when it is over the
limit no batch is created (exit 2) and running again with a higher --max-cost, or without
it, creates them. A different input in an existing job, or a different -w, is refused.

output (stdout, JSON): job (the job directory; pass it to the other scripts as --job),
job_id, batches (batch_id, input_file_id, chunk, requests, status), requests, chunks,
completion_window, estimated_cost (usd = the server's estimate, which --max-cost compares;
local_low_usd and local_high_usd = the price-table range; note), source (the CSV the input
was built from, or null), resumed, this_run (uploaded, created, found), next (the command
to run next).

output with --dry-run (stdout, JSON): dry_run, job, job_exists, resumes_job, requests,
bytes, chunks, plan (the files submit.py would upload), completion_window, metadata,
models, endpoints, estimated_cost (low and high: usd, input_tokens, output_tokens, basis;
source; models), warnings, next (the submit command)."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence

from _dwbatches import output, pricing
from _dwbatches.cli import add_submit_args
from _dwbatches.cost import local_estimate
from _dwbatches.errors import EXIT_OK, DWError, UsageError
from _dwbatches.job import Job, default_job_dir, recorded_server, sha256_file
from _dwbatches.planning import job_report, open_job, parse_metadata, validate_input
from _dwbatches.submitter import Submitter
from _dwbatches.validate import MAX_FILE_BYTES, MAX_REQUESTS_PER_FILE


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True)
    parser.add_argument("input", metavar="INPUT.jsonl", help="the batch file (see create_batch_file.py)")
    add_submit_args(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="validate, plan and estimate locally; send nothing (no key needed)")
    args = output.parse_args(parser, argv)

    def body() -> int:
        for name in ("max_requests", "max_bytes"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if args.max_cost is not None and args.max_cost < 0:
            raise UsageError("--max-cost must not be negative")
        if not os.path.isfile(args.input):
            raise UsageError(f"{args.input}: no such file", hint="Pass the path of a JSONL batch file.")
        metadata = parse_metadata(args.metadata)
        job_dir = os.path.abspath(args.job or default_job_dir(args.input))
        job = Job(job_dir)
        max_requests = args.max_requests or MAX_REQUESTS_PER_FILE
        max_bytes = args.max_bytes or MAX_FILE_BYTES

        report = None
        if args.dry_run or not job.exists():
            report = validate_input(args.input, max_requests, max_bytes, args.max_body_bytes)
        if args.dry_run:
            return dry_run(args, report, job, metadata)

        from _dwbatches import config
        from _dwbatches.commands import command, display_path
        from _dwbatches.http import Client
        job_url, insecure = recorded_server(job_dir)
        cfg = config.load_config(args.base_url, args.allow_insecure_http, job_url=job_url,
                                 job_allows_insecure_http=insecure)
        with job:
            resumed = open_job(job, args.input, base_url=cfg.base_url, completion_window=args.completion_window,
                               metadata=metadata, max_requests=args.max_requests, max_bytes=args.max_bytes,
                               max_body_bytes=args.max_body_bytes, report=report)
            sub = Submitter(job, Client(cfg), max_cost=args.max_cost)
            sub.run()
            if resumed:
                sub.refresh()
            doc: Dict[str, Any] = job_report(job)
        doc["resumed"] = resumed
        doc["this_run"] = {"uploaded": sub.uploaded, "created": sub.created,
                           "found": sub.files_found + sub.batches_found}
        if resumed and not sub.uploaded and not sub.created and not sub.files_found and not sub.batches_found:
            output.narrate("every chunk was already submitted; nothing to do")
        doc["next"] = command("poll.py", "--job", display_path(job.dir))
        output.narrate(f"next: {doc['next']}")
        output.emit(doc)
        return EXIT_OK

    return output.run(body)


def dry_run(args: Any, report: Any, job: Job, metadata: Dict[str, str]) -> int:
    from _dwbatches.commands import command, display_path
    window = args.completion_window or "24h"
    plan = []
    for c in report.chunks:
        d = c.as_dict()
        d["endpoint"] = c.endpoint
        plan.append(d)
    estimate = local_estimate(report, window)
    cmd = [display_path(args.input)]
    if args.completion_window:
        cmd += ["-w", args.completion_window]
    for pair in args.metadata:
        cmd += ["--metadata", pair]
    for flag, value in (("--job", args.job), ("--max-requests", args.max_requests), ("--max-bytes", args.max_bytes),
                        ("--max-cost", args.max_cost)):
        if value is not None:
            cmd += [flag, str(value)]
    resumes = None
    if job.exists():  # a local read only: would the real run resume this job?
        try:
            resumes = job.load().input.sha256 == sha256_file(args.input)
        except DWError as exc:
            output.narrate(f"the job at {job.dir} is not readable: {exc.message}")
            resumes = False
        if resumes is False:
            output.narrate(f"note: the job at {display_path(job.dir)} was started with different input; "
                           "the real run would refuse it (use --job NEW_DIR)")
    doc = {"dry_run": True, "job": job.dir, "job_exists": job.exists(), "resumes_job": resumes,
           "requests": report.requests,
           "bytes": report.bytes, "chunks": len(plan), "plan": plan, "completion_window": window,
           "metadata": metadata, "models": report.models, "endpoints": report.endpoints,
           "estimated_cost": estimate, "warnings": report.warnings, "next": command("submit.py", *cmd)}
    low, high = estimate["low"]["usd"], estimate["high"]["usd"]
    cost = ""
    if low is not None:
        cost = f"; about ${low} to ${high}" if high is not None else f"; at least about ${low} (no max_tokens bound)"
        cost += f" ({window}, local estimate from the price table of {pricing.PRICES_AS_OF})"
    output.narrate(f"dry run: {report.requests} requests in {len(plan)} chunk(s); nothing was sent{cost}")
    output.emit(doc)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
