#!/usr/bin/env python3
"""`make bench`: speed and memory of doubleword-batches next to curl and naive clients.

Generates its data locally (bench/data/, git-ignored), starts the bundled sandbox, runs each
pair side by side in this one process tree, prints a table and writes bench/results.md.
Each client runs as its own child process; peak RSS is that child's ru_maxrss (os.wait4).

  python3 bench/run_all.py            # everything (about 5 minutes on 2 cores)
  python3 bench/run_all.py --quick    # smaller inputs, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")
DATA = os.path.join(ROOT, "bench", "data")
RESULTS = os.path.join(ROOT, "bench", "results.md")
sys.path.insert(0, SCRIPTS)

from _dwbatches.core.sandbox import SandboxProcess  # noqa: E402

MODEL = "Qwen/Qwen3.5-35B-A3B-FP8"


# -- measurement ----------------------------------------------------------------------------


def measure(cmd: List[str], env: Optional[Dict[str, str]] = None, cwd: str = ROOT) -> Tuple[float, float, int, str]:
    """Run cmd; return (wall seconds, peak RSS MB, exit code, stdout)."""
    out = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.DEVNULL)
    _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    text = out.read().decode("utf-8", "replace")
    out.close()
    return wall, rusage.ru_maxrss / 1024.0, proc.returncode, text


def api(sb: SandboxProcess, method: str, path: str, body: Optional[dict] = None) -> dict:
    req = urllib.request.Request(
        sb.base_url.rsplit("/v1", 1)[0] + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {sb.api_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        raw = resp.read()
        return json.loads(raw) if raw else {}


def wait_batch(sb: SandboxProcess, batch_id: str, timeout: float = 600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        b = api(sb, "GET", f"/v1/batches/{batch_id}")
        if b["status"] in ("completed", "failed", "cancelled"):
            return b
        time.sleep(0.5)
    raise RuntimeError(f"batch {batch_id} did not finish")


# -- data -----------------------------------------------------------------------------------


def chat_line(i: int, pad: int, model: str = MODEL) -> str:
    text = f"Question {i}: summarise the following passage. " + ("lorem ipsum dolor sit amet " * pad)
    return json.dumps(
        {
            "custom_id": f"req-{i:07d}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 64},
        }
    )


def write_section(text: str, heading: str, also: Sequence[str] = ()) -> None:
    """Put a bench's section of results.md (``text``, which starts with ``heading``) in place of
    an earlier copy (from the first of ``heading`` and ``also`` found to the next section), else
    at the end."""
    try:
        with open(RESULTS, encoding="utf-8") as fh:
            doc = fh.read()
    except FileNotFoundError:
        doc = "# Benchmark results\n"
    for old in (heading, *also):
        if old in doc:
            start = doc.index(old)
            nxt = doc.find("\n## ", start + len(old))
            doc = doc[:start] + text.rstrip("\n") + "\n" + (doc[nxt:] if nxt != -1 else "")
            break
    else:
        doc = doc.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    with open(RESULTS, "w", encoding="utf-8") as fh:
        fh.write(doc)


def make_file(path: str, lines: int, pad: int) -> str:
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for i in range(1, lines + 1):
            fh.write(chat_line(i, pad) + "\n")
    os.replace(tmp, path)
    return path


# -- the clients under test (each one a small child program) ---------------------------------

UPLOAD_OURS = """
import sys; sys.path.insert(0, {scripts!r})
from _dwbatches.core import config, http
c = http.Client(config.load_config())
print(c.upload_file({path!r})["id"])
"""
UPLOAD_NAIVE = """
import os, requests
with open({path!r}, "rb") as fh:
    r = requests.post(os.environ["DOUBLEWORD_BASE_URL"] + "/files", data={{"purpose": "batch"}},
                      files={{"file": ("in.jsonl", fh, "application/jsonl")}},
                      headers={{"Authorization": "Bearer " + os.environ["DOUBLEWORD_API_KEY"]}}, timeout=(600, 600))
r.raise_for_status(); print(r.json()["id"])
"""
UPLOAD_OPENAI = """
import os, openai
c = openai.OpenAI(base_url=os.environ["DOUBLEWORD_BASE_URL"], api_key=os.environ["DOUBLEWORD_API_KEY"], timeout=600)
print(c.files.create(file=open({path!r}, "rb"), purpose="batch").id)
"""
DOWNLOAD_OURS = """
import sys, time; sys.path.insert(0, {scripts!r})
from _dwbatches.core import config, http
c = http.Client(config.load_config())
t = time.perf_counter()
with open({out!r}, "wb") as fh:
    w = fh.write
    r = c.stream_content({fid!r}, 0, lambda line: (w(line), w(b"\\n")))
