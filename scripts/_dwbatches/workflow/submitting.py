"""Submitting: validate and plan the input, then upload and create each batch once (or resume).

``submit_or_resume`` is the shared step of submit.py and run_batch.py; ``dry_run`` plans and
estimates without sending anything; ``job_report`` is the submit report of a job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from ..core import commands
from ..core.errors import APIConnectionError, APIStatusError, DWError, UsageError
from ..core.flags import check_number
from ..core.optiongroups import Target
from ..core.optionspec import group, number, option, to_argv
from ..core.output import Outcome, narrate
from ..cost.cost import local_estimate
from ..cost.estimate import describe, estimated_cost, recorded
from ..jobs.inputclaim import InputClaim
from ..jobs.job import Job, default_job_dir
from ..jobs.jobrecord import sha256_file
from ..results import answerreuse
from ..results.answerreuse import ReusePolicy
from ..submit import lookup
from ..submit.planning import WINDOWS, job_dir_for_next, parse_metadata, plan_or_resume, validate_input
from ..submit.submitter import DEFAULT_PARALLEL, Submitter
from ..validation.validate import MAX_BODY_BYTES, MAX_FILE_BYTES, MAX_REQUESTS_PER_FILE, Report
from .checking import poll_line
from .common import Connection, client_for
from .fetching import FetchOptions, fetch_line

if TYPE_CHECKING:  # annotations only
    from ..core.http import Client


@dataclass
class SubmitOptions:
    """How a job is submitted (None: as the job records it, else the default): each field is
    also its flag (``optionspec``), so the flags, the options and every printed command agree."""

    completion_window: Optional[str] = option(
        "-w", "--completion-window", choices=WINDOWS, help="24h (batch price, the default) or 1h (async price, faster)"
    )
    metadata: List[str] = option(
        "--metadata", repeat=True, metavar="KEY=VALUE", help="batch metadata (repeatable; string values)"
    )
    job: Optional[str] = option(
        "--job", metavar="DIR", help="job directory (default: INPUT.dwjob beside the input)", show=commands.display_path
    )
    max_requests: Optional[int] = option(
        "--max-requests", type=int, metavar="N", help=f"requests per uploaded file (default {MAX_REQUESTS_PER_FILE})"
    )
    max_bytes: Optional[int] = option(
        "--max-bytes", type=int, metavar="N", help=f"bytes per uploaded file (default {MAX_FILE_BYTES})"
    )
    max_body_bytes: int = option(
        "--max-body-bytes",
        type=int,
        metavar="N",
        default=MAX_BODY_BYTES,
        help=f"bytes per request body (default {MAX_BODY_BYTES})",
    )
    max_cost: Optional[float] = option(
        "--max-cost",
        type=float,
        metavar="USD",
        show=number,
        help="create no batch when the server's cost estimate is over USD",
    )
    parallel: int = option(
        "--parallel",
        type=int,
        metavar="N",
        default=DEFAULT_PARALLEL,
        help=f"chunks uploaded and created at once (default {DEFAULT_PARALLEL}; 1 = one after another)",
    )
    resubmit: bool = option(
        "--resubmit",
        switch=True,
        help="submit a file that another job already submitted (a new job for it is refused otherwise: it would "
        "pay for every request again)",
    )
    no_reuse: bool = option(
        "--no-reuse",
        switch=True,
        help="send every request of a new job, even those earlier jobs in its folder answered and the repeats "
        "within this one (by default those are not sent: their answers are reused)",
    )
    reuse_sampled: bool = option(
        "--reuse-sampled",
        switch=True,
        help="reuse answers for sampled requests too (temperature not 0, or none given); by default only "
        "deterministic ones (temperature 0, embeddings) take an answer at hand, so sampling gives fresh samples",
    )

    @property
    def reuse(self) -> ReusePolicy:
        """Which requests of a new job may take an answer at hand instead of being sent."""
        return ReusePolicy(enabled=not self.no_reuse, sampled=self.reuse_sampled)

    def check(self, input_path: str) -> Dict[str, str]:
        """Refuse bad limits and a missing input; the metadata as a dict."""
        check_number("--max-requests", self.max_requests, "1000", at_least=1)
        check_number("--max-bytes", self.max_bytes, "50000000", at_least=1)
        check_number("--max-body-bytes", self.max_body_bytes, str(MAX_BODY_BYTES), at_least=1)
        check_number("--max-cost", self.max_cost, "5", at_least=0)
        check_number("--parallel", self.parallel, "3", at_least=1)
        if not os.path.isfile(input_path):
            raise UsageError(f"{input_path}: no such file", hint="Pass the path of a JSONL batch file.")
        return parse_metadata(self.metadata)

    def job_dir(self, input_path: str) -> str:
        return os.path.abspath(self.job or default_job_dir(input_path))


INPUT_HELP = "the batch file (see create_batch_file.py)"


@dataclass
class SubmitCommand:
    """submit.py's input and options (each field is also its flag, ``optionspec``)."""

    input: Optional[str] = option("INPUT.jsonl", positional=True, show=commands.display_path, help=INPUT_HELP)
    submit: SubmitOptions = group(SubmitOptions)
    dry_run: bool = option(
        "--dry-run", switch=True, help="validate, plan and estimate locally; send nothing (no key needed)"
    )


