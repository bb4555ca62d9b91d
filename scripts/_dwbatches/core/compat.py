"""Every platform difference (Windows, macOS, Linux) lives here, and only here.

Standard library only: the sandbox server imports this module too. The rest of ``scripts/``
calls these helpers instead of POSIX-only APIs; ``tests/test_compat.py`` scans the code for
such calls outside this file, and ``tests/test_windows_shim.py`` runs the scripts with the
POSIX-only functions and modules removed.

Capabilities are detected by feature (``hasattr(os, "fchmod")``, ``import fcntl``
succeeding), so a Python without them takes the fallback whatever it calls itself.
Only what is a convention rather than a capability (the interpreter word and the quoting
of printed commands, port reuse) goes by ``IS_WINDOWS``.

- ``set_mode``: chmod by descriptor or path; skipped on Windows (permission bits mean
  nothing there) and never fails the write it belongs to.
- ``replace``: ``os.replace``, retried for about a second on PermissionError (on Windows a
  rename over a file that another process has open, say a reader or a virus scanner,
  fails until it is closed).
- ``fsync_dir``: make a rename durable; a no-op where directories cannot be opened.
- ``FileLock``: an exclusive lock between processes on a lock file, by ``fcntl.flock`` on
  POSIX, ``msvcrt.locking`` on Windows, and elsewhere by creating the file exclusively
  (holding pid, host and time; a lock whose holder has died is taken over).
- ``python_command``, ``quote_args``, ``command_path``: how a printed command is written:
  ``python3`` and POSIX shell quoting on macOS and Linux; ``python`` and ``list2cmdline``
  quoting on Windows (``python`` is what a venv, the Microsoft Store Python and conda
  provide; the ``py`` launcher is not always installed), with ``/`` in paths, which every
  Windows shell and Python accept, where a ``\\`` would be lost in Git Bash. The word only
  when it names the running interpreter on PATH; else that interpreter's path.
- ``venv_python``: where a virtual environment keeps its interpreter (``Scripts`` on Windows).
- ``reuse_address``, ``exclusive_address``: a listening socket that no second server can
  share (``SO_REUSEADDR`` on Windows would let one take over a busy port).
- ``O_BINARY``: add to ``os.open`` flags; without it Windows opens the descriptor in text
  mode (CRLF translation, Ctrl-Z as end of file).
- ``O_NOFOLLOW``: add to ``os.open`` flags of downloaded results: a planted symlink is refused
  (POSIX; 0 on Windows).
- ``new_file_mode``: the mode a new file gets from the user's umask (0666 less the umask), for
  the files written for the user (results, reports); POSIX only, as ``set_mode`` is.
- ``untrusted_by``: why a file that configures the scripts (``.env``) cannot be trusted: owned
  by another user, or writable by others. POSIX only: on Windows ownership and permission
  bits are not checked (ACLs decide who may write a file, and ``st_uid`` / ``st_mode`` do not
  show them), so there a .env is trusted as on earlier versions.
- ``change_time_ns``: when a file's contents or metadata last changed, set by the kernel and
  not settable by a program (``st_ctime_ns`` on POSIX); None on Windows, where ``st_ctime``
  is the creation time, which an edit in place keeps.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import socket
import sys
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

try:
    import msvcrt
except ImportError:  # POSIX
    msvcrt = None  # type: ignore[assignment]

IS_WINDOWS = os.name == "nt"

O_BINARY: int = getattr(os, "O_BINARY", 0)
# add to ``os.open`` flags of a file the client keeps appending to (downloaded results): a
# symlink planted in its place is refused (ELOOP) instead of followed. Windows has no such
# flag (and creating symlinks there needs a privilege): 0.
O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)

# How a lock is taken here: "flock" (POSIX), "msvcrt" (Windows) or "exclusive-file" (neither).
LOCK_METHODS = ("flock", "msvcrt", "exclusive-file")
LOCK_METHOD = "flock" if fcntl is not None else "msvcrt" if msvcrt is not None else "exclusive-file"

REPLACE_RETRY_SECONDS = 1.0
# An exclusive lock file without a readable owner record is only taken over when older than this
# (its creator writes the record right after creating it).
UNREADABLE_LOCK_GRACE = 10.0
# A leftover ".break" file (a process died while breaking a stale lock) is removed after this.
BREAKER_GRACE = 5.0


# -- file modes, renames, durability -------------------------------------------------------
def set_mode(target: Union[int, str], mode: int, path: Optional[str] = None) -> bool:
    """chmod ``target`` (a descriptor or a path) to ``mode``; for a descriptor where
    ``os.fchmod`` is missing, ``path`` (the file's name) is used instead.

    Skipped on Windows, where only a read-only flag exists. Never raises: a file system that
    refuses permissions must not fail the write. Returns True when the mode was applied.
    """
    if IS_WINDOWS:
        return False
    try:
        if isinstance(target, int):
            fchmod = getattr(os, "fchmod", None)
            if fchmod is not None:
                fchmod(target, mode)
                return True
            if path is None:
                return False
            target = path
        os.chmod(target, mode)
        return True
    except (OSError, NotImplementedError):
        return False


def _umask() -> int:
    """The process's umask. Linux shows it in /proc/self/status (read without changing it);
    elsewhere it is read by setting it and setting it back, for that instant to 077, the most
    private, so that a file another thread creates meanwhile is never more open than meant."""
    try:
        with open("/proc/self/status", "rb") as fh:  # bytes: no codec to import
            for line in fh:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode a new file gets from ``open()`` under the user's umask: 0666 less the umask
    (0644 under the usual 022, 0600 under 077). A file written for the user (results, reports,
    a built batch file) gets it, so ``umask 077`` keeps them private. Windows: 0666 (unused:
    ``set_mode`` does nothing there)."""
    if IS_WINDOWS:
        return 0o666
    return 0o666 & ~_umask()


def untrusted_by(st: os.stat_result) -> Optional[str]:
    """Why a file with this ``stat`` cannot be trusted with the scripts' configuration (a .env
    that could name the server the key is sent to), or None when it can: it must be owned by
    this user (or root, who could change anything anyway) and writable by no other user (not
    by everyone; by its group only when the group is this user's own, as a user-private group
    is). Windows: always None (ownership and ACLs are not checked there)."""
    if IS_WINDOWS or not hasattr(os, "geteuid"):
        return None
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        return f"it belongs to another user (uid {st.st_uid})"
    mode = st.st_mode & 0o7777
    if mode & 0o002:
        return f"every user may write to it (mode {mode:04o})"
    if mode & 0o020 and st.st_gid != os.getegid():
        return f"the other users of its group (gid {st.st_gid}) may write to it (mode {mode:04o})"
    return None


def replace(src: str, dst: str, retry_seconds: Optional[float] = None) -> None:
    """``os.replace(src, dst)``, retried with short sleeps for about ``retry_seconds`` (default
    REPLACE_RETRY_SECONDS) while it raises PermissionError: on Windows a rename over a file
    that another process holds open fails until the other process closes it."""
    budget = REPLACE_RETRY_SECONDS if retry_seconds is None else retry_seconds
    deadline = time.monotonic() + budget
    delay = 0.01
    while True:
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def fsync_dir(path: str) -> None:
    """Make renames inside ``path`` durable. Windows cannot open a directory (and NTFS
    journals the rename), so there it does nothing; errors are ignored everywhere."""
    if IS_WINDOWS:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- processes -----------------------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (True when that cannot be told).

    Never ``os.kill(pid, 0)`` on Windows: there it terminates the process.
    """
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    if IS_WINDOWS:  # pragma: no cover - Windows
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def terminate(pid: int) -> None:
    """Ask the process ``pid`` to end: SIGTERM (on Windows, where os.kill ends it at once,
    TerminateProcess). Nothing happens when it is gone already."""
    import signal

    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)


def _windows_pid_alive(pid: int) -> bool:  # pragma: no cover - Windows
    try:
        import ctypes
        from ctypes import wintypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]  # Windows-only stubs
        kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
        kernel32.OpenProcess.restype = wintypes.HANDLE
        kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
        kernel32.GetExitCodeProcess.restype = wintypes.BOOL
        kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            # ERROR_INVALID_PARAMETER: no such process
            return ctypes.get_last_error() != 87  # type: ignore[attr-defined]  # Windows-only stubs
        try:
            code = wintypes.DWORD()
            if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True
            return code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    except Exception:  # cannot tell: never take a lock from a process that may be alive
        return True


# -- locks ---------------------------------------------------------------------------------
def _owner_record() -> bytes:
    doc = {"pid": os.getpid(), "host": socket.gethostname(), "since": round(time.time(), 3)}
    return (json.dumps(doc) + "\n").encode("utf-8")


def read_lock_owner(path: str) -> Optional[Dict[str, Any]]:
    """The owner record of a lock file ({"pid", "host", "since"}), or None when there is none
    that can be read. A bare pid (the format of earlier versions) is accepted."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(4096)
    except OSError:
        return None
    text = raw.decode("utf-8", "replace").strip()
    if text.isdigit():
        return {"pid": int(text), "host": None, "since": None}
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("pid"), int):
        return None
    return doc


