"""The commands the scripts print (``next``, hints): as they run from the working directory.

A script is named by its path relative to the working directory when it lies below it, else
by its absolute path; arguments are quoted for the platform's shell, and the interpreter is
the platform's (``compat``), so that every command runs as printed.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

from . import compat
from .job import JobRecord


def script_path(name: str) -> str:
    """How to call a sibling script: relative to the working directory when it is below it."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return display_path(os.path.join(here, name))


def display_path(path: str) -> str:
    """A path as shown in commands and messages: relative when it is below the working
    directory, written with ``/`` on Windows too (see compat.command_path)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # Windows: another drive
        return compat.command_path(path)
    return compat.command_path(path if rel.startswith("..") else rel)


def command(script: str, *args: str) -> str:
    """The command line that runs a sibling script, in this platform's interpreter word and quoting."""
    return compat.python_command() + " " + compat.quote_args([script_path(script), *args])


def target_args(job_dir: Optional[str], batch_ids: Sequence[str]) -> List[str]:
    return ["--job", display_path(job_dir)] if job_dir else list(batch_ids)


def resume_command(state: JobRecord, job_dir: str) -> str:
    """The command that finishes submitting a job whose latest round has chunks without a batch."""
    rounds = state.rounds
    if rounds and rounds[-1].kind == "retry":
        return command("retry_failed.py", "--job", display_path(job_dir))
    inp = state.input.path or ""
    return command("submit.py", display_path(inp), "--job", display_path(job_dir))
