"""Output discipline: one JSON document on stdout, narration on stderr, exit codes."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence

from .. import USER_AGENT
from . import compat, reportspec
from .errors import (
    EXIT_API,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    DWError,
    classify_os_error,
    exit_codes_help,
    find_missing_packages,
    missing_packages_error,
    note_path_arguments,
)

_secrets: set = set()
_quiet = False

# Who reads stdout: a program (the JSON document), or a person at a terminal (the human view,
# ``humanview``). JSON whenever stdout is not a terminal, with --json, or with this variable set.
JSON_VAR = "DOUBLEWORD_BATCHES_JSON"
_json_flag: Optional[bool] = None  # --json as parsed (None: not parsed yet)
_script: Optional[str] = None  # the running script's file name (its view)
_live = ""  # the progress line rewritten in place on a terminal's stderr ("" when none)
_live_parts: Dict[Any, str] = {}  # its parts: one per transfer or wait going on
_live_lock = threading.RLock()
_closers: List[Callable[[], None]] = []  # run at the end of the run (the rehearsal sandbox)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def json_wanted() -> bool:
    """The JSON document is wanted, not the human view: --json, or DOUBLEWORD_BATCHES_JSON set
    (to anything but 0)."""
    if os.environ.get(JSON_VAR, "").strip() not in ("", "0"):
        return True
    if _json_flag is not None:
        return _json_flag
    return "--json" in sys.argv[1:]  # before the flags are parsed (a refused flag, a missing package)


def human_view() -> bool:
    """stdout is a terminal and nothing asked for JSON: print the view for people."""
    return not json_wanted() and _isatty(sys.stdout)


def live_terminal() -> bool:
    """Progress may rewrite one line in place: stderr is a terminal, not --quiet, and nothing
    asked for JSON (--json gets plain lines, one per change, for a program to read)."""
    return not _quiet and not json_wanted() and _isatty(sys.stderr)


def _width() -> int:
    try:
        columns = os.get_terminal_size(sys.stderr.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 0
    return max(20, columns - 1) if columns > 0 else 79  # 0: a terminal that does not say


def _write_err(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass


def live(text: str, part: Any = None) -> None:
    """Show ``text`` in the one progress line, rewritten in place (only on a terminal: see
    ``live_terminal``; callers print plain lines otherwise). Each ``part`` (a transfer, a wait)
    has its place in the line, in the order they came; the line is cut to the terminal's
    width, so that it never wraps."""
    with _live_lock:
        _live_parts[part] = redact(one_line(text))
        _draw()


def live_drop(part: Any = None) -> None:
    """Take ``part`` out of the progress line (the line is wiped when nothing is left)."""
    with _live_lock:
        if _live_parts.pop(part, None) is not None:
            _draw()


def _draw() -> None:
    global _live
    text = " | ".join(_live_parts.values())
    width = _width()
    if len(text) > width:
        text = text[: width - 1] + "…"
    if not text:
        _write_err("\r" + " " * len(_live) + "\r")
    else:
        _write_err("\r" + text.ljust(len(_live)))
    _live = text


def live_end(keep: bool = True) -> None:
    """End the progress line: keep it as the last word (a newline after it) or wipe it."""
    global _live
    with _live_lock:
        _live_parts.clear()
        if not _live:
            return
        _write_err("\n" if keep else "\r" + " " * len(_live) + "\r")
        _live = ""


def on_exit(closer: Callable[[], None]) -> None:
    """Run ``closer`` at the end of the run, just before its document is printed (errors
    ignored: a closer never changes the outcome)."""
    _closers.append(closer)


def _close() -> None:
    while _closers:
        closer = _closers.pop()
        try:
            closer()
        except Exception:
            pass


def register_secret(value: Optional[str]) -> None:
    """Remember a secret so that nothing this package prints can contain it, in any of the
    escaped forms an error message may quote it in (repr, JSON)."""
    if value and len(value) >= 6:
        _secrets.add(value)
        for form in (repr(value)[1:-1], json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]):
            if len(form) >= 6:
                _secrets.add(form)


def redact(text: str) -> str:
    for s in sorted(_secrets, key=len, reverse=True):
        if s in text:
            text = text.replace(s, "<redacted>")
    return text


# Characters that would start a new line (or rewrite one) on a terminal or in a log an agent
# reads: C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_LINE_BREAKERS = {c: f"\\x{c:02x}" for c in list(range(0x20)) + list(range(0x7F, 0xA0))}
_LINE_BREAKERS.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def one_line(text: str) -> str:
    """``text`` as one line: every character that could break or rewrite a line is written as
    an escape, so that text from a server or an input (an error body, a model id) can never
    pass for a line of its own (a forged ``hint:`` or ``next:``)."""
    return text.translate(_LINE_BREAKERS)


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def narrate(message: str) -> None:
    """Progress and hints for people, on stderr."""
    if _quiet:
        return
    with _live_lock:
        if _live:  # the progress line steps aside and comes back below the message
            line = _live
            _write_err("\r" + " " * len(line) + "\r" + redact(one_line(message)) + "\n" + line)
            return
        _write_err(redact(one_line(message)) + "\n")


def say_always(message: str) -> None:
    """A line that is the result itself (a file's invalid lines), on stderr even with --quiet."""
    with _live_lock:
        line = _live
        prefix = "\r" + " " * len(line) + "\r" if line else ""
        _write_err(prefix + redact(one_line(message)) + "\n" + line)


_emitted = False  # the run's JSON document is out (an error after it prints no second one)

# The scripts whose report lists a job's batches: at most BATCHES_SHOWN of them (those that need
# attention first), the count of the others in batches_omitted, every one with --all-batches; a
# job of hundreds of chunks keeps a report an agent can read whole.
BATCH_LISTS = frozenset(
    {"submit.py", "poll.py", "fetch_results.py", "run_batch.py", "cancel_batch.py", "retry_failed.py"}
)
BATCHES_SHOWN = 5
_all_batches = False


def _needs_attention(row: Any) -> bool:
    """A batch row worth showing first: not completed, with failed requests, or unreachable."""
    if not isinstance(row, dict):
        return True
    counts = row.get("request_counts")
    if not isinstance(counts, dict):
        counts = {}
    return row.get("status") != "completed" or bool(counts.get("failed")) or bool(row.get("unreachable"))


def few_batches(doc: Dict[str, Any], every: bool = False) -> Dict[str, Any]:
    """``doc`` with at most BATCHES_SHOWN batches (``every``: all of them), in their order: those
    that need attention first, then the rest; ``batches_omitted`` says how many were left out."""
    rows = doc.get("batches")
    if not isinstance(rows, list):
        return doc
    keep = set(range(len(rows))) if every or len(rows) <= BATCHES_SHOWN else set()
    for wanted in (True, False):
        for i, row in enumerate(rows):
            if len(keep) < BATCHES_SHOWN and _needs_attention(row) is wanted:
                keep.add(i)
    out = dict(doc)
    out["batches"] = [row for i, row in enumerate(rows) if i in keep]
    out["batches_omitted"] = len(rows) - len(out["batches"])
    return out


def emit(doc: Any) -> None:
    """The one JSON document of a run, on stdout."""
    global _emitted
    _emitted = True
    live_end()
    if human_view() and isinstance(doc, dict):
        from .humanview import render

        text = redact(render(doc, _script)).rstrip("\n")
    else:
        text = redact(json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False))
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # Nobody is reading; do not let the interpreter complain at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