def submit_command(options: SubmitCommand, conn: Connection) -> Outcome:
    """submit.py with its options."""
    return submit(str(options.input), options.submit, conn, dry=options.dry_run)


@dataclass
class Submitted:
    """A job after a submit run: the job and what this run did."""

    job: Job
    resumed: bool
    uploaded: int
    created: int
    found: int

    def doc(self) -> Dict[str, Any]:
        return {
            "resumed": self.resumed,
            "chunks": sum(1 for _ in self.job.record.chunks()),
            "this_run": {"uploaded": self.uploaded, "created": self.created, "found": self.found},
        }


def first_validation(input_path: str, options: SubmitOptions) -> Optional[Report]:
    """The validation report of the input of a job not created yet (None for an existing job,
    whose input is checked by its fingerprint): nothing is sent for an invalid file."""
    if Job(options.job_dir(input_path)).exists():
        return None
    return validate_input(
        input_path,
        options.max_requests or MAX_REQUESTS_PER_FILE,
        options.max_bytes or MAX_FILE_BYTES,
        options.max_body_bytes,
    )


def submit_or_resume(
    client: Client,
    input_path: str,
    options: SubmitOptions,
    metadata: Dict[str, str],
    inside_lock: Optional[Callable[[Job], None]] = None,
    refresh: bool = False,
    report: Optional[Report] = None,
) -> Submitted:
    """Create the job for ``input_path`` (validated first: nothing is sent for an invalid file)
    or resume it, then upload and create what has no batch yet. ``inside_lock`` runs while the
    job is locked, after it is planned (run_batch.py remembers the output options there)."""
    job = Job(options.job_dir(input_path))
    if report is None:
        report = first_validation(input_path, options)
    sha = sha256_file(input_path)
    # the claim on the input's contents, from before the look for earlier submissions until the
    # batches are recorded: a submit of the same file into another job dir at this moment is refused
    with InputClaim(input_path, sha, job.dir) as claim:
        if not options.resubmit and created_nothing(job):  # (before the lock, which makes the job directory)
            refuse_earlier_submission(client, input_path, sha, claim.previous)
        with job:
            resumed = plan_or_resume(
                job,
                input_path,
                base_url=client.base_url,
                completion_window=options.completion_window,
                metadata=metadata,
                max_requests=options.max_requests,
                max_bytes=options.max_bytes,
                max_body_bytes=options.max_body_bytes,
                report=report,
                input_sha256=sha,
                reuse=answerreuse.planner(options.reuse),
            )
            if inside_lock is not None:
                inside_lock(job)
            sub = Submitter(job, client, max_cost=options.max_cost, parallel=options.parallel)
            sub.run()
            if resumed and refresh:
                sub.refresh()
    return Submitted(job, resumed, sub.uploaded, sub.created, sub.files_found + sub.batches_found)


