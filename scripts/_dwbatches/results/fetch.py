"""Fetching a job or bare batch ids: download what is new, check, merge, report.

One orchestration for jobs (cursors in job.json, output settings remembered) and for bare
batch ids (cursors beside the output): refresh the downloads, find the requests as submitted
(the local input when unchanged, else the server's copy), merge, and build the report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Set, Tuple

from ..core import commands, events, files
from ..core.errors import (
    EXIT_NOT_FINISHED,
    EXIT_OK,
    EXIT_UNSUCCESSFUL,
    APIConnectionError,
    DWError,
    JobError,
    UsageError,
)
from ..core.files import atomic_output
from ..core.idtable import FileIds
from ..core.output import Outcome
from ..cost.cost import billed_cost, usage_and_cost
from ..jobs import jobstatus
from ..jobs.job import Job, default_job_dir
from ..jobs.jobrecord import Chunk, JobRecord, Merged, ResultsSettings, counts_of
from ..submit import duplicates
from . import answerreuse, answers, fixes, unchanged
from .csvrows import MatchedCsvRows, RequestRows
from .download import KINDS, BatchReport, FileStore, JobStore, Store, Target, iter_raw, update
from .merge import MISSING_NOT_RUN, MISSING_PENDING, MergeCounts, Merger, build_index, iter_input_order
from .resultlines import is_success

if TYPE_CHECKING:  # annotations only
    from ..core.http import Client


def job_targets(rec: JobRecord) -> List[Target]:
    return [Target(t["batch_id"], t["round"], t["chunk"]) for t in jobstatus.job_targets(rec) if t["batch_id"]]


def batch_summary(rep: BatchReport, store: Store, chunk: Optional[Chunk] = None) -> Dict[str, Any]:
    """The summary of a batch as reported; an unreachable one keeps its last known counts."""
    if rep.batch and not rep.unreachable:
        return jobstatus.summarize_batch(rep.batch, rep.round, rep.chunk)
    known: Dict[str, Any] = dict(rep.batch or {})
    known.setdefault("id", rep.batch_id)
    if chunk is not None and not known.get("request_counts"):
        known["request_counts"] = chunk.request_counts or {"total": chunk.requests}
    summary = jobstatus.summarize_batch(known, rep.round, rep.chunk)
    summary["status"] = jobstatus.UNREACHABLE
    return summary


def batch_report_doc(rep: BatchReport, store: Store, summary: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    entry = store.entry(rep.batch_id)
    doc = dict(summary) if summary is not None else batch_summary(rep, store)
    doc["fetched"] = {k: int(entry.cursor(k).skip) for k in KINDS}
    doc["new_lines"] = dict(rep.new_lines)
    doc["verified"] = bool(entry.verified) if rep.drained else None
    if rep.notes:
        doc["notes"] = rep.notes
    if rep.unreachable:
        doc["unreachable"] = rep.unreachable
    return doc


def default_error_path(out_path: str) -> str:
    base = os.path.abspath(out_path)
    for suffix in (".results.jsonl", ".results.csv", ".jsonl", ".csv", ".json"):
        if base.endswith(suffix):
            return base[: -len(suffix)] + ".errors.jsonl"
    return base + ".errors.jsonl"


def default_job_output(rec: JobRecord, fmt: str, job_dir: Optional[str] = None) -> str:
    """Results go beside the job's input (the file the user submitted), never into the folder
    of a source CSV, which may be read-only or shared; named after the input for the input's
    own job (``data.dwjob`` → ``data.results.jsonl``), else after the job directory
    (``data.2.dwjob`` → ``data.2.results.jsonl``), so that two jobs of one input never share
    a results file."""
    stem = os.path.splitext(os.path.abspath(rec.input.path))[0]
    if job_dir and os.path.abspath(job_dir) != default_job_dir(rec.input.path):
        name = os.path.basename(os.path.abspath(job_dir))
        name = name[: -len(".dwjob")] if name.endswith(".dwjob") else name
        stem = os.path.join(os.path.dirname(stem), name)
    return stem + (".results.csv" if fmt == "csv" else ".results.jsonl")


def refuse_another_jobs_output(job_dir: Optional[str], job_id: str, paths: Dict[str, str]) -> None:
    """A results or errors file another job (a job directory beside it, or beside this job)
    remembers as its own is never written over: each fetch would replace the other's results."""
    if not job_dir:
        return
    folders = {os.path.dirname(p) for p in paths.values()} | {os.path.dirname(os.path.abspath(job_dir))}
    for folder in sorted(folders):
        try:
            names = sorted(n for n in os.listdir(folder) if n.endswith(".dwjob"))
        except OSError:
            continue
        for name in names:
            other = os.path.join(folder, name)
            if os.path.abspath(other) == os.path.abspath(job_dir):
                continue
            owned = other_job_outputs(other, job_id)
            for what, path in paths.items():
                if os.path.abspath(path) in owned:
                    raise UsageError(
                        f"{path} holds the results of another job ({commands.display_path(other)}); this job "
                        f"({commands.display_path(job_dir)}) would write its own over them",
                        hint=f"Give this job a file of its own: pass {'-o' if what == 'OUT' else '--errors'} PATH "
                        "(it is remembered for later fetches).",
                    )


