"""Crash trials: ``kill -9`` of our own process at random moments never loses, duplicates or
double-bills anything.

Each trial runs a small job against a slowed-down sandbox and kills the script with SIGKILL at
moments chosen by ``random.Random(seed)``, then runs the same command again, until the job is
done:

- "run" trials kill ``run_batch.py --wait`` (upload, cost estimate, create, polling, download,
  merge) and rerun it;
- "fetch" trials submit with ``submit.py`` and kill ``fetch_results.py`` while the batches run
  (partial downloads) and rerun it.

The sandbox is slowed so that kills land in every stage: uploads pause mid-body
(``slow_upload_read``), replies to /v1/files and /v1/batches wait after the server acted
(``extra_latency``, so a kill there loses a reply to a request that took effect), requests
take ``--latency`` to run, and a proxy in front of the sandbox slows every reply byte stream,
so that downloads are killed mid-stream. The proxy (one per trial) also knows which API call is
in flight at each kill, which is how kills are counted by stage.

After every kill ``job.json`` must parse and every download cursor must point at complete,
fsynced lines. At the end of every trial: ``fetch_results.py`` exits 0, every ``custom_id`` is
in the merged results exactly once and in input order, the server holds exactly one batch per
chunk of ``job.json`` and one input file per chunk.

Environment (read only here): CRASH_TRIALS (default 20; ``make stress``: 200), CRASH_SEED
(default 6), CRASH_PARALLEL (trials run at once, default 3), CRASH_REPORT (write the summary
as JSON to this path). The summary is printed (``pytest -s``).
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
from sandbox_helper import SCRIPTS, chat_requests, jsonl_bytes

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

    def __init__(self, upstream_port: int, rate: float):
        self.upstream_port = upstream_port
        self.rate = rate
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.calls: Dict[int, str] = {}  # connection number -> request line of the call in flight
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
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    if n not in self.calls:  # no call in flight on this connection: a new request
                        self.calls[n] = data.split(b"\r\n", 1)[0].decode("latin-1")
                        self.requests += 1
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
                    remaining, chunked, tail = None, False, b""
        except OSError:
            pass
        finally:
            self._close(n, src, dst)

    def _close(self, n: int, a: socket.socket, b: socket.socket) -> None:
        with self.lock:
            self.calls.pop(n, None)
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
    assert state["format"] == 1
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


def list_all(sb: Any, path: str, **params: Any) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    after = None
    while True:
        q = dict(params, limit=100)
        if after:
            q["after"] = after
        page = sb.get_json(path, params=q)
        out += page["data"]
        if not page.get("has_more") or not page["data"]:
            return out
        after = page.get("last_id") or page["data"][-1]["id"]


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
        self.kills: List[str] = []
        self.runs = 0
        self.found = 0  # reruns that found an upload or a batch whose reply a kill had lost
        self.ids = [r["custom_id"] for r in chat_requests(REQUESTS, prefix=f"t{number}-")]
        (self.dir / "in.jsonl").write_bytes(jsonl_bytes(chat_requests(REQUESTS, prefix=f"t{number}-")))

    def command(self, script: str) -> List[str]:
        if script == "run_batch.py":
            args = ["in.jsonl", "--wait", "--max-requests", str(PER_CHUNK), "--interval", "0.2",
                    "--timeout", "120", "--format", "simple"]
        elif script == "submit.py":
            args = ["in.jsonl", "--max-requests", str(PER_CHUNK)]
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

    def play(self) -> Dict[str, Any]:
        schedule_len = self.rng.randint(1, MAX_SCHEDULED_KILLS)
        if self.kind == "run":
            schedule = [self.rng.uniform(*RUN_FIRST_KILL_WINDOW)]
            schedule += [self.rng.uniform(*RUN_KILL_WINDOW) for _ in range(schedule_len - 1)]
            script = "run_batch.py"
        else:
            done = self.launch("submit.py", None)
            assert done is not None and done.returncode == 0, done and done.stderr
            schedule = [self.rng.uniform(*FETCH_KILL_WINDOW) for _ in range(schedule_len)]
            script = "fetch_results.py"
        for delay in schedule:
            done = self.launch(script, delay)
            if done is not None and done.returncode == 0:
                break
            if done is not None:  # ended on its own before the kill: only "not finished yet" is fine
                assert done.returncode == 6 and script == "fetch_results.py", done.stderr
        for _ in range(300):  # then the same command until the job is done
            done = self.launch(script, None)
            assert done is not None
            if done.returncode == 0:
                break
            assert done.returncode == 6, done.stderr
            time.sleep(0.2)
        assert done.returncode == 0, done.stderr
        try:
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
        batches = [b for b in list_all(self.sb, "batches") if (b.get("metadata") or {}).get("dwb_job") == state["job_id"]]
        files = [f for f in list_all(self.sb, "files", purpose="batch")
                 if f["filename"].startswith(f"dwb-{state['job_id'][:8]}-")]
        assert sorted(b["id"] for b in batches) == sorted(c["batch_id"] for c in chunks), "extra batches"
        assert sorted(f["id"] for f in files) == sorted(c["file_id"] for c in chunks), "extra input files"
        return {"trial": self.number, "kind": self.kind, "kills": self.kills, "runs": self.runs,
                "found_after_lost_reply": self.found, "lost": len(lost), "duplicated": len(duplicated),
                "extra_batches": len(batches) - len(chunks), "extra_files": len(files) - len(chunks)}


# -- the runner --------------------------------------------------------------------------------


def run_trials(sandbox_factory: Any, tmp_path: Path, trials: int, seed: int, parallel: int) -> Dict[str, Any]:
    sb = sandbox_factory(*SANDBOX_ARGS, "--faults", json.dumps(FAULTS))
    rng = random.Random(seed)
    kinds = [rng.choice(["run", "run", "fetch"]) for _ in range(trials)]
    started = time.monotonic()

    def one(number: int) -> Dict[str, Any]:
        return Trial(number, seed, kinds[number], tmp_path, sb).play()

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        results = list(pool.map(one, range(trials)))
    stages = collections.Counter(k for r in results for k in r["kills"])
    summary = {
        "trials": trials, "seed": seed, "parallel": parallel,
        "kinds": dict(collections.Counter(r["kind"] for r in results)),
        "kills": sum(len(r["kills"]) for r in results),
        "kills_by_stage": dict(sorted(stages.items())),
        "runs": sum(r["runs"] for r in results),
        "reruns_that_found_a_lost_reply": sum(r["found_after_lost_reply"] for r in results),
        "lost": sum(r["lost"] for r in results),
        "duplicated": sum(r["duplicated"] for r in results),
        "extra_batches": sum(r["extra_batches"] for r in results),
        "extra_files": sum(r["extra_files"] for r in results),
        "seconds": round(time.monotonic() - started, 1),
    }
    print("\ncrash trials: " + json.dumps(summary))
    if os.environ.get("CRASH_REPORT"):
        Path(os.environ["CRASH_REPORT"]).write_text(json.dumps({"summary": summary, "trials": results}, indent=2))
    return summary


API_STAGES = {"upload", "estimate", "create", "poll", "download", "lookup"}


def stages_hit(summary: Dict[str, Any]) -> set:
    return {part for stage in summary["kills_by_stage"] for part in stage.split("+")}


def assert_nothing_lost_duplicated_or_billed_twice(summary: Dict[str, Any]) -> None:
    assert (summary["lost"], summary["duplicated"], summary["extra_batches"], summary["extra_files"]) == \
        (0, 0, 0, 0), summary


def test_crash_trials(sandbox_factory, tmp_path):
    trials = env_int("CRASH_TRIALS", DEFAULT_TRIALS)
    summary = run_trials(sandbox_factory, tmp_path, trials, env_int("CRASH_SEED", DEFAULT_SEED),
                         env_int("CRASH_PARALLEL", 3))
    assert_nothing_lost_duplicated_or_billed_twice(summary)
    assert summary["kills"] >= trials  # at least as many kills as trials
    if trials >= 20:  # kills landed while API calls were in flight, in several stages
        assert len(stages_hit(summary) & API_STAGES) >= 3, summary["kills_by_stage"]


@pytest.mark.stress
def test_crash_trials_stress(sandbox_factory, tmp_path, request):
    if "stress" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("long: run with `make stress` (pytest -m stress)")
    trials = env_int("CRASH_TRIALS", STRESS_TRIALS)
    summary = run_trials(sandbox_factory, tmp_path, trials, env_int("CRASH_SEED", DEFAULT_SEED),
                         env_int("CRASH_PARALLEL", 3))
    assert_nothing_lost_duplicated_or_billed_twice(summary)
    assert {"upload", "create", "poll", "download"} <= stages_hit(summary), summary["kills_by_stage"]
    assert summary["reruns_that_found_a_lost_reply"] > 0  # kills after the server acted were recovered
