"""Merging: results in the order of the requests, into JSONL or CSV files.

Merging never holds result bodies in memory: an index maps ``custom_id`` to (file, byte
offset, length) and the lines are read back with seek. Later rounds win: the newest good
answer of a request is the one written (else its newest answer, else its newest error), and
every answer is checked (``answers``): an HTTP 200 that is empty, cut or not the JSON asked
for is counted and marked as such, never as a success. CSV output is either the original CSV with answer and error
columns (rows matched by id column or position) or one row per request: the rows come from
``csvrows``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from dataclasses import dataclass, field
from typing import IO, Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from ..api.requestedit import Changes
from ..core.errors import DWError, UsageError
from ..core.files import atomic_output
from ..core.idtable import MARK, NOT_FOUND, FileIds, IdTable
from . import answers, fixes
from .download import KINDS, Store, Target, iter_raw
from .resultlines import csv_cell, error_text, extract_content, is_success, reused_from, short, simple_line

FORMATS = ("raw", "simple", "csv")


MISSING_PENDING = "missing: no result yet"


MISSING_NOT_RUN = "not run"
NO_REQUEST_ROW = "no request was made for this row"  # a CSV row that made no request

# What became of a request besides an answer (``answers.CHECKS``): it failed, or has no result.
FAILED = "failed"
MISSING = "missing"


def iter_input_lines(path: str, purpose: str, hint: str) -> Iterator[Tuple[str, bytes, int]]:
    """(custom_id, raw line, byte offset) of each request of a batch JSONL input, in file order
    (streamed). ``purpose`` and ``hint`` word the error for a line that is not JSON."""
    for cid, line, at, _ in iter_input_requests(path, purpose, hint):
        yield cid, line, at


def iter_input_requests(path: str, purpose: str, hint: str) -> Iterator[Tuple[str, bytes, int, Dict[str, Any]]]:
    """(custom_id, raw line, byte offset, parsed line) of each request of a batch JSONL input."""
    with open(path, "rb") as fh:
        off = 0
        for n, line in enumerate(fh, 1):
            at, off = off, off + len(line)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):  # not JSON, or nested past any real answer
                raise UsageError(f"{path}, line {n}: not valid JSON; cannot {purpose}", hint=hint) from None
            cid = obj.get("custom_id") if isinstance(obj, dict) else None
            if isinstance(cid, str):
                yield cid, line, at, obj


def iter_input_order(path: str) -> Iterator[Tuple[str, int, answers.Expect]]:
    """(custom_id, byte offset of its line, what its answer must be) of a batch JSONL input."""
    for cid, _, off, obj in iter_input_requests(path, "read the request order", "Pass the original batch input file."):
        yield cid, off, answers.expectation(obj)


def iter_input_ids(path: str) -> Iterator[Tuple[str, int]]:
    """(custom_id, byte offset of its line) of a batch JSONL input, in file order (streamed)."""
    for cid, _, off in iter_input_lines(path, "read the request order", "Pass the original batch input file."):
        yield cid, off


# A result's place on disk in one integer: the raw file's index, the byte offset of the line,
# and its rank: a success (HTTP 200), which later errors never replace, and among successes a
# good answer (not empty, cut or filtered), which later bad answers never replace. The GOOD
# bit is set only where two answers of an id were compared (a rerun): an id answered once is
# checked when it is merged, and no earlier.
_OFFSET_BITS = 46  # 64 TiB a file
_FILE_BITS = 15
GOOD = 1 << (_OFFSET_BITS + _FILE_BITS)
SUCCESS = GOOD << 1
_RANK_SHIFT = _OFFSET_BITS + _FILE_BITS
_FILE_MASK = (1 << _FILE_BITS) - 1


class ResultIndex:
    """custom_id → where its newest good answer (or, lacking one, its newest answer, or its
    newest error) is on disk, in an ``IdTable`` (16 bytes a slot; the line is read back to confirm an id). The
    table's flag marks the ids written by a merge."""

    def __init__(self, capacity: int = 0):
        self.files: List[str] = []
        self.table = IdTable(same=self._holds, capacity=capacity)
        # every answer received (HTTP 200, good or not: each was billed), once per batch:
        # (raw file index, model) -> [answers, input tokens, output tokens, reasoning tokens]
        self.usage: Dict[Tuple[int, str], List[int]] = {}
        # answers added not billed (reused: ``answerreuse``), by model, as above: what they saved
        self.unbilled: Dict[str, List[int]] = {}
        self._handles: Dict[int, IO[bytes]] = {}
        self._last: Tuple[int, bytes, Any] = (-1, b"", None)  # the last line read: (place, raw, parsed)

    def add_file(self, path: str, kind: str, billed: bool = True) -> None:
        """Index a raw file (``billed`` False: answers this job did not pay for, counted apart)."""
        idx = len(self.files)
        if idx >= 1 << _FILE_BITS:
            raise DWError(
                f"a job of more than {(1 << _FILE_BITS) // 2} batches cannot be merged",
                hint="Split the work into several jobs.",
            )
        self.files.append(path)
        table = self.table
        for off, _, obj in iter_raw(path):
            cid = obj.get("custom_id")
            if not isinstance(cid, str):
                continue
            place = (idx << _OFFSET_BITS) | off
            slot = table.find(cid)
            old = table.value(slot) if slot != NOT_FOUND else 0
            if kind == "output" and is_success(obj):
                place |= SUCCESS
                body = (obj.get("response") or {}).get("body")
                if slot == NOT_FOUND or (old >> _OFFSET_BITS) & _FILE_MASK != idx:  # not a repeat
                    self._note_usage(idx, body, billed)
                if old & SUCCESS:  # two answers: the good one wins
                    if answers.check(body) == answers.GOOD:
                        place |= GOOD
                    if not old & GOOD and self._good_at(old):
                        old |= GOOD
                        table.set_value(slot, old)
            if slot == NOT_FOUND:
                table.insert(cid, place)
            elif place >> _RANK_SHIFT >= old >> _RANK_SHIFT:  # the newest of the best rank
                table.set_value(slot, place)

    def _good_at(self, place: int) -> bool:
        obj = self._line(place)[1]
        return answers.check(((obj or {}).get("response") or {}).get("body")) == answers.GOOD

    def _note_usage(self, file_idx: int, body: Any, billed: bool = True) -> None:
        if not isinstance(body, dict):
            return
        u = body.get("usage")
        u = u if isinstance(u, dict) else {}
        counts = (
            u.get("prompt_tokens", u.get("input_tokens")) or 0,
            u.get("completion_tokens", u.get("output_tokens")) or 0,
            answers.reasoning_tokens(body),
        )
        model = str(body.get("model") or "unknown")
        acc = (
            self.usage.setdefault((file_idx, model), [0, 0, 0, 0])
            if billed
            else self.unbilled.setdefault(model, [0, 0, 0, 0])
        )
        acc[0] += 1
        for i, value in enumerate(counts, 1):
            acc[i] += int(value) if isinstance(value, (int, float)) else 0

    def _line(self, place: int) -> Tuple[bytes, Any]:
        """(raw line, parsed line) at ``place`` (the last one read is kept)."""
        if self._last[0] == place:
            return self._last[1], self._last[2]
        idx = (place >> _OFFSET_BITS) & _FILE_MASK
        fh = self._handles.get(idx)
        if fh is None:
            fh = self._handles[idx] = open(self.files[idx], "rb")
        fh.seek(place & ((1 << _OFFSET_BITS) - 1))
        raw = fh.readline().rstrip(b"\r\n")
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, or nested past any real answer
            obj = None
        self._last = (place, raw, obj)
        return raw, obj

    def _holds(self, place: int, custom_id: str) -> bool:
        obj = self._line(place)[1]
        return isinstance(obj, dict) and obj.get("custom_id") == custom_id

    def find(self, custom_id: str) -> int:
        """The slot of ``custom_id`` in ``table``, or NOT_FOUND."""
        return self.table.find(custom_id)

    def status(self, custom_id: str) -> Optional[str]:
        """ "success", "error", or None when no result of ``custom_id`` was downloaded."""
        slot = self.table.find(custom_id)
        if slot == NOT_FOUND:
            return None
        return "success" if self.table.value(slot) & SUCCESS else "error"

    def body(self, custom_id: str) -> Any:
        """The response body of the result indexed for ``custom_id`` (None without one)."""
        slot = self.table.find(custom_id)
        if slot == NOT_FOUND:
            return None
        obj = self._line(self.table.value(slot))[1]
        return ((obj or {}).get("response") or {}).get("body")

    def check(self, custom_id: str, expect: answers.Expect = None) -> str:
        """What became of ``custom_id``: one of ``answers.CHECKS`` for an answer (judged against
        ``expect``), FAILED, or MISSING when no result was downloaded."""
        slot = self.table.find(custom_id)
        if slot == NOT_FOUND:
            return MISSING
        place = self.table.value(slot)
        if not place & SUCCESS:
            return FAILED
        if place & GOOD and expect is None:
            return answers.GOOD
        obj = self._line(place)[1]
        return answers.check(((obj or {}).get("response") or {}).get("body"), expect, text_good=bool(place & GOOD))

    def result(self, slot: int) -> Tuple[bytes, Any, bool, int]:
        """(raw line, parsed line, success, raw file index) of the entry in ``slot``."""
        place = self.table.value(slot)
        raw, obj = self._line(place)
        return raw, obj, bool(place & SUCCESS), (place >> _OFFSET_BITS) & _FILE_MASK

    def good(self, slot: int) -> bool:
        """Whether the entry in ``slot`` is known to pass the checks that need no request."""
        return bool(self.table.value(slot) & GOOD)

    def successes(self) -> int:
        """How many ids have a successful result."""
        return sum(1 for value in self.table.values() if value & SUCCESS)

    def good_answers(self) -> int:
        """How many ids have a good answer (by the checks that need no request: not empty, cut or
        filtered); reads every answer not compared yet."""
        return sum(1 for value in self.table.values() if value & GOOD or (value & SUCCESS and self._good_at(value)))

    def errors(self) -> Iterator[Tuple[bytes, Any]]:
        """(raw line, parsed line) of each id whose result is an error (no success)."""
        for value in self.table.values():
            place = value & ~MARK
            if not place & SUCCESS:
                yield self._line(place)

    def ids_in_order(self) -> Iterator[Tuple[str, int, answers.Expect]]:
        """The custom_ids of the indexed lines, in file order (an id can come more than once),
        as an order for ``Merger.write_jsonl`` (with no request, what an answer must be is not known)."""
        for path in self.files:
            for off, _, obj in iter_raw(path):
                cid = obj.get("custom_id")
                if isinstance(cid, str):
                    yield cid, off, None

    def close(self) -> None:
        for fh in self._handles.values():
            fh.close()
        self._handles.clear()
        self._last = (-1, b"", None)
        self.table.close()

    @property
    def unexpected(self) -> int:
        """Ids with a result that no merge wrote (not among the requests)."""
        return self.table.count - self.table.marked