class FileLock:
    """An exclusive lock between processes, held through the file at ``path``.

    ``try_acquire()`` never waits; ``acquire(wait)`` tries until ``wait`` seconds have passed
    (at least once); ``release()`` unlocks. Also a context manager (raises ``TimeoutError``
    if the lock is busy). Not reentrant: a second FileLock on the same path is refused, in
    the same process too.

    ``method`` defaults to ``LOCK_METHOD``: ``flock`` and ``msvcrt`` keep the file and lock
    it (the operating system releases the lock when its holder dies); ``exclusive-file``
    creates the file exclusively and removes it on release; a file left by a holder that
    died (its pid is gone on this host) is taken over.
    """

    def __init__(self, path: str, method: Optional[str] = None, interval: float = 0.2):
        self.path = os.path.abspath(path)
        self.method = method or LOCK_METHOD
        if self.method not in LOCK_METHODS:
            raise ValueError(f"unknown lock method {self.method!r}")
        self.interval = interval
        self._fd: Optional[int] = None
        self._record: Optional[bytes] = None

    @property
    def held(self) -> bool:
        return self._fd is not None or self._record is not None

    def acquire(self, wait: float = 0.0) -> bool:
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            if self.try_acquire():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self.interval, left))

    def try_acquire(self) -> bool:
        if self.held:
            raise RuntimeError(f"the lock {self.path} is already held by this object")
        if self.method == "exclusive-file":
            return self._try_exclusive_file()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | O_BINARY, 0o600)
        try:
            if self.method == "flock":
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:  # pragma: no cover - Windows
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]  # Windows-only stubs
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        with contextlib.suppress(OSError):  # who holds it: for people, not needed by the lock
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, _owner_record())
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                if self.method == "flock":
                    os.ftruncate(fd, 0)  # a free lock names no holder (no dead pid left behind)
                    fcntl.flock(fd, fcntl.LOCK_UN)
                else:  # pragma: no cover - Windows
                    os.lseek(fd, 0, os.SEEK_SET)
                    msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]  # Windows-only stubs
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._record is not None:
            record, self._record = self._record, None
            with contextlib.suppress(OSError):
                with open(self.path, "rb") as fh:
                    mine = fh.read(len(record) + 1) == record
                if mine:  # never remove a lock that is no longer ours
                    os.unlink(self.path)

    def __enter__(self) -> FileLock:
        if not self.try_acquire():
            raise TimeoutError(f"the lock {self.path} is held by another process")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # exclusive-file ------------------------------------------------------------------------
    def _try_exclusive_file(self) -> bool:
        for _ in range(2):  # once more after taking over a stale lock
            record = _owner_record()
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_BINARY, 0o600)
            except FileExistsError:
                if self._break_stale():
                    continue
                return False
            except PermissionError:  # pragma: no cover - Windows: the file is being deleted
                return False
            try:
                os.write(fd, record)
                os.fsync(fd)
            except OSError:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
                raise
            os.close(fd)
            self._record = record
            return True
        return False

    def _is_stale(self) -> bool:
        try:
            age = time.time() - os.stat(self.path).st_mtime
        except FileNotFoundError:
            return True
        owner = read_lock_owner(self.path)
        if owner is None:
            return age > UNREADABLE_LOCK_GRACE
        if owner.get("host") not in (None, socket.gethostname()):
            return False  # held from another machine: its process cannot be checked from here
        return not pid_alive(owner["pid"])

    def _break_stale(self) -> bool:
        """Remove the lock file if its holder is gone. Only one process breaks at a time (it
        holds ``PATH.break``), so a lock just taken by someone else is never removed."""
        breaker = self.path + ".break"
        try:
            os.close(os.open(breaker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_BINARY, 0o600))
        except FileExistsError:
            with contextlib.suppress(OSError):
                if time.time() - os.stat(breaker).st_mtime > BREAKER_GRACE:
                    os.unlink(breaker)  # left by a process that died while breaking
            return False
        except OSError:
            return False
        try:
            if not self._is_stale():
                return False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return True
        finally:
            with contextlib.suppress(OSError):
                os.unlink(breaker)


