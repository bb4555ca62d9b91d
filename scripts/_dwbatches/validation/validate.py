"""Streaming validation of batch JSONL files, in bounded memory.

Checks everything the Doubleword server checks on upload, plus what it silently lets
through (duplicate custom_ids, ``"stream": true``, bodies that will fail per request).
Line numbers are physical and 1-based. The same pass plans the split into chunks.

How the work is done (standard library only):

- The file is cut at line starts into pieces of about ``PIECE_BYTES``. Each piece is checked on
  its own (``piececheck``) and the partial results are merged in file order, so the report
  is the same however the file is cut: line numbers, the first ``ERRORS_KEPT`` errors, the
  counts, the warnings and the chunk plan.
- Files of ``PARALLEL_MIN_BYTES`` or more are checked by this process and helper processes
  together (one per CPU, at most ``MAX_PROCESSES`` in all), which take pieces as they finish
  the previous ones. A helper is ``python -I -S`` running ``workerpool._worker_main``; a helper that cannot
  start, or fails, leaves its pieces to this process.
- Duplicate custom_ids: each request's id is kept as a 4-byte CRC-32 digest and the 4-byte
  offset of its line (8 bytes a request, instead of the id itself), moved to a temporary file
  as each piece is delivered and read back a bucket at a time (``Spill``: the memory stays
  flat however many requests the file holds). After the pass, digests
  seen more than once are confirmed by reading the lines again and comparing the ids
  themselves (``dupconfirm``), so a digest collision never makes a false duplicate; a piece holding a real
  duplicate is checked again knowing it, so that the repeated line counts as an error and
  nowhere else.

What the report counts: ``requests`` are the lines that pass every check (a repeated
custom_id is an error from its second use on); ``models``, ``endpoints``, the token estimates
and the chunk plan are over exactly those lines. Every other non-blank line is an invalid
line with one error, so ``lines == requests + blank_lines + invalid_lines``.
"""

from __future__ import annotations

import json
import os
from array import array
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, TypedDict

from ..api.requestrules import ERRORS_KEPT
from ..core import compat, events
from ..core.apifacts import MAX_BODY_BYTES, MAX_FILE_BYTES, MAX_REQUESTS_PER_FILE
from . import answerbudget
from .chunkplan import Chunk, Planner, bucket_count, cut
from .dupconfirm import CONFIRM_TASK
from .piececheck import DUPLICATE
from .workerpool import Helper, cpus, run_tasks, start_helpers

PIECE_BYTES = 8 << 20  # the unit of work: a piece's partial results are small and independent
PARALLEL_MIN_BYTES = 32 << 20  # smaller files are checked in this process alone
MAX_PROCESSES = 4  # this process and helpers, whatever the number of CPUs


class ModelTokens(TypedDict):
    """The tokens of one model's requests in a file (``Report.model_tokens``)."""

    requests: int
    input_tokens: int
    output_tokens: int  # what the estimate counts: max_tokens, or the server's fallback without it
    output_tokens_low: int
    output_tokens_high: Optional[int]  # None: some request has no max_tokens
    requests_without_max_tokens: int
    largest_max_tokens: Optional[int]


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
    # per model: requests, input_tokens (each body's bytes / 4, as the server estimates them:
    # compact JSON, UTF-8, rounded down per request), output_tokens (max_tokens where given,
    # else 0 for embeddings and input x 1.1 otherwise; the server's own fallback rule),
    # output_tokens_low (input x 1.1, at most max_tokens), output_tokens_high (the sum of
    # max_tokens; None when a chat request sets none), requests_without_max_tokens,
    # largest_max_tokens (None when no request sets one)
    model_tokens: Dict[str, ModelTokens] = field(default_factory=dict)
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


# -- one piece -------------------------------------------------------------------------------


# -- the chunk plan --------------------------------------------------------------------------


# -- the pieces and the processes that check them ------------------------------------------


# -- duplicates ------------------------------------------------------------------------------


