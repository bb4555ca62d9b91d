"""Reading the inputs of create_batch_file.py: prompt files, CSVs and JSONL files.

``iter_prompts`` yields one prompt a line; ``CsvRows`` reads a CSV with a header row (the
delimiter detected from it, or given; LF, CRLF and CR-only line endings; a UTF-8 BOM), skips
empty rows and refuses a quote left open, with the physical line number of each row;
``iter_jsonl_rows`` yields JSON objects. ``TextLines`` decodes a text file (or stdin) a line
at a time, so that a bad byte is reported with its line.
"""

from __future__ import annotations

import csv
import itertools
import sys
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ..api.requestrules import json_type, loads_strict
from ..core.errors import InputError, UsageError


class TextLines:
    """The lines of a UTF-8 text input (``-`` is stdin), decoded one at a time so that a bad
    byte is reported with its physical line. Yields str lines with their line endings; a
    leading byte-order mark is dropped (``bom`` says whether there was one). ``line`` is the
    number of the last line read.

    Lines end at LF (so CRLF too). A file whose first line ends with a lone CR (old Mac
    exports) is split at each CR instead; ``newline`` is then ``"\\r"``, else ``"\\n"``."""

    HEAD = 1 << 16  # bytes read first, to see how the first line ends
    CHUNK = 1 << 20

    def __init__(self, path: str):
        self.path = path
        self.line = 0
        self.bom = False
        self.newline = "\n"
        if path == "-":
            self._fh: IO[bytes] = sys.stdin.buffer
            self._close = False
        else:
            try:
                self._fh = open(path, "rb")
            except FileNotFoundError:
                raise UsageError(f"{path}: no such file") from None
            except IsADirectoryError:
                raise UsageError(f"{path} is a directory, not a file") from None
            self._close = True

    def _raw_lines(self) -> Iterator[bytes]:
        fh = self._fh
        chunk = fh.read(self.HEAD)
        chunks = [chunk]
        while chunk and b"\r" not in chunk and b"\n" not in chunk:  # a first line longer than HEAD
            chunk = fh.read(self.CHUNK)
            chunks.append(chunk)
        head = b"".join(chunks)
        cr, lf = head.find(b"\r"), head.find(b"\n")
        if cr != -1 and cr == len(head) - 1:
            head += fh.read(1)  # is this CR the first half of a CRLF?
        if cr != -1 and (lf == -1 or cr < lf) and head[cr + 1 : cr + 2] != b"\n":
            self.newline = "\r"
            yield from self._split(head, b"\r")
            return
        parts = head.split(b"\n")
        for part in parts[:-1]:
            yield part + b"\n"
        carry = parts[-1]
        for raw in fh:  # the rest, line by line (the first completes the carried part)
            if carry:
                raw, carry = carry + raw, b""
            yield raw
        if carry:
            yield carry

    def _split(self, data: bytes, sep: bytes) -> Iterator[bytes]:
        pending: List[bytes] = []
        while data:
            start = 0
            while True:
                i = data.find(sep, start)
                if i < 0:
                    break
                pending.append(data[start : i + 1])
                yield b"".join(pending)
                pending = []
                start = i + 1
            if start < len(data):
                pending.append(data[start:])
            data = self._fh.read(self.CHUNK)
        if pending:
            yield b"".join(pending)

    def __iter__(self) -> Iterator[str]:
        for raw in self._raw_lines():
            self.line += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{self.path}: line {self.line}: invalid UTF-8 at byte {exc.start} of the line",
                    hint="Save the file as UTF-8.",
                    line=self.line,
                ) from None
            if self.line == 1 and text.startswith("\ufeff"):
                text = text[1:]
                self.bom = True
            yield text

    def close(self) -> None:
        if self._close:
            self._fh.close()
            self._close = False

    def __enter__(self) -> TextLines:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def iter_prompts(path: str) -> Iterator[Tuple[int, str]]:
    """(physical line number, prompt) for each non-blank line; the line ending is removed."""
    with TextLines(path) as lines:
        for text in lines:
            text = text.rstrip("\r\n")
            if text.strip():
                yield lines.line, text


DELIMITERS = (",", ";", "\t", "|")  # the ones detected, in order of preference on a tie


DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


_DELIMITER_ALIASES = {
    ",": ",",
    "comma": ",",
    ";": ";",
    "semicolon": ";",
    "\t": "\t",
    "\\t": "\t",
    "tab": "\t",
    "|": "|",
    "pipe": "|",
}


