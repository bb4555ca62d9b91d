"""Streaming validation of batch JSONL files, in bounded memory.

Checks everything the Doubleword server checks on upload, plus what it silently lets
through (duplicate custom_ids, ``"stream": true``, bodies that will fail per request).
Line numbers are physical and 1-based. The same pass plans the split into chunks.

How the work is done (standard library only):

- The file is cut at line starts into pieces of about ``PIECE_BYTES``. Each piece is checked on
  its own (``_check_piece``) and the partial results are merged in file order, so the report
  is the same however the file is cut: line numbers, the first ``ERRORS_KEPT`` errors, the
  counts, the warnings and the chunk plan.
- Files of ``PARALLEL_MIN_BYTES`` or more are checked by this process and helper processes
  together (one per CPU, at most ``MAX_PROCESSES`` in all), which take pieces as they finish
  the previous ones. A helper is ``python -I -S`` running ``_worker_main``; a helper that cannot
  start, or fails, leaves its pieces to this process.
- Duplicate custom_ids: each request's id is kept as a 4-byte CRC-32 digest and the 4-byte
  offset of its line (8 bytes a request, instead of the id itself). After the pass, digests
  seen more than once are confirmed by reading the lines again and comparing the ids
  themselves, so a digest collision never makes a false duplicate; a piece holding a real
  duplicate is checked again knowing it, so that the repeated line counts as an error and
  nowhere else.

What the report counts: ``requests`` are the lines that pass every check (a repeated
custom_id is an error from its second use on); ``models``, ``endpoints``, the token estimates
and the chunk plan are over exactly those lines. Every other non-blank line is an invalid
line with one error, so ``lines == requests + blank_lines + invalid_lines``.
"""

from __future__ import annotations

import binascii
import io
import json
import os
import pickle
import re
import sys
from array import array
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .apifacts import ALLOWED_URLS, MAX_BODY_BYTES, MAX_CUSTOM_ID_BYTES, MAX_FILE_BYTES, MAX_REQUESTS_PER_FILE

# The field each endpoint cannot do without.
REQUIRED_BODY_FIELD = {
    "/v1/chat/completions": "messages",
    "/v1/completions": "prompt",
    "/v1/embeddings": "input",
    "/v1/responses": "input",
    "/v1/messages": "messages",
}
ERRORS_KEPT = 50
KNOWN_KEYS = frozenset({"custom_id", "method", "url", "body"})
JSON_TYPE_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number",
                   bool: "boolean", type(None): "null"}

