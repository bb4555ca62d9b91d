"""scripts/_dwbatches/core/compat.py, the one home of platform differences (Windows, macOS, Linux).

- no file of scripts/ (or the demo) but compat.py uses a POSIX-only API (AST scan);
- the job lock excludes other processes, by flock and by the exclusive lock file used where
  neither flock nor msvcrt exists; a holder that died leaves a lock that is taken over;
- replace() rides out a PermissionError; set_mode() never fails a write;
- printed commands use the platform's interpreter word and quoting;
- the sandbox server refuses a busy port and runs from any working directory.
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _dwbatches.core import commands, compat, files
from _dwbatches.core.errors import EXIT_API, JobError
from _dwbatches.jobs import job as job_mod
from _dwbatches.results import download
from helpers import Child

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
COMPAT = SCRIPTS / "_dwbatches" / "core" / "compat.py"

# -- the AST scan ----------------------------------------------------------------------------

BANNED_MODULES = {
    "fcntl": "use compat.FileLock",
    "msvcrt": "Windows-only: belongs in compat",
    "winreg": "Windows-only: belongs in compat",
    "pwd": "POSIX-only",
    "grp": "POSIX-only",
    "resource": "POSIX-only",
    "termios": "POSIX-only",
    "select": "select() works on sockets only on Windows, not on pipes",
    "selectors": "select() works on sockets only on Windows, not on pipes",
}
BANNED_ATTRS = {
    "os": {
        **dict.fromkeys(
            (
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
                "forkpty",
                "fdatasync",
                "sync",
                "statvfs",
                "pipe2",
                "mkfifo",
            ),
            "POSIX-only",
        ),
        **dict.fromkeys(
            ("O_NOFOLLOW", "O_DIRECTORY", "O_CLOEXEC", "O_NONBLOCK", "O_NOCTTY", "O_SYNC", "O_DSYNC"),
            "an open flag Windows lacks",
        ),
        "chmod": "use compat.set_mode (skipped on Windows, never fails the write)",
        "replace": "use compat.replace (retries while a Windows reader holds the target open)",
        "rename": "use compat.replace (os.rename does not overwrite on Windows)",
        "kill": "os.kill(pid, 0) terminates the process on Windows; use compat.pid_alive",
        "umask": "use compat.new_file_mode (the mode a new file gets; POSIX only)",
    },
    "signal": dict.fromkeys(
        (
            "SIGKILL",
            "SIGHUP",
            "SIGQUIT",
            "SIGUSR1",
            "SIGUSR2",
            "SIGALRM",
            "SIGPIPE",
            "SIGCHLD",
            "SIGSTOP",
            "SIGCONT",
            "alarm",
            "setitimer",
            "pause",
            "pthread_kill",
            "siginterrupt",
            "sigwait",
        ),
        "a signal or function Windows lacks",
    ),
    "shlex": dict.fromkeys(("quote", "join"), "POSIX quoting: use compat.quote_args"),
}
BANNED_KEYWORDS = {"preexec_fn": "not supported on Windows", "start_new_session": "POSIX-only (setsid)"}


def posix_only_uses(source: str, filename: str = "<source>") -> list:
    """(line, what, why) of each POSIX-only (or platform-specific) API the source uses."""
    tree = ast.parse(source, filename)
    aliases = {}  # local name -> module name, for the modules of BANNED_ATTRS
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")[0]
                if top in BANNED_MODULES:
                    found.append((node.lineno, f"import {a.name}", BANNED_MODULES[top]))
                if a.name in BANNED_ATTRS:
                    aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            top = node.module.split(".")[0]
            if top in BANNED_MODULES:
                found.append((node.lineno, f"from {node.module} import", BANNED_MODULES[top]))
            for a in node.names:
                why = BANNED_ATTRS.get(node.module, {}).get(a.name)
                if why:
                    found.append((node.lineno, f"{node.module}.{a.name}", why))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            module = aliases[node.value.id]
            why = BANNED_ATTRS[module].get(node.attr)
            if why:
                found.append((node.lineno, f"{module}.{node.attr}", why))
        elif isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg in BANNED_KEYWORDS:
                    found.append((node.lineno, f"{kw.arg}=", BANNED_KEYWORDS[kw.arg]))
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "open"
                and isinstance(func.value, ast.Name)
                and aliases.get(func.value.id) == "os"
                and len(node.args) >= 2
            ):
                flags = {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
                flags |= {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                if "O_CREAT" in flags and "O_BINARY" not in flags:
                    found.append(
                        (
                            node.lineno,
                            "os.open(O_CREAT) without O_BINARY",
                            "Windows opens it in text mode (CRLF, Ctrl-Z); add compat.O_BINARY",
                        )
                    )
    return sorted(found)


def scanned_files() -> list:
    files = sorted(SCRIPTS.glob("*.py")) + sorted((SCRIPTS / "_dwbatches").rglob("*.py"))
    files += sorted((SCRIPTS / "_dwsandbox").rglob("*.py"))  # the sandbox server's package
    return [f for f in files if f != COMPAT] + [ROOT / "examples" / "demo.py"]


def test_no_posix_only_api_outside_compat():
    files = scanned_files()
    assert SCRIPTS / "sandbox_server.py" in files and SCRIPTS / "_dwbatches" / "results" / "download.py" in files
    assert SCRIPTS / "_dwsandbox" / "server.py" in files
    assert SCRIPTS / "_dwbatches" / "workflow" / "common.py" in files  # subpackages too
    assert len(files) >= 20
    problems = []
    for path in files:
        for line, what, why in posix_only_uses(path.read_text(encoding="utf-8"), str(path)):
            problems.append(f"{path.relative_to(ROOT)}:{line}: {what} ({why})")
    assert not problems, "platform-specific calls outside compat.py:\n" + "\n".join(problems)


def test_the_scan_finds_what_it_bans():
    source = (
        "import os, signal, shlex\n"
        "import os as _os\n"
        "import fcntl\n"
        "from selectors import DefaultSelector\n"
        "from os import fchmod\n"
        "import subprocess\n"
        "os.fchmod(3, 0o600)\n"
        "_os.replace('a', 'b')\n"
        "signal.SIGKILL\n"
        "shlex.quote('x')\n"
        "fd = os.open('p', os.O_RDWR | os.O_CREAT, 0o600)\n"
        "subprocess.Popen(['x'], start_new_session=True)\n"
        "ok = os.open('p', os.O_RDWR | os.O_CREAT | compat.O_BINARY, 0o600)\n"
        "fine = shlex.split('a b'), os.getpid(), signal.SIGTERM, os.O_RDONLY\n"
    )
    whats = [what for _, what, _ in posix_only_uses(source)]
    assert whats == [
        "import fcntl",
        "from selectors import",
        "os.fchmod",
        "os.fchmod",
        "os.replace",
        "signal.SIGKILL",
        "shlex.quote",
        "os.open(O_CREAT) without O_BINARY",
        "start_new_session=",
    ]
    assert posix_only_uses(COMPAT.read_text(encoding="utf-8")), "compat.py is where these calls live"


STDLIB_FALLBACK = {
    "contextlib",
    "json",
    "os",
    "socket",
    "sys",
    "time",
    "typing",
    "__future__",
    "ctypes",
    "subprocess",
    "shlex",
    "fcntl",
    "msvcrt",
}


def test_compat_is_standard_library_only():
    """The sandbox server (standard library only) imports compat."""
    stdlib = getattr(sys, "stdlib_module_names", STDLIB_FALLBACK)
    for path in (COMPAT, SCRIPTS / "_dwbatches" / "__init__.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            for name in names:
                assert name.split(".")[0] in stdlib, f"{path.name} imports {name}"


def test_sandbox_server_runs_from_another_directory(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "sandbox_server.py"), "--version"],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr


# -- locks ---------------------------------------------------------------------------------

METHODS = [m for m, mod in (("flock", compat.fcntl), ("msvcrt", compat.msvcrt)) if mod is not None]
METHODS.append("exclusive-file")

HOLDER = r"""
import sys
sys.path.insert(0, sys.argv[1])
from _dwbatches.core import compat
lock = compat.FileLock(sys.argv[2], method=sys.argv[3], interval=0.05)
if not lock.acquire(float(sys.argv[4])):
    print("busy", flush=True)
    sys.exit(3)
