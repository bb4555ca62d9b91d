"""The interpreter of printed commands (`next`, hints): `python3` only when that word on PATH is
the interpreter running the script; else the script's own interpreter, by its path, so that
the printed command runs with the same packages."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
from _dwbatches.core import commands, compat, errors
from helpers import run, write_input

HERE = os.path.dirname(os.path.abspath(sys.executable))


def path_without_this_interpreter() -> str:
    return os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep) if d and os.path.abspath(d) != HERE)


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
