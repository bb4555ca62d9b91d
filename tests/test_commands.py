"""The interpreter of printed commands (`next`, hints): `python3` only when that word on PATH is
the interpreter running the script; else the script's own interpreter, by its path, so that
the printed command runs with the same packages."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time

import pytest
from _dwbatches.core import commands, compat, errors
from helpers import run, write_input

HERE = os.path.dirname(os.path.abspath(sys.executable))


def path_without_this_interpreter() -> str:
    return os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep) if d and os.path.abspath(d) != HERE)


@pytest.mark.slow
@pytest.mark.skipif(compat.IS_WINDOWS, reason="POSIX shell quoting of the printed command")
@pytest.mark.parametrize("child", [False, True])
def test_an_interpreter_off_path_prints_its_own_path_and_the_command_runs(sandbox, child):
    write_input("in.jsonl", 2)
    env = sandbox.env()
    env["PATH"] = path_without_this_interpreter()
    proc = run("submit.py", "in.jsonl", "--dry-run", env=env, subprocess=child)
    assert proc.returncode == 0, proc.stderr
    nxt = json.loads(proc.stdout)["next"]
    assert nxt.startswith(shlex.quote(sys.executable) + " ") and not nxt.startswith("python3 "), nxt
    assert f"next: {nxt}" in proc.stderr
    # the printed command runs as printed, with the same PATH (python3 there, if any, lacks
    # what this interpreter has installed; the printed one is this interpreter)
    ran = subprocess.run(nxt, shell=True, env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    doc = json.loads(ran.stdout)
    assert doc["batches"] and doc["next"].startswith(shlex.quote(sys.executable) + " ")
    ran = subprocess.run(doc["next"], shell=True, env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and json.loads(ran.stdout)["status"], ran.stderr


def test_the_platform_word_when_it_is_the_running_interpreter(monkeypatch):
    word = "python" if compat.IS_WINDOWS else "python3"
    assert compat.python_command() == word  # (the tests put this interpreter's directory first on PATH)
    assert commands.command("poll.py", "--job", "a.dwjob").startswith(word + " ")
    assert errors.install_hint().startswith(word + " -m pip install -r ")
    monkeypatch.setenv("PATH", path_without_this_interpreter())
    exe = compat.quote_args([compat.command_path(sys.executable)])
    assert compat.python_command() == exe
    assert commands.command("poll.py", "--job", "a.dwjob").startswith(exe + " ")
    assert errors.install_hint().startswith(exe + " -m pip install -r ")  # pip installs into this one


@pytest.mark.skipif(compat.IS_WINDOWS, reason="symlinks")
def test_the_same_file_in_another_directory_is_not_this_interpreter(tmp_path, monkeypatch):
    """A venv's python3 is a symlink to the base interpreter: the base one on PATH is the same
    file, but lacks the venv's packages."""
    base = tmp_path / "base-bin"
    base.mkdir()
    (base / "python3").symlink_to(os.path.realpath(sys.executable))
    monkeypatch.setenv("PATH", str(base))
    assert os.path.samefile(base / "python3", sys.executable)
    assert compat.python_command() == shlex.quote(sys.executable)


# -- run by uv: the printed commands are `uv run SCRIPT` ------------------------------------------
# `uv run` sets UV (its own path) and VIRTUAL_ENV (the environment it made, this interpreter's
# prefix) and puts that environment first on PATH: there `python3` is the interpreter running,
# but in the user's shell afterwards it is another one, without the packages.

REQUIREMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "requirements.txt")
SCRIPTS_DIR = os.path.join(os.path.dirname(REQUIREMENTS), "scripts")


def uv_env(sandbox, tmp_path, uv=None):
    """The environment `uv run` gives this interpreter (UV: a real uv, or a stand-in file)."""
    if uv is None:
        uv = str(tmp_path / "uv")
        open(uv, "w").close()
    env = sandbox.env()
    env.update(UV=uv, VIRTUAL_ENV=sys.prefix)
    return env


def test_under_uv_the_printed_commands_and_the_install_hint_are_uv_run(sandbox, tmp_path, monkeypatch):
    write_input("in.jsonl", 2)
    env = uv_env(sandbox, tmp_path)
    proc = run("submit.py", "in.jsonl", "--dry-run", env=env, subprocess=True)
    assert proc.returncode == 0, proc.stderr
    quoted_uv = shlex.quote(env["UV"]) if not compat.IS_WINDOWS else compat.quote_args([env["UV"]])
    nxt = json.loads(proc.stdout)["next"]
    assert nxt == f"{quoted_uv} run {commands.script_path('submit.py')} in.jsonl", nxt  # (a uv not on PATH: its path)
    # a UV inherited by an interpreter that uv did not set up changes nothing
    env["VIRTUAL_ENV"] = str(tmp_path)
    nxt = json.loads(run("submit.py", "in.jsonl", "--dry-run", env=env, subprocess=True).stdout)["next"]
    assert nxt.startswith(compat.python_command() + " "), nxt
    # in-process: the same builder gives every command and the install hint
    monkeypatch.setenv("UV", uv_env(sandbox, tmp_path)["UV"])
    monkeypatch.setenv("VIRTUAL_ENV", sys.prefix)
    assert (
        commands.command("poll.py", "--job", "a.dwjob")
        == f"{quoted_uv} run {commands.script_path('poll.py')} --job a.dwjob"
    )
    assert errors.install_hint("poll.py").startswith(f"{quoted_uv} run {commands.script_path('poll.py')} (uv installs")
    assert errors.install_hint() == f"{quoted_uv} pip install -r {commands.display_path(REQUIREMENTS)}"