print("locked", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
sys.stdin.readline()
"""


class Holder(Child):
    """Takes the lock at ``path`` by ``method`` (waiting up to ``wait`` s), releases it when told."""

    def __init__(self, path, method, wait=0.0):
        super().__init__([sys.executable, "-c", HOLDER, str(SCRIPTS), str(path), method, str(wait)])


@pytest.fixture
def holders():
    made = []

    def start(*args, **kwargs):
        h = Holder(*args, **kwargs)
        made.append(h)
        return h

    yield start
    for h in made:
        h.close()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(30)
    assert not compat.pid_alive(proc.pid)
    return proc.pid


@pytest.mark.parametrize("method", METHODS)
def test_second_process_is_refused_while_the_first_holds_the_lock(method, tmp_path, holders):
    path = tmp_path / "job.lock"
    first = holders(path, method)
    first.expect("locked")
    mine = compat.FileLock(str(path), method=method, interval=0.05)
    assert not mine.try_acquire()
    t0 = time.monotonic()
    assert not mine.acquire(wait=0.3)
    assert time.monotonic() - t0 >= 0.3
    other = holders(path, method)
    other.expect("busy")
    assert other.proc.wait(20) == 3

    first.tell()
    first.expect("released")
    assert mine.acquire(wait=5)
    assert mine.held
    if method == "exclusive-file":
        assert compat.read_lock_owner(str(path))["pid"] == os.getpid()
    third = holders(path, method)
    third.expect("busy")  # now this process holds it
    mine.release()
    assert not mine.held
    fourth = holders(path, method)
    fourth.expect("locked")


@pytest.mark.parametrize("method", METHODS)
def test_a_waiting_process_gets_the_lock_when_it_is_released(method, tmp_path, holders):
    path = tmp_path / "job.lock"
    first = holders(path, method)
    first.expect("locked")
    waiter = holders(path, method, wait=30)
    waiter.silent_for(0.5)  # still waiting
    first.tell()
    first.expect("released")
    waiter.expect("locked", timeout=10)


@pytest.mark.parametrize("method", METHODS)
def test_the_lock_of_a_killed_holder_is_taken_over(method, tmp_path, holders):
    path = tmp_path / "job.lock"
    first = holders(path, method)
    first.expect("locked")
    pid = first.proc.pid
    first.kill()
    assert path.exists()  # kill -9 leaves the file behind
    if method == "exclusive-file":
        owner = compat.read_lock_owner(str(path))
        assert owner["pid"] == pid and owner["host"] == socket.gethostname()
    mine = compat.FileLock(str(path), method=method, interval=0.05)
    # at once, but Windows may release the byte-range locks of a killed process a moment later
    assert mine.acquire(wait=5) if method == "msvcrt" else mine.try_acquire()
    if method == "exclusive-file":
        assert compat.read_lock_owner(str(path))["pid"] == os.getpid()
        assert not Path(str(path) + ".break").exists()
    mine.release()


def test_exclusive_file_lock_takes_over_only_locks_whose_holder_is_surely_gone(tmp_path):
    path = tmp_path / "x.lock"
    lock = compat.FileLock(str(path), method="exclusive-file")
    gone = dead_pid()

    # alive holder (this test's parent process): kept
    path.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "since": 1}))
    assert not lock.try_acquire()
    # a dead pid on another machine cannot be checked from here: kept
    path.write_text(json.dumps({"pid": gone, "host": "some-other-host.invalid", "since": 1}))
    assert not lock.try_acquire()
    # an unreadable record, just written: kept; the same, old: taken over
    path.write_bytes(b"")
    assert not lock.try_acquire()
    old = time.time() - compat.UNREADABLE_LOCK_GRACE - 5
    os.utime(path, (old, old))
    assert lock.try_acquire()
    lock.release()
    assert not path.exists()  # released: the file is gone
    # the bare-pid record of earlier versions, dead: taken over
    path.write_text(str(gone))
    assert lock.try_acquire()
    # a lock that is no longer ours (overwritten by hand) is not removed on release
    path.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "since": 2}))
    lock.release()
    assert path.exists()
    path.unlink()
    # a leftover .break file (its process died while breaking) delays, then is cleared
    path.write_text(json.dumps({"pid": gone, "host": socket.gethostname(), "since": 1}))
    breaker = Path(str(path) + ".break")
    breaker.write_bytes(b"")
    assert not lock.try_acquire()
    old = time.time() - compat.BREAKER_GRACE - 5
    os.utime(breaker, (old, old))
    assert not lock.try_acquire()  # this attempt clears the leftover
    assert lock.try_acquire()
    lock.release()
    with pytest.raises(ValueError):
        compat.FileLock(str(path), method="nope")


def test_pid_alive():
    assert compat.pid_alive(os.getpid()) and compat.pid_alive(os.getppid())
    assert not compat.pid_alive(dead_pid())
    assert not compat.pid_alive(0) and not compat.pid_alive(-5)


@pytest.mark.parametrize("method", METHODS)
def test_job_and_fetch_state_locks_keep_their_messages(method, tmp_path, monkeypatch):
    monkeypatch.setattr(compat, "LOCK_METHOD", method)
    a, b = job_mod.Job(str(tmp_path / "d.dwjob")), job_mod.Job(str(tmp_path / "d.dwjob"))
    a.lock(wait=0)
    monkeypatch.setenv("DOUBLEWORD_BATCHES_TIME_SCALE", "0.1")  # the wait is scaled like every other
    t0 = time.monotonic()
    with pytest.raises(JobError) as err:
        b.lock(wait=5.0)
    assert 0.5 <= time.monotonic() - t0 < 5.0
    assert err.value.exit_code == EXIT_API
    assert "another command is working on the job at" in err.value.message
    assert err.value.hint.startswith("Wait for the other command to end (or stop it), then run the same command")
    a.unlock()
    a.unlock()  # twice is harmless
    assert (tmp_path / "d.dwjob" / "job.lock").exists() == (method != "exclusive-file")
    with b:
        assert b._lock is not None and b._lock.held
    s1, s2 = download.FileStore(str(tmp_path / "out.jsonl")), download.FileStore(str(tmp_path / "out.jsonl"))
    s1.lock()
    with pytest.raises(JobError) as err:
        s2.lock(wait=0.3)
    assert err.value.exit_code == EXIT_API  # the same code and wording as a busy job
    assert err.value.message == (
        f"another command is working on the results {tmp_path / 'out.jsonl'}; run this one again when it has finished"
    )
    s1.unlock()
    s2.lock()
    s2.unlock()


# -- replace, modes, durability -----------------------------------------------------------------


def test_replace_retries_while_the_target_is_held_open(tmp_path, monkeypatch):
    src, dst = tmp_path / "new", tmp_path / "dst"
    src.write_text("new")
    dst.write_text("old")
    real = os.replace
    calls = []

    def flaky(a, b):
        calls.append((a, b))
        if len(calls) <= 2:
            raise PermissionError(13, "The process cannot access the file", str(b))
        return real(a, b)

    monkeypatch.setattr(os, "replace", flaky)
    compat.replace(str(src), str(dst))
    assert len(calls) == 3 and dst.read_text() == "new" and not src.exists()


def test_replace_gives_up_after_its_budget_and_does_not_retry_other_errors(tmp_path, monkeypatch):
    calls = []

    def denied(a, b):
        calls.append(a)
        raise PermissionError(13, "denied")

    monkeypatch.setattr(os, "replace", denied)
    t0 = time.monotonic()
    with pytest.raises(PermissionError):
        compat.replace("a", "b", retry_seconds=1.0)
    assert 0.5 <= time.monotonic() - t0 < 5 and 3 <= len(calls) < 40
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError):
        compat.replace(str(tmp_path / "missing"), str(tmp_path / "b"))


def test_an_atomic_save_survives_a_transient_permission_error(tmp_path, monkeypatch):
    real = os.replace
    failures = [PermissionError(13, "in use")]

    def once(a, b):
        if failures:
            raise failures.pop()
        return real(a, b)

    monkeypatch.setattr(os, "replace", once)
    target = tmp_path / "job.json"
    files.atomic_write_json(str(target), {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["job.json"]  # no temp file left


@pytest.mark.skipif(compat.IS_WINDOWS, reason="POSIX permission bits")
def test_set_mode_by_descriptor_or_by_path_and_never_raises(tmp_path, monkeypatch):
    f = tmp_path / "f"
    f.write_text("x")
    fd = os.open(str(f), os.O_RDONLY)
    try:
        assert compat.set_mode(fd, 0o640) and stat.S_IMODE(f.stat().st_mode) == 0o640
        monkeypatch.delattr(os, "fchmod")  # as on Windows before Python 3.13
        assert compat.set_mode(fd, 0o600, path=str(f)) and stat.S_IMODE(f.stat().st_mode) == 0o600
        assert not compat.set_mode(fd, 0o644)  # nothing to go by
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    finally:
        os.close(fd)
    assert not compat.set_mode(str(tmp_path / "missing"), 0o600)  # an error, swallowed
    monkeypatch.setattr(compat, "IS_WINDOWS", True)
    assert not compat.set_mode(str(f), 0o644) and stat.S_IMODE(f.stat().st_mode) == 0o600


@pytest.mark.skipif(compat.IS_WINDOWS, reason="POSIX permission bits")
def test_atomic_writes_keep_their_modes_without_fchmod(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "fchmod")
    files.atomic_write_json(str(tmp_path / "job.json"), {"a": 1})
    with files.atomic_output(str(tmp_path / "out.jsonl")) as fh:
        fh.write(b"{}\n")
    assert stat.S_IMODE((tmp_path / "job.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "out.jsonl").stat().st_mode) == 0o644


def test_fsync_dir_never_fails(tmp_path, monkeypatch):
    compat.fsync_dir(str(tmp_path))
    compat.fsync_dir(str(tmp_path / "missing"))
    monkeypatch.setattr(compat, "IS_WINDOWS", True)
    compat.fsync_dir(str(tmp_path))


# -- printed commands ----------------------------------------------------------------------


def test_posix_commands_use_python3_and_shell_quoting(monkeypatch):
    monkeypatch.setattr(compat, "IS_WINDOWS", False)
    assert compat.python_command() == "python3"
    args = ["--job", "my jobs/data.dwjob", "--search", "it's $HOME", "-o", "a\\b.jsonl"]
    cmd = commands.command("poll.py", *args)
    script = commands.script_path("poll.py")
    assert cmd == "python3 " + " ".join(shlex.quote(a) for a in [script, *args])
    assert "'my jobs/data.dwjob'" in cmd
    assert shlex.split(cmd) == ["python3", script, *args]
    assert compat.command_path("a\\b") == "a\\b"  # a backslash is a file name character here


def test_windows_commands_use_python_and_list2cmdline_quoting(monkeypatch):
    monkeypatch.setattr(compat, "IS_WINDOWS", True)
    assert compat.python_command() == "python"
    path = "C:\\Users\\Ann Lee\\My Jobs\\data.dwjob"
    assert compat.command_path(path) == "C:/Users/Ann Lee/My Jobs/data.dwjob"
    cmd = commands.command("fetch_results.py", "--job", compat.command_path(path), "--format", "simple")
    script = commands.script_path("fetch_results.py")
    assert cmd == "python " + subprocess.list2cmdline(
        [script, "--job", "C:/Users/Ann Lee/My Jobs/data.dwjob", "--format", "simple"]
    )
    assert cmd.endswith(' --job "C:/Users/Ann Lee/My Jobs/data.dwjob" --format simple')
    assert "'" not in cmd
    assert compat.quote_args(['say "hi"', "", "a\\b c\\"]) == '"say \\"hi\\"" "" "a\\b c\\\\"'
    # characters cmd or PowerShell act on are quoted too, not only spaces
    assert compat.quote_args(["--job", "R&D/data.dwjob", "a|b", "(x)", "a,b", "@f", "x;y", "it's"]) == (
        '--job "R&D/data.dwjob" "a|b" "(x)" "a,b" "@f" "x;y" "it\'s"'
    )
    for arg in ["plain", "C:/a/b.jsonl", "a\\b\\", 'q"x', "a b\\", "ünï-côdé.csv", "x=1+2", "", "tab\there"]:
        # every argument list2cmdline quotes is quoted the same way; the others are left bare
        ours, theirs = compat.quote_args([arg]), subprocess.list2cmdline([arg])
        assert ours == theirs or (ours == '"' + theirs + '"' and " " not in arg)
    assert commands.display_path("sub\\data.dwjob") == "sub/data.dwjob"


# -- sockets -------------------------------------------------------------------------------


def test_the_sandbox_reuses_addresses_only_on_posix(monkeypatch):
    import sandbox_server

    assert compat.reuse_address() is (not compat.IS_WINDOWS)
    assert sandbox_server.SandboxHTTPServer.allow_reuse_address == compat.reuse_address()
    monkeypatch.setattr(compat, "IS_WINDOWS", True)
    assert compat.reuse_address() is False


def test_a_second_sandbox_cannot_take_a_busy_port(tmp_path):
    from _dwbatches.core.sandbox import SandboxProcess

    with SandboxProcess(data_dir=str(tmp_path / "one")) as first:
        port = int(first.base_url.rsplit(":", 1)[1].split("/")[0])
        proc = subprocess.run(
            [
                sys.executable,
                str(SCRIPTS / "sandbox_server.py"),
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path / "two"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 2 and f"cannot bind 127.0.0.1:{port}" in proc.stderr, proc.stderr
        assert proc.stdout == ""


def test_output_is_utf8_whatever_the_locale_encoding(tmp_path):
    """Windows gives a pipe the ANSI code page (cp1252); JSON with a non-ASCII path, prompt or
    answer must still be printed, as UTF-8."""
    (tmp_path / "prompts.txt").write_text("Qu’est-ce que «ça» ?\nnaïve résumé ☃\n", encoding="utf-8")
    env = dict(os.environ, PYTHONIOENCODING="cp1252")
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "create_batch_file.py"), "réponses ☃.jsonl", "--prompts", "prompts.txt"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout.decode("utf-8"))
    assert doc["path"].endswith("réponses ☃.jsonl") and doc["requests"] == 2
    assert "☃" in proc.stderr.decode("utf-8")  # narration names the file too


def test_a_released_lock_names_no_holder(tmp_path):
    """After a command, its job.lock does not name the (then finished) process as holder."""
    path = tmp_path / "job.lock"
    lock = compat.FileLock(str(path))
    assert lock.try_acquire()
    assert compat.read_lock_owner(str(path))["pid"] == os.getpid()
    lock.release()
    assert compat.read_lock_owner(str(path)) is None
