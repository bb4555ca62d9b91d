"""Checking one piece of a batch file (a byte range that starts and ends at line starts), on
its own: the partial counts, errors, warnings and chunk-plan inputs that the validator merges
in file order, so that the report is the same however the file is cut. Runs in this process
or in a helper process (``workerpool``).
"""

from __future__ import annotations

import binascii
import io
import json
import re
from array import array
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ..api import reasoning
from ..api.reasoning import LIMIT_FIELDS
from ..api.requestrules import (
    DECODER,
    ERRORS_KEPT,
    MAX_OUTPUT_LIMIT,
    REQUIRED_BODY_FIELD,
    check_request,
    loads_strict,
    model_kind_warning,
    surrogate_problem,
)
from ..core.apifacts import ALLOWED_URLS, MAX_CUSTOM_ID_BYTES
from . import answerbudget

_READ_BUFFER = 1 << 20


# The digest of a custom_id's UTF-8 bytes (any function to 32-bit unsigned ints will do: equal
# digests are only candidates, compared on the ids themselves). CRC-32 is in C, needs no seed
# (so every process agrees) and spreads ids well.
_digest = binascii.crc32


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


DUPLICATE = (
    "duplicate custom_id {cid!r} (first used on line {first}); results are matched by custom_id, so each must be unique"
)


# How much of a line is not the body, in the two usual shapes (the ids and url without
# escapes): compact, as the builder writes it and the server stores it
# ('{"custom_id":"ID","method":"POST","url":"URL","body":...}' and the newline), and with
# Python's json.dumps spaces after the envelope's colons and commas.
_ENVELOPE_COMPACT = 50  # + the custom_id's and the url's bytes
_ENVELOPE_SPACED = 57


def _body_tokens(body: Any) -> int:
    """The input tokens the server estimates for a body: its bytes, as the server stores it
    (compact JSON, UTF-8), / 4."""
    return len(_compact(body).encode("utf-8", "surrogatepass")) >> 2


_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _add_model(
    pm: List[Any],
    sizes: Any,
    model_at: int,
    tokens: int,
    max_tokens: int,
    free_tokens: int,
    free: int,
    expected: int,
    largest: int,
) -> None:
    """Add the requests since ``model_at`` (one model's run of lines) to its counts ``pm``."""
    pm[0] += len(sizes) - model_at
    pm[1] += tokens
    pm[2] += max_tokens
    pm[3] += free_tokens
    pm[4] += free
    pm[5] += expected
    pm[8] = max(pm[8], largest)


