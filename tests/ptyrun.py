"""Running a script under a pseudo-terminal, as a person at a terminal would (or an agent whose
tool runs commands in one, as Cursor's does): stdout, and stderr when asked, are a terminal of
``columns`` columns. POSIX only (the ``pty`` module); tests that use it skip on Windows.

    result = run_in_pty("poll.py", "--job", job, env=env, cwd=tmp_path, stderr_tty=True)
    result.code, result.stdout, result.stderr   # stdout with the terminal's \\r\\n as \\n; stderr raw
    screen(result.stderr)                       # the lines a terminal shows once \\r rewrote them
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from sandbox_helper import SCRIPTS

try:
    import fcntl
    import pty
    import struct
    import termios
except ImportError:  # Windows
    pty = None  # type: ignore[assignment]

HAVE_PTY = pty is not None


@dataclass
class PtyResult:
    code: int
    stdout: str
    stderr: str


def _terminal(columns: int) -> tuple:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    return master, slave


def run_argv_in_pty(
    argv: Sequence[str],
    env: Optional[Dict[str, str]] = None,
    cwd: Any = None,
    stderr_tty: bool = False,
    columns: int = 120,
    timeout: float = 120,
) -> PtyResult:
    """Run ``argv`` with stdout on a pseudo-terminal (stderr too with ``stderr_tty``, else a pipe)."""
    out_master, out_slave = _terminal(columns)
    err_master, err_slave = _terminal(columns) if stderr_tty else (None, None)
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out_slave,
        stderr=err_slave if stderr_tty else subprocess.PIPE,
    )
    os.close(out_slave)
    if err_slave is not None:
        os.close(err_slave)
    err_fd = err_master if stderr_tty else proc.stderr.fileno()  # type: ignore[union-attr]
    chunks: Dict[int, List[bytes]] = {out_master: [], err_fd: []}
    open_fds = [out_master, err_fd]
    deadline = time.monotonic() + timeout
    try:
        while open_fds:
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"{argv} ran over {timeout}s")
            ready, _, _ = select.select(open_fds, [], [], 0.2)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the terminal's other end closed (the child exited)
                    data = b""
                if data:
                    chunks[fd].append(data)
                else:
                    open_fds.remove(fd)
            if not ready and proc.poll() is not None:
                # a terminal whose writer ended may report nothing more instead of EOF
                for fd in list(open_fds):
                    if fd != err_fd or stderr_tty:
                        open_fds.remove(fd)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for fd in (out_master, err_master):
            if fd is not None:
                os.close(fd)
        if proc.stderr is not None:
            proc.stderr.close()
    stdout = b"".join(chunks[out_master]).decode("utf-8", "replace").replace("\r\n", "\n")
    stderr = b"".join(chunks[err_fd]).decode("utf-8", "replace")
    return PtyResult(code, stdout, stderr)


def run_in_pty(script: str, *args: Any, **kw: Any) -> PtyResult:
    """Run ``scripts/<script>`` with this interpreter under a pseudo-terminal (see run_argv_in_pty)."""
    return run_argv_in_pty([sys.executable, str(SCRIPTS / script), *map(str, args)], **kw)


def screen(raw: str) -> List[str]:
    """The lines a terminal shows for ``raw`` output: each carriage return goes back to the
    start of the line and what follows overwrites it."""
    lines = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        shown: List[str] = []
        for part in line.split("\r"):
            shown[: len(part)] = list(part)
        lines.append("".join(shown).rstrip())
    return [ln for ln in lines if ln]
