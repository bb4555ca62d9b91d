"""Retrying: rerun the failed and never-run requests of a finished job, and those whose answers
were not answers (empty, cut, not the JSON asked for), as a new round of it, with new settings
when asked (another model, max_tokens, reasoning effort).

The results are brought up to date first (the fetch engine); requests without a good answer
are copied from what was submitted (the input, or the server's copy when the input changed)
into ``<job>/rounds/round-N.jsonl``, with the job's changed settings made to their bodies, and
submitted by the same engine as submit.py. Nothing with a good answer is sent again, and a
round is never submitted twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from ..api.reasoning import EFFORTS
from ..api.requestedit import FLAGS, Changes
from ..api.requestrules import MAX_OUTPUT_LIMIT
from ..core import clock, commands
from ..core.errors import EXIT_NOT_FINISHED, EXIT_OK, DWError, JobError, UsageError
from ..core.files import make_private_dir, refuse_overwrite
from ..core.flags import kinds_list
from ..core.optiongroups import Target
from ..core.optionspec import group, in_range, option, to_argv
from ..core.output import Outcome, narrate
from ..jobs.job import Job
from ..jobs.jobrecord import Round
from ..results import answerreuse, answers, fetch, fixes, merge, resultlines
from ..submit.planning import WINDOWS, add_retry_round, next_round_path
from .checking import poll_line
from .common import Connection, holding, open_job_for
from .fetching import FetchOptions, fetch_line

if TYPE_CHECKING:  # annotations only
    from ..core.http import Client
    from ..submit.submitter import Submitter

# What a retry can rerun: requests that failed or never ran, and answers that are not good.
RERUN_KINDS = (merge.FAILED, merge.MISSING) + answers.BAD
# What it reruns unless told otherwise (a filtered answer would be filtered again).
RERUN_DEFAULT = (merge.FAILED, merge.MISSING, answers.EMPTY, answers.TRUNCATED, answers.INVALID_JSON)


@dataclass
class RetryOptions:
    """How retry_failed.py reruns (each field is also its flag, ``optionspec``); the new settings
    of the rerun requests are ``requestedit.Changes``."""

    completion_window: Optional[str] = option(
        "-w", "--completion-window", choices=WINDOWS, help="window of the retry round (default: the job's)"
    )
    dry_run: bool = option(
        "--dry-run",
        switch=True,
        printed=False,
        help="bring results up to date and count what would be retried; write and send nothing",
    )
    force: bool = option(
        "--force",
        switch=True,
        help="retry even when a finished batch's result files look short of its counts "
        "(those requests may have succeeded and would be paid twice)",
    )
    after_cancel: bool = option(
        "--after-cancel",
        switch=True,
        help="retry a job the user cancelled (cancel_batch.py --job) anyway: reruns the requests "
        "the cancel stopped, with the same model and settings",
    )
    rerun: str = option(
        "--rerun",
        metavar="KINDS",
        default=",".join(RERUN_DEFAULT),
        help=f"what to rerun, comma-separated: {', '.join(RERUN_KINDS)} (default {','.join(RERUN_DEFAULT)})",
    )

    def kinds(self) -> Sequence[str]:
        """The kinds of ``--rerun`` (a UsageError naming the flag when one is unknown)."""
        return kinds_list("--rerun", self.rerun, RERUN_KINDS, "failed,missing,truncated")

    def args(self, changes: Changes) -> List[str]:
        """The flags of this retry for a printed command (the dry run left out), changes included."""
        return [*changes.args(), *to_argv(self)]


@dataclass
class ChangeOptions:
    """New settings for the requests rerun (``requestedit.FLAGS``; each field is also its flag)."""

    model: Optional[str] = option(*FLAGS["model"], metavar="MODEL", help="send them to this model instead")
    max_tokens: Optional[int] = option(
        *FLAGS["max_tokens"],
        type=int,
        metavar="N",
        check=in_range("2000", at_least=1, at_most=MAX_OUTPUT_LIMIT),
        help="their token limit (max_tokens, or whichever limit field they set); reasoning counts against it",
    )
    reasoning: Optional[str] = option(
        *FLAGS["reasoning"],
        choices=EFFORTS,
        help="their reasoning effort (none switches thinking off where the model allows it)",
    )

    def changes(self) -> Changes:
        return Changes(model=self.model, max_tokens=self.max_tokens, reasoning=self.reasoning)


@dataclass
class RetryCommand:
    """retry_failed.py's job and options (each field is also its flag, ``optionspec``)."""

    job: Optional[str] = option(
        "--job", metavar="DIR", required=True, show=commands.display_path, help="the job directory"
    )
    options: RetryOptions = group(RetryOptions)
    changes: ChangeOptions = group(ChangeOptions, title="new settings for the requests rerun")

    def check_options(self) -> None:
        self.options.kinds()  # a wrong --rerun is refused before anything is read


