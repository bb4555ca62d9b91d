"""Crash trials: ``kill -9`` of our own process at random moments never loses, duplicates or
double-bills anything.

Each trial runs a small job against a slowed-down sandbox and kills the script with SIGKILL at
moments chosen by ``random.Random(seed)``, then runs the same command again, until the job is
done:

- "run" trials kill ``run_batch.py --wait`` (upload, cost estimate, create, polling, download,
  merge) and rerun it;
- "fetch" trials submit with ``submit.py`` and kill ``fetch_results.py`` while the batches run
  (partial downloads) and rerun it;
- "retry" trials run against a second sandbox where a quarter of the requests fail in every
  round: ``run_batch.py --wait`` ends with failures, then ``retry_failed.py`` is killed and
  rerun, then ``run_batch.py --wait`` (killed once, maybe) finishes the round, until every
  request has succeeded.

The sandbox is slowed so that kills land in every stage: uploads pause mid-body
(``slow_upload_read``), replies to /v1/files and /v1/batches wait after the server acted
(``extra_latency``, so a kill there loses a reply to a request that took effect), requests
take ``--latency`` to run, and a proxy in front of the sandbox slows every reply byte stream,
so that downloads are killed mid-stream. The proxy (one per trial) also knows which API call is
in flight at each kill, which is how kills are counted by stage.

After every kill ``job.json`` must parse and every download cursor must point at complete,
fsynced lines. At the end of every trial: ``fetch_results.py`` exits 0, every ``custom_id`` is
in the merged results exactly once and in input order, the server holds exactly one batch per
chunk of ``job.json`` (all rounds) and one input file per chunk, and on the server every
request succeeded in exactly one batch (nothing that succeeded was sent, and paid for, again).

Environment (read only here): CRASH_TRIALS (default 20; ``make stress``: 200), CRASH_SEED
(default 6), CRASH_PARALLEL (trials run at once, default 3), CRASH_REPORT (write the summary
as JSON to this path). The summary is printed (``pytest -s``). In ``make test`` the trials are
played in four parts (``test_crash_trials[0..3]``, every fourth trial each) that parallel test
workers share; the part that finishes last checks the run as a whole.
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from sandbox_helper import SCRIPTS, chat_requests, jsonl_bytes, list_all

# Kills land at moments measured in real seconds, and the settle delays must outwait requests
# still on their way: no scaled waits here.
pytestmark = [pytest.mark.real_time, pytest.mark.slow]

DEFAULT_TRIALS = 20
STRESS_TRIALS = 200
DEFAULT_SEED = 6
REQUESTS = 12
PER_CHUNK = 6
SANDBOX_ARGS = ("--latency", "0.06", "--concurrency", "3", "--validating-delay", "0.2")
FAULTS = {
    "slow_upload_read": {"after_bytes": 300, "pause": 0.25},
    "extra_latency": 0.1,
    "extra_latency_paths": ["/v1/files", "/v1/batches"],
}
PROXY_RATE = 12_000  # reply bytes per second
RUN_FIRST_KILL_WINDOW = (0.1, 1.8)  # seconds after the start of run_batch.py: mostly submitting
RUN_KILL_WINDOW = (0.1, 4.0)  # later kills: anywhere in a run (an uninterrupted one takes ~4.5 s)
FETCH_KILL_WINDOW = (0.05, 1.6)  # seconds after the start of fetch_results.py
RETRY_KILL_WINDOW = (0.1, 2.5)  # seconds after the start of retry_failed.py
RETRY_FAIL_RATE = 0.25  # "retry" trials: this share of requests fails in each round
MAX_RETRY_ROUNDS = 12
MAX_SCHEDULED_KILLS = 4

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
STAGES = [
    ("POST", re.compile(r"^/v1/files$"), "upload"),
    ("GET", re.compile(rf"^/v1/files/{UUID}/cost-estimate$"), "estimate"),
    ("POST", re.compile(r"^/v1/batches$"), "create"),
    ("GET", re.compile(rf"^/v1/batches/{UUID}$"), "poll"),
    ("GET", re.compile(rf"^/v1/files/{UUID}/content$"), "download"),
    ("GET", re.compile(r"^/v1/(files|batches)$"), "lookup"),
]


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def stage_of(request_line: str) -> str:
    method, _, target = request_line.partition(" ")
    path = target.split(" ")[0].split("?")[0]
    for m, rx, stage in STAGES:
        if m == method and rx.match(path):
            return stage
    return f"other {method} {path}"


# -- a proxy that slows replies and knows which call is in flight ------------------------------


class StageProxy:
    """TCP proxy in front of the sandbox: every reply byte stream is slowed to ``rate`` bytes/s,
    and ``in_flight()`` names the API calls whose reply has not fully arrived yet."""

    def __init__(self, upstream_port: int, rate: float, hold: Optional[Dict[str, float]] = None):
        self.upstream_port = upstream_port
        self.rate = rate
        # request-line prefix -> seconds the request is held, once it has come in whole, before
        # it is passed on (a buffering load balancer): it reaches the server even if the client
        # is gone by then
        self.hold = hold or {}
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.calls: Dict[int, str] = {}  # connection number -> request line of the call in flight
        # connection number -> request bytes still to come from the client for the call in
        # flight (None: its head is not complete yet)
        self.to_come: Dict[int, Optional[int]] = {}
        self.heads: Dict[int, bytes] = {}
        self.conns = 0
        self.requests = 0  # calls seen so far
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def in_flight(self) -> List[str]:
        with self.lock:
            return sorted(self.calls.values())

    def received_whole(self, prefix: str) -> bool:
        """Whether a call in flight whose request line starts with ``prefix`` has come in whole
        from the client (its head and its Content-Length of body), held or passed on."""
        with self.lock:
            return any(line.startswith(prefix) and self.to_come.get(n) == 0 for n, line in self.calls.items())

    def _count_request_bytes(self, n: int, data: bytes) -> None:
        """Follow how much of the call's request has come in (under the lock)."""
        left = self.to_come.get(n)
        if left is not None:
            self.to_come[n] = max(0, left - len(data))
            return
        head = self.heads.get(n, b"") + data
        if b"\r\n\r\n" not in head:
            self.heads[n] = head
            return
        self.heads.pop(n, None)
        header, body = head.split(b"\r\n\r\n", 1)
        m = re.search(rb"(?im)^content-length:\s*(\d+)", header)
        self.to_come[n] = max(0, (int(m.group(1)) if m else 0) - len(body))

    def close(self) -> None:
        self.closed = True
        self.sock.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += 1
                n = self.conns
            threading.Thread(target=self._requests, args=(n, client, up), daemon=True).start()
            threading.Thread(target=self._replies, args=(n, up, client), daemon=True).start()

    def _requests(self, n: int, src: socket.socket, dst: socket.socket) -> None:
        held = 0.0
        pending = b""  # a held request, kept until it has come in whole (never passed on in part)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    if n not in self.calls:  # no call in flight on this connection: a new request
                        line = data.split(b"\r\n", 1)[0].decode("latin-1")
                        self.calls[n] = line
                        self.to_come.pop(n, None)
                        self.heads.pop(n, None)
                        self.requests += 1
                        held = next((t for prefix, t in self.hold.items() if line.startswith(prefix)), 0.0)
                    self._count_request_bytes(n, data)
                    whole = self.to_come.get(n) == 0
                if held:
                    pending += data
                    if not whole:
                        continue
                    time.sleep(held)
                    data, pending, held = pending, b"", 0.0
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._close(n, src, dst)

    def _replies(self, n: int, src: socket.socket, dst: socket.socket) -> None:
        head = b""
        remaining: Optional[int] = None
        chunked = False
        tail = b""
        try:
            while True:
                data = src.recv(1024)
                if not data:
                    break
                time.sleep(len(data) / self.rate)
                dst.sendall(data)
                body = b""
                if remaining is None and not chunked:
                    head += data
                    if b"\r\n\r\n" not in head:
                        continue
                    header, body = head.split(b"\r\n\r\n", 1)
                    head = b""
                    fields = header.decode("latin-1").lower()
                    chunked = "transfer-encoding: chunked" in fields
                    m = re.search(r"content-length:\s*(\d+)", fields)
                    remaining = int(m.group(1)) if m and not chunked else (0 if not chunked else None)
                else:
                    body = data
                done = False
                if chunked:
                    tail = (tail + body)[-7:]
                    done = tail.endswith(b"0\r\n\r\n") and (tail.endswith(b"\r\n0\r\n\r\n") or tail == b"0\r\n\r\n")
                else:
                    remaining = (remaining or 0) - len(body)
                    done = remaining <= 0
                if done:
                    with self.lock:
                        self.calls.pop(n, None)
                        self.to_come.pop(n, None)
                    remaining, chunked, tail = None, False, b""
        except OSError:
            pass
        finally:
            self._close(n, src, dst)

    def _close(self, n: int, a: socket.socket, b: socket.socket) -> None:
        with self.lock:
            self.calls.pop(n, None)
            self.to_come.pop(n, None)
            self.heads.pop(n, None)
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


