#!/usr/bin/env python3
"""`make demo`: a real batch, end to end, against the bundled sandbox; no API key needed.

Starts the sandbox on a free loopback port with a throwaway key, builds a batch file from
examples/prompts.txt, submits it, waits for it, fetches the results in input order, prints a
summary, and stops the sandbox. Every step runs the same scripts an agent would run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from _dwbatches.core import commands, compat  # noqa: E402
from _dwbatches.core.sandbox import SandboxProcess  # noqa: E402

RUN_DIR = os.path.join(ROOT, "demo-run")


def step(title: str, script: str, *args: str, env: dict, ok=(0,)) -> dict:
    cmd = [sys.executable, os.path.join("scripts", script), *args]
    shown = compat.quote_args([compat.command_path(os.path.join("scripts", script)), *map(compat.command_path, args)])
    print(f"\n$ {commands.runner()} {shown}", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    if proc.returncode not in ok:
        raise SystemExit(f"demo: {title} failed with exit code {proc.returncode}")
    doc = json.loads(proc.stdout)
    return doc


def main() -> int:
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    os.makedirs(RUN_DIR)
    print("Starting the sandbox (a local Doubleword-compatible server) ...", flush=True)
    with SandboxProcess(
        data_dir=os.path.join(RUN_DIR, "sandbox-data"), extra_args=["--latency", "0.3", "--concurrency", "4"]
    ) as sb:
        print(f"sandbox at {sb.base_url}")
        env = dict(os.environ, DOUBLEWORD_API_KEY=sb.api_key, DOUBLEWORD_BASE_URL=sb.base_url)
        batch_file = os.path.join("demo-run", "requests.jsonl")
        made = step(
            "create",
            "create_batch_file.py",
            batch_file,
            "--prompts",
            "examples/prompts.txt",
            "--max-tokens",
            "200",
            "--reasoning",
            "none",
            "--id-prefix",
            "demo",
            env=env,
        )
        print(f"  {made['requests']} requests written to {made['path']}")
        step("check setup", "check_setup.py", env=env)
        ran = step(
            "run",
            "run_batch.py",
            batch_file,
            "--wait",
            "--interval",
            "1",
            "--timeout",
            "120",
            "--format",
            "simple",
            env=env,
        )
        print(f"\njob: {ran.get('job')}")
        print(f"succeeded {ran.get('succeeded')}, failed {ran.get('failed')}, missing {ran.get('missing')}")
        out = ran.get("output")
        if out and os.path.exists(out):
            print(f"results ({out}), in input order:")
            with open(out, encoding="utf-8") as fh:
                for line in fh:
                    row = json.loads(line)
                    text = row.get("content") or row.get("error") or ""
                    text = text if isinstance(text, str) else json.dumps(text)
                    print(f"  {row['custom_id']:<14} {'ok ' if row.get('ok') else 'ERR'} {text[:70]}")
    print("\nsandbox stopped. Demo complete.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
