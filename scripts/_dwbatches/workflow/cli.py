"""Command-line pieces shared by the scripts: flag groups, and turning parsed flags into the
explicit options the workflow takes (the workflow never sees an ``argparse`` namespace)."""

from __future__ import annotations

from typing import Any

from ..api.reasoning import EFFORTS
from ..api.requestedit import FLAGS, Changes
from ..api.requestrules import MAX_OUTPUT_LIMIT
from ..core.errors import UsageError
from ..core.flags import check_number
from ..core.optionspec import add_arguments, from_args
from .common import Connection
from .fetching import OutputOptions
from .submitting import SubmitOptions


def add_target_args(parser: Any, job_help: str = "the job directory made by submit.py / run_batch.py") -> None:
    """Batch ids, or --job DIR (one of the two)."""
    parser.add_argument("batch_ids", nargs="*", metavar="BATCH_ID", help="batch ids (or use --job)")
    parser.add_argument("--job", metavar="DIR", help=job_help)


def add_wait_args(parser: Any, interval_help: str, timeout_help: str) -> None:
    parser.add_argument("--interval", type=float, default=30.0, metavar="SECONDS", help=interval_help)
    parser.add_argument("--timeout", type=float, default=540.0, metavar="SECONDS", help=timeout_help)


def check_wait_args(args: Any) -> None:
    check_number("--interval", args.interval, "30", above=0)
    check_number("--timeout", args.timeout, "540", at_least=0)


def add_change_args(parser: Any) -> None:
    """New settings for requests already built (a parser or an argument group): the flags of
    ``requestedit.FLAGS``."""
    parser.add_argument(*FLAGS["model"], metavar="MODEL", help="send them to this model instead")
    parser.add_argument(
        *FLAGS["max_tokens"],
        type=int,
        metavar="N",
        help="their token limit (max_tokens, or whichever limit field they set); reasoning counts against it",
    )
    parser.add_argument(
        *FLAGS["reasoning"],
        choices=EFFORTS,
        help="their reasoning effort (none switches thinking off where the model allows it)",
    )


def changes(args: Any) -> Changes:
    check_number("--max-tokens", args.max_tokens, "2000", at_least=1, at_most=MAX_OUTPUT_LIMIT)
    return Changes(model=args.model, max_tokens=args.max_tokens, reasoning=args.reasoning)


def add_submit_args(parser: Any) -> None:
    """The submit flags, shared by submit.py and run_batch.py (a parser or an argument group)."""
    add_arguments(SubmitOptions, parser)


def add_output_args(parser: Any) -> None:
    """The result flags, shared by fetch_results.py and run_batch.py."""
    add_arguments(OutputOptions, parser.add_argument_group("results"))


def connection(args: Any) -> Connection:
    if args.sandbox and args.base_url:
        raise UsageError(
            "--sandbox and --base-url name two servers", hint="Pass --sandbox to rehearse, or --base-url, not both."
        )
    return Connection(args.base_url, args.allow_insecure_http, args.sandbox)


def submit_options(args: Any) -> SubmitOptions:
    return from_args(SubmitOptions, args)


def output_options(args: Any) -> OutputOptions:
    return from_args(OutputOptions, args)