PIECE_BYTES = 8 << 20  # the unit of work: a piece's partial results are small and independent
PARALLEL_MIN_BYTES = 32 << 20  # smaller files are checked in this process alone
MAX_PROCESSES = 4  # this process and helpers, whatever the number of CPUs
_BUCKETS = 256  # at most; digests are grouped by their low bits, so that checking them needs little memory
_READ_BUFFER = 1 << 20


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (object, array, string, number, boolean, null)."""
    return JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (the server's parser rejects NaN and Infinity)")


# The server parses lines with a strict JSON parser; Python's default accepts NaN and Infinity.
_decoder = json.JSONDecoder(parse_constant=_reject_constant)
loads_strict = _decoder.decode

# The digest of a custom_id's UTF-8 bytes (any function to 32-bit unsigned ints will do: equal
# digests are only candidates, compared on the ids themselves). CRC-32 is in C, needs no seed
# (so every process agrees) and spreads ids well.
_digest = binascii.crc32


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
        return {"index": self.index, "start_line": self.start_line, "end_line": self.end_line,
                "start_byte": self.start_byte, "end_byte": self.end_byte, "requests": self.requests,
                "bytes": self.bytes}


@dataclass
class Report:
    path: str
    requests: int = 0  # lines that pass every check
    lines: int = 0
    blank_lines: int = 0
    invalid_lines: int = 0  # lines with an error (one each): lines = requests + blank_lines + invalid_lines
    bytes: int = 0
    models: Dict[str, int] = field(default_factory=dict)  # requests per body.model
    endpoints: Dict[str, int] = field(default_factory=dict)  # requests per url
    errors: List[Dict[str, Any]] = field(default_factory=list)  # the first ERRORS_KEPT, in line order
    errors_total: int = 0  # invalid_lines, or 1 for a file without requests or invalid lines
    warnings: List[str] = field(default_factory=list)
    estimated_input_tokens: int = 0
    max_output_tokens: int = 0  # sum of max_tokens where given
    requests_without_max_tokens: int = 0
    # per model: requests, input_tokens (line bytes / 4), output_tokens (max_tokens where given,
    # else 0 for embeddings and input x 1.1 otherwise; the server's own fallback rule),
    # output_tokens_low (input x 1.1, at most max_tokens), output_tokens_high (the sum of
    # max_tokens; None when a chat request sets none), requests_without_max_tokens
    model_tokens: Dict[str, Dict[str, int]] = field(default_factory=dict)
    chunks: List[Chunk] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.errors_total == 0

    def add_error(self, line: int, custom_id: Optional[str], message: str) -> None:
        self.errors_total += 1
        if len(self.errors) < ERRORS_KEPT:
            self.errors.append({"line": line, "custom_id": custom_id, "message": message})

    def as_dict(self) -> Dict[str, Any]:
        return {
            "valid": self.valid,
            "file": self.path,
            "requests": self.requests,
            "bytes": self.bytes,
            "lines": self.lines,
            "blank_lines": self.blank_lines,
            "invalid_lines": self.invalid_lines,
            "models": self.models,
            "endpoints": self.endpoints,
            "errors": self.errors,
            "errors_total": self.errors_total,
            "warnings": self.warnings,
            "estimated_input_tokens": self.estimated_input_tokens,
        }


def _check_custom_id(cid: Any) -> Optional[str]:
    if not isinstance(cid, str):
        return f"custom_id must be a string, got {json_type(cid)}"
    if not cid:
        return "custom_id is empty"
    n = len(cid.encode("utf-8")) if not cid.isascii() else len(cid)
    if n > MAX_CUSTOM_ID_BYTES:
        return f"custom_id is {n} bytes; the server allows at most {MAX_CUSTOM_ID_BYTES}"
    for ch in cid:
        o = ord(ch)
        if (o < 0x20 and ch != "\t") or o == 0x7F:
            return f"custom_id contains the control character {ch!r}; the server rejects control characters"
    return None


def check_request(obj: Any, max_body_bytes: int = MAX_BODY_BYTES, raw_len: int = 0) -> Tuple[Optional[str], List[str]]:
    """Check one parsed line. Returns (first error or None, notes for warnings)."""
    if not isinstance(obj, dict):
        return f"each line must be a JSON object, got {json_type(obj)}", []
    missing = [k for k in ("custom_id", "method", "url", "body") if k not in obj]
    if missing:
        return f"missing field(s) {', '.join(missing)}; each line needs custom_id, method, url and body", []
    err = _check_custom_id(obj["custom_id"])
    if err:
        return err, []
    method = obj["method"]
    if not isinstance(method, str) or method.upper() != "POST":
        return f"method is {method!r}; only POST is supported", []
    url = obj["url"]
    if url not in ALLOWED_URLS:
        return f"url {url!r} is not allowed; use one of {', '.join(ALLOWED_URLS)}", []
    body = obj["body"]
    if not isinstance(body, dict):
        return f"body must be a JSON object, got {json_type(body)}", []
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        return "body.model is missing or not a string; every request must name its model", []
    if body.get("stream") is True:
        return '"stream": true is not supported in batches; remove it from body', []
    need = REQUIRED_BODY_FIELD[url]
    if need not in body:
        return f"body.{need} is missing; {url} requests need it", []
    if need == "messages" and (not isinstance(body[need], list) or not body[need]):
        return "body.messages must be a non-empty list", []
    if raw_len > max_body_bytes:
        size = len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        if size > max_body_bytes:
            return f"body is {size} bytes; the server allows at most {max_body_bytes} per request", []
    notes = []
    if len(obj) > 4:
        notes.append("extra top-level keys (" + ", ".join(sorted(set(obj) - KNOWN_KEYS)) + ") are ignored by the server")
    return None, notes


def _model_kind_warning(model: str, url: str) -> Optional[str]:
    """Models are typed on the server (an embeddings model cannot serve chat); the API does not
    say which is which, so go by the name, as list_models.py does."""
    embed = "embed" in model.lower()
    if url == "/v1/embeddings" and not embed:
        return f"model {model!r} does not look like an embeddings model, but the url is /v1/embeddings"
    if url != "/v1/embeddings" and embed:
        return (f"model {model!r} looks like an embeddings model, but the url is {url}; the server refuses "
                "that on upload (use --endpoint /v1/embeddings)")
    return None


def iter_lines(path: str) -> Iterable[Tuple[int, int, bytes]]:
    """Yield (physical line number, byte offset, raw bytes including the newline)."""
    offset = 0
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            yield n, offset, raw
            offset += len(raw)


_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]").search
_URL_CODE = {url: i for i, url in enumerate(ALLOWED_URLS)}
_NOTHING = object()
_DUPLICATE = "duplicate custom_id {cid!r} (first used on line {first}); results are matched by custom_id, so each must be unique"


# -- one piece -------------------------------------------------------------------------------

def _check_piece(path: str, start: int, end: int, max_bytes: int, max_body_bytes: int, buckets: int = 1,
                 dup_offsets: Optional[Sequence[int]] = None, dup_firsts: Optional[Sequence[int]] = None,
                 digests: bool = True) -> Dict[str, Any]:
    """Check the lines between byte offsets ``start`` and ``end`` (both at line starts).

    Returns the piece's partial results; its line numbers are relative (1 = the line at start):
    ``lines``, ``blank``, ``crlf`` (non-blank lines ending with CRLF), ``nerr`` (invalid lines),
    ``errors`` (the first ERRORS_KEPT: line, custom_id, message, and for a duplicate the offset of
    the id's first line, else -1), ``models`` (model -> [requests, bytes, sum of max_tokens, bytes
    of chat requests without max_tokens, their number, expected output tokens, first line, kind
    warning]), ``urls`` and ``notes`` (request counts, in order of first use); with ``digests``,
    ``dig``/``off``/``bounds`` (each request's id digest and line offset from start, grouped by
    bucket: those with ``digest % buckets == b`` are at [bounds[b], bounds[b+1])); and when the
    piece has no invalid line, ``plan``, for the chunk plan: each request's size, the blank lines
    before requests (request number, lines, bytes) and the runs of the same url (first request
    number, url index).

    ``dup_offsets`` (sorted, absolute) are lines whose custom_id is a duplicate of the line at
    the offset at the same index of ``dup_firsts``: they are invalid lines.
    """
    scan = _decoder.scan_once
    loads = loads_strict
    digest = _digest
    url_code = _URL_CODE
    needs = tuple(REQUIRED_BODY_FIELD[url] for url in ALLOWED_URLS)
    chat, embeddings, messages = (url_code[u] for u in ("/v1/chat/completions", "/v1/embeddings", "/v1/messages"))
    kept = ERRORS_KEPT
    tc = "I" if end - start < 1 << 32 else "Q"
    mask = buckets - 1
    dig = [array("I") for _ in range(buckets)]
    offs = [array(tc) for _ in range(buckets)]
    dig_add = [a.append for a in dig]
    off_add = [a.append for a in offs]
    sizes, gap_at, gap_lines, gap_bytes, url_at, url_codes = array(tc), array(tc), array(tc), array(tc), array(tc), bytearray()
    gap_n = gap_b = 0  # blank lines since the last request
    url_now = None
    errors: List[Tuple[int, Optional[str], str, int]] = []
    models: Dict[str, List[Any]] = {}
    notes: Dict[str, int] = {}
    nerr = blank = crlf = n = 0
    dups = [o - start for o in dup_offsets or ()]
    firsts = list(dup_firsts or ())
    di = 0
    next_dup = dups[0] if dups else -1
    first_piece = start == 0
    offset = 0  # from start
    length = end - start
    max_cid = MAX_CUSTOM_ID_BYTES
    model_now: Any = _NOTHING  # the model of the last request (validated)
    model_at = 0
    c_mt = c_free_bytes = c_free = c_expected = 0
    with open(path, "rb", buffering=_READ_BUFFER) as bf:
        bf.seek(start)
        # Text mode decodes in bulk (faster than per line); newline="\n" splits exactly where the
        # server does, and surrogateescape keeps invalid bytes so they can be reported by line.
        fh = io.TextIOWrapper(bf, encoding="utf-8", errors="surrogateescape", newline="\n")
        try:
            fh._CHUNK_SIZE = _READ_BUFFER  # type: ignore[attr-defined]  # (CPython's: fewer, larger reads)
        except AttributeError:
            pass
        for raw in fh:
            if offset >= length:
                break
            n += 1
            if raw.isascii():
                size = len(raw)
            else:
                size = len(raw.encode("utf-8", "surrogateescape"))
                try:
                    raw.encode("utf-8")
                except UnicodeEncodeError as exc:
                    at = len(raw[: exc.start].encode("utf-8", "surrogateescape"))
                    offset += size
                    nerr += 1
                    if len(errors) < kept:
                        errors.append((n, None, f"invalid UTF-8 at byte {at} of the line; save the file as UTF-8", -1))
                    continue
            line_start = offset
            offset += size
            try:
                # the C scanner directly (what json.loads runs underneath, without its wrappers)
                obj, stop = scan(raw, 0)
                rest = raw[stop:]  # "\n" as a rule
            except (ValueError, StopIteration):
                rest = None
            if rest != "\n":
                # the unusual lines: blank, CRLF, leading or trailing whitespace, no newline, a
                # BOM, invalid JSON
                text = raw.strip()
                if not text:
                    # Blank lines do not extend a chunk: a chunk ends with its last request, so blank
                    # lines can never push it over max_bytes; the next chunk starts at a request.
                    blank += 1
                    gap_n += 1
                    gap_b += size
                    continue
                if raw.endswith("\r\n"):
                    crlf += 1
                if n == 1 and first_piece and text[0] == "\ufeff":
                    nerr += 1
                    errors.append((n, None, "the file starts with a UTF-8 byte-order mark (BOM), which the server "
                                            "rejects; save it as UTF-8 without BOM", -1))
                    continue
                if rest is None or (rest and not rest.isspace()):
                    try:
                        obj, stop = scan(text, 0)
                        if stop != len(text):
                            raise ValueError("trailing data")
                    except (ValueError, StopIteration):
                        try:
                            obj = loads(text)  # for the proper message
                        except ValueError as exc:
                            nerr += 1
                            if len(errors) < kept:
                                errors.append((n, None, f"invalid JSON: {exc}", -1))
                            continue
            # fast path: all checks of check_request, inlined for the common shape (anything
            # unusual, including a missing key or a wrong type, falls through to check_request)
            try:
                cid = obj["custom_id"]
                url = obj["url"]
                body = obj["body"]
                model = body["model"]
                code = url_code[url]  # (KeyError: a url that is not allowed)
                key = cid.encode()  # (AttributeError: not a string)
                # (obj and body are dicts, or the lookups above fail)
                ok = (obj["method"] == "POST" and len(obj) == 4 and 0 < len(key) <= max_cid and cid.isprintable()
                      and size <= max_body_bytes and "stream" not in body
                      and (model == model_now or (type(model) is str and model and not model.isspace())))
                if ok:
                    if code == messages or code == chat:
                        v = body["messages"]
                        ok = type(v) is list and len(v) > 0
                    else:
                        ok = needs[code] in body
            except (KeyError, TypeError, AttributeError, UnicodeEncodeError):
                ok = False
            if not ok:
                err, line_notes = check_request(obj, max_body_bytes, size)
                cid = obj.get("custom_id") if isinstance(obj, dict) else None
                if not isinstance(cid, str):
                    cid = None
                if err:
                    nerr += 1
                    if len(errors) < kept:
                        errors.append((n, cid, err, -1))
                    continue
                body = obj["body"]
                url = obj["url"]
                code = url_code[url]
                model = body["model"]
                key = cid.encode("utf-8", "surrogatepass")
                for note in line_notes:  # (taken back below if the line is not a request after all)
                    notes[note] = notes.get(note, 0) + 1
            # the id is registered (a later line using it again is a duplicate), even if the
            # line turns out too long below
            if digests:
                d = digest(key)
                b = d & mask
                dig_add[b](d)
                off_add[b](line_start)
            if size > max_bytes or line_start == next_dup:
                nerr += 1
                if line_start == next_dup:
                    first = firsts[di]
                    di += 1
                    next_dup = dups[di] if di < len(dups) else -1
                else:
                    first = -1
                if len(errors) < kept:
                    if size > max_bytes:  # (a line too long and repeating an id is too long)
                        errors.append((n, cid, f"the line is {size} bytes, more than the {max_bytes}-byte file "
                                               "limit", -1))
                    else:
                        errors.append((n, cid, "", first))
                if not ok:
                    for note in line_notes:
                        notes[note] -= 1
                continue
            # a request: count it
            # per model: [requests, bytes, max_tokens sum, bytes of chat lines without max_tokens,
            # chat requests without max_tokens, expected output (prompt x 1.1, at most max_tokens)],
            # in locals while the model stays the same
            # (requests and bytes are taken from sizes: the requests since model_at)
            if model != model_now:
                if model_now is not _NOTHING:
                    pm = models[model_now]
                    pm[0] += len(sizes) - model_at
                    pm[1] += sum(sizes[model_at:])
                    pm[2] += c_mt
                    pm[3] += c_free_bytes
                    pm[4] += c_free
                    pm[5] += c_expected
                    c_mt = c_free_bytes = c_free = c_expected = 0
                if model not in models:
                    models[model] = [0, 0, 0, 0, 0, 0, n, _model_kind_warning(model, url)]
                model_now = model
                model_at = len(sizes)
            mt = body.get("max_tokens")
            if mt is None:
                mt = body.get("max_completion_tokens")
                if mt is None:
                    mt = body.get("max_output_tokens")
            if code == embeddings:
                pass  # embeddings have no output tokens
            elif type(mt) is int and mt > 0:
                c_mt += mt
                # min(mt, int(size / 4 * 1.1)), in integers (the same for lines under 64 GB)
                c_expected += mt if mt * 40 <= size * 11 else size * 11 // 40
            else:
                c_free += 1
                c_free_bytes += size
            if gap_n:
                gap_at.append(len(sizes))
                gap_lines.append(gap_n)
                gap_bytes.append(gap_b)
                gap_n = gap_b = 0
            if code != url_now:
                url_at.append(len(sizes))
                url_codes.append(code)
                url_now = code
            sizes.append(size)

    if model_now is not _NOTHING:
        pm = models[model_now]
        pm[0] += len(sizes) - model_at
        pm[1] += sum(sizes[model_at:])
        pm[2] += c_mt
        pm[3] += c_free_bytes
        pm[4] += c_free
        pm[5] += c_expected
    urls: Dict[str, int] = {}
    for at, code, until in zip(url_at, url_codes, url_at[1:] + array(tc, [len(sizes)])):
        url = ALLOWED_URLS[code]
        urls[url] = urls.get(url, 0) + until - at
    res: Dict[str, Any] = {"lines": n, "blank": blank, "crlf": crlf, "nerr": nerr, "errors": errors,
                           "models": models, "urls": urls, "notes": notes}
    if digests:
        all_dig, all_off, bounds = array("I"), array(tc), array("Q", [0])
        for a, b in zip(dig, offs):
            all_dig.extend(a)
            all_off.extend(b)
            bounds.append(len(all_dig))
        res.update(dig=all_dig, off=all_off, bounds=bounds)
    if not nerr:
        res["plan"] = (sizes, gap_at, gap_lines, gap_bytes, url_at, bytes(url_codes))
    return res


# -- the chunk plan --------------------------------------------------------------------------

class _Planner:
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
            if chunk is not None and self.count + total - i <= self.max_requests \
                    and start + last_end - chunk.start_byte <= self.max_bytes:
                stop = total  # the rest of the piece fits in the chunk (the usual case)
                end_last = start + last_end
            else:
                if ends is None:
                    ends = list(accumulate(sizes))
                if (chunk is None or self.count >= self.max_requests
                        or start + end_of(i) - chunk.start_byte > self.max_bytes):
                    self.close()
                    chunk = self.chunk = Chunk(index=len(self.chunks) + 1, start_line=line_of(i), end_line=0,
                                               start_byte=start + end_of(i) - sizes[i], end_byte=0)
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


# -- the pieces and the processes that check them ------------------------------------------

def _cut(path: str, size: int, piece_bytes: int) -> List[Tuple[int, int]]:
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


def _bucket_count(size: int) -> int:
    """How many digest buckets (a power of two): about one per 64 KB of file, at most _BUCKETS."""
    count = 1
    while count < _BUCKETS and count << 16 < size:
        count <<= 1
    return count


def _cpus() -> int:
    count = getattr(os, "process_cpu_count", None)  # Python 3.13
    if count is not None:
        return count() or 1
    try:
        return len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _write_frame(fh: Any, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    fh.write(len(data).to_bytes(8, "little"))
    fh.write(data)
    fh.flush()


def _read_frame(fh: Any) -> Any:
    head = fh.read(8)
    if len(head) < 8:
        raise EOFError
    size = int.from_bytes(head, "little")
    data = fh.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def _do(path: str, task: tuple) -> Any:
    """Run a task: ("piece", arguments of _check_piece after path) or ("confirm", arguments of
    _confirm_groups after path)."""
    if task[0] == "piece":
        return _check_piece(path, *task[1:])
    return _confirm_groups(path, *task[1:])


def _worker_main() -> None:
    """A helper process: the file's path, then (task number, task) frames on stdin; a (task
    number, result) frame on stdout for each; until stdin ends."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    try:
        path = _read_frame(inp)
        while True:
            try:
                number, task = _read_frame(inp)
            except EOFError:
                return
            _write_frame(out, (number, _do(path, task)))
    except (KeyboardInterrupt, BrokenPipeError):
        pass


_SCRIPTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from _dwbatches.validate import _worker_main; _worker_main()"


class _Helper:
    """One helper process, fed tasks by a thread of this process."""

    def __init__(self, path: str):
        import subprocess

        self.dead = False
        # -I: no environment variables, user site or current directory on the path; -S: no site
        # packages (the validator needs the standard library only)
        cmd = [sys.executable, "-I", "-S"] + (["-B"] if sys.flags.dont_write_bytecode else [])
        self.proc = subprocess.Popen(cmd + ["-c", _BOOT, _SCRIPTS_DIR], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            _write_frame(self.proc.stdin, path)
        except (OSError, ValueError):
            self.stop(kill=True)
            raise

    def serve(self, tasks: List[tuple], queue: _Queue, depth: int) -> None:
        """Send tasks (up to depth at a time) and hand back the results, until none is left.
        If the process fails, its tasks go back to the queue (this process takes them) and it
        is used no more."""
        outstanding: List[int] = []
        if self.dead:
            return
        try:
            while True:
                while len(outstanding) < depth:
                    i = queue.take()
                    if i is None:
                        break
                    outstanding.append(i)
                    _write_frame(self.proc.stdin, (i, tasks[i]))
                if not outstanding:
                    return
                number, res = _read_frame(self.proc.stdout)
                if number != outstanding[0]:
                    raise EOFError
                outstanding.pop(0)
                queue.done(number, res)
        except BaseException:  # noqa: B036 - any failure: the tasks are done here instead
            self.dead = True
            queue.give_back(outstanding)
            self.stop(kill=True)

    def stop(self, kill: bool = False) -> None:
        proc = self.proc
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            if kill:
                proc.kill()
            proc.wait(timeout=5)
        except Exception:  # noqa: BLE001 - a helper that will not end is left to the system
            pass


class _Queue:
    """The tasks still to run and the results, shared by this process and the helper threads."""

    def __init__(self, count: int):
        import threading

        self.cond = threading.Condition()
        self.pending = list(range(count - 1, -1, -1))  # popped from the end: in file order
        self.results: List[Any] = [None] * count

    def take(self) -> Optional[int]:
        with self.cond:
            return self.pending.pop() if self.pending else None

    def done(self, i: int, res: Any) -> None:
        with self.cond:
            self.results[i] = res
            self.cond.notify_all()

    def give_back(self, numbers: List[int]) -> None:
        with self.cond:
            self.pending.extend(reversed(numbers))
            self.cond.notify_all()

    def wait_for(self, i: int) -> None:
        with self.cond:
            while self.results[i] is None and not self.pending:
                self.cond.wait(0.5)


def _run(path: str, tasks: List[Any], helpers: List[_Helper], deliver: Callable[[int, Any], None],
         depth: int, keep: bool = True) -> List[Any]:
    """Run ``tasks`` (see _do) here and in the helpers; call deliver(i, result) in task order;
    return the results (without ``keep``, each task and result is let go once delivered)."""
    import threading

    queue = _Queue(len(tasks))
    threads = [threading.Thread(target=h.serve, args=(tasks, queue, depth), daemon=True) for h in helpers]
    for t in threads:
        t.start()
    results = queue.results
    given = 0
    while given < len(tasks):
        while given < len(tasks) and results[given] is not None:
            deliver(given, results[given])  # type: ignore[arg-type]
            if not keep:
                results[given] = tasks[given] = False  # (not None: delivered)
            given += 1
        if given == len(tasks):
            break
        i = queue.take()
        if i is not None:
            queue.done(i, _do(path, tasks[i]))
        else:
            queue.wait_for(given)
    for t in threads:
        t.join()
    return results  # type: ignore[return-value]


def _start_helpers(path: str, count: int) -> List[_Helper]:
    if count < 1 or getattr(sys, "frozen", False) or not sys.executable:
        return []
    helpers = []
    for _ in range(count):
        try:
            helpers.append(_Helper(path))
        except (OSError, ValueError):
            break  # no processes here: check with what there is
    return helpers


# -- duplicates ------------------------------------------------------------------------------

def _parse_id(raw: bytes) -> Optional[str]:
    """The custom_id of a raw line (None if it no longer parses as a request: changed on disk)."""
    try:
        cid = loads_strict(raw.decode("utf-8").strip())["custom_id"]
    except (ValueError, TypeError, KeyError):
        return None
    return cid if isinstance(cid, str) else None


class _LineReader:
    """Lines read by offset: one pread each where there is one (else seek and readline)."""

    def __init__(self, path: str):
        self.fh = open(path, "rb")
        self.pread = getattr(os, "pread", None)

    def line(self, offset: int) -> bytes:
        if self.pread is None:
            self.fh.seek(offset)
            return self.fh.readline()
        fd = self.fh.fileno()
        data = self.pread(fd, 1024, offset)
        cut = data.find(b"\n") + 1
        if cut:
            return data[:cut]
        parts = [data]
        size = 1024
        while data:
            size *= 2
            offset += len(data)
            data = self.pread(fd, size, offset)
            cut = data.find(b"\n") + 1
            if cut:
                parts.append(data[:cut])
                break
            parts.append(data)
        return b"".join(parts)

    def close(self) -> None:
        self.fh.close()


def _confirm(reader: _LineReader, offsets: Sequence[int], later: array, firsts: array) -> None:
    """Lines whose ids have the same digest, in file order: add each line whose custom_id an
    earlier one of them uses to later, and the offset of that id's first line to firsts."""
    first_off = offsets[0]
    first_raw = reader.line(first_off)
    by_raw: Optional[Dict[bytes, int]] = None  # line -> the first offset of its id
    by_id: Dict[str, int] = {}
    for offset in offsets[1:]:
        raw = reader.line(offset)
        if by_raw is None:
            if raw == first_raw:  # the same line again (the same id): no need to parse either
                later.append(offset)
                firsts.append(first_off)
                continue
            first_id = _parse_id(first_raw)
            by_raw = {}
            if first_id is not None:
                by_raw[first_raw] = by_id[first_id] = first_off
        first = by_raw.get(raw)
        if first is None:
            cid = _parse_id(raw)
            if cid is None:
                continue
            first = by_raw[raw] = by_id.setdefault(cid, offset)
        if first != offset:
            later.append(offset)
            firsts.append(first)


def _confirm_groups(path: str, offsets: Sequence[int], bounds: Sequence[int]) -> Tuple[array, array]:
    """_confirm each group offsets[bounds[g]:bounds[g + 1]]; return (later, firsts)."""
    later, firsts = array("q"), array("q")
    reader = _LineReader(path)
    try:
        for g in range(len(bounds) - 1):
            _confirm(reader, offsets[bounds[g]:bounds[g + 1]], later, firsts)
    finally:
        reader.close()
    return later, firsts


_CONFIRM_TASK = 1 << 16  # line offsets in a task of _confirm_groups


def _find_duplicates(path: str, pieces: List[Tuple[int, int]], results: List[Dict[str, Any]],
                     helpers: Sequence[_Helper] = ()) -> Dict[int, Tuple[array, array]]:
    """The requests whose custom_id an earlier request already uses, by piece: (their offsets,
    the offsets of the ids' first lines), both sorted by the former. Digests are compared bucket
    by bucket (a set of one bucket at a time); the lines of digests seen more than once are
    read again (in tasks for this process and the helpers) to compare their ids."""
    from collections import Counter

    tasks: List[tuple] = []
    offsets, bounds = array("q"), array("q", [0])
    for b in range(len(results[0]["bounds"]) - 1):
        seen: set = set()
        total = 0
        for r in results:
            lo, hi = r["bounds"][b], r["bounds"][b + 1]
            if hi > lo:
                seen.update(r["dig"][lo:hi])
                total += hi - lo
        if len(seen) == total:
            continue  # no digest twice in this bucket
        del seen
        counts: Counter = Counter()
        for r in results:
            counts.update(r["dig"][r["bounds"][b]:r["bounds"][b + 1]])
        repeated = {d for d, c in counts.items() if c > 1}
        del counts
        groups: Dict[int, List[int]] = {}  # digest -> line offsets, in file order
        for (start, _), r in zip(pieces, results):
            lo, hi = r["bounds"][b], r["bounds"][b + 1]
            dig, off = r["dig"], r["off"]
            for j in range(lo, hi):
                if dig[j] in repeated:
                    groups.setdefault(dig[j], []).append(start + off[j])
        for group in groups.values():
            offsets.extend(group)
            bounds.append(len(offsets))
            if len(offsets) >= _CONFIRM_TASK:
                tasks.append(("confirm", offsets, bounds))
                offsets, bounds = array("q"), array("q", [0])
    if len(offsets):
        tasks.append(("confirm", offsets, bounds))
    del offsets, bounds
    for r in results:  # (no longer needed)
        for key in ("dig", "off", "bounds"):
            r.pop(key, None)
    starts = [s for s, _ in pieces]
    found: Dict[int, Tuple[array, array]] = {}

    def deliver(_: int, res: Tuple[array, array]) -> None:
        for offset, first in zip(*res):
            i = bisect_right(starts, offset) - 1
            entry = found.get(i)
            if entry is None:
                entry = found[i] = (array("q"), array("q"))
            entry[0].append(offset)
            entry[1].append(first)

    _run(path, tasks, list(helpers), deliver, depth=1, keep=False)
    for i, (offs, firsts) in found.items():
        order = sorted(range(len(offs)), key=offs.__getitem__)
        found[i] = (array("q", [offs[k] for k in order]), array("q", [firsts[k] for k in order]))
    return found


def _line_numbers(path: str, pieces: List[Tuple[int, int]], bases: List[int], offsets: Iterable[int]) -> Dict[int, int]:
    """The line number of each line start in offsets (counting the newlines before it in its piece)."""
    starts = [s for s, _ in pieces]
    by_piece: Dict[int, List[int]] = {}
    for o in set(offsets):
        by_piece.setdefault(bisect_right(starts, o) - 1, []).append(o)
    out: Dict[int, int] = {}
    with open(path, "rb") as fh:
        for i, offs in by_piece.items():
            fh.seek(starts[i])
            data = fh.read(max(offs) - starts[i])
            for o in offs:
                out[o] = bases[i] + data.count(b"\n", 0, o - starts[i]) + 1
    return out


# -- the report ------------------------------------------------------------------------------

def validate_file(path: str, max_requests: int = MAX_REQUESTS_PER_FILE, max_bytes: int = MAX_FILE_BYTES,
                  max_body_bytes: int = MAX_BODY_BYTES, *, processes: Optional[int] = None,
                  piece_bytes: int = PIECE_BYTES) -> Report:
    """Validate a batch file and plan its chunks (see the module docstring).

    ``processes``: how many processes check the file (this one included); by default one for
    files under PARALLEL_MIN_BYTES, else one per CPU up to MAX_PROCESSES. The report is the
    same whatever ``processes`` and ``piece_bytes`` are.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    pieces = _cut(path, size, piece_bytes)
    if processes is None:
        processes = 1 if size < PARALLEL_MIN_BYTES else min(_cpus(), MAX_PROCESSES)
    helpers = _start_helpers(path, min(processes, len(pieces)) - 1)
    planner = _Planner(max_requests, max_bytes)
    bases = [0] * (len(pieces) + 1)  # the line number before each piece

    def deliver(i: int, res: Dict[str, Any]) -> None:
        bases[i + 1] = bases[i] + res["lines"]
        planner.add(pieces[i][0], bases[i], res)
        res.pop("plan", None)

    finished = False
    try:
        buckets = _bucket_count(size)
        tasks = [("piece", start, end, max_bytes, max_body_bytes, buckets) for start, end in pieces]
        results = _run(path, tasks, helpers, deliver, depth=2)
        dups = _find_duplicates(path, pieces, results, helpers) if results else {}
        if dups:
            numbers = sorted(dups)
            again = [("piece", pieces[i][0], pieces[i][1], max_bytes, max_body_bytes, 1, dups[i][0], dups[i][1],
                      False) for i in numbers]
            for i, res in zip(numbers, _run(path, again, helpers, lambda i, res: None, depth=1)):
                results[i] = res
        finished = True
    finally:
        for h in helpers:
            h.stop(kill=not finished)
    planner.close()
    return _report(path, size, pieces, bases, results, planner)


def _report(path: str, size: int, pieces: List[Tuple[int, int]], bases: List[int], results: List[Dict[str, Any]],
            planner: _Planner) -> Report:
    rep = Report(path=path, bytes=size, lines=bases[-1])
    per_model: Dict[str, List[int]] = {}
    kind_warnings: List[str] = []
    notes: Dict[str, int] = {}
    crlf = 0
    kept: List[Tuple[int, Optional[str], str, int]] = []
    for base, res in zip(bases, results):
        rep.blank_lines += res["blank"]
        rep.invalid_lines += res["nerr"]
        crlf += res["crlf"]
        for line, cid, message, first in res["errors"]:
            if len(kept) == ERRORS_KEPT:
                break
            kept.append((base + line, cid, message, first))
        for model, pm in res["models"].items():
            total = per_model.get(model)
            if total is None:
                per_model[model] = pm[:6]
                if pm[7]:
                    kind_warnings.append(f"line {base + pm[6]}: {pm[7]}")
            else:
                for k in range(6):
                    total[k] += pm[k]
        for url, count in res["urls"].items():
            rep.endpoints[url] = rep.endpoints.get(url, 0) + count
        for note, count in res["notes"].items():
            notes[note] = notes.get(note, 0) + count
    first_lines = _line_numbers(path, pieces, bases, [k[3] for k in kept if k[3] >= 0]) if kept else {}
    for line, cid, message, first in kept:
        if first >= 0:
            message = _DUPLICATE.format(cid=cid, first=first_lines[first])
        rep.errors.append({"line": line, "custom_id": cid, "message": message})
    rep.errors_total = rep.invalid_lines
    for model, (count, nbytes, mt_sum, chat_bytes, no_mt, expected) in per_model.items():
        rep.models[model] = count
        tin = max(count, nbytes // 4)
        free = int(chat_bytes / 4 * 1.1)  # requests without max_tokens: the server's fallback rule
        rep.requests += count
        rep.estimated_input_tokens += tin
        rep.max_output_tokens += mt_sum
        rep.requests_without_max_tokens += no_mt
        rep.model_tokens[model] = {"requests": count, "input_tokens": tin, "output_tokens": mt_sum + free,
                                   "output_tokens_low": expected + free,
                                   "output_tokens_high": None if no_mt else mt_sum,
                                   "requests_without_max_tokens": no_mt}
    if rep.requests == 0 and rep.errors_total == 0:
        rep.add_error(max(1, rep.lines), None, "the file contains no requests (it is empty or only blank lines)")
    rep.warnings.extend(kind_warnings)
    if len(rep.models) > 1:
        rep.warnings.append("more than one model in the file: "
                            + ", ".join(f"{m} ({c})" for m, c in rep.models.items()))
    if len(rep.endpoints) > 1:
        rep.warnings.append("more than one url in the file: "
                            + ", ".join(f"{u} ({c})" for u, c in rep.endpoints.items())
                            + "; each line is sent to its own url")
    for note, count in notes.items():
        if count:  # (0: only on lines found invalid after all)
            rep.warnings.append(f"{count} line(s): {note}")
    if crlf:
        rep.warnings.append(f"{crlf} line(s) end with CRLF; the server accepts them")
    if rep.valid and planner.ok:
        rep.chunks = planner.chunks
    return rep


def print_errors(rep: Report, max_errors: int = 50) -> None:
    """``line N (custom_id ...): message`` on stderr for each kept error (even with --quiet:
    these are the result, not progress)."""
    out = []
    for e in rep.errors[:max(0, max_errors)]:
        cid = f" (custom_id {e['custom_id']!r})" if e.get("custom_id") is not None else ""
        out.append(f"line {e['line']}{cid}: {e['message']}")
    shown = min(len(rep.errors), max(0, max_errors))
    if rep.errors_total > shown:
        out.append(f"... and {rep.errors_total - shown} more")
    from .output import redact
    try:
        sys.stderr.write("".join(redact(line) + "\n" for line in out))
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass


def iter_requests(path: str, start_byte: int = 0, end_byte: Optional[int] = None) -> Iterable[Tuple[int, Dict[str, Any], bytes]]:
    """Yield (physical line, parsed request, raw line) from a validated file, optionally a byte range."""
    with open(path, "rb") as fh:
        fh.seek(start_byte)
        pos = start_byte
        # line numbers are relative when start_byte > 0; callers that need physical numbers use the chunk's
        n = 0
        for raw in fh:
            if end_byte is not None and pos >= end_byte:
                break
            pos += len(raw)
            n += 1
            if raw.strip():
                yield n, json.loads(raw), raw
