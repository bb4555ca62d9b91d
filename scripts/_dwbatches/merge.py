"""Merging: results in the order of the requests, into JSONL or CSV files.

Merging never holds result bodies in memory: an index maps ``custom_id`` to (file, byte
offset, length) and the lines are read back with seek. Later rounds win: the newest success
of a request is the one written. CSV output is either the original CSV with answer and error
columns (rows matched by id column or position) or one row per request.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from dataclasses import dataclass, field
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Tuple

from .builder import custom_id_for, row_id_text
from .download import KINDS, Store, Target, iter_raw
from .errors import (
    DWError,
    UsageError,
)
from .files import atomic_output
from .resultlines import _short, csv_cell, error_text, extract_content, is_success, request_text, simple_line
from .sources import CsvRows

FORMATS = ("raw", "simple", "csv")


MISSING_PENDING = "missing: no result yet"


MISSING_NOT_RUN = "not run"


def iter_input_lines(path: str, purpose: str, hint: str) -> Iterator[Tuple[str, bytes]]:
    """(custom_id, raw line) of each request of a batch JSONL input, in file order (streamed).
    ``purpose`` and ``hint`` word the error for a line that is not JSON."""
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                raise UsageError(f"{path}, line {n}: not valid JSON; cannot {purpose}", hint=hint) from None
            cid = obj.get("custom_id") if isinstance(obj, dict) else None
            if isinstance(cid, str):
                yield cid, line


def iter_input_ids(path: str) -> Iterator[str]:
    """custom_ids of a batch JSONL input, in file order (streamed)."""
    for cid, _ in iter_input_lines(path, "read the request order", "Pass the original batch input file."):
        yield cid


class ResultIndex:
    """custom_id → where its newest successful result (or newest error) is on disk."""

    def __init__(self, keep_order: bool = False):
        self.files: List[str] = []
        self.success: Dict[str, Tuple[int, int, int]] = {}
        self.errors: Dict[str, Tuple[int, int, int]] = {}
        self.order: Optional[List[str]] = [] if keep_order else None
        self._seen: set = set()
        self._handles: Dict[int, IO[bytes]] = {}

    def add_file(self, path: str, kind: str) -> None:
        idx = len(self.files)
        self.files.append(path)
        for off, n, obj in iter_raw(path):
            cid = obj.get("custom_id")
            if not isinstance(cid, str):
                continue
            if self.order is not None and cid not in self._seen:
                self._seen.add(cid)
                self.order.append(cid)
            if kind == "output" and is_success(obj):
                self.success[cid] = (idx, off, n)
            else:
                self.errors[cid] = (idx, off, n)

    def read(self, loc: Tuple[int, int, int]) -> bytes:
        idx, off, n = loc
        fh = self._handles.get(idx)
        if fh is None:
            fh = self._handles[idx] = open(self.files[idx], "rb")
        fh.seek(off)
        return fh.read(n).rstrip(b"\r\n")

    def close(self) -> None:
        for fh in self._handles.values():
            fh.close()
        self._handles.clear()

    def ids(self) -> set:
        return self.success.keys() | self.errors.keys()


def build_index(store: Store, targets: Sequence[Target], keep_order: bool) -> ResultIndex:
    """Index raw files in target order (rounds in order), so that later rounds win."""
    index = ResultIndex(keep_order=keep_order)
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


SAMPLE = 5


class Merger:
    """Writes OUT and ERR from an index, in the order of the requests."""

    def __init__(self, index: ResultIndex, missing_reason: str):
        self.index = index
        self.missing_reason = missing_reason
        self.counts = MergeCounts()
        # usage of the successful results written: (raw file index, model) -> [requests, in, out]
        self.usage: Dict[Tuple[int, str], List[int]] = {}

    def _note_usage(self, cid: str, obj: Optional[Dict[str, Any]]) -> None:
        body = ((obj or {}).get("response") or {}).get("body")
        if not isinstance(body, dict):
            return
        u = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        tin = u.get("prompt_tokens", u.get("input_tokens")) or 0
        tout = u.get("completion_tokens", u.get("output_tokens")) or 0
        key = (self.index.success[cid][0], str(body.get("model") or "unknown"))
        acc = self.usage.setdefault(key, [0, 0, 0])
        acc[0] += 1
        acc[1] += int(tin) if isinstance(tin, (int, float)) else 0
        acc[2] += int(tout) if isinstance(tout, (int, float)) else 0

    def _classify(self, cid: str) -> Tuple[Optional[bytes], Optional[Dict[str, Any]], Optional[str]]:
        """(raw success line, parsed line, error text); error text None means success."""
        loc = self.index.success.get(cid)
        if loc is not None:
            raw = self.index.read(loc)
            return raw, json.loads(raw), None
        loc = self.index.errors.get(cid)
        if loc is not None:
            raw = self.index.read(loc)
            obj = json.loads(raw)
            return raw, obj, error_text(obj)
        return None, None, self.missing_reason

    def _count(self, cid: str, raw: Optional[bytes], err: Optional[str], err_fh: IO[bytes]) -> None:
        c = self.counts
        c.requests += 1
        if err is None:
            c.succeeded += 1
            if raw is not None:
                self._note_usage(cid, json.loads(raw))
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
            line = {"id": None, "custom_id": cid, "response": None,
                    "error": {"code": "missing", "message": self.missing_reason}}
            err_fh.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")

    def write_jsonl(self, order: Iterator[str], fmt: str, out_path: str, err_path: str) -> MergeCounts:
        seen: set = set()
        with atomic_output(out_path) as out_fh, atomic_output(err_path) as err_fh:
            for cid in order:
                if cid in seen:
                    continue
                seen.add(cid)
                raw, obj, err = self._classify(cid)
                self._count(cid, raw, err, err_fh)
                if fmt == "raw":
                    if err is None and raw is not None:
                        out_fh.write(raw + b"\n")
                else:
                    doc = simple_line(cid, obj, err)
                    out_fh.write(json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n")
        self.counts.unexpected = len(self.index.ids() - seen)
        return self.counts

    def write_csv(self, rows: MatchedCsvRows, out_path: str, err_path: str,
                  submitted: Optional[set] = None) -> MergeCounts:
        """The CSV with answer and error columns. ``submitted``: the custom_ids of the job's
        requests, when known; a row whose id is not among them (a row added after the submit)
        gets no answer and is not counted."""
        with atomic_output(out_path, text=True) as out_fh, atomic_output(err_path) as err_fh:
            if rows.bom:  # as the source had (Excel needs it to show non-ASCII text)
                out_fh.write("\ufeff")
            writer = csv.writer(out_fh, dialect=rows.dialect)
            writer.writerow(rows.header + [rows.response_col, rows.error_col])
            seen: set = set()
            for cid, row in rows:
                if cid is None or (submitted is not None and cid not in submitted):
                    # a row that produced no request (skipped as empty, or added after the submit)
                    writer.writerow(row + ["", "no request was made for this row"])
                    continue
                raw, obj, err = self._classify(cid)
                if cid not in seen:
                    seen.add(cid)
                    self._count(cid, raw, err, err_fh)
                if err is None:
                    body = (obj or {}).get("response", {}).get("body")
                    writer.writerow(row + [csv_cell(extract_content(body)), ""])
                else:
                    writer.writerow(row + ["", err])
            self.counts.unexpected = len(self.index.ids() - seen)
        return self.counts


class RequestRows:
    """The requests of a job that was not built from a CSV, as CSV rows: custom_id, the prompt
    (``request_text``), then the answer and error columns."""

    def __init__(self, input_path: str, column: Optional[str] = None):
        self.input_path = input_path
        self.header = ["custom_id", "prompt"]
        self.response_col = column or "response"
        if self.response_col in self.header:
            raise UsageError(f"--column {self.response_col!r} is already a column of the results CSV",
                             hint="Name a new column for the answers, e.g. --column answer.")
        self.error_col = "error" if self.response_col != "error" else "dw_error"
        self.dialect: Any = csv.excel
        self.bom = False

    def __iter__(self) -> Iterator[Tuple[Optional[str], List[str]]]:
        for cid, line in iter_input_lines(self.input_path, "read the requests", "Restore the job's input."):
            yield cid, [cid, request_text(line)]


class MatchedCsvRows:
    """Rows of the original CSV, each with the custom_id create_batch_file.py gave it.

    With the job's ``source`` (``id_prefix``, ``id_column``) the custom_id is computed the way
    the builder computes it (``<prefix>-<id column value>`` or ``<prefix>-<zero-padded row
    number>``); without it, rows are matched to the input's requests in order (the builder
    writes one request per non-empty row, in row order). Empty rows are skipped, as the
    builder skips them. Yields (custom_id or None, row values). The CSV is read with the
    delimiter the builder used; ``dialect`` and ``bom`` say how to write a CSV like it.
    """

    def __init__(self, csv_path: str, source: Optional[Dict[str, Any]], input_path: Optional[str],
                 column: Optional[str] = None):
        self.csv_path = csv_path
        self.source = source or {}
        self.input_path = input_path
        # a source that records no delimiter was built with commas, when only blank lines were skipped
        legacy = bool(self.source) and "delimiter" not in self.source
        delimiter = "," if legacy else None  # None: detected from the header, as the builder does
        if not legacy and self.source.get("path") == os.path.abspath(csv_path):
            delimiter = self.source.get("delimiter")
        self._read_as: Dict[str, Any] = {"delimiter": delimiter, "skip_empty_rows": not legacy}
        with CsvRows(csv_path, **self._read_as) as rows:
            self.header = list(rows.header)
            self.dialect: Any = rows.dialect
            self.bom: bool = rows.bom
        names = set(self.header)
        if column and column in names:
            raise UsageError(f"--column {column!r} is already a column of {csv_path}",
                             hint="Name a new column for the answers, e.g. --column answer.")
        self.response_col = column or ("response" if "response" not in names else "dw_response")
        self.error_col = "error" if "error" not in names and self.response_col != "error" else "dw_error"

    def __iter__(self) -> Iterator[Tuple[Optional[str], List[str]]]:
        src = self.source
        prefix = src.get("id_prefix")
        id_column = src.get("id_column")
        limit = src.get("rows")
        ids: Optional[Iterator[str]] = None
        if prefix is None:
            if not self.input_path or not os.path.isfile(self.input_path):
                raise UsageError("cannot match the CSV rows to requests: the batch input file is missing",
                                 hint="Pass --format raw or simple, or restore the input file.")
            ids = iter_input_ids(self.input_path)
        with CsvRows(self.csv_path, **self._read_as) as rows:
            number = 0
            for line, row in rows:
                number += 1
                values = [row.get(h, "") for h in self.header]
                if ids is not None:
                    yield next(ids, None), values
                elif isinstance(limit, int) and number > limit and not id_column:  # (--limit builds)
                    yield None, values
                elif id_column:
                    try:
                        rid = row_id_text(row.get(id_column), line, id_column)
                    except DWError:
                        yield None, values
                        continue
                    yield custom_id_for(prefix, row_id=rid), values
                else:
                    yield custom_id_for(prefix, number), values


def write_subset(input_path: str, keep: Any, dest: Optional[str]) -> Tuple[int, List[str]]:
    """Copy the request lines of ``input_path`` whose custom_id satisfies ``keep`` to ``dest``,
    verbatim and in order (streamed; written atomically; ``dest`` None only counts). Returns
    (count, first custom_ids)."""
    count = 0
    sample: List[str] = []
    seen: set = set()
    sink = atomic_output(dest, mode=0o600) if dest else contextlib.nullcontext(io.BytesIO())
    with sink as out:
        for cid, line in iter_input_lines(input_path, "build the retry input",
                                          "Restore the original batch input of the job."):
            if cid in seen or not keep(cid):
                continue
            seen.add(cid)
            if dest:
                out.write(line if line.endswith(b"\n") else line + b"\n")
            count += 1
            if len(sample) < SAMPLE:
                sample.append(cid)
    return count, sample
