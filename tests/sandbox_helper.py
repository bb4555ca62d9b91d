"""Start and drive the local Doubleword Batch API sandbox from tests (standard library only;
the server is started by the product's launcher, ``_dwbatches.core.sandbox``).

sb = Sandbox(data_dir, api_key="sk-test-...").start()
sb.base_url        # http://127.0.0.1:PORT/v1
res = sb.upload(jsonl_bytes(chat_requests(3)))
batch = sb.create_batch(res.json()["id"]).json()
sb.wait_batch(batch["id"])
sb.stop()
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterable

from _dwbatches.core.sandbox import SandboxProcess, SandboxStartError

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = REPO_ROOT / "scripts"
SERVER_SCRIPT = SCRIPTS / "sandbox_server.py"
SANDBOX_PACKAGE = SCRIPTS / "_dwsandbox"

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
CHAT_MODEL = "Qwen/Qwen3.5-9B"  # a reasoning model: it thinks before it answers
INSTRUCT_MODEL = "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8"  # answers at once
EMBEDDING_MODEL = "Qwen/Qwen3-Embedding-8B"


class SandboxError(RuntimeError):
    pass


def new_api_key() -> str:
    """A throwaway sandbox key: ``sk-test-`` plus 40 url-safe characters."""
    return "sk-test-" + secrets.token_urlsafe(30)[:40]


class HTTPResult:
    """A finished HTTP exchange: ``status``, ``headers`` (case-insensitive), ``body`` bytes."""

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def lines(self) -> list:
        """The body as parsed NDJSON lines."""
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def header(self, name: str, default: str | None = None) -> str | None:
        value = self.headers.get(name)
        return default if value is None else value

    def __repr__(self) -> str:
        return f"HTTPResult({self.status}, {self.body[:200]!r})"


def chat_requests(n: int, model: str = CHAT_MODEL, prefix: str = "req-", start: int = 0) -> list:
    """``n`` chat-completion request lines with custom_ids ``req-0``, ``req-1``..."""
    return [
        {
            "custom_id": f"{prefix}{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"Question number {i}"}]},
        }
        for i in range(start, start + n)
    ]


def jsonl_bytes(items: Iterable[Any]) -> bytes:
    """Serialise dicts (or pre-serialised strings) as JSONL."""
    out = []
    for item in items:
        out.append(item if isinstance(item, str) else json.dumps(item))
    return ("\n".join(out) + "\n").encode("utf-8")


def multipart_body(
    fields: dict, file_bytes: bytes, filename: str = "batch.jsonl", boundary: str | None = None
) -> tuple:
    """Return (content_type, body) of a multipart/form-data upload with a ``file`` part."""
    boundary = boundary or "sandbox" + uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        + file_bytes
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts)


class Sandbox:
    """One sandbox server process (``scripts/sandbox_server.py``) bound to a free port, started
    by the product's launcher (``_dwbatches.core.sandbox.SandboxProcess``), with HTTP helpers.

    ``api_key``: the key the server wants (None: the random one it makes, read from its ready
    line; or the one ``env`` gives it); ``no_auth``: it wants none (``--no-auth``).
    ``extra_args`` are passed to the server; ``env`` replaces os.environ for it; ``python``
    is the interpreter (default: the one running the tests).  The server's stderr goes to
    ``log_path`` (next to the data dir).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        api_key: str | None = None,
        extra_args: Iterable[str] = (),
        env: dict | None = None,
        python: str | None = None,
        no_auth: bool = False,
    ) -> None:
        self.python = python or sys.executable
        self.data_dir = Path(data_dir)
        self.api_key = api_key
        self.no_auth = no_auth
        self.extra_args = list(extra_args)
        self.port: int | None = None
        self.pid: int | None = None
        self.base_url: str | None = None
        self.ready: dict = {}
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        self._process = SandboxProcess(
            str(self.data_dir), log_path=str(self.log_path), api_key=None, env=env, cwd=str(REPO_ROOT)
        )

    # lifecycle ---------------------------------------------------------------------
    @property
    def proc(self) -> subprocess.Popen | None:
        return self._process.proc

    def command(self) -> list:
        return self._sync().command()

    def _sync(self) -> SandboxProcess:
        """The launcher, with this sandbox's current key, flags and interpreter."""
        self._process.api_key = self.api_key or None
        self._process.no_auth = self.no_auth
        self._process.extra_args = list(self.extra_args)
        self._process.python = self.python
        return self._process

    def start(self, timeout: float = 15.0) -> Sandbox:
        if self.running:
            raise SandboxError("sandbox already running")
        try:
            process = self._sync().start(timeout)
        except SandboxStartError as err:
            raise SandboxError(f"{err}; log:\n{self.log_text()}") from None
        self.ready = dict(process.ready)
        if self.api_key is None and not self.no_auth:
            self.api_key = process.api_key  # the server's own random key (None: its env gave one)
        self.port = process.port
        self.pid = process.pid
        self.base_url = process.base_url
        return self

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``)."""
        assert self.base_url is not None
        return self.base_url[: -len("/v1")]

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        return self._process.stop(timeout)

    def kill(self) -> None:
        """SIGKILL (no clean shutdown): simulates a crash."""
        self._process.kill()

    def restart(self, extra_args: Iterable[str] | None = None) -> Sandbox:
        """Stop and start again on the same data dir (the port may change)."""
        self.stop()
        if extra_args is not None:
            self.extra_args = list(extra_args)
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self._process.log_text()

    def env(self) -> dict:
        """os.environ plus DOUBLEWORD_API_KEY / DOUBLEWORD_BASE_URL pointing at this sandbox."""
        env = dict(os.environ)
        env["DOUBLEWORD_API_KEY"] = self.api_key or "sk-sandbox"
        env["DOUBLEWORD_BASE_URL"] = str(self.base_url)
        return env

    def __enter__(self) -> Sandbox:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # HTTP --------------------------------------------------------------------------
    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        if path.startswith(("/v1/", "/_sandbox", "/ai/")) or path == "/v1":
            return self.root_url + path
        return str(self.base_url) + "/" + path.lstrip("/")

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict | None = None,
        params: dict | None = None,
        api_key: str | None = None,
        auth: bool = True,
        timeout: float = 30.0,
    ) -> HTTPResult:
        """Send one request; never raises for HTTP error statuses.

        ``path`` is relative to base_url (``files``) or absolute (``/_sandbox/stats``).
        ``api_key`` overrides the sandbox key; ``auth=False`` sends no Authorization header.
        """
        url = self.url(path)
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
        hdrs = dict(headers or {})
        if json_body is not None:
            data = json.dumps(json_body).encode("utf-8")
            hdrs.setdefault("Content-Type", "application/json")
        key = api_key if api_key is not None else self.api_key
        if auth and key:
            hdrs.setdefault("Authorization", f"Bearer {key}")
        req = urllib.request.Request(url, data=data, method=method.upper(), headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return HTTPResult(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as err:
            body = err.read()
            return HTTPResult(err.code, err.headers, body)

    def get(self, path: str, **kwargs: Any) -> HTTPResult:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json_body: Any = None, **kwargs: Any) -> HTTPResult:
        return self.request("POST", path, json_body=json_body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> HTTPResult:
        return self.request("DELETE", path, **kwargs)

    def get_json(self, path: str, **kwargs: Any) -> Any:
        res = self.get(path, **kwargs)
        if res.status != 200:
            raise SandboxError(f"GET {path} -> {res.status}: {res.text}")
        return res.json()

    # API shortcuts -----------------------------------------------------------------
    def upload(
        self,
        content: bytes,
        filename: str = "batch.jsonl",
        purpose: str | None = "batch",
        fields: dict | None = None,
        **kwargs: Any,
    ) -> HTTPResult:
        all_fields = {} if purpose is None else {"purpose": purpose}
        all_fields.update(fields or {})
        ctype, body = multipart_body(all_fields, content, filename)
        return self.request("POST", "files", data=body, headers={"Content-Type": ctype}, **kwargs)

    def upload_requests(self, items: Iterable[Any], filename: str = "batch.jsonl") -> dict:
        """Upload request dicts; return the File object (raises unless 201)."""
        res = self.upload(jsonl_bytes(items), filename=filename)
        if res.status != 201:
            raise SandboxError(f"upload failed: {res.status} {res.text}")
        return res.json()

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str = "/v1/chat/completions",
        completion_window: str = "24h",
        metadata: dict | None = None,
        **kwargs: Any,
    ) -> HTTPResult:
        body: dict = {"input_file_id": input_file_id, "endpoint": endpoint, "completion_window": completion_window}
        if metadata is not None:
            body["metadata"] = metadata
        return self.post("batches", body, **kwargs)

    def submit(self, items: Iterable[Any], **batch_kwargs: Any) -> dict:
        """Upload requests and create a batch; return the Batch object."""
        file_obj = self.upload_requests(items)
        res = self.create_batch(file_obj["id"], **batch_kwargs)
        if res.status != 201:
            raise SandboxError(f"create batch failed: {res.status} {res.text}")
        return res.json()

    def batch(self, batch_id: str) -> dict:
        return self.get_json(f"batches/{batch_id}")

    def wait_batch(
        self, batch_id: str, statuses: Iterable[str] = TERMINAL_STATUSES, timeout: float = 30.0, interval: float = 0.05
    ) -> dict:
        """Poll GET /v1/batches/{id} until its status is in ``statuses``; return the batch."""
        wanted = set(statuses)
        deadline = time.monotonic() + timeout
        while True:
            batch = self.batch(batch_id)
            if batch["status"] in wanted:
                return batch
            if time.monotonic() > deadline:
                raise SandboxError(f"batch {batch_id} still {batch['status']} after {timeout}s: {batch}")
            time.sleep(interval)

    def content(self, file_id: str, **params: Any) -> HTTPResult:
        return self.get(f"files/{file_id}/content", params=params or None)

    # sandbox control ---------------------------------------------------------------
    def set_faults(self, faults: dict) -> dict:
        res = self.request("PUT", "/_sandbox/faults", json_body=faults)
        if res.status != 200:
            raise SandboxError(f"set_faults failed: {res.status} {res.text}")
        return res.json()

    def clear_faults(self) -> dict:
        return self.set_faults({})

    def faults(self) -> dict:
        return self.get_json("/_sandbox/faults")

    def stats(self) -> dict:
        return self.get_json("/_sandbox/stats")

    def reset_stats(self) -> dict:
        res = self.request("POST", "/_sandbox/reset-stats")
        if res.status != 200:
            raise SandboxError(f"reset_stats failed: {res.status} {res.text}")
        return res.json()

    def reset(self) -> dict:
        """Forget every file, batch and request; faults back to the start; counters zero."""
        res = self.request("POST", "/_sandbox/reset")
        if res.status != 200:
            raise SandboxError(f"reset failed: {res.status} {res.text}")
        return res.json()


def list_all(sb: Sandbox, path: str, **params: Any) -> list:
    """Every object of a paginated list endpoint of the sandbox (follows after/has_more)."""
    out: list = []
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


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (none: None). Sends nothing."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: a UDP connect only picks the route
            addr = s.getsockname()[0]
    except OSError:
        return None
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr
