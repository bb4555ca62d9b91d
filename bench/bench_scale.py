#!/usr/bin/env python3
"""`make bench` (scale): today's client on a million-request job, on a 200-batch job's status
checks and on uploads over throughput-capped connections (the ten-million job itself is
measured by bench_ten_million.py).

Every row runs the real scripts (and curl) as child processes against a sandbox started here
(built-in model, no latency unless said). Inputs are generated under bench/data/ (git-ignored)
and reused; job directories live in a temporary directory. The tables use run_all.py's
measure() and table(); the sections are printed and, on a full run, written to
bench/results.md (replacing an earlier scale section).

  python3 bench/bench_scale.py              # everything (about 10 minutes on 2 cores)
  python3 bench/bench_scale.py --quick      # 50k requests, 20 batches, 4 x 5 MB uploads
  python3 bench/bench_scale.py --only poll  # one part (printed, not written)
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from run_all import DATA, MODEL, ROOT, SCRIPTS, SandboxProcess, api, chat_line, measure, table, write_section

PROXY = os.path.join(ROOT, "bench", "throttle_proxy.py")
LAUNCHER = os.path.join(ROOT, "bench", "peak_rss.py")
SECTION = "## Scale: today's client at a million requests"  # from this heading to the next is ours
CHUNK_REQUESTS = 50_000  # the server's (and submit.py's) requests per file
MB = 1e6
NOOP_TARGET_S = 0.5  # a fetch with nothing new


def script(name: str) -> str:
    return os.path.join(SCRIPTS, name)


# -- data -----------------------------------------------------------------------------------


def make_requests(path: str, count: int, pad: int, first: int = 1, model: str = MODEL) -> str:
    """Write run_all.chat_line(i, pad, model) for i = first .. first+count-1, fast (about a million
    lines a second): each line is the template of one line with its two numbers put in, not
    json.dumps'd."""
    if os.path.exists(path):
        return path
    head, rest = chat_line(0, pad, model).split('"req-0000000"', 1)
    middle, tail = rest.split("Question 0:", 1)

    def line(i: int) -> str:
        return f'{head}"req-{i:07d}"{middle}Question {i}:{tail}\n'

    assert line(4321) == chat_line(4321, pad, model) + "\n"
    # Blocks of about 4 MB keep this process small.
    block = max(1, 4_000_000 // len(line(first)))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for start in range(first, first + count, block):
            fh.write("".join(line(i) for i in range(start, min(start + block, first + count))))
    os.replace(tmp, path)
    return path


# -- measurement ----------------------------------------------------------------------------


@dataclass
class Run:
    """One child process: wall time, peak RSS, CPU time, bytes written to disk, exit code,
    stdout, and its stderr lines with the seconds (since its start) at which each arrived."""

    wall: float = 0.0
    rss_mb: float = 0.0
    cpu_s: float = 0.0
    written_mb: float = 0.0
    rc: int = -1
    stdout: str = ""
    lines: List[Tuple[float, str]] = field(default_factory=list)

    def doc(self) -> Dict[str, Any]:
        try:
            doc = json.loads(self.stdout)
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def times(self, pattern: str) -> List[float]:
        rx = re.compile(pattern)
        return [t for t, text in self.lines if rx.search(text)]


class Usage:
    """A command run through bench/peak_rss.py, which forks it from a small interpreter and writes
    its own peak RSS: spawned from this process, a child's ru_maxrss would start at this process's
    peak (the kernel carries it across exec) and small clients would read as big as the bench."""

    def __init__(self, cmd: List[str]):
        fd, self.path = tempfile.mkstemp(prefix="dwb-rss-")
        os.close(fd)
        self.cmd = [sys.executable, "-S", "-I", LAUNCHER, self.path, *cmd]

    def read(self) -> Tuple[float, float, float]:
        """(peak RSS MB, CPU seconds, MB written to disk) of the command; NaNs if it never ran."""
        try:
            with open(self.path, encoding="ascii") as fh:
                rss_kb, cpu, blocks = fh.read().split()
            return int(rss_kb) / 1024.0, float(cpu), int(blocks) * 512 / MB
        except (OSError, ValueError):
            return float("nan"), float("nan"), float("nan")
        finally:
            os.remove(self.path)


def measure_own(cmd: List[str], env: Optional[Dict[str, str]] = None) -> Tuple[float, float, int, str]:
    """run_all.measure() with the command's own peak RSS: (wall s, peak RSS MB, exit code, stdout)."""
    usage = Usage(cmd)
    wall, _, rc, out = measure(usage.cmd, env)
    return wall, usage.read()[0], rc, out


def run_stamped(cmd: List[str], env: Dict[str, str], on_line: Optional[Callable[[float, str], None]] = None) -> Run:
    """measure_own() with stderr read line by line as it comes: each line is stamped (and handed to
    ``on_line`` at once), which splits a run into phases by what the script says it is doing."""
    run = Run()
    out = tempfile.TemporaryFile()
    usage = Usage(cmd)
    t0 = time.perf_counter()
    proc = subprocess.Popen(usage.cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.PIPE)

    def read() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            t = time.perf_counter() - t0
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            run.lines.append((t, text))
            if on_line is not None:
                on_line(t, text)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc.wait()
    run.wall = time.perf_counter() - t0
    reader.join(30)
    run.rc = proc.returncode
    proc.stderr.close()  # type: ignore[union-attr]
    run.rss_mb, run.cpu_s, run.written_mb = usage.read()
    out.seek(0)
    run.stdout = out.read().decode("utf-8", "replace")
    out.close()
    return run


def counters(sb: SandboxProcess) -> Dict[str, int]:
    """The sandbox's API calls so far, by method and route ({"GET /v1/batches/{id}": 200, ...})."""
    return dict(api(sb, "GET", "/_sandbox/stats")["requests"])


def diff(after: Dict[str, int], before: Dict[str, int]) -> Dict[str, int]:
    keys = set(after) | set(before)
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys if after.get(k, 0) != before.get(k, 0)}