def check_piece(
    path: str,
    start: int,
    end: int,
    max_bytes: int,
    max_body_bytes: int,
    buckets: int = 1,
    dup_offsets: Optional[Sequence[int]] = None,
    dup_firsts: Optional[Sequence[int]] = None,
    digests: bool = True,
) -> Dict[str, Any]:
    """Check the lines between byte offsets ``start`` and ``end`` (both at line starts).

    Returns the piece's partial results; its line numbers are relative (1 = the line at start):
    ``lines``, ``blank``, ``crlf`` (non-blank lines ending with CRLF), ``nerr`` (invalid lines),
    ``errors`` (the first ERRORS_KEPT: line, custom_id, message, and for a duplicate the offset of
    the id's first line, else -1), ``models`` (model -> [requests, input tokens (the body's bytes
    / 4, per request, as the server estimates them), sum of max_tokens, input tokens of chat
    requests without max_tokens, their number, expected output tokens, first line, kind
    warning, largest max_tokens]), ``urls`` and ``notes`` (request counts, in order of first
    use), ``budgets`` (the requests whose output limit cannot hold their thinking or JSON
    object: ``answerbudget.Budgets.found``); with ``digests``, ``dig``/``off``/``bounds`` (each
    request's id digest and line offset from start, grouped by bucket: those with ``digest %
    buckets == b`` are at [bounds[b], bounds[b+1])); and when the piece has no invalid line, ``plan``, for the chunk plan: each request's size, the blank lines
    before requests (request number, lines, bytes) and the runs of the same url (first request
    number, url index).

    ``dup_offsets`` (sorted, absolute) are lines whose custom_id is a duplicate of the line at
    the offset at the same index of ``dup_firsts``: they are invalid lines.
    """
    scan = DECODER.scan_once  # type: ignore[attr-defined]  # set by JSONDecoder.__init__, not in the stubs
    loads = loads_strict
    digest = _digest
    url_code = _URL_CODE
    needs = tuple(REQUIRED_BODY_FIELD[url] for url in ALLOWED_URLS)
    chat, embeddings, messages, completions = (
        url_code[u] for u in ("/v1/chat/completions", "/v1/embeddings", "/v1/messages", "/v1/completions")
    )
    kept = ERRORS_KEPT
    limit_a, limit_b, limit_c = LIMIT_FIELDS  # (in the order the server reads them)
    top_limit = MAX_OUTPUT_LIMIT
    # a line longer than this cannot hold a request the server takes (the body at most
    # max_body_bytes, with room for the envelope and for a body written with spaces)
    max_line = 2 * max_body_bytes + (1 << 16)
    env_compact = [_ENVELOPE_COMPACT + len(u) for u in ALLOWED_URLS]  # by url code
    env_spaced = [_ENVELOPE_SPACED + len(u) for u in ALLOWED_URLS]
    tc = "I" if end - start < 1 << 32 else "Q"
    mask = buckets - 1
    dig = [array("I") for _ in range(buckets)]
    offs = [array(tc) for _ in range(buckets)]
    dig_add = [a.append for a in dig]
    off_add = [a.append for a in offs]
    sizes, gap_at, gap_lines, gap_bytes, url_at, url_codes = (
        array(tc),
        array(tc),
        array(tc),
        array(tc),
        array(tc),
        bytearray(),
    )
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
    c_in = c_mt = c_free_tokens = c_free = c_expected = c_top = 0
    # answer budgets: a request whose limit is under gate is looked at. A body that names no
    # effort and no JSON format (unmarked) against its model's default thinking (room_now),
    # counted in locals while the model stays the same (added by budgets.add_run); any other
    # against the room of the effort it asks for (effort_room, looked up again when the effort,
    # the model or the url changes), by budgets.check when it is short or asks for JSON
    budgets = answerbudget.Budgets()
    gate = answerbudget.GATE
    unmarked = answerbudget.FIELDS.isdisjoint
    requested_effort = reasoning.requested_effort
    format_a, format_b = answerbudget.FORMAT_FIELDS
    shown = answerbudget.LINES_SHOWN
    room_now = c_short = short_mt = short_high = effort_room = effort_code = 0
    short_low = gate
    short_lines: List[int] = []
    effort_now: Any = _NOTHING
    default_rooms: Dict[str, int] = {}  # model -> answerbudget.default_room
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
            ascii_line = raw.isascii()
            if ascii_line:
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
            if size > max_line:  # never parsed: its objects would take several times its size
                nerr += 1
                if len(errors) < kept:
                    errors.append((n, None, f"the line is {size} bytes; a request may be at most {max_body_bytes}", -1))
                continue
            try:
                # the C scanner directly (what json.loads runs underneath, without its wrappers)
                obj, stop = scan(raw, 0)
                rest = raw[stop:]  # "\n" as a rule
            except (ValueError, StopIteration, RecursionError):
                rest = None
            plain = rest == "\n"
            if not plain:
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
                    errors.append(
                        (
                            n,
                            None,
                            "the file starts with a UTF-8 byte-order mark (BOM), which the server "
                            "rejects; save it as UTF-8 without BOM",
                            -1,
                        )
                    )
                    continue
                if rest is None or (rest and not rest.isspace()):
                    try:
                        obj, stop = scan(text, 0)
                        if stop != len(text):
                            raise ValueError("trailing data")
                    except (ValueError, StopIteration, RecursionError):
                        try:
                            obj = loads(text)  # for the proper message
                        except (ValueError, RecursionError) as exc:
                            why = exc if isinstance(exc, ValueError) else "nested more deeply than any request"
                            nerr += 1
                            if len(errors) < kept:
                                errors.append((n, None, f"invalid JSON: {why}", -1))
                            continue
            escaped = "\\" in raw and "\\u" in raw
            if escaped:  # (loads_strict's rule, for the lines parsed here by the scanner)
                problem = surrogate_problem(raw, obj)
                if problem:
                    nerr += 1
                    if len(errors) < kept:
                        errors.append((n, None, f"invalid JSON: {problem}", -1))
                    continue
            # fast path: all checks of check_request, inlined for the common shape (anything
            # unusual, including a missing key, a wrong type or a limit out of range, falls
            # through to check_request)
            try:
                cid = obj["custom_id"]
                url = obj["url"]
                body = obj["body"]
                model = body["model"]
                code = url_code[url]  # (KeyError: a url that is not allowed)
                key = cid.encode()  # (AttributeError: not a string)
                # (obj and body are dicts, or the lookups above fail)
                ok = (
                    obj["method"] == "POST"
                    and len(obj) == 4
                    and 0 < len(key) <= max_cid
                    and cid.isprintable()
                    and size <= max_body_bytes
                    and "stream" not in body
                    and (
                        model == model_now
                        or (type(model) is str and model and model.isprintable() and not model.isspace())
                    )
                )
                if ok:
                    if code == messages or code == chat:
                        v = body["messages"]
                        ok = type(v) is list and len(v) > 0
                    else:
                        ok = needs[code] in body
                if ok:  # every answer limit given: a whole number from 1 to top_limit
                    mt, mt_b, mt_c = body.get(limit_a), body.get(limit_b), body.get(limit_c)
                    ok = (
                        (mt is None or (type(mt) is int and 0 < mt <= top_limit))
                        and (mt_b is None or (type(mt_b) is int and 0 < mt_b <= top_limit))
                        and (mt_c is None or (type(mt_c) is int and 0 < mt_c <= top_limit))
                    )
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
                mt, mt_b, mt_c = body.get(limit_a), body.get(limit_b), body.get(limit_c)
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
                        errors.append(
                            (n, cid, f"the line is {size} bytes, more than the {max_bytes}-byte file limit", -1)
                        )
                    else:
                        errors.append((n, cid, "", first))
                if not ok:
                    for note in line_notes:
                        notes[note] -= 1
                continue
            # a request: count it
            # its input tokens as the server estimates them: the body's bytes / 4. The usual lines
            # (one shape, no \u escapes, which the server would store as UTF-8) take the body's
            # size from the line's; the others encode the body (compact, as the server does).
            # (Spaced lines keep the body's own spaces: a few bytes more than the server counts.)
            # (The shape is read after the colon and the comma that follow custom_id, when it
            # comes first, as it does from json.dumps; any other line is encoded.)
            if ok and plain and (not ascii_line or not escaped):
                after = len(cid) + 16
                if raw[13] == '"' and raw[after] == '"':
                    tokens = (size - env_compact[code] - len(key)) >> 2
                elif raw[13] == " " and raw[after + 1] == " ":
                    tokens = (size - env_spaced[code] - len(key)) >> 2
                else:
                    tokens = _body_tokens(body)
            else:
                tokens = _body_tokens(body)
            # per model: [requests, input tokens, max_tokens sum, input tokens of chat requests
            # without max_tokens, their number, expected output (input x 1.1, at most max_tokens)],
            # in locals while the model stays the same (requests are taken from sizes: the
            # requests since model_at)
            if model != model_now:
                if model_now is not _NOTHING:
                    _add_model(models[model_now], sizes, model_at, c_in, c_mt, c_free_tokens, c_free, c_expected, c_top)
                    c_in = c_mt = c_free_tokens = c_free = c_expected = c_top = 0
                    if c_short:
                        budgets.add_run(model_now, room_now, c_short, short_low, short_high, short_lines)
                        c_short = short_mt = short_high = 0
                        short_low = gate
                        short_lines = []
                if model not in models:
                    models[model] = [0, 0, 0, 0, 0, 0, n, model_kind_warning(model, url), 0]
                model_now = model
                model_at = len(sizes)
                room_now = default_rooms.get(model, -1)
                if room_now < 0:
                    room_now = default_rooms[model] = answerbudget.default_room(model)
                effort_now = _NOTHING
            # the answer limit: the first given, in the order the server reads them (each given
            # is a valid one by now)
            if mt is None:
                mt = mt_b if mt_b is not None else mt_c
            c_in += tokens
            if code == embeddings:
                pass  # embeddings have no output tokens
            elif mt is not None:
                c_mt += mt
                # min(mt, input x 1.1), in integers (the server's rule, rounded down)
                c_expected += mt if mt * 10 <= tokens * 11 else tokens * 11 // 10
                if mt > c_top:
                    c_top = mt
                if mt < gate:
                    if not unmarked(body):
                        effort = requested_effort(body, url)
                        if effort != effort_now or code != effort_code:
                            effort_now, effort_code = effort, code
                            effort_room = budgets.room(model, body, url, effort)
                        if mt < effort_room or format_a in body or format_b in body:
                            budgets.check(model, body, url, mt, n, effort, effort_room)
                    elif mt < room_now and code != completions:
                        c_short += 1
                        if c_short <= shown:
                            short_lines.append(n)
                        if mt != short_mt:
                            short_mt = mt
                            short_low = min(short_low, mt)
                            short_high = max(short_high, mt)
            else:
                c_free += 1
                c_free_tokens += tokens
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
        _add_model(models[model_now], sizes, model_at, c_in, c_mt, c_free_tokens, c_free, c_expected, c_top)
        if c_short:
            budgets.add_run(model_now, room_now, c_short, short_low, short_high, short_lines)
    urls: Dict[str, int] = {}
    for at, code, until in zip(url_at, url_codes, url_at[1:] + array(tc, [len(sizes)])):
        url = ALLOWED_URLS[code]
        urls[url] = urls.get(url, 0) + until - at
    res: Dict[str, Any] = {
        "lines": n,
        "blank": blank,
        "crlf": crlf,
        "nerr": nerr,
        "errors": errors,
        "models": models,
        "urls": urls,
        "notes": notes,
        "budgets": budgets.found,
    }
    if digests:
        all_dig, all_off, bounds = array("I"), array(tc), array("Q", [0])
        for piece_dig, piece_off in zip(dig, offs):
            all_dig.extend(piece_dig)
            all_off.extend(piece_off)
            bounds.append(len(all_dig))
        res.update(dig=all_dig, off=all_off, bounds=bounds)
    if not nerr:
        res["plan"] = (sizes, gap_at, gap_lines, gap_bytes, url_at, bytes(url_codes))
    return res
