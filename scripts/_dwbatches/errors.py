"""Exit codes and typed errors shared by every script."""

from __future__ import annotations

import os
import shutil
import sys
from typing import List, Optional, Sequence, Tuple

from . import compat

EXIT_OK = 0
EXIT_API = 1  # API or network error after retries, or unexpected
EXIT_USAGE = 2  # usage or invalid input to fix locally
EXIT_CONFIG = 3  # authentication or configuration
EXIT_NOT_FOUND = 4  # 404
EXIT_UNSUCCESSFUL = 5  # batch/job ended unsuccessfully (outcome, JSON still printed)
EXIT_NOT_FINISHED = 6  # not finished yet (outcome, JSON still printed)
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """exit codes:
  0    success
  1    API or network error after retries, or unexpected error
  2    usage error, invalid input, or a limit you set (e.g. --max-cost) to fix
       locally; no batch was created
  3    authentication or configuration (missing key, 401, 402, 403, insecure URL)
  4    not found (404)
  5    finished unsuccessfully (failed, cancelled, expired, or failed/missing
       requests); the JSON report is still printed
  6    not finished yet (wait timed out; partial results were saved); the
       JSON report is still printed
  130  interrupted"""


class DWError(Exception):
    """An expected failure: a message, an optional hint and an exit code."""

    exit_code = EXIT_API

    def __init__(self, message: str, hint: Optional[str] = None, exit_code: Optional[int] = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(DWError):
    exit_code = EXIT_USAGE


class InputError(DWError):
    """Invalid input data; carries the physical line number when known."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: Optional[str] = None, line: Optional[int] = None):
        super().__init__(message, hint)
        self.line = line


class ConfigError(DWError):
    exit_code = EXIT_CONFIG


class JobError(DWError):
    """The job directory is locked, corrupt, or does not match the input."""

    exit_code = EXIT_USAGE


class APIConnectionError(DWError):
    """The server could not be reached or the connection broke."""

    exit_code = EXIT_API

    def __init__(self, message: str, hint: Optional[str] = None, sent: bool = True):
        super().__init__(message, hint)
        # False only when the request provably never reached the server.
        self.sent = sent


class APIStatusError(DWError):
    """The server answered with an HTTP error status."""

    def __init__(self, status: int, message: str, method: str, path: str, hint: Optional[str] = None,
                 body: Optional[str] = None):
        super().__init__(message, hint, exit_code=exit_code_for_status(status))
        self.status = status
        self.method = method
        self.path = path
        self.body = body


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
SKILL_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def missing_packages_error(missing: Sequence[Tuple[str, ImportError]],
                           script: Optional[str] = None) -> ConfigError:
    """The error for packages that cannot be imported, with the command that installs them."""
    names = [package for package, _ in missing]
    broken = [(package, exc) for package, exc in missing
              if getattr(exc, "name", None) not in (package, package.replace("python-", ""))]
    if broken:  # installed, but one of its own dependencies is missing or broken
        package, exc = broken[0]
        message = f"the Python package '{package}' cannot be imported ({exc})"
    elif len(names) == 1:
        message = f"the Python package '{names[0]}' is not installed"
    else:
        message = "the Python packages " + " and ".join(f"'{n}'" for n in names) + " are not installed"
    return ConfigError(message, hint=install_hint(script))


def install_hint(script: Optional[str] = None) -> str:
    """How to install the requirements, for the interpreter that is running."""
    requirements = _quote(_display_path(os.path.join(SKILL_DIR, "requirements.txt")))
    hint = f"{_python_command()} -m pip install -r {requirements}"
    script = script or _running_script()
    if script:
        hint += (f" (or run the script with uv, which installs what its header names: "
                 f"uv run {_quote(_display_path(os.path.join(SKILL_DIR, 'scripts', script)))})")
    return hint


def _running_script() -> Optional[str]:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if name.endswith(".py") and os.path.isfile(os.path.join(SKILL_DIR, "scripts", name)):
        return name
    return None


def _python_command() -> str:
    """``python3`` when that is the interpreter running, else its path (pip must install into it)."""
    exe = sys.executable or "python3"
    found = shutil.which("python3")
    if found and os.path.normcase(os.path.abspath(found)) == os.path.normcase(os.path.abspath(exe)):
        return "python3"
    return _quote(exe)


def _display_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive
        return path
    return path if rel.startswith("..") else rel


def _quote(text: str) -> str:
    return compat.quote_args([compat.command_path(text)])
