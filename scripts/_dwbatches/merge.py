"""Merging: results in the order of the requests, into JSONL or CSV files.

Merging never holds result bodies in memory: an index maps ``custom_id`` to (file, byte
offset, length) and the lines are read back with seek. Later rounds win: the newest success
of a request is the one written. CSV output is either the original CSV with answer and error
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
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Tuple

from .download import KINDS, Store, Target, iter_raw
from .errors import DWError, UsageError
from .files import atomic_output
from .idtable import MARK, NOT_FOUND, FileIds, IdTable
from .resultlines import _short, csv_cell, error_text, extract_content, is_success, simple_line

FORMATS = ("raw", "simple", "csv")


MISSING_PENDING = "missing: no result yet"


MISSING_NOT_RUN = "not run"


def iter_input_lines(path: str, purpose: str, hint: str) -> Iterator[Tuple[str, bytes, int]]:
    """(custom_id, raw line, byte offset) of each request of a batch JSONL input, in file order
    (streamed). ``purpose`` and ``hint`` word the error for a line that is not JSON."""
    with open(path, "rb") as fh:
        off = 0
        for n, line in enumerate(fh, 1):
            at, off = off, off + len(line)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                raise UsageError(f"{path}, line {n}: not valid JSON; cannot {purpose}", hint=hint) from None
            cid = obj.get("custom_id") if isinstance(obj, dict) else None
            if isinstance(cid, str):
                yield cid, line, at


def iter_input_ids(path: str) -> Iterator[Tuple[str, int]]:
    """(custom_id, byte offset of its line) of a batch JSONL input, in file order (streamed)."""
    for cid, _, off in iter_input_lines(path, "read the request order", "Pass the original batch input file."):
        yield cid, off


# A result's place on disk in one integer: the raw file's index, the byte offset of the line,
# and whether the line is a success (which later errors never replace).
_OFFSET_BITS = 46  # 64 TiB a file
_FILE_BITS = 16
SUCCESS = 1 << (_OFFSET_BITS + _FILE_BITS)


class ResultIndex:
    """custom_id → where its newest successful result (or, lacking one, its newest error) is
    on disk, in an ``IdTable`` (16 bytes a slot; the line is read back to confirm an id). The
    table's flag marks the ids written by a merge."""

    def __init__(self, capacity: int = 0):
        self.files: List[str] = []
        self.table = IdTable(same=self._holds, capacity=capacity)
        self._handles: Dict[int, IO[bytes]] = {}
        self._last: Tuple[int, bytes, Any] = (-1, b"", None)  # the last line read: (place, raw, parsed)

    def add_file(self, path: str, kind: str) -> None:
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
            if kind == "output" and is_success(obj):
                place |= SUCCESS
            slot = table.find(cid)
            if slot == NOT_FOUND:
                table.insert(cid, place)
            elif place & SUCCESS or not table.value(slot) & SUCCESS:
                table.set_value(slot, place)

    def _line(self, place: int) -> Tuple[bytes, Any]:
        """(raw line, parsed line) at ``place`` (the last one read is kept)."""
        if self._last[0] == place:
            return self._last[1], self._last[2]
        idx = (place >> _OFFSET_BITS) & ((1 << _FILE_BITS) - 1)
        fh = self._handles.get(idx)
        if fh is None:
            fh = self._handles[idx] = open(self.files[idx], "rb")
        fh.seek(place & ((1 << _OFFSET_BITS) - 1))
        raw = fh.readline().rstrip(b"\r\n")
        try:
            obj = json.loads(raw)
        except ValueError:
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

    def result(self, slot: int) -> Tuple[bytes, Any, bool, int]:
        """(raw line, parsed line, success, raw file index) of the entry in ``slot``."""
        place = self.table.value(slot)
        raw, obj = self._line(place)
        return raw, obj, bool(place & SUCCESS), (place >> _OFFSET_BITS) & ((1 << _FILE_BITS) - 1)

    def successes(self) -> int:
        """How many ids have a successful result."""
        return sum(1 for value in self.table.values() if value & SUCCESS)

    def errors(self) -> Iterator[Tuple[bytes, Any]]:
        """(raw line, parsed line) of each id whose result is an error (no success)."""
        for value in self.table.values():
            place = value & ~MARK
            if not place & SUCCESS:
                yield self._line(place)

    def ids_in_order(self) -> Iterator[Tuple[str, int]]:
        """The custom_ids of the indexed lines, in file order (an id can come more than once)."""
        for path in self.files:
            for off, _, obj in iter_raw(path):
                cid = obj.get("custom_id")
                if isinstance(cid, str):
                    yield cid, off

    def close(self) -> None:
        for fh in self._handles.values():
            fh.close()
        self._handles.clear()
        self._last = (-1, b"", None)

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
    succeeded: int = 0
    failed: int = 0
    missing: int = 0
    unexpected: int = 0  # results whose custom_id is not among the requests
    failed_sample: List[Dict[str, Any]] = field(default_factory=list)
    missing_sample: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)  # what the merge had to tell (warnings)


