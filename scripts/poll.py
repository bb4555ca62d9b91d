#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = ["requests>=2.28,<3", "python-dotenv>=1.0,<2"]
# ///
"""Check the status of a job's batches (or of batch ids): once by default, or --wait until they end.

One status check and an immediate answer by default: record the job directory, leave, and
come back later (a later conversation can run the same command). --wait polls politely
(after 2, 5 and 10 s, then every --interval seconds) until every batch is terminal or --timeout passes; the default
timeout stays below common 10-minute tool limits. With --job the last-known status and
counts are recorded in job.json (skipped without complaint while another process holds the
job's lock, or when the job directory cannot be written: a read-only job is still reported).

examples:
  python3 scripts/poll.py --job data.dwjob
  python3 scripts/poll.py --job data.dwjob --wait --timeout 540
  python3 scripts/poll.py 6f1c2e0a-1b2c-4d5e-8f90-0123456789ab

job status: not_submitted (a chunk has no batch yet: run `next`), in_progress (a batch is
still validating/in_progress/finalizing/cancelling), completed (every request succeeded),
partially_failed (batches completed, some requests failed), failed / cancelled / expired
(every deciding batch ended so), mixed (they ended differently). For a job with retry
rounds the latest round decides, and request_counts count each input request once
(completed over all rounds, failed as of the latest round). Terminal batch statuses:
completed, failed, cancelled, and expired (accepted if the server ever sends it).

output (stdout, JSON): status, finished, request_counts {total, completed, failed}, batches
(batch_id, status, request_counts, output_file_id, error_file_id, expires_at, expired_at
when present, round, chunk), unsubmitted (chunks without a batch), rate (requests/s),
eta_seconds, timed_out, job, next (the command to run next). stderr: counts, rate and ETA.
Exit 0 = reported (finished with every request succeeded, or not finished without --wait);
5 = finished unsuccessfully: a batch ended failed, cancelled or expired, or requests failed
or never ran (as fetch_results.py); 6 = --wait timed out (or nothing to wait for: the job is
not fully submitted)."""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from _dwbatches import clock, commands, jobstatus, output
from _dwbatches import job as job_mod
from _dwbatches.config import load_config
from _dwbatches.errors import EXIT_NOT_FINISHED, EXIT_OK, EXIT_UNSUCCESSFUL, FileSystemError, UsageError
from _dwbatches.http import Client, check_id
from _dwbatches.job import recorded_server


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True)
    parser.add_argument("batch_ids", nargs="*", metavar="BATCH_ID", help="batch ids (or use --job)")
    parser.add_argument("--job", metavar="DIR", help="the job directory made by submit.py / run_batch.py")
    parser.add_argument("--wait", action="store_true", help="poll until every batch is terminal or --timeout")
    parser.add_argument("--interval", type=float, default=30.0, metavar="SECONDS",
                        help="seconds between checks with --wait (default 30)")
    parser.add_argument("--timeout", type=float, default=540.0, metavar="SECONDS",
                        help="give up waiting after this many seconds, exit 6 (default 540)")
    args = output.parse_args(parser, argv)

    def body() -> int:
        if bool(args.job) == bool(args.batch_ids):
            raise UsageError("pass either batch ids or --job DIR", hint="e.g. " + commands.command("poll.py", "--job", "data.dwjob"))
        if args.interval <= 0 or args.timeout < 0:
            raise UsageError("--interval must be > 0 and --timeout >= 0")
        job_url, insecure = recorded_server(args.job)
        cfg = load_config(args.base_url, args.allow_insecure_http, job_url=job_url, job_allows_insecure_http=insecure)
        client = Client(cfg)
        job = None
        ids: List[str] = []
        if args.job:
            job = job_mod.open_job(args.job)
            job_mod.check_server(job, client.base_url)
        else:
            ids = list(dict.fromkeys(check_id(b, "batch") for b in args.batch_ids))
        doc, code = poll(client, job, ids, wait=args.wait, interval=args.interval, timeout=args.timeout)
        output.emit(doc)
        return code

    return output.run(body)


