"""Key hygiene: the API key never appears in any output or file, plain http to another host is
refused before anything is sent, and job state is private to its owner.

The main test runs every script, verbosely, against a sandbox that only accepts a distinctive
key (``sk-HYGIENE-`` + 32 random hex digits): the whole workflow (check, build, validate,
submit, poll, fetch, retry, cancel, list, run_batch, bare batch ids) and its error paths (a
wrong key → 401, a 5xx burst retried and then given up on, an unexpected error), once without
and once with ``DOUBLEWORD_BATCHES_DEBUG=1`` (tracebacks). Then it searches every stdout and
stderr, every file the scripts wrote (job directories, results, fetch state) and the
sandbox's own data directory and request log for the key, the wrong key and their random
parts: zero hits. The scripts run under umask 000, so every job file and directory must get
its private mode (0600 / 0700) from the scripts themselves.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from helpers import is_error
from sandbox_helper import SCRIPTS, Sandbox, non_loopback_address

pytestmark = pytest.mark.slow  # not in `make test-fast`

KEY = "sk-HYGIENE-" + secrets.token_hex(16)
WRONG_KEY = "sk-HYGIENE-WRONG-" + secrets.token_hex(16)


def needles() -> Dict[str, bytes]:
    """Every form of the keys that must never be found."""
    out: Dict[str, bytes] = {}
    for name, key in (("key", KEY), ("wrong key", WRONG_KEY)):
        secret_part = key.rsplit("-", 1)[1]
        out[name] = key.encode()
        out[name + " (random part)"] = secret_part.encode()
        out[name + " (base64)"] = base64.b64encode(key.encode())
        out[name + " (as a Bearer header, base64)"] = base64.b64encode(f"Bearer {key}".encode())
    return out


class Recorder:
    """Runs scripts (umask 000), keeps every stdout and stderr for the final scan."""

    def __init__(self, cwd: Path, env: Dict[str, str]):
        self.cwd = cwd
        self.env = env
        self.transcripts: List[bytes] = []
        self.runs = 0

    def run(
        self,
        script: str,
        *args: Any,
        expect: Optional[int] = 0,
        env: Optional[Dict[str, str]] = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, str(SCRIPTS / script), *map(str, args)],
            cwd=self.cwd,
            env=env or self.env,
            capture_output=True,
            timeout=timeout,
            preexec_fn=lambda: os.umask(0),
        )
        self.runs += 1
        self.transcripts += [proc.stdout, proc.stderr]
        if expect is not None:
            assert proc.returncode == expect, (script, args, proc.returncode, proc.stderr.decode(errors="replace"))
        return proc

    def json(self, script: str, *args: Any, expect: Optional[int] = 0, **kw: Any) -> Dict[str, Any]:
        proc = self.run(script, *args, expect=expect, **kw)
        return json.loads(proc.stdout)


def scan(blobs: List[bytes], roots: List[Path], skip: List[Path]) -> Dict[str, Any]:
    """Search every blob and every file under ``roots`` (but not ``skip``) for every needle."""
    hits: List[str] = []
    scanned = 0
    files = 0
    forms = needles()
    for i, blob in enumerate(blobs):
        scanned += len(blob)
        hits += [f"output #{i}: {name}" for name, n in forms.items() if n in blob]
    for root in roots:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path in skip:
                continue
            data = path.read_bytes()
            scanned += len(data)
            files += 1
            hits += [f"{path}: {name}" for name, n in forms.items() if n in data]
    return {"hits": hits, "bytes": scanned, "files": files, "outputs": len(blobs)}


def assert_private(job_dir: Path) -> int:
    """A job directory (and its subdirectories) 0700; every file in it 0600. Returns files checked."""
    checked = 0
    for path in [job_dir, *sorted(job_dir.rglob("*"))]:
        mode = stat.S_IMODE(path.stat().st_mode)
        want = 0o700 if path.is_dir() else 0o600
        assert mode == want, f"{path} has mode {oct(mode)}, want {oct(want)}"
        checked += 1
    return checked


# -- the full workflow, then a scan --------------------------------------------------------------


def workflow(rec: Recorder, sb: Sandbox, tag: str) -> List[Path]:
    """Everything a user does, with its error paths. Returns the job directories it made."""
    work = rec.cwd
    prompts = work / f"{tag}-prompts.txt"
    prompts.write_text("".join(f"Question {i} for {tag}\n" for i in range(8)))
    rec.json("check_setup.py")
    rec.json("list_models.py")
    built = rec.json("create_batch_file.py", f"{tag}.jsonl", "--prompts", prompts.name, "--id-prefix", tag)
    assert built["requests"] == 8
    rec.json("validate_batch_file.py", f"{tag}.jsonl")
    ids = [json.loads(line)["custom_id"] for line in (work / f"{tag}.jsonl").read_text().splitlines()]

    # submit with one request failing and a 500 burst while polling
    sb.set_faults(
        {
            "fail_custom_ids": [ids[2]],
            "fail_status": 500,
            "http": [{"method": "GET", "path": "/v1/batches/", "status": 500, "times": 2}],
        }
    )
    sub = rec.json("submit.py", f"{tag}.jsonl", "--max-requests", 4)
    job = Path(sub["job"])
    rec.run("poll.py", "--job", job, "--wait", "--interval", "0.2", expect=None)
    first = rec.json("fetch_results.py", "--job", job, expect=5)
    assert first["failed"] == 1
    sb.clear_faults()
    rec.json("retry_failed.py", "--job", job)
    rec.run("poll.py", "--job", job, "--wait", "--interval", "0.2")
    done = rec.json("fetch_results.py", "--job", job, "--format", "simple")
    assert done["succeeded"] == 8
    batch_ids = [b["batch_id"] for b in done["batches"]]
    rec.json("fetch_results.py", batch_ids[0], "-o", f"{tag}-bare.jsonl", "--input", f"{tag}.jsonl", expect=None)

    # a bigger job, cancelled while it runs
    (work / f"{tag}-big.txt").write_text("".join(f"Long question {i}\n" for i in range(40)))
    rec.json("create_batch_file.py", f"{tag}-big.jsonl", "--prompts", f"{tag}-big.txt", "--id-prefix", f"{tag}b")
    big = rec.json("submit.py", f"{tag}-big.jsonl")
    rec.json("cancel_batch.py", "--job", big["job"], "--dry-run")
    rec.json("cancel_batch.py", "--job", big["job"])
    rec.run("fetch_results.py", "--job", big["job"], expect=None)
    rec.json("list_batches.py")
    rec.json("list_batches.py", "--search", sub["job_id"])

    # run_batch.py end to end
    (work / f"{tag}-small.txt").write_text("one\ntwo\nthree\n")
    rec.json("create_batch_file.py", f"{tag}-small.jsonl", "--prompts", f"{tag}-small.txt", "--id-prefix", f"{tag}s")
    ran = rec.json("run_batch.py", f"{tag}-small.jsonl", "--wait", "--interval", "0.2")
    assert ran["complete"]

    # error paths: a wrong key (401) on every kind of call
    wrong = dict(rec.env, DOUBLEWORD_API_KEY=WRONG_KEY)
    for script, args in (
        ("check_setup.py", []),
        ("list_models.py", []),
        ("list_batches.py", []),
        ("poll.py", ["--job", job]),
        ("fetch_results.py", ["--job", job]),
        ("submit.py", [f"{tag}-small.jsonl", "--job", f"{tag}-wrong.dwjob"]),
        ("cancel_batch.py", batch_ids[:1]),
    ):
        proc = rec.run(script, *args, env=wrong, expect=3)
        assert b"401" in proc.stderr or b"refused" in proc.stderr, proc.stderr
    # a 5xx burst that outlasts the retries, on a read and on a create
    sb.set_faults({"http": [{"method": "*", "path": "*", "status": 503, "retry_after": 0}]})
    rec.run("list_batches.py", expect=1)
    rec.run("run_batch.py", f"{tag}-small.jsonl", "--job", f"{tag}-busy.dwjob", expect=1)
    # replies that are not JSON, after the retries
    sb.set_faults({"http": [{"method": "GET", "path": "/v1/batches", "status": 200, "message": "not json {"}]})
    proc = rec.run("list_batches.py", expect=1)
    assert b"not what the API sends" in proc.stderr
    sb.clear_faults()
    # an unexpected error (with DOUBLEWORD_BATCHES_DEBUG: its traceback)
    crash = dict(rec.env, DOUBLEWORD_BATCHES_CRASH_AT="after_upload:raise")
    proc = rec.run("submit.py", f"{tag}-small.jsonl", "--job", f"{tag}-crash.dwjob", "--resubmit", env=crash, expect=1)
    assert b"unexpected RuntimeError" in proc.stderr
    return [
        job,
        Path(big["job"]),
        Path(ran["job"]),
        work / f"{tag}-wrong.dwjob",
        work / f"{tag}-busy.dwjob",
        work / f"{tag}-crash.dwjob",
    ]


def test_the_key_never_leaks_anywhere_and_job_state_is_private(sandbox_factory, tmp_path, capsys):
    sb = sandbox_factory("-v", "--latency", "0.04", "--concurrency", "1", api_key=KEY)
    work = tmp_path / "work"
    work.mkdir()
    env = dict(sb.env())
    env.pop("DOUBLEWORD_BATCHES_DEBUG", None)
    rec = Recorder(work, env)
    jobs = workflow(rec, sb, "plain")

    debug_env = dict(env, DOUBLEWORD_BATCHES_DEBUG="1")
    rec.env = debug_env
    jobs += workflow(rec, sb, "debug")
    assert any(b"Traceback (most recent call last)" in t for t in rec.transcripts)  # the debug path ran

    # the key from .env instead of the environment
    dotenv_dir = work / "from-dotenv"
    dotenv_dir.mkdir()
    dotenv = dotenv_dir / ".env"
    dotenv.write_text(f"DOUBLEWORD_API_KEY={KEY}\nDOUBLEWORD_BASE_URL={sb.base_url}\n")
    no_env = {k: v for k, v in env.items() if not k.startswith("DOUBLEWORD_")}
    dot = Recorder(dotenv_dir, dict(no_env, DOUBLEWORD_BATCHES_DEBUG="1"))
    dot.json("check_setup.py")
    (dotenv_dir / "d.jsonl").write_bytes((work / "plain-small.jsonl").read_bytes())
    ran = dot.json("run_batch.py", "d.jsonl", "--wait", "--interval", "0.2", "--resubmit")  # submitted before
    jobs.append(Path(ran["job"]))
    rec.transcripts += dot.transcripts

    sb.stop()  # flush the sandbox's log and database
    assert sb.data_dir.parent == sb.log_path.parent
    result = scan(rec.transcripts, [work, sb.log_path.parent], skip=[dotenv])  # the log and the data dir
    assert b"GET /v1/batches" in sb.log_path.read_bytes()  # the request log was on, and scanned
    assert result["hits"] == [], result["hits"]

    modes = 0
    for job in jobs:
        assert (job / "job.json").exists() or job.name.endswith(("-wrong.dwjob", "-busy.dwjob")), job
        if job.exists():
            modes += assert_private(job)
    for raw in work.glob("*.dwraw"):
        modes += assert_private(raw)
    for state in work.glob("*.dwstate.json"):
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        modes += 1
    with capsys.disabled():
        print(
            f"\nkey hygiene: {rec.runs + dot.runs} script runs, {result['outputs']} outputs and "
            f"{result['files']} files, {result['bytes']} bytes scanned, {len(result['hits'])} hits; "
            f"{modes} job paths with private modes"
        )


def test_job_files_are_private_even_under_umask_000(sandbox, tmp_path):
    """job.json, job.lock, downloaded results and retry rounds: 0600 in 0700 directories, whatever
    the umask (a retry round's directory used to be created with the umask's mode)."""
    rec = Recorder(tmp_path, dict(sandbox.env()))
    (tmp_path / "p.txt").write_text("a\nb\nc\nd\n")
    rec.json("create_batch_file.py", "p.jsonl", "--prompts", "p.txt", "--id-prefix", "prompts")
    sandbox.set_faults({"fail_custom_ids": ["prompts-000002"], "fail_status": 400})
    rec.json("run_batch.py", "p.jsonl", "--wait", "--interval", "0.2", expect=5)
    sandbox.clear_faults()
    rec.json("retry_failed.py", "--job", "p.dwjob")
    rec.json("run_batch.py", "p.jsonl", "--wait", "--interval", "0.2")
    job = tmp_path / "p.dwjob"
    assert (job / "rounds" / "round-2.jsonl").exists() and list((job / "results").glob("*.output.jsonl"))
    assert (job / "job.lock").exists()
    assert assert_private(job) >= 7


# -- a key that would be quoted by the HTTP library ------------------------------------------


@pytest.mark.parametrize(
    "junk",
    ["\n", "\r", "\t", " ", "\x01", "\u2010"],
    ids=["newline", "carriage-return", "tab", "space", "control", "non-ascii"],
)
def test_a_key_with_a_line_break_or_other_junk_is_refused_without_being_printed(junk, sandbox, tmp_path):
    """A key pasted with a line break inside (``"sk-...\\n..."`` in a quoted .env value) made the
    HTTP library raise an error quoting the whole Authorization header, which was printed five
    times (once per retry). Now it is refused before anything is sent, and never printed."""
    key = KEY[:20] + junk + KEY[20:]
    # a double-quoted .env value: line breaks written as escape sequences, the rest as they are
    quoted = '"' + key.replace("\n", "\\n").replace("\r", "\\r") + '"'
    (tmp_path / ".env").write_text(
        f"DOUBLEWORD_API_KEY={quoted}\nDOUBLEWORD_BASE_URL={sandbox.base_url}\n", encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOUBLEWORD_")}
    env["DOUBLEWORD_BATCHES_DEBUG"] = "1"
    for script in ("list_batches.py", "check_setup.py"):
        proc = subprocess.run(
            [sys.executable, str(SCRIPTS / script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 3 and is_error(proc.stdout), proc.stderr
        assert "DOUBLEWORD_API_KEY contains" in proc.stderr
        assert KEY[:20] not in proc.stderr and KEY[20:] not in proc.stderr
    assert sandbox.stats()["requests"] == {}  # nothing was sent


def test_escaped_forms_of_a_registered_key_are_redacted():
    from _dwbatches.core import output

    key = "sk-test-" + secrets.token_hex(8) + "\n" + secrets.token_hex(4)
    output.register_secret(key)
    for text in (key, repr(key), json.dumps(key), f"header value: {key!r}"):
        assert key.split("\n")[0] not in output.redact(text), text


# -- plain http to another machine -----------------------------------------------------------


def test_plain_http_to_another_host_is_refused_before_anything_is_sent(sandbox_factory, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOUBLEWORD_")}
    env["DOUBLEWORD_API_KEY"] = KEY
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "list_batches.py"), "--base-url", "http://example.invalid/v1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3 and is_error(proc.stdout)
    assert "refusing plain-http base URL to non-loopback host 'example.invalid'" in proc.stderr
    assert "resolve" not in proc.stderr.lower()  # refused before any name lookup or connection

    addr = non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address to listen on")
    sb = sandbox_factory("--host", addr, api_key=KEY)
    url = f"http://{addr}:{sb.port}/v1"
    env["DOUBLEWORD_BASE_URL"] = url
    for script in ("list_batches.py", "list_models.py", "check_setup.py"):
        proc = subprocess.run(
            [sys.executable, str(SCRIPTS / script)], env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 3 and is_error(proc.stdout), proc.stderr
        assert "refusing plain-http base URL" in proc.stderr and "--allow-insecure-http" in proc.stderr
        assert KEY not in proc.stderr
    assert sb.stats()["requests"] == {}  # nothing reached the server
    ok = subprocess.run(
        [sys.executable, str(SCRIPTS / "list_batches.py"), "--allow-insecure-http"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert sb.stats()["requests"] == {"GET /v1/batches": 1}
