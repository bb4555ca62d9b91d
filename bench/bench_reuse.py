#!/usr/bin/env python3
"""`make bench` (reuse): a big job, then the same file with 10% new rows as a new job.

The second job's requests that the first answered (same endpoint and body, temperature 0) take
those answers from the folder's answer store and are not sent: it sends only the new rows. Both
runs are run_batch.py INPUT --wait --format simple as child processes against a sandbox started
here (built-in model, no latency); requests sent are the sandbox's own counts (the request_counts
of every batch it holds), the phases come from the stderr lines' arrival. Inputs are generated
under bench/data/ (git-ignored); the job directories live in a temporary directory. Writes its
section of bench/results.md (replacing an earlier one) on a run with the default size.

  python3 bench/bench_reuse.py                      # 1,000,000 requests, then 1,100,000
  python3 bench/bench_reuse.py --requests 200000    # a smaller run (printed, and written unless --no-write)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List

from bench_scale import Run, env_for, measure_own, run_stamped, script
from run_all import DATA, SandboxProcess, api, table, write_section

HEADING = "## Answers reused: a job, then the same file with 10% new rows"
MODEL = "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8"  # answers at once (no thinking to cut)
DEFAULT = 1_000_000
RSS_TARGET_MB = 80.0  # every script, whatever the job's size


def make_requests(path: str, count: int) -> str:
    """``count`` deterministic chat requests (temperature 0), one distinct question each, fast:
    the template of one line with its numbers put in."""
    if os.path.exists(path):
        return path
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Question 0: name the colour of item 0."}]}
    line = json.dumps(
        {
            "custom_id": "req-0000000",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": dict(body, max_tokens=64, temperature=0),
        },
        separators=(",", ":"),
    )
    head, rest = line.split("req-0000000", 1)
    middle, tail = rest.split("Question 0: name the colour of item 0.", 1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for start in range(0, count, 20_000):
            fh.write(
                "".join(
                    f"{head}req-{i:07d}{middle}Question {i}: name the colour of item {i}.{tail}\n"
                    for i in range(start, min(start + 20_000, count))
                )
            )
    os.replace(tmp, path)
    return path


def sent_so_far(sb: SandboxProcess) -> int:
    """Requests the sandbox was given: the totals of every batch it holds."""
    total, after = 0, None
    while True:
        page = api(sb, "GET", "/v1/batches?limit=100" + (f"&after={after}" if after else ""))
        total += sum(int((b.get("request_counts") or {}).get("total") or 0) for b in page.get("data") or [])
        if not page.get("has_more") or not page.get("data"):
            return total
        after = page["data"][-1]["id"]


def one_run(sb: SandboxProcess, path: str, job: str, workdir: str) -> Dict[str, Any]:
    out = os.path.join(workdir, os.path.basename(job) + ".results.jsonl")
    cmd = [sys.executable, script("run_batch.py"), path, "--job", job, "--wait", "--format", "simple", "-o", out]
    cmd += ["--interval", "5", "--timeout", "3000"]
    before = sent_so_far(sb)
    run: Run = run_stamped(cmd, env_for(sb.base_url, sb.api_key))
    doc = run.doc()
    planned = (run.times(r"^new job at ") or [float("nan")])[0]
    done = (run.times(r"^completed: ") or [float("nan")])[0]
    result = {
        "run": run,
        "doc": doc,
        "sent": sent_so_far(sb) - before,
        "plan_s": planned,
        "wait_s": done - planned,
        "fetch_s": run.wall - done,
        "ok": run.rc == 0 and doc.get("succeeded") == doc.get("requests") and run.rss_mb <= RSS_TARGET_MB,
    }
    if not result["ok"]:
        print("\n".join(text for _, text in run.lines[-5:]), file=sys.stderr)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=DEFAULT, help=f"requests of the first job (default {DEFAULT:,})")
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/results.md alone")
    args = ap.parse_args()
    n, extra = args.requests, args.requests // 10
    first = make_requests(os.path.join(DATA, f"reuse-{n}.jsonl"), n)
    second = make_requests(os.path.join(DATA, f"reuse-{n + extra}.jsonl"), n + extra)
    workdir = tempfile.mkdtemp(prefix="dwb-reuse-")
    started, load = time.time(), os.getloadavg()[0]
    try:
        with SandboxProcess(data_dir=os.path.join(workdir, "sandbox"), extra_args=["--concurrency", "8"]) as sb:
            print(f"first job: {n:,} requests ...", file=sys.stderr, flush=True)
            a = one_run(sb, first, os.path.join(workdir, "first.dwjob"), workdir)
            print(f"second job: {n + extra:,} requests, {extra:,} of them new ...", file=sys.stderr, flush=True)
            b = one_run(sb, second, os.path.join(workdir, "second.dwjob"), workdir)
            # the second job fetched again with nothing new: no merge, though its answers came from the store
            env = env_for(sb.base_url, sb.api_key)
            cmd = [sys.executable, script("fetch_results.py"), "--job", os.path.join(workdir, "second.dwjob")]
            again = [measure_own(cmd, env) for _ in range(3)]
            folder = os.path.join(workdir, ".dwb-answers")
            store = {f: os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    reuse = b["doc"].get("reuse") or {}
    rows: List[dict] = [
        {
            "bench": f"{n:,}-request job (every request new)",
            "client": "run_batch.py --wait --format simple",
            "seconds": a["run"].wall,
            "peak_rss_mb": a["run"].rss_mb,
            "throughput": f"{a['sent']:,} requests sent; plan {a['plan_s']:.1f} s, wait {a['wait_s']:.1f} s, "
            f"fetch and answers stored {a['fetch_s']:.1f} s",
            "ok": a["ok"] and a["sent"] == n,
        },
        {
            "bench": f"the same file with {extra:,} new rows ({n + extra:,} requests)",
            "client": "run_batch.py --wait --format simple",
            "seconds": b["run"].wall,
            "peak_rss_mb": b["run"].rss_mb,
            "throughput": f"{b['sent']:,} requests sent, {reuse.get('reused', 0):,} reused; plan {b['plan_s']:.1f} s "
            f"(validate, hash, look up), wait {b['wait_s']:.1f} s, fetch {b['fetch_s']:.1f} s",
            "ok": b["ok"] and b["sent"] == extra and reuse.get("reused") == n,
        },
        {
            "bench": f"the second job fetched again ({n + extra:,} requests, nothing new)",
            "client": "fetch_results.py --job",
            "seconds": statistics.median(w for w, *_ in again),
            "peak_rss_mb": max(r for _, r, *_ in again),
            "throughput": f"runs {[round(w, 2) for w, *_ in again]} s (target < 0.5 s); report as the run's",
            "ok": all(rc == 0 and json.loads(out).get("reuse") == reuse for _, _, rc, out in again)
            and statistics.median(w for w, *_ in again) < 0.5
            and max(r for _, r, *_ in again) <= RSS_TARGET_MB,
        },
    ]
    text = "\n".join(
        [
            HEADING,
            "",
            f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPUs, {platform.machine()}, Python "
            f"{platform.python_version()} with `python3 bench/bench_reuse.py"
            f"{'' if n == DEFAULT else f' --requests {n}'}` ({(time.time() - started) / 60:.0f} min; part of "
            f"`make bench`; load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end). Both jobs in "
            "one folder, against one sandbox (built-in model, no latency); requests sent are the sandbox's batch "
            "counts; peak RSS is each run's own (target: at most 80 MB).",
            "",
            table(rows),
            "",
            f"- The second job sent {b['sent']:,} of {n + extra:,} requests ({b['sent'] / (n + extra):.0%}) and took "
            f"{b['run'].wall:.0f} s against the first job's {a['run'].wall:.0f} s ({b['run'].wall / a['run'].wall:.0%}); "
            f"its answers not sent would have cost ${reuse.get('saved_usd')} (their tokens at the price table), "
            f"this run cost ${(b['doc'].get('cost') or {}).get('usd')}.",
            f"- The answer store after both jobs ({n + extra:,} answers): "
            + ", ".join(f"{name} {size / 1e6:.0f} MB" for name, size in sorted(store.items()))
            + ".",
            "",
        ]
    )
    print(text)
    if not args.no_write:
        write_section(text, HEADING)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