def created_nothing(job: Job) -> bool:
    """The job is new, or has not sent a single create yet (a run stopped before its batches):
    read without the lock (job.json is replaced whole), so a damaged record counts as having
    sent something (the lock's reader reports it)."""
    if not job.exists():
        return True
    try:
        return Job(job.dir).load().nothing_created()
    except DWError:
        return False


def refuse_earlier_submission(client: Client, input_path: str, sha: str, last: Optional[Dict[str, Any]] = None) -> None:
    """A new job for a file already submitted (its job directory deleted or moved, or another
    --job given), or a job that has created nothing yet for a file another job submitted
    meanwhile, would pay for every request again: refused unless --resubmit. ``last``: who
    claimed this input before (``InputClaim.previous``), to name its job directory."""
    try:
        earlier = lookup.earlier_submissions(client, sha)
    except (APIConnectionError, APIStatusError) as exc:
        if isinstance(exc, APIStatusError) and exc.status in (401, 403):
            raise
        # a safeguard, not a step of the submit: a server that cannot answer it now stops nothing
        narrate(f"warning: could not look for earlier submissions of this file ({exc.message}); going on")
        return
    if not earlier:
        return
    ids = [b["id"] for b in earlier]
    jobs = sorted({(b.get("metadata") or {}).get("dwb_job", "?") for b in earlier})
    where, find = "", "Its job directory may have been deleted or moved: look for it (ls *.dwjob), or get"
    if last and Job(last["job"]).exists():  # the job directory that last submitted this file here
        try:
            if Job(last["job"]).load().job_id in jobs:
                other = commands.display_path(last["job"])
                where = f", job directory {other}"
                find = f"Follow that job: {poll_line(Target(job=last['job']))}; or get"
        except DWError:
            pass
    states = ", ".join(f"{b['id']} ({b.get('status')})" for b in earlier[:5]) + (", ..." if len(earlier) > 5 else "")
    fetch = fetch_line(FetchOptions(Target(batch_ids=ids[:20]), input=input_path))
    raise UsageError(
        f"{commands.display_path(input_path)} was already submitted, with the same contents, by another job "
        f"({', '.join(jobs)}{where}): batch(es) {states}; a new job would pay for every request again",
        hint=f"{find} those results with {fetch}. If that job was cancelled, its directory reruns only what did not finish "
        "(retry_failed.py --job DIR --after-cancel). To submit the whole file again anyway (and pay again for "
        "what finished), add --resubmit.",
    )


def submit(input_path: str, options: SubmitOptions, conn: Connection, dry: bool = False) -> Outcome:
    """submit.py: the submit report (or, ``dry``, the plan and the local estimate)."""
    metadata = options.check(input_path)
    if dry:
        return dry_run(input_path, options, metadata)
    report = first_validation(input_path, options)
    client = client_for(conn, options.job_dir(input_path))
    done = submit_or_resume(client, input_path, options, metadata, refresh=True, report=report)
    doc = job_report(done.job)
    narrate_estimate(doc["estimated_cost"])
    doc["resumed"] = done.resumed
    doc["this_run"] = done.doc()["this_run"]
    if done.resumed and not (done.uploaded or done.created or done.found):
        narrate("every chunk was already submitted; nothing to do")
    doc["next"] = commands.after_submit(done.job.dir)
    return Outcome(doc)


