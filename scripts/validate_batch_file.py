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

report fields (the counts are all over the same lines: a request is a line that passes every
check, and a custom_id used again is an error on each later line that uses it):
  valid                   true when no line has an error
  file                    the file, as given
  requests                lines that are valid requests (what submit.py would send)
  bytes                   the file's size in bytes
  lines                   physical lines: requests + blank_lines + invalid_lines
  blank_lines             empty or whitespace-only lines (skipped, as the server does)
  invalid_lines           lines with an error (one error each)
  models                  requests per body.model, in order of first use
  endpoints               requests per url, in order of first use
  errors                  the first --max-errors errors in line order: {line, custom_id, message}
  errors_total            all errors: invalid_lines, or 1 when the file is empty or only
                          blank lines
  warnings                notes on what the server accepts but may not be meant (texts,
                          also on stderr), e.g. a max_tokens that leaves a model that
                          thinks before it answers no room for the answer, or a JSON
                          format's smallest object no room, with the fix
  estimated_input_tokens  each request body's bytes / 4 (compact JSON, the envelope left
                          out), summed: the server's own estimate
  chunks                  how many files submit.py would upload (0 when invalid)"""

from __future__ import annotations

from typing import Optional, Sequence

from _dwbatches.core import output
from _dwbatches.workflow import cli
from _dwbatches.workflow.validating import ValidateOptions, validate

OPTIONS = ValidateOptions


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=False, script=__file__)
    return cli.run(parser, OPTIONS, argv, lambda options, _: validate(options))


if __name__ == "__main__":
    raise SystemExit(main())
