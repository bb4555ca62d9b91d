#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = ["requests>=2.28,<3", "python-dotenv>=1.0,<2"]
# ///
"""Cancel batches (by id, or every running batch of a job) without touching finished ones.

The status of each batch is checked first: a batch that already completed, failed or was
cancelled is skipped with a note (the server would otherwise flip a completed batch to
cancelled). Requests already finished stay downloadable; in-flight ones may still complete.
Every id is looked up before anything is cancelled, so a mistyped id cancels nothing.
Never prompts.

examples:
  python3 scripts/cancel_batch.py --job data.dwjob
  python3 scripts/cancel_batch.py 6f1c2e0a-1b2c-4d5e-8f90-0123456789ab --dry-run

Afterwards, fetch_results.py keeps everything that finished, and retry_failed.py --job
runs the requests that never ran (nothing finished is redone).

output (stdout, JSON): batches (batch_id, action = cancelled | skipped | would_cancel,
status, request_counts, reason), cancelled, skipped, would_cancel (only with --dry-run),
unsubmitted (only when chunks of the job have no batch), job, next."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from _dwbatches import commands, jobstatus, output
from _dwbatches import job as job_mod
from _dwbatches.config import load_config
from _dwbatches.errors import EXIT_OK, UsageError
from _dwbatches.http import Client, check_id
from _dwbatches.job import recorded_server


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True)
    parser.add_argument("batch_ids", nargs="*", metavar="BATCH_ID", help="batch ids (or use --job)")
    parser.add_argument("--job", metavar="DIR", help="cancel the running batches of this job")
    parser.add_argument("--dry-run", action="store_true", help="show what would be cancelled; cancel nothing")
    args = output.parse_args(parser, argv)

    def body() -> int:
        if bool(args.job) == bool(args.batch_ids):
            raise UsageError("pass either batch ids or --job DIR", hint="e.g. " + commands.command("cancel_batch.py", "--job", "data.dwjob"))
        job_url, insecure = recorded_server(args.job)
        client = Client(load_config(args.base_url, args.allow_insecure_http, job_url=job_url,
                                    job_allows_insecure_http=insecure))
        job = None
        unsubmitted: List[Dict[str, Any]] = []
        if args.job:
            job = job_mod.open_job(args.job)
            job_mod.check_server(job, client.base_url)
            if not args.dry_run:
                # recorded first, without the lock: a submit running now creates no further batch
                job.request_cancel()
            targets = jobstatus.job_targets(job.record)
            ids = [t["batch_id"] for t in targets if t["batch_id"]]
            unsubmitted = [{"round": t["round"], "chunk": t["chunk"], "held": t["held"]}
                           for t in targets if not t["batch_id"]]
        else:
            ids = list(dict.fromkeys(check_id(b, "batch") for b in args.batch_ids))
        current = jobstatus.get_batches(client, ids)  # all looked up before anything is cancelled
        rows: List[Dict[str, Any]] = []
        after: Dict[str, Dict[str, Any]] = {}
        for bid in ids:
            b = current[bid]
            status = b.get("status")
            row: Dict[str, Any] = {"batch_id": bid}
            c0 = job_mod.counts_of(b)
            all_done = c0["total"] > 0 and c0["completed"] + c0["failed"] >= c0["total"]
            if jobstatus.is_terminal(status) or status == "finalizing" or all_done:
                why = status if jobstatus.is_terminal(status) else f"{status}, every request done"
                row.update(action="skipped", status=status, request_counts=c0,
                           reason=f"already {why}; cancelling a finished batch would only relabel it cancelled")
                output.narrate(f"batch {bid}: skipped (already {why})")
            elif args.dry_run:
                row.update(action="would_cancel", status=status, request_counts=job_mod.counts_of(b))
                output.narrate(f"batch {bid}: would cancel ({status})")
            else:
                res = client.cancel_batch(bid)
                after[bid] = res
                row.update(action="cancelled", status=res.get("status"), request_counts=job_mod.counts_of(res))
                c = job_mod.counts_of(res)
                output.narrate(f"batch {bid}: cancelled ({res.get('status')}; {c['completed']} completed, "
                               f"{c['failed']} failed of {c['total']} are kept)")
            rows.append(row)
        if job is not None and after:
            jobstatus.record_status(job, after)
        if unsubmitted:
            output.narrate(f"{len(unsubmitted)} chunk(s) of the job have no batch yet; nothing to cancel there "
                           "(do not resume the submit if you want them to stay unsent)")
        doc: Dict[str, Any] = {
            "batches": rows,
            "cancelled": sum(1 for r in rows if r["action"] == "cancelled"),
            "skipped": sum(1 for r in rows if r["action"] == "skipped"),
        }
        if args.dry_run:
            doc["would_cancel"] = sum(1 for r in rows if r["action"] == "would_cancel")
        if unsubmitted:
            doc["unsubmitted"] = unsubmitted
        doc["job"] = job.dir if job is not None else None
        target = commands.target_args(job.dir if job is not None else None, ids)
        doc["next"] = commands.command("fetch_results.py", *target) if ids else None
        output.emit(doc)
        return EXIT_OK

    return output.run(body)


if __name__ == "__main__":
    raise SystemExit(main())