def dry_run(input_path: str, options: SubmitOptions, metadata: Dict[str, str]) -> Outcome:
    """Validate, plan and estimate locally; send nothing (no key needed)."""
    report = validate_input(
        input_path,
        options.max_requests or MAX_REQUESTS_PER_FILE,
        options.max_bytes or MAX_FILE_BYTES,
        options.max_body_bytes,
    )
    job_dir, job_arg = options.job_dir(input_path), options.job
    sha = sha256_file(input_path) if Job(job_dir).exists() else None
    fresh = job_dir_for_next(input_path, job_dir, sha)  # a local read only: would the real run refuse the job?
    if fresh is not None:
        job_dir, job_arg = fresh, commands.display_path(fresh)
    job = Job(job_dir)
    window = options.completion_window or "24h"
    plan = []
    for c in report.chunks:
        d: Dict[str, Any] = c.as_dict()
        d["endpoint"] = c.endpoint
        plan.append(d)
    estimate = estimated_cost(recorded(local_estimate(report, window), window), chunks=len(plan))
    cmd = [commands.display_path(input_path), *to_argv(options, job=job_arg)]
    resumes = job.load().input.sha256 == sha if job.exists() else None  # (False: planned again, no batch yet)
    reuse, sending = None, report
    if options.reuse.enabled and not resumes:  # what a new job would send: a pass that writes nothing
        planned = answerreuse.plan_new_job(
            job.dir,
            input_path,
            report,
            options.reuse,
            window,
            options.max_requests or MAX_REQUESTS_PER_FILE,
            options.max_bytes or MAX_FILE_BYTES,
            options.max_body_bytes,
            dry_run=True,
        )
        reuse = answerreuse.doc(planned.record)
        if planned.record.not_sent:  # the plan and the estimate are of what would be sent
            sending = planned.send_report or Report(path=input_path)
            plan = [dict(c.as_dict(), endpoint=c.endpoint) for c in sending.chunks]
            estimate = estimated_cost(recorded(local_estimate(sending, window), window), chunks=len(plan))
    doc = {
        "dry_run": True,
        "job": job.dir,
        "job_exists": job.exists(),
        "resumes_job": resumes,
        "requests": report.requests,
        "bytes": report.bytes,
        "chunks": len(plan),
        "plan": plan,
        "completion_window": window,
        "metadata": metadata,
        "models": report.models,
        "endpoints": report.endpoints,
        "estimated_cost": estimate,
        "reuse": reuse,
        "warnings": report.warnings,
        "next": commands.command("submit.py", *cmd),
    }
    narrate(
        f"dry run: {report.requests} requests, {sending.requests} to send in {len(plan)} chunk(s); nothing was sent"
    )
    narrate_estimate(estimate)
    return Outcome(doc)


def narrate_estimate(estimate: Optional[Dict[str, Any]]) -> None:
    """The cost estimate of a job in one line on stderr (submit.py, its dry run, run_batch.py)."""
    line = describe(estimate)
    if line:
        narrate(line)


def job_report(job: Job) -> Dict[str, Any]:
    """The submit report of a job: batches, totals and the cost estimate (``cost.estimate``)."""
    rec = job.record
    chunks = list(rec.round_chunks())
    batches = []
    for rnd, ch in chunks:
        batches.append(
            {
                "batch_id": ch.batch_id,
                "input_file_id": ch.file_id,
                "round": rnd.round,
                "chunk": ch.index,
                "lines": [ch.start_line, ch.end_line],
                "requests": ch.requests,
                "status": ch.status or ("held" if ch.held else None),
            }
        )
    estimate = estimated_cost(rec.local_estimate, (c for _, c in chunks), len(chunks))
    return {
        "job": job.dir,
        "job_id": rec.job_id,
        "batches": batches,
        "requests": rec.input.requests,
        "chunks": len(chunks),
        "completion_window": rec.completion_window,
        "estimated_cost": estimate,
        "reuse": answerreuse.doc(rec.reuse),
        "source": rec.source.to_dict() if rec.source else None,
    }