# -- printed commands ----------------------------------------------------------------------
def python_command() -> str:
    """The interpreter of a printed command: the platform's word (``python`` on Windows,
    ``python3`` elsewhere) when that word on PATH is the interpreter running now, else the
    quoted path of this interpreter, so that a printed command runs with the packages this
    one has (a venv's ``python`` run by its path, with the venv not on PATH, say).

    "Is the running interpreter": in the same directory as ``sys.executable`` and the same
    file. Both are needed: a venv's ``python3`` is a symlink to the base interpreter, so the
    base one on PATH is the same file, but without the venv's packages."""
    word = "python" if IS_WINDOWS else "python3"
    exe = sys.executable
    if not exe:
        return word
    import shutil

    found = shutil.which(word)
    if found:
        same_dir = os.path.normcase(os.path.dirname(os.path.abspath(found))) == os.path.normcase(
            os.path.dirname(os.path.abspath(exe))
        )
        try:
            if same_dir and os.path.samefile(found, exe):
                return word
        except OSError:
            pass
    return quote_args([command_path(exe)])


def venv_python(venv: str) -> str:
    """The interpreter of the virtual environment in ``venv``: ``Scripts\\python.exe`` on
    Windows, ``bin/python`` elsewhere."""
    return os.path.join(venv, "Scripts", "python.exe") if IS_WINDOWS else os.path.join(venv, "bin", "python")