# -- checks ------------------------------------------------------------------------------------


def read_jsonl(path: Any) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def check_state_on_disk(job_dir: Path) -> None:
    """After a kill: job.json parses, and every recorded download cursor covers whole lines."""
    state_path = job_dir / "job.json"
    if not state_path.exists():
        return
    state = json.loads(state_path.read_text(encoding="utf-8"))  # raises if torn
    assert state["version"] == 2
    for batch_id, entry in (state.get("fetch") or {}).items():
        for kind in ("output", "error"):
            rec = entry[kind]
            raw = job_dir / "results" / f"{batch_id}.{kind}.jsonl"
            recorded = int(rec["local_bytes"])
            if recorded == 0:
                continue
            data = raw.read_bytes()
            assert len(data) >= recorded, (raw, len(data), recorded)
            saved = data[:recorded]
            assert saved.endswith(b"\n")
            lines = [json.loads(line) for line in saved.splitlines() if line.strip()]
            assert len({ln["id"] for ln in lines}) <= int(rec["skip"]) <= len(lines)


# -- one trial ---------------------------------------------------------------------------------


class Trial:
    def __init__(self, number: int, seed: int, kind: str, base: Path, sb: Any):
        self.number = number
        self.rng = random.Random(f"{seed}-{number}")
        self.kind = kind
        self.dir = base / f"trial-{number:04d}"
        self.dir.mkdir(parents=True)
        self.sb = sb
        self.proxy = StageProxy(sb.port, PROXY_RATE)  # one per trial: its calls are this trial's
        self.env = dict(sb.env(), DOUBLEWORD_BASE_URL=self.proxy.base_url)
        self.kills: List[str] = []  # the stage of each kill
        self.killed: List[str] = []  # the script of each kill
        self.runs = 0
        self.retries = 0
        self.found = 0  # reruns that found an upload or a batch whose reply a kill had lost
        self.ids = [r["custom_id"] for r in chat_requests(REQUESTS, prefix=f"t{number}-")]
        (self.dir / "in.jsonl").write_bytes(jsonl_bytes(chat_requests(REQUESTS, prefix=f"t{number}-")))

    def command(self, script: str) -> List[str]:
        if script == "run_batch.py":
            args = [
                "in.jsonl",
                "--wait",
                "--max-requests",
                str(PER_CHUNK),
                "--interval",
                "0.2",
                "--timeout",
                "120",
                "--format",
                "simple",
            ]
        elif script == "submit.py":
            args = ["in.jsonl", "--max-requests", str(PER_CHUNK)]
        elif script == "retry_failed.py":
            args = ["--job", "in.dwjob"]
        else:
            args = ["--job", "in.dwjob", "--format", "simple"]
        return [sys.executable, str(SCRIPTS / script), *args]

    def launch(self, script: str, kill_after: Optional[float]) -> Optional[subprocess.CompletedProcess]:
        """Run ``script``; SIGKILL it after ``kill_after`` seconds if still running (None = let it end).
        Returns the finished process, or None when it was killed."""
        self.runs += 1
        calls_before = self.proxy.requests
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(self.command(script), cwd=self.dir, env=self.env, stdout=out, stderr=err)
            try:
                code = proc.wait(timeout=kill_after if kill_after is not None else 180)
            except subprocess.TimeoutExpired:
                if kill_after is None:
                    proc.kill()
                    raise
                calls = self.proxy.in_flight()
                started = self.proxy.requests > calls_before
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                self.kills.append(self.stage(calls, started))
                self.killed.append(script)
                code = None
            out.seek(0)
            err.seek(0)
            done = subprocess.CompletedProcess(proc.args, code, out.read().decode(), err.read().decode())
        self.found += len(re.findall(r"found the (file uploaded|batch created) by an earlier run", done.stderr))
        if code is None:
            check_state_on_disk(self.dir / "in.dwjob")
            return None
        return done

    @staticmethod
    def stage(calls: List[str], started: bool) -> str:
        if not calls:
            # no reply awaited: still starting (imports, validation, planning), or between calls
            # (writing job.json or results, merging, sleeping between checks)
            return "between calls" if started else "start"
        return "+".join(sorted({stage_of(c) for c in calls}))

    def kill_then_finish(self, script: str, schedule: List[float], ok: tuple = (0,)) -> subprocess.CompletedProcess:
        """Run ``script`` once per scheduled kill moment (killed then, unless it ended first),
        then again without a kill until it exits with a code in ``ok``."""
        for delay in schedule:
            done = self.launch(script, delay)
            if done is not None and done.returncode in ok:
                return done
            if done is not None:  # ended on its own before the kill: only "not finished yet" is fine
                assert done.returncode == 6, (script, done.returncode, done.stderr)
        for _ in range(300):
            done = self.launch(script, None)
            assert done is not None
            if done.returncode in ok:
                return done
            assert done.returncode == 6, (script, done.returncode, done.stderr)
            time.sleep(0.2)
        raise AssertionError(f"{script} never finished")

    def schedule(self, window: tuple, first: Optional[tuple] = None) -> List[float]:
        n = self.rng.randint(1, MAX_SCHEDULED_KILLS)
        out = [self.rng.uniform(*(first or window))]
        return out + [self.rng.uniform(*window) for _ in range(n - 1)]

    def play(self) -> Dict[str, Any]:
        try:
            if self.kind == "run":
                self.kill_then_finish("run_batch.py", self.schedule(RUN_KILL_WINDOW, RUN_FIRST_KILL_WINDOW))
            elif self.kind == "fetch":
                done = self.launch("submit.py", None)
                assert done is not None and done.returncode == 0, done and done.stderr
                self.kill_then_finish("fetch_results.py", self.schedule(FETCH_KILL_WINDOW))
            else:  # "retry": some requests fail in every round; kill retry_failed.py and run_batch.py
                done = self.launch("run_batch.py", None)
                assert done is not None and done.returncode in (0, 5), done and done.stderr
                while done.returncode == 5:
                    assert self.retries < MAX_RETRY_ROUNDS, "the retries never converged"
                    self.retries += 1
                    self.kill_then_finish("retry_failed.py", self.schedule(RETRY_KILL_WINDOW))
                    done = self.kill_then_finish("run_batch.py", self.schedule(RUN_KILL_WINDOW)[:1], ok=(0, 5))
            return self.verify()
        finally:
            self.proxy.close()

    def verify(self) -> Dict[str, Any]:
        final = self.launch("fetch_results.py", None)
        assert final is not None and final.returncode == 0, final and final.stderr
        doc = json.loads(final.stdout)
        rows = read_jsonl(doc["output"])
        got = [r["custom_id"] for r in rows]
        counts = collections.Counter(got)
        lost = [i for i in self.ids if i not in counts]
        duplicated = [i for i, n in counts.items() if n > 1]
        assert not lost and not duplicated, (lost, duplicated)
        assert got == self.ids and all(r["ok"] for r in rows)
        assert (doc["succeeded"], doc["failed"], doc["missing"]) == (REQUESTS, 0, 0)
        state = json.loads((self.dir / "in.dwjob" / "job.json").read_text(encoding="utf-8"))
        chunks = [c for r in state["rounds"] for c in r["chunks"]]
        batches = [
            b for b in list_all(self.sb, "batches") if (b.get("metadata") or {}).get("dwb_job") == state["job_id"]
        ]
        files = [
            f
            for f in list_all(self.sb, "files", purpose="batch")
            if f["filename"].startswith(f"dwb-{state['job_id'][:8]}-")
        ]
        assert sorted(b["id"] for b in batches) == sorted(c["batch_id"] for c in chunks), "extra batches"
        assert sorted(f["id"] for f in files) == sorted(c["file_id"] for c in chunks), "extra input files"
        # billed once: on the server, every request succeeded in exactly one batch of the job
        successes = collections.Counter()
        for b in batches:
            for line in self.sb.content(b["output_file_id"]).lines():
                if (line.get("response") or {}).get("status_code", 500) < 400:
                    successes[line["custom_id"]] += 1
        paid_twice = sorted(i for i, n in successes.items() if n > 1)
        assert not paid_twice and set(successes) == set(self.ids), paid_twice
        return {
            "trial": self.number,
            "kind": self.kind,
            "kills": self.kills,
            "killed": self.killed,
            "runs": self.runs,
            "retry_rounds": self.retries,
            "found_after_lost_reply": self.found,
            "lost": len(lost),
            "duplicated": len(duplicated),
            "succeeded_twice": len(paid_twice),
            "extra_batches": len(batches) - len(chunks),
            "extra_files": len(files) - len(chunks),
        }


