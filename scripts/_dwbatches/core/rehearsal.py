"""``--sandbox``: the bundled sandbox server as the API, started for a command and stopped after
it, with its state kept in ``.dwb-sandbox/`` in the working directory, so that a submit, a poll
and a fetch with ``--sandbox`` follow one job as they would on the real service.

The directory (0700) holds the sandbox's own data (its SQLite state, ``sandbox.log``) and:

- ``server.json`` (0600): the port and the throwaway key of the server. Every start listens on
  the same port with the same key, so the base URL a job records stays the sandbox's (a job
  talks only to its own server);
- ``users/<pid>``: one file per command using the server now; ``lock``: held while a command
  comes or goes. A command that finds the server running (another command with ``--sandbox``
  at the same time) uses it too, and the last one to leave stops it.

The user's key and ``.env`` are never read: the commands get the sandbox's base URL and key.
Between commands nothing runs, so batches move on only while a command with ``--sandbox``
runs (the sandbox picks up its unfinished requests when it starts again).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Dict, Optional

from . import compat, events, files
from .errors import DWError
from .output import register_secret
from .sandbox import SandboxProcess, SandboxStartError

STATE_DIR = ".dwb-sandbox"
STATE_FILE = "server.json"
LOCK_WAIT = 60.0  # seconds to wait while another command starts or stops the server
STOP_WAIT = 10.0


@dataclass
class Rehearsal:
    """The sandbox a command uses: its base URL and key, and the process when this command
    started it."""

    directory: str
    base_url: str
    api_key: str
    pid: Optional[int]
    process: Optional[SandboxProcess] = None


def _state_path(directory: str) -> str:
    return os.path.join(directory, STATE_FILE)


def read_state(directory: str = STATE_DIR) -> Dict[str, Any]:
    """What ``server.json`` holds ({} when nothing can be read)."""
    try:
        with open(_state_path(directory), encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def base_url_of(directory: str = STATE_DIR) -> Optional[str]:
    """The base URL of the rehearsal sandbox of ``directory`` (None when it never ran)."""
    state = read_state(directory)
    port = state.get("port")
    return f"http://127.0.0.1:{port}/v1" if isinstance(port, int) else None


def _answers(base_url: str, api_key: str, timeout: float = 3.0) -> bool:
    """The sandbox at ``base_url`` answers with this key (loopback: never through a proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(base_url.rstrip("/") + "/models", headers={"Authorization": f"Bearer {api_key}"})
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _port_free(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _locked(directory: str) -> Any:
    lock = compat.FileLock(os.path.join(directory, "lock"))
    if not lock.acquire(wait=LOCK_WAIT):
        raise DWError(
            f"the rehearsal sandbox in {directory} is being started or stopped by another command",
            hint="Run the command again in a moment.",
        )
    try:
        yield
    finally:
        lock.release()


def _users(directory: str) -> str:
    path = os.path.join(directory, "users")
    files.make_private_dir(path)
    return path


def _other_users(directory: str) -> int:
    """Commands other than this one using the server now (the files of ended ones removed)."""
    folder, n = _users(directory), 0
    for name in os.listdir(folder):
        pid = int(name) if name.isdigit() else -1
        if pid == os.getpid():
            continue
        if pid > 0 and compat.pid_alive(pid):
            n += 1
        else:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))
    return n


_current: Optional[Rehearsal] = None  # the one this command uses (attached once a command)


def current() -> Optional[Rehearsal]:
    return _current


def attach(directory: str = STATE_DIR) -> Rehearsal:
    """The rehearsal sandbox for this command: the running one, or one started now on the
    port and key of ``server.json``. Call ``detach`` at the end (once, however often this
    was called)."""
    global _current
    if _current is not None:
        return _current
    files.make_private_dir(directory)
    with _locked(directory):
        state = read_state(directory)
        url, key = base_url_of(directory), state.get("api_key")
        if url and isinstance(key, str) and _answers(url, key):
            found = Rehearsal(directory, url, key, state.get("pid"))
        else:
            found = _start(directory, state)
        files.atomic_write_bytes(os.path.join(_users(directory), str(os.getpid())), b"")
    register_secret(found.api_key)
    _current = found
    return found


def _start(directory: str, state: Dict[str, Any]) -> Rehearsal:
    port = state.get("port") if isinstance(state.get("port"), int) else None
    key = state.get("api_key") if isinstance(state.get("api_key"), str) else True
    proc = SandboxProcess(data_dir=directory, extra_args=["--port", str(port)] if port else [], api_key=key)
    try:
        proc.start()
    except SandboxStartError:
        if port and not _port_free(port):
            raise DWError(
                f"the rehearsal sandbox cannot listen on port {port} again: another program uses it",
                hint=f"Stop that program and run the command again; or delete {directory} to start the rehearsal "
                "afresh on another port (its jobs are then forgotten).",
            ) from None
        raise
    assert proc.api_key is not None
    files.atomic_write_json(
        _state_path(directory), {"port": proc.port, "api_key": proc.api_key, "pid": proc.pid, "base_url": proc.base_url}
    )
    events.step(f"rehearsal: the local sandbox at {proc.base_url} (no key, no money; its state in {directory})")
    return Rehearsal(directory, proc.base_url, proc.api_key, proc.pid, proc)


def detach(found: Rehearsal) -> None:
    """This command is done with the sandbox: stop it unless another command uses it."""
    global _current
    _current = None
    with _locked(found.directory):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(_users(found.directory), str(os.getpid())))
        if _other_users(found.directory):
            return
        if found.process is not None:
            found.process.stop(STOP_WAIT)
            events.step(f"rehearsal: sandbox stopped (its state stays in {found.directory})")
            return
        # started by a command that has ended since: stop it by its pid, once it is surely the sandbox
        if found.pid and _answers(found.base_url, found.api_key):
            compat.terminate(found.pid)
            deadline = time.monotonic() + STOP_WAIT
            while time.monotonic() < deadline and _answers(found.base_url, found.api_key, timeout=0.5):
                time.sleep(0.1)
            events.step(f"rehearsal: sandbox stopped (its state stays in {found.directory})")


__all__ = ["STATE_DIR", "Rehearsal", "attach", "base_url_of", "current", "detach", "read_state"]