_WINDOWS_PLAIN = re.compile(r"[\w\-./:\\=+]+")


def _windows_quote(arg: str) -> str:
    """One argument as ``subprocess.list2cmdline`` quotes it (the C runtime's rules), but also
    quoted when it holds a character that cmd or PowerShell would act on (``& | < > ^ ( ) ;``,
    quotes, ...), not only a space: ``R&D/data.dwjob`` would otherwise end the command at
    ``&``."""
    if _WINDOWS_PLAIN.fullmatch(arg):
        return arg
    out, backslashes = ['"'], 0
    for c in arg:
        if c == "\\":
            backslashes += 1
            continue
        out.append("\\" * (backslashes * 2 + 1) + c if c == '"' else "\\" * backslashes + c)
        backslashes = 0
    out.append("\\" * (backslashes * 2) + '"')
    return "".join(out)


def quote_args(args: Sequence[str]) -> str:
    """Join arguments into one command line for this platform's shells: POSIX shell quoting
    (``shlex.quote``) on macOS and Linux; on Windows the C runtime's quoting of
    ``subprocess.list2cmdline``, applied to every argument with a character other than
    letters, digits and ``-_./:\\=+``."""
    if IS_WINDOWS:
        return " ".join(_windows_quote(str(a)) for a in args)
    import shlex

    return " ".join(shlex.quote(str(a)) for a in args)


