"""The commands the scripts print (``next``, hints): as they run from the working directory.

A script is named by its path relative to the working directory when it lies below it, else
by its absolute path; arguments are quoted for the platform's shell, and the command starts
with what has the packages the scripts need (``runner``): ``uv run`` when uv ran this script,
else the platform's interpreter (``compat``), so that every command runs as printed.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

from .. import SCRIPTS_DIR, SKILL_DIR
from . import compat

if TYPE_CHECKING:  # annotations only: the job record is a layer above
    from ..jobs.jobrecord import JobRecord


def script_path(name: str) -> str:
    """How to call a sibling script: relative to the working directory when it is below it."""
    return display_path(os.path.join(SCRIPTS_DIR, name))


def display_path(path: str) -> str:
    """A path as shown in commands and messages: relative when it is below the working
    directory, written with ``/`` on Windows too (see compat.command_path)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # Windows: another drive
        return compat.command_path(path)
    return compat.command_path(path if rel.startswith("..") else rel)


# Flags of the running command that every command it prints keeps (``optiongroups``): how it
# reaches the server (--sandbox, --base-url, --allow-insecure-http: the next step talks to the
# same server; only for the scripts that talk to one), --all-batches (for the scripts whose
# report lists batches) and --json (a program that asked for JSON gets JSON from the next step
# too, even in a pseudo-terminal).
_carried: Dict[str, List[str]] = {"connection": [], "batches": [], "view": []}


def carry(connection: Sequence[str] = (), batches: Sequence[str] = (), view: Sequence[str] = ()) -> None:
    """Set the flags every printed command keeps, as written by ``optionspec.to_argv``
    (``output.parse_args``; reset after the run)."""
    _carried.update(connection=list(connection), batches=list(batches), view=list(view))


def carried(script: str) -> List[str]:
    from .errors import LOCAL_SCRIPTS
    from .output import BATCH_LISTS

    out = [] if script in LOCAL_SCRIPTS else list(_carried["connection"])
    return out + (_carried["batches"] if script in BATCH_LISTS else []) + _carried["view"]


def uv_runner() -> Optional[str]:
    """``uv`` (or the quoted path of the uv that is not the one on PATH) when uv made the
    environment this script runs in: ``uv run`` sets ``UV`` (its own path) and ``VIRTUAL_ENV``
    (the environment, this interpreter's prefix) and puts the environment first on PATH, so
    the word ``python3`` names it only while uv runs; in the user's shell it is another Python.
    None otherwise (a ``UV`` inherited by another interpreter included)."""
    uv, env = os.environ.get("UV"), os.environ.get("VIRTUAL_ENV")
    if not uv or not env:
        return None
    try:
        if not os.path.samefile(env, sys.prefix):
            return None
    except OSError:
        return None
    found = shutil.which("uv")
    try:
        if found and os.path.samefile(found, uv):
            return "uv"
    except OSError:
        pass
    return compat.quote_args([compat.command_path(uv)])


def runner() -> str:
    """What a printed command starts with: ``uv run`` when uv runs this script (``uv run
    scripts/X.py`` installs what the script's PEP 723 header names, in any folder), else the
    interpreter running now (``compat.python_command``: its word on PATH, or its path)."""
    uv = uv_runner()
    return f"{uv} run" if uv else compat.python_command()


def command(script: str, *args: str) -> str:
    """The command line that runs a sibling script, in this platform's quoting (``runner``),
    with the flags the running command carries (``carry``)."""
    return runner() + " " + compat.quote_args([script_path(script), *args, *carried(script)])


def externally_managed() -> bool:
    """The running Python is a system one that refuses ``pip install`` (PEP 668: Debian,
    Ubuntu, Fedora, Homebrew mark their Python so); a virtual environment never is."""
    if sys.prefix != sys.base_prefix:
        return False
    stdlib = sysconfig.get_path("stdlib")
    return bool(stdlib) and os.path.isfile(os.path.join(stdlib, "EXTERNALLY-MANAGED"))


def install_hint(script: Optional[str] = None) -> str:
    """How to get the packages the scripts need, for the Python that is running: ``uv run``
    of the script under uv; a virtual environment for a system Python that refuses pip
    (PEP 668); else pip into this interpreter. Each alternative runs as printed."""
    requirements = compat.quote_args([display_path(os.path.join(SKILL_DIR, "requirements.txt"))])
    shown = compat.quote_args([script_path(script)]) if script else None
    uv = uv_runner()
    if uv:
        if shown:
            return f"{uv} run {shown} (uv installs what the script's header names)"
        return f"{uv} pip install -r {requirements}"
    with_uv = f" (or with uv, which installs what the script's header names: uv run {shown})" if shown else ""
    if externally_managed():
        venv_python = compat.quote_args([compat.command_path(compat.venv_python(".venv"))])
        return (
            f"this Python is the system's, which refuses pip install (PEP 668): make a virtual environment with "
            f"{compat.python_command()} -m venv .venv, then {venv_python} -m pip install -r {requirements}, and "
            f"run the scripts with {venv_python}{with_uv}"
        )
    return f"{compat.python_command()} -m pip install -r {requirements}{with_uv}"  # pip installs into this one