def calls_text(calls: Dict[str, int]) -> str:
    """'400 GET /v1/batches/{id} + 3 GET /v1/files/{id}/content' (most frequent first)."""
    parts = [f"{n} {route}" for route, n in sorted(calls.items(), key=lambda kv: (-kv[1], kv[0]))]
    return " + ".join(parts) if parts else "none"


def median_calls(rounds: Sequence[Dict[str, int]]) -> Dict[str, int]:
    """Per route, the median over rounds (a typical round)."""
    routes = {k for r in rounds for k in r}
    return {k: int(statistics.median(r.get(k, 0) for r in rounds)) for k in routes} if rounds else {}


def sandbox_usage(sb: SandboxProcess) -> Tuple[float, float]:
    """(CPU seconds so far, peak RSS MB) of the sandbox process, from /proc (Linux)."""
    pid = sb.proc.pid  # type: ignore[union-attr]
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
        return cpu, hwm / 1024.0
    except (OSError, ValueError, StopIteration):
        return float("nan"), float("nan")


PROGRESS = re.compile(r"^(\w+): (\d+)/(\d+) done")  # the line poll.py and run_batch.py print per check


class CheckWatcher:
    """Snapshots the sandbox's counters whenever the client prints its progress line (once per
    status check): consecutive snapshots bracket one check and what follows it (run_batch.py's
    partial downloads) up to the next check. The snapshot is taken a few ms after the line, so a
    call or two can land on the neighbouring round; medians over rounds absorb that."""

    def __init__(self, sb: SandboxProcess):
        self.sb = sb
        self.marks: List[Tuple[float, str, Dict[str, int]]] = []  # (seconds since start, status, counters)
        self.cpu: List[float] = []  # the sandbox's CPU seconds at each mark
        self.done: List[int] = []  # requests done at each mark

    def __call__(self, t: float, text: str) -> None:
        m = PROGRESS.match(text)
        if m:
            self.marks.append((t, m.group(1), counters(self.sb)))
            self.cpu.append(sandbox_usage(self.sb)[0])
            self.done.append(int(m.group(2)))

    def rounds(self, upto: Optional[int] = None) -> List[Dict[str, int]]:
        marks = self.marks[: upto if upto is None else upto + 1]
        return [diff(b[2], a[2]) for a, b in zip(marks, marks[1:])]


def env_for(base_url: str, api_key: str) -> Dict[str, str]:
    """The scripts' environment: this sandbox, and bytecode cached as when a user runs them."""
    return dict(os.environ, DOUBLEWORD_API_KEY=api_key, DOUBLEWORD_BASE_URL=base_url, PYTHONDONTWRITEBYTECODE="")


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def file_kb(path: str) -> float:
    return os.path.getsize(path) / 1e3 if os.path.exists(path) else float("nan")


# -- 1. a million-request job end to end ----------------------------------------------------


