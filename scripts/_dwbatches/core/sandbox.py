"""The one launcher of the bundled sandbox server (``scripts/sandbox_server.py``) in a child process.

check_setup --sandbox, the demo, the benchmarks and the tests all start it through
``SandboxProcess``: a free loopback port (``--port 0``), the ready line read from its stdout
(``{base_url, port, pid, data_dir, api_key}``), its stderr appended to a log file (0600), and
stop (SIGTERM, then a kill), kill (a crash) and restart on the same data dir (created 0700).
The server always wants a key: the launcher's (passed in the environment), or the random one
the server prints in its ready line; none only when ``no_auth`` asks for it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
from typing import Any, Dict, List, Optional, Union

from .. import SCRIPTS_DIR
from . import compat
from .errors import DWError

SERVER = os.path.join(SCRIPTS_DIR, "sandbox_server.py")
# What the sandbox reads from its environment. Unless an environment is given, the launcher
# passes none of them on from its own: the sandbox is configured by the launcher's arguments,
# not by what a shell happens to hold.
SANDBOX_ENV = ("DW_SANDBOX_FAULTS", "DW_SANDBOX_API_KEY", "DW_SANDBOX_UPSTREAM_API_KEY")
LOG_TAIL_LINES = 20


class SandboxStartError(DWError):
    """The sandbox server did not print its ready line: it exited, or took too long."""


def new_key() -> str:
    """A throwaway key for one sandbox run."""
    return "sk-sandbox-" + secrets.token_urlsafe(27)


class SandboxProcess:
    """A sandbox server in a child process, on a free loopback port.

    ``data_dir``: its state (default: a temporary directory, removed by ``stop``).
    ``extra_args``: more command-line flags (a later ``--port`` wins over ``--port 0``).
    ``log_path``: where its stderr is appended (default: ``sandbox.log`` in the data dir).
    ``api_key``: True for a fresh throwaway key, a string for that key (either is passed in the
    environment, never on the command line), None for the random key the server makes and
    prints in its ready line (``api_key`` holds it once started). ``no_auth``: the server
    accepts every request without a key (``--no-auth``).
    ``env``: the environment (default: this process's, without ``SANDBOX_ENV``).
    ``python``: the interpreter (default: this one). ``cwd``: its working directory.
    ``script``: the server script (default: the one next to this package).
    """

    def __init__(
        self,
        data_dir: Optional[str] = None,
        extra_args: Optional[List[str]] = None,
        log_path: Optional[str] = None,
        *,
        api_key: Union[bool, str, None] = True,
        no_auth: bool = False,
        env: Optional[Dict[str, str]] = None,
        python: Optional[str] = None,
        cwd: Optional[str] = None,
        script: Optional[str] = None,
    ):
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="dwb-sandbox-")
        self.data_dir = str(data_dir) if data_dir else self._tmp.name  # type: ignore[union-attr]
        self.extra_args = list(extra_args or [])
        self.log_path = str(log_path) if log_path else os.path.join(self.data_dir, "sandbox.log")
        self.no_auth = no_auth
        self.api_key: Optional[str] = None if no_auth else new_key() if api_key is True else (api_key or None)
        self.env = env
        self.python = python or sys.executable
        self.cwd = cwd
        self.script = str(script) if script else SERVER
        self.proc: Optional[subprocess.Popen] = None
        self.ready: Dict[str, Any] = {}
        self.base_url = ""
        self.port: Optional[int] = None
        self.pid: Optional[int] = None

    def command(self) -> List[str]:
        auth = ["--no-auth"] if self.no_auth else []
        return [self.python, self.script, "--port", "0", "--data-dir", self.data_dir, *auth, *self.extra_args]

    def environment(self) -> Dict[str, str]:
        if self.env is None:
            env = {k: v for k, v in os.environ.items() if k not in SANDBOX_ENV}
        else:
            env = dict(self.env)
        if self.api_key and not self.no_auth:
            env["DW_SANDBOX_API_KEY"] = self.api_key
        return env

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 20.0) -> SandboxProcess:
        """Start the server and wait for its ready line; SandboxStartError if none comes."""
        if self.running:
            raise SandboxStartError("the sandbox server is already running")
        if not os.path.isdir(self.data_dir):
            os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
            compat.set_mode(self.data_dir, 0o700)
        log = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | compat.O_BINARY, 0o600)
        try:  # the child keeps its own handle
            self.proc = subprocess.Popen(
                self.command(),
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
                cwd=self.cwd,
            )
        finally:
            os.close(log)
        self.ready = json.loads(self._ready_line(timeout))
        if self.ready.get("api_key") and not self.no_auth:
            self.api_key = self.ready["api_key"]  # the server made it: no key was given
        self.base_url = self.ready["base_url"]
        self.port = int(self.ready["port"])
        self.pid = int(self.ready["pid"])
        return self

    def _ready_line(self, timeout: float) -> bytes:
        # A thread reads the line: select() does not work on pipes everywhere (Windows).
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        stdout = proc.stdout
        got: List[bytes] = []
        reader = threading.Thread(target=lambda: got.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if reader.is_alive():
            self.kill()
            raise self._not_started(f"not ready after {timeout:g}s")
        if not got or not got[0]:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
            self._release()
            raise self._not_started(f"it exited with code {proc.returncode}")
        return got[0]

    def _not_started(self, why: str) -> SandboxStartError:
        tail = self.log_text().splitlines()[-LOG_TAIL_LINES:]
        hint = f"Its log ({self.log_path}) ends with:\n" + "\n".join(tail) if tail else f"See its log: {self.log_path}"
        return SandboxStartError(f"the sandbox server did not start: {why}", hint=hint)

    def log_text(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def _end(self, timeout: float) -> Optional[int]:
        """SIGTERM (TerminateProcess on Windows) and wait; a kill if it does not exit in time."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._release()
        return proc.returncode

    def _release(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        """A clean shutdown; removes a temporary data dir. Returns the exit code (None if never started)."""
        code = self._end(timeout)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return code

    def kill(self) -> None:
        """SIGKILL, no clean shutdown (a crash); the data dir stays for a restart."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._release()

    def restart(self, extra_args: Optional[List[str]] = None, timeout: float = 20.0) -> SandboxProcess:
        """Stop and start again on the same data dir (the port may change)."""
        self._end(10.0)
        if extra_args is not None:
            self.extra_args = list(extra_args)
        return self.start(timeout)

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["SANDBOX_ENV", "SERVER", "SandboxProcess", "SandboxStartError", "new_key"]
