#!/usr/bin/env python3
"""`make flake`: run the whole suite several times under CPU load and count the green runs.

A flaky test passes alone and fails now and then when the machine is busy. This runs the suite
``--runs`` times (pytest-xdist, ``--workers`` processes) while ``--load`` busy-loop processes
(default: one per core) take the CPU, then stops them and prints, per run, its exit code, its
wall time and the tests that failed, and at the end ``N of M runs green``. Exit 0 only when every
run was green. Each run's whole output is kept in ``.cache/flake/run-N.log``.

  python3 tests/flake.py                    # 5 runs, -n 6, one busy loop per core
  python3 tests/flake.py --runs 10 --load 4 -- -m "not slow"   # after --: more pytest arguments
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import time
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def busy_loop() -> None:  # pragma: no cover - runs in the load processes
    n = 0
    while True:
        n = (n * 1103515245 + 12345) & 0x7FFFFFFF


def failed_tests(output: str) -> List[str]:
    """The ids of the tests pytest's short summary lists as failed or in error."""
    return re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.M)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="how many times to run the suite (5)")
    parser.add_argument("--workers", default="6", help="pytest-xdist processes (6)")
    parser.add_argument("--load", type=int, default=os.cpu_count() or 1, help="busy-loop processes (one per core)")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)

    loaders = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(args.load)]
    for p in loaders:
        p.start()
    print(f"{args.load} busy-loop process(es) on {os.cpu_count()} core(s); {args.runs} run(s) at -n {args.workers}")
    logs = os.path.join(ROOT, ".cache", "flake")
    os.makedirs(logs, exist_ok=True)
    green = 0
    started = time.monotonic()
    try:
        for i in range(1, args.runs + 1):
            t0 = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-n", args.workers, *args.pytest_args],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            took = time.monotonic() - t0
            log = os.path.join(logs, f"run-{i}.log")
            with open(log, "w", encoding="utf-8") as fh:
                fh.write(proc.stdout)
            tail = proc.stdout.strip().splitlines()[-1:] or [""]
            failed = failed_tests(proc.stdout)
            green += proc.returncode == 0
            print(
                f"run {i}: exit {proc.returncode} in {took:.0f}s: {tail[0]} ({os.path.relpath(log, ROOT)})", flush=True
            )
            for test in failed:
                print(f"    failed: {test}", flush=True)
    finally:
        for p in loaders:
            p.terminate()
        for p in loaders:
            p.join(5)
    print(f"{green} of {args.runs} runs green under {args.load} busy loop(s), {time.monotonic() - started:.0f}s in all")
    return 0 if green == args.runs else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