def e2e(
    sb: SandboxProcess, path: str, requests: int, workdir: str, name: str, max_requests: Optional[int], interval: float
) -> Dict[str, Any]:
    """run_batch.py INPUT --wait --format simple, split into phases by its stderr, with the API
    calls of each status check; then a second fetch and a poll of the finished job."""
    env = env_for(sb.base_url, sb.api_key)
    job = os.path.join(workdir, f"{name}.dwjob")
    out = os.path.join(workdir, f"{name}.results.jsonl")
    cmd = [
        sys.executable,
        script("run_batch.py"),
        path,
        "--job",
        job,
        "--wait",
        "--format",
        "simple",
        "-o",
        out,
        "--interval",
        str(interval),
        "--timeout",
        "1500",
    ]
    if max_requests:
        cmd += ["--max-requests", str(max_requests)]
    watcher = CheckWatcher(sb)
    cpu0, _ = sandbox_usage(sb)
    before = counters(sb)
    run = run_stamped(cmd, env, watcher)
    total_calls = diff(counters(sb), before)
    cpu1, sb_rss = sandbox_usage(sb)
    doc = run.doc()
    chunks = doc.get("submitted", {}).get("chunks") or len(doc.get("batches") or []) + (doc.get("batches_omitted") or 0)

    # Phases: "new job at" ends validating and hashing the input; then the uploads, from the
    # first "uploading" to the last chunk's "uploaded" (3 at a time; the chunks between the
    # first few and the last are not listed one by one); then the cost estimates and batch
    # creations, up to the last "created batch"; the first progress line that is not
    # in_progress ends the waiting; the rest is the final fetch and merge.
    planned = (run.times(r"^new job at ") or [float("nan")])[0]
    starts, ends = run.times(r"^chunk \d+/\d+: uploading lines"), run.times(r"^chunk \d+/\d+: uploaded as file")
    uploading = ends[-1] - starts[0] if starts and ends else float("nan")
    submitted = (run.times(r"^chunk \d+/\d+: created batch ") or [float("nan")])[-1]
    creating = submitted - (ends[-1] if ends else float("nan"))
    finished = [i for i, (_, status, _) in enumerate(watcher.marks) if status not in ("in_progress", "not_submitted")]
    last = finished[0] if finished else len(watcher.marks) - 1
    waited = watcher.marks[last][0] if watcher.marks else float("nan")
    rounds = watcher.rounds(upto=last)
    wait_cpu = watcher.cpu[last] - watcher.cpu[0] if len(watcher.cpu) > 1 else float("nan")
    wait_span = waited - watcher.marks[0][0] if watcher.marks else float("nan")
    wait_done = watcher.done[last] - watcher.done[0] if len(watcher.done) > 1 else 0

    # A second fetch of the finished, fully downloaded job: what a fetch round costs at rest.
    before = counters(sb)
    # Nothing new: three fetches that merge nothing (the job's last merge proved current), then
    # one after the results file was touched (same bytes, no longer provably the merge's): a real
    # merge, whose report must be the no-op's, key for key.
    noops = []
    for _ in range(3):
        before = counters(sb)
        noops.append(
            (*measure_own([sys.executable, script("fetch_results.py"), "--job", job], env), diff(counters(sb), before))
        )
    fetch_wall = statistics.median(w for w, *_ in noops)
    fetch_rss = max(r for _, r, *_ in noops)
    fetch_rc = max(c for _, _, c, *_ in noops)
    fetch_calls = noops[-1][4]
    os.utime(out)
    before = counters(sb)
    merge_wall, merge_rss, merge_rc, merged_text = measure_own(
        [sys.executable, script("fetch_results.py"), "--job", job], env
    )
    merge_calls = diff(counters(sb), before)
    same = all(text == merged_text for _, _, _, text, _ in noops)
    before = counters(sb)
    poll_wall, poll_rss, poll_rc, _ = measure_own([sys.executable, script("poll.py"), "--job", job], env)
    poll_calls = diff(counters(sb), before)
    # the other scripts that read every request: the validation of the input, and the dry run of
    # the rerun the report asks for (its `next`)
    val_wall, val_rss, val_rc, _ = measure_own([sys.executable, script("validate_batch_file.py"), path], env)
    nxt = shlex.split(doc.get("next") or "")
    at = [i for i, a in enumerate(nxt) if a.endswith("retry_failed.py")]
    rerun = nxt[at[0] + 1 :] if at else ["--job", job]
    re_wall, re_rss, re_rc, _ = measure_own([sys.executable, script("retry_failed.py"), *rerun, "--dry-run"], env)
    return {
        "name": name,
        "requests": requests,
        "chunks": chunks,
        "input_bytes": os.path.getsize(path),
        "run": run,
        # every request answered (the answers are cut at max_tokens 64: exit 5, bad answers, all billed)
        "ok": run.rc in (0, 5) and doc.get("requests") == requests and not doc.get("failed") and not doc.get("missing"),
        "validate_s": planned,
        "upload_s": uploading,
        "create_s": creating,
        "submit_s": submitted,
        "wait_s": waited - submitted,
        "wait_sandbox_share": wait_cpu / wait_span if wait_span > 0 else float("nan"),
        "wait_rate": wait_done / wait_span if wait_span > 0 else float("nan"),
        "fetch_s": run.wall - waited,
        "checks": last + 1 if watcher.marks else 0,
        "rounds": rounds,
        "round_median": median_calls(rounds),
        "total_calls": total_calls,
        "job_json_kb": file_kb(os.path.join(job, "job.json")),
        "output_mb": os.path.getsize(out) / MB,
        "sandbox_cpu_s": cpu1 - cpu0,
        "sandbox_rss_mb": sb_rss,
        "fetch_again": {
            "wall": fetch_wall,
            "runs": [w for w, *_ in noops],
            "rss": fetch_rss,
            "ok": fetch_rc in (0, 5) and same and fetch_wall < NOOP_TARGET_S,
            "calls": fetch_calls,
            "same": same,
        },
        "merge_again": {"wall": merge_wall, "rss": merge_rss, "ok": merge_rc in (0, 5), "calls": merge_calls},
        "poll_done": {"wall": poll_wall, "rss": poll_rss, "ok": poll_rc in (0, 5), "calls": poll_calls},
        "validate": {"wall": val_wall, "rss": val_rss, "ok": val_rc == 0},
        "rerun": {"wall": re_wall, "rss": re_rss, "ok": re_rc == 0, "args": " ".join(rerun[2:])},
    }