class Spill:
    """The id digests and line offsets of every piece, in a temporary file rather than in memory
    (8 bytes a request: 80 MB for ten million), read back a bucket at a time."""

    def __init__(self) -> None:
        self._fh: Optional[Any] = None

    def put(self, res: Dict[str, Any]) -> None:
        """Move a piece's ``dig`` and ``off`` arrays to the file (``spilled``: where they are)."""
        if "dig" not in res:
            return
        if self._fh is None:
            self._fh = compat.scratch_file("dwb-ids-")
        dig, off = res.pop("dig"), res.pop("off")
        fh = self._fh
        fh.seek(0, os.SEEK_END)
        at = fh.tell()
        fh.write(dig.tobytes())
        fh.write(off.tobytes())
        res["spilled"] = (at, at + dig.itemsize * len(dig), off.typecode)

    def digests(self, res: Dict[str, Any], lo: int, hi: int) -> array:
        return self._read(res["spilled"][0], "I", lo, hi)

    def offsets(self, res: Dict[str, Any], lo: int, hi: int) -> array:
        _, at, code = res["spilled"]
        return self._read(at, code, lo, hi)

    def _read(self, at: int, code: str, lo: int, hi: int) -> array:
        out = array(code)
        if hi > lo:
            assert self._fh is not None
            self._fh.seek(at + out.itemsize * lo)
            out.frombytes(self._fh.read(out.itemsize * (hi - lo)))
        return out

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _find_duplicates(
    path: str,
    pieces: List[Tuple[int, int]],
    results: List[Dict[str, Any]],
    spill: Spill,
    helpers: Sequence[Helper] = (),
) -> Dict[int, Tuple[array, array]]:
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
                seen.update(spill.digests(r, lo, hi))
                total += hi - lo
        if len(seen) == total:
            continue  # no digest twice in this bucket
        del seen
        counts: Counter = Counter()
        for r in results:
            counts.update(spill.digests(r, r["bounds"][b], r["bounds"][b + 1]))
        repeated = {d for d, c in counts.items() if c > 1}
        del counts
        groups: Dict[int, List[int]] = {}  # digest -> line offsets, in file order
        for (start, _), r in zip(pieces, results):
            lo, hi = r["bounds"][b], r["bounds"][b + 1]
            dig, off = spill.digests(r, lo, hi), spill.offsets(r, lo, hi)
            for j in range(hi - lo):
                if dig[j] in repeated:
                    groups.setdefault(dig[j], []).append(start + off[j])
        for group in groups.values():
            offsets.extend(group)
            bounds.append(len(offsets))
            if len(offsets) >= CONFIRM_TASK:
                tasks.append(("confirm", offsets, bounds))
                offsets, bounds = array("q"), array("q", [0])
    if len(offsets):
        tasks.append(("confirm", offsets, bounds))
    del offsets, bounds
    for r in results:  # (no longer needed)
        for key in ("spilled", "bounds"):
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

    run_tasks(path, tasks, list(helpers), deliver, depth=1, keep=False)
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


