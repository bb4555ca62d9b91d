"""Exit codes and typed errors shared by every script."""

from __future__ import annotations

import errno
import os
import re
import sys
from decimal import Decimal
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .. import SKILL_DIR
from . import commands

EXIT_OK = 0
EXIT_API = 1  # API or network error after retries, a full disk, a busy job lock, or unexpected
EXIT_USAGE = 2  # usage or invalid input to fix locally
EXIT_CONFIG = 3  # authentication or configuration
EXIT_NOT_FOUND = 4  # 404, or no job at the --job path
EXIT_UNSUCCESSFUL = 5  # batch/job ended unsuccessfully (outcome, JSON still printed)
EXIT_NOT_FINISHED = 6  # not finished yet (outcome, JSON still printed)
EXIT_INTERRUPTED = 130

# What each exit code means: one text for every script's --help, SKILL.md and docs/scripts.md
# (tests/test_docs.py checks that their tables say exactly this; `x` is code in the docs).
EXIT_MEANINGS = (
    (EXIT_OK, "success"),
    (
        EXIT_API,
        "API or network error after retries, a full disk, another command working on the same job "
        "(its lock is busy), or an unexpected error",
    ),
    (EXIT_USAGE, "usage error, invalid input, or over `--max-cost`; no batch was created"),
    (EXIT_CONFIG, "key or configuration (missing key, 401, 402, 403, insecure URL)"),
    (EXIT_NOT_FOUND, "not found (404, or no job at the `--job` path)"),
    (
        EXIT_UNSUCCESSFUL,
        "finished unsuccessfully (a batch failed, was cancelled, expired or was deleted, requests "
        "failed or never ran, or answers are not answers: empty, cut, not the JSON asked for, "
        "filtered); poll, fetch and run agree; JSON still printed",
    ),
    (
        EXIT_NOT_FINISHED,
        "not finished yet (a wait timed out, or a batch still runs); JSON still printed, partial results saved",
    ),
    (EXIT_INTERRUPTED, "interrupted"),
)


# The exit codes each script can return (its --help lists these only; only submit.py and
# run_batch.py take --max-cost).
_LOCAL = (EXIT_OK, EXIT_API, EXIT_USAGE, EXIT_INTERRUPTED)
_LISTING = (EXIT_OK, EXIT_API, EXIT_USAGE, EXIT_CONFIG, EXIT_INTERRUPTED)
_ON_A_JOB = (EXIT_OK, EXIT_API, EXIT_USAGE, EXIT_CONFIG, EXIT_NOT_FOUND, EXIT_INTERRUPTED)
_ALL = tuple(code for code, _ in EXIT_MEANINGS)
SCRIPT_EXITS: Dict[str, Tuple[int, ...]] = {
    "create_batch_file.py": _LOCAL,
    "validate_batch_file.py": _LOCAL,
    "check_setup.py": _LISTING,
    "list_models.py": _LISTING,
    "list_batches.py": _LISTING,
    "submit.py": _ON_A_JOB,
    "cancel_batch.py": _ON_A_JOB,
    "retry_failed.py": _ON_A_JOB + (EXIT_NOT_FINISHED,),
    "poll.py": _ALL,
    "fetch_results.py": _ALL,
    "run_batch.py": _ALL,
}
MAX_COST_SCRIPTS = frozenset({"submit.py", "run_batch.py"})
LOCAL_SCRIPTS = frozenset(s for s, codes in SCRIPT_EXITS.items() if codes == _LOCAL)  # they talk to no server


def exit_meaning(code: int, script: Optional[str] = None) -> str:
    """The one text of an exit code (for ``script``: without what does not apply to it)."""
    text = dict(EXIT_MEANINGS)[code]
    if script is not None and script not in MAX_COST_SCRIPTS:
        text = text.replace("usage error, invalid input, or over `--max-cost`", "usage error or invalid input")
    return text


def exit_codes_help(script: Optional[str] = None) -> str:
    """The exit-code table of a script's --help (every code when ``script`` is None)."""
    import textwrap

    codes = SCRIPT_EXITS.get(script or "", _ALL)
    lines = ["exit codes:"]
    for code in codes:
        text = exit_meaning(code, script).replace("`", "")
        lines += textwrap.wrap(text, 80, initial_indent=f"  {code:<5}", subsequent_indent=" " * 7)
    lines += [""] + textwrap.wrap(ON_FAILURE, 80)
    return "\n".join(lines)


