"""Build batch request lines: from Python objects, or from prompt, CSV and JSONL files.

Library use (with ``scripts/`` on ``sys.path``)::

    from _dwbatches.build.builder import chat_request, write_batch_file

    rows = (chat_request(f"q-{i:06d}", q, max_tokens=300) for i, q in enumerate(questions, 1))
    summary = write_batch_file(rows, "requests.jsonl")   # {"path", "requests", "bytes", ...}

``chat_request``, ``embedding_request`` and ``responses_request`` return one request line as
a dict (``{custom_id, method, url, body}``); ``build_request(endpoint, ...)`` picks one by
endpoint. ``write_batch_file`` (or ``BatchFileWriter`` for incremental writing) checks every
line as it is written (the same rules as ``_dwbatches.validation.validate``), validates the
finished file (unique custom_ids too, in bounded memory), and only then renames it over the
output path, so an existing
file is replaced only by a complete, valid one. Errors are ``InputError`` with the source
line number when one is known.

The inputs themselves are read by ``sources`` and rendered by ``template``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from array import array
from bisect import bisect_right
from typing import IO, Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ..api.requestrules import check_custom_id, check_request
from ..core import compat
from ..core.apifacts import MAX_CUSTOM_ID_BYTES
from ..core.errors import InputError, UsageError
from ..core.files import atomic_write_json, fsync_dir, reraise_named
from ..cost import pricing
from ..jobs.jobrecord import sha256_file
from ..validation.validate import MAX_BODY_BYTES, MAX_FILE_BYTES, MAX_REQUESTS_PER_FILE, validate_file

check_custom_id = check_custom_id  # None when the id is acceptable, else the reason

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
        raise UsageError(
            f"extra body field(s) {', '.join(sorted(clash))} would replace what the request is built from",
            hint="Use -m/--model and the prompt inputs for those; put only additional parameters in --extra-body.",
        )
    body.update(extra_body)


def _line(custom_id: str, url: str, body: Dict[str, Any]) -> Dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def _set_given(body: Dict[str, Any], **fields: Any) -> None:
    """Set the body fields that were given (not None), in the order given."""
    for key, value in fields.items():
        if value is not None:
            body[key] = value


def chat_request(
    custom_id: str,
    prompt: str,
    model: str = DEFAULT_CHAT_MODEL,
    *,
    system: Optional[str] = None,
    temperature: Optional[float] = None,
    max_tokens: Optional[int] = None,
    top_p: Optional[float] = None,
    stop: Optional[Sequence[str]] = None,
    response_format: Optional[Dict[str, Any]] = None,
    extra_body: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """One ``/v1/chat/completions`` line: an optional system message, then the prompt as the user."""
    messages: List[Dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    body: Dict[str, Any] = {"model": model, "messages": messages}
    _set_given(
        body,
        temperature=temperature,
        max_tokens=max_tokens,
        top_p=top_p,
        stop=list(stop) if stop else None,
        response_format=response_format,
    )
    _merge_extra(body, extra_body, ("model", "messages"))
    return _line(custom_id, CHAT, body)


def embedding_request(
    custom_id: str, text: str, model: str = DEFAULT_EMBEDDING_MODEL, *, extra_body: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    """One ``/v1/embeddings`` line: ``{model, input}``."""
    body: Dict[str, Any] = {"model": model, "input": text}
    _merge_extra(body, extra_body, ("model", "input"))
    return _line(custom_id, EMBEDDINGS, body)


def responses_request(
    custom_id: str,
    prompt: str,
    model: str = DEFAULT_CHAT_MODEL,
    *,
    instructions: Optional[str] = None,
    temperature: Optional[float] = None,
    max_output_tokens: Optional[int] = None,
    top_p: Optional[float] = None,
    text_format: Optional[Dict[str, Any]] = None,
    extra_body: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """One ``/v1/responses`` line: ``{model, input, instructions?, max_output_tokens?, ...}``.

    ``text_format`` is the Responses API's ``text.format`` (``{"type": "json_object"}`` or a
    ``json_schema`` format)."""
    body: Dict[str, Any] = {"model": model, "input": prompt}
    _set_given(
        body,
        instructions=instructions or None,
        temperature=temperature,
        max_output_tokens=max_output_tokens,
        top_p=top_p,
        text={"format": text_format} if text_format is not None else None,
    )
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


def build_request(
    endpoint: str,
    custom_id: str,
    prompt: str,
    model: Optional[str] = None,
    *,
    system: Optional[str] = None,
    temperature: Optional[float] = None,
    max_tokens: Optional[int] = None,
    top_p: Optional[float] = None,
    stop: Optional[Sequence[str]] = None,
    json_mode: bool = False,
    json_schema: Optional[Dict[str, Any]] = None,
    schema_name: str = "output",
    extra_body: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """One line for ``endpoint`` from the generic options (``create_batch_file.py``'s flags).

    For ``/v1/responses`` ``system`` becomes ``instructions`` and ``max_tokens`` becomes
    ``max_output_tokens``. Options an endpoint cannot take raise ``UsageError``."""
    model = model or default_model(endpoint)
    fmt = json_mode_format(endpoint, json_schema, schema_name) if (json_mode or json_schema) else None
    if endpoint == CHAT:
        return chat_request(
            custom_id,
            prompt,
            model,
            system=system,
            temperature=temperature,
            max_tokens=max_tokens,
            top_p=top_p,
            stop=stop,
            response_format=fmt,
            extra_body=extra_body,
        )
    if endpoint == RESPONSES:
        if stop:
            raise UsageError(
                "--stop is not a /v1/responses parameter", hint="Drop --stop, or use --endpoint /v1/chat/completions."
            )
        return responses_request(
            custom_id,
            prompt,
            model,
            instructions=system,
            temperature=temperature,
            max_output_tokens=max_tokens,
            top_p=top_p,
            text_format=fmt,
            extra_body=extra_body,
        )
    if endpoint == EMBEDDINGS:
        given = [
            name
            for name, value in (
                ("--system", system),
                ("--temperature", temperature),
                ("--max-tokens", max_tokens),
                ("--top-p", top_p),
                ("--stop", stop),
                ("--response-format-json", json_mode),
                ("--json-schema", json_schema),
            )
            if value
        ]
        if given:
            raise UsageError(
                f"{', '.join(given)} do(es) not apply to /v1/embeddings",
                hint="Embeddings requests are {model, input}; drop those options.",
            )
        return embedding_request(custom_id, prompt, model, extra_body=extra_body)
    raise UsageError(f"endpoint {endpoint!r} is not supported here; use one of {', '.join(ENDPOINTS)}")


# -- custom ids -------------------------------------------------------------------------------


def custom_id_for(
    prefix: str, number: Optional[int] = None, row_id: Optional[str] = None, width: int = ID_WIDTH
) -> str:
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
        raise InputError(
            f"line {line}: the id {column!r} is {json.dumps(value)}, not a string or number",
            hint="Every row needs a non-empty, unique id.",
            line=line,
        )
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if not text:
        raise InputError(
            f"line {line}: the id {column!r} is empty",
            hint="Every row needs a non-empty, unique id; fix the row or drop --id-column to number the rows instead.",
            line=line,
        )
    return text


# -- templates --------------------------------------------------------------------------------


# -- input readers ----------------------------------------------------------------------------


# -- CSV --------------------------------------------------------------------------------------


# -- writing ----------------------------------------------------------------------------------

WRITER_WHAT = "the batch file"


class LineTemplate:
    """The lines of a build whose requests differ only in their custom_id and prompt: the request
    is made once with markers in their place, checked by the rules of every request
    (``check_request``) and written as JSON around them; each line is then the two strings,
    JSON-escaped, put between the template's parts (what ``json.dumps`` of the whole request
    would write, at a fraction of its cost). ``of`` gives None when a request's shape does not
    allow it (a marker not found once, or a template that fails the rules: each request is
    then made and checked on its own, for the error of its line)."""

    CID, PROMPT = "\ue000dwb-custom-id\ue000", "\ue000dwb-prompt\ue000"

    def __init__(self, make: Any, parts: Tuple[str, str, str], envelope: int):
        self.make = make  # (custom_id, prompt) -> the request dict
        self.head, self.middle, self.tail = parts
        # bytes of a line that are not its body, besides the custom_id: the body's size is checked
        self.envelope = envelope

    @classmethod
    def of(cls, make: Any) -> Optional[LineTemplate]:
        request = make(cls.CID, cls.PROMPT)
        if check_request(request)[0]:
            return None
        text = _dumps(request)
        head, sep, rest = text.partition(_encode_string(cls.CID))
        middle, sep2, tail = rest.partition(_encode_string(cls.PROMPT))
        body_at = middle.find(',"body":')
        if not sep or not sep2 or cls.CID in rest or cls.PROMPT in tail or body_at < 0:
            return None
        envelope = len(head.encode("utf-8")) + len(middle[: body_at + 8].encode("utf-8")) + 2  # "}" and "\n"
        tpl = cls(make, (head, middle, tail + "\n"), envelope)
        sample = ('q"\\\n\u2028\u00e9\t', 'p"\\\r\u00e9\U0001f600 {x}\x7f')
        if tpl.line(*sample) != (_dumps(make(*sample)) + "\n").encode("utf-8"):
            return None
        return tpl

    def line(self, custom_id: str, prompt: str) -> bytes:
        """The request line (newline included), UTF-8; UnicodeEncodeError for a lone surrogate."""
        return (self.head + _encode_string(custom_id) + self.middle + _encode_string(prompt) + self.tail).encode(
            "utf-8"
        )


_NO_LINE = -(1 << 62)  # the shift of a run of requests without source lines
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_encode_string = json.encoder.encode_basestring  # (the C encoder json.dumps uses with ensure_ascii=False)


class BatchFileWriter:
    """Write request lines to a temp file beside ``path``; ``close()`` validates the whole file
    and renames it over ``path``. On any exception (or ``abort()``) the temp file is removed
    and ``path`` is left as it was.

        with BatchFileWriter("out.jsonl") as w:
            w.add(chat_request("a-1", "hi"))
        w.summary  # {"path", "requests", "bytes", "models", "endpoints", "chunks", "warnings"}

    Each request is checked as it is added; custom_ids used twice are found by the validation
    of the whole file (in bounded memory), and reported with the source lines of both.
    """

    def __init__(
        self,
        path: str,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_requests: int = MAX_REQUESTS_PER_FILE,
        max_bytes: int = MAX_FILE_BYTES,
    ):
        self.path = os.path.abspath(path)
        self.max_body_bytes = max_body_bytes
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise UsageError(f"the output directory {directory} does not exist")
        try:
            fd, self.tmp = tempfile.mkstemp(
                prefix="." + os.path.basename(self.path) + ".", suffix=".tmp", dir=directory
            )
        except OSError as exc:
            reraise_named(exc, self.path, what=WRITER_WHAT)
        self._fh: Optional[IO[bytes]] = os.fdopen(fd, "wb", buffering=1 << 20)
        self._write = self._fh.write
        # the source line of each request, as runs: from request _run_at[i] on, request k came
        # from line k + _run_shift[i] (a few entries however many requests: blank lines and
        # multi-line CSV rows start new runs)
        self._run_at = array("q")
        self._run_shift = array("q")
        self._shift: Optional[int] = None
        self.requests = 0
        self.summary: Optional[Dict[str, Any]] = None

    def _where(self, line: Optional[int]) -> str:
        return f"line {line}" if line is not None else f"request {self.requests + 1}"

    def add(self, request: Dict[str, Any], line: Optional[int] = None) -> None:
        """Check and append one request line. ``line`` is the source line, for messages."""
        where = self._where(line)
        try:
            data = _dumps(request).encode("utf-8")
        except ValueError as exc:
            raise InputError(f"{where}: cannot write the request as JSON: {exc}", line=line) from None
        except TypeError as exc:
            raise InputError(f"{where}: the request holds a value JSON cannot represent: {exc}", line=line) from None
        err, _ = check_request(request, self.max_body_bytes, len(data))
        if err:
            raise InputError(f"{where}: {err}", line=line)
        self._append(data + b"\n", line)

    def add_built(self, template: LineTemplate, custom_id: str, prompt: str, line: Optional[int] = None) -> None:
        """Append the request ``template`` makes of ``custom_id`` and ``prompt``: what ``add``
        checks, the template having passed the rest once."""
        try:
            data = template.line(custom_id, prompt)
        except UnicodeEncodeError:  # a lone surrogate: the request's own error
            return self.add(template.make(custom_id, prompt), line)
        n = len(custom_id)
        if not (
            0 < n <= MAX_CUSTOM_ID_BYTES
            and len(data) - template.envelope - n - 2 <= self.max_body_bytes  # (an upper bound of the body)
            and custom_id.isascii()
            and custom_id.isprintable()
        ):  # anything unusual is checked on the request itself, for its message
            return self.add(template.make(custom_id, prompt), line)
        try:
            self._write(data)
        except OSError as exc:
            reraise_named(exc, self.path, what=WRITER_WHAT)
        if line is None or line - self.requests != self._shift:
            self._new_run(line)
        self.requests += 1

    def _append(self, data: bytes, line: Optional[int]) -> None:
        try:
            self._write(data)
        except OSError as exc:
            reraise_named(exc, self.path, what=WRITER_WHAT)
        if line is None or line - self.requests != self._shift:
            self._new_run(line)
        self.requests += 1

    def _new_run(self, line: Optional[int]) -> None:
        """Request ``self.requests`` starts a run of requests from consecutive lines (or none)."""
        shift = (line - self.requests) if line is not None else _NO_LINE
        if shift != self._shift:
            self._run_at.append(self.requests)
            self._run_shift.append(shift)
            self._shift = shift

    def source_line(self, index: int) -> Optional[int]:
        """The source line of request ``index`` (0-based), or None when requests have none."""
        i = bisect_right(self._run_at, index) - 1
        shift = self._run_shift[i] if i >= 0 else _NO_LINE
        return None if shift == _NO_LINE else index + shift

    def _duplicate(self, first_error: Dict[str, Any]) -> Optional[InputError]:
        """A custom_id used twice, found by the validation (output lines ``first_error``): the
        error in the source's lines (the file's lines are requests, in order)."""
        cid = first_error.get("custom_id")
        if not isinstance(cid, str) or "duplicate custom_id" not in str(first_error.get("message")):
            return None
        first = None
        with open(self.tmp, "rb") as fh:
            for n, raw in enumerate(fh):
                with contextlib.suppress(ValueError, AttributeError):
                    if json.loads(raw).get("custom_id") == cid:
                        first = n
                        break
        again = int(first_error["line"]) - 1
        where, was = self.source_line(again), self.source_line(first if first is not None else 0)
        return InputError(
            f"{'line' if where is not None else 'request'} {where if where is not None else again + 1}: duplicate "
            f"custom_id {cid!r} (first made from {'line' if was is not None else 'request'} "
            f"{was if was is not None else (first or 0) + 1})",
            hint="Each row needs a unique id; fix the id column or drop it to number the rows instead.",
            line=where,
        )

    def _release(self) -> None:
        self._run_at = array("q")
        self._run_shift = array("q")

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
                raise InputError(
                    "no requests were produced (the input has no rows)",
                    hint="Check that the input file has data rows.",
                    line=None,
                )
            rep = validate_file(
                self.tmp, max_requests=self.max_requests, max_bytes=self.max_bytes, max_body_bytes=self.max_body_bytes
            )
            if not rep.valid:
                first = rep.errors[0] if rep.errors else {"line": "?", "message": "invalid"}
                raise self._duplicate(first) or InputError(
                    f"the built file is not valid: output line {first['line']}: {first['message']}"
                )
            self._release()
            compat.set_mode(self.tmp, compat.new_file_mode())  # the user's file: as the umask says
            compat.replace(self.tmp, self.path)
            fsync_dir(os.path.dirname(self.path))
        except BaseException as exc:
            self.abort()  # quiet: the error that stopped the write is the one to report
            reraise_named(exc, self.path, what=WRITER_WHAT)
        endpoints = sorted(rep.endpoints, key=lambda u: -rep.endpoints[u])
        self.summary = {
            "path": self.path,
            "requests": rep.requests,
            "bytes": rep.bytes,
            "models": rep.models,
            "endpoint": endpoints[0] if endpoints else None,
            "endpoints": rep.endpoints,
            "chunks": len(rep.chunks),
            "estimated_input_tokens": rep.estimated_input_tokens,
            "warnings": rep.warnings,
        }
        return self.summary

    def abort(self) -> None:
        self._release()
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
    atomic_write_json(path, doc, mode=None)  # the user's file: as the umask says
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
