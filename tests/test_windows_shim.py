"""The scripts under a Windows simulation: tests/winshim/sitecustomize.py on PYTHONPATH removes
the POSIX-only functions and modules (os.fchmod, os.getuid, fcntl, pwd, ...) before anything is
imported. The sandbox runs under it too. The workflow must give the same outcomes as on POSIX:
exit codes, every custom_id once and in input order, and a job lock that really excludes (here
by the exclusive lock file, as neither fcntl nor msvcrt is there)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from _dwbatches.core import compat
from _dwbatches.core.sandbox import SandboxProcess
from helpers import Child, is_error, shim_env

pytestmark = pytest.mark.slow  # not in `make test-fast`

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
MODEL = "Qwen/Qwen3.5-9B"

HOLD = r"""
import sys
sys.path.insert(0, sys.argv[1])
from _dwbatches.jobs import job as job_mod
from _dwbatches.results import download
if sys.argv[2] == "job":
    job = job_mod.Job(sys.argv[3])
    job.lock(wait=0)
    release = job.unlock
else:
    store = download.FileStore(sys.argv[3])
    store.lock()
    release = store.unlock
print("locked", flush=True)
sys.stdin.readline()
release()
print("released", flush=True)
"""


def shim_python(code: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=shim_env(env), capture_output=True, text=True, timeout=60)


def shim_lock_method() -> str:
    proc = shim_python(
        f"import sys; sys.path.insert(0, {str(SCRIPTS)!r}); from _dwbatches.core import compat; print(compat.LOCK_METHOD)"
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def run_script(name, *args, env, timeout=120):
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout
    )
    doc = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, doc, proc.stderr


def write_input(path, n):
    items = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": f"Question number {i}"}]},
        }
        for i in range(n)
    ]
    Path(path).write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    return [i["custom_id"] for i in items]


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def batch_ids_of(job):
    state = json.loads(Path(job, "job.json").read_text(encoding="utf-8"))
    return [c["batch_id"] for r in state["rounds"] for c in r["chunks"]]


def wait_until(pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


class ShimSandbox:
    """The bundled sandbox, started by the product's own launcher under the simulation."""

    def __init__(self, data_dir, extra_args=()):
        self.proc = SandboxProcess(data_dir=str(data_dir), extra_args=list(extra_args))

    def start(self, monkeypatch):
        with monkeypatch.context() as m:
            m.setenv("PYTHONPATH", shim_env()["PYTHONPATH"])  # the sandbox runs under the shim too
            self.proc.start()
        env = shim_env()
        env.update(DOUBLEWORD_API_KEY=self.proc.api_key, DOUBLEWORD_BASE_URL=self.proc.base_url)
        self.env = env
        return self

    def api(self, method, path, body=None):
        root = self.proc.base_url[: -len("/v1")]
        url = root + path if path.startswith("/_sandbox") else self.proc.base_url + "/" + path
        req = urllib.request.Request(
            url,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.proc.api_key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def set_faults(self, doc):
        self.api("PUT", "/_sandbox/faults", doc)

    def batch(self, bid):
        return self.api("GET", f"batches/{bid}")

    def wait_terminal(self, bid):
        wait_until(lambda: self.batch(bid)["status"] in ("completed", "failed", "cancelled", "expired"))


@pytest.fixture
def shim_sandbox(tmp_path_factory, monkeypatch):
    started = []

    def start(*extra_args):
        sb = ShimSandbox(tmp_path_factory.mktemp("shim-sandbox") / "data", extra_args).start(monkeypatch)
        started.append(sb)
        return sb

    yield start
    for sb in started:
        sb.proc.stop()


def test_the_shim_removes_the_posix_only_apis():
    probe = (
        "import os, signal\n"
        "print(hasattr(os, 'fchmod'), hasattr(os, 'getuid'), hasattr(os, 'O_NOFOLLOW'), hasattr(signal, 'SIGHUP'))\n"
        "for name in ('fcntl', 'pwd', 'resource', 'grp', 'termios'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "        print(name, 'imported')\n"
        "    except ImportError:\n"
        "        print(name, 'missing')\n"
    )
    proc = shim_python(probe)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "False False False False"
    assert lines[1:] == [f"{m} missing" for m in ("fcntl", "pwd", "resource", "grp", "termios")]
    assert shim_python("import os; print(hasattr(os, 'fchmod'))").stdout.strip() == "False"
    assert shim_python("import fcntl").returncode != 0
    assert shim_lock_method() in ("msvcrt", "exclusive-file")  # never flock
    if not compat.IS_WINDOWS:  # without the shim, the same Python has them: the shim made the difference
        plain = subprocess.run(
            [sys.executable, "-c", "import os, fcntl; print(hasattr(os, 'fchmod'))"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert plain.stdout.strip() == "True"
        assert shim_lock_method() == "exclusive-file"


def test_an_id_table_in_a_file_works_without_pread():
    """A huge id table lives in a scratch file read and written at offsets: without os.pread and
    os.pwrite (Windows) by seek, read and write, with the same answers."""
    probe = (
        "import os, sys\n"
        f"sys.path.insert(0, {str(SCRIPTS)!r})\n"
        "from _dwbatches.core import idtable\n"
        "idtable.FILE_SLOTS = 0\n"
        "t = idtable.IdTable()\n"
        "ids = [f'id-{i}' for i in range(5000)]\n"
        "for n, c in enumerate(ids): t.insert(c, n)\n"
        "assert all(t.value(t.find(c)) == n for n, c in enumerate(ids)) and t.find('no') == idtable.NOT_FOUND\n"
        "t.close()\n"
        "print(hasattr(os, 'pread'), 'ok')\n"
    )
    proc = shim_python(probe)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "ok"]


def test_check_setup_with_its_own_sandbox_under_the_shim(tmp_path):
    code, doc, err = run_script("check_setup.py", "--sandbox", env=shim_env())
    assert code == 0, err
    assert doc["next"].startswith(compat.python_command() + " ")


def test_submit_poll_fetch_retry_under_the_shim(shim_sandbox, tmp_path):
    sb = shim_sandbox("--latency", "0.01", "--concurrency", "4")
    env = sb.env
    ids = write_input("data.jsonl", 30)
    bad = ["req-4", "req-17", "req-29"]
    sb.set_faults({"fail_custom_ids": bad, "fail_status": 400})

    code, doc, err = run_script("submit.py", "data.jsonl", "--max-requests", "15", env=env)
    assert code == 0, err
    assert len(doc["batches"]) == 2
    job = doc["job"]
    assert doc["next"].startswith(compat.python_command() + " ") and "poll.py --job" in doc["next"]
    code, doc, err = run_script("poll.py", "--job", job, "--wait", "--interval", "0.2", env=env)
    assert code == 5 and doc["status"] == "partially_failed", err
    assert doc["request_counts"] == {"total": 30, "completed": 27, "failed": 3}

    code, doc, err = run_script("fetch_results.py", "--job", job, env=env)
    assert code == 5, err
    assert doc["succeeded"] == 27 and doc["failed"] == 3 and doc["missing"] == 0
    assert [r["custom_id"] for r in read_jsonl(doc["output"])] == [i for i in ids if i not in bad]
    assert [r["custom_id"] for r in read_jsonl(doc["errors"])] == bad
    assert "retry_failed.py --job" in doc["next"]
    if not compat.IS_WINDOWS:  # modes set without os.fchmod (by path)
        assert stat.S_IMODE(Path(job, "job.json").stat().st_mode) == 0o600
        assert stat.S_IMODE(Path(doc["output"]).stat().st_mode) == 0o644

    sb.set_faults({})
    code, doc, err = run_script("retry_failed.py", "--job", job, env=env)
    assert code == 0, err
    assert doc["round"] == 2 and doc["requests"] == 3 and doc["failed"] == 3
    original = {json.loads(line)["custom_id"]: line for line in Path("data.jsonl").read_text().splitlines()}
    assert Path(job, "rounds", "round-2.jsonl").read_text().splitlines() == [original[c] for c in bad]
    code, doc, err = run_script("poll.py", "--job", job, "--wait", "--interval", "0.2", env=env)
    assert code == 0 and doc["status"] == "completed", err
    code, doc, err = run_script("fetch_results.py", "--job", job, env=env)
    assert code == 0, err
    assert doc["succeeded"] == 30 and doc["failed"] == 0 and doc["missing"] == 0 and doc["next"] is None
    assert [r["custom_id"] for r in read_jsonl(doc["output"])] == ids  # each once, in input order
    assert read_jsonl(doc["errors"]) == []

    leftovers = [p.name for p in Path(job).rglob("*") if p.name.endswith((".tmp", ".break"))]
    assert leftovers == []
    if shim_lock_method() == "exclusive-file":
        assert not Path(job, "job.lock").exists()  # released by every run


def test_cancel_then_retry_under_the_shim(shim_sandbox, tmp_path):
    sb = shim_sandbox("--latency", "0.2", "--concurrency", "2")
    env = sb.env
    ids = write_input("data.jsonl", 60)
    code, doc, err = run_script("submit.py", "data.jsonl", "--max-requests", "30", env=env)
    assert code == 0 and len(doc["batches"]) == 2, err
    job = doc["job"]
    # the batches run one after the other; which one starts first depends on the order they
    # were created in (chunks are created in parallel): wait for 5 requests of either, then
    # let no more start, so that both are still running when the cancel comes
    wait_until(lambda: max(sb.batch(b)["request_counts"]["completed"] for b in batch_ids_of(job)) >= 5)
    sb.set_faults({"pause_requests": True})

    code, doc, err = run_script("cancel_batch.py", "--job", job, env=env)
    assert code == 0 and doc["cancelled"] == 2, err
    assert "fetch_results.py --job" in doc["next"]
    for bid in batch_ids_of(job):
        sb.wait_terminal(bid)
    code, doc, err = run_script("poll.py", "--job", job, env=env)
    assert code == 5 and doc["status"] == "cancelled", err
    code, doc, err = run_script("fetch_results.py", "--job", job, "--format", "simple", env=env)
    assert code == 5, err
    done = doc["succeeded"]
    assert 5 <= done < 60 and doc["missing"] == 60 - done and doc["failed"] == 0
    rows = read_jsonl(doc["output"])
    assert [r["custom_id"] for r in rows] == ids
    assert {r["error"] for r in rows if not r["ok"]} == {"not run"}

    sb.set_faults({})
    code, doc, err = run_script("retry_failed.py", "--job", job, env=env)
    assert code == 2 and is_error(doc) and "was cancelled" in err, err
    code, doc, err = run_script("retry_failed.py", "--job", job, "--after-cancel", env=env)
    assert code == 0 and doc["requests"] == 60 - done, err
    code, doc, err = run_script("poll.py", "--job", job, "--wait", "--interval", "0.2", env=env)
    assert code == 0 and doc["status"] == "completed", err
    code, doc, err = run_script("fetch_results.py", "--job", job, env=env)
    assert code == 0 and doc["succeeded"] == 60, err
    assert [r["custom_id"] for r in read_jsonl(doc["output"])] == ids


def test_the_job_lock_excludes_under_the_shim(shim_sandbox, tmp_path):
    sb = shim_sandbox()
    env = dict(sb.env, DOUBLEWORD_BATCHES_TIME_SCALE="1")  # the real 10 s wait for a busy lock
    write_input("data.jsonl", 10)
    code, doc, err = run_script("submit.py", "data.jsonl", env=env)
    assert code == 0, err
    job = doc["job"]
    code, doc, err = run_script("poll.py", "--job", job, "--wait", "--interval", "0.2", env=env)
    assert code == 0 and doc["status"] == "completed", err
    fallback = shim_lock_method() == "exclusive-file"
    hold = [sys.executable, "-c", HOLD, str(SCRIPTS)]

    # a fetch while another process holds the job lock waits (10 s), then is refused
    holder = Child(hold + ["job", job], env=env)
    try:
        holder.expect("locked")
        if fallback:
            assert compat.read_lock_owner(str(Path(job, "job.lock")))["pid"] == holder.proc.pid
        before = Path(job, "job.json").read_bytes()
        t0 = time.monotonic()
        code, doc, err = run_script("fetch_results.py", "--job", job, env=env)
        assert code == 1 and is_error(doc), err
        assert "another command is working on the job at" in err
        assert time.monotonic() - t0 >= 9
        assert Path(job, "job.json").read_bytes() == before
        assert not Path(job, "results").exists()

        # one that starts while it is held goes on when it is released
        waiting = subprocess.Popen(
            [sys.executable, str(SCRIPTS / "fetch_results.py"), "--job", job],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        assert waiting.poll() is None
        holder.tell()
        holder.expect("released")
        out, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, err
        assert json.loads(out)["succeeded"] == 10
    finally:
        holder.close()

    # a holder killed with the lock held leaves its lock file; the next run takes it over
    holder = Child(hold + ["job", job], env=env)
    try:
        holder.expect("locked")
        holder.kill()
        assert Path(job, "job.lock").exists()
        t0 = time.monotonic()
        code, doc, err = run_script("fetch_results.py", "--job", job, env=env)
        assert code == 0 and doc["succeeded"] == 10, err
        assert time.monotonic() - t0 < 9  # no waiting for a dead holder
        assert Path(job, "job.lock").exists() != fallback
    finally:
        holder.close()

    # the fetch state of bare batch ids: the same wait, then the same refusal
    bid = batch_ids_of(job)[0]
    holder = Child(hold + ["store", str(tmp_path / "out.jsonl")], env=env)
    try:
        holder.expect("locked")
        code, doc, err = run_script("fetch_results.py", bid, "-o", "out.jsonl", env=env)
        assert code == 1 and is_error(doc), err
        assert "another command is working on the results" in err
        holder.tell()
        holder.expect("released")
    finally:
        holder.close()
    code, doc, err = run_script("fetch_results.py", bid, "-o", "out.jsonl", env=env)
    assert code == 0 and doc["succeeded"] == 10, err
    assert [r["custom_id"] for r in read_jsonl("out.jsonl")] == [f"req-{i}" for i in range(10)]
