#!/usr/bin/env python3
"""`make bench` (build): create_batch_file.py next to a bare loop that writes the same lines.

For each input (prompts, a CSV, a JSONL file; N rows each, generated under bench/data/), two
child processes, in turns, REPEATS times: create_batch_file.py (reading, building, checking
every request, validating the whole file, renaming it in place) and a bare Python loop that
reads the same input the plainest way (lines, csv.reader, json.loads) and writes each request
with json.dumps. Both files must be byte for byte the same. The figure is the bare loop's
median wall time over the script's: at least TARGET (0.8) or this bench fails (exit 1).

  python3 bench/bench_build.py             # 500,000 rows of each input, 3 runs (about 1 minute)
  python3 bench/bench_build.py --rows 20000 --repeats 1   # a smoke run (not written)

The section "Building" of bench/results.md is replaced by the full run's table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Tuple

from bench_scale import measure_own
from run_all import DATA, MODEL, SCRIPTS, table, write_section

SECTION = "## Building: create_batch_file.py next to a bare json.dumps loop"
TARGET = 0.8
PAD = "lorem ipsum dolor sit amet " * 3

# The bare loops: the same lines as create_batch_file.py writes (its default model and
# endpoint, custom ids <input stem>-<row number or id>), read and written the plainest way.
BARE = {
    "prompts": """
import json, sys
with open(sys.argv[1], encoding="utf-8") as f, open(sys.argv[2], "w", encoding="utf-8") as o:
    for i, line in enumerate(f, 1):
        o.write(json.dumps({"custom_id": f"p-{i:06d}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": line.rstrip("\\n")}]}},
            ensure_ascii=False, separators=(",", ":")) + "\\n")
""",
    "csv": """
import csv, json, sys
with open(sys.argv[1], encoding="utf-8", newline="") as f, open(sys.argv[2], "w", encoding="utf-8") as o:
    rows = csv.reader(f)
    next(rows)
    for row in rows:
        o.write(json.dumps({"custom_id": f"c-{row[0]}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": row[1]}]}},
            ensure_ascii=False, separators=(",", ":")) + "\\n")
""",
    "jsonl": """
import json, sys
with open(sys.argv[1], encoding="utf-8") as f, open(sys.argv[2], "w", encoding="utf-8") as o:
    for line in f:
        row = json.loads(line)
        o.write(json.dumps({"custom_id": f"j-{row['id']}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": row["text"]}]}},
            ensure_ascii=False, separators=(",", ":")) + "\\n")
