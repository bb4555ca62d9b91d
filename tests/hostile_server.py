"""A small HTTP server that a test programs with the replies it wants: any status, headers and
body, redirects anywhere, a slow reply or a dropped connection (standard library only).

It stands for a server that is not the API: an attacker's host a key must never reach, an
upstream that redirects, a proxy that records what passes through. Every request it receives
is recorded (method, target, headers, body), so a test can assert what reached it, and what
did not.

    server = HostileServer().start()            # or the fixtures, see tests/conftest.py:
                                                # hostile_server (one), hostile_factory (more)
    server.reply("POST", "/v1/chat/completions", status=302, headers={"Location": other.url("/x")})
    server.redirect("/v1/models", other.url("/v1/models"), status=307, times=1)
    server.reply("GET", "/v1/models", json={"object": "list", "data": []})
    server.reply("*", "*", status=503, body="down", delay=0.5)
    server.reply("GET", "/v1/files", drop=True)  # close the connection without a reply
    ...
    server.requests                             # [Seen(method, target, path, headers, body), ...]
    server.seen("POST")                         # those of one method (and path prefix)
    server.stop()

Rules are tried in the order they were added; ``path`` is a prefix of the request's path
(``*`` matches every path, ``method`` ``*`` every method); a rule with ``times`` wears out
after that many replies. A request that matches no rule gets ``404 no reply programmed``; a CONNECT (a tunnel asked of
a proxy) is recorded and refused with 502.
A proxy's absolute-form target (``GET http://host/path``) is matched by its path, and
``Seen.target`` keeps it as sent.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

Headers = Union[Mapping[str, str], Sequence[Tuple[str, str]]]


@dataclass
class Seen:
    """One request the server received."""

    method: str
    target: str  # as on the request line: a path, or a proxy's absolute URL
    path: str  # the path alone, without the query
    headers: Dict[str, str]  # names in lower case
    body: bytes

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name.lower())


@dataclass
class Rule:
    method: str
    path: str
    status: int = 200
    headers: List[Tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    delay: float = 0.0
    drop: bool = False
    times: Optional[int] = None  # None: never wears out

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        return self.method in ("*", method) and (self.path == "*" or path.startswith(self.path))


class HostileServer:
    """A programmable HTTP/1.1 server on a free port of ``host`` (default 127.0.0.1)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: List[Seen] = []
        self._rules: List[Rule] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.host = host
        self.port: int = self._server.server_address[1]

    # programming ---------------------------------------------------------------------------
    def reply(
        self,
        method: str = "*",
        path: str = "*",
        status: int = 200,
        *,
        headers: Optional[Headers] = None,
        body: Union[bytes, str] = b"",
        json: Any = None,
        delay: float = 0.0,
        drop: bool = False,
        times: Optional[int] = None,
    ) -> HostileServer:
        """Answer requests of ``method`` under ``path`` with ``status``, ``headers`` and ``body``
        (or ``json``, which sets Content-Type), after ``delay`` seconds; ``drop``: close the
        connection without a reply. Returns the server, so calls chain."""
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
        if json is not None:
            body = jsonlib.dumps(json)
            if not any(k.lower() == "content-type" for k, _ in pairs):
                pairs.append(("Content-Type", "application/json"))
        data = body.encode("utf-8") if isinstance(body, str) else body
        with self._lock:
            self._rules.append(Rule(method.upper(), path, status, pairs, data, delay, drop, times))
        return self

    def redirect(
        self, path: str, location: str, status: int = 302, method: str = "*", times: Optional[int] = None
    ) -> HostileServer:
        """Answer requests under ``path`` with a redirect to ``location``."""
        return self.reply(method, path, status, headers={"Location": location}, times=times)

    def clear(self) -> None:
        """Forget the rules and the requests seen."""
        with self._lock:
            self._rules.clear()
            self.requests.clear()

    # what reached it ---------------------------------------------------------------------------
    def seen(self, method: str = "*", path: str = "") -> List[Seen]:
        """The requests received, of ``method`` (``*``: any) whose path starts with ``path``."""
        with self._lock:
            return [r for r in self.requests if method in ("*", r.method) and r.path.startswith(path)]

    # addresses -----------------------------------------------------------------------------
    def url(self, path: str = "", host: Optional[str] = None) -> str:
        """``http://HOST:PORT`` + ``path``; ``host`` names it otherwise (e.g. ``localhost``)."""
        name = host or self.host
        return f"http://{'[' + name + ']' if ':' in name else name}:{self.port}{path}"

    @property
    def base_url(self) -> str:
        return self.url("/v1")

    # life ------------------------------------------------------------------------------------
    def start(self) -> HostileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # serving ---------------------------------------------------------------------------------
    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)

    def _take(self, seen: Seen) -> Rule:
        with self._lock:
            self.requests.append(seen)
            for rule in self._rules:
                if rule.matches(seen.method, seen.path):
                    if rule.times is not None:
                        rule.times -= 1
                    return rule
        return Rule(seen.method, seen.path, 404, [("Content-Type", "text/plain")], b"no reply programmed")


def _handler_for(server: HostileServer) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            body = self._body()
            path = urlsplit(self.path).path if "://" in self.path else self.path.split("?", 1)[0]
            headers = {k.lower(): v for k, v in self.headers.items()}
            rule = server._take(Seen(self.command, self.path, path, headers, body))
            if rule.delay:
                time.sleep(rule.delay)
            if rule.drop:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_response(rule.status)
            for name, value in rule.headers:
                self.send_header(name, value)
            if not any(k.lower() == "content-length" for k, _ in rule.headers):
                self.send_header("Content-Length", str(len(rule.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(rule.body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

        def do_CONNECT(self) -> None:  # a proxy's tunnel: recorded, refused
            server._record(Seen("CONNECT", self.path, self.path, {k.lower(): v for k, v in self.headers.items()}, b""))
            self.send_response(502, "no tunnels here")
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


__all__ = ["HostileServer", "Rule", "Seen"]
