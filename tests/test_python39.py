"""The oldest supported Python, 3.9: the scripts end to end, and the sandbox server.

A Python 3.9 interpreter is looked for in (first that runs and says 3.9):

- ``$DWB_PYTHON39`` (an explicit interpreter; an error if it is not 3.9),
- ``python3.9``, ``python3`` and ``python`` on PATH,
- ``$PYENV_ROOT/versions/3.9.*/bin/python3`` (PYENV_ROOT defaults to ~/.pyenv), newest first,
- ``py -3.9`` (the Windows launcher).

Without one the tests are skipped, naming the places searched. The scripts run in a virtual
environment built from that interpreter with requirements.txt only, cached in
``.cache/py39-venv/`` (git-ignored) and rebuilt when requirements.txt or the interpreter
changes; a lock file keeps parallel workers from building it twice. If pip cannot install
(offline), the script test is skipped with pip's message; the sandbox (standard library only)
runs on the bare interpreter.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest
from sandbox_helper import REPO_ROOT, SCRIPTS, Sandbox, chat_requests, new_api_key

pytestmark = pytest.mark.slow  # not in `make test-fast`

OVERRIDE_VAR = "DWB_PYTHON39"
CACHE_DIR = REPO_ROOT / ".cache"
VENV_DIR = CACHE_DIR / "py39-venv"
STAMP = "dwb-venv.json"
REQUIREMENTS = REPO_ROOT / "requirements.txt"
PROBE = "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.executable); print(sys.version.split()[0])"


# -- finding the interpreter --------------------------------------------------------------------


def _probe(cmd: List[str]) -> Optional[Tuple[str, str, str]]:
    """(major.minor, executable, full version) of the interpreter ``cmd`` starts, or None."""
    try:
        out = subprocess.run([*cmd, "-c", PROBE], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 3:
        return None
    return lines[0], lines[1], lines[2]


def _version_key(path: str) -> Tuple[int, ...]:
    m = re.search(r"3\.9\.(\d+)", path)
    return (int(m.group(1)),) if m else (-1,)


def find_python39() -> Tuple[Optional[str], List[str]]:
    """(path of a Python 3.9 interpreter or None, the places searched)."""
    searched: List[str] = []
    override = os.environ.get(OVERRIDE_VAR)
    if override:
        found = _probe([override])
        if found is None or found[0] != "3.9":
            pytest.fail(
                f"${OVERRIDE_VAR}={override} is not a Python 3.9 interpreter "
                f"({'it does not run' if found is None else 'it is ' + found[0]})"
            )
        return found[1], [f"${OVERRIDE_VAR}"]
    searched.append(f"${OVERRIDE_VAR} (not set)")

    candidates: List[Tuple[str, List[str]]] = []
    for name in ("python3.9", "python3", "python"):
        searched.append(f"{name} on PATH")
        path = shutil.which(name)
        if path:
            candidates.append((path, [path]))
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.join(os.path.expanduser("~"), ".pyenv")
    pattern = os.path.join(pyenv_root, "versions", "3.9.*", "bin", "python3")
    searched.append(pattern)
    for path in sorted(glob.glob(pattern), key=_version_key, reverse=True):
        candidates.append((path, [path]))
    if os.name == "nt":
        searched.append("py -3.9")
        if shutil.which("py"):
            candidates.append(("py -3.9", ["py", "-3.9"]))
    for _label, cmd in candidates:
        found = _probe(cmd)
        if found and found[0] == "3.9":
            return found[1], searched
    return None, searched


@pytest.fixture(scope="session")
def python39() -> str:
    """The path of a Python 3.9 interpreter (skips the test when there is none)."""
    path, searched = find_python39()
    if path is None:
        pytest.skip(
            "no Python 3.9 interpreter found; searched: " + ", ".join(searched) + f" (set {OVERRIDE_VAR} to one)"
        )
    return path


# -- the virtual environment --------------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (pytest-xdist workers), released on exit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        if os.name == "nt":
            import msvcrt

            fh.seek(0)
            while True:
                try:
                    msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after 10 s; keep waiting
                    continue
            try:
                yield
            finally:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def wanted_stamp(python: str) -> dict:
    found = _probe([python])
    return {
        "requirements_sha256": hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest(),
        "python": python,
        "python_version": found[2] if found else None,
    }


def venv_is_current(venv: Path, stamp: dict) -> bool:
    try:
        recorded = json.loads((venv / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if recorded != stamp:
        return False
    check = subprocess.run([str(venv_python(venv)), "-c", "import requests, dotenv"], capture_output=True, timeout=60)
    return check.returncode == 0


def build_venv(python: str, venv: Path) -> Optional[str]:
    """Build (or reuse) the venv; return None when it is ready, else why it could not be built."""
    stamp = wanted_stamp(python)
    with file_lock(CACHE_DIR / "py39-venv.lock"):
        if venv_is_current(venv, stamp):
            return None
        shutil.rmtree(venv, ignore_errors=True)
        steps = [
            [python, "-m", "venv", str(venv)],
            [
                str(venv_python(venv)),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(REQUIREMENTS),
            ],
        ]
        for cmd in steps:
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            except (OSError, subprocess.SubprocessError) as exc:
                return f"{' '.join(cmd[:4])} failed: {exc}"
            if proc.returncode != 0:
                tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
                shutil.rmtree(venv, ignore_errors=True)
                return f"{' '.join(cmd[:4])} exited {proc.returncode}: {tail}"
        (venv / STAMP).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    return None


@pytest.fixture(scope="session")
def py39_venv(python39: str) -> str:
    """The Python of a 3.9 virtual environment with requirements.txt installed."""
    problem = build_venv(python39, VENV_DIR)
    if problem:
        pytest.skip(f"could not build the Python 3.9 environment in {VENV_DIR} (offline?): {problem}")
    return str(venv_python(VENV_DIR))


# -- the tests ----------------------------------------------------------------------------------


def run(python: str, script: str, *args, env=None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, str(SCRIPTS / script), *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout
    )


def ok_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return json.loads(proc.stdout)


def test_the_venv_is_python_3_9_with_only_the_requirements(py39_venv):
    found = _probe([py39_venv])
    assert found is not None and found[0] == "3.9"
    assert Path(found[1]).parent.parent == VENV_DIR  # the scripts below run in the cached venv


def test_scripts_run_on_python_3_9(py39_venv, sandbox, tmp_path):
    for script in ("create_batch_file.py", "validate_batch_file.py", "submit.py"):
        proc = run(py39_venv, script, "--help")
        assert proc.returncode == 0 and "exit codes" in proc.stdout, proc.stderr
    ok_json(run(py39_venv, "create_batch_file.py", tmp_path / "ex.jsonl"))
    ok_json(run(py39_venv, "validate_batch_file.py", tmp_path / "ex.jsonl"))
    doc = ok_json(run(py39_venv, "submit.py", tmp_path / "ex.jsonl", env=sandbox.env()))
    assert sandbox.wait_batch(doc["batches"][0]["batch_id"])["status"] == "completed"
    # and on to the end: poll and fetch in input order
    polled = ok_json(run(py39_venv, "poll.py", "--job", doc["job"], "--wait", "--timeout", "120", env=sandbox.env()))
    assert polled["status"] == "completed" and polled["finished"] is True
    fetched = ok_json(run(py39_venv, "fetch_results.py", "--job", doc["job"], "--format", "simple", env=sandbox.env()))
    assert fetched["complete"] is True and fetched["succeeded"] == 5 and fetched["failed"] == 0
    lines = [json.loads(line) for line in Path(fetched["output"]).read_text(encoding="utf-8").splitlines()]
    assert [line["ok"] for line in lines] == [True] * 5
    assert [line["custom_id"] for line in lines] == sorted(line["custom_id"] for line in lines)


def test_sandbox_runs_on_python39(python39, tmp_path):
    sb = Sandbox(tmp_path / "data", api_key=new_api_key(), python=python39).start()
    try:
        batch = sb.submit(chat_requests(5))
        assert sb.wait_batch(batch["id"])["status"] == "completed"
        assert len(sb.content(batch["output_file_id"]).lines()) == 5
    finally:
        sb.stop()