def parse_delimiter(text: str) -> str:
    """``--delimiter``'s value: one of , ; | or a tab (also written ``\\t`` or ``tab``)."""
    found = _DELIMITER_ALIASES.get(text if len(text) == 1 else text.strip().lower())
    if found is None:
        raise UsageError(
            f"--delimiter {text!r} is not supported; use one of , ; tab |",
            hint="Pass the character that separates the columns, e.g. --delimiter ';' "
            "or --delimiter tab; leave it out to detect it from the header row.",
        )
    return found


def detect_delimiter(header_line: str) -> str:
    """The delimiter among , ; tab | that splits the header line into the most non-empty
    fields (quotes respected); a tie, or a header with one column, gives a comma."""
    best, most = ",", -1
    for d in DELIMITERS:
        try:
            fields = next(csv.reader([header_line], delimiter=d), [])
        except csv.Error:
            continue
        n = sum(1 for f in fields if f.strip())
        if n > most:
            best, most = d, n
    return best


def csv_dialect(delimiter: str) -> Any:
    """Excel's CSV dialect with ``delimiter`` (for reading, and for writing results back)."""
    if delimiter == ",":
        return csv.excel
    return type(f"excel_{DELIMITER_NAMES.get(delimiter, 'custom')}", (csv.excel,), {"delimiter": delimiter})


def line_list(lines: Sequence[int], most: int = 10) -> str:
    shown = ", ".join(str(n) for n in lines[:most])
    return shown + (f", ... ({len(lines) - most} more)" if len(lines) > most else "")