def bench_e2e(sizes: Dict[str, Any], workdir: str) -> Tuple[List[dict], List[str], Dict[str, Any]]:
    n, small = sizes["e2e"], sizes["e2e_small"]
    per_chunk = sizes["e2e_chunk"]
    big_path = make_requests(os.path.join(DATA, f"scale-{n}.jsonl"), n, 1)
    small_path = make_requests(os.path.join(DATA, f"scale-{small}.jsonl"), small, 1)
    # The built-in model with no latency and its default 8 workers: 2 to 16 run about equally fast
    # here (one interpreter and one SQLite writer bound the sandbox, not the worker count).
    args = ["--concurrency", str(sizes["concurrency"])]
    results = {}
    for name, path, count in (("small", small_path, small), ("million", big_path, n)):
        print(f"end to end: {os.path.basename(path)} ...", file=sys.stderr, flush=True)
        with SandboxProcess(data_dir=os.path.join(workdir, f"sandbox-{name}"), extra_args=args) as sb:
            results[name] = e2e(
                sb, path, count, workdir, name, per_chunk if per_chunk != CHUNK_REQUESTS else None, sizes["interval"]
            )
    rows, notes = [], []
    for key in ("small", "million"):
        r = results[key]
        run: Run = r["run"]
        bench = f"{r['requests']}-request job end to end ({r['chunks']} chunks)"
        rows.append(
            {
                "bench": bench,
                "client": "run_batch.py --wait --format simple",
                "seconds": run.wall,
                "peak_rss_mb": run.rss_mb,
                "throughput": f"{r['requests'] / run.wall:.0f} req/s; submit {r['submit_s']:.1f} s "
                f"(validate+hash {r['validate_s']:.1f}, upload {r['upload_s']:.1f}), "
                f"wait {r['wait_s']:.1f} s, fetch {r['fetch_s']:.1f} s",
                "ok": r["ok"],
            }
        )
        rows.append(
            {
                "bench": bench,
                "client": "sandbox_server.py (built-in model)",
                "seconds": run.wall,
                "peak_rss_mb": r["sandbox_rss_mb"],
                "throughput": f"CPU {r['sandbox_cpu_s']:.0f} s ({100 * r['sandbox_cpu_s'] / run.wall:.0f}% "
                "of one core)",
                "ok": True,
            }
        )
    m = results["million"]
    for key in ("small", "million"):
        r = results[key]
        label = f"fetch a finished {r['requests']}-request job again ({r['chunks']} batches, all downloaded)"
        rows.append(
            {
                "bench": label,
                "client": "fetch_results.py --job: nothing new",
                "seconds": r["fetch_again"]["wall"],
                "peak_rss_mb": r["fetch_again"]["rss"],
                "throughput": f"{sum(r['fetch_again']['calls'].values())} API calls; runs "
                f"{[round(w, 2) for w in r['fetch_again']['runs']]} s (target < {NOOP_TARGET_S} s); report "
                + ("identical to the merge's" if r["fetch_again"]["same"] else "DIFFERS from the merge's"),
                "ok": r["fetch_again"]["ok"],
            }
        )
        rows.append(
            {
                "bench": label,
                "client": "fetch_results.py --job: results file touched, merged again",
                "seconds": r["merge_again"]["wall"],
                "peak_rss_mb": r["merge_again"]["rss"],
                "throughput": f"{sum(r['merge_again']['calls'].values())} API calls",
                "ok": r["merge_again"]["ok"],
            }
        )
    rows.append(
        {
            "bench": f"poll a finished {m['chunks']}-batch job",
            "client": "poll.py --job",
            "seconds": m["poll_done"]["wall"],
            "peak_rss_mb": m["poll_done"]["rss"],
            "throughput": f"{sum(m['poll_done']['calls'].values())} API calls",
            "ok": m["poll_done"]["ok"],
        }
    )
    for key in ("small", "million"):
        r = results[key]
        rows.append(
            {
                "bench": f"validate the {r['requests']}-request input",
                "client": "validate_batch_file.py",
                "seconds": r["validate"]["wall"],
                "peak_rss_mb": r["validate"]["rss"],
                "throughput": f"{r['requests'] / r['validate']['wall'] / 1e3:.0f}k lines/s (this process's RSS)",
                "ok": r["validate"]["ok"],
            }
        )
        rows.append(
            {
                "bench": f"dry run of the rerun the finished {r['requests']}-request job asks for",
                "client": f"retry_failed.py --dry-run {r['rerun']['args']}".rstrip(),
                "seconds": r["rerun"]["wall"],
                "peak_rss_mb": r["rerun"]["rss"],
                "throughput": "-",
                "ok": r["rerun"]["ok"],
            }
        )
    client_rss = max(
        m["run"].rss_mb,
        m["fetch_again"]["rss"],
        m["merge_again"]["rss"],
        m["poll_done"]["rss"],
        m["validate"]["rss"],
        m["rerun"]["rss"],
    )
    rounds = m["rounds"]
    per_round = [sum(r.values()) for r in rounds]
    notes += [
        f"- {m['requests']}-request job: input {m['input_bytes'] / MB:.0f} MB "
        f"({m['input_bytes'] / m['requests']:.0f} bytes per request), {m['chunks']} chunks, "
        f"`--interval {sizes['interval']:g}`; wall {m['run'].wall:.1f} s = submit {m['submit_s']:.1f} s "
        f"(validate and hash {m['validate_s']:.1f} s, uploads {m['upload_s']:.1f} s "
        f"= {m['input_bytes'] / MB / max(m['upload_s'], 1e-9):.0f} MB/s, then cost estimates and batch creation "
        f"{m['create_s']:.1f} s) + wait {m['wait_s']:.1f} s ({m['checks']} checks) + fetch and merge "
        f"{m['fetch_s']:.1f} s (phases from the stderr lines' arrival).",
        f"- While the client waited, the sandbox ran {m['wait_rate']:.0f} requests/s using "
        f"{100 * m['wait_sandbox_share']:.0f}% of one core (one interpreter, one SQLite writer)"
        + ("; the sandbox, not the client, sets the wait." if m["wait_sandbox_share"] >= 0.6 else ".")
        + f" Its CPU over the whole run: {m['sandbox_cpu_s']:.0f} s, the client's {m['run'].cpu_s:.0f} s.",
        f"- Peak RSS of the client processes: run_batch.py {m['run'].rss_mb:.0f} MB, fetch_results.py "
        f"{m['fetch_again']['rss']:.0f} MB (nothing new), {m['merge_again']['rss']:.0f} MB (a merge), poll.py {m['poll_done']['rss']:.0f} MB; max {client_rss:.0f} MB "
        f"({'within' if client_rss <= 80 else 'over'} the 80 MB target). At "
        f"{results['small']['requests']} requests run_batch.py peaked at {results['small']['run'].rss_mb:.0f} MB. "
        f"The sandbox peaked at {m['sandbox_rss_mb']:.0f} MB.",
        f"- run_batch.py used {m['run'].cpu_s:.0f} s of CPU and wrote {m['run'].written_mb:.0f} MB to disk "
        f"(results {m['output_mb']:.0f} MB); job.json ends at {m['job_json_kb']:.0f} kB "
        f"({m['job_json_kb'] / max(m['chunks'], 1):.1f} kB per chunk).",
        f"- API calls per status check while waiting (check + partial downloads, between consecutive "
        f"progress lines, {len(rounds)} rounds): median {med(per_round):.0f} = "
        f"{calls_text(m['round_median'])}; whole run: {calls_text(m['total_calls'])}.",
        f"- Fetching the finished job again (everything already downloaded): "
        f"{calls_text(m['fetch_again']['calls'])} in {m['fetch_again']['wall']:.1f} s; "
        f"poll.py on it: {calls_text(m['poll_done']['calls'])}.",
    ]
    return rows, notes, results


