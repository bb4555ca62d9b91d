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

Exit 0 ready; 3 the key or the configuration is the problem; 1 the API cannot be reached
(stdout then holds the error document)."""

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
