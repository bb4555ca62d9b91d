"""Validating: a batch file checked locally against every rule the server enforces, its report
(and, with --report, that report written to a file); nothing is sent."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from ..core import commands
from ..core.errors import FileSystemError, InputError, UsageError, file_error
from ..core.files import atomic_write_json, refuse_overwrite
from ..core.optionspec import in_range, option
from ..core.output import Outcome, narrate
from ..validation.validate import (
    MAX_BODY_BYTES,
    MAX_FILE_BYTES,
    MAX_REQUESTS_PER_FILE,
    check_chunk_size,
    print_errors,
    validate_file,
)


@dataclass
class ValidateOptions:
    """validate_batch_file.py's file and options (each field is also its flag, ``optionspec``)."""

    file: Optional[str] = option("file", positional=True, show=commands.display_path, help="the batch JSONL file")
    max_errors: int = option(
        "--max-errors",
        type=int,
        default=50,
        metavar="N",
        check=in_range("50", at_least=0),
        help="errors to list (default 50)",
    )
    max_requests: int = option(
        "--max-requests",
        type=int,
        default=MAX_REQUESTS_PER_FILE,
        metavar="N",
        check=in_range("1000", at_least=1),
        help="requests per uploaded file, for the chunk plan (default %(default)s)",
    )
    max_bytes: int = option(
        "--max-bytes",
        type=int,
        default=MAX_FILE_BYTES,
        metavar="N",
        check=in_range("50000000", at_least=1),
        help="bytes per uploaded file, for the chunk plan (default %(default)s)",
    )
    max_body_bytes: int = option(
        "--max-body-bytes",
        type=int,
        default=MAX_BODY_BYTES,
        metavar="N",
        check=in_range(str(MAX_BODY_BYTES), at_least=1),
        help="bytes per request body (default %(default)s)",
    )
    report: Optional[str] = option(
        "--report",
        metavar="FILE",
        show=commands.display_path,
        help="also write the JSON report to FILE (even when invalid)",
    )

    def check_options(self) -> None:
        path = str(self.file)
        if not os.path.isfile(path):
            what = "is a directory, not a file" if os.path.isdir(path) else "no such file"
            raise UsageError(f"{path}: {what}", hint="Pass the path of a JSONL batch file.")


def validate(options: ValidateOptions) -> Outcome:
    """validate_batch_file.py: the report of a valid file; an invalid one is an InputError (exit 2)
    after its errors are printed on stderr (``--report`` gets the report in both cases)."""
    path = str(options.file)
    options.check_options()  # (the file exists: also when called without optionspec.check)
    if options.report:
        refuse_overwrite({"--report": options.report}, {"batch file": path}, results=True)
    rep = validate_file(
        path,
        max_requests=options.max_requests,
        max_bytes=options.max_bytes,
        max_body_bytes=options.max_body_bytes,
        line_limit=MAX_FILE_BYTES,
    )
    check_chunk_size(rep, options.max_bytes)
    doc = rep.as_dict()
    doc["errors"] = doc["errors"][: max(0, options.max_errors)]
    doc["chunks"] = len(rep.chunks)
    if options.report:
        try:
            atomic_write_json(options.report, doc, mode=None)
        except FileSystemError as exc:  # name the option, whatever the cause
            raise file_error(exc.os_error, options.report, "--report", what="the report") from exc.os_error
    for w in rep.warnings:
        narrate(f"warning: {w}")
    if rep.valid:
        narrate(
            f"{path}: valid, {rep.requests} requests, {rep.bytes} bytes"
            + (f", {len(rep.chunks)} chunks" if len(rep.chunks) > 1 else "")
        )
        return Outcome(doc)
    print_errors(rep, options.max_errors)
    raise InputError(
        f"{path}: {rep.errors_total} invalid line(s); nothing was sent",
        hint="Fix the lines listed above and run validate_batch_file.py again.",
    )