# -- 2. the status checks of a 200-batch job ------------------------------------------------


def call_ms(sb: SandboxProcess, batch_id: str, n: int = 20) -> Tuple[float, float]:
    """Median milliseconds of one GET /batches/{id}: on one kept-alive connection (as the client's
    session sends them) and on a new connection each time."""
    host, port = sb.base_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    path = "/v1/batches/" + batch_id
    headers = {"Authorization": f"Bearer {sb.api_key}"}
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    kept, fresh = [], []
    for i in range(n + 1):
        t = time.perf_counter()
        conn.request("GET", path, headers=headers)
        conn.getresponse().read()
        if i:  # the first one opens the connection
            kept.append(time.perf_counter() - t)
    conn.close()
    for _ in range(n):
        t = time.perf_counter()
        api(sb, "GET", path)
        fresh.append(time.perf_counter() - t)
    return med(kept) * 1000, med(fresh) * 1000


def bench_poll(sizes: Dict[str, Any], workdir: str) -> Tuple[List[dict], List[str], Dict[str, Any]]:
    batches, per = sizes["poll_batches"], 500
    n = batches * per
    path = make_requests(os.path.join(DATA, f"scale-poll-{n}.jsonl"), n, 1)
    job = os.path.join(workdir, "poll.dwjob")
    # 8 workers x 2 s per request: 4 requests/s, so every batch stays in progress for the whole
    # measurement while the first one makes partial results (what run_batch.py downloads).
    with SandboxProcess(
        data_dir=os.path.join(workdir, "sandbox-poll"), extra_args=["--latency", "2", "--concurrency", "8"]
    ) as sb:
        env = env_for(sb.base_url, sb.api_key)
        print(f"submit {batches} chunks ...", file=sys.stderr, flush=True)
        before = counters(sb)
        sub = run_stamped([sys.executable, script("submit.py"), path, "--job", job, "--max-requests", str(per)], env)
        sub_calls = diff(counters(sb), before)
        sub_json_kb = file_kb(os.path.join(job, "job.json"))
        with open(os.path.join(job, "job.json"), encoding="utf-8") as fh:
            kept_ms, fresh_ms = call_ms(sb, json.load(fh)["rounds"][0]["chunks"][0]["batch_id"])

        print(f"poll.py rounds over {batches} running batches ...", file=sys.stderr, flush=True)
        polls = []
        for _ in range(sizes["repeats"]):
            before = counters(sb)
            wall, rss, rc, out = measure_own([sys.executable, script("poll.py"), "--job", job], env)
            polls.append(
                (
                    wall,
                    rss,
                    rc == 0 and json.loads(out or "{}").get("status") == "in_progress",
                    diff(counters(sb), before),
                )
            )

        print("run_batch.py --wait checks ...", file=sys.stderr, flush=True)
        watcher = CheckWatcher(sb)
        out = os.path.join(workdir, "poll.results.jsonl")
        rb = run_stamped(
            [
                sys.executable,
                script("run_batch.py"),
                path,
                "--job",
                job,
                "--wait",
                "--interval",
                "5",
                "--timeout",
                str(sizes["wait_timeout"]),
                "--format",
                "simple",
                "-o",
                out,
            ],
            env,
            watcher,
        )
        checks = watcher.rounds()
        # Time of each check and its downloads: the gap to the next progress line less the sleep
        # run_batch.py takes after it (2, 5, then --interval 5 s: batches.wait_delay). The last
        # gap is left out (unless it is the only one): --timeout may have cut its sleep short.
        marks = watcher.marks
        sleeps = [2.0, 5.0] + [5.0] * len(checks)
        check_s = [b[0] - a[0] - s for a, b, s in zip(marks, marks[1:], sleeps)]
        check_s = check_s[:-1] if len(check_s) > 1 else check_s
        json_kb = file_kb(os.path.join(job, "job.json"))
    poll_calls = [sum(c.values()) for *_, c in polls]
    check_calls = [sum(c.values()) for c in checks]
    bench = f"{batches} running batches x {per} requests"
    rows = [
        {
            "bench": f"submit {batches} chunks x {per} requests",
            "client": "submit.py --max-requests 500",
            "seconds": sub.wall,
            "peak_rss_mb": sub.rss_mb,
            "throughput": f"{sum(sub_calls.values())} API calls, {sub.wall / batches * 1000:.0f} ms per chunk",
            "ok": sub.rc == 0,
        },
        {
            "bench": f"one status check, {bench}",
            "client": "poll.py --job",
            "seconds": med([p[0] for p in polls]),
            "peak_rss_mb": max(p[1] for p in polls),
            "throughput": f"{med(poll_calls):.0f} API calls per round",
            "ok": all(p[2] for p in polls),
        },
        {
            "bench": f"one status check, {bench}",
            "client": "run_batch.py --wait (check + partial downloads)",
            "seconds": med(check_s),
            "peak_rss_mb": rb.rss_mb,
            "throughput": f"{med(check_calls):.0f} API calls per check",
            "ok": rb.rc == 6 and len(checks) >= 2,
        },
    ]
    notes = [
        f"- Submitting {batches} chunks of {per}: {calls_text(sub_calls)}; {sub.wall:.1f} s, "
        f"{sub.written_mb:.0f} MB written to disk (job.json is rewritten at each step of each chunk: "
        f"{sub_json_kb:.0f} kB after the submit, {sub_json_kb / batches:.2f} kB per chunk).",
        f"- One GET /batches/{{id}} takes the sandbox {kept_ms:.0f} ms on a kept-alive connection (as the "
        f"client's session sends them) and {fresh_ms:.1f} ms on a new connection: it writes a reply's headers "
        "and body in two sends without TCP_NODELAY, so on a kept-alive connection the body waits for the "
        "client's delayed ACK. Call-heavy timings below are dominated by that wait (about a WAN round trip per "
        "call); the call counts are not affected.",
        f"- One `poll.py --job` round over {batches} running batches ({sizes['repeats']} runs, median): "
        f"{calls_text(median_calls([p[3] for p in polls]))}, {med([p[0] for p in polls]):.2f} s.",
        f"- One `run_batch.py --wait` check ({len(checks)} checks, median): "
        f"{calls_text(median_calls(checks))} ({med(check_calls):.0f} in all), {med(check_s):.2f} s per check "
        f"excluding its sleep; per-check calls {check_calls}. job.json after it: {json_kb:.0f} kB.",
    ]
    facts = {
        "batches": batches,
        "poll_calls": med(poll_calls),
        "poll_s": med([p[0] for p in polls]),
        "poll_rss": max(p[1] for p in polls),
        "check_calls": med(check_calls),
        "check_s": med(check_s),
        "submit_written_mb": sub.written_mb,
        "job_json_kb": json_kb,
        "submit_json_kb": sub_json_kb,
        "submit_s": sub.wall,
        "kept_ms": kept_ms,
        "fresh_ms": fresh_ms,
    }
    return rows, notes, facts


