"""Running: submit (or resume), then check once, or wait and download as results come, then fetch.

run_batch.py in one function. Without ``wait`` an unfinished job is reported after one check
(its `next` is the same command with --wait); with ``wait`` the batches are checked until they
end or ``timeout`` passes (partial results are downloaded between checks, every other check
and only for batches with new results, when the job is free), and then the results are fetched
as fetch_results.py would.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from ..core import commands
from ..core.errors import EXIT_NOT_FINISHED, EXIT_OK
from ..core.optiongroups import Wait
from ..core.optionspec import group, option, to_argv
from ..core.output import Outcome, narrate
from ..jobs.job import Job
from ..jobs.jobrecord import counts_of
from ..results import download, fetch
from .checking import Check, check_once, wait_until_done
from .common import Connection, client_for, when_free
from .fetching import RESULTS, OutputOptions, fetch_job
from .submitting import INPUT_HELP, SubmitOptions, job_report, narrate_estimate, submit_or_resume

if TYPE_CHECKING:  # annotations only
    from ..core.http import Client


@dataclass
class RunOptions:
    """run_batch.py's input and options: submit.py's, the wait flags and fetch_results.py's
    output options (each field is also its flag, ``optionspec``)."""

    input: Optional[str] = option("INPUT.jsonl", positional=True, show=commands.display_path, help=INPUT_HELP)
    waiting: Wait = group(Wait, title="waiting")  # (first: the command written again starts INPUT --wait)
    submit: SubmitOptions = group(SubmitOptions, title="submit (as submit.py)")
    output: OutputOptions = group(OutputOptions, title=RESULTS)


def run_command(options: RunOptions, conn: Connection) -> Outcome:
    """run_batch.py with its options."""
    return run(str(options.input), options.submit, options.output, conn, options.waiting)


def run(
    input_path: str, submit: SubmitOptions, options: OutputOptions, conn: Connection, waiting: Optional[Wait] = None
) -> Outcome:
    """run_batch.py (see the module docstring)."""
    waiting = waiting or Wait()
    wait, interval, timeout = waiting.wait, waiting.interval, waiting.timeout
    metadata = submit.check(input_path)
    options.check_files()
    client = client_for(conn, submit.job_dir(input_path))

    def remember(job: Job) -> None:
        if options.given():
            fetch.remember_output(
                job,
                *fetch.resolve_output(
                    job.record,
                    options.format,
                    options.output,
                    options.errors,
                    options.csv,
                    options.column,
                    job.dir,
                    options.columns,
                ),
            )

    done = submit_or_resume(client, input_path, submit, metadata, inside_lock=remember)
    job = done.job
    report = job_report(job)
    estimate = report["estimated_cost"]
    narrate_estimate(estimate)
    doc: Dict[str, Any] = {
        "job": job.dir,
        "job_id": job.record.job_id,
        "submitted": done.doc(),
        "estimated_cost": estimate,
        "reuse": report["reuse"],
    }
    # the same command with --wait (--job only when given, and without --resubmit: the job has it now)
    same = RunOptions(
        input=input_path,
        waiting=replace(waiting, wait=True),
        submit=replace(submit, job=job.dir if submit.job else None),
        output=options,
    )
    again = commands.command("run_batch.py", *to_argv(same, resubmit=None))

    if not wait:
        checked = check_once(client, job, [])
        if not checked.summary["finished"]:
            doc.update(
                status=checked.summary["status"],
                finished=False,
                request_counts=checked.summary["request_counts"],
                batches=checked.summaries,
                next=again,
            )
            return Outcome(doc, EXIT_OK)
    partial = PartialDownloads(client, job)
    if wait:
        _, timed_out = wait_until_done(client, job, [], interval, timeout, between=partial)
        if timed_out:
            narrate("timed out waiting; partial results are saved")

    fetched = fetch_job(client, job, options)
    partial.add_to(fetched.doc.get("batches") or [])
    doc.update(fetched.doc)
    if fetched.code == EXIT_NOT_FINISHED and not doc.get("unsubmitted"):
        doc["next"] = again
    return Outcome(doc, fetched.code)


class PartialDownloads:
    """Between checks, the new result lines of the batches whose counts grew, on a slower
    cadence than the checks (every ``EVERY`` checks) and never when nothing new appeared; the
    batch objects of the check are used, so no batch is read twice."""

    EVERY = 2

    def __init__(self, client: Client, job: Job):
        self.client = client
        self.job = job
        self.checks = 0
        self.done: Dict[str, int] = {}  # batch id -> requests done at its last download
        self.new_lines: Dict[str, Dict[str, int]] = {}  # batch id -> lines downloaded while waiting

    def add_to(self, batches: List[Dict[str, Any]]) -> None:
        """Count the lines downloaded while waiting in each batch's ``new_lines``: the lines
        this run downloaded, not only its last pass."""
        for row in batches:
            for kind, n in self.new_lines.get(row.get("batch_id") or "", {}).items():
                row.setdefault("new_lines", {})[kind] = row.get("new_lines", {}).get(kind, 0) + n

    def __call__(self, check: Check) -> None:
        self.checks += 1
        if self.checks % self.EVERY:
            return
        grown = {}
        for bid, b in check.batches.items():
            c = counts_of(b)
            if c["completed"] + c["failed"] > self.done.get(bid, 0):
                grown[bid] = b
        if not grown:
            return

        def download_grown() -> bool:
            targets = [t for t in fetch.job_targets(self.job.record) if t.batch_id in grown]
            for rep in download.update(self.client, download.JobStore(self.job), targets, batch_objs=grown):
                seen = self.new_lines.setdefault(rep.batch_id, {})
                for kind, n in rep.new_lines.items():
                    seen[kind] = seen.get(kind, 0) + n
            return True

        if not when_free(self.job, download_grown, wait=2.0):
            return  # another process works on the job; it downloads for us
        for bid, b in grown.items():
            c = counts_of(b)
            self.done[bid] = c["completed"] + c["failed"]