class CsvRows:
    """A CSV input: ``header`` (read on open) and iteration over
    ``(first physical line of the row, row dict)``. Use as a context manager.

    ``delimiter`` is one of , ; tab |; when None it is detected from the header line (see
    ``detect_delimiter``), so every reader of the same file agrees. ``dialect`` is the csv
    dialect to write a CSV like it, ``bom`` whether the file starts with a byte-order mark,
    ``newline`` ``"\\r"`` for a CR-only file.

    Rows whose fields are all blank (blank lines, ``,,``) are skipped and their lines listed
    in ``skipped_empty`` (with ``skip_empty_rows=False`` only blank lines are skipped, as
    builds did before the sidecar recorded a delimiter). A quoted field that is still open
    at the end of the file, or a row whose field count differs from the header's, is an
    ``InputError``. ``long_quotes`` lists (line, lines spanned, lines that look like rows)
    for closed quoted fields that look as if they swallowed rows (a stray quote closed by a
    later one). ``warnings()`` words what was skipped or looks wrong."""

    def __init__(self, path: str, delimiter: Optional[str] = None, *, skip_empty_rows: bool = True):
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        self.path = path
        self.skip_empty_rows = skip_empty_rows
        self.skipped_empty: List[int] = []
        self.long_quotes: List[Tuple[int, int, int]] = []
        self._lines = TextLines(path)
        self._prev = 0  # the last physical line of the previous record
        self._eof = False
        try:
            lines = iter(self._lines)
            first = next(lines, None)
            self.delimiter_detected = delimiter is None
            self.delimiter = detect_delimiter(first or "") if delimiter is None else parse_delimiter(delimiter)
            self.dialect = csv_dialect(self.delimiter)
            self.bom = self._lines.bom
            self.newline = self._lines.newline
            self._reader = csv.reader(self._feed(first, lines), self.dialect)
            got = self._record()
            header = got[1] if got else None
            if not header or not any(h.strip() for h in header):
                raise InputError(
                    f"{path}: line 1: the CSV is empty (no header row)",
                    hint="The first row must name the columns, e.g. id,text",
                    line=1,
                )
            self.header = [h.strip() for h in header]
            dupes = sorted({h for h in self.header if self.header.count(h) > 1})
            if dupes:
                raise InputError(
                    f"{path}: line 1: the header repeats column name(s) {', '.join(map(repr, dupes))}",
                    hint="Give every column a distinct name.",
                    line=1,
                )
        except BaseException:
            self.close()
            raise

    def _feed(self, first: Optional[str], rest: Iterator[str]) -> Iterator[str]:
        """The lines for the csv reader (chained in C: no Python frame a line), then the end noted."""
        return itertools.chain((first,) if first is not None else (), rest if first is not None else (), self._end())

    def _end(self) -> Iterator[str]:
        self._eof = True
        return
        yield  # (a generator that yields nothing)

    def _record(self) -> Optional[Tuple[int, List[str]]]:
        """(first line, fields) of the next record, or None at the end."""
        try:
            rec = next(self._reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            raise InputError(
                f"{self.path}: line {self._lines.line}: not valid CSV: {exc}", line=self._lines.line
            ) from None
        start, self._prev = self._prev + 1, self._lines.line
        if self._eof:
            # the csv module ends a record at the end of the input only inside a quoted field
            # (the last one); anything else ends at its line's end.
            opened = start + sum(f.count(self.newline) for f in rec[:-1])
            raise InputError(
                f"{self.path}: line {opened}: a quoted field starts here and is never closed; "
                f"it would take in everything to the end of the file (line {self._lines.line})",
                hint="Add the closing quote where the field ends. Inside a quoted field write a "
                'quote as two quotes (""); a field that is not quoted must not start with a '
                "quote.",
                line=opened,
            )
        return start, rec

    def _check_quotes(self, start: int, rec: List[str]) -> None:
        """Note a multi-line quoted field most of whose lines parse as rows of their own."""
        width = len(self.header)
        if width < 2:
            return
        line = start
        for field in rec:
            if self.newline not in field:
                continue
            pieces = field.split(self.newline)
            later = [p.rstrip("\r\n") for p in pieces[1:]]
            filled = [p for p in later if p.strip()]
            if len(filled) >= 2:
                rowlike = sum(1 for p in filled if len(next(csv.reader([p], self.dialect), [])) == width)
                if rowlike >= 2 and rowlike * 5 >= len(filled) * 4:
                    self.long_quotes.append((line, len(pieces), rowlike))
            line += len(pieces) - 1

    def __iter__(self) -> Iterator[Tuple[int, Dict[str, str]]]:
        header, path, width, lines = self.header, self.path, len(self.header), self._lines
        skip_empty, skipped = self.skip_empty_rows, self.skipped_empty
        rows = 0
        while True:
            got = self._record()
            if got is None:
                break
            start, rec = got
            if not rec or (len(rec) == 1 and not rec[0].strip() and width > 1):
                if skip_empty:
                    skipped.append(start)
                continue
            first = rec[0]
            if skip_empty and (not first or first.isspace()) and not "".join(rec).strip():
                skipped.append(start)
                continue
            if len(rec) != width:
                end = lines.line
                spans = (
                    (
                        f" The row runs from line {start} to {end}: check for a quote that is not closed "
                        "where the field ends."
                    )
                    if end > start
                    else ""
                )
                raise InputError(
                    f"{path}: line {start}: the row has {len(rec)} field(s), the header has {width}",
                    hint=f"Quote fields that contain the delimiter ({DELIMITER_NAMES[self.delimiter]}), "
                    f"quotes or newlines.{spans}",
                    line=start,
                )
            if lines.line > start:
                self._check_quotes(start, rec)
            rows += 1
            yield start, dict(zip(header, rec))
        if rows == 0:
            skipped_note = (
                (f"; {len(skipped)} empty row(s) were skipped (lines {line_list(skipped)})") if skipped else ""
            )
            raise InputError(
                f"{path}: line 1: the CSV has a header row but no data rows",
                hint=f"Add rows below the header{skipped_note}.",
                line=1,
            )

    def warnings(self) -> List[str]:
        """What was skipped or looks wrong so far, worded for people (empty when nothing)."""
        out = []
        if self.skipped_empty:
            out.append(f"skipped {len(self.skipped_empty)} empty row(s) (lines {line_list(self.skipped_empty)})")
        for line, spanned, rowlike in self.long_quotes[:5]:
            out.append(
                f"line {line}: a quoted field runs to line {line + spanned - 1} and {rowlike} of its lines "
                "look like rows of their own; if a quote there lacks its closing pair, those rows were "
                "read into this field"
            )
        if len(self.long_quotes) > 5:
            out.append(f"{len(self.long_quotes) - 5} more quoted field(s) like that")
        return out

    def close(self) -> None:
        self._lines.close()

    def __enter__(self) -> CsvRows:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def iter_jsonl_rows(path: str) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """(physical line number, object) for each non-blank line of a JSON Lines file."""
    with TextLines(path) as lines:
        for text in lines:
            n = lines.line
            text = text.strip()
            if not text:
                continue
            try:
                obj = loads_strict(text)  # (no NaN, no lone surrogate: nothing a request could not carry)
            except (ValueError, RecursionError) as exc:
                why = exc if isinstance(exc, ValueError) else "nested more deeply than any input row"
                raise InputError(f"{path}: line {n}: invalid JSON: {why}", line=n) from None
            if not isinstance(obj, dict):
                raise InputError(
                    f"{path}: line {n}: expected a JSON object, got {json_type(obj)}",
                    hint="Each line must be an object whose fields the template names.",
                    line=n,
                )
            yield n, obj