def retry_command(command: RetryCommand, conn: Connection) -> Outcome:
    """retry_failed.py with its options."""
    client, job = open_job_for(conn, str(command.job))
    return retry(client, job, command.options, command.changes.changes())


def job_changes(job: Job) -> Changes:
    """The settings the job's latest round was sent with, changed from what was submitted."""
    rounds = job.record.rounds
    return Changes.from_dict(rounds[-1].changes if rounds else None)


def round_doc(rnd: Round) -> List[Dict[str, Any]]:
    return [
        {
            "batch_id": c.batch_id,
            "chunk": c.index,
            "requests": c.requests,
            "status": c.status or ("held" if c.held else None),
        }
        for c in rnd.chunks
    ]


def _doc(job: Any, exit_code: int = EXIT_OK, **kw: Any) -> Outcome:
    doc: Dict[str, Any] = {
        "job": job.dir,
        "round": None,
        "requests": 0,
        "failed": 0,
        "missing": 0,
        "answers": dict.fromkeys(answers.BAD, 0),
        "changes": job_changes(job).to_dict(),
        "sample": [],
        "batches": [],
        "dry_run": False,
    }
    doc.update(kw)
    return Outcome(doc, exit_code)


def refuse_after_cancel(job: Job) -> None:
    """The user cancelled the job's latest round (cancel_batch.py --job): rerunning its requests
    would undo that, so a retry needs ``--after-cancel``."""
    jd = commands.display_path(job.dir)
    raise UsageError(
        f"the job at {jd} was cancelled (cancel_batch.py --job); retrying would rerun the requests "
        "you stopped, with the same model and settings",
        hint=f"Fetch what finished with {fetch_line(FetchOptions(Target(job=job.dir)))}. To run "
        "the requests with other settings, build a new batch file and submit it as a new job "
        "(submit.py NEW.jsonl --job NEW_DIR). To rerun them as they were anyway, add "
        "--after-cancel.",
    )


def retry(client: Client, job: Job, options: RetryOptions, changes: Changes = Changes()) -> Outcome:
    """retry_failed.py: a new round of the failed and never-run requests and of the answers
    that are not good (the kinds in ``rerun``), with ``changes`` added to the job's settings;
    or resume a round that was not fully submitted. After a cancel of the latest round, only
    with ``after_cancel``. The job is locked while it works."""
    rerun = options.kinds()
    with holding(job):
        return _retry(client, job, options, changes, rerun)


def _retry(client: Client, job: Job, options: RetryOptions, changes: Changes, rerun: Sequence[str]) -> Outcome:
    completion_window, dry_run, force, after_cancel = (
        options.completion_window,
        options.dry_run,
        options.force,
        options.after_cancel,
    )
    state = job.record
    rounds = state.rounds
    jd = commands.display_path(job.dir)
    if not rounds:
        return _doc(
            job,
            status="not_submitted",
            exit_code=EXIT_NOT_FINISHED,
            reason="the job has no batches yet",
            next=commands.resume_command(state, job.dir),
        )
    if state.cancelled_round(rounds[-1]) and not after_cancel:
        refuse_after_cancel(job)

    # a round with chunks that have no batch: resume it (retry round) or leave it to submit.py
    pending = [(r, c) for r in rounds for c in r.chunks if not c.batch_id and not state.cancelled_round(r)]
    if pending:
        latest = rounds[-1]
        if latest.kind == "retry" and all(r is latest for r, _ in pending):
            if dry_run:
                return _doc(
                    job,
                    round=latest.round,
                    requests=sum(c.requests for c in latest.chunks),
                    batches=round_doc(latest),
                    dry_run=True,
                    exit_code=EXIT_OK,
                    reason=f"round {latest.round} is recorded but not fully submitted; "
                    "running without --dry-run finishes submitting it",
                    next=commands.command("retry_failed.py", "--job", jd),
                )
            narrate(f"round {latest.round} was not fully submitted; resuming it")
            sub = _submitter(job, client)
            sub.run()
            return _doc(
                job,
                round=latest.round,
                requests=sum(c.requests for c in latest.chunks),
                batches=round_doc(latest),
                resumed=True,
                exit_code=EXIT_OK,
                next=poll_line(Target(job=job.dir)),
            )
        narrate(
            "the job is not fully submitted (a chunk has no batch: held over --max-cost, or the "
            "submit was interrupted); finish that first"
        )
        return _doc(
            job,
            status="not_submitted",
            exit_code=EXIT_NOT_FINISHED,
            reason="a chunk of the job has no batch yet",
            next=commands.resume_command(state, job.dir),
        )

    ref = fetch.refresh_job(client, job)
    if not ref.complete:
        running = [r.batch_id for r in ref.all_reports if not r.terminal]
        narrate(
            f"{len(running)} batch(es) of the job are still running; retrying now could run requests "
            "that are about to finish. Wait for them first."
        )
        return _doc(
            job,
            status=ref.summary["status"],
            exit_code=EXIT_NOT_FINISHED,
            reason="batches of the job are still running",
            running=running,
            next=poll_line(Target(job=job.dir)),
        )
    left = _cancel_settling(client, ref)
    if left > 0:
        narrate(
            f"a batch of the job was cancelled {CANCEL_SETTLE - left:.0f}s ago, and requests it had in flight may "
            f"still finish; waiting {left:.0f}s, then reading its results again, so that none is run twice"
        )
        clock.sleep(left)
        ref = fetch.refresh_job(client, job)
    short = [r for r in ref.reports if r.drained and not r.verified]
    if short and not force:
        notes = "; ".join(f"{r.batch_id}: {', '.join(r.notes) or 'short'}" for r in short)
        raise DWError(
            f"the downloaded results of {len(short)} finished batch(es) are short of the server's counts "
            f"({notes}); retrying now could pay twice for requests that did succeed",
            hint=f"Run {fetch_line(FetchOptions(Target(job=job.dir)))} again later (it re-reads "
            "short files), or pass --force to "
            "retry anyway.",
        )

    unreachable = [r for r in ref.reports if r.unreachable]
    paid = [r for r in unreachable if ref.results_lost(r)]
    if paid and not force:
        lost = sum(ref.results_lost(r) for r in paid)
        raise UsageError(
            f"{len(paid)} batch(es) of the job cannot be read from the server any more "
            f"({', '.join(r.batch_id for r in paid)}), and {lost} request(s) of theirs had completed "
            "with results that were never downloaded; retrying them would pay for them twice",
            hint="Their results are lost on the server's side. To run those requests again anyway "
            f"(and pay again): {commands.rerun_lost(job.dir)}",
        )
    index = answerreuse.job_index(job, ref.store, ref.all_targets, capacity=int(state.input.requests or 0))
    copies = answerreuse.copy_ids(job)  # requests not sent: they take their request's answer, never rerun
    try:
        if state.input.requests and index.good_answers() >= state.input.requests:
            # every request has an answer; only the JSON checks need the requests, which may be gone
            try:
                input_path = fetch.requests_as_submitted(client, job, required=True)
            except JobError:
                return _nothing_to_retry(job, ref, dry_run)
        else:
            input_path = fetch.requests_as_submitted(client, job, required=True)
    except BaseException:
        index.close()
        if copies is not None:
            copies.close()
        raise
    assert input_path is not None  # (required: a JobError rather than None)
    settings = job_changes(job).then(changes)
    tally = dict.fromkeys(RERUN_KINDS, 0)
    skipped = dict.fromkeys(RERUN_KINDS, 0)
    cuts = fixes.Tally()  # what the bad answers rerun show: a cut rerun unchanged would be cut again

    def keep(cid: str, request: Any) -> bool:
        if copies is not None and cid in copies:
            return False
        check = index.check(cid, answers.expectation(request))
        if check == answers.GOOD:
            return False
        if check not in rerun:
            skipped[check] += 1
            return False
        tally[check] += 1
        if check in answers.BAD:
            cuts.add(check, index.body(cid))
        problem = settings.problem(request.get("body") or {}, str(request.get("url") or "")) if changes else None
        if problem:
            raise UsageError(
                f"{problem} (request {cid})",
                hint="Pick settings the model takes (list_models.py lists each model's reasoning efforts).",
            )
        return True

    dest = None if dry_run else next_round_path(job)
    if dest:
        protected = {"job's input": input_path, "source CSV": state.source.path if state.source else None}
        protected.update({f"input of round {r.round}": r.input_path for r in rounds})
        refuse_overwrite({"the retry input": dest}, protected)
        make_private_dir(os.path.dirname(dest))  # <job>/rounds is private like the job (0700)
    try:
        count, sample = merge.write_subset(input_path, keep, dest, settings, int(state.input.requests or 0))
        client_errors = _client_errors(index) if count else 0
    finally:
        index.close()
        if copies is not None:
            copies.close()
    if cuts.cut and not changes:
        if dest and os.path.exists(dest):
            os.unlink(dest)
        refuse_unchanged_cuts(job, cuts, rerun)
    if count == 0:
        if dest and os.path.exists(dest):
            os.unlink(dest)
        return _nothing_to_retry(job, ref, dry_run, skipped)
    bad = {k: tally[k] for k in answers.BAD}
    what = ", ".join(f"{n} {_KIND_WORDS[k]}" for k, n in tally.items() if n)
    if client_errors:
        narrate(f"note: {client_errors} of the failures were client errors (HTTP 4xx); they may fail again")
    if settings:
        narrate(f"the rerun requests are sent with {settings.describe()}")
    if dry_run:
        narrate(f"dry run: would retry {count} request(s) ({what}); nothing was written or sent")
        return _doc(
            job,
            round=len(rounds) + 1,
            requests=count,
            failed=tally[merge.FAILED],
            missing=tally[merge.MISSING],
            answers=bad,
            changes=settings.to_dict(),
            sample=sample,
            dry_run=True,
            client_errors=client_errors,
            exit_code=EXIT_OK,
            next=commands.command("retry_failed.py", "--job", jd, *options.args(changes)),
        )
    assert dest is not None  # (written above: not a dry run)
    limits = rounds[0].limits
    rnd = add_retry_round(
        job,
        dest,
        completion_window=completion_window,
        max_requests=limits.max_requests,
        max_bytes=limits.max_bytes,
        changes=settings.to_dict(),
    )
    narrate(f"round {rnd.round}: retrying {count} request(s) ({what}) from {commands.display_path(dest)}")
    _submitter(job, client).run()
    return _doc(
        job,
        round=rnd.round,
        requests=count,
        failed=tally[merge.FAILED],
        missing=tally[merge.MISSING],
        answers=bad,
        changes=settings.to_dict(),
        sample=sample,
        batches=round_doc(rnd),
        input=dest,
        client_errors=client_errors,
        exit_code=EXIT_OK,
        next=poll_line(Target(job=job.dir)),
    )


