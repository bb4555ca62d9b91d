#!/usr/bin/env python3
"""`make bench-10m`: one ten-million-request job end to end against the sandbox, measured.

The real scripts as child processes (through bench/peak_rss.py: each one's own peak RSS, CPU
and bytes written), against a sandbox started here (built-in model, no latency):

1. create_batch_file.py --prompts of N prompts (the build at this size);
2. validate_batch_file.py of the N-request input;
3. run_batch.py INPUT --wait --format simple: split into phases by its stderr (validate and
   hash, uploads, batch creation, waiting, the final fetch and merge), with the API calls;
4. fetch_results.py --job again (nothing new: no merge), poll.py --job, and
   retry_failed.py --job --dry-run on the finished job (what a rerun would send).

Writes the section "Ten million requests, measured" of bench/results.md (replacing the
computed "Ten-million plan"); exits 1 when a target is missed: peak RSS at most 80 MB for every
script, a fetch with nothing new under 0.5 s. Needs about 25 GB of disk (the sandbox keeps every
request and answer) and, on 2 shared cores, 30 to 60 minutes; run it niced.

  nice -n 10 python3 bench/bench_ten_million.py            # 10,000,000 requests
  python3 bench/bench_ten_million.py --requests 200000     # a smoke run (not written)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

from bench_scale import (
    MB,
    CheckWatcher,
    calls_text,
    counters,
    diff,
    env_for,
    make_requests,
    measure_own,
    run_stamped,
    sandbox_usage,
    script,
)
from run_all import DATA, RESULTS, SandboxProcess, table, write_section

SECTION = "## Ten million requests, measured"
OLD_SECTION = "## Ten-million plan"
RSS_TARGET_MB = 80.0
# A model that answers at once (no thinking to cut): every answer is good, so the job's results
# hold ten million answers and the answer store beside the job takes them in after the fetch.
ANSWERING = "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8"
NOOP_TARGET_S = 0.5


def prompts_file(path: str, count: int) -> str:
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for start in range(0, count, 100_000):
            fh.write(
                "".join(
                    f"Question {i}: summarise the following passage. lorem ipsum dolor sit amet\n"
                    for i in range(start, min(count, start + 100_000))
                )
            )
    os.replace(tmp, path)
    return path


def disk_free_gb(path: str) -> float:
    return shutil.disk_usage(path).free / 1e9


def stored_answers(path: str) -> Optional[int]:
    """The answers in the answer store at ``path`` (None: no store)."""
    import sqlite3

    if not os.path.exists(path):
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM answers").fetchone()[0])
    finally:
        db.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10_000_000)
    ap.add_argument("--interval", type=float, default=30.0, help="run_batch.py --interval")
    ap.add_argument("--workdir", default=None, help="where the job and the sandbox live (default: a temp dir)")
    ap.add_argument(
        "--finished-only",
        action="store_true",
        help="measure again only what a finished job costs (--workdir of an earlier full run kept): a fetch with "
        "nothing new and a poll, against a sandbox restarted on the same data and port",
    )
    args = ap.parse_args()
    if args.finished_only:
        return finished_again(args.workdir)
    n = args.requests
    started, load = time.time(), os.getloadavg()[0]
    workdir = args.workdir or tempfile.mkdtemp(prefix="dwb-10m-")
    os.makedirs(workdir, exist_ok=True)
    env0 = dict(os.environ, PYTHONDONTWRITEBYTECODE="")
    rows: List[dict] = []
    notes: List[str] = []
    facts: Dict[str, Any] = {"requests": n, "free_gb_before": disk_free_gb(workdir)}
    print(f"ten million: {n} requests in {workdir} ...", file=sys.stderr, flush=True)

    def row(bench: str, client: str, wall: float, rss: float, throughput: str, ok: bool) -> None:
        rows.append(
            {"bench": bench, "client": client, "seconds": wall, "peak_rss_mb": rss, "throughput": throughput, "ok": ok}
        )
        print(f"  {bench} | {client} | {wall:.1f} s | {rss:.0f} MB | {throughput} | {ok}", file=sys.stderr, flush=True)

    try:
        # 1. the build
        src = prompts_file(os.path.join(DATA, f"prompts-{n}.txt"), n)
        built = os.path.join(workdir, "built.jsonl")
        run = run_stamped([sys.executable, script("create_batch_file.py"), built, "--prompts", src, "-q"], env0)
        ok = run.rc == 0 and run.doc().get("requests") == n
        row(
            f"build {n} requests from prompts",
            "create_batch_file.py",
            run.wall,
            run.rss_mb,
            f"{n / run.wall / 1e3:.0f}k req/s, wrote {os.path.getsize(built) / 1e9:.2f} GB",
            ok and run.rss_mb <= RSS_TARGET_MB,
        )
        os.remove(built)

        # 2. validation
        path = make_requests(os.path.join(DATA, f"answered-{n}.jsonl"), n, 1, model=ANSWERING)
        size = os.path.getsize(path)
        run = run_stamped([sys.executable, script("validate_batch_file.py"), path], env0)
        ok = run.rc == 0 and run.doc().get("requests") == n
        row(
            f"validate {n} requests ({size / 1e9:.2f} GB)",
            "validate_batch_file.py",
            run.wall,
            run.rss_mb,
            f"{n / run.wall / 1e3:.0f}k lines/s (this process; helpers share the work)",
            ok and run.rss_mb <= RSS_TARGET_MB,
        )

        # 3. the job, end to end
        with SandboxProcess(data_dir=os.path.join(workdir, "sandbox"), extra_args=["--concurrency", "8"]) as sb:
            env = dict(env_for(sb.base_url, sb.api_key), PYTHONDONTWRITEBYTECODE="")
            job = os.path.join(workdir, "job.dwjob")
            out = os.path.join(workdir, "results.jsonl")
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
                str(args.interval),
                "--timeout",
                "20000",
            ]
            watcher = CheckWatcher(sb)
            before = counters(sb)
            run = run_stamped(cmd, env, watcher)
            total_calls = diff(counters(sb), before)
            sb_cpu, sb_rss = sandbox_usage(sb)
            doc = run.doc()
            planned = (run.times(r"^new job at ") or [float("nan")])[0]
            starts, ends = run.times(r"^chunk \d+/\d+: uploading lines"), run.times(r"^chunk \d+/\d+: uploaded as file")
            uploading = ends[-1] - starts[0] if starts and ends else float("nan")  # (the first to the last chunk's)
            submitted = (run.times(r"^chunk \d+/\d+: created batch ") or [float("nan")])[-1]
            finished = [
                i for i, (_, status, _) in enumerate(watcher.marks) if status not in ("in_progress", "not_submitted")
            ]
            waited = watcher.marks[finished[0]][0] if finished else float("nan")
            merged_at = (run.times(r"succeeded") or [run.wall])[-1]
            chunks = len(doc.get("batches") or []) + (doc.get("batches_omitted") or 0)  # (at most 5 listed)
            ok = run.rc == 0 and doc.get("requests") == n and doc.get("succeeded") == n and doc.get("missing") == 0
            store = os.path.join(workdir, ".dwb-answers", "answers.sqlite3")
            facts.update(
                run_wall=run.wall,
                validate_s=planned,
                upload_s=uploading,
                submit_s=submitted,
                wait_s=waited - submitted,
                fetch_s=run.wall - waited,
                written_gb=run.written_mb / 1e3,
                cpu_s=run.cpu_s,
                rss=run.rss_mb,
                chunks=chunks,
                calls=total_calls,
                sandbox_cpu_s=sb_cpu,
                sandbox_rss=sb_rss,
                output_gb=os.path.getsize(out) / 1e9,
                succeeded=doc.get("succeeded"),
                store_gb=(os.path.getsize(store) if os.path.exists(store) else 0) / 1e9,
                stored=stored_answers(store),
                job_json_kb=os.path.getsize(os.path.join(job, "job.json")) / 1e3,
                checks=len(watcher.marks),
                merged_at=merged_at,
            )
            row(
                f"{n}-request job end to end ({chunks} chunks)",
                "run_batch.py --wait --format simple",
                run.wall,
                run.rss_mb,
                f"{n / run.wall:.0f} req/s; validate+hash {planned:.0f} s, uploads {uploading:.0f} s, "
                f"submitted at {submitted:.0f} s, wait {waited - submitted:.0f} s, fetch and merge {run.wall - waited:.0f} s",
                ok and run.rss_mb <= RSS_TARGET_MB,
            )
            row(
                f"{n}-request job end to end ({chunks} chunks)",
                "sandbox_server.py (built-in model)",
                run.wall,
                sb_rss,
                f"CPU {sb_cpu:.0f} s ({100 * sb_cpu / run.wall:.0f}% of one core)",
                True,
            )

            # 4. the finished job: a fetch with nothing new, a poll, a rerun's dry run
            noop = []
            for _ in range(3):
                before = counters(sb)
                wall, rss, rc, text = measure_own([sys.executable, script("fetch_results.py"), "--job", job], env)
                noop.append((wall, rss, rc, diff(counters(sb), before), text))
            wall = statistics.median(w for w, *_ in noop)
            rss = max(r for _, r, *_ in noop)
            calls = noop[-1][3]
            same = len({json.dumps({k: v for k, v in json.loads(t).items()}, sort_keys=True) for *_, t in noop}) == 1
            row(
                f"fetch again, {chunks} batches finished and downloaded",
                "fetch_results.py --job (nothing new)",
                wall,
                rss,
                f"{calls_text(calls)}; runs {[round(w, 2) for w, *_ in noop]} s",
                all(r in (0, 5) for _, _, r, *_ in noop) and same and wall < NOOP_TARGET_S and rss <= RSS_TARGET_MB,
            )
            before = counters(sb)
            wall, rss, rc, _ = measure_own([sys.executable, script("poll.py"), "--job", job], env)
            row(
                f"poll a finished {chunks}-batch job",
                "poll.py --job",
                wall,
                rss,
                calls_text(diff(counters(sb), before)),
                rc in (0, 5) and rss <= RSS_TARGET_MB,
            )
            # the rerun the job's report asks for (its `next`), as a dry run
            nxt = shlex.split(doc.get("next") or "")
            at = [i for i, a in enumerate(nxt) if a.endswith("retry_failed.py")]
            rerun = nxt[at[0] + 1 :] if at else ["--job", job]
            wall, rss, rc, text = measure_own([sys.executable, script("retry_failed.py"), *rerun, "--dry-run"], env)
            got = json.loads(text or "{}")
            row(
                f"dry run of the rerun the {n}-request job's report asks for",
                "retry_failed.py --dry-run",
                wall,
                rss,
                f"{got.get('requests')} requests to rerun ({' '.join(rerun[2:]) or 'as they were'})",
                rc == 0 and rss <= RSS_TARGET_MB,
            )
            facts["free_gb_after"] = disk_free_gb(workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    cpu = f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    f = facts
    if "run_wall" in f:
        notes += [
            f"- The job: input {size / 1e9:.2f} GB ({size / n:.0f} bytes a request), {f['chunks']} chunks of 50,000, "
            f"`--interval {args.interval:g}`. Wall {f['run_wall']:.0f} s = submit {f['submit_s']:.0f} s (validate and hash "
            f"{f['validate_s']:.0f} s; then the uploads, 3 chunks at a time, the cost estimates and the creates, up to "
            f"the last batch created: {f['submit_s'] - f['validate_s']:.0f} s, "
            f"{size / MB / max(f['submit_s'] - f['validate_s'], 1e-9):.1f} MB/s on loopback; from the first upload's "
            f"start to the last chunk's end {f['upload_s']:.0f} s) + wait {f['wait_s']:.0f} s ({f['checks']} checks) + the last "
            f"downloads, fetch and merge {f['fetch_s']:.0f} s (phases from the stderr lines' arrival).",
            f"- run_batch.py: CPU {f['cpu_s']:.0f} s, peak RSS {f['rss']:.0f} MB, wrote {f['written_gb']:.1f} GB to disk "
            f"(results {f['output_gb']:.2f} GB: {f['succeeded']} good answers; the answer store beside the job "
            f"{f['store_gb']:.2f} GB holding {f['stored']} answers after taking them in); job.json ends at {f['job_json_kb']:.0f} kB. "
            f"API calls in all: {calls_text(f['calls'])}.",
            f"- The sandbox: CPU {f['sandbox_cpu_s']:.0f} s over the run ({100 * f['sandbox_cpu_s'] / f['run_wall']:.0f}% "
            f"of one core), peak RSS {f['sandbox_rss']:.0f} MB; it runs every request in one interpreter with one "
            "SQLite writer, so while the client waits, the sandbox is what sets the pace.",
            f"- Disk: {f['free_gb_before'] - f.get('free_gb_after', f['free_gb_before']):.1f} GB more in use at the end "
            "(the sandbox's database of requests and answers, the downloads, the results).",
        ]
    text = "\n".join(
        [
            SECTION,
            "",
            f"Measured {time.strftime('%Y-%m-%d')} on {cpu} with `nice -n 10 python3 bench/bench_ten_million.py` "
            f"({(time.time() - started) / 60:.0f} min; `make bench-10m`; load average {load:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end: other work shares the machine). Real scripts as child processes "
            "against the sandbox on loopback; peak RSS is each script's own (the sandbox's VmHWM); API calls are the "
            "sandbox's /_sandbox/stats counters. Targets: every script at most 80 MB, a fetch with nothing new under "
            "0.5 s.",
            "",
            table(rows).replace("| nan |", "| - |"),
            "",
            *notes,
        ]
    )
    print(text)
    if n == 10_000_000:
        write_section(text, SECTION, also=(OLD_SECTION,))
    return 0 if all(r["ok"] for r in rows) else 1


AGAIN = "### The finished job fetched again"


def finished_again(workdir: Optional[str]) -> int:
    """The finished job of an earlier full run (kept in ``workdir``): fetches with nothing new, a
    poll and a rerun's dry run, against a sandbox started on its data and port; the rows go
    under SECTION."""
    if not workdir or not os.path.isfile(os.path.join(workdir, "job.dwjob", "job.json")):
        sys.stderr.write("--finished-only needs the --workdir of an earlier full run\n")
        return 2
    job = os.path.join(workdir, "job.dwjob")
    with open(os.path.join(job, "job.json"), encoding="utf-8") as fh:
        rec = json.load(fh)
    port = rec["base_url"].rsplit(":", 1)[1].split("/", 1)[0]
    n = int(rec["input"]["requests"])
    chunks = sum(len(r["chunks"]) for r in rec["rounds"])
    rows: List[dict] = []
    started, load = time.time(), os.getloadavg()[0]
    sb = SandboxProcess(data_dir=os.path.join(workdir, "sandbox"), extra_args=["--port", port])
    sb.start(timeout=600)  # (a database of ten million requests takes a while to open)
    try:
        env = dict(env_for(sb.base_url, sb.api_key), PYTHONDONTWRITEBYTECODE="")
        runs = []
        for _ in range(4):  # the first after a start: the sandbox reads each batch's rows once
            before = counters(sb)
            wall, rss, rc, text = measure_own([sys.executable, script("fetch_results.py"), "--job", job], env)
            runs.append((wall, rss, rc, diff(counters(sb), before), text))
        steady = runs[1:]
        wall = statistics.median(w for w, *_ in steady)
        same = len({t for *_, t in steady}) == 1
        rows.append(
            {
                "bench": f"fetch the finished {n}-request job again ({chunks} batches, all downloaded)",
                "client": "fetch_results.py --job: nothing new",
                "seconds": wall,
                "peak_rss_mb": max(r for _, r, *_ in runs),
                "throughput": f"{calls_text(steady[-1][3])}; runs {[round(w, 2) for w, *_ in runs]} s (the first "
                f"after the sandbox's start, then steady; target < {NOOP_TARGET_S} s)",
                "ok": all(rc in (0, 5) for _, _, rc, *_ in runs) and same and wall < NOOP_TARGET_S,
            }
        )
        before = counters(sb)
        wall, rss, rc, _ = measure_own([sys.executable, script("poll.py"), "--job", job], env)
        rows.append(
            {
                "bench": f"poll the finished {n}-request job",
                "client": "poll.py --job",
                "seconds": wall,
                "peak_rss_mb": rss,
                "throughput": calls_text(diff(counters(sb), before)),
                "ok": rc in (0, 5) and rss <= RSS_TARGET_MB,
            }
        )
        nxt = shlex.split(json.loads(runs[-1][4] or "{}").get("next") or "")
        at = [i for i, a in enumerate(nxt) if a.endswith("retry_failed.py")]
        rerun = nxt[at[0] + 1 :] if at else ["--job", job]
        wall, rss, rc, text = measure_own([sys.executable, script("retry_failed.py"), *rerun, "--dry-run"], env)
        rows.append(
            {
                "bench": f"dry run of the rerun the finished {n}-request job's report asks for",
                "client": "retry_failed.py --dry-run " + " ".join(rerun[2:]),
                "seconds": wall,
                "peak_rss_mb": rss,
                "throughput": f"{json.loads(text or '{}').get('requests')} requests to rerun",
                "ok": rc == 0 and rss <= RSS_TARGET_MB,
            }
        )
    finally:
        sb.stop()
    text = "\n".join(
        [
            AGAIN,
            "",
            f"Measured {time.strftime('%Y-%m-%d')} with `python3 bench/bench_ten_million.py --finished-only --workdir "
            f"DIR` ({time.time() - started:.0f} s; load average {load:.1f} at the start), on the job of the run above, "
            "against the sandbox restarted on its data.",
            "",
            table(rows),
        ]
    )
    print(text)
    if n == 10_000_000:
        with open(RESULTS, encoding="utf-8") as fh:
            doc = fh.read()
        if AGAIN in doc:
            start = doc.index(AGAIN)
            nxt = doc.find("\n## ", start)
            doc = doc[:start].rstrip("\n") + "\n\n" + text + "\n" + (doc[nxt:] if nxt != -1 else "")
        elif SECTION in doc:
            start = doc.index(SECTION)
            nxt = doc.find("\n## ", start + len(SECTION))
            end = nxt if nxt != -1 else len(doc)
            doc = doc[:end].rstrip("\n") + "\n\n" + text + "\n" + doc[end:]
        with open(RESULTS, "w", encoding="utf-8") as fh:
            fh.write(doc)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    raise SystemExit(main())