""",
}


def make_inputs(rows: int) -> Dict[str, str]:
    """p.txt, c.csv and j.jsonl with ``rows`` rows each (kept in bench/data/ for the next run)."""
    folder = os.path.join(DATA, f"build-{rows}")
    os.makedirs(folder, exist_ok=True)
    paths = {
        k: os.path.join(folder, name) for k, name in (("prompts", "p.txt"), ("csv", "c.csv"), ("jsonl", "j.jsonl"))
    }
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    texts = (
        f"Question {i}: summarise the following passage, \u00e9t\u00e9 \u201cquoted\u201d. {PAD}" for i in range(rows)
    )
    with open(paths["prompts"], "w", encoding="utf-8") as p, open(paths["csv"], "w", encoding="utf-8", newline="") as c:
        with open(paths["jsonl"], "w", encoding="utf-8") as j:
            w = csv.writer(c)
            w.writerow(["id", "text"])
            for i, text in enumerate(texts):
                p.write(text + "\n")
                w.writerow([f"r{i}", text])
                j.write(json.dumps({"id": f"r{i}", "text": text}, ensure_ascii=False) + "\n")
    return paths


def commands(kind: str, src: str, out: str) -> Tuple[List[str], List[str]]:
    """(create_batch_file.py, bare loop) for one input."""
    tool = [sys.executable, os.path.join(SCRIPTS, "create_batch_file.py"), out + ".tool.jsonl", "-q"]
    tool += {
        "prompts": ["--prompts", src],
        "csv": ["--csv", src, "--id-column", "id", "--template", "{text}"],
        "jsonl": ["--jsonl", src, "--id-field", "id", "--template", "{text}"],
    }[kind]
    bare = [sys.executable, "-c", f"MODEL = {MODEL!r}\n" + BARE[kind], src, out + ".bare.jsonl"]
    return tool, bare


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    paths = make_inputs(args.rows)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="")  # both as a user runs them: bytecode cached
    rows: List[dict] = []
    notes: List[str] = []
    started, load = time.time(), os.getloadavg()[0]
    ok_all = True
    with tempfile.TemporaryDirectory(prefix="dwb-build-") as tmp:
        for kind in ("prompts", "csv", "jsonl"):
            base = os.path.join(tmp, {"prompts": "p", "csv": "c", "jsonl": "j"}[kind])
            tool, bare = commands(kind, paths[kind], base)
            # the tool names ids after its output's stem: give both the same file name stem
            tool[2] = os.path.join(tmp, kind, os.path.basename(base) + ".jsonl")
            os.makedirs(os.path.dirname(tool[2]), exist_ok=True)
            times: Dict[str, List[float]] = {"tool": [], "bare": []}
            rss: Dict[str, float] = {"tool": 0.0, "bare": 0.0}
            codes = []
            measure_own(tool, env)  # warm: bytecode written, input in the page cache
            for _ in range(args.repeats):
                for who, cmd in (("tool", tool), ("bare", bare)):
                    wall, peak, rc, _ = measure_own(cmd, env)
                    times[who].append(wall)
                    rss[who] = max(rss[who], peak)
                    codes.append(rc)
            with open(tool[2], "rb") as a, open(base + ".bare.jsonl", "rb") as b:
                same = a.read() == b.read()
            t, b_ = statistics.median(times["tool"]), statistics.median(times["bare"])
            ratio = b_ / t
            ok = same and all(c == 0 for c in codes) and ratio >= TARGET
            ok_all = ok_all and ok
            label = f"build {args.rows} requests from {kind}"
            rows.append(
                {
                    "bench": label,
                    "client": "create_batch_file.py",
                    "seconds": t,
                    "peak_rss_mb": rss["tool"],
                    "throughput": f"{args.rows / t / 1e3:.0f}k req/s, {ratio:.2f}x the bare loop (target {TARGET}x)",
                    "ok": ok,
                }
            )
            rows.append(
                {
                    "bench": label,
                    "client": "bare json.dumps loop",
                    "seconds": b_,
                    "peak_rss_mb": rss["bare"],
                    "throughput": f"{args.rows / b_ / 1e3:.0f}k req/s" + ("" if same else "; OUTPUT DIFFERS"),
                    "ok": same,
                }
            )
            notes.append(
                f"- {kind}: create_batch_file.py runs (s) {[round(x, 2) for x in times['tool']]}, bare loop "
                f"{[round(x, 2) for x in times['bare']]}; the two files are {'identical' if same else 'DIFFERENT'}."
            )
    cpu = f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    text = "\n".join(
        [
            SECTION,
            "",
            f"Measured {time.strftime('%Y-%m-%d')} on {cpu} with `python3 bench/bench_build.py` "
            f"({time.time() - started:.0f} s; part of `make bench`; load average {load:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end). Each input has {args.rows} rows (about 300 bytes a request); "
            f"the two clients ran in turns, {args.repeats} times each, as child processes with bytecode cached; "
            "wall times are medians. create_batch_file.py checks every request, validates the whole file and "
            "writes it atomically; the bare loop only writes.",
            "",
            table(rows),
            "",
            *notes,
        ]
    )
    print(text)
    if args.rows == 500_000 and args.repeats >= 3:
        write_section(text, SECTION)
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    raise SystemExit(main())