def command_path(path: str) -> str:
    """A path as written in a printed command: with ``/`` on Windows (cmd, PowerShell and
    Git Bash all pass it through and Python accepts it; Git Bash drops an unquoted ``\\``)."""
    return path.replace("\\", "/") if IS_WINDOWS else path


# -- standard streams ----------------------------------------------------------------------
def utf8_stdio(streams: Optional[Sequence[Any]] = None) -> None:
    """Write stdout and stderr as UTF-8 whatever the locale says. On Windows a pipe gets the
    ANSI code page (cp1252, ...), in which a non-ASCII path, prompt or model answer cannot be
    written; readers of the JSON on stdout expect UTF-8 anyway. stderr replaces what it
    cannot encode rather than failing."""
    for stream in streams if streams is not None else (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if encoding == "utf8" or not hasattr(stream, "reconfigure"):
            continue
        with contextlib.suppress(ValueError, OSError):
            stream.reconfigure(encoding="utf-8", errors="backslashreplace" if stream is sys.stderr else "strict")


# -- files ---------------------------------------------------------------------------------
def scratch_file(prefix: str, buffering: int = -1) -> Any:
    """A temporary binary file (read and write) for this process's own use."""
    import tempfile

    fh = tempfile.NamedTemporaryFile(prefix=prefix, buffering=buffering, delete=False)
    try:
        os.unlink(fh.name)  # open, it lives on; closed, or the process gone, its space is freed
    except OSError:  # pragma: no cover - Windows: an open file cannot be removed
        fh.close()
        os.unlink(fh.name)
        return tempfile.TemporaryFile(prefix=prefix, buffering=buffering)
    return fh


def change_time_ns(st: os.stat_result) -> Optional[int]:
    """The kernel's change time of a stat result (any write, chmod, rename or ``utime`` sets it
    to now; no call sets it back), or None where the platform has none (Windows)."""
    return None if IS_WINDOWS else st.st_ctime_ns


# -- files ---------------------------------------------------------------------------------
def positional_io(fh: Any) -> Tuple[Callable[[int, int], bytes], Callable[[bytes, int], int]]:
    """(read(size, offset), write(data, offset)) on an open unbuffered binary file ``fh``."""
    pread, pwrite = getattr(os, "pread", None), getattr(os, "pwrite", None)
    if pread is not None and pwrite is not None:
        fd = fh.fileno()
        return functools.partial(pread, fd), functools.partial(pwrite, fd)

    def read(size: int, offset: int) -> bytes:  # pragma: no cover - Windows
        fh.seek(offset)
        return fh.read(size)

    def write(data: bytes, offset: int) -> int:  # pragma: no cover - Windows
        fh.seek(offset)
        return fh.write(data)

    return read, write


# -- sockets -------------------------------------------------------------------------------
def reuse_address() -> bool:
    """Whether a listening socket should set SO_REUSEADDR: on POSIX it only allows a restart
    while old connections linger in TIME_WAIT; on Windows it lets a second process bind a
    port that is in use, so it stays off there."""
    return not IS_WINDOWS


def exclusive_address(sock: socket.socket) -> None:
    """Where the platform has it (Windows), forbid other sockets to bind this one's port."""
    opt = getattr(socket, "SO_EXCLUSIVEADDRUSE", None)
    if opt is not None:  # pragma: no cover - Windows
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, 1)
