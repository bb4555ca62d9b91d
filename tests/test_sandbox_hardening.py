"""Sandbox hardening: loopback by default, every route behind the key (a random one unless one
is given; none only with --no-auth), a Host check against DNS rebinding, a private data dir,
a bounded upload that costs no memory, and ids that cannot walk out of the data directory.

The sandbox is a test tool, but people run it on their machines (``make demo``, rehearsals),
sometimes with a real upstream key behind it; it must not be reachable from the network unless
asked, nor by another user of the machine or a web page, nor be a way to read files or
exhaust memory.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import select
import socket
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import List, Optional, Tuple

import pytest
from sandbox_helper import (
    SANDBOX_PACKAGE,
    SERVER_SCRIPT,
    Sandbox,
    chat_requests,
    jsonl_bytes,
    new_api_key,
    non_loopback_address,
)

MB = 1024 * 1024
# the socket table and the memory high-water mark are read from Linux's /proc
needs_proc = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc")


def listening(port: int) -> List[str]:
    """Local addresses (dotted IPv4, or 'ipv6') with a listening TCP socket on ``port``."""
    found = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            host, _, p = local.partition(":")
            if state != "0A" or int(p, 16) != port:
                continue
            if v6:
                found.append("ipv6:" + host)
            else:
                found.append(".".join(str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def can_connect(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


# -- binding -------------------------------------------------------------------------------------


@needs_proc
def test_binds_to_loopback_only_by_default(sandbox):
    assert sandbox.ready["base_url"].startswith("http://127.0.0.1:")
    assert listening(sandbox.port) == ["127.0.0.1"]
    assert "WARNING" not in sandbox.log_text()
    addr = non_loopback_address()
    if addr is not None:
        assert not can_connect(addr, sandbox.port)  # not reachable from the network
    assert can_connect("127.0.0.1", sandbox.port)


@needs_proc
@pytest.mark.parametrize("allowed", [False, True])
def test_binds_beyond_loopback_only_when_asked_and_says_so(sandbox_factory, allowed):
    addr = non_loopback_address()
    sb = sandbox_factory("--host", "0.0.0.0", *(["--allow-host", addr] if allowed and addr else []))
    assert listening(sb.port) == ["0.0.0.0"]
    assert "WARNING: binding 0.0.0.0 exposes the sandbox beyond this machine" in sb.log_text()
    if addr is None:
        pytest.skip("no non-loopback address to connect through")
    assert can_connect(addr, sb.port)
    res = sb.request("GET", f"http://{addr}:{sb.port}/v1/batches", api_key="sk-nope")
    if allowed:
        assert res.status == 401  # still behind the key
    else:  # Host is this machine's address, not loopback: named with --allow-host only
        assert res.status == 421 and f"Host '{addr}:{sb.port}' is not answered here" in res.text
        assert sb.request("GET", f"http://{addr}:{sb.port}/v1/batches").status == 421  # the key does not help


# -- authentication ------------------------------------------------------------------------------


def route_paths() -> List[Tuple[str, str]]:
    """Every API route of the sandbox (read from its route table), with a made-up id."""
    text = (SANDBOX_PACKAGE / "routing.py").read_text(encoding="utf-8")
    fake = str(uuid.uuid4())
    routes = re.findall(r'Route\("(GET|POST|PUT|DELETE|PATCH)", "([^"]+)"', text)
    assert len(routes) >= 20
    return [(m, t.replace("{id}", fake).replace("{model}", "Qwen/Qwen3.5-9B")) for m, t in routes]


@pytest.mark.parametrize("auth", ["wrong key", "no key", "wrong scheme"])
def test_every_route_wants_the_key(auth, sandbox):
    for method, path in route_paths():
        headers = {"Content-Type": "application/json"}
        if auth == "wrong scheme":
            headers["Authorization"] = f"Basic {sandbox.api_key}"
        res = sandbox.request(
            method,
            path,
            data=b"{}" if method in ("POST", "PUT") else None,
            headers=headers,
            api_key=new_api_key() if auth == "wrong key" else None,
            auth=auth == "wrong key",
        )
        assert res.status == 401, (method, path, res.status, res.text)
        assert sandbox.api_key not in res.text
    stats = sandbox.stats()
    assert stats["files"] == 0 and stats["batches"] == 0 and stats["uploads_received"] == 0
    assert sandbox.faults() == {"_remaining": {"http_times": [], "drop_content_times": 0}}  # nothing was changed


def sandbox_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("DW_SANDBOX_")}


def test_without_a_key_the_sandbox_makes_one_and_wants_it(tmp_path):
    """Another user of the machine read every stored prompt and spent the upstream key through
    a sandbox started without a key: now it makes a random one, printed in its ready line only."""
    keys = []
    for name in ("a", "b"):
        sb = Sandbox(tmp_path / name, env=sandbox_env()).start()
        try:
            key = sb.ready["api_key"]
            assert key and key.startswith("sk-sandbox-") and len(key) >= 40 and sb.api_key == key
            for path in ("files", "batches", "/_sandbox/stats"):
                assert sb.get(path, auth=False).status == 401, path
                assert sb.get(path, api_key="sk-sandbox").status == 401, path
                assert sb.get(path).status == 200, path
            keys.append(key)
        finally:
            sb.stop()
        assert key not in sb.log_text()
    assert keys[0] != keys[1]


def test_no_key_only_when_asked_in_so_many_words(tmp_path, sandbox_factory):
    for args, words in [
        (["--api-key", ""], "--api-key is empty; to accept requests without a key, pass --no-auth"),
        (["--no-auth", "--api-key", "sk-x"], "--api-key and --no-auth contradict each other"),
    ]:
        proc = subprocess.run(
            [sys.executable, str(SERVER_SCRIPT), "--port", "0", "--data-dir", str(tmp_path / "d"), *args],
            capture_output=True, text=True, timeout=30, env=sandbox_env(),
        )  # fmt: skip
        assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
        assert words in proc.stderr
    sb = sandbox_factory(api_key="")  # --no-auth
    assert sb.ready["api_key"] is None and sb.get("batches", auth=False).status == 200
    assert "WARNING: --no-auth: every request is accepted without a key" in sb.log_text()


def raw_get(port: int, path: str, host: Optional[str], key: str) -> Tuple[int, str]:
    """GET with exactly this Host header (None: none at all)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.putheader("Authorization", f"Bearer {key}")
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def test_only_loopback_hosts_are_answered(sandbox):
    """DNS rebinding: a web page of another site, its name pointed at 127.0.0.1, reaches the
    sandbox with that name as Host. Only loopback names and addresses (and the address bound,
    or an --allow-host name) are answered, before the key is even looked at."""
    port = sandbox.port
    allowed = [f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}", "127.9.9.9"]
    refused = [
        f"evil.example:{port}",
        "evil.example",
        f"dwb.localhost:{port}",  # resolved through DNS: not loopback by name
        "localhost.",
        "127.0.0.1.nip.io",
        "0.0.0.0",
        "[::ffff:127.0.0.1]",
        f"user@127.0.0.1:{port}",
        "127.0.0.1:port",
        "",
        None,  # no Host header at all
    ]
    for path in ("/v1/batches", "/_sandbox/stats", "/v1/no-such-route"):
        for host in allowed:
            status, body = raw_get(port, path, host, sandbox.api_key)
            assert status != 421, (path, host, body)
        for host in refused:
            status, body = raw_get(port, path, host, sandbox.api_key)
            assert status == 421 and "is not answered here" in body and "--allow-host" in body, (path, host, status)
    assert sandbox.stats()["requests"].get("GET /v1/batches") == len(allowed)  # the refused were never served


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_the_data_dir_is_private_whatever_the_umask(tmp_path):
    data = tmp_path / "sb" / "data"
    old = os.umask(0)  # the server inherits it
    try:
        sb = Sandbox(data, api_key=new_api_key()).start()
    finally:
        os.umask(old)
    try:
        sb.submit(chat_requests(2))  # the WAL and its index are written
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [data, data / "tmp", *data.glob("sandbox.db*")]}
        assert modes == {"data": 0o700, "tmp": 0o700, "sandbox.db": 0o600, "sandbox.db-wal": 0o600,
                         "sandbox.db-shm": 0o600}, modes  # fmt: skip
        assert stat.S_IMODE(sb.log_path.stat().st_mode) == 0o600  # the launcher's log of its stderr
    finally:
        sb.stop()
    for p in data.glob("sandbox.db*"):  # a database of an earlier version: 0644
        p.chmod(0o644)
    sb.start()
    try:
        assert {stat.S_IMODE(p.stat().st_mode) for p in data.glob("sandbox.db*")} == {0o600}
        assert json.loads(sb.get("batches").text)["data"]  # the same database, kept
    finally:
        sb.stop()