def other_job_outputs(job_dir: str, job_id: str) -> Set[str]:
    """The results and errors files another job remembers (empty for this same job, or when its
    record cannot be read)."""
    try:
        other = Job(job_dir)
        rec = other.load()
    except (DWError, OSError):
        return set()
    if rec.job_id == job_id or rec.results is None:
        return set()
    return {other.resolve(p) for p in (rec.results.output, rec.results.errors) if p}


def exit_code_for(complete: bool, failed: int, missing: int, bad_answers: int = 0) -> int:
    """6 while anything runs; 5 once finished with a request that failed, never ran, or whose
    answer is not good (empty, cut, not the JSON asked for, filtered); else 0."""
    if not complete:
        return EXIT_NOT_FINISHED
    return EXIT_UNSUCCESSFUL if (failed or missing or bad_answers) else EXIT_OK


def bad_answers(doc: Dict[str, Any]) -> int:
    """The answers of a report's ``answers`` counts that are not good."""
    return sum(n for check, n in (doc.get("answers") or {}).items() if check != answers.GOOD)


SUBMITTED_INPUT = "submitted-input.jsonl"
SERVER_COPY = "the requests as submitted (the server's copy)"  # SUBMITTED_INPUT as a merge's input


def requests_as_submitted(client: Client, job: Job, required: bool = False) -> Optional[str]:
    """A file holding the job's requests as submitted, in order: the local input when it is the
    file that was submitted (size and sha256), else the server's copy of the uploaded files (the
    truth of what was submitted), saved in the job. When neither can be read: None (results then
    go in the order they arrived), or with ``required`` a JobError that says what to restore.
    Which of them it is, when not the input, is said (an event for the report's warnings)."""
    rec = job.record
    state = rec.input.fingerprint.check(rec.input.path)
    if state == "same":
        return rec.input.path
    what = "is gone" if state == "missing" else "changed since it was submitted"
    if rec.reuse is not None and rec.reuse.not_sent:  # the server holds only the requests that were sent
        own = rec.rounds[0].input_path if rec.rounds else ""
        if required and os.path.isfile(own):
            return own  # those sent (the job's own copy): the others have their answers
        if required:
            raise JobError(
                f"the job's input {rec.input.path} {what}, and the requests it sent ({own}) are gone",
                hint="Restore the original batch input file at that path, then run again.",
            )
        note = (
            f"the job's input {rec.input.path} {what}, and the server holds only the requests that were sent; "
            "results are written in the order they arrived"
        )
        events.step(note, report=True)
        return None
    cached = job.path("results", SUBMITTED_INPUT)
    if not os.path.isfile(cached):
        events.step(f"the job's input {rec.input.path} {what}; reading the requests as submitted from the server")
        try:
            save_submitted_input(client, job, cached)
        except DWError as exc:
            unreadable = (
                f"the job's input {rec.input.path} {what}, and the server's copy of the uploaded requests "
                f"cannot be read ({exc.message})"
            )
            if required:
                raise JobError(
                    unreadable, hint="Restore the original batch input file at that path, then run again."
                ) from None
            note = unreadable + "; results are written in the order they arrived"
            events.step(note, report=True)
            return None
    note = (
        f"the job's input {rec.input.path} {what}; the requests as submitted are the server's copy, "
        f"saved at {commands.display_path(cached)}"
    )
    events.step(note, report=True)
    return cached


