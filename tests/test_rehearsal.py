"""--sandbox: every script that talks to the server rehearses against the bundled sandbox,
started for the command and stopped after it, its state in .dwb-sandbox/ of the working
directory, so that submit, poll and fetch with --sandbox follow one job; the user's key and
.env are never read, nor their server reached.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import helpers
import pytest
from _dwbatches.core import compat
from _dwbatches.core.errors import LOCAL_SCRIPTS
from helpers import fresh_env, is_error, run_script, write_input
from sandbox_helper import SCRIPTS

USER_KEY = "sk-user-" + "k" * 40


def state(tmp_path: Path) -> dict:
    return json.loads((tmp_path / ".dwb-sandbox" / "server.json").read_text(encoding="utf-8"))


def answers(st: dict) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(st["base_url"] + "/models", headers={"Authorization": f"Bearer {st['api_key']}"})
    try:
        with opener.open(req, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def run_printed(command: str, cwd: Path, env: dict) -> tuple:
    """Run a printed `next` command as printed (its interpreter and arguments)."""
    proc = subprocess.run(shlex.split(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    return proc.returncode, json.loads(proc.stdout), proc.stderr


@pytest.mark.slow
def test_submit_poll_fetch_with_sandbox_follow_one_job_and_never_touch_the_users_server(tmp_path, hostile_server):
    (tmp_path / ".env").write_text(f"DOUBLEWORD_API_KEY={USER_KEY}\n", encoding="utf-8")
    env = fresh_env(DOUBLEWORD_API_KEY=USER_KEY, DOUBLEWORD_BASE_URL=hostile_server.base_url)
    write_input(tmp_path / "data.jsonl", 8)

    code, doc, err = run_script("submit.py", "data.jsonl", "--sandbox", env=env)
    assert code == 0, err
    first = state(tmp_path)
    assert "rehearsal: the local sandbox at " + first["base_url"] in err and "sandbox stopped" in err
    assert not compat.pid_alive(first["pid"]) and not answers(first)  # stopped at the end
    assert doc["next"].endswith("poll.py --job data.dwjob --sandbox")

    code, doc, err = run_printed(doc["next"] + " --wait", tmp_path, env)  # the next, as printed
    assert code == 0, err
    assert doc["status"] == "completed" and doc["next"].endswith("--job data.dwjob --sandbox")
    code, doc, err = run_printed(doc["next"], tmp_path, env)
    assert code == 0, err
    assert doc["complete"] is True and doc["succeeded"] == 8
    assert len((tmp_path / "data.results.jsonl").read_text(encoding="utf-8").splitlines()) == 8

    again = state(tmp_path)
    assert again["port"] == first["port"] and again["api_key"] == first["api_key"]  # one server, restarted
    assert not answers(again)
    assert hostile_server.requests == []  # the user's server never heard of it
    for path in (tmp_path / ".dwb-sandbox").rglob("*"):
        if path.is_file():
            assert USER_KEY.encode() not in path.read_bytes(), path
    assert first["api_key"] not in err  # the sandbox's key is a secret too


@pytest.mark.slow
def test_list_models_list_batches_cancel_and_check_setup_take_sandbox(tmp_path):
    env = fresh_env()
    write_input(tmp_path / "data.jsonl", 3)
    code, doc, err = run_script("run_batch.py", "data.jsonl", "--sandbox", "--wait", "--timeout", "60", env=env)
    assert code == 0 and doc["succeeded"] == 3, err
    code, doc, err = run_script("list_batches.py", "--sandbox", env=env)
    assert code == 0 and doc["count"] == 1, err
    batch_id = doc["batches"][0]["batch_id"]
    code, doc, err = run_script("list_models.py", "--sandbox", env=env)
    assert code == 0 and doc["count"] >= 4, err
    code, doc, err = run_script("cancel_batch.py", batch_id, "--sandbox", env=env)
    assert code == 0 and doc["skipped"] == 1, err
    code, doc, err = run_script("check_setup.py", "--sandbox", env=env)
    assert code == 0 and doc["sandbox"] is True and doc["base_url"] == state(tmp_path)["base_url"], err
    assert doc["key_source"].startswith("the rehearsal sandbox")
    assert not answers(state(tmp_path))


def test_a_command_joins_a_running_rehearsal_and_the_last_to_leave_stops_it(tmp_path):
    """Two commands at once: the second uses the server the first started; the first leaves it
    running for the second, which stops it (by its pid: it is not its child)."""
    holder = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(SCRIPTS)!r})
        from _dwbatches.core import rehearsal
        found = rehearsal.attach()
        print(found.pid, flush=True)
        sys.stdin.readline()
        rehearsal.detach(found)
        """
    )
    env = fresh_env()
    first = subprocess.Popen(
        [sys.executable, "-c", holder], cwd=tmp_path, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        server_pid = int(first.stdout.readline())
        # a second command meanwhile: it finds the server running and leaves it so
        code, doc, err = run_script("list_models.py", "--sandbox", env=env, cwd=tmp_path)
        assert code == 0, err
        assert "rehearsal: the local sandbox at" not in err and "sandbox stopped" not in err
        assert answers(state(tmp_path))
        # a third, in a child process, holds it while the first leaves
        third = subprocess.Popen(
            [sys.executable, "-c", holder],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert int(third.stdout.readline()) == server_pid
        first.communicate("\n", timeout=60)
        assert answers(state(tmp_path)) and compat.pid_alive(server_pid)  # still in use
        third.communicate("\n", timeout=60)  # the last one stops it, though another started it
        assert not answers(state(tmp_path))
    finally:
        for proc in (first,):
            if proc.poll() is None:
                proc.kill()


def test_sandbox_with_base_url_is_refused(tmp_path):
    code, doc, err = run_script("poll.py", "--sandbox", "--base-url", "http://127.0.0.1:9/v1", "x", env=fresh_env())
    assert code == 2 and is_error(doc)
    assert "--sandbox and --base-url name two servers" in err
    assert not (tmp_path / ".dwb-sandbox").exists()


@pytest.mark.slow
def test_a_port_taken_meanwhile_is_explained(tmp_path):
    env = fresh_env()
    code, _, err = run_script("list_models.py", "--sandbox", env=env)
    assert code == 0, err
    port = state(tmp_path)["port"]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        code, doc, err = run_script("list_models.py", "--sandbox", env=env)
    assert code == 1 and is_error(doc)
    assert doc["error"]["message"] == (
        f"the rehearsal sandbox cannot listen on port {port} again: another program uses it"
    )
    assert "delete .dwb-sandbox" in doc["error"]["hint"]


def test_a_rehearsal_job_without_sandbox_is_told_to_add_it(tmp_path, sandbox):
    write_input(tmp_path / "data.jsonl", 2)
    code, doc, err = run_script("submit.py", "data.jsonl", "--sandbox", env=fresh_env())
    assert code == 0, err
    code, doc, err = run_script("poll.py", "--job", "data.dwjob", env=sandbox.env())
    assert code == 3 and is_error(doc)
    assert "was submitted to the rehearsal sandbox" in doc["error"]["message"]
    assert doc["error"]["hint"].startswith("Add --sandbox")


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.py") if p.name != "sandbox_server.py"))
def test_the_scripts_that_talk_to_a_server_take_sandbox_and_every_script_takes_json(script):
    proc = helpers.run(script, "--help", env=fresh_env())
    assert proc.returncode == 0 and "--json" in proc.stdout
    assert ("--sandbox" in proc.stdout) == (script not in LOCAL_SCRIPTS), script
