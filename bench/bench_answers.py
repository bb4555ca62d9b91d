#!/usr/bin/env python3
"""What the answer checks add to fetching a million results (part of `make bench`).

Every result a fetch merges is checked (empty, cut, not the JSON asked for, filtered: see
scripts/_dwbatches/results/answers.py). The checks live in the merge (indexing the downloaded lines
and writing the results in input order); downloading is not affected, so the merge's share is
an upper bound of what they add to a whole fetch. This bench merges the same million
downloaded results (chat answers of a reasoning model, as the sandbox writes them, half of
the requests asking for a JSON schema) in turns: with the checks, and with them replaced by
a function that calls every answer good, in one process; the median of 3 runs each. Writes a
section of bench/results.md.

  python3 bench/bench_answers.py                 # 1,000,000 results (about 3 minutes)
  python3 bench/bench_answers.py --requests 100000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from _dwbatches.results import answers, merge  # noqa: E402
from run_all import write_section  # noqa: E402

HEADING = "## Answer checks: what they add to fetching a million results"
MODEL = "Qwen/Qwen3.5-35B-A3B-FP8"
SCHEMA = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "required": ["label"]}}}


def write_data(workdir: str, n: int) -> tuple:
    """The requests (input order) and the downloaded output lines (completion order: reversed)."""
    requests = os.path.join(workdir, "requests.jsonl")
    output = os.path.join(workdir, "output.jsonl")
    with open(requests, "w", encoding="utf-8") as fh:
        for i in range(n):
            body: Dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": f"Label review {i}"}]}
            if i % 2:
                body["response_format"] = SCHEMA
            line = {"custom_id": f"r-{i:07d}", "method": "POST", "url": "/v1/chat/completions", "body": body}
            fh.write(json.dumps(line, separators=(",", ":")) + "\n")
    with open(output, "w", encoding="utf-8") as fh:
        for i in reversed(range(n)):
            content = json.dumps({"label": "positive"}) if i % 2 else "positive"
            body = {
                "id": f"chatcmpl-{i}",
                "object": "chat.completion",
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "reasoning_content": "Let me think. " * 4},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": 5,
                    "completion_tokens": 20,
                    "total_tokens": 25,
                    "completion_tokens_details": {"reasoning_tokens": 14},
                },
            }
            line = {
                "id": f"req-{i}",
                "custom_id": f"r-{i:07d}",
                "response": {"status_code": 200, "request_id": f"req-{i}", "body": body},
                "error": None,
            }
            fh.write(json.dumps(line, separators=(",", ":")) + "\n")
    return requests, output


def merge_once(requests: str, output: str, workdir: str, n: int) -> float:
    started = time.perf_counter()
    index = merge.ResultIndex(capacity=n)
    index.add_file(output, "output")
    merger = merge.Merger(index, merge.MISSING_NOT_RUN)
    try:
        counts = merger.write_jsonl(
            merge.iter_input_order(requests),
            requests,
            "simple",
            os.path.join(workdir, "out.jsonl"),
            os.path.join(workdir, "err.jsonl"),
        )
    finally:
        index.close()
    assert counts.requests == n, counts
    return time.perf_counter() - started


def without_checks() -> Callable[[], None]:
    """Replace the checks with one that calls every answer good; returns the undo."""
    saved = answers.check, answers.expectation
    answers.check = lambda body, expect=None, text_good=False: answers.GOOD  # type: ignore[assignment]
    answers.expectation = lambda request: None  # type: ignore[assignment]

    def undo() -> None:
        answers.check, answers.expectation = saved

    return undo


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/results.md alone")
    args = ap.parse_args()
    n = args.requests
    with tempfile.TemporaryDirectory(prefix="dwb-bench-answers-") as workdir:
        requests, output = write_data(workdir, n)
        times: Dict[str, List[float]] = {"with": [], "without": []}
        for _ in range(args.runs):  # in turns, so that a busy moment of the machine hits both
            times["with"].append(merge_once(requests, output, workdir, n))
            undo = without_checks()
            try:
                times["without"].append(merge_once(requests, output, workdir, n))
            finally:
                undo()
    with_s, without_s = statistics.median(times["with"]), statistics.median(times["without"])
    added = (with_s - without_s) / without_s * 100
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = [
        HEADING,
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPUs, {platform.machine()}, Python "
        f"{platform.python_version()} with `python3 bench/bench_answers.py` (load average {load:.1f} at the end). "
        f"The merge of a fetch (index the downloaded lines, write the results in input order, --format simple) over "
        f"{n:,} chat answers of a reasoning model, half of them asked for a JSON schema; median of {args.runs} runs "
        "each, in turns, in one process. Downloads are not affected by the checks, so this share is an upper bound "
        "of what they add to a whole fetch.",
        "",
        "| merge of the results | wall (s) | runs (s) |",
        "|---|---:|---|",
        f"| with the answer checks | {with_s:.2f} | {', '.join(f'{t:.2f}' for t in times['with'])} |",
        f"| checks replaced by 'every answer good' | {without_s:.2f} | "
        f"{', '.join(f'{t:.2f}' for t in times['without'])} |",
        "",
        f"- The answer checks add {added:.1f}% to the merge (target: at most 10%).",
        "",
    ]
    text = "\n".join(rows)
    print(text)
    if not args.no_write:
        write_section(text, HEADING)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
