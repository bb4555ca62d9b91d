"""Build batch request lines: from Python objects, or from prompt, CSV and JSONL files.

Library use (with ``scripts/`` on ``sys.path``)::

    from _dwbatches.builder import chat_request, write_batch_file

    rows = (chat_request(f"q-{i:06d}", q, max_tokens=300) for i, q in enumerate(questions, 1))
    summary = write_batch_file(rows, "requests.jsonl")   # {"path", "requests", "bytes", ...}

``chat_request``, ``embedding_request`` and ``responses_request`` return one request line as
a dict (``{custom_id, method, url, body}``); ``build_request(endpoint, ...)`` picks one by
endpoint. ``write_batch_file`` (or ``BatchFileWriter`` for incremental writing) checks every
line as it is written (the same rules as ``_dwbatches.validate``, plus unique custom_ids),
validates the finished file, and only then renames it over the output path, so an existing
file is replaced only by a complete, valid one. Errors are ``InputError`` with the source
line number when one is known.

``iter_prompts``, ``CsvRows`` and ``iter_jsonl_rows`` read the inputs that
``create_batch_file.py`` accepts (``CsvRows`` detects the delimiter from the header row, reads
LF, CRLF and CR-only files, skips empty rows and refuses a quote left open); ``Template`` renders "...{column}..." templates against a
row and says which placeholder is missing and which names exist.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import string
import sys
import tempfile
from typing import IO, Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from . import compat, pricing
from .errors import InputError, UsageError
from .files import atomic_write_json, fsync_dir, reraise_named
from .job import sha256_file
from .validate import (
    MAX_BODY_BYTES,
    MAX_FILE_BYTES,
    MAX_REQUESTS_PER_FILE,
    _check_custom_id,
    check_request,
    json_type,
    validate_file,
)

check_custom_id = _check_custom_id  # None when the id is acceptable, else the reason

DEFAULT_CHAT_MODEL = pricing.DEFAULT_MODEL
DEFAULT_EMBEDDING_MODEL = pricing.DEFAULT_EMBEDDING_MODEL
CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"
ENDPOINTS = (CHAT, EMBEDDINGS, RESPONSES)
ID_WIDTH = 6
SIDECAR_SUFFIX = ".source.json"

EXAMPLE_PROMPTS = [
    "Summarise the plot of Romeo and Juliet in two sentences.",
    "Translate into French: 'The meeting has been moved to Thursday afternoon.'",
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "List three pros and three cons of remote work, as short bullet points.",
    'Extract the company and the amount as JSON from: "Acme Corp raised $12 million in its Series A."',
]


def default_model(endpoint: str) -> str:
    return DEFAULT_EMBEDDING_MODEL if endpoint == EMBEDDINGS else DEFAULT_CHAT_MODEL


def _merge_extra(body: Dict[str, Any], extra_body: Optional[Dict[str, Any]], protected: Sequence[str]) -> None:
    if not extra_body:
        return
    clash = [k for k in extra_body if k in protected]
    if clash:
        raise UsageError(f"extra body field(s) {', '.join(sorted(clash))} would replace what the request is "
                         "built from",
                         hint="Use -m/--model and the prompt inputs for those; put only additional "
                              "parameters in --extra-body.")
    body.update(extra_body)


def _line(custom_id: str, url: str, body: Dict[str, Any]) -> Dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def chat_request(custom_id: str, prompt: str, model: str = DEFAULT_CHAT_MODEL, *, system: Optional[str] = None,
                 temperature: Optional[float] = None, max_tokens: Optional[int] = None,
                 top_p: Optional[float] = None, stop: Optional[Sequence[str]] = None,
                 response_format: Optional[Dict[str, Any]] = None,
                 extra_body: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One ``/v1/chat/completions`` line: an optional system message, then the prompt as the user."""
    messages: List[Dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    body: Dict[str, Any] = {"model": model, "messages": messages}
    if temperature is not None:
        body["temperature"] = temperature
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if top_p is not None:
        body["top_p"] = top_p
    if stop:
        body["stop"] = list(stop)
    if response_format is not None:
        body["response_format"] = response_format
    _merge_extra(body, extra_body, ("model", "messages"))
    return _line(custom_id, CHAT, body)


def embedding_request(custom_id: str, text: str, model: str = DEFAULT_EMBEDDING_MODEL, *,
                      extra_body: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One ``/v1/embeddings`` line: ``{model, input}``."""
    body: Dict[str, Any] = {"model": model, "input": text}
    _merge_extra(body, extra_body, ("model", "input"))
    return _line(custom_id, EMBEDDINGS, body)


def responses_request(custom_id: str, prompt: str, model: str = DEFAULT_CHAT_MODEL, *,
                      instructions: Optional[str] = None, temperature: Optional[float] = None,
                      max_output_tokens: Optional[int] = None, top_p: Optional[float] = None,
                      text_format: Optional[Dict[str, Any]] = None,
                      extra_body: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One ``/v1/responses`` line: ``{model, input, instructions?, max_output_tokens?, ...}``.

    ``text_format`` is the Responses API's ``text.format`` (``{"type": "json_object"}`` or a
    ``json_schema`` format)."""
    body: Dict[str, Any] = {"model": model, "input": prompt}
    if instructions:
        body["instructions"] = instructions
    if temperature is not None:
        body["temperature"] = temperature
    if max_output_tokens is not None:
        body["max_output_tokens"] = max_output_tokens
    if top_p is not None:
        body["top_p"] = top_p
    if text_format is not None:
        body["text"] = {"format": text_format}
    _merge_extra(body, extra_body, ("model", "input"))
    return _line(custom_id, RESPONSES, body)


def json_mode_format(endpoint: str, schema: Optional[Dict[str, Any]] = None, name: str = "output") -> Dict[str, Any]:
    """The structured-output setting for ``endpoint``: JSON mode, or a strict JSON schema."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "output"
    if endpoint == RESPONSES:
        if schema is None:
            return {"type": "json_object"}
        return {"type": "json_schema", "name": name, "schema": schema, "strict": True}
    if schema is None:
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def build_request(endpoint: str, custom_id: str, prompt: str, model: Optional[str] = None, *,
                  system: Optional[str] = None, temperature: Optional[float] = None,
                  max_tokens: Optional[int] = None, top_p: Optional[float] = None,
                  stop: Optional[Sequence[str]] = None, json_mode: bool = False,
                  json_schema: Optional[Dict[str, Any]] = None, schema_name: str = "output",
                  extra_body: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One line for ``endpoint`` from the generic options (``create_batch_file.py``'s flags).

    For ``/v1/responses`` ``system`` becomes ``instructions`` and ``max_tokens`` becomes
    ``max_output_tokens``. Options an endpoint cannot take raise ``UsageError``."""
    model = model or default_model(endpoint)
    fmt = json_mode_format(endpoint, json_schema, schema_name) if (json_mode or json_schema) else None
    if endpoint == CHAT:
        return chat_request(custom_id, prompt, model, system=system, temperature=temperature,
                            max_tokens=max_tokens, top_p=top_p, stop=stop, response_format=fmt,
                            extra_body=extra_body)
    if endpoint == RESPONSES:
        if stop:
            raise UsageError("--stop is not a /v1/responses parameter",
                             hint="Drop --stop, or use --endpoint /v1/chat/completions.")
        return responses_request(custom_id, prompt, model, instructions=system, temperature=temperature,
                                 max_output_tokens=max_tokens, top_p=top_p, text_format=fmt,
                                 extra_body=extra_body)
    if endpoint == EMBEDDINGS:
        given = [name for name, value in (("--system", system), ("--temperature", temperature),
                                          ("--max-tokens", max_tokens), ("--top-p", top_p), ("--stop", stop),
                                          ("--response-format-json", json_mode),
                                          ("--json-schema", json_schema)) if value]
        if given:
            raise UsageError(f"{', '.join(given)} do(es) not apply to /v1/embeddings",
                             hint="Embeddings requests are {model, input}; drop those options.")
        return embedding_request(custom_id, prompt, model, extra_body=extra_body)
    raise UsageError(f"endpoint {endpoint!r} is not supported here; use one of {', '.join(ENDPOINTS)}")


# -- custom ids -------------------------------------------------------------------------------

def custom_id_for(prefix: str, number: Optional[int] = None, row_id: Optional[str] = None,
                  width: int = ID_WIDTH) -> str:
    """``<prefix>-<row id>`` when the row has an id, else ``<prefix>-<zero-padded number>``.
    An empty prefix gives the bare row id (or number)."""
    tail = row_id if row_id is not None else f"{number:0{width}d}"
    return f"{prefix}-{tail}" if prefix else tail


def prefix_from_path(path: Optional[str], fallback: str = "req") -> str:
    """A short custom_id prefix from a file name: ``reviews.csv`` → ``reviews``."""
    if not path or path == "-":
        return fallback
    stem = os.path.splitext(os.path.basename(path))[0]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.")[:24].strip("-.")
    return stem or fallback


def row_id_text(value: Any, line: int, column: str) -> str:
    """The id column's value as text; ``InputError`` when it cannot serve as an id."""
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise InputError(f"line {line}: the id {column!r} is {json.dumps(value)}, not a string or number",
                         hint="Every row needs a non-empty, unique id.", line=line)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if not text:
        raise InputError(f"line {line}: the id {column!r} is empty",
                         hint="Every row needs a non-empty, unique id; fix the row or drop --id-column "
                              "to number the rows instead.", line=line)
    return text


# -- templates --------------------------------------------------------------------------------

class Template:
    """A ``str.format``-style template whose placeholders name columns or JSON fields.

    ``{name}`` looks the name up as is (names may contain spaces); for JSON rows a dotted
    ``{a.b}`` also reaches into nested objects. ``{{`` and ``}}`` are literal braces. Values
    are inserted as text; JSON objects and arrays as compact JSON; null as an empty string.
    """

    def __init__(self, text: str):
        self.text = text
        self.parts: List[Tuple[str, Optional[str], str, Optional[str]]] = []
        try:
            for literal, name, spec, conv in string.Formatter().parse(text):
                self.parts.append((literal, name, spec or "", conv))
        except ValueError as exc:
            raise UsageError(f"the template is not valid: {exc}",
                             hint='Write placeholders as {column}; use {{ and }} for literal braces.') from None
        for _, name, _, _ in self.parts:
            if name is not None and not name.strip():
                raise UsageError("the template has an empty placeholder {}",
                                 hint="Name a column or field inside the braces, e.g. {text}; "
                                      "use {{}} for literal braces.")
        self.fields = [name for _, name, _, _ in self.parts if name is not None]

    @staticmethod
    def lookup(row: Dict[str, Any], name: str, dotted: bool) -> Tuple[bool, Any]:
        if name in row:
            return True, row[name]
        if dotted and "." in name:
            cur: Any = row
            for part in name.split("."):
                if isinstance(cur, dict) and part in cur:
                    cur = cur[part]
                elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
                    cur = cur[int(part)]
                else:
                    return False, None
            return True, cur
        return False, None

    def missing(self, names: Iterable[str], dotted: bool = False) -> List[str]:
        """Placeholders that ``names`` (a header) cannot satisfy."""
        have = set(names)
        out = []
        for f in self.fields:
            if f in have or (dotted and f.split(".")[0] in have):
                continue
            if f not in out:
                out.append(f)
        return out

    def render(self, row: Dict[str, Any], line: int, what: str = "column", dotted: bool = False,
               source: Optional[str] = None) -> str:
        out: List[str] = []
        for literal, name, spec, conv in self.parts:
            out.append(literal)
            if name is None:
                continue
            found, value = self.lookup(row, name, dotted)
            if not found:
                available = ", ".join(str(k) for k in row) or "(none)"
                where = f"{source}: line {line}" if source else f"line {line}"
                raise InputError(f"{where}: the template placeholder {{{name}}} is not a {what} of the "
                                 f"input; available {what}s: {available}",
                                 hint=f"Use one of the {what} names in the template.", line=line)
            if value is None:
                value = ""
            elif isinstance(value, (dict, list)):
                value = json.dumps(value, ensure_ascii=False)
            if conv == "r":
                value = repr(value)
            elif conv == "a":
                value = ascii(value)
            try:
                out.append(format(value, spec) if spec else str(value))
            except (ValueError, TypeError) as exc:
                raise InputError(f"line {line}: cannot format {{{name}}} with ':{spec}': {exc}", line=line) from None
        return "".join(out)


# -- input readers ----------------------------------------------------------------------------

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
        if cr != -1 and (lf == -1 or cr < lf) and head[cr + 1:cr + 2] != b"\n":
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
                pending.append(data[start:i + 1])
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
                raise InputError(f"{self.path}: line {self.line}: invalid UTF-8 at byte {exc.start} of the line",
                                 hint="Save the file as UTF-8.", line=self.line) from None
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


# -- CSV --------------------------------------------------------------------------------------

DELIMITERS = (",", ";", "\t", "|")  # the ones detected, in order of preference on a tie
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_DELIMITER_ALIASES = {",": ",", "comma": ",", ";": ";", "semicolon": ";", "\t": "\t", "\\t": "\t", "tab": "\t",
                      "|": "|", "pipe": "|"}


def parse_delimiter(text: str) -> str:
    """``--delimiter``'s value: one of , ; | or a tab (also written ``\\t`` or ``tab``)."""
    found = _DELIMITER_ALIASES.get(text if len(text) == 1 else text.strip().lower())
    if found is None:
        raise UsageError(f"--delimiter {text!r} is not supported; use one of , ; tab |",
                         hint="Pass the character that separates the columns, e.g. --delimiter ';' "
                              "or --delimiter tab; leave it out to detect it from the header row.")
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
        csv.field_size_limit(min(sys.maxsize, 2 ** 31 - 1))
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
                raise InputError(f"{path}: line 1: the CSV is empty (no header row)",
                                 hint="The first row must name the columns, e.g. id,text", line=1)
            self.header = [h.strip() for h in header]
            dupes = sorted({h for h in self.header if self.header.count(h) > 1})
            if dupes:
                raise InputError(f"{path}: line 1: the header repeats column name(s) "
                                 f"{', '.join(map(repr, dupes))}", hint="Give every column a distinct name.", line=1)
        except BaseException:
            self.close()
            raise

    def _feed(self, first: Optional[str], rest: Iterator[str]) -> Iterator[str]:
        if first is not None:
            yield first
            yield from rest
        self._eof = True

    def _record(self) -> Optional[Tuple[int, List[str]]]:
        """(first line, fields) of the next record, or None at the end."""
        try:
            rec = next(self._reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            raise InputError(f"{self.path}: line {self._lines.line}: not valid CSV: {exc}",
                             line=self._lines.line) from None
        start, self._prev = self._prev + 1, self._lines.line
        if self._eof:
            # the csv module ends a record at the end of the input only inside a quoted field
            # (the last one); anything else ends at its line's end.
            opened = start + sum(f.count(self.newline) for f in rec[:-1])
            raise InputError(f"{self.path}: line {opened}: a quoted field starts here and is never closed; "
                             f"it would take in everything to the end of the file (line {self._lines.line})",
                             hint='Add the closing quote where the field ends. Inside a quoted field write a '
                                  'quote as two quotes (""); a field that is not quoted must not start with a '
                                  "quote.", line=opened)
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
            if skip_empty and not "".join(rec).strip():
                skipped.append(start)
                continue
            if len(rec) != width:
                end = lines.line
                spans = (f" The row runs from line {start} to {end}: check for a quote that is not closed "
                         "where the field ends.") if end > start else ""
                raise InputError(f"{path}: line {start}: the row has {len(rec)} field(s), the header has "
                                 f"{width}",
                                 hint=f"Quote fields that contain the delimiter ({DELIMITER_NAMES[self.delimiter]}), "
                                      f"quotes or newlines.{spans}", line=start)
            if lines.line > start:
                self._check_quotes(start, rec)
            rows += 1
            yield start, dict(zip(header, rec))
        if rows == 0:
            skipped_note = (f"; {len(skipped)} empty row(s) were skipped (lines "
                            f"{line_list(skipped)})") if skipped else ""
            raise InputError(f"{path}: line 1: the CSV has a header row but no data rows",
                             hint=f"Add rows below the header{skipped_note}.", line=1)

    def warnings(self) -> List[str]:
        """What was skipped or looks wrong so far, worded for people (empty when nothing)."""
        out = []
        if self.skipped_empty:
            out.append(f"skipped {len(self.skipped_empty)} empty row(s) (lines {line_list(self.skipped_empty)})")
        for line, spanned, rowlike in self.long_quotes[:5]:
            out.append(f"line {line}: a quoted field runs to line {line + spanned - 1} and {rowlike} of its lines "
                       "look like rows of their own; if a quote there lacks its closing pair, those rows were "
                       "read into this field")
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
                obj = json.loads(text)
            except ValueError as exc:
                raise InputError(f"{path}: line {n}: invalid JSON: {exc}", line=n) from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}: line {n}: expected a JSON object, got {json_type(obj)}",
                                 hint="Each line must be an object whose fields the template names.", line=n)
            yield n, obj


# -- writing ----------------------------------------------------------------------------------

WRITER_WHAT = "the batch file"


class BatchFileWriter:
    """Write request lines to a temp file beside ``path``; ``close()`` validates the whole file
    and renames it over ``path``. On any exception (or ``abort()``) the temp file is removed
    and ``path`` is left as it was.

        with BatchFileWriter("out.jsonl") as w:
            w.add(chat_request("a-1", "hi"))
        w.summary  # {"path", "requests", "bytes", "models", "endpoints", "chunks", "warnings"}
    """

    def __init__(self, path: str, *, max_body_bytes: int = MAX_BODY_BYTES,
                 max_requests: int = MAX_REQUESTS_PER_FILE, max_bytes: int = MAX_FILE_BYTES):
        self.path = os.path.abspath(path)
        self.max_body_bytes = max_body_bytes
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise UsageError(f"the output directory {directory} does not exist")
        try:
            fd, self.tmp = tempfile.mkstemp(prefix="." + os.path.basename(self.path) + ".", suffix=".tmp",
                                            dir=directory)
        except OSError as exc:
            reraise_named(exc, self.path, what=WRITER_WHAT)
        self._fh: Optional[IO[bytes]] = os.fdopen(fd, "wb")
        self._seen: Dict[int, int] = {}  # hash(custom_id) -> source line
        self.requests = 0
        self.summary: Optional[Dict[str, Any]] = None

    def add(self, request: Dict[str, Any], line: Optional[int] = None) -> None:
        """Check and append one request line. ``line`` is the source line, for messages."""
        n = self.requests + 1 if line is None else line
        where = f"line {n}" if line is not None else f"request {n}"
        try:
            data = json.dumps(request, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except ValueError as exc:
            raise InputError(f"{where}: cannot write the request as JSON: {exc}", line=line) from None
        except TypeError as exc:
            raise InputError(f"{where}: the request holds a value JSON cannot represent: {exc}", line=line) from None
        err, _ = check_request(request, self.max_body_bytes, len(data))
        if err:
            raise InputError(f"{where}: {err}", line=line)
        cid = request["custom_id"]
        h = hash(cid)
        first = self._seen.get(h)
        if first is not None:
            raise InputError(f"{where}: duplicate custom_id {cid!r} (first made from "
                             f"{'line' if line is not None else 'request'} {first})",
                             hint="Each row needs a unique id; fix the id column or drop it to number "
                                  "the rows instead.", line=line)
        self._seen[h] = n
        assert self._fh is not None
        try:
            self._fh.write(data + b"\n")
        except OSError as exc:
            reraise_named(exc, self.path, what=WRITER_WHAT)
        self.requests += 1

    def close(self) -> Dict[str, Any]:
        """Finish: fsync, validate, rename over the output. Returns the summary."""
        if self._fh is None:
            assert self.summary is not None
            return self.summary
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
            if self.requests == 0:
                raise InputError("no requests were produced (the input has no rows)",
                                 hint="Check that the input file has data rows.", line=None)
            rep = validate_file(self.tmp, max_requests=self.max_requests, max_bytes=self.max_bytes,
                                max_body_bytes=self.max_body_bytes)
            if not rep.valid:
                first = rep.errors[0] if rep.errors else {"line": "?", "message": "invalid"}
                raise InputError(f"the built file is not valid: output line {first['line']}: {first['message']}")
            compat.set_mode(self.tmp, 0o644)
            compat.replace(self.tmp, self.path)
            fsync_dir(os.path.dirname(self.path))
        except BaseException as exc:
            self.abort()  # quiet: the error that stopped the write is the one to report
            reraise_named(exc, self.path, what=WRITER_WHAT)
        endpoints = sorted(rep.endpoints, key=lambda u: -rep.endpoints[u])
        self.summary = {"path": self.path, "requests": rep.requests, "bytes": rep.bytes, "models": rep.models,
                        "endpoint": endpoints[0] if endpoints else None, "endpoints": rep.endpoints,
                        "chunks": len(rep.chunks), "estimated_input_tokens": rep.estimated_input_tokens,
                        "warnings": rep.warnings}
        return self.summary

    def abort(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)

    def __enter__(self) -> BatchFileWriter:
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_batch_file(rows: Iterable[Dict[str, Any]], path: str, **limits: int) -> Dict[str, Any]:
    """Write request dicts to ``path`` (atomically, validated); return the summary."""
    with BatchFileWriter(path, **limits) as w:
        for row in rows:
            w.add(row)
    assert w.summary is not None
    return w.summary


# -- the CSV source sidecar -------------------------------------------------------------------

def sidecar_path(output_path: str) -> str:
    """``data.jsonl`` → ``data.source.json`` (beside it)."""
    stem, ext = os.path.splitext(os.path.abspath(output_path))
    return (stem if ext else stem + ext) + SIDECAR_SUFFIX


def write_sidecar(output_path: str, source: Dict[str, Any]) -> str:
    """Record where a batch file came from; ``output_sha256`` ties it to that exact file."""
    doc = dict(source)
    doc["output"] = os.path.abspath(output_path)
    doc["output_sha256"] = sha256_file(output_path)
    path = sidecar_path(output_path)
    atomic_write_json(path, doc, mode=0o644)
    return path


def remove_sidecar(output_path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sidecar_path(output_path))


def read_sidecar(input_path: str, input_sha256: str) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """(source, note): the sidecar's source if it describes this exact input file, else None and
    why it was ignored (None when there is no sidecar)."""
    path = sidecar_path(input_path)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"ignoring {path}: not readable JSON ({exc})"
    if not isinstance(doc, dict) or doc.get("kind") not in ("csv",):
        return None, f"ignoring {path}: not a source description"
    if doc.get("output_sha256") != input_sha256:
        return None, f"ignoring {path}: it describes an earlier version of {os.path.basename(input_path)}"
    source = {k: v for k, v in doc.items() if k not in ("output", "output_sha256")}
    if "custom_ids_in_row_order" in source and "ids_from_row_numbers" not in source:  # (the old name)
        source["ids_from_row_numbers"] = source.pop("custom_ids_in_row_order")
    return source, None


__all__ = [
    "DEFAULT_CHAT_MODEL", "DEFAULT_EMBEDDING_MODEL", "DELIMITERS", "DELIMITER_NAMES", "ENDPOINTS", "EXAMPLE_PROMPTS",
    "BatchFileWriter", "CsvRows", "TextLines", "csv_dialect", "detect_delimiter", "line_list", "parse_delimiter",
    "Template", "check_custom_id",
    "build_request", "chat_request", "custom_id_for", "embedding_request", "iter_jsonl_rows",
    "iter_prompts", "json_mode_format", "prefix_from_path", "read_sidecar", "remove_sidecar", "responses_request",
    "row_id_text", "sidecar_path", "write_batch_file", "write_sidecar",
]
