"""File-system faults are outcomes, not bugs; and no output is ever written over an input.

A full disk (while downloading, while merging, while building), a read-only output or job
directory, a directory where a file belongs, an unreadable .env: each ends with an ``error:``
that names the path, the argument it came from and the cause in words, a ``hint:`` that fits,
and exit 1 or 2, never "unexpected". A rerun after freeing space loses and repeats nothing, a
failing cleanup never hides the error that stopped a write, and poll.py reports on a job it
cannot write to. The scripts run for real against the sandbox.

How the faults are made:
- a full disk: a small tmpfs mounted by the test (root with mount(8) only; skipped otherwise),
  and everywhere an in-process fake (``FakeDisk``: writes to files under a directory fail with
  ENOSPC once a byte budget is used up, after writing what fits, as a full disk does);
- a read-only directory: a read-only bind mount (root; EROFS), or permission bits (EACCES):
  as root, whom permission bits do not stop, the script runs in a child process that drops to
  the unprivileged user 65534 after its imports; as any other user, in-process.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, List, Optional

import helpers
import pytest
from _dwbatches.core import errors, files, output
from _dwbatches.results import download
from helpers import (
    ROOT,
    SCRIPTS,
    assert_each_once,
    batch_ids_of,
    is_error,
    job_state,
    make_job,
    raw_lines,
    run_script,
    wait_job,
    write_input,
)

pytestmark = pytest.mark.skipif(os.name == "nt", reason="read-only directories and mounts are POSIX")

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NOBODY = 65534
ENOSPC_WORDS = "no space left on device"


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def ws(monkeypatch):
    """The working directory: outside pytest's private temp tree, so that the unprivileged user
    can reach it; removed afterwards (mounts inside it are undone first, by ``mounts``)."""
    real = {name: getattr(os, name) for name in ("open", "fdopen", "unlink", "rmdir", "replace")}
    d = Path(tempfile.mkdtemp(prefix="dwb-fs-")).resolve()
    d.chmod(0o755)
    monkeypatch.chdir(d)
    yield d
    with pytest.MonkeyPatch.context() as mp:  # a test's fakes are still in place at this point
        for name, func in real.items():
            mp.setattr(os, name, func)
        for p in [d, *d.rglob("*")]:  # modes a test took away
            if p.is_dir() and not p.is_symlink():
                try:
                    p.chmod(0o755)
                except OSError:
                    pass
        shutil.rmtree(d, ignore_errors=True)


class Mounts:
    """tmpfs and read-only bind mounts, undone at the end of the test."""

    def __init__(self) -> None:
        self.points: List[Path] = []

    def _mount(self, *args: str) -> None:
        if not IS_ROOT or not shutil.which("mount"):
            pytest.skip("mounting needs root and mount(8)")
        proc = subprocess.run(["mount", *args], capture_output=True, text=True)
        if proc.returncode:
            pytest.skip(f"`mount {' '.join(args)}` is not allowed here: {proc.stderr.strip()}")

    def tmpfs(self, path: Path, size: str) -> None:
        path.mkdir(exist_ok=True)
        self._mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
        self.points.append(path)

    def resize(self, path: Path, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)

    def read_only(self, path: Path) -> None:
        self._mount("--bind", str(path), str(path))
        self.points.append(path)
        self._mount("-o", "remount,bind,ro", str(path))

    def close(self) -> None:
        for p in reversed(self.points):
            subprocess.run(["umount", "-l", str(p)], capture_output=True)


@pytest.fixture
def mounts(ws):
    m = Mounts()
    yield m
    m.close()


# The script's imports happen as root (the interpreter may live where user 65534 cannot read,
# e.g. under /root); then it drops to that user and runs.
_DROP_PRIVILEGES = r"""
import importlib, os, sys
scripts, name, uid = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, scripts)
module = importlib.import_module(name)
for extra in ("_dwbatches.batches", "_dwbatches.build.builder", "_dwbatches.core.config", "_dwbatches.core.http",
              "_dwbatches.results", "_dwbatches.submit.submitter", "_dwbatches.validation.validate", "encodings.idna",
              "netrc", "shlex", "subprocess", "importlib.metadata"):
    try:
        importlib.import_module(extra)
    except ImportError:
        pass
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
raise SystemExit(module.main(sys.argv[4:]))
"""

METHODS = ["mount", "permissions"]
CAUSE = {"mount": "read-only file system", "permissions": "permission denied"}


def make_read_only(method: str, paths: List[Path], ws: Path, mounts: Mounts, job: bool = False) -> None:
    """Make the directories ``paths`` read-only to the scripts run with ``run_as(method, ...)``."""
    if method == "mount":
        for path in paths:
            mounts.read_only(path)
        return
    if IS_ROOT:
        # the child runs as 65534 and owns everything except these directories (root's, 0755):
        # it may read and write the files inside, but neither add files to them nor change their mode
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(ws)], check=True)
        for path in paths:
            os.chown(path, 0, 0)
            path.chmod(0o755)
        return
    if job:
        pytest.skip(
            "the scripts make a job directory their user owns private (0700) again, so permission "
            "bits cannot make it read-only; needs root (another owner) or a read-only mount"
        )
    for path in paths:
        path.chmod(0o555)


def run_as(method: str, script: str, *args: Any, env: dict, cwd: Optional[Path] = None):
    """(exit code, parsed stdout or None, stderr) of a script, run so that ``make_read_only``
    applies to it."""
    if method == "permissions" and IS_ROOT:
        env = dict(env, PYTHONDONTWRITEBYTECODE="1", HOME=str(cwd or Path.cwd()))
        # (under `make coverage` the unprivileged child could not write its data file)
        env = {k: v for k, v in env.items() if not k.startswith("COVERAGE_")}
        proc = subprocess.run(
            [sys.executable, "-c", _DROP_PRIVILEGES, str(SCRIPTS), Path(script).stem, str(NOBODY), *map(str, args)],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )
        doc = json.loads(proc.stdout) if proc.stdout.strip() else None
        return proc.returncode, doc, proc.stderr
    return run_script(script, *args, env=env, cwd=cwd)


def run_here(script: str, *args: Any, env: Optional[dict] = None, cwd: Optional[Path] = None):
    """Like run_script, but always in this process (whatever DWB_TESTS_SUBPROCESS says): the
    fakes below patch this process."""
    proc = helpers._run_in_process(script, [str(a) for a in args], env, None, cwd)
    doc = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, doc, proc.stderr


class _FullFile:
    """A file object on a FakeDisk."""

    def __init__(self, fh: Any, disk: FakeDisk) -> None:
        self._fh = fh
        self._disk = disk

    def write(self, data: Any) -> int:
        if len(data) > self._disk.free:
            fit = max(0, self._disk.free)
            if fit:
                self._fh.write(data[:fit])
            self._disk.free = 0
            self._disk.failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.free -= len(data)
        return self._fh.write(data)

    def close(self) -> None:
        self._fh.close()
        if self._disk.fail_close:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


class FakeDisk:
    """Files opened (os.open + os.fdopen, as every writer of the scripts does) under ``root``
    share ``free`` bytes; a write beyond them fails with ENOSPC. ``fail_close``: closing such a
    file fails too (its buffer cannot be flushed). In-process only."""

    def __init__(self, monkeypatch: Any, root: Any, free: int, fail_close: bool = False) -> None:
        self.root = os.path.abspath(str(root))
        self.free = free
        self.fail_close = fail_close
        self.failures = 0
        self._paths: dict = {}
        real_open, real_fdopen = os.open, os.fdopen

        def fake_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: Any = None) -> int:
            fd = real_open(path, flags, mode, dir_fd=dir_fd)
            self._paths[fd] = os.path.abspath(os.fsdecode(path))
            return fd

        def fake_fdopen(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            fh = real_fdopen(fd, mode, *args, **kwargs)
            path = self._paths.pop(fd, None)
            if path and path.startswith(self.root + os.sep) and any(c in mode for c in "wa+"):
                return _FullFile(fh, self)
            return fh

        monkeypatch.setattr(os, "open", fake_open)
        monkeypatch.setattr(os, "fdopen", fake_fdopen)

    def free_space(self) -> None:
        self.free = 1 << 40
        self.fail_close = False


def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.rglob("*") if p.name.endswith(".tmp")]


def finished_job(sandbox: Any, n: int, *flags: Any) -> tuple:
    ids = write_input("data.jsonl", n)
    job = make_job(sandbox, "data.jsonl", 1, *flags)
    wait_job(sandbox, job)
    return ids, job, batch_ids_of(job)[0]


# -- the classification, in one place ----------------------------------------------------------

CASES = [  # errno, words, exit code when the path came from an argument
    ("ENOSPC", "no space left on device", 1),
    ("EDQUOT", "disk quota exceeded", 1),
    ("EACCES", "permission denied", 2),
    ("EPERM", "permission denied", 2),
    ("EROFS", "read-only file system", 2),
    ("EISDIR", "is a directory", 2),
    ("ENOTDIR", "not a directory", 2),
    ("ENAMETOOLONG", "file name too long", 2),
    ("EMFILE", "too many open files", 1),
    ("EFBIG", "file too large", 2),
    ("EIO", "input/output error", 1),
]


@pytest.mark.parametrize("name, words, code", CASES, ids=[c[0] for c in CASES])
def test_each_cause_is_put_in_words_with_a_hint_and_an_exit_code(name, words, code):
    if not hasattr(errno, name):
        pytest.skip(f"no {name} on this platform")
    exc = OSError(getattr(errno, name), os.strerror(getattr(errno, name)), "/data/out.jsonl")
    err = errors.file_error(exc)
    assert isinstance(err, errors.FileSystemError) and err.os_error is exc
    assert words in err.message and "/data/out.jsonl" in err.message
    assert err.hint and err.exit_code == 1  # no argument named the path
    err = errors.file_error(exc, role="-o/--output")
    assert err.exit_code == code and "(given with -o/--output)" in err.message
    assert err.message.startswith("cannot ")


def test_the_hints_fit_the_cause():
    def hint(name: str, role: Optional[str] = None) -> str:
        return errors.file_error(OSError(getattr(errno, name), "x", "/data/out.jsonl"), role=role).hint or ""

    assert "Free disk space on the disk that holds /data" in hint("ENOSPC")
    assert "run the same command again" in hint("ENOSPC")
    assert "another disk with -o/--output" in hint("ENOSPC", "-o/--output")
    assert "Choose another path with -o/--output" in hint("EACCES", "-o/--output")
    assert "read-only disk" in hint("EROFS", "-o/--output")
    assert "not of a directory" in hint("EISDIR", "-o/--output")
    assert "ulimit -n" in hint("EMFILE")
    assert "copy of this job directory" in hint("EACCES", "--job")
    assert "poll.py" in hint("EROFS", "--job")


def test_a_temp_file_is_reported_as_the_file_it_stands_for():
    assert errors.temp_target("/d/.out.jsonl.k3j9x0a_.tmp") == "/d/out.jsonl"
    assert errors.temp_target("/d/out.jsonl") is None
    err = errors.file_error(OSError(errno.EROFS, "Read-only file system", "/d/.job.json.abcdefgh.tmp"))
    assert err.message == "cannot write /d/job.json: read-only file system"
    # a directory on the way to the file is named after it
    err = errors.file_error(OSError(errno.EACCES, "Permission denied", "/d/sub"), "/d/sub/out.jsonl")
    assert err.message == "cannot access /d/sub/out.jsonl: /d/sub: permission denied"


def test_an_error_without_a_usable_file_name_is_still_put_in_words():
    assert errors.file_error(OSError(errno.ENOSPC, "x", 3)).message == f"cannot write a file: {ENOSPC_WORDS}"
    err = errors.file_error(OSError(errno.EROFS, "x", b"/d/out.jsonl"))
    assert err.message == "cannot write /d/out.jsonl: read-only file system"


def test_the_argument_a_path_came_from_is_found_on_the_command_line(tmp_path):
    parser = output.make_parser("x", network=False)
    parser.add_argument("-o", "--output")
    parser.add_argument("--job")
    parser.add_argument("--csv")
    output.parse_args(
        parser,
        [
            "-o",
            str(tmp_path / "new" / "out.jsonl"),
            "--job",
            str(tmp_path / "d.dwjob"),
            "--csv",
            str(tmp_path / "in.csv"),
        ],
    )
    try:
        exc = OSError(errno.ENOSPC, "x")
        msg = errors.file_error(exc, str(tmp_path / "d.dwjob" / "results" / "b.output.jsonl")).message
        assert f"(in {tmp_path / 'd.dwjob'}, given with --job)" in msg
        msg = errors.file_error(OSError(errno.EACCES, "x", str(tmp_path / "new"))).message
        assert f"(the directory of {tmp_path / 'new' / 'out.jsonl'}, given with -o/--output)" in msg
        err = errors.file_error(OSError(errno.EACCES, "x", str(tmp_path / "in.csv")))
        assert "(given with --csv)" in err.message and err.exit_code == 2 and "readable" in (err.hint or "")
    finally:
        errors.note_path_arguments(parser, parser.parse_args([]))


def test_output_run_reports_file_errors_and_leaves_other_os_errors_unexpected(capsys):
    def raising(exc: BaseException) -> Any:
        def body() -> int:
            raise exc

        return body

    assert output.run(raising(PermissionError(errno.EACCES, "Permission denied", "/srv/x.jsonl"))) == 1
    err = capsys.readouterr().err
    assert "error: cannot access /srv/x.jsonl: permission denied" in err and "hint: " in err
    assert "unexpected" not in err
    assert output.run(raising(OSError(errno.ENOSPC, "No space left on device"))) == 1
    assert "error: cannot write a file: no space left on device" in capsys.readouterr().err
    # not about files: a bug or a network error, reported as unexpected
    assert output.run(raising(OSError(errno.EXDEV, "Invalid cross-device link", "/a"))) == 1
    assert "unexpected OSError" in capsys.readouterr().err
    assert output.run(raising(OSError("connection aborted"))) == 1
    assert "unexpected OSError" in capsys.readouterr().err
    assert output.run(raising(PermissionError(errno.EACCES, "Permission denied"))) == 1  # no file: unknown
    assert "unexpected PermissionError" in capsys.readouterr().err


# -- a full disk -------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["results", "job"])
def test_disk_full_while_downloading_then_a_rerun_loses_and_repeats_nothing(sandbox, ws, monkeypatch, where):
    ids, job, bid = finished_job(sandbox, 60)
    monkeypatch.setattr(download, "CHECKPOINT_LINES", 7)  # cursors saved every 7 lines
    root = Path(job, "results") if where == "results" else Path(job)
    disk = FakeDisk(monkeypatch, root, free=9000)
    code, doc, err = run_here("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 1 and is_error(doc), err
    assert disk.failures and "unexpected" not in err
    assert re.search(
        rf"error: cannot write .*{re.escape(job)}.*\(in {re.escape(job)}, given with --job\): "
        rf"{ENOSPC_WORDS}",
        err,
    ), err
    assert "hint: Free disk space" in err and "run the same command again" in err
    # the saved cursor covers whole lines, each once; what came after it is not counted
    cursor = job_state(job).get("fetch", {}).get(bid, {}).get("output", {"skip": 0, "local_bytes": 0})
    assert (0 < cursor["skip"] < 60) if where == "results" else (0 <= cursor["skip"] < 60)
    raw = Path(job, "results", f"{bid}.output.jsonl")
    saved = raw.read_bytes()[: cursor["local_bytes"]] if raw.exists() else b""
    saved_ids = [json.loads(line)["custom_id"] for line in saved.splitlines()]
    assert len(saved_ids) == cursor["skip"] == len(set(saved_ids))

    disk.free_space()
    code, doc, err = run_here("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 0, err
    assert doc["succeeded"] == 60 and doc["batches"][0]["verified"] is True
    assert_each_once(doc["output"], ids)
    assert sorted(r["custom_id"] for r in raw_lines(job, bid)) == sorted(ids)  # each line downloaded once
    assert no_temp_files(Path(job))


def test_disk_full_while_merging_keeps_the_old_results_and_names_the_option(sandbox, ws, monkeypatch):
    ids, job, _ = finished_job(sandbox, 40)
    out_dir = ws / "out"
    out_dir.mkdir()
    out = out_dir / "res.jsonl"
    out.write_text("the previous results\n")
    disk = FakeDisk(monkeypatch, out_dir, free=6000)
    code, doc, err = run_here("fetch_results.py", "--job", job, "-o", out, env=sandbox.env())
    assert code == 1 and is_error(doc), err
    assert f"error: cannot write {out} (given with -o/--output): {ENOSPC_WORDS}" in err
    assert "hint: Free disk space on the disk that holds" in err and "another disk with -o/--output" in err
    assert out.read_text() == "the previous results\n"  # replaced only by a complete file
    assert sorted(p.name for p in out_dir.iterdir()) == ["res.jsonl"]  # no temp file left

    disk.free_space()
    code, doc, err = run_here("fetch_results.py", "--job", job, "-o", out, env=sandbox.env())
    assert code == 0, err
    assert doc["output"] == str(out)
    assert_each_once(out, ids)


def test_disk_full_on_a_small_real_disk_while_downloading_then_more_space(sandbox, ws, mounts, monkeypatch):
    disk = ws / "disk"
    mounts.tmpfs(disk, "64k")
    ids = write_input("data.jsonl", 300)  # about 150 kB of results
    job = make_job(sandbox, "data.jsonl", 1, "--job", disk / "data.dwjob")
    wait_job(sandbox, job)
    bid = batch_ids_of(job)[0]
    monkeypatch.setattr(download, "CHECKPOINT_LINES", 20)  # in-process: cursors saved every 20 lines
    code, doc, err = run_here("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 1 and is_error(doc), err
    assert ENOSPC_WORDS in err and f"given with --job): {ENOSPC_WORDS}" in err and "unexpected" not in err
    cursor = job_state(job)["fetch"][bid]["output"]
    assert 0 < cursor["skip"] < 300
    saved = Path(job, "results", f"{bid}.output.jsonl").read_bytes()[: cursor["local_bytes"]]
    assert len({json.loads(line)["custom_id"] for line in saved.splitlines()}) == cursor["skip"]
    mounts.resize(disk, "16m")
    code, doc, err = run_here("fetch_results.py", "--job", job, "-o", ws / "res.jsonl", env=sandbox.env())
    assert code == 0, err
    assert_each_once(ws / "res.jsonl", ids)
    assert sorted(r["custom_id"] for r in raw_lines(job, bid)) == sorted(ids)
    assert no_temp_files(disk)


def test_disk_full_on_a_small_real_disk_while_merging_then_more_space(sandbox, ws, mounts):
    ids, job, _ = finished_job(sandbox, 300)
    disk = ws / "disk"
    mounts.tmpfs(disk, "64k")
    out = disk / "res.jsonl"
    code, doc, err = run_script("fetch_results.py", "--job", job, "-o", out, env=sandbox.env())
    assert code == 1 and is_error(doc), err
    assert f"error: cannot write {out} (given with -o/--output): {ENOSPC_WORDS}" in err, err
    assert not list(disk.iterdir())  # neither a partial file nor a temp file
    mounts.resize(disk, "16m")
    code, doc, err = run_script("fetch_results.py", "--job", job, "-o", out, env=sandbox.env())
    assert code == 0, err
    assert_each_once(out, ids)


def test_disk_full_while_building_a_batch_file(ws, monkeypatch):
    Path("prompts.txt").write_text("".join(f"prompt {i}\n" for i in range(200)))
    out_dir = ws / "out"
    out_dir.mkdir()
    FakeDisk(monkeypatch, out_dir, free=3000, fail_close=True)
    monkeypatch.setattr(os, "unlink", _failing_unlink)
    code, doc, err = run_here("create_batch_file.py", out_dir / "b.jsonl", "--prompts", "prompts.txt")
    assert code == 1 and is_error(doc)
    assert f"error: cannot write the batch file {out_dir / 'b.jsonl'} (given as OUTPUT.jsonl): {ENOSPC_WORDS}" in err
    assert "unexpected" not in err and "unlink" not in err


# -- the error that stopped a write wins over one from its cleanup ---------------------------


def _failing_unlink(path: Any, *args: Any, **kwargs: Any) -> None:
    raise PermissionError(errno.EACCES, "Permission denied", path)


def test_a_failing_cleanup_never_replaces_the_error_of_a_write(tmp_path, monkeypatch):
    target = tmp_path / "job.json"
    disk = FakeDisk(monkeypatch, tmp_path, free=10, fail_close=True)
    monkeypatch.setattr(os, "unlink", _failing_unlink)
    # the job file's writer: the write fails, then closing (flush) and removing the temp file fail too
    with pytest.raises(errors.FileSystemError) as info:
        files.atomic_write_json(str(target), {"a": "x" * 100})
    assert info.value.os_error.errno == errno.ENOSPC and info.value.path == str(target)
    assert info.value.message == f"cannot write {target}: {ENOSPC_WORDS}"
    # the streaming writer: the caller's own error survives a close and an unlink that fail
    disk.free_space()
    disk.fail_close = True
    with pytest.raises(errors.UsageError, match="the caller's error"):
        with files.atomic_output(str(tmp_path / "out.jsonl")) as fh:
            fh.write(b"{}\n")
            raise errors.UsageError("the caller's error")
    assert len(list(tmp_path.glob(".*.tmp"))) == 2  # left behind: removing them failed
    # ... and a failing rename is reported with the target, not the temp file, which is removed
    monkeypatch.undo()
    monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(errno.EROFS, "RO", a, None, b)))
    with pytest.raises(errors.FileSystemError) as info:
        with files.atomic_output(str(tmp_path / "out.jsonl")) as fh:
            fh.write(b"{}\n")
    assert info.value.message == f"cannot write {tmp_path / 'out.jsonl'}: read-only file system"
    monkeypatch.undo()
    assert len(list(tmp_path.glob(".*.tmp"))) == 2 and not (tmp_path / "out.jsonl").exists()


def test_disk_full_while_copying_a_retry_round_then_the_rerun_submits_it_once(sandbox, ws, monkeypatch):
    ids = write_input("data.jsonl", 20)
    bad = ["req-3", "req-11"]
    sandbox.set_faults({"fail_custom_ids": bad, "fail_status": 500})
    job = make_job(sandbox, "data.jsonl")
    wait_job(sandbox, job)
    code, doc, err = run_here("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 5, err
    sandbox.clear_faults()
    rounds = Path(job, "rounds")
    rounds.mkdir(mode=0o700)
    disk = FakeDisk(monkeypatch, rounds, free=100, fail_close=True)
    monkeypatch.setattr(os, "unlink", _failing_unlink)
    code, doc, err = run_here("retry_failed.py", "--job", job, env=sandbox.env())
    assert code == 1 and is_error(doc), err
    assert f"cannot write {rounds / 'round-2.jsonl'} (in {job}, given with --job): {ENOSPC_WORDS}" in err
    assert len(job_state(job)["rounds"]) == 1  # nothing recorded, nothing sent
    monkeypatch.undo()
    disk.free_space()
    code, doc, err = run_here("retry_failed.py", "--job", job, env=sandbox.env())
    assert code == 0 and doc["round"] == 2 and doc["requests"] == 2, err
    assert [json.loads(line)["custom_id"] for line in (rounds / "round-2.jsonl").read_text().splitlines()] == bad
    wait_job(sandbox, job)
    code, doc, err = run_here("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 0, err
    assert_each_once(doc["output"], ids)


# -- read-only directories ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_read_only_output_directory_names_the_option(sandbox, ws, mounts, method):
    ids, job, _ = finished_job(sandbox, 5)
    ro = ws / "ro"
    ro.mkdir()
    make_read_only(method, [ro], ws, mounts)
    out = ro / "res.jsonl"
    code, doc, err = run_as(method, "fetch_results.py", "--job", job, "-o", out, env=sandbox.env())
    assert code == 2 and is_error(doc), err
    assert f"error: cannot write {out} (given with -o/--output): {CAUSE[method]}" in err, err
    assert "hint: Choose another path with -o/--output" in err
    code, doc, err = run_as(method, "fetch_results.py", "--job", job, "-o", ws / "res.jsonl", env=sandbox.env())
    assert code == 0, err
    assert_each_once(ws / "res.jsonl", ids)


@pytest.mark.parametrize("method", METHODS)
def test_read_only_job_directory_names_the_option(sandbox, ws, mounts, method):
    ids, job, _ = finished_job(sandbox, 5)
    jobs = ws / "jobs"
    jobs.mkdir()
    make_read_only(method, [Path(job), jobs], ws, mounts, job=True)
    code, doc, err = run_as(method, "fetch_results.py", "--job", job, "-o", ws / "res.jsonl", env=sandbox.env())
    assert code == 2 and is_error(doc), err
    assert re.search(
        rf"error: cannot \w+ {re.escape(job)}\S* \(in {re.escape(job)}, given with --job\): "
        rf"{CAUSE[method]}",
        err,
    ), err
    assert "hint: " in err and "job directory" in err
    # a new job where none can be made: refused before anything is sent
    before = len(sandbox.get_json("files")["data"])
    code, doc, err = run_as(
        method, "submit.py", "data.jsonl", "--job", jobs / "new.dwjob", "--resubmit", env=sandbox.env()
    )
    assert code == 2 and is_error(doc), err
    assert f"{jobs / 'new.dwjob'} (given with --job): {CAUSE[method]}" in err, err
    assert len(sandbox.get_json("files")["data"]) == before


@pytest.mark.parametrize("method", METHODS)
def test_poll_reports_on_a_read_only_job(sandbox, ws, mounts, method):
    _, job, bid = finished_job(sandbox, 5)
    state = Path(job, "job.json").read_bytes()
    make_read_only(method, [Path(job)], ws, mounts, job=True)
    for extra in ([], ["--wait", "--timeout", "5"]):
        code, doc, err = run_as(method, "poll.py", "--job", job, *extra, env=sandbox.env())
        assert code == 0, err
        assert doc["status"] == "completed" and doc["finished"] is True and doc["job"] == job
        assert doc["batches"][0]["batch_id"] == bid and "fetch_results.py" in doc["next"]
        assert "error" not in err
    assert Path(job, "job.json").read_bytes() == state  # nothing could be recorded, nothing broke


def test_an_unreadable_env_file_in_a_parent_directory_is_a_configuration_error(sandbox, ws):
    Path(".env").write_text("DOUBLEWORD_API_KEY=sk-from-dotenv\n")
    Path(".env").chmod(0o000)
    sub = ws / "sub"
    sub.mkdir()
    if IS_ROOT:
        os.chown(sub, NOBODY, NOBODY)
    env = {k: v for k, v in sandbox.env().items() if k != "DOUBLEWORD_API_KEY"}  # the key would come from .env
    code, doc, err = run_as("permissions", "list_batches.py", env=env, cwd=sub)
    assert code == 3 and is_error(doc), err
    assert f"error: cannot read the .env file {ws / '.env'}: Permission denied" in err
    assert "hint: Make the file readable by you" in err and "unexpected" not in err
    # with the key and the base URL in the environment, as the hint suggests, the .env is not needed
    code, doc, err = run_as("permissions", "list_batches.py", env=sandbox.env(), cwd=sub)
    assert code == 0 and doc is not None, err
    assert f"warning: cannot read the .env file {ws / '.env'}: Permission denied; using DOUBLEWORD_API_KEY" in err


# -- a directory where a file belongs ----------------------------------------------------------


def test_an_output_path_that_is_a_directory_is_refused_naming_it(sandbox, ws):
    _, job, _ = finished_job(sandbox, 3)
    d = ws / "somedir"
    d.mkdir()
    code, doc, err = run_script("fetch_results.py", "--job", job, "-o", f"{d}{os.sep}", env=sandbox.env())
    assert code == 2 and is_error(doc)
    assert f"error: OUT {d} is a directory, not a file" in err and "hint: Give OUT the path of a file" in err
    code, doc, err = run_script("fetch_results.py", "--job", job, "--errors", d, env=sandbox.env())
    assert code == 2 and f"ERR {d} is a directory" in err
    code, doc, err = run_script("validate_batch_file.py", "data.jsonl", "--report", d)
    assert code == 2 and is_error(doc) and f"--report {d} is a directory" in err
    code, doc, err = run_script("create_batch_file.py", d)
    assert code == 2 and is_error(doc) and f"OUTPUT {d} is a directory" in err
    assert list(d.iterdir()) == [] and no_temp_files(ws)


# -- no output over an input: one refusal for every writer --------------------------------------


def test_validate_refuses_a_report_over_the_batch_file(ws):
    write_input("data.jsonl", 3)
    before = Path("data.jsonl").read_bytes()
    for report in ("data.jsonl", "./data.jsonl", str(ws / "data.jsonl")):
        code, doc, err = run_script("validate_batch_file.py", "data.jsonl", "--report", report)
        assert code == 2 and is_error(doc), err
        assert f"error: --report {report} is the batch file data.jsonl; refusing to overwrite it" in err
        assert "hint: Choose another path for --report." in err
    assert Path("data.jsonl").read_bytes() == before
    code, doc, err = run_script("validate_batch_file.py", "data.jsonl", "--report", "report.json")
    assert code == 0 and json.loads(Path("report.json").read_text())["valid"] is True


@pytest.mark.parametrize("flag", ["--prompts", "--csv", "--jsonl"])
def test_create_batch_file_refuses_to_write_over_its_input(ws, flag):
    text = {"--prompts": "hello\n", "--csv": "prompt\nhello\n", "--jsonl": '{"prompt": "hello"}\n'}[flag]
    Path("in.txt").write_text(text)
    code, doc, err = run_script("create_batch_file.py", "in.txt", flag, "in.txt")
    assert code == 2 and is_error(doc), err
    assert f"error: OUTPUT in.txt is the input given with {flag} in.txt; refusing to overwrite it" in err
    assert "hint: Choose another path for OUTPUT." in err
    assert Path("in.txt").read_text() == text


def test_retry_refuses_to_write_its_round_over_the_jobs_input(sandbox, ws):
    """A job whose input sits where the next retry round goes (``<job>/rounds/round-2.jsonl``):
    the retry would replace the input with the failed requests."""
    rounds = ws / "data.dwjob" / "rounds"
    rounds.mkdir(parents=True)
    inp = rounds / "round-2.jsonl"
    write_input(inp, 6)
    before = inp.read_bytes()
    sandbox.set_faults({"fail_custom_ids": ["req-2"], "fail_status": 500})
    job = make_job(sandbox, inp, 1, "--job", ws / "data.dwjob")
    wait_job(sandbox, job)
    sandbox.clear_faults()
    code, doc, err = run_script("retry_failed.py", "--job", job, env=sandbox.env())
    assert code == 2 and is_error(doc), err
    assert f"error: the retry input {inp} is the job's input {inp}; refusing to overwrite it" in err
    assert inp.read_bytes() == before
    assert len(sandbox.get_json("batches")["data"]) == 1  # nothing sent


def test_fetch_refuses_outputs_over_the_input_naming_both(sandbox, ws):
    _, job, _ = finished_job(sandbox, 3)
    before = Path("data.jsonl").read_bytes()
    code, doc, err = run_script("fetch_results.py", "--job", job, "-o", "data.jsonl", env=sandbox.env())
    assert code == 2 and is_error(doc)
    assert f"error: OUT {ws / 'data.jsonl'} is the job's input {ws / 'data.jsonl'}; refusing to overwrite it" in err
    code, doc, err = run_script(
        "fetch_results.py", "--job", job, "-o", "a.jsonl", "--errors", "a.jsonl", env=sandbox.env()
    )
    assert code == 2 and "OUT and ERR are the same file" in err
    assert Path("data.jsonl").read_bytes() == before


def test_fetch_refuses_outputs_inside_the_job_or_over_any_batch_input(sandbox, ws):
    _, job, _ = finished_job(sandbox, 3)
    for target in (f"{job}/job.json", f"{job}/results/submitted-input.jsonl"):
        code, doc, err = run_script(
            "fetch_results.py", "--job", job, "-o", target, "--format", "simple", env=sandbox.env()
        )
        assert code == 2 and is_error(doc), err
        assert "is inside the job directory" in err and "which holds the job's own files" in err
    assert json.loads(Path(job, "job.json").read_text())["version"] == 2  # still the job's record
    assert not Path(job, "results", "submitted-input.jsonl").exists()
    # bare batch ids know no input: a file whose first line is a request is not overwritten all the same
    write_input("other.jsonl", 2)
    before = Path("other.jsonl").read_bytes()
    bids = [b["id"] for b in sandbox.get_json("batches")["data"]]
    code, doc, err = run_script("fetch_results.py", *bids, "-o", "other.jsonl", env=sandbox.env())
    assert code == 2 and is_error(doc)
    assert "OUT" in err and "holds batch requests" in err and Path("other.jsonl").read_bytes() == before
    code, doc, err = run_script("validate_batch_file.py", "data.jsonl", "--report", "other.jsonl")
    assert code == 2 and "holds batch requests" in err and Path("other.jsonl").read_bytes() == before
    # a folder that is a file
    Path("notes.txt").write_text("mine\n")
    code, doc, err = run_script("fetch_results.py", *bids, "-o", "notes.txt/out.jsonl", env=sandbox.env())
    assert code == 2 and is_error(doc) and "unexpected" not in err, err
    assert f"{ws / 'notes.txt'} is a file, not a directory" in err
    assert Path("notes.txt").read_text() == "mine\n"


def test_a_hand_edited_job_file_of_the_wrong_shape_and_a_directory_as_input(sandbox, ws):
    _, job, _ = finished_job(sandbox, 3)
    doc = json.loads(Path(job, "job.json").read_text())
    doc["rounds"] = "x"
    Path(job, "job.json").write_text(json.dumps(doc))
    for script in ("poll.py", "fetch_results.py"):
        code, out, err = run_script(script, "--job", job, env=sandbox.env())
        assert code == 2 and is_error(out) and "unexpected" not in err, err
        assert "job.json is damaged" in err and "edited by hand" in err
    code, out, err = run_script("validate_batch_file.py", str(ws))
    assert code == 2 and f"{ws}: is a directory, not a file" in err


# -- documented --------------------------------------------------------------------------------


def test_troubleshooting_lists_every_file_error():
    text = " ".join((ROOT / "references" / "troubleshooting.md").read_text(encoding="utf-8").lower().split())
    for cause in [*errors.FILE_CAUSES.values(), errors.IN_USE_CAUSE]:
        assert cause.lower() in text, f"troubleshooting.md does not list the cause {cause!r}"
    for message in (
        "cannot write",
        "cannot access",
        "is a directory, not a file",
        "refusing to overwrite it",
        "are the same file",
        "cannot write downloaded results",
        "cannot write the batch file",
        "cannot write the report",
    ):
        assert message in text, f"troubleshooting.md does not explain {message!r}"


def test_every_writer_of_user_files_goes_through_the_one_atomic_writer():
    """mkstemp (a temp file to rename over the target) appears only in files.py, and in the
    batch file writer, which validates its temp file before the rename (compat.py's scratch
    files come from NamedTemporaryFile, unlinked at once and never renamed over anything)."""
    found = []
    for path in sorted((SCRIPTS / "_dwbatches").rglob("*.py")) + sorted(SCRIPTS.glob("*.py")):
        if path.name in ("sandbox_server.py", "sandbox.py"):
            continue
        if "mkstemp(" in path.read_text(encoding="utf-8"):
            found.append(path.name)
    assert found == ["builder.py", "files.py"]