def poll(client: Any, job: Any, batch_ids: Sequence[str], wait: bool, interval: float,
         timeout: float) -> Tuple[Dict[str, Any], int]:
    deadline = time.monotonic() + timeout
    prev = None  # (done, monotonic time) of the previous check
    checks = 0
    while True:
        if job is not None:
            job.load()
            targets = [t for t in jobstatus.job_targets(job.record) if t["batch_id"]]
            ids = [t["batch_id"] for t in targets]
        else:
            targets = [{"batch_id": b, "round": None, "chunk": None} for b in batch_ids]
            ids = list(batch_ids)
        objs = jobstatus.get_batches(client, ids)
        summaries = [jobstatus.summarize_batch(objs[t["batch_id"]], t["round"], t["chunk"]) for t in targets]
        summary = jobstatus.job_status(summaries, job.record if job is not None else None)
        running = [objs[b] for b in ids if not jobstatus.is_terminal(objs[b].get("status"))]
        done_now = sum(job_mod.counts_of(b)["completed"] + job_mod.counts_of(b)["failed"] for b in running)
        observed = None
        now = time.monotonic()
        if prev is not None and done_now > prev[0] and now > prev[1]:
            observed = (done_now - prev[0]) / (now - prev[1])
        prev = (done_now, now)
        speed = jobstatus.rate_and_eta(running, observed=observed)
        output.narrate(jobstatus.progress_line(summary["request_counts"], summary["status"], speed["rate"],
                                         speed["eta_seconds"]))
        if job is not None and objs:
            try:
                jobstatus.record_status(job, objs)
            except (OSError, FileSystemError):
                pass  # a job directory that cannot be written (read-only disk, another user's) is still reported
        if summary["finished"] or not wait or summary["status"] == "not_submitted":
            timed_out = False
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        checks += 1
        clock.sleep(min(jobstatus.wait_delay(checks, interval), remaining))

    doc: Dict[str, Any] = {
        "status": summary["status"],
        "finished": summary["finished"],
        "request_counts": summary["request_counts"],
        "batches": summaries,
    }
    doc["unsubmitted"] = summary["unsubmitted"]
    doc["rate"] = round(speed["rate"], 3) if speed["rate"] else None
    doc["eta_seconds"] = speed["eta_seconds"]
    doc["timed_out"] = timed_out
    doc["job"] = job.dir if job is not None else None
    target = commands.target_args(job.dir if job is not None else None, batch_ids)
    if summary["status"] == "not_submitted" and job is not None:
        doc["next"] = commands.resume_command(job.record, job.dir)
    elif summary["finished"]:
        doc["next"] = commands.command("fetch_results.py", *target, *remembered_output(job))
    else:
        doc["next"] = commands.command("poll.py", *target)
    if doc["next"]:
        output.narrate(f"next: {doc['next']}")
    if summary["finished"]:
        code = EXIT_UNSUCCESSFUL if unsuccessful(summary) else EXIT_OK
    elif wait:
        code = EXIT_NOT_FINISHED
    else:
        code = EXIT_OK
    return doc, code


def unsuccessful(summary: Dict[str, Any]) -> bool:
    """Finished, but not every request succeeded: a batch ended badly, or requests failed or
    never ran (the same rule as fetch_results.py's exit 5)."""
    counts = summary["request_counts"]
    return bool(summary["ended_badly"] or counts["failed"] or counts["completed"] < counts["total"])


def remembered_output(job: Any) -> List[str]:
    """The output options the job remembers, so that the fetch `next` names writes them."""
    res = job.record.results if job is not None else None
    if res is None or not res.format:
        return []
    args = ["--format", res.format]
    if res.output:
        args += ["-o", commands.display_path(res.output)]
    return args


if __name__ == "__main__":
    raise SystemExit(main())
