"""Streaming validation of batch JSONL files, in one pass and bounded memory.

Checks everything the Doubleword server checks on upload, plus what it silently lets
through (duplicate custom_ids, ``"stream": true``, bodies that will fail per request).
Line numbers are physical and 1-based. The same pass plans the split into chunks.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

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


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (object, array, string, number, boolean, null)."""
    return JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (the server's parser rejects NaN and Infinity)")


# The server parses lines with a strict JSON parser; Python's default accepts NaN and Infinity.
_decoder = json.JSONDecoder(parse_constant=_reject_constant)
loads_strict = _decoder.decode


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
    requests: int = 0
    lines: int = 0
    blank_lines: int = 0
    bytes: int = 0
    models: Dict[str, int] = field(default_factory=dict)
    endpoints: Dict[str, int] = field(default_factory=dict)
    errors: List[Dict[str, Any]] = field(default_factory=list)
    errors_total: int = 0
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


def _close_chunk(chunk: Chunk, requests: int, first_url: str, other_urls: Dict[str, int], last_line: int,
                 last_byte: int) -> None:
    chunk.requests = requests
    chunk.urls = {first_url: requests - sum(other_urls.values()), **other_urls}
    chunk.end_line = last_line
    chunk.end_byte = last_byte


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
_ALLOWED = frozenset(ALLOWED_URLS)


def validate_file(path: str, max_requests: int = MAX_REQUESTS_PER_FILE, max_bytes: int = MAX_FILE_BYTES,
                  max_body_bytes: int = MAX_BODY_BYTES) -> Report:
    """Validate a batch file in one streaming pass and plan its chunks.

    The loop has a fast path for the common case (a well-formed four-key line); anything
    unusual goes through ``check_request``, which produces the error message.
    """
    rep = Report(path=path)
    seen: set = set()
    seen_add = seen.add
    dup_examples: List[Tuple[int, str]] = []
    dup_count = 0
    notes: Dict[str, int] = {}
    crlf = 0
    chunk: Optional[Chunk] = None
    chunk_url = ""
    other_urls: Dict[str, int] = {}
    last_off = 0
    chunk_requests = 0
    chunk_start = 0
    models = rep.models
    endpoints = rep.endpoints
    per_model: Dict[str, List[int]] = {}  # model -> [input tokens, output tokens]
    loads = loads_strict
    scan = _decoder.scan_once
    allowed = _ALLOWED
    required = REQUIRED_BODY_FIELD
    n = 0
    offset = 0
    blank = 0
    last_n = 0
    # Text mode decodes in bulk (faster than per line); newline="\n" splits exactly where the
    # server does, and surrogateescape keeps invalid bytes so they can be reported by line.
    with open(path, encoding="utf-8", errors="surrogateescape", newline="\n", buffering=1 << 20) as fh:
        for raw in fh:
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
                    rep.add_error(n, None, f"invalid UTF-8 at byte {at} of the line; save the file as UTF-8")
                    continue
            line_start = offset
            offset += size
            text = raw.strip()
            if not text:
                # Blank lines do not extend a chunk: a chunk ends with its last request, so blank
                # lines can never push it over max_bytes; the next chunk starts at a request.
                blank += 1
                continue
            if raw[-2:] == "\r\n":
                crlf += 1
            if n == 1 and text[:1] == "\ufeff":
                rep.add_error(n, None, "the file starts with a UTF-8 byte-order mark (BOM), which the server "
                                       "rejects; save it as UTF-8 without BOM")
                continue
            try:
                # the C scanner directly (what json.loads runs underneath, without its wrappers)
                obj, end = scan(text, 0)
                if end != len(text):
                    raise ValueError("trailing data")
            except (ValueError, StopIteration):
                try:
                    obj = loads(text)  # for the proper message
                except ValueError as exc:
                    rep.add_error(n, None, f"invalid JSON: {exc}")
                    continue
            # fast path: all checks of check_request, inlined for the common shape (anything
            # unusual, including a missing key or a wrong type, falls through to check_request)
            try:
                cid = obj["custom_id"]
                url = obj["url"]
                body = obj["body"]
                model = body["model"]
                ok = (obj["method"] == "POST" and len(obj) == 4 and type(cid) is str
                      and 0 < len(cid) <= MAX_CUSTOM_ID_BYTES and cid.isascii() and cid.isprintable()
                      and url in allowed and size <= max_body_bytes and type(body) is dict
                      and type(model) is str and model and not model.isspace() and body.get("stream") is not True)
                if ok:
                    need = required[url]
                    v = body[need]
                    ok = need != "messages" or (type(v) is list and len(v) > 0)
            except (KeyError, TypeError, AttributeError):
                ok = False
            if not ok:
                err, line_notes = check_request(obj, max_body_bytes, size)
                cid = obj.get("custom_id") if isinstance(obj, dict) else None
                if not isinstance(cid, str):
                    cid = None
                if err:
                    rep.add_error(n, cid, err)
                    continue
                for note in line_notes:
                    notes[note] = notes.get(note, 0) + 1
                body = obj["body"]
                url = obj["url"]
                model = body["model"]
            if cid in seen:
                dup_count += 1
                if len(dup_examples) < ERRORS_KEPT:
                    dup_examples.append((n, cid))
            else:
                seen_add(cid)
            if size > max_bytes:
                rep.add_error(n, cid, f"the line is {size} bytes, more than the {max_bytes}-byte file limit")
                continue
            # per model: [requests, bytes, max_tokens sum, bytes of chat lines without max_tokens,
            # chat requests without max_tokens, expected output (prompt x 1.1, at most max_tokens)]
            pm = per_model.get(model)
            if pm is None:
                pm = per_model[model] = [0, 0, 0, 0, 0, 0]
                kind_warning = _model_kind_warning(model, url)
                if kind_warning:
                    rep.warnings.append(f"line {n}: {kind_warning}")
            pm[0] += 1
            pm[1] += size
            mt = body.get("max_tokens")
            if mt is None:
                mt = body.get("max_completion_tokens")
                if mt is None:
                    mt = body.get("max_output_tokens")
            if url == "/v1/embeddings":
                pass  # embeddings have no output tokens
            elif type(mt) is int and mt > 0:
                pm[2] += mt
                pm[5] += min(mt, int(size / 4 * 1.1))
            else:
                pm[4] += 1
                pm[3] += size
            # chunk planning
            if chunk_requests >= max_requests or offset - chunk_start > max_bytes or chunk is None:
                if chunk is not None:
                    _close_chunk(chunk, chunk_requests, chunk_url, other_urls, last_n, last_off)
                chunk = Chunk(index=len(rep.chunks) + 1, start_line=n, end_line=n, start_byte=line_start,
                              end_byte=offset)
                rep.chunks.append(chunk)
                chunk_requests = 0
                chunk_start = line_start
                chunk_url = url
                other_urls = {}
            chunk_requests += 1
            if url != chunk_url:
                other_urls[url] = other_urls.get(url, 0) + 1
            last_n = n
            last_off = offset
    if chunk is not None:
        _close_chunk(chunk, chunk_requests, chunk_url, other_urls, last_n, last_off)
    rep.bytes = offset
    rep.blank_lines = blank
    for model, (count, nbytes, mt_sum, chat_bytes, no_mt, expected) in per_model.items():
        models[model] = count
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
    for c in rep.chunks:
        for u, count in c.urls.items():
            endpoints[u] = endpoints.get(u, 0) + count
    last_n = n
    rep.lines = last_n

    if dup_count:
        first_lines = _first_occurrences(path, {cid for _, cid in dup_examples})
        real = 0
        for n, cid in dup_examples:
            first = first_lines.get(cid)
            if first is not None and first < n:
                real += 1
                rep.add_error(n, cid, f"duplicate custom_id {cid!r} (first used on line {first}); "
                                      "results are matched by custom_id, so each must be unique")
        # examples beyond the kept ones count as errors too (the hash check found them)
        rep.errors_total += max(0, dup_count - len(dup_examples))
        rep.requests -= real
        rep.errors.sort(key=lambda e: e["line"])
    if rep.requests == 0 and rep.errors_total == 0:
        rep.add_error(max(1, rep.lines), None, "the file contains no requests (it is empty or only blank lines)")
    if len(models) > 1:
        rep.warnings.append("more than one model in the file: " + ", ".join(f"{m} ({c})" for m, c in models.items()))
    if len(endpoints) > 1:
        rep.warnings.append("more than one url in the file: " + ", ".join(f"{u} ({c})" for u, c in endpoints.items())
                            + "; each line is sent to its own url")
    for note, count in notes.items():
        rep.warnings.append(f"{count} line(s): {note}")
    if crlf:
        rep.warnings.append(f"{crlf} line(s) end with CRLF; the server accepts them")
    if not rep.valid:
        rep.chunks = []
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



def _first_occurrences(path: str, wanted: set) -> Dict[str, int]:
    found: Dict[str, int] = {}
    for n, _, raw in iter_lines(path):
        if not raw.strip() or len(found) == len(wanted):
            if len(found) == len(wanted):
                break
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if isinstance(obj, dict):
            cid = obj.get("custom_id")
            if isinstance(cid, str) and cid in wanted and cid not in found:
                found[cid] = n
    return found


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
