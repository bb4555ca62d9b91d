"""The body of an upload: multipart/form-data read lazily from a byte range of a file.

``requests`` sends an object with ``read`` and ``__len__`` in blocks with a Content-Length
header, so a chunk of the input (up to 200 MB) is never held in memory and never copied.
Standard library only.
"""

from __future__ import annotations

import os
import uuid
from typing import IO, Callable, Dict, Iterator, List, Optional


class MultipartFile:
    """A multipart/form-data body read lazily from (part of) a file on disk.

    ``requests`` sends an object with ``read`` and ``__len__`` in blocks with a
    Content-Length header, so the file is never held in memory.
    """

    def __init__(
        self,
        path: str,
        filename: str,
        fields: Dict[str, str],
        start: int = 0,
        end: Optional[int] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ):
        self.boundary = "dwb-" + uuid.uuid4().hex
        size = os.path.getsize(path)
        self.start = start
        self.end = size if end is None else end
        head = b""
        for name, value in fields.items():
            head += (f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n').encode()
        safe_name = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        head += (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{safe_name}"\r\nContent-Type: application/jsonl\r\n\r\n'
        ).encode()
        # the part between the head and the tail is the file's range, read from ``_fh``
        self._parts = [head, b"", f"\r\n--{self.boundary}--\r\n".encode()]
        self._len = len(head) + (self.end - self.start) + len(self._parts[2])
        self._fh: Optional[IO[bytes]] = open(path, "rb")
        self._fh.seek(self.start)
        self._remaining = self.end - self.start
        self._idx = 0
        self._buf = b""
        self.sent = 0
        self._progress = progress

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[bytes]:
        while True:
            block = self.read(1 << 16)
            if not block:
                return
            yield block

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._len
        out: List[bytes] = []
        want = n
        while want > 0 and self._idx < 3:
            if self._idx == 1:
                if self._remaining <= 0 or self._fh is None:
                    self._idx += 1
                    continue
                block = self._fh.read(min(want, self._remaining, 1 << 20))
                if not block:
                    raise OSError("input file shrank while uploading")
                self._remaining -= len(block)
                out.append(block)
                want -= len(block)
            else:
                if not self._buf:
                    self._buf = self._parts[self._idx]
                take, self._buf = self._buf[:want], self._buf[want:]
                out.append(take)
                want -= len(take)
                if not self._buf:
                    self._idx += 1
        data = b"".join(out)
        self.sent += len(data)
        if self._progress and data:
            self._progress(self.sent, self._len)
        return data

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None


__all__ = ["MultipartFile"]