def validate_file(
    path: str,
    max_requests: int = MAX_REQUESTS_PER_FILE,
    max_bytes: int = MAX_FILE_BYTES,
    max_body_bytes: int = MAX_BODY_BYTES,
    *,
    processes: Optional[int] = None,
    piece_bytes: int = PIECE_BYTES,
    line_limit: Optional[int] = None,
) -> Report:
    """Validate a batch file and plan its chunks (see the module docstring).

    ``line_limit``: the longest line that is valid (default ``max_bytes``). With a larger one,
    a line longer than ``max_bytes`` is valid and planned as a chunk of its own, longer than
    ``max_bytes`` (see ``check_chunk_size``).

    ``processes``: how many processes check the file (this one included); by default one for
    files under PARALLEL_MIN_BYTES, else one per CPU up to MAX_PROCESSES. The report is the
    same whatever ``processes`` and ``piece_bytes`` are.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    pieces = cut(path, size, piece_bytes)
    if processes is None:
        processes = 1 if size < PARALLEL_MIN_BYTES else min(cpus(), MAX_PROCESSES)
    helpers = start_helpers(path, min(processes, len(pieces)) - 1)
    planner = Planner(max_requests, max_bytes)
    bases = [0] * (len(pieces) + 1)  # the line number before each piece

    spill = Spill()

    def deliver(i: int, res: Dict[str, Any]) -> None:
        bases[i + 1] = bases[i] + res["lines"]
        planner.add(pieces[i][0], bases[i], res)
        res.pop("plan", None)
        spill.put(res)

    finished = False
    try:
        buckets = bucket_count(size)
        longest = max(max_bytes, line_limit or 0)
        tasks = [("piece", start, end, longest, max_body_bytes, buckets) for start, end in pieces]
        results = run_tasks(path, tasks, helpers, deliver, depth=2)
        dups = _find_duplicates(path, pieces, results, spill, helpers) if results else {}
        if dups:
            numbers = sorted(dups)
            again = [
                ("piece", pieces[i][0], pieces[i][1], longest, max_body_bytes, 1, dups[i][0], dups[i][1], False)
                for i in numbers
            ]
            for i, res in zip(numbers, run_tasks(path, again, helpers, lambda i, res: None, depth=1)):
                results[i] = res
        finished = True
    finally:
        spill.close()
        for h in helpers:
            h.stop(kill=not finished)
    planner.close()
    return _report(path, size, pieces, bases, results, planner)


def _report(
    path: str,
    size: int,
    pieces: List[Tuple[int, int]],
    bases: List[int],
    results: List[Dict[str, Any]],
    planner: Planner,
) -> Report:
    rep = Report(path=path, bytes=size, lines=bases[-1])
    per_model: Dict[str, List[int]] = {}
    kind_warnings: List[str] = []
    notes: Dict[str, int] = {}
    budgets: Dict[Tuple[str, str], List[Any]] = {}
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
                per_model[model] = pm[:6] + [pm[8]]
                if pm[7]:
                    kind_warnings.append(f"line {base + pm[6]}: {pm[7]}")
            else:
                for k in range(6):
                    total[k] += pm[k]
                total[6] = max(total[6], pm[8])
        for url, count in res["urls"].items():
            rep.endpoints[url] = rep.endpoints.get(url, 0) + count
        for note, count in res["notes"].items():
            notes[note] = notes.get(note, 0) + count
        answerbudget.merge(budgets, res["budgets"], base)
    first_lines = _line_numbers(path, pieces, bases, [k[3] for k in kept if k[3] >= 0]) if kept else {}
    for line, cid, message, first in kept:
        if first >= 0:
            message = DUPLICATE.format(cid=cid, first=first_lines[first])
        rep.errors.append({"line": line, "custom_id": cid, "message": message})
    rep.errors_total = rep.invalid_lines
    for model, (count, tin, mt_sum, free_in, no_mt, expected, largest) in per_model.items():
        rep.models[model] = count
        free = free_in * 11 // 10  # requests without max_tokens: the server's fallback rule (input x 1.1)
        rep.requests += count
        rep.estimated_input_tokens += tin
        rep.max_output_tokens += mt_sum
        rep.requests_without_max_tokens += no_mt
        rep.model_tokens[model] = {
            "requests": count,
            "input_tokens": tin,
            "output_tokens": mt_sum + free,
            "output_tokens_low": expected + free,
            "output_tokens_high": None if no_mt else mt_sum,
            "requests_without_max_tokens": no_mt,
            "largest_max_tokens": largest or None,
        }
    if rep.requests == 0 and rep.errors_total == 0:
        rep.add_error(max(1, rep.lines), None, "the file contains no requests (it is empty or only blank lines)")
    rep.warnings.extend(kind_warnings)
    if len(rep.models) > 1:
        rep.warnings.append(
            "more than one model in the file: " + ", ".join(f"{m} ({c})" for m, c in rep.models.items())
        )
    if len(rep.endpoints) > 1:
        rep.warnings.append(
            "more than one url in the file: "
            + ", ".join(f"{u} ({c})" for u, c in rep.endpoints.items())
            + "; each line is sent to its own url"
        )
    for note, count in notes.items():
        if count:  # (0: only on lines found invalid after all)
            rep.warnings.append(f"{count} line(s): {note}")
    if crlf:
        rep.warnings.append(f"{crlf} line(s) end with CRLF; the server accepts them")
    rep.warnings.extend(answerbudget.warnings(budgets))
    if rep.valid and planner.ok:
        rep.chunks = planner.chunks
    return rep


def check_chunk_size(rep: Report, max_bytes: int, flag: str = "--max-bytes") -> None:
    """Refuse a chunk size the user set below the server's file limit that some line is longer
    than (validated with ``line_limit``: such a line is a chunk of its own): the flag is the
    problem, not the lines."""
    over = [c for c in rep.chunks if c.bytes > max_bytes]
    if not over:
        return
    from ..core.errors import UsageError

    first = over[0]
    more = f" and {len(over) - 1} more line(s)" if len(over) > 1 else ""
    longest = max(c.bytes for c in over)
    raise UsageError(
        f"{flag} {max_bytes} is smaller than line {first.start_line} ({first.bytes} bytes){more}; "
        "a chunk is one uploaded file, and no chunk can hold that line; nothing was sent",
        hint=f"Use {flag} {longest} or more (the longest line), or leave {flag} out: the server's "
        f"file limit is {MAX_FILE_BYTES} bytes.",
    )


def validated_input(path: str, flag: str, outcome: str) -> Report:
    """The report of the batch file given with ``flag``, refused (exit 2) when it is missing or
    invalid: its errors listed (events), and ``outcome`` (what was not done) in the message."""
    from ..core.errors import InputError, UsageError

    if not os.path.isfile(path):
        what = "is a directory, not a file" if os.path.isdir(path) else "no such file"
        raise UsageError(f"{path} ({flag}): {what}", hint="Pass a batch JSONL file.")
    rep = validate_file(path)
    if not rep.valid:
        print_errors(rep)
        raise InputError(
            f"{path} ({flag}): {rep.errors_total} invalid line(s); {outcome}",
            hint="Fix the lines listed above (validate_batch_file.py checks the file), then run this again.",
        )
    return rep


def print_errors(rep: Report, max_errors: int = 50) -> None:
    """``line N (custom_id ...): message`` for each kept error, as LISTING events (said even
    with --quiet: these are the result, not progress)."""
    out = []
    for e in rep.errors[: max(0, max_errors)]:
        cid = f" (custom_id {e['custom_id']!r})" if e.get("custom_id") is not None else ""
        out.append(f"line {e['line']}{cid}: {e['message']}")
    shown = min(len(rep.errors), max(0, max_errors))
    if rep.errors_total > shown:
        out.append(f"... and {rep.errors_total - shown} more")
    events.listing(out)


def iter_requests(
    path: str, start_byte: int = 0, end_byte: Optional[int] = None
) -> Iterable[Tuple[int, Dict[str, Any], bytes]]:
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
