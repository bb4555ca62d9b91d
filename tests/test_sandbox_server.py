"""Sandbox: process behaviour (ready line, CLI, signals), auth, routing and persistence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from sandbox_helper import SERVER_SCRIPT, Sandbox, chat_requests, new_api_key


def test_ready_line_and_helper_attributes(sandbox):
    assert set(sandbox.ready) == {"base_url", "port", "pid", "data_dir", "api_key"}
    assert sandbox.ready["api_key"] is None  # a key given to it is never echoed
    assert sandbox.base_url == f"http://127.0.0.1:{sandbox.port}/v1"
    assert sandbox.pid == sandbox.proc.pid
    assert Path(sandbox.ready["data_dir"]) == sandbox.data_dir.resolve()
    assert (sandbox.data_dir / "sandbox.db").exists()
    env = sandbox.env()
    assert env["DOUBLEWORD_BASE_URL"] == sandbox.base_url
    assert env["DOUBLEWORD_API_KEY"] == sandbox.api_key
    assert sandbox.api_key.startswith("sk-test-") and len(sandbox.api_key) == 48


def test_help_lists_flags_and_sandbox_endpoints():
    out = subprocess.run(
        [sys.executable, str(SERVER_SCRIPT), "--help"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    for flag in (
        "--host",
        "--port",
        "--data-dir",
        "--api-key",
        "--forbidden-key",
        "--max-file-bytes",
        "--max-requests-per-file",
        "--max-body-bytes",
        "--validating-delay",
        "--concurrency",
        "--latency",
        "--upstream",
        "--window-scale",
        "--faults",
        "--models",
    ):
        assert flag in out
    assert "/_sandbox/stats" in out and "/_sandbox/faults" in out
    assert "Examples:" in out


def test_sigterm_exits_cleanly(sandbox):
    started = time.monotonic()
    assert sandbox.stop() == 0
    assert time.monotonic() - started < 5


def test_sigint_exits_cleanly(sandbox):
    sandbox.proc.send_signal(signal.SIGINT)
    assert sandbox.proc.wait(10) == 0


def test_non_loopback_host_warns(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT), "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path / "d")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["base_url"].startswith("http://127.0.0.1:")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert b"WARNING" in err


# --- auth -----------------------------------------------------------------------------------


def test_auth_required(sandbox_factory):
    sb = sandbox_factory("--forbidden-key", "sk-platform-key")
    for path in ("files", "batches", "/_sandbox/stats"):
        res = sb.get(path, auth=False)
        assert (res.status, res.text) == (401, "Authentication required"), path
        assert res.header("Content-Type").startswith("text/plain")
        res = sb.get(path, api_key="sk-wrong")
        assert (res.status, res.text) == (401, "Invalid API key"), path
    res = sb.get("batches", api_key="sk-platform-key")
    assert res.status == 403
    assert "platform" in res.text
    assert sb.get("batches").status == 200
    res = sb.get("batches", headers={"Authorization": f"bearer {sb.api_key}"})
    assert res.status == 200  # the scheme is case-insensitive


def test_unauthenticated_upload_gets_401_without_reading_body(sandbox):
    res = requests.post(
        f"{sandbox.base_url}/files",
        files={"file": ("x.jsonl", b"x" * 3_000_000)},
        data={"purpose": "batch"},
        timeout=30,
    )
    assert (res.status_code, res.text) == (401, "Authentication required")
    assert sandbox.stats()["uploads_received"] == 0


def test_no_api_key_accepts_anything(sandbox_factory):
    sb = sandbox_factory(api_key="")
    assert sb.api_key is None
    assert sb.get("batches").status == 200
    assert sb.get("batches", headers={"Authorization": "Bearer whatever"}).status == 200


def test_api_key_from_environment(tmp_path):
    key = new_api_key()
    env = dict(os.environ, DW_SANDBOX_API_KEY=key)
    sb = Sandbox(tmp_path / "data", env=env).start()
    try:
        assert sb.get("batches").status == 401
        assert sb.get("batches", api_key=key).status == 200
    finally:
        sb.stop()


def test_key_is_never_logged(sandbox_factory):
    sb = sandbox_factory("-v")
    sb.get("batches")
    sb.get("batches", api_key="sk-wrong-key-value")
    sb.submit(chat_requests(1))
    sb.stop()
    log = sb.log_text()
    assert "GET /v1/batches" in log  # -v logs request lines
    assert sb.api_key not in log
    assert "sk-wrong-key-value" not in log


# --- routing --------------------------------------------------------------------------------


def test_ai_v1_prefix_and_unknown_routes(sandbox):
    assert sandbox.get("/ai/v1/batches").status == 200
    assert sandbox.get("/ai/v1/models").status == 200
    res = sandbox.get("/v1/nothing-here")
    assert res.status == 404
    res = sandbox.request("PUT", "files")
    assert res.status == 405


def test_keep_alive(sandbox):
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {sandbox.api_key}"
        first = session.get(f"{sandbox.base_url}/batches", timeout=10)
        assert first.headers.get("Connection") != "close"
        for _ in range(5):
            assert session.get(f"{sandbox.base_url}/files", timeout=10).status_code == 200
        bad = session.post(f"{sandbox.base_url}/batches", data=b"{}", timeout=10)
        assert bad.status_code == 415
        assert session.get(f"{sandbox.base_url}/files", timeout=10).status_code == 200


# --- persistence ----------------------------------------------------------------------------


@pytest.mark.slow  # several script runs or a server restart: in make test, not the inner loop
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_restart_mid_batch_continues(sandbox_factory, how):
    sb = sandbox_factory("--latency", "0.02", "--concurrency", "2")
    finished = sb.submit(chat_requests(3, prefix="early-"))
    sb.wait_batch(finished["id"])
    early_output = sb.content(finished["output_file_id"]).body
    batch = sb.submit(chat_requests(60))
    deadline = time.time() + 10
    while sb.batch(batch["id"])["request_counts"]["completed"] < 10 and time.time() < deadline:
        time.sleep(0.05)
    partial = sb.content(batch["output_file_id"]).lines()
    assert 0 < len(partial) < 60
    if how == "sigkill":
        sb.kill()
        sb.start()
    else:
        sb.restart()
    done = sb.wait_batch(batch["id"])
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 60, "completed": 60, "failed": 0}
    lines = sb.content(batch["output_file_id"]).lines()
    assert lines[: len(partial)] == partial  # finished work is kept, in the same order
    assert sorted(line["custom_id"] for line in lines) == sorted(f"req-{i}" for i in range(60))
    assert sb.content(finished["output_file_id"]).body == early_output
    assert len(sb.get_json("files", params={"purpose": "batch"})["data"]) == 2


# --- the launcher (_dwbatches.core.sandbox: the one way to start the server) ---------------------


def test_launcher_gives_the_key_by_environment_and_passes_no_sandbox_settings_on(monkeypatch, tmp_path):
    from _dwbatches.core.sandbox import SandboxProcess

    monkeypatch.setenv("DW_SANDBOX_FAULTS", '{"fail_rate": 1}')
    monkeypatch.setenv("DW_SANDBOX_UPSTREAM_API_KEY", "sk-upstream")
    launcher = SandboxProcess(str(tmp_path / "d"), ["--latency", "0"])
    assert launcher.api_key.startswith("sk-sandbox-")
    assert launcher.api_key not in " ".join(launcher.command())  # never on a command line (ps shows it)
    env = launcher.environment()
    assert env["DW_SANDBOX_API_KEY"] == launcher.api_key
    assert "DW_SANDBOX_FAULTS" not in env and "DW_SANDBOX_UPSTREAM_API_KEY" not in env
    assert launcher.command()[-2:] == ["--latency", "0"]
    assert "DW_SANDBOX_API_KEY" not in SandboxProcess(str(tmp_path / "e"), api_key=None).environment()
    given = SandboxProcess(str(tmp_path / "f"), api_key=None, env={"DW_SANDBOX_FAULTS": "{}"}).environment()
    assert given == {"DW_SANDBOX_FAULTS": "{}"}  # an environment given is used as it is


def test_launcher_reports_a_server_that_does_not_start(tmp_path):
    from _dwbatches.core.sandbox import SandboxProcess, SandboxStartError

    launcher = SandboxProcess(extra_args=["--faults", "{not json"])
    data_dir = Path(launcher.data_dir)
    with pytest.raises(SandboxStartError) as err:
        launcher.start()
    assert "did not start: it exited with code 2" in str(err.value)
    assert "invalid fault document" in err.value.hint and launcher.log_path in err.value.hint
    assert not launcher.running
    launcher.stop()
    assert not data_dir.exists()  # its temporary data dir is removed


def test_launcher_kill_and_restart_keep_the_data_dir(tmp_path):
    from _dwbatches.core.sandbox import SandboxProcess

    with SandboxProcess(str(tmp_path / "data"), api_key=None) as launcher:  # the server makes its key
        first, key = launcher.pid, launcher.api_key
        assert key == launcher.ready["api_key"] and key.startswith("sk-sandbox-")
        assert launcher.ready["data_dir"] == str((tmp_path / "data").resolve())
        auth = {"Authorization": f"Bearer {key}"}
        res = requests.post(
            launcher.base_url + "/files",
            files={"file": ("a.jsonl", b"\n".join(json.dumps(r).encode() for r in chat_requests(2)))},
            data={"purpose": "batch"},
            headers=auth,
            timeout=30,
        )
        assert res.status_code == 201, res.text
        launcher.kill()
        assert not launcher.running and launcher.proc.returncode != 0
        launcher.restart(["--latency", "0.01"])
        assert launcher.running and launcher.pid != first and launcher.command()[-2:] == ["--latency", "0.01"]
        assert launcher.api_key == key and launcher.ready["api_key"] is None  # handed on: the same key
        files = requests.get(launcher.base_url + "/files", headers=auth, timeout=30).json()["data"]
        assert [f["id"] for f in files] == [res.json()["id"]]
    assert launcher.stop() == 0 and (tmp_path / "data" / "sandbox.db").exists()
