"""Windows simulation: with this directory first on PYTHONPATH, Python starts without the
POSIX-only functions and modules that Windows lacks, before any script imports anything.

- ``os``: the functions Windows does not have (``fchmod`` before 3.13, ``fchown``, ``getuid``,
  ``setsid``, ``killpg``, ``fork``...) and the ``O_*`` open flags it does not know
  (``O_NOFOLLOW``, ``O_CLOEXEC``...) are deleted.
- ``fcntl``, ``pwd``, ``grp``, ``resource``, ``termios``: importing them raises ImportError.
- ``signal``: the signals and functions Windows does not have (``SIGHUP``, ``SIGALRM``,
  ``alarm``...) are deleted. ``SIGKILL`` stays: the standard library's own
  ``subprocess.Popen.kill`` needs it on POSIX (on Windows it calls TerminateProcess).

``os.name`` and ``sys.platform`` are left alone (the standard library chooses its
implementation by them), so code that decides by feature (``hasattr(os, "fchmod")``, a
failing ``import fcntl``) takes its Windows-safe path here, while code that decides by
platform name does not: the scripts must decide by feature.

Used by tests/test_windows_shim.py. ``DWB_WINSHIM=1`` is set so that children can tell.
"""

from __future__ import annotations

import importlib.abc
import os
import signal
import sys

BLOCKED_MODULES = frozenset({"fcntl", "pwd", "grp", "resource", "termios"})

OS_FUNCTIONS = (
    "fchmod",
    "fchown",
    "chown",
    "lchown",
    "lchmod",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "setuid",
    "setgid",
    "setsid",
    "setpgid",
    "getpgid",
    "getpgrp",
    "killpg",
    "fork",
    "pread",
    "pwrite",
    "forkpty",
    "fdatasync",
    "sync",
    "statvfs",
    "fstatvfs",
    "getloadavg",
    "mkfifo",
    "mknod",
    "nice",
    "sched_getaffinity",
    "pipe2",
)
OS_FLAGS = (
    "O_NOFOLLOW",
    "O_DIRECTORY",
    "O_CLOEXEC",
    "O_NONBLOCK",
    "O_NDELAY",
    "O_NOCTTY",
    "O_SYNC",
    "O_DSYNC",
    "O_RSYNC",
    "O_ASYNC",
    "O_DIRECT",
    "O_NOATIME",
    "O_PATH",
    "O_TMPFILE",
    "O_LARGEFILE",
)
SIGNAL_NAMES = (
    "SIGHUP",
    "SIGQUIT",
    "SIGUSR1",
    "SIGUSR2",
    "SIGALRM",
    "SIGPIPE",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGWINCH",
    "alarm",
    "setitimer",
    "getitimer",
    "pause",
    "pthread_kill",
    "pthread_sigmask",
    "siginterrupt",
    "sigwait",
    "sigpending",
)


class _BlockPosixModules(importlib.abc.MetaPathFinder):
    """Refuses the POSIX-only modules, as a Windows Python would (it has no such module)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".", 1)[0] in BLOCKED_MODULES:
            raise ImportError(f"No module named {fullname!r} (Windows simulation)", name=fullname)
        return None


def _install() -> None:
    for name in OS_FUNCTIONS + OS_FLAGS:
        if hasattr(os, name):
            delattr(os, name)
    for name in SIGNAL_NAMES:
        if hasattr(signal, name):
            delattr(signal, name)
    for name in list(sys.modules):
        if name.split(".", 1)[0] in BLOCKED_MODULES:
            del sys.modules[name]
    sys.meta_path.insert(0, _BlockPosixModules())
    os.environ["DWB_WINSHIM"] = "1"


_install()
try:  # the tests' hooks (tests/hooks, later on PYTHONPATH), whose sitecustomize this one hides
    import dwb_testhooks
except ImportError:
    pass
else:
    dwb_testhooks.install()
