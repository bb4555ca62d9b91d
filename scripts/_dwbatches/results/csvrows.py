"""The rows of a results CSV: the original CSV's rows matched to their custom_ids
(``MatchedCsvRows``), or one row per request of a job built from prompts or JSONL
(``RequestRows``). ``merge.Merger.write_csv`` writes the answer, error and answer-check columns
beside them.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import os
from typing import Any, Deque, Dict, Iterator, List, Optional, Tuple

from ..build.builder import custom_id_for, row_id_text
from ..build.sources import CsvRows
from ..build.template import Template
from ..core.errors import DWError, UsageError
from .merge import NO_REQUEST_ROW, SAMPLE, iter_input_ids, iter_input_lines
from .resultlines import request_text

NO_MATCH = "this row matches no submitted request (added or edited since the build): it was not sent"


def result_columns(names: Any, column: Optional[str]) -> Tuple[str, str, str]:
    """The names of the three columns written beside each row (the answer, the error, the
    answer check), none of them one of ``names`` already."""
    response = column or ("response" if "response" not in names else "dw_response")
    error = "error" if "error" not in names and response != "error" else "dw_error"
    check = "answer_check" if "answer_check" not in names and response != "answer_check" else "dw_answer_check"
    return response, error, check


class RequestRows:
    """The requests of a job that was not built from a CSV, as CSV rows: custom_id, the prompt
    (``request_text``), then the answer and error columns."""

    def __init__(self, input_path: str, column: Optional[str] = None):
        self.input_path = input_path
        self.header = ["custom_id", "prompt"]
        self.made_columns = (1,)  # the prompt is taken from the requests: a cell like any answer
        if column in self.header:
            raise UsageError(
                f"--column {column!r} is already a column of the results CSV",
                hint="Name a new column for the answers, e.g. --column answer.",
            )
        self.response_col, self.error_col, self.check_col = result_columns(self.header, column)
        self.dialect: Any = csv.excel
        self.bom = False

    def row_for(self, custom_id: str) -> List[str]:
        return [custom_id, ""]

    def __iter__(self) -> Iterator[Tuple[Optional[str], List[str]]]:
        for cid, line, _ in iter_input_lines(self.input_path, "read the requests", "Restore the job's input."):
            yield cid, [cid, request_text(line)]


class MatchedCsvRows:
    """Rows of the original CSV, each with the custom_id create_batch_file.py gave it.

    With the job's ``source`` (``id_prefix``, ``id_column``) the custom_id is computed the way
    the builder computes it (``<prefix>-<id column value>`` or ``<prefix>-<zero-padded row
    number>``); without it, rows are matched to the input's requests in order (the builder
    writes one request per non-empty row, in row order). A row whose fields are all empty
    got no request from the builder: it is yielded with None, so that the CSV comes back with
    every row. Yields (custom_id or None, row values). The CSV is read with the
    delimiter the builder used; ``dialect`` and ``bom`` say how to write a CSV like it.

    ``by_content``: the CSV changed since the build and its rows were numbered by position
    (re-sorted, rows inserted or deleted): each row's prompt is made again with the recorded
    template and matched to the submitted request that asked exactly that (identical rows take
    identical requests in order). A row that matches none is yielded with None, its reason in
    ``reason`` (read as the row is yielded), and counted in ``notes``.
    """

    def __init__(
        self,
        csv_path: str,
        source: Optional[Dict[str, Any]],
        input_path: Optional[str],
        column: Optional[str] = None,
        by_content: bool = False,
    ):
        self.csv_path = csv_path
        self.source = source or {}
        self.input_path = input_path
        self.by_content = by_content
        self.reason = NO_REQUEST_ROW
        self.notes: List[str] = []
        # a source that records no delimiter was built with commas, when only blank lines were skipped
        legacy = bool(self.source) and "delimiter" not in self.source
        delimiter = "," if legacy else None  # None: detected from the header, as the builder does
        if not legacy and self.source.get("path") == os.path.abspath(csv_path):
            delimiter = self.source.get("delimiter")
        self.id_column: Optional[str] = self.source.get("id_column")
        self.prefix: Optional[str] = self.source.get("id_prefix")
        self._read_as: Dict[str, Any] = {"delimiter": delimiter, "skip_empty_rows": not legacy}
        self._read_header()
        if self.id_column and self.id_column not in self.header and delimiter is not None:
            # saved again with another delimiter (Excel writes ';' in some locales): detect it
            self._read_as["delimiter"] = None
            self._read_header()
        if self.id_column and self.id_column not in self.header:
            raise UsageError(
                f"{csv_path} has no {self.id_column!r} column any more: the job matches its rows to the "
                f"answers by that column (the header now reads: {', '.join(self.header)[:200]})",
                hint="Restore the column as it was when the batch was built, or fetch with --format "
                "simple or --format raw (results keyed by custom_id).",
            )
        names = set(self.header)
        if column and column in names:
            raise UsageError(
                f"--column {column!r} is already a column of {csv_path}",
                hint="Name a new column for the answers, e.g. --column answer.",
            )
        self.response_col, self.error_col, self.check_col = result_columns(names, column)

    def _read_header(self) -> None:
        with CsvRows(self.csv_path, **self._read_as) as rows:
            self.header = list(rows.header)
            self.dialect: Any = rows.dialect
            self.bom: bool = rows.bom

    def row_for(self, custom_id: str) -> List[str]:
        """The values of a row that is no longer in the CSV: empty but for the id column."""
        values = [""] * len(self.header)
        if self.id_column and self.id_column in self.header:
            head = f"{self.prefix}-" if self.prefix else ""
            values[self.header.index(self.id_column)] = (
                custom_id[len(head) :] if custom_id.startswith(head) else custom_id
            )
        return values

    def _by_prompt(self) -> Dict[bytes, Deque[str]]:
        """The submitted requests' custom ids by a digest of what each asked, in order."""
        table: Dict[bytes, Deque[str]] = collections.defaultdict(collections.deque)
        for cid, line, _ in iter_input_lines(self.input_path or "", "read the requests", "Restore the job's input."):
            table[hashlib.sha256(request_text(line).encode("utf-8")).digest()].append(cid)
        return table

    def _matched_by_content(self) -> Iterator[Tuple[Optional[str], List[str]]]:
        template = Template(str(self.source.get("template")))
        missing = template.missing(self.header)
        if missing:
            raise UsageError(
                f"{self.csv_path} has no {missing[0]!r} column any more: its rows are matched to the requests by "
                f"the prompt each made (the header now reads: {', '.join(self.header)[:200]})",
                hint="Restore the column, or fetch with --format simple or --format raw (results keyed by custom_id).",
            )
        table = self._by_prompt()
        unmatched: List[int] = []
        with CsvRows(self.csv_path, self._read_as["delimiter"], skip_empty_rows=False) as rows:
            for line, row in rows:
                values = [row.get(h, "") for h in self.header]
                if not "".join(values).strip():
                    self.reason = NO_REQUEST_ROW
                    yield None, values
                    continue
                ids = table.get(hashlib.sha256(template.render(row, line, "column").encode("utf-8")).digest())
                if ids:
                    yield ids.popleft(), values
                    continue
                unmatched.append(line)
                self.reason = NO_MATCH
                yield None, values
        if unmatched:
            lines = ", ".join(str(n) for n in unmatched[:SAMPLE]) + (", ..." if len(unmatched) > SAMPLE else "")
            self.notes.append(
                f"{len(unmatched)} row(s) of {os.path.basename(self.csv_path)} match no submitted request (added or "
                f"edited since the build, or one more copy of a row than was sent): lines {lines}; they come back "
                "without an answer"
            )

    def __iter__(self) -> Iterator[Tuple[Optional[str], List[str]]]:
        if self.by_content:
            yield from self._matched_by_content()
            return
        src = self.source
        prefix = self.prefix
        id_column = self.id_column
        limit = src.get("rows")
        ids: Optional[Iterator[str]] = None
        if prefix is None:
            if not self.input_path or not os.path.isfile(self.input_path):
                raise UsageError(
                    "cannot match the CSV rows to requests: the batch input file is missing",
                    hint="Pass --format raw or simple, or restore the input file.",
                )
            ids = (cid for cid, _ in iter_input_ids(self.input_path))
        numbered_empty = not self._read_as["skip_empty_rows"]  # builds before the sidecar numbered them
        with CsvRows(self.csv_path, self._read_as["delimiter"], skip_empty_rows=False) as rows:
            number = 0
            for line, row in rows:
                values = [row.get(h, "") for h in self.header]
                if not numbered_empty and not "".join(values).strip():
                    yield None, values  # the builder made no request for it; it comes back all the same
                    continue
                number += 1
                if ids is not None:
                    yield next(ids, None), values
                    continue
                assert prefix is not None  # the ids are read from the input exactly when there is no prefix
                if isinstance(limit, int) and number > limit and not id_column:  # (--limit builds)
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


__all__ = ["MatchedCsvRows", "RequestRows"]