def save_submitted_input(client: Client, job: Job, dest: str) -> None:
    """Write the requests of round 1 as the server holds them (its copy of each uploaded file,
    in order) to ``dest``: what was submitted, whatever became of the local input."""
    files.make_private_dir(os.path.dirname(dest))
    with atomic_output(dest, mode=0o600) as out:
        for ch in job.record.rounds[0].chunks if job.record.rounds else []:
            if not ch.file_id:
                continue

            def on_line(line: bytes) -> None:
                out.write(line.rstrip(b"\r\n") + b"\n")

            res = client.stream_content(ch.file_id, 0, on_line)
            if res.interrupted:
                raise APIConnectionError(
                    f"reading the uploaded file {ch.file_id} broke ({res.interrupted})",
                    hint="Run the same command again.",
                )


def resolve_output(
    rec: JobRecord,
    fmt: Optional[str],
    out: Optional[str],
    err: Optional[str],
    csv_path: Optional[str],
    column: Optional[str] = None,
    job_dir: Optional[str] = None,
    columns: Optional[str] = None,
) -> Tuple[str, str, str, Optional[str], Optional[str], Optional[str]]:
    """(format, OUT, ERR, CSV, answer column, columns) from the options given, else the job's
    remembered ones, else defaults.

    Output settings given once (e.g. to run_batch.py) are remembered in job.json (``results``)
    and used by later fetches that give none. A remembered path whose folder is gone is refused
    (a moved project must not recreate its old place)."""
    source = rec.source
    last = rec.results or ResultsSettings()
    csv_path = csv_path or last.csv
    if fmt is None:
        fmt = last.format or ("csv" if (source and source.kind == "csv") or csv_path else "raw")
    if out:
        out_path = os.path.abspath(out)
    elif last.output and last.format == fmt:
        out_path = last.output
        _parent_must_exist(out_path, "results file")
    else:
        out_path = default_job_output(rec, fmt, job_dir)
        _parent_must_exist(out_path, "results file")
    if err:
        err_path = os.path.abspath(err)
    elif last.errors and last.output == out_path:
        err_path = last.errors
        _parent_must_exist(err_path, "errors file")
    else:
        err_path = default_error_path(out_path)
    protected = {
        "job's input": rec.input.path,
        "source CSV": source.path if source else None,
        "CSV given with --csv": csv_path,
    }
    for rnd in rec.rounds:
        protected[f"input of round {rnd.round}"] = rnd.input_path
    files.refuse_overwrite(
        {"OUT": out_path, "ERR": err_path}, protected, folders={"job directory": job_dir}, results=True
    )
    refuse_another_jobs_output(job_dir, rec.job_id, {"OUT": out_path, "ERR": err_path})
    if job_dir:  # a path that comes from the job (remembered or derived), not from this command line
        given = {os.path.abspath(p) for p in (out, err) if p}
        for flag, path in (("-o", out_path), ("--errors", err_path)):
            if path not in given:
                must_stay_in_project(path, job_dir, flag)
    column = column or last.column
    if columns is None and fmt == "csv" and last.format == "csv":
        columns = last.columns
    return fmt, out_path, err_path, os.path.abspath(csv_path) if csv_path else None, column, columns


def must_stay_in_project(path: str, job_dir: str, flag: str) -> None:
    """A file a job says to write (its remembered results, or beside its input) lies in the job's
    project folder: a job directory that came from elsewhere (a repository, a zip, a shared
    drive) cannot make a fetch write over a file outside it."""
    project = Job(job_dir).project_folder()
    target = os.path.realpath(path)
    try:
        inside = os.path.commonpath([os.path.realpath(project), target]) == os.path.realpath(project)
    except ValueError:  # another drive
        inside = False
    if not inside:
        raise UsageError(
            f"the job at {commands.display_path(job_dir)} says to write {path}, outside its project folder "
            f"({project}); a job directory never sends results outside it on its own",
            hint=f"If that is where you want them, say so: pass {flag} {commands.display_path(path)}.",
        )


