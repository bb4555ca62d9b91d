#!/usr/bin/env python3
"""Benchmark the local sandbox server (scripts/sandbox_server.py).

1. 100,000-request chat batch with the built-in model and zero latency: wall time of the
   upload (streamed with requests), of the processing (create -> completed) and of the full
   output download (streamed).
2. A ~200 MB upload: the server's peak RSS (VmHWM from /proc/<pid>/status) before and after.

    python3 bench/bench_sandbox.py [--requests 100000] [--big-mb 200] [--skip-big]

Inputs are generated under bench/.work/ (git-ignored) and reused on later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from _dwbatches.core.sandbox import SandboxProcess  # noqa: E402

WORK = ROOT / "bench" / ".work"
MODEL = "Qwen/Qwen3.5-9B"


class MultipartFile:
    """A multipart/form-data body streamed from a file, with a known length."""

    def __init__(self, path: Path, purpose: str = "batch") -> None:
        self.boundary = "bench" + uuid.uuid4().hex
        self.head = (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.size = path.stat().st_size
        self.fh = open(path, "rb")
        self.parts = [self.head, None, self.tail]
        self.length = len(self.head) + self.size + len(self.tail)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self.length

    def read(self, n: int = 65536) -> bytes:
        while self.parts:
            part = self.parts[0]
            if part is None:
                data = self.fh.read(n)
                if data:
                    return data
                self.parts.pop(0)
                continue
            self.parts.pop(0)
            return part
        return b""

    def close(self) -> None:
        self.fh.close()


def make_chat_file(path: Path, n: int) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            body = {"model": MODEL, "messages": [{"role": "user", "content": f"Summarise item {i} in one line."}]}
            fh.write(
                json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})
            )
            fh.write("\n")


def make_big_file(path: Path, megabytes: int) -> int:
    """~``megabytes`` MB of chat lines of ~4 KB each; returns the line count."""
    line_bytes = 4000
    n = megabytes * 1_000_000 // line_bytes - 1
    if path.exists() and path.stat().st_size >= (n * line_bytes * 0.99):
        return n
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            head = {"custom_id": f"big-{i}", "method": "POST", "url": "/v1/chat/completions"}
            text = "lorem ipsum dolor sit amet " * 200
            body = {"model": MODEL, "messages": [{"role": "user", "content": ""}]}
            line = json.dumps(dict(head, body=body))
            pad = max(0, line_bytes - len(line) - 1)
            body["messages"][0]["content"] = (text * 2)[:pad]
            fh.write(json.dumps(dict(head, body=body)) + "\n")
    return n


def start_server(data_dir: str, key: str, *extra: str) -> tuple:
    """(the server, its ready line); its log goes to bench/.work/sandbox.log."""
    WORK.mkdir(parents=True, exist_ok=True)
    server = SandboxProcess(data_dir, list(extra), str(WORK / "sandbox.log"), api_key=key).start()
    return server, server.ready


def stop_server(server: SandboxProcess) -> None:
    server.stop(30)


def mem_kib(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


def upload(session: requests.Session, base: str, path: Path) -> tuple:
    body = MultipartFile(path)
    started = time.monotonic()
    try:
        res = session.post(f"{base}/files", data=body, headers={"Content-Type": body.content_type}, timeout=3600)
    finally:
        body.close()
    elapsed = time.monotonic() - started
    if res.status_code != 201:
        raise SystemExit(f"upload failed: {res.status_code} {res.text[:300]}")
    return res.json(), elapsed


def bench_batch(n: int) -> dict:
    path = WORK / f"chat-{n}.jsonl"
    make_chat_file(path, n)
    key = "sk-bench-" + secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as data_dir:
        server, ready = start_server(data_dir, key, "--max-requests-per-file", "0")
        base = ready["base_url"]
        try:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {key}"
            file_obj, upload_s = upload(session, base, path)
            started = time.monotonic()
            batch = session.post(
                f"{base}/batches",
                json={"input_file_id": file_obj["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
                timeout=60,
            ).json()
            while True:
                batch = session.get(f"{base}/batches/{batch['id']}", timeout=60).json()
                if batch["status"] in ("completed", "failed", "cancelled"):
                    break
                time.sleep(0.2)
            process_s = time.monotonic() - started
            started = time.monotonic()
            lines = 0
            size = 0
            with session.get(f"{base}/files/{batch['output_file_id']}/content", stream=True, timeout=600) as res:
                for chunk in res.iter_content(chunk_size=1 << 16):
                    size += len(chunk)
                    lines += chunk.count(b"\n")
            download_s = time.monotonic() - started
            mem = mem_kib(ready["pid"])
        finally:
            stop_server(server)
    return {
        "requests": n,
        "input_mb": round(path.stat().st_size / 1e6, 1),
        "upload_s": round(upload_s, 2),
        "processing_s": round(process_s, 2),
        "status": batch["status"],
        "completed": batch["request_counts"]["completed"],
        "download_s": round(download_s, 2),
        "output_lines": lines,
        "output_mb": round(size / 1e6, 1),
        "server_peak_rss_mib": round(mem["VmHWM"] / 1024, 1),
    }


def bench_big_upload(megabytes: int) -> dict:
    path = WORK / f"big-{megabytes}mb.jsonl"
    n = make_big_file(path, megabytes)
    key = "sk-bench-" + secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as data_dir:
        server, ready = start_server(data_dir, key, "--max-file-bytes", str(path.stat().st_size + 1024))
        try:
            time.sleep(0.3)
            before = mem_kib(ready["pid"])
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {key}"
            file_obj, upload_s = upload(session, ready["base_url"], path)
            after = mem_kib(ready["pid"])
        finally:
            stop_server(server)
    return {
        "upload_mb": round(path.stat().st_size / 1e6, 1),
        "lines": n,
        "bytes_reported": file_obj["bytes"],
        "upload_s": round(upload_s, 2),
        "peak_rss_before_mib": round(before["VmHWM"] / 1024, 1),
        "peak_rss_after_mib": round(after["VmHWM"] / 1024, 1),
        "rss_after_mib": round(after["VmRSS"] / 1024, 1),
    }


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000, help="batch size (default 100000)")
    parser.add_argument("--big-mb", type=int, default=200, help="size of the big upload in MB (default 200)")
    parser.add_argument("--skip-big", action="store_true", help="skip the big-upload memory measurement")
    args = parser.parse_args(argv)
    print(f"cpus: {os.cpu_count()}  python: {sys.version.split()[0]}", flush=True)
    result = bench_batch(args.requests)
    print("batch: " + json.dumps(result), flush=True)
    if not args.skip_big:
        print("big upload: " + json.dumps(bench_big_upload(args.big_mb)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
