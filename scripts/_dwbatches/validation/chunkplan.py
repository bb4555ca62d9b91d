"""The split of a batch file into chunks (at most so many requests and bytes each), planned
from the pieces' partial results in file order; and the cut of a file into pieces.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..core.apifacts import ALLOWED_URLS


@dataclass
class Chunk:
    index: int
    start_line: int  # physical, 1-based, inclusive
    end_line: int  # inclusive
    start_byte: int
    end_byte: int  # exclusive
    requests: int = 0
    urls: Dict[str, int] = field(default_factory=dict)  # request count per line url

    @property
    def endpoint(self) -> str:
        """The url most of the chunk's lines use (the batch endpoint to create it with)."""
        if not self.urls:
            return "/v1/chat/completions"
        return max(self.urls.items(), key=lambda kv: kv[1])[0]

    @property
    def bytes(self) -> int:
        return self.end_byte - self.start_byte

    def as_dict(self) -> Dict[str, int]:
        return {
            "index": self.index,
            "start_line": self.start_line,
            "end_line": self.end_line,
            "start_byte": self.start_byte,
            "end_byte": self.end_byte,
            "requests": self.requests,
            "bytes": self.bytes,
        }


class Planner:
    """The chunk plan, fed the pieces' requests in file order: a chunk ends before the request
    that would make it hold more than max_requests requests or span more than max_bytes (from
    its first request's start to its last request's end)."""

    def __init__(self, max_requests: int, max_bytes: int):
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.chunks: List[Chunk] = []
        self.chunk: Optional[Chunk] = None
        self.count = 0
        self.urls: Dict[str, int] = {}
        self.ok = True

    def add(self, start: int, line_base: int, res: Dict[str, Any]) -> None:
        if not self.ok:
            return
        if "plan" not in res:
            self.ok = False  # the file is invalid: there is no plan
            return
        sizes, gap_at, gap_lines, gap_bytes, url_at, url_codes = res["plan"]
        total = len(sizes)
        if not total:
            return
        # request k's end, from start: the sizes of requests 0..k and the blank lines before k
        gap_b = list(accumulate(gap_bytes))
        gap_n = list(accumulate(gap_lines))
        ends: Optional[List[int]] = None

        def end_of(k: int) -> int:
            g = bisect_right(gap_at, k) - 1
            return ends[k] + (gap_b[g] if g >= 0 else 0)  # type: ignore[index]

        def line_of(k: int) -> int:
            g = bisect_right(gap_at, k) - 1
            return line_base + k + 1 + (gap_n[g] if g >= 0 else 0)

        last_end = sum(sizes) + (gap_b[-1] if gap_b else 0)
        i = 0
        while i < total:
            chunk = self.chunk
            if (
                chunk is not None
                and self.count + total - i <= self.max_requests
                and start + last_end - chunk.start_byte <= self.max_bytes
            ):
                stop = total  # the rest of the piece fits in the chunk (the usual case)
                end_last = start + last_end
            else:
                if ends is None:
                    ends = list(accumulate(sizes))
                if (
                    chunk is None
                    or self.count >= self.max_requests
                    or start + end_of(i) - chunk.start_byte > self.max_bytes
                ):
                    self.close()
                    chunk = self.chunk = Chunk(
                        index=len(self.chunks) + 1,
                        start_line=line_of(i),
                        end_line=0,
                        start_byte=start + end_of(i) - sizes[i],
                        end_byte=0,
                    )
                    self.chunks.append(chunk)
                    self.count = 0
                    self.urls = {}
                # the requests from i on that fit: by count, then by bytes (the first that ends
                # past the limit, by bisection; a chunk takes its first request whatever its size)
                stop = min(total, i + self.max_requests - self.count)
                limit = chunk.start_byte + self.max_bytes - start
                lo, hi = i + 1, stop
                while lo < hi:
                    mid = (lo + hi) // 2
                    if end_of(mid) > limit:
                        hi = mid
                    else:
                        lo = mid + 1
                stop = lo
                end_last = start + end_of(stop - 1)
            self._extend(url_at, url_codes, i, stop)
            self.count += stop - i
            chunk.end_line = line_of(stop - 1)
            chunk.end_byte = end_last
            i = stop

    def _extend(self, url_at: Sequence[int], url_codes: bytes, i: int, j: int) -> None:
        """Count the urls of requests i..j-1 into the chunk's."""
        urls = self.urls
        r = bisect_right(url_at, i) - 1
        while r < len(url_at) and url_at[r] < j:
            url = ALLOWED_URLS[url_codes[r]]
            until = url_at[r + 1] if r + 1 < len(url_at) else j
            urls[url] = urls.get(url, 0) + min(j, until) - max(i, url_at[r])
            r += 1

    def close(self) -> None:
        if self.chunk is not None:
            self.chunk.requests = self.count
            self.chunk.urls = dict(self.urls)


_BUCKETS = 256  # at most; digests are grouped by their low bits, so that checking them needs little memory


def cut(path: str, size: int, piece_bytes: int) -> List[Tuple[int, int]]:
    """Byte ranges of about piece_bytes that start at line starts and cover the file."""
    pieces = []
    start = 0
    with open(path, "rb") as fh:
        while start < size:
            pos = start + max(1, piece_bytes) - 1
            if pos >= size - 1:
                pieces.append((start, size))
                break
            fh.seek(pos)  # the piece ends after the first newline from pos on
            cut = size
            while True:
                block = fh.read(1 << 16)
                if not block:
                    break
                i = block.find(b"\n")
                if i >= 0:
                    cut = min(size, pos + i + 1)
                    break
                pos += len(block)
            pieces.append((start, cut))
            start = cut
    return pieces


def bucket_count(size: int) -> int:
    """How many digest buckets (a power of two): about one per 64 KB of file, at most _BUCKETS."""
    count = 1
    while count < _BUCKETS and count << 16 < size:
        count <<= 1
    return count
