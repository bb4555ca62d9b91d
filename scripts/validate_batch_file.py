#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = ["requests>=2.28,<3", "python-dotenv>=1.0,<2"]
# ///
"""Check a batch JSONL file locally against every rule the Doubleword server enforces.

Also catches what the server silently lets through (duplicate custom_ids, "stream": true,
bodies missing the field their endpoint needs). Reads the file once, streaming; needs no
API key and sends nothing. Line numbers are physical and 1-based.

examples:
  python3 scripts/validate_batch_file.py requests.jsonl
  python3 scripts/validate_batch_file.py requests.jsonl --max-errors 5

output: when the file is valid, a JSON report on stdout (valid, requests, bytes, models,
endpoints, errors (empty), errors_total, warnings, chunks = how many files submit.py would
upload). When it is not, stdout stays empty, each error is printed on stderr as
"line N: message", and exit code is 2; --report FILE also writes the full JSON report
(with errors: line, custom_id, message) to FILE in both cases."""

from __future__ import annotations

import os
from typing import Optional, Sequence

from _dwbatches import output
from _dwbatches.errors import EXIT_OK, FileSystemError, InputError, UsageError, file_error
from _dwbatches.files import atomic_write_json, refuse_overwrite
from _dwbatches.validate import (
    MAX_BODY_BYTES,
    MAX_FILE_BYTES,
    MAX_REQUESTS_PER_FILE,
    print_errors,
    validate_file,
)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=False)
    parser.add_argument("file", help="the batch JSONL file")
    parser.add_argument("--max-errors", type=int, default=50, metavar="N", help="errors to list (default 50)")
    parser.add_argument("--max-requests", type=int, default=MAX_REQUESTS_PER_FILE, metavar="N",
                        help="requests per uploaded file, for the chunk plan (default %(default)s)")
    parser.add_argument("--max-bytes", type=int, default=MAX_FILE_BYTES, metavar="N",
                        help="bytes per uploaded file, for the chunk plan (default %(default)s)")
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES, metavar="N",
                        help="bytes per request body (default %(default)s)")
    parser.add_argument("--report", metavar="FILE", help="also write the JSON report to FILE (even when invalid)")
    args = output.parse_args(parser, argv)

    def body() -> int:
        if not os.path.isfile(args.file):
            raise UsageError(f"{args.file}: no such file", hint="Pass the path of a JSONL batch file.")
        if min(args.max_requests, args.max_bytes, args.max_body_bytes) < 1:
            raise UsageError("--max-requests, --max-bytes and --max-body-bytes must be positive")
        if args.report:
            refuse_overwrite({"--report": args.report}, {"batch file": args.file})
        rep = validate_file(args.file, max_requests=args.max_requests, max_bytes=args.max_bytes,
                            max_body_bytes=args.max_body_bytes)
        doc = rep.as_dict()
        doc["errors"] = doc["errors"][: max(0, args.max_errors)]
        doc["chunks"] = len(rep.chunks)
        if args.report:
            try:
                atomic_write_json(args.report, doc, mode=0o644)
            except FileSystemError as exc:  # name the option, whatever the cause
                raise file_error(exc.os_error, args.report, "--report", what="the report") from exc.os_error
        if rep.valid:
            output.emit(doc)
            output.narrate(f"{args.file}: valid, {rep.requests} requests, {rep.bytes} bytes"
                           + (f", {len(rep.chunks)} chunks" if len(rep.chunks) > 1 else ""))
            return EXIT_OK
        print_errors(rep, args.max_errors)
        raise InputError(f"{args.file}: {rep.errors_total} invalid line(s); nothing was sent",
                         hint="Fix the lines listed above and run validate_batch_file.py again.")

    return output.run(body)


if __name__ == "__main__":
    raise SystemExit(main())