SAMPLE = 5


class Merger:
    """Writes OUT and ERR from an index, in the order of the requests."""

    def __init__(self, index: ResultIndex, missing_reason: str):
        self.index = index
        self.missing_reason = missing_reason
        self.counts = MergeCounts()
        # usage of the successful results written: (raw file index, model) -> [requests, in, out]
        self.usage: Dict[Tuple[int, str], List[int]] = {}

    def _note_usage(self, file_idx: int, obj: Optional[Dict[str, Any]]) -> None:
        body = ((obj or {}).get("response") or {}).get("body")
        if not isinstance(body, dict):
            return
        u = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        tin = u.get("prompt_tokens", u.get("input_tokens")) or 0
        tout = u.get("completion_tokens", u.get("output_tokens")) or 0
        key = (file_idx, str(body.get("model") or "unknown"))
        acc = self.usage.setdefault(key, [0, 0, 0])
        acc[0] += 1
        acc[1] += int(tin) if isinstance(tin, (int, float)) else 0
        acc[2] += int(tout) if isinstance(tout, (int, float)) else 0

    def _classify(self, slot: int) -> Tuple[Optional[bytes], Optional[Dict[str, Any]], Optional[str], int]:
        """(raw line, parsed line, error text, raw file index) of an indexed id; error text None
        means success. A missing id (slot NOT_FOUND) has no line and the missing reason."""
        if slot == NOT_FOUND:
            return None, None, self.missing_reason, -1
        raw, obj, success, file_idx = self.index.result(slot)
        return raw, obj, None if success else error_text(obj), file_idx

    def _count(self, cid: str, classified: Tuple[Optional[bytes], Any, Optional[str], int], err_fh: IO[bytes]) -> None:
        raw, obj, err, file_idx = classified
        c = self.counts
        c.requests += 1
        if err is None:
            c.succeeded += 1
            self._note_usage(file_idx, obj)
            return
        if raw is not None:
            c.failed += 1
            if len(c.failed_sample) < SAMPLE:
                c.failed_sample.append({"custom_id": cid, "error": _short(err, 300)})
            err_fh.write(raw + b"\n")
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
        self, order: Iterator[Tuple[str, int]], order_path: Optional[str], fmt: str, out_path: str, err_path: str
    ) -> MergeCounts:
        """``order``: (custom_id, byte offset of its line in ``order_path``), the requests in
        their order (an id that comes again is skipped); ``order_path`` None: the order is the
        index's own (``ResultIndex.ids_in_order``)."""
        index = self.index
        missing = _Missing(order_path)
        try:
            with atomic_output(out_path) as out_fh, atomic_output(err_path) as err_fh:
                for cid, off in order:
                    slot = index.find(cid)
                    if not (index.table.mark(slot) if slot != NOT_FOUND else missing.first(cid, off)):
                        continue
                    classified = self._classify(slot)
                    self._count(cid, classified, err_fh)
                    raw, obj, err, _ = classified
                    if fmt == "raw":
                        if err is None and raw is not None:
                            out_fh.write(raw + b"\n")
                    else:
                        doc = simple_line(cid, obj, err)
                        out_fh.write(json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n")
        finally:
            missing.close()
        self.counts.unexpected = index.unexpected
        return self.counts

    def write_csv(self, rows: Any, out_path: str, err_path: str, requests_path: Optional[str] = None) -> MergeCounts:
        """The CSV with answer and error columns (``rows``: ``MatchedCsvRows`` or ``RequestRows``).

        ``requests_path``: the job's requests, when known. A row whose id is not among them (a
        row added after the submit) gets no answer and is not counted. A request that no row
        claims any more (its row deleted, or its id edited since the submit) is not dropped:
        its answer (or error) is appended as a row of its own, id column filled, with a note in
        ``counts.notes``. A row repeating an id already written gets the note, not a copy of
        another row's answer."""
        index = self.index
        requested: Optional[FileIds] = None  # every request once; the flag: a row was written for it
        if requests_path:
            requested = FileIds(requests_path)
            for cid, off in iter_input_ids(requests_path):
                requested.add(cid, off)
        missing = _Missing(None)
        repeated: List[str] = []
        try:
            with atomic_output(out_path, text=True) as out_fh, atomic_output(err_path) as err_fh:
                if rows.bom:  # as the source had (Excel needs it to show non-ASCII text)
                    out_fh.write("\ufeff")
                writer = csv.writer(out_fh, dialect=rows.dialect)
                writer.writerow(rows.header + [rows.response_col, rows.error_col])
                for cid, row in rows:
                    if cid is None or (requested is not None and cid not in requested):
                        # a row that produced no request (skipped as empty, or added after the submit)
                        writer.writerow(row + ["", "no request was made for this row"])
                        continue
                    first = requested.mark(cid) if requested is not None else missing.first(cid, 0)
                    if not first:
                        repeated.append(cid)
                        writer.writerow(row + ["", "another row before this one has the same id and got its answer"])
                        continue
                    self._write_row(writer, cid, row, err_fh)
                rowless: List[str] = []
                if requested is not None and requested.table.marked < len(requested.table):
                    for cid, _ in iter_input_ids(requests_path):
                        if requested.mark(cid):  # no row claimed it
                            rowless.append(cid)
                            self._write_row(writer, cid, rows.row_for(cid), err_fh)
        finally:
            missing.close()
            if requested is not None:
                requested.close()
        self.counts.unexpected = index.unexpected
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
        classified = self._classify(slot)
        self._count(cid, classified, err_fh)
        _, obj, err, _ = classified
        if err is None:
            body = (obj or {}).get("response", {}).get("body")
            writer.writerow(row + [csv_cell(extract_content(body)), ""])
        else:
            writer.writerow(row + ["", err])


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


def write_subset(input_path: str, keep: Any, dest: Optional[str]) -> Tuple[int, List[str]]:
    """Copy the request lines of ``input_path`` whose custom_id satisfies ``keep`` to ``dest``,
    verbatim and in order (streamed; written atomically; ``dest`` None only counts). Returns
    (count, first custom_ids)."""
    count = 0
    sample: List[str] = []
    seen = FileIds(input_path)
    sink = atomic_output(dest, mode=0o600) if dest else contextlib.nullcontext(io.BytesIO())
    try:
        with sink as out:
            for cid, line, off in iter_input_lines(
                input_path, "build the retry input", "Restore the original batch input of the job."
            ):
                if not seen.first(cid, off) or not keep(cid):
                    continue
                if dest:
                    out.write(line if line.endswith(b"\n") else line + b"\n")
                count += 1
                if len(sample) < SAMPLE:
                    sample.append(cid)
    finally:
        seen.close()
    return count, sample
