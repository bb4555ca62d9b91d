#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = [
#   "requests>=2.32.4,<3",
#   "python-dotenv>=1.2.2,<2; python_version >= '3.10'",
#   "python-dotenv>=1.0,<2; python_version < '3.10'",
# ]
# ///
"""Check that everything is ready to run Doubleword batches: Python, packages, key, URL, API, models.

Checks, in order: Python version; requests and python-dotenv importable; DOUBLEWORD_API_KEY
present (never printed) and where it came from; the base URL (https, or plain http to
loopback); the API reachable and the key accepted (GET /models); the models the key can use.
--sandbox checks against the bundled local sandbox instead (started for the check and stopped
after it), so you can see a green run before you have a key; every script that talks to the
server takes --sandbox, for a rehearsal of the whole workflow.

examples:
  python3 scripts/check_setup.py
  python3 scripts/check_setup.py --sandbox

Each check is printed on stderr as "ok"/"FAIL" with a fix. When everything is ready, stdout
gets one JSON document.

output (stdout, JSON): ready, checks (name, ok, detail, fix), base_url, server (what answers
there: doubleword = Doubleword's API, sandbox = the bundled local sandbox, other = a
self-hosted or another server), key_source, sandbox (true with --sandbox), models, input
(the user's input when one obvious file is in the working directory: {path, kind: prompts,
csv, jsonl or batch, columns or fields}; null when there is none or several), next (the first
command for that input: its build with --max-tokens 500 and reasoning off, or a batch file's
dry run; the example prompts' build when the folder holds no input; null when the input
needs a --template or there are several, said on stderr; the file it writes does not exist
yet: reviews.jsonl, else reviews-2.jsonl, ...). Exit 0 ready; 3 the key or the configuration is
the problem; 1 the API cannot be reached (stdout then holds the error document)."""

from __future__ import annotations

from typing import Optional, Sequence

from _dwbatches.core import output
from _dwbatches.workflow import cli
from _dwbatches.workflow.setup import SetupOptions, check_setup

OPTIONS = SetupOptions


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True, script=__file__)
    return cli.run(parser, OPTIONS, argv, lambda _, conn: check_setup(conn))


if __name__ == "__main__":
    raise SystemExit(main())
