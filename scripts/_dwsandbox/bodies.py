"""Request bodies: a reader for Content-Length and chunked framing, a streaming
multipart/form-data parser (uploads are never held in memory) and header parameters."""

from __future__ import annotations

import re
import urllib.parse
from typing import Any, Callable, Iterator


class BodyTooLarge(Exception):
    pass


class MalformedBody(Exception):
    pass


class BodyReader:
    """Reads a request body framed by Content-Length or chunked transfer encoding."""

    def __init__(self, rfile: Any, length: int | None, chunked: bool, limit: int | None = None) -> None:
        self.rfile = rfile
        self.remaining = length or 0
        self.chunked = chunked
        self.limit = limit
        self.total = 0
        self.eof = (not chunked) and self.remaining <= 0
        self._chunk_left = 0
        self.on_progress: Callable[[int], None] | None = None

    def read(self, n: int = 65536) -> bytes:
        if self.eof:
            return b""
        if self.chunked:
            data = self._read_chunked(n)
            if not data:
                return b""
        else:
            data = self.rfile.read1(min(n, self.remaining))
            if not data:
                raise MalformedBody("connection closed before the end of the request body")
            self.remaining -= len(data)
            if self.remaining <= 0:
                self.eof = True
        self.total += len(data)
        if self.limit is not None and self.total > self.limit:
            raise BodyTooLarge()
        if self.on_progress is not None:
            self.on_progress(self.total)
        return data

    def _read_chunked(self, n: int) -> bytes:
        if self._chunk_left == 0:
            line = self.rfile.readline(4096)
            if not line:
                raise MalformedBody("connection closed inside a chunked body")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as err:
                raise MalformedBody("invalid chunk size line") from err
            if size == 0:
                while True:
                    trailer = self.rfile.readline(4096)
                    if trailer in (b"\r\n", b"\n", b""):
                        break
                self.eof = True
                return b""
            self._chunk_left = size
        data = self.rfile.read1(min(n, self._chunk_left))
        if not data:
            raise MalformedBody("connection closed inside a chunk")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self.rfile.readline(4096)
        return data

    def read_all(self) -> bytes:
        parts: list[bytes] = []
        while True:
            data = self.read()
            if not data:
                return b"".join(parts)
            parts.append(data)

    def drain(self) -> None:
        while self.read():
            pass


class MultipartError(Exception):
    pass


class MultipartReader:
    """Streaming multipart/form-data parser; the boundary is searched across chunk edges."""

    def __init__(self, reader: BodyReader, boundary: bytes) -> None:
        self.reader = reader
        self.delim = b"\r\n--" + boundary
        self.buf = bytearray(b"\r\n")
        self.done = False
        for _ in self.iter_data():  # skip the preamble
            pass

    def _fill(self) -> bool:
        data = self.reader.read(65536)
        if not data:
            return False
        self.buf += data
        return True

    def _after_delimiter(self) -> None:
        while len(self.buf) < 2:
            if not self._fill():
                raise MultipartError("unexpected end of multipart body")
        if self.buf[:2] == b"--":
            self.done = True
            return
        while True:
            idx = self.buf.find(b"\r\n")
            if idx >= 0:
                del self.buf[: idx + 2]
                return
            if len(self.buf) > 1024 or not self._fill():
                raise MultipartError("malformed boundary line")

    def next_part(self) -> dict | None:
        if self.done:
            return None
        while True:
            if self.buf.startswith(b"\r\n"):
                del self.buf[:2]
                return {}
            idx = self.buf.find(b"\r\n\r\n")
            if idx >= 0:
                raw = bytes(self.buf[:idx]).decode("utf-8", "replace")
                del self.buf[: idx + 4]
                headers = {}
                for line in raw.split("\r\n"):
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                return headers
            if len(self.buf) > 65536:
                raise MultipartError("part headers too large")
            if not self._fill():
                raise MultipartError("unexpected end of multipart body")

    def iter_data(self) -> Iterator[bytes]:
        dl = len(self.delim)
        while True:
            idx = self.buf.find(self.delim)
            if idx >= 0:
                if idx:
                    yield bytes(self.buf[:idx])
                del self.buf[: idx + dl]
                self._after_delimiter()
                return
            if len(self.buf) >= dl:
                cut = len(self.buf) - (dl - 1)
                yield bytes(self.buf[:cut])
                del self.buf[:cut]
            if not self._fill():
                raise MultipartError("unexpected end of multipart body")


def parse_header_params(value: str) -> tuple:
    """Split ``type; a=b; c="d"`` into (type, {a: b, c: d})."""
    parts = re.findall(r'(?:[^;"]|"(?:\\.|[^"\\])*")+', value or "")
    if not parts:
        return "", {}
    main = parts[0].strip().lower()
    params = {}
    for part in parts[1:]:
        key, sep, val = part.strip().partition("=")
        if not sep:
            continue
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        params[key.strip().lower()] = val
    if "filename*" in params and "filename" not in params:
        enc, _, rest = params["filename*"].partition("''")
        params["filename"] = urllib.parse.unquote(rest or enc)
    return main, params