@pytest.mark.slow
def test_a_job_submitted_with_uv_run_goes_on_with_the_commands_it_prints(sandbox, tmp_path):
    """The real uv (requirements-dev.txt installs it): `uv run scripts/submit.py` prints `uv run
    .../poll.py`, which runs as printed in a shell whose python3 lacks the packages."""
    uv = shutil.which("uv") or os.path.join(os.path.dirname(sys.executable), "uv")
    if not os.path.isfile(uv):
        pytest.skip("uv is not installed (requirements-dev.txt names it)")
    write_input("in.jsonl", 3)
    env = sandbox.env()
    env.pop("VIRTUAL_ENV", None)
    env.pop("UV", None)
    env["PATH"] = os.pathsep.join([os.path.dirname(uv), path_without_this_interpreter()])
    proc = subprocess.run(
        [uv, "run", os.path.join(SCRIPTS_DIR, "submit.py"), "in.jsonl"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0 and not proc.stdout.strip():
        pytest.skip(f"uv could not set up the script's environment (offline?): {proc.stderr[-500:]}")
    assert proc.returncode == 0, proc.stderr
    nxt = json.loads(proc.stdout)["next"]
    assert nxt.startswith("uv run ") and "poll.py --job in.dwjob" in nxt, nxt
    assert f"next: {nxt}" in proc.stderr
    for _ in range(60):  # check until finished, as printed
        ran = subprocess.run(nxt, shell=True, env=env, capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0, ran.stderr
        nxt = json.loads(ran.stdout)["next"]
        assert nxt.startswith("uv run "), nxt
        if "fetch_results.py" in nxt:
            break
        time.sleep(0.5)
    ran = subprocess.run(nxt, shell=True, env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["succeeded"] == 3


# -- a system Python that refuses pip (PEP 668) -------------------------------------------------


def externally_managed_python():
    """A Python on this machine marked EXTERNALLY-MANAGED (Debian's /usr/bin/python3, Homebrew's)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", "/opt/homebrew/bin/python3"):
        if not os.path.isfile(candidate):
            continue
        out = subprocess.run(
            [
                candidate,
                "-c",
                "import sys, sysconfig; print(sys.prefix == sys.base_prefix, sysconfig.get_path('stdlib'))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()
        if out and out[0] == "True" and os.path.isfile(os.path.join(out[1], "EXTERNALLY-MANAGED")):
            return candidate
    return None


@pytest.mark.slow
@pytest.mark.skipif(compat.IS_WINDOWS, reason="no Windows Python is externally managed")
def test_a_system_python_is_told_to_make_a_venv_and_the_hint_runs_as_printed(sandbox, tmp_path):
    system = externally_managed_python()
    if system is None:
        pytest.skip("no externally-managed (PEP 668) Python on this machine")
    env = sandbox.env()
    env.pop("VIRTUAL_ENV", None)
    env.pop("UV", None)
    env["PATH"] = os.pathsep.join([os.path.dirname(system), path_without_this_interpreter()])
    probe = subprocess.run([system, "-c", "import requests, dotenv"], capture_output=True, timeout=60)
    if probe.returncode == 0:
        pytest.skip(f"{system} has the packages already")
    proc = subprocess.run(
        [system, os.path.join(SCRIPTS_DIR, "list_models.py")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr
    hint = next(line for line in proc.stderr.splitlines() if line.startswith("hint: "))
    assert "refuses pip install (PEP 668)" in hint and " -m venv .venv" in hint, hint
    # pip into that Python fails, as the hint says (where it has pip at all)
    pip = subprocess.run(
        [system, "-m", "pip", "install", "-r", REQUIREMENTS], capture_output=True, text=True, timeout=120
    )
    assert pip.returncode != 0
    # the hint's steps, as printed
    make_venv = hint.split("make a virtual environment with ", 1)[1].split(", then ", 1)[0]
    install = hint.split(", then ", 1)[1].split(", and run the scripts with ", 1)[0]
    venv_python = hint.split(", and run the scripts with ", 1)[1].split(" (or with uv", 1)[0]
    for step in (make_venv, install):
        done = subprocess.run(step, shell=True, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 and step is install and "No matching distribution" in done.stderr + done.stdout:
            pytest.skip("PyPI cannot be reached")
        assert done.returncode == 0, f"{step}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    proc = subprocess.run(
        f"{venv_python} {shlex.quote(os.path.join(SCRIPTS_DIR, 'list_models.py'))}",
        shell=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["models"]