# -- a kill while the server is still receiving the request --------------------------------


def kill_when(proc: subprocess.Popen, pred: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert proc.poll() is None and time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_killed_while_the_server_still_reads_the_upload_then_rerun_at_once_uploads_it_once(sandbox_factory, tmp_path):
    """The upload's bytes are on their way when the client dies; the server stores the file a
    moment later. An immediate rerun must wait for it rather than upload the chunk again."""
    sb = sandbox_factory("--faults", json.dumps({"slow_upload_read": {"after_bytes": 300, "pause": 1.5}}))
    proxy = StageProxy(sb.port, 10_000_000)  # (to see when the upload has left the client whole)
    try:
        env = dict(sb.env(), DOUBLEWORD_BASE_URL=proxy.base_url)
        (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(chat_requests(6)))
        cmd = [sys.executable, str(SCRIPTS / "submit.py"), "in.jsonl"]
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # every byte of the upload has been sent, and the server pauses while it reads them
        kill_when(proc, lambda: proxy.received_whole("POST /v1/files ") and sb.stats()["uploads_received"] >= 1)
        rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stderr
        # the rerun waited for the upload on its way (which has arrived, then) and sent none of its own
        assert "found the file uploaded by an earlier run" in rerun.stderr
        assert sb.stats()["files"] == 1 and sb.stats()["uploads_received"] == 1
        assert sb.stats()["batches"] == 1
    finally:
        proxy.close()


def test_killed_while_a_proxy_still_holds_the_create_then_rerun_at_once_makes_one_batch(sandbox_factory, tmp_path):
    """POST /batches is held by a buffering proxy when the client dies, and reaches the server a
    moment later. An immediate rerun must not create a second batch (a second bill)."""
    sb = sandbox_factory()
    proxy = StageProxy(sb.port, 10_000_000, hold={"POST /v1/batches ": 1.5})
    try:
        env = dict(sb.env(), DOUBLEWORD_BASE_URL=proxy.base_url)
        (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(chat_requests(6)))
        cmd = [sys.executable, str(SCRIPTS / "submit.py"), "in.jsonl"]
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # the create has come in whole (head and body) and is held by the proxy
        kill_when(proc, lambda: proxy.received_whole("POST /v1/batches "))
        rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stderr
        # the rerun waited for the held create (which has reached the server, then) ...
        assert "found the batch created by an earlier run" in rerun.stderr
        # ... and sent none of its own
        assert sb.stats()["requests"]["POST /v1/batches"] == 1, rerun.stderr
        assert sb.stats()["batches"] == 1
    finally:
        proxy.close()


# -- the runner --------------------------------------------------------------------------------


def run_trials(
    sandbox_factory: Any, tmp_path: Path, trials: int, seed: int, parallel: int, part: int = 0, parts: int = 1
) -> Dict[str, Any]:
    """Play trials ``part``, ``part + parts``, ... of the ``trials`` the seed plans (each trial
    has its own random stream, so a trial is the same whichever part plays it)."""
    sb = sandbox_factory(*SANDBOX_ARGS, "--faults", json.dumps(FAULTS))
    failing = sandbox_factory(*SANDBOX_ARGS, "--faults", json.dumps(dict(FAULTS, fail_rate=RETRY_FAIL_RATE)))
    rng = random.Random(seed)
    kinds = [rng.choice(["run", "run", "fetch", "retry"]) for _ in range(trials)]
    numbers = list(range(part, trials, parts))
    started = time.monotonic()

    def one(number: int) -> Dict[str, Any]:
        return Trial(number, seed, kinds[number], tmp_path, failing if kinds[number] == "retry" else sb).play()

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        results = list(pool.map(one, numbers))
    summary = summarize(results, seed, parallel)
    summary["seconds"] = round(time.monotonic() - started, 1)
    label = f"crash trials (part {part + 1} of {parts})" if parts > 1 else "crash trials"
    print(f"\n{label}: " + json.dumps(summary))
    if os.environ.get("CRASH_REPORT") and parts == 1:
        Path(os.environ["CRASH_REPORT"]).write_text(json.dumps({"summary": summary, "trials": results}, indent=2))
    summary["results"] = results
    return summary


def summarize(results: List[Dict[str, Any]], seed: int, parallel: int) -> Dict[str, Any]:
    stages = collections.Counter(k for r in results for k in r["kills"])
    return {
        "trials": len(results),
        "seed": seed,
        "parallel": parallel,
        "kinds": dict(collections.Counter(r["kind"] for r in results)),
        "kills": sum(len(r["kills"]) for r in results),
        "kills_by_stage": dict(sorted(stages.items())),
        "kills_by_script": dict(sorted(collections.Counter(k for r in results for k in r["killed"]).items())),
        "runs": sum(r["runs"] for r in results),
        "retry_rounds": sum(r["retry_rounds"] for r in results),
        "reruns_that_found_a_lost_reply": sum(r["found_after_lost_reply"] for r in results),
        "lost": sum(r["lost"] for r in results),
        "duplicated": sum(r["duplicated"] for r in results),
        "succeeded_twice": sum(r["succeeded_twice"] for r in results),
        "extra_batches": sum(r["extra_batches"] for r in results),
        "extra_files": sum(r["extra_files"] for r in results),
    }


API_STAGES = {"upload", "estimate", "create", "poll", "download", "lookup"}


def stages_hit(summary: Dict[str, Any]) -> set:
    return {part for stage in summary["kills_by_stage"] for part in stage.split("+")}


def assert_nothing_lost_duplicated_or_billed_twice(summary: Dict[str, Any]) -> None:
    assert (
        summary["lost"],
        summary["duplicated"],
        summary["succeeded_twice"],
        summary["extra_batches"],
        summary["extra_files"],
    ) == (0, 0, 0, 0, 0), summary


PARTS = 4  # the default run is played in four parts, so that parallel test workers share it


def combined_when_complete(tmp_path_factory: Any, part: int, summary: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Record this part's trials where every part of this test session can see them; once all
    parts are recorded, the summary of all of them (computed by the part that finished last)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this session
    shared = root / "crash-trial-parts"
    shared.mkdir(exist_ok=True)
    tmp = shared / f".part-{part}.tmp"
    tmp.write_text(json.dumps(summary["results"]), encoding="utf-8")
    os.replace(tmp, shared / f"part-{part}.json")
    done = sorted(shared.glob("part-*.json"))
    if len(done) < PARTS:
        return None
    results = [r for f in done for r in json.loads(f.read_text(encoding="utf-8"))]
    combined = summarize(sorted(results, key=lambda r: r["trial"]), summary["seed"], summary["parallel"])
    print("\ncrash trials (all parts): " + json.dumps(combined))
    if os.environ.get("CRASH_REPORT"):
        Path(os.environ["CRASH_REPORT"]).write_text(json.dumps({"summary": combined, "trials": results}, indent=2))
    return combined


@pytest.mark.parametrize("part", range(PARTS))
def test_crash_trials(sandbox_factory, tmp_path, tmp_path_factory, part):
    trials = env_int("CRASH_TRIALS", DEFAULT_TRIALS)
    summary = run_trials(
        sandbox_factory,
        tmp_path,
        trials,
        env_int("CRASH_SEED", DEFAULT_SEED),
        env_int("CRASH_PARALLEL", 3),
        part=part,
        parts=PARTS,
    )
    assert_nothing_lost_duplicated_or_billed_twice(summary)
    combined = combined_when_complete(tmp_path_factory, part, summary)
    if combined is None:
        return  # the part that finishes last checks the run as a whole
    assert_nothing_lost_duplicated_or_billed_twice(combined)
    assert combined["trials"] == trials
    assert combined["kills"] >= trials  # at least as many kills as trials
    if trials >= 20:  # kills landed while API calls were in flight, in several stages
        assert len(stages_hit(combined) & API_STAGES) >= 3, combined["kills_by_stage"]


@pytest.mark.stress
def test_crash_trials_stress(sandbox_factory, tmp_path, request):
    if "stress" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("long: run with `make stress` (pytest -m stress)")
    trials = env_int("CRASH_TRIALS", STRESS_TRIALS)
    summary = run_trials(
        sandbox_factory, tmp_path, trials, env_int("CRASH_SEED", DEFAULT_SEED), env_int("CRASH_PARALLEL", 3)
    )
    assert_nothing_lost_duplicated_or_billed_twice(summary)
    assert {"upload", "create", "poll", "download"} <= stages_hit(summary), summary["kills_by_stage"]
    assert summary["reruns_that_found_a_lost_reply"] > 0  # kills after the server acted were recovered