# -- an oversized upload -------------------------------------------------------------------------


def vm_hwm_kib(pid: int) -> Optional[int]:
    """The peak RSS of a process in KiB, from Linux's /proc (None where there is none)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    return int(re.search(r"^VmHWM:\s+(\d+) kB", text, re.M).group(1))


def stream_upload(sb: Sandbox, total: int, chunked: bool) -> Tuple[Optional[int], str, int]:
    """POST /v1/files with a generated body of ``total`` bytes, sent 1 MiB at a time until the
    server answers; returns (status or None, reply, body bytes sent before the answer came)."""
    boundary = "hardening" + uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    line = jsonl_bytes(chat_requests(1))
    block = line * (MB // len(line))
    tail = f"\r\n--{boundary}--\r\n".encode()
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(head) + total + len(tail)}"
    request = (
        f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1:{sb.port}\r\nAuthorization: Bearer {sb.api_key}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n{framing}\r\n\r\n"
    ).encode()

    def pieces():
        yield head
        n = 0
        while n < total:
            n += len(block)
            yield block
        yield tail

    sent = 0
    reply = b""
    with socket.create_connection(("127.0.0.1", sb.port), timeout=30) as sock:
        sock.sendall(request)
        for data in pieces():
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered: stop sending
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            except OSError:
                break
            sent += len(data)
        else:
            if chunked:
                with contextlib.suppress(OSError):
                    sock.sendall(b"0\r\n\r\n")
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in reply or len(reply.split(b"\r\n\r\n", 1)[1]) < _length(reply):
                more = sock.recv(65536)
                if not more:
                    break
                reply += more
    m = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
    return (int(m.group(1)) if m else None), reply.decode(errors="replace"), sent


def _length(reply: bytes) -> int:
    m = re.search(rb"(?i)content-length:\s*(\d+)", reply.split(b"\r\n\r\n", 1)[0])
    return int(m.group(1)) if m else 0


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_oversized_upload_is_refused_with_413_without_growing_memory(chunked, sandbox_factory):
    sb = sandbox_factory("--max-file-bytes", "50000000")
    sb.submit(chat_requests(2))  # warm up: the server has served a normal upload and batch
    before = vm_hwm_kib(sb.pid)
    status, text, sent = stream_upload(sb, 300 * MB, chunked)
    after = vm_hwm_kib(sb.pid)
    assert status == 413, text
    assert "File exceeds the maximum allowed size of 50000000 bytes" in text
    if chunked:  # read up to the limit (plus what the socket buffers hold), then refused
        assert 45 * MB < sent < 120 * MB, sent
    else:  # a declared length over the limit is refused before the body is read
        assert sent < 20 * MB, sent
    if before is not None and after is not None:  # Linux: the memory did not grow with the body
        growth_mib = (after - before) / 1024
        assert growth_mib < 30, f"VmHWM grew by {growth_mib:.1f} MiB"
    assert sb.running
    assert sb.stats()["files"] == 1  # only the warm-up file
    assert list((sb.data_dir / "tmp").iterdir()) == []  # the partial upload was removed
    assert sb.get("batches").status == 200  # and the server still answers


# -- ids that try to leave the data directory -------------------------------------------------


TRAVERSALS = [
    ("GET", "/v1/files/../../etc/passwd"),
    ("GET", "/v1/files/..%2f..%2f..%2fetc%2fpasswd"),
    ("GET", "/v1/files/..%2F..%2F..%2Fetc%2Fpasswd/content"),
    ("GET", "/v1/files/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd/content"),
    ("GET", "/v1/files/%2e%2e/content"),
    ("GET", "/v1/files/..%5c..%5cetc%5cpasswd/content"),
    ("GET", "/v1/files/%252e%252e%252fetc%252fpasswd"),
    ("GET", "/v1/files/../../../{canary}/content"),
    ("GET", "/v1/files/..%2f{canary}/content"),
    ("GET", "/v1/files/{uuid}%2f..%2f..%2fetc%2fpasswd/content"),
    ("GET", "/v1/files/{uuid}/../../../../etc/passwd"),
    ("GET", "/v1/files/..%2f..%2fetc%2fpasswd/cost-estimate"),
    ("DELETE", "/v1/files/..%2f..%2f{canary}"),
    ("GET", "/v1/batches/..%2f..%2fetc%2fpasswd"),
    ("GET", "/v1/batches/%2e%2e%2f%2e%2e%2fetc%2fpasswd/results"),
    ("POST", "/v1/batches/..%2f..%2fetc%2fpasswd/cancel"),
    ("DELETE", "/v1/batches/..%2f..%2f{canary}"),
    ("GET", "/v1/models/../../etc/passwd"),
    ("GET", "/v1/models/..%2f..%2fetc%2fpasswd"),
    ("GET", "/ai/v1/files/..%2f..%2fetc%2fpasswd/content"),
    ("GET", "/_sandbox/../../etc/passwd"),
    ("GET", "/%2e%2e/%2e%2e/etc/passwd"),
]


def test_ids_that_try_path_traversal_are_refused_and_read_nothing(sandbox, tmp_path):
    canary = sandbox.data_dir.parent / "canary-secret.txt"
    canary.write_text("CANARY-" + uuid.uuid4().hex)
    rel = "../" + canary.name  # relative to the data dir
    fid = str(uuid.uuid4())
    for method, raw in TRAVERSALS:
        path = raw.replace("{canary}", rel.replace("/", "%2f") if "%2f" in raw else rel).replace("{uuid}", fid)
        conn = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=10)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            conn.putheader("Authorization", f"Bearer {sandbox.api_key}")
            conn.putheader("Content-Length", "0")
            conn.endheaders()
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
        finally:
            conn.close()
        assert resp.status in (400, 404), (method, path, resp.status, body)
        assert "root:" not in body and "CANARY-" not in body, (path, body)
        if re.match(r"^/(ai/)?v1/(files|batches)/[^/]*%", path):  # an id-shaped segment: checked as an id
            assert resp.status == 400 and "Invalid" in body and "ID format" in body, (path, body)
    assert sandbox.get("batches").status == 200


def test_an_upload_filename_is_a_label_never_a_path(sandbox, tmp_path):
    names = ["../../../escaped.jsonl", "/tmp/escaped-abs.jsonl", "..\\..\\escaped-win.jsonl"]
    for name in names:
        res = sandbox.upload(jsonl_bytes(chat_requests(1)), filename=name)
        assert res.status == 201, res.text
        assert res.json()["filename"] == name
    root = sandbox.data_dir.parent
    assert not list(root.rglob("escaped*")) and not Path("/tmp/escaped-abs.jsonl").exists()
    assert not list(tmp_path.rglob("escaped*"))
    stored = [p.name for p in sandbox.data_dir.rglob("*") if p.is_file()]
    assert all(n.startswith("sandbox.db") for n in stored), stored


def test_a_second_sandbox_cannot_take_a_busy_port(sandbox, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SERVER_SCRIPT), "--port", str(sandbox.port), "--data-dir", str(tmp_path / "other")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"cannot bind 127.0.0.1:{sandbox.port}" in proc.stderr
    assert sandbox.get("batches").status == 200