# What every run prints on stdout when it fails (one declaration: the --help texts and SKILL.md).
ON_FAILURE = (
    'Every run prints one JSON document on stdout; a run that fails prints {"error": {"code", '
    '"message", "hint"}, "exit_code"} (and error: / hint: lines on stderr). On a terminal it prints '
    "a short view for people instead (a failure: its error and hint on stderr); --json keeps the JSON."
)


EXIT_CODES_HELP = exit_codes_help()


class DWError(Exception):
    """An expected failure: a message, an optional hint and an exit code; ``code`` names its kind
    in the JSON error document (``error: {code, message, hint}``)."""

    exit_code = EXIT_API
    code = "error"

    def __init__(self, message: str, hint: Optional[str] = None, exit_code: Optional[int] = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(DWError):
    exit_code = EXIT_USAGE
    code = "usage"


class InputError(DWError):
    """Invalid input data; carries the physical line number when known."""

    exit_code = EXIT_USAGE
    code = "invalid_input"

    def __init__(self, message: str, hint: Optional[str] = None, line: Optional[int] = None):
        super().__init__(message, hint)
        self.line = line


LOCK_WAIT = 10.0  # seconds a command waits for another one working on the same job or output


def busy_error(what: str) -> JobError:
    """The one report of a busy job (or bare-id fetch state): every script says it the same way."""
    return JobError(
        f"another command is working on {what}; run this one again when it has finished",
        hint="Wait for the other command to end (or stop it), then run the same command again. "
        "Do not delete the lock file.",
        exit_code=EXIT_API,
    )


class ConfigError(DWError):
    exit_code = EXIT_CONFIG
    code = "configuration"


class JobError(DWError):
    """The job directory is locked, corrupt, or does not match the input."""

    exit_code = EXIT_USAGE
    code = "job"


class APIConnectionError(DWError):
    """The server could not be reached or the connection broke."""

    exit_code = EXIT_API
    code = "connection"

    def __init__(self, message: str, hint: Optional[str] = None, sent: bool = True):
        super().__init__(message, hint)
        # False only when the request provably never reached the server.
        self.sent = sent


class APIStatusError(DWError):
    """The server answered with an HTTP error status."""

    def __init__(
        self, status: int, message: str, method: str, path: str, hint: Optional[str] = None, body: Optional[str] = None
    ):
        super().__init__(message, hint, exit_code=exit_code_for_status(status))
        self.code = f"http_{status}"
        self.status = status
        self.method = method
        self.path = path
        self.body = body


class FileSystemError(DWError):
    """A file could not be read or written: the disk is full, the path is not writable, a
    directory stands where a file belongs... ``os_error`` is the operating system's error,
    ``path`` the file the user knows (never a temp file), ``role`` the command-line argument
    the path came from, when known."""

    code = "file_system"

    def __init__(
        self,
        message: str,
        hint: Optional[str],
        exit_code: int,
        os_error: OSError,
        path: Optional[str],
        role: Optional[str],
    ):
        super().__init__(message, hint, exit_code)
        self.os_error = os_error
        self.path = path
        self.role = role


def exit_code_for_status(status: int) -> int:
    if status in (401, 402, 403):
        return EXIT_CONFIG
    if status == 404:
        return EXIT_NOT_FOUND
    if status in (400, 409, 413, 415, 422):
        return EXIT_USAGE
    return EXIT_API


def hint_for_status(status: int) -> Optional[str]:
    return {
        400: "The server rejected the request as invalid; fix what the message names and run again.",
        401: "The API key was refused. Check DOUBLEWORD_API_KEY (environment or the .env file in the "
        "directory you run from); create a key at https://app.doubleword.ai/api-keys.",
        402: "The account balance or spend cap does not allow this; top up at https://app.doubleword.ai.",
        403: "The key is not allowed to do this (wrong key purpose, or the model is not available to it). "
        "Use an inference key and a model listed by scripts/list_models.py.",
        404: "Not found, or owned by another account. Check the id (ids are bare UUIDs).",
        413: "The file is larger than the server accepts; let submit.py split it (--max-bytes).",
        429: "The server is rate limiting or out of capacity; try again later or use the 24h window.",
    }.get(status) or ("The server had a problem; try again later." if status >= 500 else None)


# -- missing packages ---------------------------------------------------------------------------
# (import name, package name) of what the scripts that talk to the API need. The local-only
# scripts (create_batch_file.py, validate_batch_file.py) and the sandbox need neither.
REQUIRED_PACKAGES = (("requests", "requests"), ("dotenv", "python-dotenv"))


def find_missing_packages() -> List[Tuple[str, ImportError]]:
    """(package name, import error) of each required package that cannot be imported."""
    import importlib

    missing = []
    for module, package in REQUIRED_PACKAGES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            missing.append((package, exc))
    return missing


def missing_packages_error(missing: Sequence[Tuple[str, ImportError]], script: Optional[str] = None) -> ConfigError:
    """The error for packages that cannot be imported, with the command that installs them."""
    names = [package for package, _ in missing]
    broken = [
        (package, exc)
        for package, exc in missing
        if getattr(exc, "name", None) not in (package, package.replace("python-", ""))
    ]
    if broken:  # installed, but one of its own dependencies is missing or broken
        package, exc = broken[0]
        message = f"the Python package '{package}' cannot be imported ({exc})"
    elif len(names) == 1:
        message = f"the Python package '{names[0]}' is not installed"
    else:
        message = "the Python packages " + " and ".join(f"'{n}'" for n in names) + " are not installed"
    return ConfigError(message, hint=install_hint(script))


def install_hint(script: Optional[str] = None) -> str:
    """How to install the requirements, for the interpreter that is running (``commands.install_hint``)."""
    return commands.install_hint(script or _running_script())


def _running_script() -> Optional[str]:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if name.endswith(".py") and os.path.isfile(os.path.join(SKILL_DIR, "scripts", name)):
        return name
    return None


# -- file-system errors ---------------------------------------------------------------------------
# The one place that turns an OSError into words, a hint and an exit code. Causes where the
# remedy is to change the path exit 2 when the path came from an argument the user gave (exit 1
# otherwise); exhausted resources (space, quota, open files, a failing disk) exit 1 in any case:
# the remedy is to fix the machine and run the same command again, which continues where it stopped.


def _errno(name: str) -> int:
    return getattr(errno, name, -1)  # EDQUOT, ESTALE... do not exist everywhere


FILE_CAUSES: Dict[int, str] = {
    _errno("ENOSPC"): "no space left on device",
    _errno("EDQUOT"): "disk quota exceeded",
    _errno("EFBIG"): "file too large for this file system",
    _errno("EACCES"): "permission denied",
    _errno("EPERM"): "permission denied (operation not permitted)",
    _errno("EROFS"): "read-only file system",
    _errno("EISDIR"): "is a directory",
    _errno("ENOTDIR"): "not a directory (a part of the path is a file)",
    _errno("ENAMETOOLONG"): "file name too long",
    _errno("EMFILE"): "too many open files",
    _errno("ENFILE"): "too many open files in the system",
    _errno("EIO"): "input/output error (the disk or network share failed)",
    _errno("ESTALE"): "stale file handle (the network share went away)",
    _errno("ELOOP"): "too many levels of symbolic links",
    _errno("ENOENT"): "no such file or directory",
    _errno("EBUSY"): "device or resource busy",
    _errno("ETXTBSY"): "the file is busy",
}
FILE_CAUSES.pop(-1, None)
# Windows: a file held open by another program (ERROR_SHARING_VIOLATION, ERROR_LOCK_VIOLATION)
WINDOWS_IN_USE = (32, 33)
IN_USE_CAUSE = "the file is open in another program"
# the machine, not the path, must change; the same command then continues where it stopped
RESOURCE_ERRNOS = frozenset(
    _errno(n) for n in ("ENOSPC", "EDQUOT", "EMFILE", "ENFILE", "EIO", "ESTALE", "EBUSY", "ETXTBSY")
)
# errors that are only ever about writing
WRITE_ERRNOS = frozenset(_errno(n) for n in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS"))
# classified by output.run even without a file name in the error (the others need one: without
# it, an ENOENT or EACCES is more likely a bug than a fact about the user's files)
PATHLESS_ERRNOS = frozenset(
    _errno(n) for n in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EMFILE", "ENFILE", "EIO", "ESTALE")
)

# Arguments that name files: (label, absolute path, kind) of those given on this run's command
# line, so that an error about a path can say which argument it came from (output.parse_args
# records them). kind: "output" (written), "job" (a job directory), "input" (read).
PATH_ARGUMENT_KINDS = {
    "output": "output",
    "errors": "output",
    "report": "output",
    "job": "job",
    "file": "input",
    "input": "input",
    "csv": "input",
    "prompts": "input",
    "jsonl": "input",
    "json_schema": "input",
}
_path_arguments: List[Tuple[str, str, str]] = []
# the temp file of an atomic write: ".<name>.<8 random characters>.tmp" beside <name>
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


def note_path_arguments(parser: Any, args: Any) -> None:
    """Remember the path arguments of this run (see ``PATH_ARGUMENT_KINDS``)."""
    _path_arguments.clear()
    for action in getattr(parser, "_actions", []):
        kind = PATH_ARGUMENT_KINDS.get(action.dest)
        value = getattr(args, action.dest, None)
        if kind is None or not isinstance(value, str) or value in ("", "-"):
            continue
        label = "/".join(action.option_strings) or action.metavar or action.dest.upper()
        _path_arguments.append((label, os.path.abspath(value), kind))


def _norm(path: str) -> str:
    return os.path.normcase(os.path.abspath(path))


def _inside(path: str, directory: str) -> bool:
    p, d = _norm(path), _norm(directory)
    return p != d and p.startswith(d.rstrip(os.sep) + os.sep)


def argument_for(path: str) -> Optional[Tuple[str, str, str, str]]:
    """(label, value, kind, relation) of the argument ``path`` came from: relation "exact" (the
    argument names it), "inside" (it is inside the directory the argument names) or "parent" (it
    is a directory on the way to the file the argument names); None if no argument matches."""
    for relation in ("exact", "inside", "parent"):
        for label, value, kind in _path_arguments:
            if (
                relation == "exact"
                and _norm(path) == _norm(value)
                or relation == "inside"
                and _inside(path, value)
                or relation == "parent"
                and kind != "input"
                and _inside(value, path)
            ):
                return label, value, kind, relation
    return None


def _job_dir_of(path: str) -> Optional[str]:
    """The job directory (``*.dwjob``) that ``path`` is or is inside of, if any."""
    here = os.path.abspath(path)
    while True:
        if here.endswith(".dwjob"):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def temp_target(path: Optional[str]) -> Optional[str]:
    """The file an atomic write's temp file stands for (``.out.jsonl.k3j9x0a_.tmp`` → ``out.jsonl``)."""
    if not path:
        return None
    m = _TEMP_RE.match(os.path.basename(path))
    return os.path.join(os.path.dirname(path), m.group("name")) if m else None


def file_cause(exc: OSError) -> str:
    """The cause of an OSError in words."""
    if getattr(exc, "winerror", None) in WINDOWS_IN_USE:
        return IN_USE_CAUSE
    cause = FILE_CAUSES.get(exc.errno or 0)
    if cause is None:
        cause = (exc.strerror or str(exc) or type(exc).__name__).strip()
        cause = cause[:1].lower() + cause[1:]
    return cause


def file_error(
    exc: OSError,
    path: Optional[str] = None,
    role: Optional[str] = None,
    *,
    what: Optional[str] = None,
    action: Optional[str] = None,
) -> FileSystemError:
    """The error to report for ``exc``: the path the user knows (``path``, else the error's file
    name with a temp file mapped to its target), the argument it came from (``role``, e.g.
    "--report"; else found among this run's arguments), the cause in words, and a hint.
    ``what`` names the file ("the report"); ``action`` is the verb ("write"; default: "write"
    for errors that only writing causes, else "access")."""
    failed = os.fsdecode(exc.filename) if isinstance(exc.filename, (str, bytes, os.PathLike)) else None
    target = path or temp_target(failed) or failed
    detail = failed if failed and target and _norm(failed) != _norm(target) and temp_target(failed) is None else None
    code = exc.errno or 0
    label, kind, where = None, None, ""
    if role:
        label, kind = role, ("job" if "--job" in role else "output")
        where = f" (given with {role})" if role.startswith("-") else f" (given as {role})"
    elif target:
        found = argument_for(target) or (argument_for(failed) if failed else None)
        if found is None and _job_dir_of(target):
            kind = "job"  # the default job directory (beside the input): --job can move it
        if found:
            label, value, kind, relation = found
            given = f"given with {label}" if label.startswith("-") else f"given as {label}"
            where = {
                "exact": f" ({given})",
                "inside": f" (in {value}, {given})",
                "parent": f" (the directory of {value}, {given})",
            }[relation]
    cause = file_cause(exc)
    verb = action or ("write" if code in WRITE_ERRNOS else "access")
    if target:
        message = f"cannot {verb} {what + ' ' if what else ''}{target}{where}: {detail + ': ' if detail else ''}{cause}"
    else:
        message = f"cannot {verb} {what or 'a file'}: {cause}"
    exit_code = EXIT_USAGE if label and code not in RESOURCE_ERRNOS else EXIT_API
    hint = _file_hint(exc, target, label, kind)
    return FileSystemError(message, hint, exit_code, exc, target, label)


def write_error(exc: BaseException, path: str, **kw: Any) -> BaseException:
    """``exc`` as a FileSystemError about writing ``path`` if it is an OSError with an errno;
    anything else (a DWError, an interruption, ...) unchanged. For writers that know their file."""
    if isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc, BrokenPipeError):
        kw.setdefault("action", "write")
        return file_error(exc, path, **kw)
    return exc


def classify_os_error(exc: OSError) -> Optional[FileSystemError]:
    """The FileSystemError for an OSError that reached the top of a script, or None when it is
    not about files (a socket error, or an error without a file name that may be a bug)."""
    if exc.errno not in FILE_CAUSES and getattr(exc, "winerror", None) not in WINDOWS_IN_USE:
        return None
    if exc.filename is None and exc.errno not in PATHLESS_ERRNOS:
        return None
    return file_error(exc)


def _file_hint(exc: OSError, target: Optional[str], label: Optional[str], kind: Optional[str]) -> str:
    code = exc.errno or 0
    again = "then run the same command again"
    where = (target if code == _errno("EISDIR") else os.path.dirname(target) or ".") if target else None
    elsewhere = (f" with {label}" if label.startswith("-") else f" for {label}") if label else ""
    if getattr(exc, "winerror", None) in WINDOWS_IN_USE:
        return f"Close the program that holds {target or 'the file'} open (an editor, Excel, a virus scanner), {again}."
    if code in (_errno("ENOSPC"), _errno("EDQUOT")):
        hint = (
            f"Free disk space on the disk that holds {where or 'the job and output files'}"
            + (" (or raise your quota)" if code == _errno("EDQUOT") else "")
            + f", {again} (what was already downloaded or submitted is kept)."
        )
        if kind == "output":
            hint += f" Or choose a path on another disk{elsewhere}."
        return hint
    if code in (_errno("EMFILE"), _errno("ENFILE")):
        return f"Close other programs, or raise the limit of open files (ulimit -n 4096), {again}."
    if code in (_errno("EIO"), _errno("ESTALE"), _errno("EBUSY"), _errno("ETXTBSY")):
        return f"Check the disk or network share that holds {where or 'the files'}, {again}."
    if code == _errno("EFBIG"):
        return f"Write to a disk whose file system takes large files (not FAT32){elsewhere}."
    if code == _errno("EISDIR"):
        return f"Give the path of a file{elsewhere}, not of a directory."
    if code in (_errno("ENOTDIR"), _errno("ENAMETOOLONG"), _errno("ELOOP"), _errno("ENOENT")):
        return (
            f"Check the path{elsewhere}: every part before the file name must be "
            "an existing directory, and the whole path not too long."
        )
    # permissions and read-only disks
    place = where or "that directory"
    if code == _errno("EROFS"):
        problem, fix = f"{place} is on a read-only disk", "work in a directory on a writable disk"
    else:
        problem, fix = f"you may not write in {place}", "fix its permissions, or work in a directory you can write to"
    if kind == "output":
        return f"Choose another path{elsewhere}, or a directory you can write to ({problem})."
    if kind == "input":
        return f"Make {target} readable by you, or pass a copy you can read{elsewhere}."
    problem = problem[:1].upper() + problem[1:]
    if kind == "job":
        return (
            f"{problem}. Use a job directory you can write to: another directory {elsewhere.strip() or 'with --job'} "
            "for a new job, or a copy of this job directory in a writable place; a job on a read-only disk can "
            "still be checked with poll.py."
        )
    return f"{problem}: {fix}."


class CostLimitExceeded(UsageError):
    """The server's estimate is over ``max_cost``: files are uploaded, no batch was created."""

    code = "over_max_cost"

    def __init__(self, message: str, hint: str, total: Optional[Decimal]):
        super().__init__(message, hint)
        self.total = total