def _parent_must_exist(path: str, what: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(
            f"the {what} of this job, {path}, is in a folder that no longer exists ({parent})",
            hint="Pass -o PATH (and --errors PATH) to write the results elsewhere; the job does not "
            "recreate folders that were moved or deleted.",
        )


def remember_output(
    job: Job,
    fmt: str,
    out_path: str,
    err_path: str,
    csv_path: Optional[str],
    column: Optional[str] = None,
    columns: Optional[str] = None,
) -> None:
    """Record the output settings in job.json (a locked job)."""
    remember = ResultsSettings(
        format=fmt, output=out_path, errors=err_path, csv=csv_path, column=column, columns=columns or None
    )
    if job.record.results != remember:
        job.record.results = remember
        job.save()


@dataclass
class JobRefresh:
    store: JobStore
    targets: List[Target]
    reports: List[BatchReport]
    summaries: List[Dict[str, Any]]
    summary: Dict[str, Any]
    complete: bool  # every batch terminal and drained (or unreachable), and the job fully submitted
    record: JobRecord
    # second batches of a chunk (``duplicates``): their results are merged and their cost
    # counted, but they are not the job's batches (its status and counts leave them out)
    extra_targets: List[Target] = field(default_factory=list)
    extra_reports: List[BatchReport] = field(default_factory=list)
    _lost: Dict[str, int] = field(default_factory=dict)

    @property
    def all_targets(self) -> List[Target]:
        return self.targets + self.extra_targets

    @property
    def all_reports(self) -> List[BatchReport]:
        return self.reports + self.extra_reports

    @property
    def unreachable(self) -> List[Dict[str, Any]]:
        return [
            {
                "batch_id": r.batch_id,
                "round": r.round,
                "chunk": r.chunk,
                "reason": r.unreachable,
                "results_lost": self.results_lost(r),
            }
            for r in self.reports
            if r.unreachable
        ]

    def results_lost(self, report: BatchReport) -> int:
        """Requests of an unreachable batch that completed on the server but whose successful
        result is not on disk: running them again would pay for them twice. 0 when what was
        downloaded before covers every completion (e.g. only the error file is gone)."""
        if report.batch_id not in self._lost:
            done = counts_of(report.batch or {})["completed"]
            for ch in self.record.chunks():
                if ch.batch_id == report.batch_id:  # the last counts seen, when the batch itself is gone
                    done = max(done, (ch.request_counts or {}).get("completed") or 0)
            self._lost[report.batch_id] = max(0, done - successes_on_disk(self.store, report.batch_id))
        return self._lost[report.batch_id]


def successes_on_disk(store: Store, batch_id: str) -> int:
    """The distinct custom_ids with a successful result in a batch's downloaded output file."""
    path = store.raw_path(batch_id, "output")
    seen = FileIds(path)
    try:
        for off, _, obj in iter_raw(path):
            cid = obj.get("custom_id")
            if isinstance(cid, str) and is_success(obj):
                seen.first(cid, off)
    finally:
        seen.close()
    return len(seen.table)


def batch_analytics(client: Client, report: BatchReport) -> Optional[Dict[str, Any]]:
    """A finished batch's analytics (tokens, billed cost): from its listing, or asked for; None
    while it runs, or when the server cannot say (the cost is then the price-table estimate)."""
    if isinstance((report.batch or {}).get("analytics"), dict):
        return report.batch["analytics"]
    if not report.terminal or report.unreachable:
        return None
    try:
        found = client.batch_analytics(report.batch_id)
    except DWError:
        return None
    return found if isinstance(found, dict) else None


def refresh_job(client: Client, job: Job) -> JobRefresh:
    """Download what is new for every batch of the job and record statuses (a locked job)."""
    job.require_lock()
    duplicates.check(client, job)  # a second batch of a chunk found since the last check: recorded, cancelled
    rec = job.record
    known = rec.to_dict()  # job.json is written again only when this refresh changed something
    targets = job_targets(rec)
    store = JobStore(job)
    # the job's batches listed a page at a time; a batch the list lacks is read (and reported) by update
    objs = jobstatus.get_job_batches(client, rec)  # a deleted batch: its recorded files
    reports = update(client, store, targets, batch_objs=objs)
    extra = [Target(d, rnd.round, ch.index) for rnd, ch in rec.round_chunks() for d in ch.duplicates or ()]
    extra_objs = jobstatus.get_batches(client, [t.batch_id for t in extra], rec.job_id, missing_ok=True)
    extra_reports = update(client, store, extra, batch_objs=extra_objs) if extra else []
    rec.record_batches({r.batch_id: r.batch for r in reports if r.batch})
    chunks_by_batch = {c.batch_id: c for c in rec.chunks() if c.batch_id}
    for r in reports:  # what the server billed, once a batch has ended (the listing may carry it)
        ch = chunks_by_batch.get(r.batch_id)
        if ch is not None and r.terminal and not r.unreachable and "analytics" not in (r.batch or {}):
            if ch.analytics is None or any(r.new_lines.values()):
                ch.analytics = batch_analytics(client, r) or ch.analytics
    if rec.to_dict() != known:
        job.save()
    chunks = {c.batch_id: c for c in rec.chunks() if c.batch_id}
    summaries = [batch_summary(r, store, chunks.get(r.batch_id)) for r in reports]
    summary = jobstatus.job_status(summaries, rec)
    complete = summary["finished"] and all(r.drained or r.unreachable for r in reports + extra_reports)
    return JobRefresh(store, targets, reports, summaries, summary, complete, rec, extra, extra_reports)


def warn_changed_source(rec: JobRecord) -> None:
    """A results file keyed by custom_id does not read the source CSV, but a CSV that changed since
    the build is worth knowing about before its rows and these results are put side by side."""
    source = rec.source
    fp = source.fingerprint if source else None
    if source is None or not source.path or fp is None or fp.check(source.path) != "changed":
        return
    note = (
        f"{source.path} changed since the batch was built from it; these results are keyed by custom_id and "
        "follow the requests as built, not the CSV's rows as they are now"
    )
    events.step(note, report=True)


def check_csv_source(rec: JobRecord, csv_path: str, requests_file: Optional[str]) -> bool:
    """The CSV the answers are written beside is the one the requests were built from, or its rows
    are matched by an id column (then re-sorting or inserting rows is harmless), or by content:
    True when each row's prompt, made again with the recorded template, must find its request
    (the CSV changed, its rows were numbered by position)."""
    source = rec.source
    fp = source.fingerprint if source else None
    if fp is None:
        return False
    state = fp.check(csv_path)
    if state != "changed":
        return False
    if source is not None and source.id_column:
        note = (
            f"{csv_path} changed since the batch was built; rows are matched by the {source.id_column!r} "
            "column, so the answers still go beside their own rows"
        )
        events.step(note, report=True)
        return False
    if source is not None and source.template and requests_file:
        note = (
            f"{csv_path} changed since the batch was built (its rows were numbered by position); each row is "
            "matched to its request by the prompt it made, so the answers still go beside their own rows"
        )
        events.step(note, report=True)
        return True
    raise UsageError(
        f"{csv_path} changed since the batch was built from it, and its rows were numbered by position: answers "
        "written into it now could land beside the wrong rows",
        hint="Restore the CSV as it was when the batch was built, or fetch with --format simple or --format raw "
        "(results keyed by custom_id).",
    )


_COUNTS_KEYS = (
    "requests",
    "succeeded",
    "failed",
    "missing",
    "answers",
    "output",
    "errors",
    "format",
    "failed_sample",
    "missing_sample",
    "bad_answer_sample",
    "unexpected",
)


def _counts_doc(counts: MergeCounts, out_path: str, err_path: str, fmt: str) -> Dict[str, Any]:
    doc: Dict[str, Any] = {
        "requests": counts.requests,
        "succeeded": counts.succeeded,
        "failed": counts.failed,
        "missing": counts.missing,
        "answers": dict(counts.answers),
        "output": out_path,
        "errors": err_path,
        "format": fmt,
    }
    doc["failed_sample"] = counts.failed_sample
    doc["missing_sample"] = counts.missing_sample
    doc["bad_answer_sample"] = counts.bad_answer_sample
    doc["unexpected"] = counts.unexpected
    return doc


def add_fix(doc: Dict[str, Any], merger: Merger) -> None:
    """The rerun that fixes the bad answers (``fix``: its changes and why)."""
    if not bad_answers(doc):
        return
    found = fixes.pick(merger.tally)
    doc["fix"] = found.to_dict() if found else None


def fix_lines(doc: Dict[str, Any]) -> List[str]:
    """What a report's bad answers and their fix say (lines for people)."""
    if not bad_answers(doc):
        return []
    bad = ", ".join(f"{n} {check}" for check, n in doc["answers"].items() if n and check != answers.GOOD)
    lines = [f"warning: answers that are not answers: {bad} (HTTP 200, billed); see bad_answer_sample"]
    if doc.get("fix"):
        lines.append(f"fix: {doc['fix']['reason']}")
    return lines


@dataclass
class Written:
    """What one merge wrote: the counts, the merger (its tally of bad answers) and the index."""

    counts: MergeCounts
    merger: Merger
    index: Any


def write_results(
    store: Store,
    targets: Sequence[Target],
    fmt: str,
    out_path: str,
    err_path: str,
    requests_file: Optional[str],
    rows: Optional[Any],
    reason: str,
    expected: int,
    raw_cells: bool,
    columns: Optional[str] = None,
    job: Optional[Job] = None,
) -> Written:
    """The one merge of downloaded results, for a job and for bare batch ids alike: OUT and ERR
    written in the order of ``requests_file`` (else as the lines arrived), or CSV ``rows``.
    Without the requests, the ``expected`` count (the servers' or the job's) says how many are
    missing, by one formula. A ``job``'s answers it did not send are merged too (``answerreuse``)."""
    if job is None:
        index = build_index(store, targets, capacity=expected)
    else:
        index = answerreuse.job_index(job, store, targets, capacity=expected)
    reused = job is not None and job.record.reuse is not None and job.record.reuse.not_sent > 0
    merger = Merger(index, reason, raw_cells, mark_reused=reused)
    try:
        if fmt == "csv":
            counts = merger.write_csv(rows, out_path, err_path, requests_path=requests_file, columns=columns)
        else:
            order = iter_input_order(requests_file) if requests_file else index.ids_in_order()
            counts = merger.write_jsonl(order, requests_file, fmt, out_path, err_path)
    finally:
        index.close()
    if requests_file is None:  # requests never seen in any file: the expected count tells the missing
        answered = sum(counts.answers.values())
        counts.missing = max(counts.missing, expected - answered - counts.failed)
        counts.requests = max(counts.requests, answered + counts.failed + counts.missing)
    return Written(counts, merger, index)


def report_written(doc: Dict[str, Any], written: Written, fmt: str, out_path: str, err_path: str) -> List[str]:
    """The counts, samples and fix of a merge into ``doc``; its notes said as warnings for the
    report, its bad answers and their fix as lines. Returns the lines said."""
    doc.update(_counts_doc(written.counts, out_path, err_path, fmt))
    add_fix(doc, written.merger)
    for note in written.counts.notes:
        events.warning(note, report=True)
    lines = fix_lines(doc)
    for line in lines:
        events.step(line)
    return [f"warning: {note}" for note in written.counts.notes] + lines


MERGE_KEYS = (*_COUNTS_KEYS, "fix", "reuse")  # what a merge adds to a fetch's report (unchanged.Merged.report)


def merge_inputs(store: Store, targets: Sequence[Target], extra: Sequence[Tuple[str, Optional[str]]]) -> List[Any]:
    """What a merge reads, named: each raw file of ``targets`` in order, then ``extra``."""
    named: List[Tuple[str, Optional[str]]] = []
    for t in targets:
        for kind in KINDS:
            named.append((f"{kind} of batch {t.batch_id}", store.raw_path(t.batch_id, kind)))
    return named + list(extra)


def replay_merge(doc: Dict[str, Any], last: Merged, warnings: List[str]) -> None:
    """A merge still current: its report, warnings and narration again, as it gave them (the
    warnings into ``warnings``: they are the record's, not said again as warnings)."""
    events.step("nothing new since the last merge: the results and errors files are as it wrote them")
    for line in last.narration:
        events.step(line)
    doc.update(last.report)
    warnings.extend(last.warnings)


def fetch_job(
    client: Client,
    job: Job,
    fmt: Optional[str] = None,
    out: Optional[str] = None,
    err: Optional[str] = None,
    csv_path: Optional[str] = None,
    merge: bool = True,
    column: Optional[str] = None,
    raw_cells: bool = False,
    columns: Optional[str] = None,
) -> Outcome:
    """Download, verify and (with ``merge``) write OUT/ERR for a job. The job is locked (the workflow takes the lock).

    Returns the report and the outcome (0, 5 or 6). The warnings a merge gives are events for the
    report (the workflow puts them first in its ``warnings``); ``warnings`` holds the others."""
    rec = job.record
    ref = refresh_job(client, job)
    store, reports, summary, complete = ref.store, ref.reports, ref.summary, ref.complete
    targets = ref.all_targets  # second batches of a chunk included: what they answered counts
    warnings: List[str] = []
    doc: Dict[str, Any] = {
        "complete": complete,
        "status": summary["status"],
        "request_counts": summary["request_counts"],
    }
    if merge:
        source = rec.source
        fmt, out_path, err_path, csv_path, column, columns = resolve_output(
            rec, fmt, out, err, csv_path, column, job.dir, columns
        )
        src_csv = None
        if fmt == "csv":
            src_csv = csv_path or (source.path if source else None)
            if src_csv and not os.path.isfile(src_csv):
                raise UsageError(f"{src_csv}: no such file", hint="Pass --csv FILE with the original CSV.")
        reason = MISSING_NOT_RUN if summary["finished"] else MISSING_PENDING
        if ref.unreachable:
            reason = "no result: a batch of the job cannot be read from the server (see unreachable)"
        plan = unchanged.Plan(
            {
                "format": fmt,
                "output": out_path,
                "errors": err_path,
                "csv": src_csv,
                "column": column,
                "columns": columns,
                "raw_cells": raw_cells,
                "missing_reason": reason,
                "expected": int(rec.input.requests or 0),
                "input": rec.input.to_dict(),
                "source": source.to_dict() if source else None,
                "targets": [[t.batch_id, t.round, t.chunk] for t in targets],
                "reuse": rec.reuse.to_dict() if rec.reuse else None,
            },
            merge_inputs(
                store,
                targets,
                [
                    ("the job's input", rec.input.path),
                    (SERVER_COPY, job.path("results", SUBMITTED_INPUT)),
                    ("the source CSV", source.path if source else None),
                    ("the CSV the answers go beside", src_csv),
                    *answerreuse.merge_inputs(job),
                ],
            ),
        )
        why = plan.why_merge(rec.merged, [out_path, err_path])
        if why is None and rec.merged is not None:
            replay_merge(doc, rec.merged, warnings)
            usage: Any = unchanged.RecordedUsage(rec.merged)
        else:
            if rec.merged is not None:
                events.step(f"merging the results again ({why})")
            with events.overheard() as heard:  # what the merge says, kept for a fetch with nothing new
                requests_file = requests_as_submitted(client, job)
                plan.written_here(SERVER_COPY, job.path("results", SUBMITTED_INPUT))
                rows: Optional[Any] = None
                if fmt != "csv":
                    warn_changed_source(rec)
                if fmt == "csv" and src_csv:
                    by_content = check_csv_source(rec, src_csv, requests_file)
                    rows = MatchedCsvRows(
                        src_csv, source.to_dict() if source else None, requests_file, column, by_content
                    )
                elif fmt == "csv":  # a job built from prompts or JSONL: one row per request
                    if requests_file is None:
                        raise UsageError(
                            "--format csv needs the job's requests, and neither the input nor the server's copy "
                            "can be read",
                            hint="Fetch with --format simple or raw, or restore the job's input.",
                        )
                    rows = RequestRows(requests_file, column)
                written = write_results(
                    store,
                    targets,
                    fmt,
                    out_path,
                    err_path,
                    requests_file,
                    rows,
                    reason,
                    int(rec.input.requests or 0),
                    raw_cells,
                    columns,
                    job,
                )
                noted = [e.line for e in heard if e.report]  # the notes on the requests and the CSV, as said
                said = noted + report_written(doc, written, fmt, out_path, err_path)
            doc["reuse"] = answerreuse.doc(rec.reuse, written.index, rec.completion_window)
            usage = written.index
            rec.merged = plan.record(
                [out_path, err_path],
                {k: doc[k] for k in MERGE_KEYS if k in doc},
                heard.report_warnings(),
                said,
                written.index.usage,
            )
            job.save()
        checked = {"counts": dict(doc["answers"]), "batches": [t.batch_id for t in targets], "complete": complete}
        if rec.answers != checked:  # what poll.py reports of the answers
            rec.answers = checked
            job.save()
        billed = {c.batch_id: billed_cost(c.analytics) for c in rec.chunks() if c.batch_id}
        billed.update({r.batch_id: billed_cost(batch_analytics(client, r)) for r in ref.extra_reports})
        windows: Dict[Optional[int], str] = {r.round: r.completion_window for r in rec.rounds}
        doc["usage"], doc["cost"] = usage_and_cost(usage, ref.all_reports, windows, billed)
        remember_output(job, fmt, out_path, err_path, csv_path, column, columns)
        del usage  # (the merge's tables freed before the answers are read in)
    added = answerreuse.read_in(job.dir, rec)  # the good answers of its finished batches, for later jobs
    if added:
        events.step(f"{added} good answer(s) added to the answer store, for later jobs of this folder")
    doc["batches"] = [batch_report_doc(r, store, s) for r, s in zip(reports, ref.summaries)]
    if summary["unsubmitted"]:
        doc["unsubmitted"] = summary["unsubmitted"]
    if ref.unreachable:
        doc["unreachable"] = ref.unreachable
        lost = sum(u["results_lost"] for u in doc["unreachable"])
        if lost and "cost" in doc:
            warnings.append(
                f"cost counts the downloaded results only: {lost} request(s) completed on the server (and were "
                "billed) but their results and token counts can no longer be downloaded"
            )
    doc["warnings"] = warnings
    doc["job"] = job.dir
    if merge:
        return Outcome(doc, exit_code_for(complete, doc["failed"], doc["missing"], bad_answers(doc)))
    return Outcome(doc, EXIT_NOT_FINISHED if not complete else EXIT_OK)


def fetch_bare(
    client: Client,
    batch_ids: Sequence[str],
    out: str,
    err: Optional[str],
    fmt: str,
    input_path: Optional[str] = None,
    csv_path: Optional[str] = None,
    column: Optional[str] = None,
    raw_cells: bool = False,
    columns: Optional[str] = None,
) -> Outcome:
    """Fetch bare batch ids into OUT with the state in ``OUT.dwstate.json``."""
    out_path = os.path.abspath(out)
    err_path = os.path.abspath(err) if err else default_error_path(out_path)
    store = FileStore(out_path)
    files.refuse_overwrite(
        {"OUT": out_path, "ERR": err_path},
        {"input given with --input": input_path, "CSV given with --csv": csv_path, "state file": store.path},
        results=True,
    )
    try:
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
    except OSError as exc:
        files.reraise_named(exc, os.path.dirname(out_path), what="the folder of OUT")
    store.lock()
    try:
        store.load()
        store.set_batches(batch_ids)
        targets = [Target(bid) for bid in batch_ids]
        reports = update(client, store, targets, job_batches=False)
        store.save()
        summaries = [batch_summary(r, store) for r in reports]
        summary = jobstatus.job_status(summaries, None)
        complete = summary["finished"] and all(r.drained or r.unreachable for r in reports)
        rows: Optional[Any] = None
        if fmt == "csv":
            if not input_path:
                raise UsageError(
                    "--format csv with batch ids needs --input FILE (and --csv FILE for a batch built from a CSV)",
                    hint="Or use --job DIR, which remembers both.",
                )
            rows = MatchedCsvRows(csv_path, None, input_path, column) if csv_path else RequestRows(input_path, column)
        reason = MISSING_NOT_RUN if summary["finished"] else MISSING_PENDING
        expected = sum(s["request_counts"]["total"] for s in summaries)
        written = write_results(
            store, targets, fmt, out_path, err_path, input_path, rows, reason, expected, raw_cells, columns
        )
        index = written.index
        doc: Dict[str, Any] = {
            "complete": complete,
            "status": summary["status"],
            "request_counts": summary["request_counts"],
        }
        report_written(doc, written, fmt, out_path, err_path)  # its warnings: events for the report
        billed = {r.batch_id: billed_cost(batch_analytics(client, r)) for r in reports}
        doc["usage"], doc["cost"] = usage_and_cost(index, reports, {}, billed)
        doc["batches"] = [batch_report_doc(r, store, s) for r, s in zip(reports, summaries)]
        unreachable = [{"batch_id": r.batch_id, "reason": r.unreachable} for r in reports if r.unreachable]
        if unreachable:
            doc["unreachable"] = unreachable
        doc["warnings"] = []  # (the merge's: events for the report)
        doc["job"] = None
        doc["state"] = store.path
        return Outcome(doc, exit_code_for(complete, doc["failed"], doc["missing"], bad_answers(doc)))
    finally:
        store.unlock()
