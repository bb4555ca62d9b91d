"""Shared pytest fixtures.

Every test runs in its own temporary working directory with DOUBLEWORD_API_KEY and
DOUBLEWORD_BASE_URL removed, so no real key or ``.env`` can be picked up. Waits of the client
(backoffs, Retry-After, poll intervals, settle delays) are scaled by TIME_SCALE through
``DOUBLEWORD_BATCHES_TIME_SCALE``, read by the test hooks (tests/hooks: on PYTHONPATH for every
Python the tests start, and installed here); a test marked ``real_time`` runs with real waits.

A server that behaves as a test programs it (see tests/hostile_server.py):
    hostile_server   one HostileServer on a free loopback port, stopped afterwards
    hostile_factory  hostile_factory() starts more (another one to redirect to, say)

Sandbox fixtures (see tests/sandbox_helper.py):
    sandbox          a sandbox server with default settings and nothing in it: one server per
                     test process, emptied before each test (POST /_sandbox/reset); a test
                     that stops, restarts or reconfigures it gets a new one afterwards
    sandbox_factory  sandbox_factory("--latency", "0.05", ...) starts more, all stopped afterwards

The directory of the interpreter running the tests is put first on PATH (see below).
"""

from __future__ import annotations

import os
import sys

import pytest

# The test hooks (time scaling, crash points): in this process, and in every Python it starts.
HOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hooks")
if HOOKS not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HOOKS, os.environ.get("PYTHONPATH")) if p)
sys.path.insert(0, HOOKS)
import dwb_testhooks  # noqa: E402

dwb_testhooks.install()

from hostile_server import HostileServer  # noqa: E402
from sandbox_helper import Sandbox, new_api_key  # noqa: E402

TIME_SCALE = "0.05"

# The interpreter running the tests comes first on PATH, for in-process runs and child
# processes alike, as when a user runs the scripts with the `python3` of an activated venv:
# then the commands the scripts print start with `python3` (compat.python_command), and
# `python3` on PATH runs them with this interpreter's packages. (A test that runs a script
# with the interpreter off PATH sets PATH itself: tests/test_commands.py.)
_HERE = os.path.dirname(os.path.abspath(sys.executable))
if os.environ.get("PATH", "").split(os.pathsep)[0] != _HERE:
    os.environ["PATH"] = _HERE + os.pathsep + os.environ.get("PATH", "")


def pytest_configure(config):
    config.addinivalue_line("markers", "real_time: the client's waits are not scaled in this test")


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    for name in ("DOUBLEWORD_API_KEY", "DOUBLEWORD_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("UV", raising=False)  # (under `uv run pytest` the printed commands would say `uv run`)
    if request.node.get_closest_marker("real_time") is None:
        monkeypatch.setenv("DOUBLEWORD_BATCHES_TIME_SCALE", TIME_SCALE)
    else:
        monkeypatch.delenv("DOUBLEWORD_BATCHES_TIME_SCALE", raising=False)


@pytest.fixture
def hostile_factory():
    """Start HostileServers: ``hostile_factory()`` (``host=`` another loopback address); all are
    stopped afterwards."""
    started: list = []

    def start(host: str = "127.0.0.1") -> HostileServer:
        server = HostileServer(host).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def hostile_server(hostile_factory) -> HostileServer:
    """A HostileServer on a free loopback port (nothing programmed: every request gets 404)."""
    return hostile_factory()


@pytest.fixture
def sandbox_factory(tmp_path_factory):
    """Start sandboxes with extra CLI args: ``sandbox_factory("--latency", "0.1")``.

    Keyword arguments: ``api_key`` (default: a fresh random key; pass ``""`` for no auth:
    ``--no-auth``), ``data_dir`` (default: a new temporary directory).
    """
    started: list = []

    def start(*extra_args: str, api_key: str | None = None, data_dir=None) -> Sandbox:
        key = new_api_key() if api_key is None else (api_key or None)
        directory = data_dir or tmp_path_factory.mktemp("sandbox") / "data"
        sb = Sandbox(directory, api_key=key, extra_args=extra_args, no_auth=api_key == "")
        started.append(sb)
        return sb.start()

    yield start
    for sb in started:
        sb.stop()


@pytest.fixture(scope="session")
def _shared_sandbox(tmp_path_factory):
    holder: dict = {}
    yield holder
    if holder.get("sb") is not None:
        holder["sb"].stop()


@pytest.fixture
def sandbox(_shared_sandbox, tmp_path_factory) -> Sandbox:
    """A sandbox server with default settings and nothing in it (see the module docstring)."""
    sb = _shared_sandbox.get("sb")
    if sb is not None and sb.running:
        sb.reset()
    else:
        if sb is not None:
            sb.stop()
        sb = Sandbox(tmp_path_factory.mktemp("sandbox") / "data", api_key=new_api_key()).start()
        _shared_sandbox["sb"] = sb
    before = (sb.pid, sb.port, list(sb.extra_args), sb.api_key)
    yield sb
    if not sb.running or (sb.pid, sb.port, list(sb.extra_args), sb.api_key) != before:
        sb.stop()
        _shared_sandbox["sb"] = None
    else:
        sb.base_url = sb.ready["base_url"]  # a test may point it at a proxy of its own
