"""HTTP: the route table, the Request handed to an API function, and the Handler that reads
bodies, dispatches (the Host check, auth, stats, http fault rules, extra latency) and sends
replies.

A new route: write ``def name(app: App, req: Request) -> Response`` in the API module it belongs
to (files_api, batches_api, models_api, sandbox_api) and add a ``Route`` to ``ROUTES`` (a more
specific template before a more general one); list it in ``server.EPILOG``.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, Callable

from . import __version__, batches_api, files_api, models_api, sandbox_api
from .bodies import BodyReader, BodyTooLarge, MalformedBody, parse_header_params
from .config import MAX_JSON_BODY, PAGE_DEFAULT, PAGE_MAX, log
from .faults import fault_response
from .wire import ApiError, Response, serde_json_error, text_response

if TYPE_CHECKING:
    from .app import App


class Route:
    def __init__(self, method: str, template: str, handler: Callable[..., Response], openai: bool = False) -> None:
        self.method = method
        self.template = template
        self.handler = handler
        self.openai = openai
        pattern = re.escape(template).replace(r"\{id\}", r"(?P<id>[^/]+)").replace(r"\{model\}", r"(?P<model>.+)")
        self.regex = re.compile("^" + pattern + "$")


ROUTES = (
    Route("GET", "/v1/models", models_api.list_models, openai=True),
    Route("GET", "/v1/models/{model}", models_api.get_model, openai=True),
    Route("POST", "/v1/files", files_api.upload_file),
    Route("GET", "/v1/files", files_api.list_files),
    Route("GET", "/v1/files/{id}/content", files_api.file_content),
    Route("GET", "/v1/files/{id}/cost-estimate", files_api.cost_estimate),
    Route("GET", "/v1/files/{id}", files_api.get_file),
    Route("DELETE", "/v1/files/{id}", files_api.delete_file),
    Route("POST", "/v1/batches", batches_api.create_batch),
    Route("GET", "/v1/batches", batches_api.list_batches),
    Route("POST", "/v1/batches/{id}/cancel", batches_api.cancel_batch),
    Route("POST", "/v1/batches/{id}/retry", batches_api.retry_batch),
    Route("POST", "/v1/batches/{id}/retry-requests", batches_api.retry_requests),
    Route("GET", "/v1/batches/{id}/results", batches_api.batch_results),
    Route("GET", "/v1/batches/{id}/analytics", batches_api.batch_analytics),
    Route("GET", "/v1/batches/{id}", batches_api.get_batch),
    Route("DELETE", "/v1/batches/{id}", batches_api.delete_batch),
    Route("GET", "/_sandbox/faults", sandbox_api.get_faults),
    Route("PUT", "/_sandbox/faults", sandbox_api.put_faults),
    Route("GET", "/_sandbox/stats", sandbox_api.get_stats),
    Route("POST", "/_sandbox/reset-stats", sandbox_api.reset_stats),
    Route("POST", "/_sandbox/reset", sandbox_api.reset),
)


class Request:
    def __init__(self, handler: Handler, method: str, path: str, query: dict, params: dict) -> None:
        self.handler = handler
        self.method = method
        self.path = path
        self.query = query
        self.params = params
        self.headers = handler.headers

    def q(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def q_int(self, name: str) -> int | None:
        raw = self.q(name)
        if raw is None or raw == "":
            return None
        try:
            return int(raw.strip())
        except ValueError:
            raise ApiError(400, f"Failed to deserialize query string: {name}: invalid digit found in string") from None

    def page_limit(self) -> int:
        """``?limit`` of a list endpoint, clamped to 1..PAGE_MAX (default PAGE_DEFAULT)."""
        limit = self.q_int("limit")
        if limit is None:
            return PAGE_DEFAULT
        return max(1, min(PAGE_MAX, limit))

    def content_limit(self) -> int | None:
        """``?limit`` of a content or results download: None (all) or clamped to 1..PAGE_MAX."""
        limit = self.q_int("limit")
        if limit is not None:
            limit = max(1, min(PAGE_MAX, limit))
        return limit

    def content_length(self) -> int | None:
        return self.handler.content_length()

    def body_reader(self, limit: int | None = None) -> BodyReader:
        return self.handler.body_reader(limit)

    def read_body(self, limit: int) -> bytes:
        return self.handler.read_body(limit)

    def json_body(self) -> Any:
        ctype, _ = parse_header_params(self.headers.get("Content-Type", ""))
        if not (ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json"))):
            self.handler.discard_body()
            raise ApiError(415, "Expected request with `Content-Type: application/json`")
        raw = self.handler.read_body(MAX_JSON_BODY)
        try:
            return json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            detail = serde_json_error(err) if isinstance(err, json.JSONDecodeError) else str(err)
            raise ApiError(400, f"Failed to parse the request body as JSON: {detail}") from None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "DoublewordSandbox/" + __version__
    # headers and body go out in separate writes: without TCP_NODELAY the body waits for the
    # client's delayed ACK (about 40 ms per exchange on a kept-alive connection)
    disable_nagle_algorithm = True
    timeout = 600  # idle keep-alive connections are closed after this many seconds
    _reader: BodyReader | None  # the reader of the request being handled (set per request)

    def version_string(self) -> str:
        return self.server_version

    # body handling -------------------------------------------------------------
    def content_length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        if raw is None:
            return None
        try:
            return max(0, int(raw))
        except ValueError:
            return None

    def is_chunked(self) -> bool:
        return "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()

    def body_reader(self, limit: int | None = None) -> BodyReader:
        reader = BodyReader(self.rfile, self.content_length(), self.is_chunked(), limit)
        self._reader = reader
        return reader

    def read_body(self, limit: int) -> bytes:
        reader = self.body_reader(limit)
        try:
            return reader.read_all()
        except BodyTooLarge:
            raise ApiError(413, f"Payload too large: request body exceeds {limit} bytes", close=True) from None
        except MalformedBody as err:
            raise ApiError(400, f"Failed to read the request body: {err}", close=True) from None

    def discard_body(self) -> None:
        """Read and drop a small unread body so the connection can be kept alive."""
        length = self.content_length()
        reader = getattr(self, "_reader", None)
        if reader is not None and not reader.eof:
            return
        if not self.is_chunked() and length is not None and length <= 1024 * 1024:
            with contextlib.suppress(Exception):
                self.body_reader().drain()

    def _body_pending(self) -> bool:
        reader = getattr(self, "_reader", None)
        if reader is not None:
            return not reader.eof
        return self.is_chunked() or (self.content_length() or 0) > 0

    # plumbing ----------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        app: App = self.server.app  # type: ignore[attr-defined]
        started = time.monotonic()
        self._reader = None
        raw_path, _, query_string = self.path.partition("?")
        path = raw_path
        if path == "/ai/v1" or path.startswith("/ai/v1/"):
            path = path[3:]
        status = 0
        self._headers_sent = False
        try:
            resp = self._route(app, method, raw_path, path, query_string)
            status = resp.status
            if resp.drop:
                self._drop()
                return
            if resp.close:
                self.close_connection = True
            elif self._body_pending():
                self.discard_body()
            self._send(resp)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            traceback.print_exc()
            self.close_connection = True
            if not self._headers_sent:
                with contextlib.suppress(Exception):
                    self._send(text_response(500, "Internal server error"))
        finally:
            if app.cfg.verbose:
                log("{} {} {} {:.1f}ms".format(method, self.path, status or "-", (time.monotonic() - started) * 1000.0))
            if not self.close_connection and self._body_pending():
                self.close_connection = True
            if self.close_connection and self._body_pending():
                self._linger()

    def _route(self, app: App, method: str, raw_path: str, path: str, query_string: str) -> Response:
        refused = app.check_host(self.headers.get("Host"))  # before anything else: DNS rebinding
        if refused is not None:
            return refused.response()
        route: Route | None = None
        params: dict = {}
        allowed = False
        for candidate in ROUTES:
            m = candidate.regex.match(path)
            if m is None:
                continue
            if candidate.method != method:
                allowed = True
                continue
            route, params = candidate, m.groupdict()
            break
        if route is None:
            if allowed:
                return text_response(405, "Method Not Allowed")
            return text_response(404, "Not Found")
        sandbox_route = route.template.startswith("/_sandbox")
        if not sandbox_route:
            app.stats.count(f"{method} {route.template}")
        err = app.check_auth(self.headers.get("Authorization"), route.openai)
        if err is not None:
            return err.response()
        rule = None
        if not sandbox_route:
            rule = app.faults.take_http(method, (raw_path, path))
        if rule is not None and not rule.get("after_body"):
            return fault_response(rule)
        req = Request(self, method, path, urllib.parse.parse_qs(query_string, keep_blank_values=True), params)
        try:
            resp = route.handler(app, req)
        except ApiError as exc:
            if route.openai and exc.style == "text":
                exc.style = "openai"
            resp = exc.response()
        if rule is not None:
            resp.discard()
            return fault_response(rule)
        if not sandbox_route:
            delay = app.faults.extra_latency(path)
            if delay > 0:
                time.sleep(delay)
        return resp

    def _send(self, resp: Response) -> None:
        self.send_response(resp.status)
        for name, value in resp.headers:
            self.send_header(name, value)
        streaming = resp.stream is not None
        if streaming:
            self.send_header("Transfer-Encoding", "chunked")
        elif resp.status != 204 and resp.status >= 200:
            self.send_header("Content-Length", str(len(resp.body)))
        if self.close_connection or self._body_pending():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self._headers_sent = True
        if not streaming:
            if resp.body and resp.status != 204:
                self.wfile.write(resp.body)
            return
        stream = resp.stream
        assert stream is not None  # (streaming)
        try:
            for piece in stream:
                if piece is Response.DROP:
                    self._drop()
                    return
                if piece:
                    self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        finally:
            resp.discard()

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _linger(self) -> None:
        """Close gracefully while the client may still be sending a body we will not read."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                if not self.connection.recv(65536):
                    break
        except OSError:
            pass