def build_index(store: Store, targets: Sequence[Target], capacity: int = 0) -> ResultIndex:
    """Index raw files in target order (rounds in order), so that later rounds win.
    ``capacity``: the number of ids expected (sizes the table once)."""
    index = ResultIndex(capacity=capacity)
    for t in targets:
        for kind in KINDS:
            index.add_file(store.raw_path(t.batch_id, kind), kind)
    return index


@dataclass
class MergeCounts:
    requests: int = 0
    succeeded: int = 0  # good answers
    failed: int = 0
    missing: int = 0
    answers: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(answers.CHECKS, 0))  # HTTP 200 results
    bad_answer_sample: List[Dict[str, Any]] = field(default_factory=list)
    unexpected: int = 0  # results whose custom_id is not among the requests
    failed_sample: List[Dict[str, Any]] = field(default_factory=list)
    missing_sample: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)  # what the merge had to tell (warnings)


SAMPLE = 5


class Result(NamedTuple):
    """What became of one request: its result line (raw and parsed; None when missing), its
    check (``answers.CHECKS``, FAILED or MISSING), the error in words (None for a good answer)
    and the raw file's index."""

    raw: Optional[bytes]
    obj: Optional[Dict[str, Any]]
    check: str
    error: Optional[str]
    file_idx: int