_KIND_WORDS = {
    merge.FAILED: "failed",
    merge.MISSING: "never run",
    answers.EMPTY: "empty answers",
    answers.TRUNCATED: "cut answers",
    answers.INVALID_JSON: "answers not the JSON asked for",
    answers.FILTERED: "filtered answers",
}


# Requests in flight when a batch is cancelled are aborted on a best-effort basis, and one may
# still finish and land in the output file after the cancel (the API says so). A retry waits
# until this long after the cancel (by the server's clock) before it decides what never ran.
CANCEL_SETTLE = 120.0


def _cancel_settling(client: Client, ref: fetch.JobRefresh) -> float:
    """Seconds left until every cancelled batch of the job is past CANCEL_SETTLE (0 if none)."""
    now = client.server_now()
    left = 0.0
    for rep in ref.reports:
        batch = rep.batch or {}
        at = batch.get("cancelled_at") or batch.get("cancelling_at")
        if rep.status == "cancelled" and isinstance(at, (int, float)):
            left = max(left, float(at) + CANCEL_SETTLE - now)
    return left


def refuse_unchanged_cuts(job: Job, cuts: fixes.Tally, rerun: Sequence[str]) -> None:
    """Answers cut at their token limit would be cut again if rerun as they were: paying twice
    for nothing. The fix (a larger budget, or reasoning off) goes in the hint."""
    jd = commands.display_path(job.dir)
    fix = fixes.pick(cuts) or fixes.Fix(Changes(max_tokens=cuts.budget * 2), "a larger budget")
    others = [k for k in rerun if k not in (answers.EMPTY, answers.TRUNCATED)]
    hint = f"Rerun them with new settings: {commands.command('retry_failed.py', '--job', jd, *fix.changes.args())}"
    hint += f" ({fix.reason})"
    if others:
        hint += (
            f"; or rerun only the rest: {commands.command('retry_failed.py', '--job', jd, '--rerun', ','.join(others))}"
        )
    raise UsageError(
        f"{cuts.cut} answer(s) were cut at their token limit (max_tokens {cuts.budget}); rerun with the same "
        "settings they would be cut again, and paid for again",
        hint=hint,
    )


def _nothing_to_retry(job: Any, ref: Any, dry_run: Optional[bool], skipped: Optional[Dict[str, int]] = None) -> Outcome:
    left = {k: n for k, n in (skipped or {}).items() if n}
    if left:
        narrate(
            "nothing to retry of what --rerun names; left as they are: "
            + ", ".join(f"{n} {_KIND_WORDS[k]}" for k, n in left.items())
        )
    else:
        narrate("every request has a good answer; nothing to retry")
    return _doc(
        job,
        exit_code=EXIT_OK,
        status=ref.summary["status"],
        dry_run=bool(dry_run),
        next=fetch_line(FetchOptions(Target(job=job.dir))),
    )


def _client_errors(index: merge.ResultIndex) -> int:
    """Failed requests (without a success) whose failure was an HTTP 4xx."""
    n = 0
    for _, obj in index.errors():
        if not isinstance(obj, dict):
            continue
        text = resultlines.error_text(obj)
        if "NonRetriableHttpStatus" in text or "(HTTP 4" in text or text.startswith("HTTP 4"):
            n += 1
    return n


def _submitter(job: Job, client: Client) -> Submitter:
    from ..submit.submitter import Submitter  # the engine talks to the API

    return Submitter(job, client)