@dataclass
class Outcome:
    """What a command ends with: its JSON report and its exit code (0, or the outcomes 5
    "finished unsuccessfully" and 6 "not finished yet", which still print the report)."""

    doc: Dict[str, Any]
    code: int = 0


def finish(outcome: Outcome) -> int:
    """Print the report (and the next command on stderr; the human view shows it itself);
    return the exit code."""
    _close()
    if outcome.doc.get("next") and not human_view():
        narrate(f"next: {outcome.doc['next']}")
    emit(few_batches(outcome.doc, _all_batches) if _script in BATCH_LISTS else outcome.doc)
    return outcome.code


def report_error(exc: DWError) -> int:
    """An expected failure: ``error:`` and ``hint:`` on stderr, and the error document on stdout."""
    return fail(exc.code, exc.message, exc.hint, exc.exit_code)


def fail(code: str, message: str, hint: Optional[str], exit_code: int) -> int:
    """Every failure ends the same way: ``error:`` and ``hint:`` lines on stderr, and on stdout
    the run's one JSON document, ``{"error": {code, message, hint}, "exit_code"}`` (unless the
    run's report was already printed). Returns ``exit_code``. On a terminal (the human view),
    stderr gets the error for people instead (the hint's lines, what the exit code means) and
    stdout nothing."""
    live_end()
    _close()
    if human_view():
        from .humanview import render_error

        _write_err(redact(render_error(message, hint, exit_code, _script)))
        return exit_code
    sys.stderr.write(redact(one_line(f"error: {message}")) + "\n")
    if hint:
        sys.stderr.write(redact(one_line(f"hint: {hint}")) + "\n")
    sys.stderr.flush()
    if not _emitted:
        try:
            emit({"error": {"code": code, "message": message, "hint": hint}, "exit_code": exit_code})
        except (OSError, ValueError):
            pass
    return exit_code


def exit_missing_packages(exc: ImportError) -> None:
    """Called where a required package failed to import (at import time, before any work):
    print the error with the install command and exit 3, instead of a traceback."""
    missing = find_missing_packages()
    if not missing:  # importable after all: the failure was something else
        raise exc
    raise SystemExit(report_error(missing_packages_error(missing)))


# Contexts every run is held in: the workflow layer's narration (workflow/narration.py), the
# sink that says what the engines report (core/events.py).
_run_contexts: List[Callable[[], ContextManager[Any]]] = []


def hold_runs_in(context: Callable[[], ContextManager[Any]]) -> None:
    """Hold every later ``run`` in ``context()`` (registered once)."""
    if context not in _run_contexts:
        _run_contexts.append(context)


def run(main_body: Callable[[], int]) -> int:
    """Run a script body, turning expected failures into messages and exit codes."""
    global _emitted
    _emitted = False
    with contextlib.ExitStack() as held:
        for context in _run_contexts:
            held.enter_context(context())
        try:
            return _run(main_body)
        finally:
            live_end()
            _close()
            from .commands import carry

            carry()


def _run(main_body: Callable[[], int]) -> int:
    try:
        return main_body()
    except DWError as exc:
        return report_error(exc)
    except KeyboardInterrupt:
        return fail("interrupted", "interrupted", "run the same command again to resume.", EXIT_INTERRUPTED)
    except BrokenPipeError:
        return EXIT_API
    except OSError as exc:  # a full disk, a read-only directory...: an outcome to explain, not a bug
        err = classify_os_error(exc)
        if err is None:
            return _unexpected(exc)
        if os.environ.get("DOUBLEWORD_BATCHES_DEBUG"):
            sys.stderr.write(redact(traceback.format_exc()))
        return report_error(err)
    except Exception as exc:
        return _unexpected(exc)


def _unexpected(exc: BaseException) -> int:
    """An unexpected error: say so, with a traceback only on request."""
    debug = bool(os.environ.get("DOUBLEWORD_BATCHES_DEBUG"))
    if debug:
        sys.stderr.write(redact(traceback.format_exc()))
    hint = None if debug else "set DOUBLEWORD_BATCHES_DEBUG=1 for a traceback, and report it."
    return fail("unexpected", f"unexpected {type(exc).__name__}: {exc}", hint, EXIT_API)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    pass


class Parser(argparse.ArgumentParser):
    """argparse, with its refusals of bad flags also as the run's JSON error document (exit 2)."""

    def error(self, message: str) -> Any:  # argparse's own words on stderr, as ever
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        if human_view():  # argparse's words are the view
            raise SystemExit(EXIT_USAGE)
        emit(
            {
                "error": {"code": "usage", "message": f"{self.prog}: {message}", "hint": f"{self.prog} --help"},
                "exit_code": EXIT_USAGE,
            }
        )
        raise SystemExit(EXIT_USAGE)


def make_parser(
    doc: str,
    network: bool = True,
    prog: Optional[str] = None,
    script: Optional[str] = None,
    report: Optional[reportspec.Report] = None,
) -> argparse.ArgumentParser:
    """A parser whose description is the docstring's first paragraph and whose epilog holds the
    rest of the docstring (examples), the fields of the report ``script`` (its ``__file__``)
    prints (``report``, else the one declared for it: ``reportspec.report_of``) and the exit
    codes it can return."""
    head, _, rest = (doc or "").strip().partition("\n\n")
    global _json_flag, _script, _all_batches
    name = os.path.basename(script) if script else None
    _json_flag, _script, _all_batches = None, name, False
    report = report or reportspec.report_of(name)
    epilog = "".join(part + "\n\n" for part in (rest.strip(), reportspec.help_text(report) if report else "") if part)
    epilog += exit_codes_help(name)
    parser = Parser(prog=prog, description=head, epilog=epilog, formatter_class=HelpFormatter)
    from .optiongroups import BatchList, Connection, View
    from .optionspec import add_arguments

    if network:
        add_arguments(Connection, parser)
    if name in BATCH_LISTS:
        add_arguments(BatchList, parser)
    add_arguments(View, parser)
    parser.add_argument("--version", action="version", version=USER_AGENT)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    global _json_flag, _all_batches
    compat.utf8_stdio()
    args = parser.parse_args(argv)
    set_quiet(getattr(args, "quiet", False))
    _json_flag = bool(getattr(args, "json", False))
    _all_batches = bool(getattr(args, "all_batches", False))
    from .commands import carry
    from .optiongroups import BatchList, Connection, View
    from .optionspec import from_args, to_argv

    network = hasattr(args, "sandbox")
    carry(
        connection=to_argv(from_args(Connection, args)) if network else [],
        batches=to_argv(from_args(BatchList, args)) if _all_batches else [],
        view=to_argv(from_args(View, args)),
    )
    note_path_arguments(parser, args)  # so that an error about a file can name its argument
    return args
