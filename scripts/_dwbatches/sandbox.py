"""Start and stop the bundled sandbox server from other scripts (check_setup --sandbox, the demo)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
from typing import List, Optional

from .errors import DWError

SERVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sandbox_server.py")


class SandboxProcess:
    """A sandbox server in a child process, on a free loopback port, with a throwaway key."""

    def __init__(self, data_dir: Optional[str] = None, extra_args: Optional[List[str]] = None,
                 log_path: Optional[str] = None):
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="dwb-sandbox-")
        self.data_dir = data_dir or self._tmp.name  # type: ignore[union-attr]
        self.api_key = "sk-sandbox-" + secrets.token_urlsafe(27)
        self.extra_args = list(extra_args or [])
        self.log_path = log_path or os.path.join(self.data_dir, "sandbox.log")
        self.proc: Optional[subprocess.Popen] = None
        self.base_url = ""

    def start(self, timeout: float = 20.0) -> SandboxProcess:
        os.makedirs(self.data_dir, exist_ok=True)
        env = dict(os.environ, DW_SANDBOX_API_KEY=self.api_key)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, SERVER, "--port", "0", "--data-dir", self.data_dir, *self.extra_args],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=env)
        log.close()
        line: List[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not line or not line[0]:
            self.stop()
            raise DWError("the sandbox server did not start", hint=f"See its log: {self.log_path}")
        self.base_url = json.loads(line[0])["base_url"]
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM on POSIX (a clean shutdown); TerminateProcess on Windows
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