def _job(job_dir: str) -> List[str]:
    """--job DIR as a printed command writes it (``optiongroups.Target``)."""
    from .optiongroups import Target
    from .optionspec import to_argv

    return to_argv(Target(job=job_dir))


def job_dirs_here(limit: int = 5) -> List[str]:
    """The job directories in the working directory (``*.dwjob`` holding a job.json), newest
    first, at most ``limit``."""
    try:
        names = [n for n in os.listdir(".") if n.endswith(".dwjob") and os.path.isfile(os.path.join(n, "job.json"))]
    except OSError:
        return []
    names.sort(key=lambda n: (-os.path.getmtime(os.path.join(n, "job.json")), n))
    return [display_path(n) for n in names[:limit]]


def target_hint(script: str) -> str:
    """What to pass a command that works on a job or batch ids: the job directories that are
    here, with a command that runs as printed, or words only when there is none."""
    found = job_dirs_here()
    if not found:
        return (
            "Pass the job directory that submit.py or run_batch.py printed (its 'job' field; there is none "
            "in this folder) as --job DIR, or batch ids (list_batches.py lists them)."
        )
    others = f" (job directories here: {', '.join(found)})" if len(found) > 1 else ""
    return f"e.g. {command(script, *_job(found[0]))}{others}"


def resume_command(state: JobRecord, job_dir: str) -> str:
    """The command that finishes submitting a job whose latest round has chunks without a batch."""
    rounds = state.rounds
    if rounds and rounds[-1].kind == "retry":
        return command("retry_failed.py", *_job(job_dir))
    inp = state.input.path or ""
    return command("submit.py", display_path(inp), *_job(job_dir))


# -- the next step of each command -------------------------------------------------------------
# Every `next` a script prints is built here, so that they agree: single commands, runnable as
# printed, that never rerun work the user stopped.


def remembered_output(state: Optional[JobRecord]) -> List[str]:
    """The output options a job remembers, so that a fetch `next` writes the same files."""
    res = state.results if state is not None else None
    if res is None or not res.format:
        return []
    args = ["--format", res.format]
    if res.output:
        args += ["-o", display_path(res.output)]
    return args


def after_submit(job_dir: str) -> str:
    return command("poll.py", *_job(job_dir))


def after_check(
    status: str,
    finished: bool,
    job_dir: Optional[str],
    state: Optional[JobRecord],
    target: Sequence[str],
    again: Sequence[str],
) -> str:
    """poll.py: resume an unfinished submit, fetch ``target`` (a job or batch ids, as written)
    once finished, else check again later: ``again``, a poll of the same target."""
    if status == "not_submitted" and job_dir is not None and state is not None:
        return resume_command(state, job_dir)
    if finished:
        return command("fetch_results.py", *target, *remembered_output(state))
    return command("poll.py", *again)


def after_fetch(
    code: int,
    job_dir: Optional[str],
    state: Optional[JobRecord],
    target: Sequence[str],
    again: Sequence[str],
    unsubmitted: bool = False,
    results_lost: int = 0,
    retry_args: Optional[Sequence[str]] = (),
) -> Optional[str]:
    """fetch_results.py: retry what failed, with ``retry_args`` (the fix of bad answers; None
    when a retry would not help), never after the user's cancel, nor when completed results
    are lost on the server (the retry would refuse to pay for them twice); check a job that
    runs (or fetch bare ids again: ``again``, the same fetch with its options); nothing when
    done. ``target``: the job or the batch ids, as written."""
    if code == 5:
        if job_dir is None or (state is not None and state.cancel is not None) or results_lost or retry_args is None:
            return None
        return command("retry_failed.py", *target, *retry_args)
    if code == 6:
        if job_dir is not None and state is not None and unsubmitted:
            return resume_command(state, job_dir)
        if job_dir is None:  # bare ids remember nothing: the options go along
            return command("fetch_results.py", *again)
        return command("poll.py", *target)  # one check; its next is the fetch once finished
    return None


def rerun_lost(job_dir: str) -> str:
    """retry_failed.py --force: reruns requests whose results are lost on the server (paid again)."""
    return command("retry_failed.py", *_job(job_dir), "--force")