def parse_columns(spec: str) -> List[Tuple[str, str]]:
    """``--columns``: (name written, column taken) pairs from ``a,new=b``; a UsageError says what
    is wrong with it."""
    pairs: List[Tuple[str, str]] = []
    for item in spec.split(","):
        new, eq, old = item.partition("=")
        new, old = new.strip(), (old if eq else new).strip()
        if not new or not old:
            raise UsageError(
                f"--columns {spec!r}: an empty column name",
                hint="Name each column once, comma-separated, e.g. --columns question=prompt,answer=response.",
            )
        pairs.append((new, old))
    names = [new for new, _ in pairs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"--columns {spec!r} writes {twice[0]!r} twice", hint="Give each written column its own name.")
    return pairs


def choose_columns(spec: Optional[str], header: List[str]) -> Tuple[List[str], Optional[List[int]]]:
    """The header written and, with ``spec``, the positions of the chosen columns in a full row."""
    if not spec:
        return header, None
    pairs = parse_columns(spec)
    unknown = [old for _, old in pairs if old not in header]
    if unknown:
        raise UsageError(
            f"--columns names {unknown[0]!r}, which is not a column of the results CSV",
            hint=f"The columns are: {', '.join(header)}.",
        )
    return [new for new, _ in pairs], [header.index(old) for _, old in pairs]


