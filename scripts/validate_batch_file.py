#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = [
#   "requests>=2.32.4,<3",
#   "python-dotenv>=1.2.2,<2; python_version >= '3.10'",
#   "python-dotenv>=1.0,<2; python_version < '3.10'",
# ]
# ///
"""Check a batch JSONL file locally against every rule the Doubleword server enforces.

Also catches what the server silently lets through (duplicate custom_ids, "stream": true,
bodies missing the field their endpoint needs). Reads the file in one streaming pass (a file
of 32 MB or more in several processes at once), in bounded memory; needs no API key and sends
nothing. Line numbers are physical and 1-based.

Warnings whose fix names --reasoning or --max-tokens (a model that thinks before it answers,
and whose thinking counts against max_tokens, asked for too few tokens) are fixed by
rebuilding the file: python3 scripts/create_batch_file.py NEW.jsonl --from-batch FILE
--reasoning none (or --max-tokens N), every request kept, ids and order unchanged.

examples:
  python3 scripts/validate_batch_file.py requests.jsonl
  python3 scripts/validate_batch_file.py requests.jsonl --max-errors 5
  python3 scripts/create_batch_file.py fixed.jsonl --from-batch requests.jsonl --reasoning none

output: when the file is valid, the JSON report below on stdout (exit 0). When it is not,
stdout stays empty, each error is printed on stderr as "line N (custom_id 'ID'): message"
and the exit code is 2. --report FILE also writes the report to FILE in both cases.

The counts of the report are all over the same lines: a request is a line that passes every
check, and a custom_id used again is an error on each later line that uses it."""

from __future__ import annotations

import os
from typing import Optional, Sequence

from _dwbatches.core import output
from _dwbatches.core.errors import EXIT_OK, FileSystemError, InputError, UsageError, file_error
from _dwbatches.core.files import atomic_write_json, refuse_overwrite
from _dwbatches.core.flags import check_number
from _dwbatches.validation.validate import (
    MAX_BODY_BYTES,
    MAX_FILE_BYTES,
    MAX_REQUESTS_PER_FILE,
    check_chunk_size,
    print_errors,
    validate_file,
)
from _dwbatches.workflow import reports  # noqa: F401  (declares the report its --help shows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=False, script=__file__)
    parser.add_argument("file", help="the batch JSONL file")
    parser.add_argument("--max-errors", type=int, default=50, metavar="N", help="errors to list (default 50)")
    parser.add_argument(
        "--max-requests",
        type=int,
        default=MAX_REQUESTS_PER_FILE,
        metavar="N",
        help="requests per uploaded file, for the chunk plan (default %(default)s)",
    )
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=MAX_FILE_BYTES,
        metavar="N",
        help="bytes per uploaded file, for the chunk plan (default %(default)s)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=MAX_BODY_BYTES,
        metavar="N",
        help="bytes per request body (default %(default)s)",
    )
    parser.add_argument("--report", metavar="FILE", help="also write the JSON report to FILE (even when invalid)")
    args = output.parse_args(parser, argv)

    def body() -> int:
        if not os.path.isfile(args.file):
            what = "is a directory, not a file" if os.path.isdir(args.file) else "no such file"
            raise UsageError(f"{args.file}: {what}", hint="Pass the path of a JSONL batch file.")
        check_number("--max-errors", args.max_errors, "50", at_least=0)
        for flag, value, example in (
            ("--max-requests", args.max_requests, "1000"),
            ("--max-bytes", args.max_bytes, "50000000"),
            ("--max-body-bytes", args.max_body_bytes, str(MAX_BODY_BYTES)),
        ):
            check_number(flag, value, example, at_least=1)
        if args.report:
            refuse_overwrite({"--report": args.report}, {"batch file": args.file}, results=True)
        rep = validate_file(
            args.file,
            max_requests=args.max_requests,
            max_bytes=args.max_bytes,
            max_body_bytes=args.max_body_bytes,
            line_limit=MAX_FILE_BYTES,
        )
        check_chunk_size(rep, args.max_bytes)
        doc = rep.as_dict()
        doc["errors"] = doc["errors"][: max(0, args.max_errors)]
        doc["chunks"] = len(rep.chunks)
        if args.report:
            try:
                atomic_write_json(args.report, doc, mode=None)
            except FileSystemError as exc:  # name the option, whatever the cause
                raise file_error(exc.os_error, args.report, "--report", what="the report") from exc.os_error
        for w in rep.warnings:
            output.narrate(f"warning: {w}")
        if rep.valid:
            output.emit(doc)
            output.narrate(
                f"{args.file}: valid, {rep.requests} requests, {rep.bytes} bytes"
                + (f", {len(rep.chunks)} chunks" if len(rep.chunks) > 1 else "")
            )
            return EXIT_OK
        print_errors(rep, args.max_errors)
        raise InputError(
            f"{args.file}: {rep.errors_total} invalid line(s); nothing was sent",
            hint="Fix the lines listed above and run validate_batch_file.py again.",
        )

    return output.run(body)


if __name__ == "__main__":
    raise SystemExit(main())
