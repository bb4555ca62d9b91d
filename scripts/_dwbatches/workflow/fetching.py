"""Fetching: bring a job's (or batch ids') results up to date and write them in input order.

The engine is ``fetch`` (downloads, checks, merge); here the command around it: the options,
the job's lock, the `next` step and the summary line on stderr.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from ..api.requestedit import Changes
from ..core import commands
from ..core.errors import EXIT_UNSUCCESSFUL, UsageError
from ..core.optiongroups import Target
from ..core.optionspec import group, option, to_argv
from ..core.output import Outcome, narrate
from ..jobs.job import Job
from ..results import fetch, merge
from ..results.merge import FORMATS, parse_columns
from . import narration
from .common import Connection, holding, open_target

if TYPE_CHECKING:  # annotations only
    from ..core.http import Client


@dataclass
class OutputOptions:
    """Where and how results are written (None: the job's remembered choice, else the default);
    each field is also its flag (``optionspec``)."""

    output: Optional[str] = option(
        "-o",
        "--output",
        metavar="OUT",
        show=commands.display_path,
        help="merged results file (default: <input stem>.results.jsonl beside the input; .csv for --format csv)",
    )
    errors: Optional[str] = option(
        "--errors", metavar="ERR", show=commands.display_path, help="errors file (default: <OUT stem>.errors.jsonl)"
    )
    format: Optional[str] = option(
        "--format",
        choices=FORMATS,
        help="raw (the server's lines), simple (custom_id, ok, answer_check, content, usage, error) or csv: the "
        "original CSV with answer, error and answer_check columns for a job built from a CSV, else one row per "
        "request (custom_id, prompt, answer, error, answer_check) (default: csv for a job built from a CSV, "
        "else raw)",
    )
    csv: Optional[str] = option(
        "--csv",
        metavar="FILE",
        show=commands.display_path,
        help="the original CSV, for --format csv (default: the job's source)",
    )
    column: Optional[str] = option(
        "--column", metavar="NAME", help="--format csv: the name of the answer column (default: response)"
    )
    columns: Optional[str] = option(
        "--columns",
        metavar="LIST",
        help="--format csv: the columns to write, in order, comma-separated, each a column of the results CSV "
        "or NEW=COLUMN to rename it, e.g. question=prompt,answer=response (default: every column)",
    )
    raw_cells: bool = option(
        "--raw-cells",
        switch=True,
        help="--format csv: write answers, errors and prompts that start with = + - or @ as they are (by default "
        "they get a leading ' so that a spreadsheet shows them as text instead of running them as formulas)",
    )

    def given(self) -> bool:
        return any((self.format, self.output, self.errors, self.csv, self.column, self.columns))

    def check(self) -> None:
        """The options on their own (the columns named are checked against the CSV when it is written)."""
        if self.columns is not None:
            parse_columns(self.columns)
        if self.columns and self.format not in (None, "csv"):
            raise UsageError("--columns applies to --format csv", hint="Drop --columns, or pass --format csv.")

    def check_files(self) -> None:
        self.check()
        if self.csv and not os.path.isfile(self.csv):
            raise UsageError(f"{self.csv}: no such file", hint="--csv names the original CSV file.")

    def check_options(self) -> None:  # (optionspec.check)
        self.check_files()


RESULTS = "results"  # the --help section of the output options


@dataclass
class FetchOptions:
    """What fetch_results.py fetches and where it writes (each field is also its flag)."""

    target: Target = group(Target)
    output: OutputOptions = group(OutputOptions, title=RESULTS)
    input: Optional[str] = option(
        "--input",
        metavar="FILE",
        show=commands.display_path,
        help="with batch ids: the original batch input, for input order and missing requests",
    )

    def check_options(self) -> None:
        if self.input and not os.path.isfile(self.input):
            raise UsageError(f"{self.input}: no such file", hint="--input names the original batch JSONL file.")
        if self.target.job and self.input:
            raise UsageError("--input is only for batch ids; a job knows its input")


def fetch_line(options: FetchOptions) -> str:
    """The fetch_results.py command with these options."""
    return commands.command("fetch_results.py", *to_argv(options))


def fetch_command(options: FetchOptions, conn: Connection) -> Outcome:
    """fetch_results.py: the results of its job, or of its batch ids."""
    client, job, ids = open_target("fetch_results.py", conn, options.target.job, options.target.batch_ids)
    if job is not None:
        return fetch_job(client, job, options.output)
    return fetch_batches(client, ids, options.output, options.input)


def fetch_job(client: Client, job: Job, options: OutputOptions) -> Outcome:
    """Fetch a job's results (the job is locked while it works)."""
    with holding(job), narration.reporting() as warned:
        out = fetch.fetch_job(
            client,
            job,
            fmt=options.format,
            out=options.output,
            err=options.errors,
            csv_path=options.csv,
            column=options.column,
            columns=options.columns,
            raw_cells=options.raw_cells,
        )
    out.doc["warnings"][:0] = warned  # the merge's warnings first, as it gave them
    # lost results matter while their requests have no result of any round (a --force retry gives them one)
    lost = sum(u.get("results_lost", 0) for u in out.doc.get("unreachable", [])) if out.doc.get("missing") else 0
    again = FetchOptions(target=Target(job=job.dir), output=options)
    out.doc["next"] = commands.after_fetch(
        out.code,
        job.dir,
        job.record,
        to_argv(again.target),
        to_argv(again),
        unsubmitted=bool(out.doc.get("unsubmitted")),
        results_lost=lost,
        retry_args=retry_args(out.doc),
    )
    if lost:
        narrate(
            f"{lost} request(s) completed on the server, but their results can no longer be downloaded "
            "(see unreachable); running them again means paying again: "
            f"{commands.rerun_lost(job.dir)}"
        )
    narrate_summary(out.doc)
    return out


def fetch_batches(
    client: Client, batch_ids: Sequence[str], options: OutputOptions, input_path: Optional[str]
) -> Outcome:
    """Fetch bare batch ids into OUT (default ``<first id>.results.jsonl``; state beside it)."""
    fmt = options.format or ("csv" if options.csv else "raw")
    out_path = options.output or f"{batch_ids[0]}.results.{'csv' if fmt == 'csv' else 'jsonl'}"
    with narration.reporting() as warned:
        out = fetch.fetch_bare(
            client,
            batch_ids,
            out_path,
            options.errors,
            fmt,
            input_path=input_path,
            csv_path=options.csv,
            column=options.column,
            columns=options.columns,
            raw_cells=options.raw_cells,
        )
    out.doc["warnings"][:0] = warned
    again = FetchOptions(
        target=Target(batch_ids=list(batch_ids)), output=replace(options, output=out_path), input=input_path
    )
    out.doc["next"] = commands.after_fetch(out.code, None, None, to_argv(again.target), to_argv(again))
    if out.code == EXIT_UNSUCCESSFUL:
        out.doc["hint"] = (
            "the failed and missing requests are listed in the errors file; to rerun them "
            "automatically, submit with submit.py / run_batch.py (a job) and use retry_failed.py"
        )
    narrate_summary(out.doc)
    return out


def retry_args(doc: Dict[str, Any]) -> Optional[List[str]]:
    """The arguments of the retry a fetch report calls for: the fix of its bad answers (new
    settings, or a rerun as they were), or only the failed and missing requests when a rerun
    cannot fix its bad answers (filtered), or None when nothing is left that a retry would help."""
    if not fetch.bad_answers(doc):
        return []
    fix = doc.get("fix")
    if fix:
        return Changes.from_dict(fix["changes"]).args()
    if doc.get("failed") or doc.get("missing"):
        return ["--rerun", f"{merge.FAILED},{merge.MISSING}"]
    return None


def narrate_summary(doc: Dict[str, Any]) -> None:
    """One line on stderr: how many succeeded, failed and are missing, where, and the cost."""
    if "succeeded" not in doc:
        return
    text = f"{doc['succeeded']}/{doc['requests']} succeeded"
    bad = fetch.bad_answers(doc)
    if bad:
        text += f", {bad} answered badly (see answers)"
    if doc["failed"]:
        text += f", {doc['failed']} failed"
    if doc["missing"]:
        text += f", {doc['missing']} without a result"
    text += f" ({doc['status']}); results: {commands.display_path(doc['output'])}"
    reuse = doc.get("reuse")
    if reuse and reuse["reused"] + reuse["copies"]:
        text += f"; {reuse['sent']} sent, {reuse['reused'] + reuse['copies']} answered without being sent"
        if reuse.get("saved_usd") is not None:
            text += f" (saved ${reuse['saved_usd']})"
    cost, usage = doc.get("cost") or {}, doc.get("usage") or {}
    if cost.get("usd") is not None and usage.get("requests"):
        how = "billed" if cost.get("billed_usd") is not None else f"estimated, prices of {cost['prices_as_of']}"
        text += (
            f"; cost ${cost['usd']} ({how}; {usage['input_tokens']} input + {usage['output_tokens']} output tokens"
            + (f", {usage['reasoning_tokens']} of them reasoning" if usage.get("reasoning_tokens") else "")
            + ")"
        )
    if doc["failed"] or doc["missing"] or bad:
        text += f"; errors: {commands.display_path(doc['errors'])}"
    narrate(text)