print(time.perf_counter() - t)
"""
VALIDATE_BARE = """
import json
n = 0
with open({path!r}, encoding="utf-8") as f:
    for line in f:
        json.loads(line); n += 1
print(n)
"""
VALIDATE_ONE_PROCESS = """
import json, sys; sys.path.insert(0, {scripts!r})
from _dwbatches.validation.validate import validate_file
rep = validate_file({path!r}, processes=1)
print(json.dumps(rep.as_dict()))
"""


def py(code: str, **kw: str) -> List[str]:
    return [sys.executable, "-c", code.format(scripts=SCRIPTS, **kw)]


def have_module(name: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True).returncode == 0


# -- benchmarks -----------------------------------------------------------------------------


def bench_upload(sb: SandboxProcess, env: Dict[str, str], path: str) -> List[dict]:
    size_mb = os.path.getsize(path) / 1e6
    rows = []
    clients = [
        ("doubleword-batches (streamed multipart)", py(UPLOAD_OURS, path=path)),
        (
            "curl -F",
            [
                "curl",
                "-sS",
                "--fail",
                "-o",
                "/dev/null",
                "-H",
                f"Authorization: Bearer {sb.api_key}",
                "-F",
                "purpose=batch",
                "-F",
                f"file=@{path};type=application/jsonl",
                sb.base_url + "/files",
            ],
        ),
        ("requests files= (naive)", py(UPLOAD_NAIVE, path=path)),
    ]
    if have_module("openai"):
        clients.append(("openai SDK files.create", py(UPLOAD_OPENAI, path=path)))
    for name, cmd in clients:
        wall, rss, rc, _ = measure(cmd, env)
        rows.append(
            {
                "bench": f"upload {size_mb:.0f} MB",
                "client": name,
                "seconds": wall,
                "peak_rss_mb": rss,
                "throughput": f"{size_mb / wall:.0f} MB/s",
                "ok": rc == 0,
            }
        )
    return rows


def bench_download(sb: SandboxProcess, env: Dict[str, str], lines: int) -> List[dict]:
    path = make_file(os.path.join(DATA, f"download-{lines}.jsonl"), lines, 2)
    wall, _, rc, out = measure(py(UPLOAD_OURS, path=path), env)
    fid = out.strip()
    batch = api(
        sb,
        "POST",
        "/v1/batches",
        {"input_file_id": fid, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    )
    wait_batch(sb, batch["id"])
    out_id = api(sb, "GET", f"/v1/batches/{batch['id']}")["output_file_id"]
    target = os.path.join(DATA, "download.out")
    rows = []
    for name, cmd in [
        ("doubleword-batches (stream_content)", py(DOWNLOAD_OURS, fid=out_id, out=target)),
        (
            "curl",
            [
                "curl",
                "-sS",
                "--fail",
                "-o",
                target,
                "-w",
                "%{time_total}",
                "-H",
                f"Authorization: Bearer {sb.api_key}",
                f"{sb.base_url}/files/{out_id}/content",
            ],
        ),
    ]:
        wall, rss, rc, out = measure(cmd, env)
        mb = os.path.getsize(target) / 1e6
        transfer = float(out.strip() or "nan")  # the transfer alone, without process start-up
        rows.append(
            {
                "bench": f"download {lines} lines ({mb:.0f} MB)",
                "client": name,
                "seconds": wall,
                "peak_rss_mb": rss,
                "throughput": f"{mb / wall:.0f} MB/s ({mb / transfer:.0f} MB/s transfer alone, {transfer:.2f} s)",
                "ok": rc == 0,
            }
        )
    return rows


def _descendants(pid: int) -> List[int]:
    out: List[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids = [int(k) for k in fh.read().split()]
        except OSError:
            continue
        for kid in kids:
            out += [kid] + _descendants(kid)
    return out


def _peak_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for row in fh:
                if row.startswith("VmHWM:"):
                    return int(row.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def measure_tree(cmd: List[str]) -> Tuple[float, float, int, int, str]:
    """Run cmd; return (wall seconds, peak RSS MB summed over the process and its children,
    number of processes, exit code, stdout). A process's peak is its VmHWM, read from /proc
    every 10 ms while it runs (unlike the ru_maxrss of os.wait4, it does not count the memory
    of this process the child was forked from; the sum overstates the simultaneous peak).
    Without /proc: measure()'s figure, for the main process alone."""
    if not os.path.exists(f"/proc/{os.getpid()}/task"):
        wall, rss, rc, text = measure(cmd)
        return wall, rss, 1, rc, text
    out = tempfile.TemporaryFile()
    peaks: Dict[int, int] = {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        for pid in [proc.pid] + _descendants(proc.pid):
            peaks[pid] = max(peaks.get(pid, 0), _peak_kb(pid))
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    out.seek(0)
    text = out.read().decode("utf-8", "replace")
    out.close()
    return wall, sum(peaks.values()) / 1024.0, len(peaks), proc.returncode, text


def bench_validate(lines: int, repeat: int = 3) -> List[dict]:
    """validate_batch_file.py (as run: helper processes for a large file), the same in one
    process, and a bare json.loads loop over the same file: the median of `repeat` runs each,
    taken in turns."""
    path = make_file(os.path.join(DATA, f"validate-{lines}.jsonl"), lines, 1)
    clients = [
        ("validate_batch_file.py", [sys.executable, os.path.join(SCRIPTS, "validate_batch_file.py"), path]),
        ("validate_file(processes=1)", py(VALIDATE_ONE_PROCESS, path=path)),
        ("bare json.loads loop", py(VALIDATE_BARE, path=path)),
    ]
    runs: Dict[str, List[Tuple[float, float, int, bool]]] = {name: [] for name, _ in clients}
    for _ in range(repeat):
        for name, cmd in clients:
            wall, rss, procs, rc, out = measure_tree(cmd)
            ok = rc == 0 and (name.startswith("bare") or json.loads(out).get("requests") == lines)
            runs[name].append((wall, rss, procs, ok))

    def median(name: str, k: int) -> float:
        return sorted(r[k] for r in runs[name])[len(runs[name]) // 2]

    bare = median("bare json.loads loop", 0)
    rows = []
    for name, _ in clients:
        wall, rss, procs = median(name, 0), median(name, 1), max(r[2] for r in runs[name])
        throughput = f"{lines / wall / 1000:.0f}k lines/s"
        if not name.startswith("bare"):
            throughput += f", {bare / wall:.2f}x the bare loop"
        if procs > 1:
            throughput += f" ({procs} processes, RSS summed)"
        rows.append(
            {
                "bench": f"validate {lines} lines",
                "client": name,
                "seconds": wall,
                "peak_rss_mb": rss,
                "throughput": throughput,
                "ok": all(r[3] for r in runs[name]),
            }
        )
    return rows


def bench_job(env: Dict[str, str], lines: int, workdir: str) -> List[dict]:
    src = make_file(os.path.join(DATA, f"job-{lines}.jsonl"), lines, 1)
    path = os.path.join(workdir, "job.jsonl")
    shutil.copy(src, path)
    cmd = [
        sys.executable,
        os.path.join(SCRIPTS, "run_batch.py"),
        path,
        "--wait",
        "--interval",
        "1",
        "--timeout",
        "600",
        "-o",
        os.path.join(workdir, "out.jsonl"),
    ]
    wall, rss, rc, out = measure(cmd, env)
    try:
        doc = json.loads(out)
    except ValueError:
        doc = {}
    return [
        {
            "bench": f"{lines}-request job end to end",
            "client": "run_batch.py --wait",
            "seconds": wall,
            "peak_rss_mb": rss,
            "throughput": f"{lines / wall:.0f} req/s",
            "ok": rc == 0 and doc.get("succeeded") == lines,
        }
    ]


def bench_polling(env: Dict[str, str], sb: SandboxProcess, workdir: str, seconds: float) -> List[dict]:
    """Requests per minute while waiting on a running batch with the default interval."""
    rows = []
    for name, script in [("poll.py --wait", "poll.py"), ("run_batch.py --wait", "run_batch.py")]:
        path = os.path.join(workdir, f"poll-{script}.jsonl")
        first = 0 if script == "poll.py" else 1000  # two different files: each a job of its own
        with open(path, "w") as fh:
            for i in range(first, first + 40):
                fh.write(chat_line(i, 1) + "\n")
        if script == "poll.py":
            _, _, rc, out = measure([sys.executable, os.path.join(SCRIPTS, "submit.py"), path], env)
            job = json.loads(out)["job"]
            cmd = [sys.executable, os.path.join(SCRIPTS, "poll.py"), "--job", job, "--wait", "--timeout", str(seconds)]
        else:
            cmd = [sys.executable, os.path.join(SCRIPTS, "run_batch.py"), path, "--wait", "--timeout", str(seconds)]
        before = api(sb, "GET", "/_sandbox/stats")["requests"]
        wall, rss, rc, _ = measure(cmd, env)
        after = api(sb, "GET", "/_sandbox/stats")["requests"]
        polls = sum(after.get(k, 0) - before.get(k, 0) for k in after if k.startswith("GET"))
        rows.append(
            {
                "bench": f"polling a running batch for {seconds:.0f}s",
                "client": name,
                "seconds": wall,
                "peak_rss_mb": rss,
                "throughput": f"{polls / (wall / 60):.1f} GET/min",
                "ok": rc in (0, 6),
            }
        )
    return rows


def table(rows: List[dict]) -> str:
    out = ["| benchmark | client | wall (s) | peak RSS (MB) | throughput | ok |", "|---|---|---:|---:|---|---|"]
    for r in rows:
        out.append(
            f"| {r['bench']} | {r['client']} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} | "
            f"{r['throughput']} | {'yes' if r['ok'] else 'NO'} |"
        )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small inputs (smoke run)")
    ap.add_argument("--only", action="append", choices=["upload", "download", "validate", "job", "polling"])
    args = ap.parse_args()
    q = args.quick
    upload_lines, pad = (5_000, 150) if q else (48_000, 150)
    sizes = {
        "download": 10_000 if q else 100_000,
        "validate": 100_000 if q else 1_000_000,
        "job": 10_000 if q else 100_000,
        "polling": 20 if q else 75,
    }
    only = set(args.only or ["upload", "download", "validate", "job", "polling"])
    rows: List[dict] = []
    workdir = tempfile.mkdtemp(prefix="dwb-bench-")
    data_dir = os.path.join(workdir, "sandbox")
    with SandboxProcess(
        data_dir=data_dir, extra_args=["--max-file-bytes", "260000000", "--max-requests-per-file", "0"]
    ) as sb:
        env = dict(os.environ, DOUBLEWORD_API_KEY=sb.api_key, DOUBLEWORD_BASE_URL=sb.base_url)
        if "validate" in only:
            print("validation ...", file=sys.stderr)
            rows += bench_validate(sizes["validate"])
        if "upload" in only:
            print("upload ...", file=sys.stderr)
            rows += bench_upload(
                sb, env, make_file(os.path.join(DATA, f"upload-{upload_lines}.jsonl"), upload_lines, pad)
            )
        if "download" in only:
            print("download ...", file=sys.stderr)
            rows += bench_download(sb, env, sizes["download"])
        if "job" in only:
            print("end-to-end job ...", file=sys.stderr)
            rows += bench_job(env, sizes["job"], workdir)
    if "polling" in only:
        print("polling cost ...", file=sys.stderr)
        with SandboxProcess(extra_args=["--latency", "2", "--concurrency", "1"]) as sb:
            env = dict(os.environ, DOUBLEWORD_API_KEY=sb.api_key, DOUBLEWORD_BASE_URL=sb.base_url)
            rows += bench_polling(env, sb, workdir, sizes["polling"])
    shutil.rmtree(workdir, ignore_errors=True)
    text = table(rows)
    print(text)
    if not q and not args.only:
        cpu = f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
        path = os.path.join(ROOT, "bench", "results.md")
        try:  # bench_scale.py's sections follow this table: kept until it writes them again
            with open(path, encoding="utf-8") as fh:
                old = fh.read()
            rest = "\n" + old[old.index("\n## Scale") :].strip("\n") + "\n" if "\n## Scale" in old else ""
        except FileNotFoundError:
            rest = ""
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(
                f"# Benchmark results\n\nMeasured {time.strftime('%Y-%m-%d')} on {cpu} with "
                f"`make bench` (sandbox on loopback, built-in model, no latency).\n\n{text}\n{rest}"
            )
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