# -- 3. uploads through a per-connection throughput cap -------------------------------------


class NullSink(http.server.ThreadingHTTPServer):
    """An HTTP server that reads each request body and throws it away: with it, a capped
    connection's speed is the proxy's alone (the sandbox parses and stores what it gets)."""

    daemon_threads = True

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                got = self.rfile.read(min(left, 1 << 20))
                if not got:
                    break
                left -= len(got)
            self.send_response(201)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), NullSink.Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class Proxy:
    """bench/throttle_proxy.py in its own process (its own interpreter and core time)."""

    def __init__(self, target_port: int, rate: float):
        self.proc = subprocess.Popen(
            [sys.executable, PROXY, "--target", f"127.0.0.1:{target_port}", "--rate", str(rate)], stdout=subprocess.PIPE
        )
        self.port = json.loads(self.proc.stdout.readline())["port"]  # type: ignore[union-attr]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.proc.stdout.close()  # type: ignore[union-attr]


def curl_upload(url: str, key: str, path: str) -> List[str]:
    return [
        "curl",
        "-sS",
        "--fail",
        "-o",
        "/dev/null",
        "-H",
        f"Authorization: Bearer {key}",
        "-F",
        "purpose=batch",
        "-F",
        f"file=@{path};type=application/jsonl",
        url + "/files",
    ]


