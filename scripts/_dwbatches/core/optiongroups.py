"""The flag groups several commands share, declared once (``optionspec``): how to reach the
API (``Connection``), how the report is shown (``View``, ``BatchList``), what a command works
on (``Target``: a job or batch ids) and how it waits (``Wait``).

``output.make_parser`` adds ``Connection``, ``View`` and ``BatchList`` to every parser that
takes them; a command's own options class composes ``Target`` and ``Wait`` (``group``). The
flags of ``Connection``, ``View`` and ``BatchList`` the user gave go along into every command
a script prints (``commands.carry``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from . import commands
from .errors import UsageError
from .optionspec import in_range, number, option
from .output import BATCHES_SHOWN, JSON_VAR


@dataclass
class Connection:
    """How to reach the API: an explicit base URL (else the environment, .env, or Doubleword's)
    and whether plain http to another host is allowed; or the rehearsal sandbox (``sandbox``,
    ``rehearsal.py``)."""

    base_url: Optional[str] = option(
        "--base-url",
        metavar="URL",
        group="connection",
        help="API base URL (default: $DOUBLEWORD_BASE_URL, then .env, then https://api.doubleword.ai/v1)",
    )
    allow_insecure_http: bool = option(
        "--allow-insecure-http",
        switch=True,
        group="connection",
        help="allow a plain-http base URL to a non-loopback host (sends the key unencrypted)",
    )
    sandbox: bool = option(
        "--sandbox",
        switch=True,
        group="connection",
        help="rehearse against the bundled local sandbox instead: no key, no money. It is started for "
        "this command and stopped after it; its state stays in .dwb-sandbox/ in the working directory, so "
        "submit, poll and fetch with --sandbox follow one job as with the real service",
    )

    def check_options(self) -> None:
        if self.sandbox and self.base_url:
            raise UsageError(
                "--sandbox and --base-url name two servers", hint="Pass --sandbox to rehearse, or --base-url, not both."
            )


@dataclass
class View:
    """How a script shows its outcome (every script takes these)."""

    quiet: bool = option("-q", "--quiet", switch=True, printed=False, help="no progress on stderr")
    json: bool = option(
        "--json",
        switch=True,
        help=f"print the JSON document on stdout even on a terminal (and progress as plain lines); also {JSON_VAR}=1",
    )


@dataclass
class BatchList:
    """The scripts whose report lists a job's batches (``output.BATCH_LISTS``)."""

    all_batches: bool = option(
        "--all-batches",
        switch=True,
        help=f"list every batch in the report (by default at most {BATCHES_SHOWN}, those that need attention "
        "first; batches_omitted counts the others)",
    )


@dataclass
class Target:
    """What a command works on: a job directory, or batch ids (exactly one of the two:
    ``workflow.common.check_target``, whose hint names the script)."""

    batch_ids: List[str] = option("BATCH_ID", positional=True, repeat=True, help="batch ids (or use --job)")
    job: Optional[str] = option(
        "--job", metavar="DIR", show=commands.display_path, help="the job directory made by submit.py / run_batch.py"
    )


@dataclass
class Wait:
    """Checking until every batch has ended (--wait), how often and for how long."""

    wait: bool = option("--wait", switch=True, help="wait until every batch has ended, or --timeout passes")
    interval: float = option(
        "--interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        show=number,
        check=in_range("30", above=0),
        help="seconds between checks with --wait (default 30)",
    )
    timeout: float = option(
        "--timeout",
        type=float,
        default=540.0,
        metavar="SECONDS",
        show=number,
        check=in_range("540", at_least=0),
        help="with --wait: give up after this many seconds, exit 6 (default 540)",
    )