class _Chosen:
    """A CSV writer that writes the chosen cells of each row (``--columns``)."""

    def __init__(self, writer: Any, positions: List[int]):
        self.writer = writer
        self.positions = positions

    def writerow(self, row: List[str]) -> None:
        self.writer.writerow([row[i] for i in self.positions])


class Merger:
    """Writes OUT and ERR from an index, in the order of the requests."""

    def __init__(self, index: ResultIndex, missing_reason: str, raw_cells: bool = False, mark_reused: bool = False):
        self.index = index
        self.mark_reused = mark_reused  # CSV: a column naming the job each reused answer came from
        self.missing_reason = missing_reason
        self.raw_cells = raw_cells  # CSV: text that starts like a formula is written as it is
        self._made_cells: frozenset = frozenset()  # CSV: columns of a row written from the requests
        self.counts = MergeCounts()
        self.tally = fixes.Tally()  # what the bad answers show, for the fix of a rerun
        self._json_asked = False
        self._requested: Optional[FileIds] = None

    def _classify(self, slot: int, expect: answers.Expect) -> Result:
        """What became of an indexed id (slot NOT_FOUND: missing, with the missing reason)."""
        if slot == NOT_FOUND:
            return Result(None, None, MISSING, self.missing_reason, -1)
        raw, obj, success, file_idx = self.index.result(slot)
        if not success:
            return Result(raw, obj, FAILED, error_text(obj), file_idx)
        body = ((obj or {}).get("response") or {}).get("body")
        check = answers.check(body, expect, text_good=self.index.good(slot))
        return Result(raw, obj, check, None if check == answers.GOOD else answers.detail(body, check), file_idx)

    def _count(self, cid: str, res: Result, err_fh: IO[bytes]) -> None:
        """Count one request's result; ERR gets every request without a good answer."""
        c = self.counts
        c.requests += 1
        if res.check in c.answers:  # an HTTP 200: billed, whatever its answer
            c.answers[res.check] += 1
            if res.check == answers.GOOD:
                c.succeeded += 1
                return
            self.tally.add(res.check, ((res.obj or {}).get("response") or {}).get("body"))
            if len(c.bad_answer_sample) < SAMPLE:
                c.bad_answer_sample.append({"custom_id": cid, "answer_check": res.check, "detail": res.error})
            line = dict(res.obj or {}, error={"code": res.check, "message": res.error})
            err_fh.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
        elif res.check == FAILED:
            c.failed += 1
            if len(c.failed_sample) < SAMPLE:
                c.failed_sample.append({"custom_id": cid, "error": short(res.error, 300)})
            assert res.raw is not None  # only a missing request has no result line
            err_fh.write(res.raw + b"\n")
        else:
            c.missing += 1
            if len(c.missing_sample) < SAMPLE:
                c.missing_sample.append(cid)
            line = {
                "id": None,
                "custom_id": cid,
                "response": None,
                "error": {"code": "missing", "message": self.missing_reason},
            }
            err_fh.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")

    def write_jsonl(
        self,
        order: Iterator[Tuple[str, int, answers.Expect]],
        order_path: Optional[str],
        fmt: str,
        out_path: str,
        err_path: str,
    ) -> MergeCounts:
        """``order``: (custom_id, byte offset of its line in ``order_path``, what its answer must
        be), the requests in their order (an id that comes again is skipped); ``order_path``
        None: the order is the index's own (``ResultIndex.ids_in_order``). Raw output holds
        every answer (good or not: see ERR and the counts); simple output says which."""
        index = self.index
        missing = _Missing(order_path)
        try:
            with atomic_output(out_path) as out_fh, atomic_output(err_path) as err_fh:
                for cid, off, expect in order:
                    slot = index.find(cid)
                    if not (index.table.mark(slot) if slot != NOT_FOUND else missing.first(cid, off)):
                        continue
                    res = self._classify(slot, expect)
                    self._count(cid, res, err_fh)
                    if fmt == "raw":
                        if res.check in answers.CHECKS:
                            assert res.raw is not None  # an answer came in a result line
                            out_fh.write(res.raw + b"\n")
                    else:
                        doc = simple_line(cid, res.obj, res.check, res.error)
                        out_fh.write(json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n")
        finally:
            missing.close()
        self.counts.unexpected = index.unexpected
        return self.counts

    def write_csv(
        self,
        rows: Any,
        out_path: str,
        err_path: str,
        requests_path: Optional[str] = None,
        columns: Optional[str] = None,
    ) -> MergeCounts:
        """The CSV with answer, error and answer-check columns (``rows``: ``MatchedCsvRows`` or
        ``RequestRows``). A bad answer's text stays in the answer column (a cut answer, text that
        is not the JSON asked for); the error column says what is wrong with it.

        ``requests_path``: the job's requests, when known. A row whose id is not among them (a
        row added after the submit) gets no answer and is not counted. A request that no row
        claims any more (its row deleted, or its id edited since the submit) is not dropped:
        its answer (or error) is appended as a row of its own, id column filled, with a note in
        ``counts.notes``. A row repeating an id already written gets the note, not a copy of
        another row's answer. ``columns`` (``--columns``): the columns written, in order, renamed."""
        tail = [reused_column(rows.header)] if self.mark_reused else []
        blank = [""] * len(tail)
        header, chosen = choose_columns(
            columns, rows.header + [rows.response_col, rows.error_col, rows.check_col] + tail
        )
        index = self.index
        self._made_cells = frozenset(getattr(rows, "made_columns", ()))  # cells written from requests
        requested: Optional[FileIds] = None  # every request once; the flag: a row was written for it
        self._json_asked = False  # some request asks for JSON: its answers are checked against its line
        if requests_path:
            requested = FileIds(requests_path, capacity=index.table.count)  # (about one result a request)
            for cid, off, expect in iter_input_order(requests_path):
                requested.add(cid, off)
                self._json_asked = self._json_asked or expect is not None
        self._requested = requested
        missing = _Missing(None)
        repeated: List[str] = []
        try:
            with atomic_output(out_path, text=True) as out_fh, atomic_output(err_path) as err_fh:
                if rows.bom:  # as the source had (Excel needs it to show non-ASCII text)
                    out_fh.write("\ufeff")
                writer: Any = csv.writer(out_fh, dialect=rows.dialect)
                writer.writerow(header)
                if chosen is not None:
                    writer = _Chosen(writer, chosen)
                for cid, row in rows:
                    if cid is None or (requested is not None and cid not in requested):
                        # a row that produced no request (skipped as empty, or added after the submit)
                        writer.writerow(row + ["", getattr(rows, "reason", None) or NO_REQUEST_ROW, ""] + blank)
                        continue
                    first = requested.mark(cid) if requested is not None else missing.first(cid, 0)
                    if not first:
                        repeated.append(cid)
                        writer.writerow(
                            row + ["", "another row before this one has the same id and got its answer", ""] + blank
                        )
                        continue
                    self._write_row(writer, cid, row, err_fh)
                rowless: List[str] = []
                if requested is not None and requested.table.marked < len(requested.table):
                    for cid, _ in iter_input_ids(requested.path):
                        if requested.mark(cid):  # no row claimed it
                            rowless.append(cid)
                            self._write_row(writer, cid, rows.row_for(cid), err_fh)
        finally:
            missing.close()
            if requested is not None:
                requested.close()
        self.counts.unexpected = index.unexpected
        self.counts.notes.extend(getattr(rows, "notes", []))
        if rowless:
            self.counts.notes.append(
                f"{len(rowless)} request(s) have no row in the CSV any more (rows deleted, or their ids edited since "
                f"the submit): their results are appended at the end of {os.path.basename(out_path)} "
                f"({', '.join(rowless[:SAMPLE])}{', ...' if len(rowless) > SAMPLE else ''})"
            )
        if repeated:
            self.counts.notes.append(
                f"{len(repeated)} row(s) repeat the id of an earlier row ({', '.join(repeated[:SAMPLE])}); only the "
                "first row with an id gets its answer, the others say so in the error column"
            )
        return self.counts

    def _write_row(self, writer: Any, cid: str, row: List[str], err_fh: IO[bytes]) -> None:
        """One request's row: counted, its failure in ERR, its answer (or error) beside ``row``."""
        slot = self.index.find(cid)
        if slot != NOT_FOUND:
            self.index.table.mark(slot)
        expect = None
        if self._json_asked and self._requested is not None:
            expect = answers.expectation(self._requested.line(cid))
        res = self._classify(slot, expect)
        self._count(cid, res, err_fh)
        answer = ""
        if res.check in answers.CHECKS:
            answer = csv_cell(extract_content(((res.obj or {}).get("response") or {}).get("body")), self.raw_cells)
        row = [csv_cell(v, self.raw_cells) if i in self._made_cells else v for i, v in enumerate(row)]
        tail = []
        if self.mark_reused:
            origin = reused_from(res.obj)
            tail = [csv_cell(origin.get("job"), self.raw_cells) if origin else ""]
        writer.writerow(row + [answer, csv_cell(res.error or "", self.raw_cells), res.check] + tail)


def reused_column(header: Sequence[str]) -> str:
    """The CSV column that names the job a reused answer came from (empty for answers this job
    got itself)."""
    return "reused_from" if "reused_from" not in header else "dw_reused_from"


class _Missing:
    """The requests without a result already written by a merge: by their line in the order's
    file when there is one (compact), else in a set (the CSV rows of a job whose requests
    cannot be read)."""

    def __init__(self, order_path: Optional[str]):
        self._ids = FileIds(order_path) if order_path else None
        self._set: set = set()

    def first(self, custom_id: str, offset: int) -> bool:
        if self._ids is not None:
            return self._ids.first(custom_id, offset)
        if custom_id in self._set:
            return False
        self._set.add(custom_id)
        return True

    def close(self) -> None:
        if self._ids is not None:
            self._ids.close()


def write_subset(
    input_path: str, keep: Any, dest: Optional[str], changes: Optional[Changes] = None, requests: int = 0
) -> Tuple[int, List[str]]:
    """Copy the request lines of ``input_path`` for which ``keep(custom_id, parsed line)`` is
    true to ``dest``, in order (streamed; written atomically; ``dest`` None only counts):
    verbatim, or with ``changes`` made to their bodies. ``requests``: how many the input holds,
    when known (its id table is sized once). Returns (count, first custom_ids)."""
    count = 0
    sample: List[str] = []
    seen = FileIds(input_path, capacity=requests)
    sink = atomic_output(dest, mode=0o600) if dest else contextlib.nullcontext(io.BytesIO())
    try:
        with sink as out:
            for cid, line, off, obj in iter_input_requests(
                input_path, "build the retry input", "Restore the original batch input of the job."
            ):
                if not seen.first(cid, off) or not keep(cid, obj):
                    continue
                if dest and changes:
                    obj = dict(obj, body=changes.apply(obj.get("body") or {}, str(obj.get("url") or "")))
                    out.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n")
                elif dest:
                    out.write(line if line.endswith(b"\n") else line + b"\n")
                count += 1
                if len(sample) < SAMPLE:
                    sample.append(cid)
    finally:
        seen.close()
    return count, sample