def timed_parallel(cmds: List[List[str]]) -> Tuple[float, bool]:
    """Start every command at once; (wall until the last one ends, all ok)."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.DEVNULL) for c in cmds]
    ok = all([p.wait() == 0 for p in procs])
    return time.perf_counter() - t0, ok


def submit_help() -> str:
    return subprocess.run([sys.executable, script("submit.py"), "--help"], capture_output=True, text=True).stdout


def bench_upload(sizes: Dict[str, Any], workdir: str) -> Tuple[List[dict], List[str], Dict[str, Any]]:
    chunks, lines, pad, rate = 4, sizes["upload_lines"], 150, sizes["rate_mb"] * MB
    # ~4.3 kB requests (run_all.py's upload lines): the sandbox's per-line work on an upload is
    # then small next to the transfer, which is what the cap is about.
    parts = [
        make_requests(os.path.join(DATA, f"scale-upload-{lines}-part{k + 1}.jsonl"), lines, pad, first=k * lines + 1)
        for k in range(chunks)
    ]
    whole = os.path.join(DATA, f"scale-upload-{lines}x{chunks}.jsonl")
    if not os.path.exists(whole):
        with open(whole + ".tmp", "wb") as out:
            for p in parts:
                with open(p, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 20)
        os.replace(whole + ".tmp", whole)
    part_mb = os.path.getsize(parts[0]) / MB
    total_mb = os.path.getsize(whole) / MB
    label = f"upload {chunks} x {part_mb:.0f} MB at {sizes['rate_mb']:g} MB/s per connection"
    rows: List[dict] = []

    # The cap, checked against a sink that does nothing with the bytes: one connection should
    # reach the cap, four at once four times it (else the proxy's CPU, not the cap, limits).
    print("proxy calibration ...", file=sys.stderr, flush=True)
    sink = NullSink()
    proxy = Proxy(sink.server_address[1], rate)
    try:
        via = f"http://127.0.0.1:{proxy.port}/v1"
        one, _, rc, _ = measure(curl_upload(via, "x", parts[0]))
        four, ok4 = timed_parallel([curl_upload(via, "x", p) for p in parts])
        direct, _, rc_d, _ = measure(curl_upload(f"http://127.0.0.1:{sink.server_address[1]}/v1", "x", parts[0]))
    finally:
        proxy.close()
        sink.shutdown()
        sink.server_close()
    rows.append(
        {
            "bench": f"proxy check: {part_mb:.0f} MB to a null sink",
            "client": "curl -F, 1 connection",
            "seconds": one,
            "peak_rss_mb": float("nan"),
            "throughput": f"{part_mb / one:.1f} MB/s (cap {sizes['rate_mb']:g}; {part_mb / direct:.0f} MB/s "
            "without the proxy)",
            "ok": rc == 0 and rc_d == 0,
        }
    )
    rows.append(
        {
            "bench": f"proxy check: {chunks} x {part_mb:.0f} MB to a null sink",
            "client": "curl -F, 4 at once",
            "seconds": four,
            "peak_rss_mb": float("nan"),
            "throughput": f"{chunks * part_mb / four:.1f} MB/s in all",
            "ok": ok4,
        }
    )

    parallel = "--parallel" in submit_help()
    times: Dict[str, List[float]] = {
        "submit": [],
        "submit_span": [],
        "submit_par": [],
        "submit_par_span": [],
        "curl_seq": [],
        "curl_par": [],
    }
    rss: Dict[str, float] = {}
    oks: Dict[str, bool] = {}
    with SandboxProcess(data_dir=os.path.join(workdir, "sandbox-upload")) as sb:
        port = int(sb.base_url.rsplit(":", 1)[1].split("/")[0])
        proxy = Proxy(port, rate)
        via = f"http://127.0.0.1:{proxy.port}/v1"
        env = env_for(via, sb.api_key)
        try:
            for rep in range(sizes["repeats"]):
                print(f"uploads, round {rep + 1}/{sizes['repeats']} ...", file=sys.stderr, flush=True)
                variants = [("submit", ["--parallel", "1"] if parallel else [])] + (
                    [("submit_par", ["--parallel", str(chunks)])] if parallel else []
                )
                for key, extra in variants:
                    api(sb, "POST", "/_sandbox/reset")  # the same empty server for every run
                    job = os.path.join(workdir, f"upload-{key}-{rep}.dwjob")
                    run = run_stamped(
                        [
                            sys.executable,
                            script("submit.py"),
                            whole,
                            "--job",
                            job,
                            "--max-requests",
                            str(lines),
                            *extra,
                        ],
                        env,
                    )
                    times[key].append(run.wall)
                    # the uploads alone: from the first "uploading" line to the last "uploaded"
                    starts, ends = run.times(r": uploading lines"), run.times(r": uploaded as file")
                    times[key + "_span"].append(ends[-1] - starts[0] if starts and ends else float("nan"))
                    rss[key] = max(rss.get(key, 0.0), run.rss_mb)
                    oks[key] = oks.get(key, True) and run.rc == 0 and len(run.doc().get("batches", [])) == chunks
                api(sb, "POST", "/_sandbox/reset")
                t0, ok = time.perf_counter(), True
                for p in parts:  # one after another, as the dw CLI uploads
                    ok = (
                        subprocess.run(curl_upload(via, sb.api_key, p), stdout=subprocess.DEVNULL).returncode == 0
                        and ok
                    )
                times["curl_seq"].append(time.perf_counter() - t0)
                oks["curl_seq"] = oks.get("curl_seq", True) and ok
                api(sb, "POST", "/_sandbox/reset")
                wall, ok = timed_parallel([curl_upload(via, sb.api_key, p) for p in parts])
                times["curl_par"].append(wall)
                oks["curl_par"] = oks.get("curl_par", True) and ok
        finally:
            proxy.close()
    seq = med(times["submit"])
    rows.append(
        {
            "bench": label,
            "client": "submit.py --parallel 1" if parallel else "submit.py (sequential)",
            "seconds": seq,
            "peak_rss_mb": rss["submit"],
            "throughput": f"{total_mb / seq:.1f} MB/s; uploads alone {med(times['submit_span']):.1f} s "
            f"({total_mb / med(times['submit_span']):.1f} MB/s)",
            "ok": oks["submit"],
        }
    )
    if parallel:
        par, par_span = med(times["submit_par"]), med(times["submit_par_span"])
        rows.append(
            {
                "bench": label,
                "client": f"submit.py --parallel {chunks}",
                "seconds": par,
                "peak_rss_mb": rss["submit_par"],
                "throughput": f"{total_mb / par:.1f} MB/s; uploads alone {par_span:.1f} s "
                f"({total_mb / par_span:.1f} MB/s); sequential/parallel {seq / par:.2f}x "
                f"(uploads alone {med(times['submit_span']) / par_span:.2f}x)",
                "ok": oks["submit_par"],
            }
        )
    cseq, cpar = med(times["curl_seq"]), med(times["curl_par"])
    rows.append(
        {
            "bench": label,
            "client": "curl -F, one after another",
            "seconds": cseq,
            "peak_rss_mb": float("nan"),
            "throughput": f"{total_mb / cseq:.1f} MB/s",
            "ok": oks["curl_seq"],
        }
    )
    rows.append(
        {
            "bench": label,
            "client": f"curl -F, {chunks} at once",
            "seconds": cpar,
            "peak_rss_mb": float("nan"),
            "throughput": f"{total_mb / cpar:.1f} MB/s; curl sequential/parallel {cseq / cpar:.2f}x",
            "ok": oks["curl_par"],
        }
    )
    notes = [
        f"- Uploads: {chunks} chunks of {lines} requests ({part_mb:.1f} MB each, {total_mb:.0f} MB in all) through "
        f"bench/throttle_proxy.py at {sizes['rate_mb']:g} MB/s per connection; medians of {sizes['repeats']} runs, "
        f"the sandbox reset before each. Runs (s): submit.py {[round(t, 1) for t in times['submit']]}, "
        + (f"submit.py --parallel {[round(t, 1) for t in times['submit_par']]}, " if parallel else "")
        + f"curl one after another {[round(t, 1) for t in times['curl_seq']]}, curl at once "
        f"{[round(t, 1) for t in times['curl_par']]}. submit.py's time includes validating and hashing the input "
        "and creating the batches; its uploads alone are the span from the first 'uploading' line to the last "
        "'uploaded'." + ("" if parallel else " submit.py has no --parallel yet: only the sequential figure."),
        f"- One chunk at the cap takes {part_mb / sizes['rate_mb']:.1f} s on the wire; the sandbox then parses and "
        "stores it before answering, and parallel uploads contend for its one interpreter: curl's parallel "
        "figure is the ceiling on this machine.",
    ]
    facts = {
        "rate_mb": sizes["rate_mb"],
        "total_mb": total_mb,
        "seq_s": seq,
        "span_s": med(times["submit_span"]),
        "curl_seq_s": cseq,
        "curl_par_s": cpar,
        "parallel": parallel,
        "par_span_s": med(times["submit_par_span"]) if parallel else None,
    }
    return rows, notes, facts


# -- main -----------------------------------------------------------------------------------


def floor_mb() -> float:
    """The smallest peak RSS the launcher can report (that of `true`)."""
    return measure_own(["true"])[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--only", action="append", choices=["e2e", "poll", "upload"])
    ap.add_argument("--rate-mb", type=float, default=20.0, help="per-connection cap of the upload proxy, MB/s")
    args = ap.parse_args()
    q = args.quick
    sizes = {
        "e2e": 50_000 if q else 1_000_000,
        "e2e_small": 10_000 if q else 200_000,
        "e2e_chunk": 2_500 if q else CHUNK_REQUESTS,
        "interval": 5.0,
        "concurrency": 8,
        "poll_batches": 20 if q else 200,
        "wait_timeout": 20 if q else 120,
        "repeats": 2 if q else 3,
        "upload_lines": 1_160 if q else 11_600,
        "rate_mb": args.rate_mb,
    }
    only = set(args.only or ["e2e", "poll", "upload"])
    workdir = tempfile.mkdtemp(prefix="dwb-scale-")
    rows: List[dict] = []
    notes: List[str] = []
    started, load = time.time(), os.getloadavg()[0]
    try:
        if "e2e" in only:
            r, n, _ = bench_e2e(sizes, workdir)
            rows, notes = rows + r, notes + n
        if "poll" in only:
            r, n, _ = bench_poll(sizes, workdir)
            rows, notes = rows + r, notes + n
        if "upload" in only:
            r, n, _ = bench_upload(sizes, workdir)
            rows, notes = rows + r, notes + n
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    cpu = f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    text = "\n".join(
        [
            SECTION,
            "",
            f"Measured {time.strftime('%Y-%m-%d')} on {cpu} with `python3 bench/bench_scale.py"
            f"{' --quick' if q else ''}` ({(time.time() - started) / 60:.0f} min; part of `make bench`; load average "
            f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end: other work shares the machine). Real scripts "
            "as child processes against the sandbox on loopback; peak RSS is each script's own (the sandbox's "
            "VmHWM); API calls are the sandbox's /_sandbox/stats counters.",
            "",
            table(rows).replace("| nan |", "| - |"),
            "",
            *notes,
            f"- Peak RSS figures are each script's own, through bench/peak_rss.py (floor: {floor_mb():.0f} MB, what "
            "`true` reads through it); spawned straight from this bench "
            f"({resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB) they could not read below its size.",
        ]
    )
    print(text)
    if not q and not args.only:
        write_section(text, SECTION)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
