"""What goes on the wire: responses, errors (plain text, the busy JSON of 429/503, the OpenAI
envelope), serde-style messages, ids, and the lines of input, output and error files."""

from __future__ import annotations

import contextlib
import json
import math
import re
import uuid
from decimal import Decimal
from typing import Any, Callable, Iterable, Iterator

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
# What serde_json says for what Python's json module says.
SERDE_MESSAGES = (
    ("Expecting value", "expected value"),
    ("Extra data", "trailing characters"),
    ("Unterminated string", "EOF while parsing a string"),
    ("Expecting ',' delimiter", "expected `,` or `}`"),
    ("Expecting property name", "key must be a string"),
    ("Expecting ':' delimiter", "expected `:`"),
    ("Invalid control character", "control character (\\u0000-\\u001F) found while parsing a string"),
    ("Invalid \\escape", "invalid escape"),
)


def parse_uuid(value: str) -> str | None:
    """Return the canonical lowercase UUID string, or None when ``value`` is not a UUID."""
    value = (value or "").strip()
    if value.startswith("{") and value.endswith("}"):
        value = value[1:-1]
    if value.lower().startswith("urn:uuid:"):
        value = value[9:]
    if not UUID_RE.match(value):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def dec_str(value: Decimal) -> str:
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def describe_json(value: Any) -> str:
    """Describe a JSON value the way serde does in type errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean `{}`".format("true" if value else "false")
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f"string {json.dumps(value)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


def serde_json_error(err: json.JSONDecodeError) -> str:
    msg = err.msg
    for prefix, text in SERDE_MESSAGES:
        if msg.startswith(prefix):
            msg = text
            break
    return f"{msg} at line {err.lineno} column {err.colno}"


def is_retriable_status(status: int) -> bool:
    return status >= 500 or status in (429, 408, 404, 499)


# --------------------------------------------------------------------------------------
# Errors and responses
# --------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered to the client.

    ``style`` is ``text`` (plain-text body, the default for the files and batches API),
    ``busy`` (the JSON body used for 429 and 503) or ``openai`` (the OpenAI error
    envelope used by /v1/models).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        style: str = "text",
        retry_after: float | None = None,
        retry_after_header: bool = True,
        code: str | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.close = close
        self.status = status
        self.message = message
        self.style = style
        self.retry_after = retry_after
        self.retry_after_header = retry_after_header
        self.code = code

    def response(self) -> Response:
        resp = self._build()
        resp.close = self.close
        return resp

    def _build(self) -> Response:
        if self.style == "busy" or (self.style == "text" and self.status in (429, 503)):
            kind = "too_many_requests" if self.status == 429 else "service_unavailable"
            body_after = self.retry_after if self.retry_after is not None else 30
            header_after = self.retry_after if self.retry_after is not None else (60 if self.status == 429 else 30)
            payload = {"error": kind, "message": self.message, "retry_after_seconds": _num(body_after)}
            resp = json_response(payload, self.status)
            if self.retry_after_header:
                resp.headers.append(("Retry-After", str(int(math.ceil(header_after)))))
            return resp
        if self.style == "openai":
            etype = "invalid_request_error"
            if self.status == 401:
                etype = "authentication_error"
            elif self.status == 403:
                etype = "permission_error"
            elif self.status >= 500:
                etype = "server_error"
            payload = {"error": {"message": self.message, "type": etype, "param": None, "code": self.code}}
            return json_response(payload, self.status)
        return text_response(self.status, self.message)


def _num(value: float) -> Any:
    return int(value) if float(value).is_integer() else value


class Response:
    """A reply: a buffered ``body`` or a ``stream`` of byte pieces (chunked encoding)."""

    DROP = object()  # yielded by a stream to abort the connection mid-body

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        content_type: str | None = None,
        headers: list | None = None,
        stream: Iterable[Any] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = list(headers or [])
        if content_type:
            self.headers.insert(0, ("Content-Type", content_type))
        self.stream = stream
        self.drop = False
        self.close = False

    def discard(self) -> None:
        if self.stream is not None and hasattr(self.stream, "close"):
            with contextlib.suppress(Exception):
                self.stream.close()
        self.stream = None


class ContentStream:
    """A streamed body holding a database connection until it is closed."""

    def __init__(self, pieces: Iterator[Any], release: Callable[[], None]) -> None:
        self._pieces = pieces
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[Any]:
        return iter(self._pieces)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._pieces.close()  # type: ignore[attr-defined]
        release, self._release = self._release, None
        if release is not None:
            release()


def json_response(obj: Any, status: int = 200, headers: list | None = None) -> Response:
    return Response(status, compact(obj).encode("utf-8"), "application/json", headers)


def text_response(status: int, message: str) -> Response:
    return Response(status, message.encode("utf-8"), "text/plain; charset=utf-8")


def list_response(data: list, has_more: bool) -> Response:
    """A page of a list endpoint: ``{object, data, first_id, last_id, has_more}``."""
    body: dict = {"object": "list", "data": data}
    if data:
        body["first_id"] = data[0]["id"]
        body["last_id"] = data[-1]["id"]
    body["has_more"] = has_more
    return json_response(body)


# --------------------------------------------------------------------------------------
# Lines of the input, output and error files
# --------------------------------------------------------------------------------------


def output_line(req_id: str, custom_id: str, status_code: int, response: str) -> str:
    cid = json.dumps(custom_id, ensure_ascii=False)
    return (
        f'{{"id":"batch_req_{req_id}","custom_id":{cid},"response":{{"status_code":{status_code},'
        f'"request_id":null,"body":{response}}},"error":null}}'
    )


def error_line(req_id: str, custom_id: str, error: str) -> str:
    cid = json.dumps(custom_id, ensure_ascii=False)
    message = json.dumps(error, ensure_ascii=False)
    return (
        f'{{"id":"batch_req_{req_id}","custom_id":{cid},"response":null,"error":{{"code":null,"message":{message}}}}}'
    )


def input_line(custom_id: str, method: str, url: str, body: str) -> str:
    cid = json.dumps(custom_id, ensure_ascii=False)
    return f'{{"custom_id":{cid},"method":{json.dumps(method)},"url":{json.dumps(url)},"body":{body}}}'


def failure_reason(kind: str, details: Any) -> str:
    """The error text stored for a failed request: ``{"type": ..., "details": ...}``."""
    return compact({"type": kind, "details": details})


def http_failure(status: int, body: str) -> str:
    """The failure of a request whose model answered with an HTTP error status."""
    kind = "RetriableHttpStatus" if is_retriable_status(status) else "NonRetriableHttpStatus"
    return failure_reason(kind, {"status": status, "body": body})
