"""HTTP client for the Doubleword batch API.

One ``requests.Session``; timeouts on every call; retries with capped exponential backoff
and jitter for 408/429/5xx and connection errors, honouring ``Retry-After`` (header first,
then the JSON body's ``retry_after_seconds``). Requests that create something (file upload,
batch creation) are retried only when they provably never reached the server.

Proxies: a loopback base URL (the sandbox, a local server) is always reached directly, since a
company proxy from HTTP(S)_PROXY / ALL_PROXY cannot reach this machine's loopback; any other
URL honours the proxy variables and NO_PROXY exactly as ``requests`` does.

Importing this module without ``requests`` installed prints an error with the install command
and exits 3 (see ``output.exit_missing_packages``).
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from .. import USER_AGENT
from . import clock, events
from .apifacts import is_uuid
from .config import Config
from .errors import EXIT_CONFIG, APIConnectionError, APIStatusError, hint_for_status
from .multipart import MultipartFile
from .output import exit_missing_packages, register_secret
from .urls import is_loopback_url

try:
    import requests
    import requests.auth
    from requests.exceptions import ConnectTimeout, ReadTimeout, RequestException
except ImportError as _exc:  # exit 3 with the install command rather than a traceback
    exit_missing_packages(_exc)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Statuses a creating POST may safely be retried on: the server refused before doing anything.
UNSENT_STATUSES = frozenset({429})

DEFAULT_TIMEOUT = (10.0, 120.0)
# While an upload body is being sent, urllib3 applies the *connect* timeout to each send;
# give it room for pauses on the server side (proxies, disk flushes).
UPLOAD_TIMEOUT = (120.0, 600.0)
DOWNLOAD_TIMEOUT = (10.0, 300.0)
# POST /batches: (connect, read). Past the read timeout the client gives the create up as
# ambiguous; this is also how long a create it sent is taken to be possibly still in progress
# on the server (lookup.create_in_progress()).
CREATE_TIMEOUT = (10.0, 120.0)
MAX_BACKOFF = 60.0
MAX_RETRY_AFTER = 120.0
# A creating POST refused with 429 is retried only briefly (it was not processed, but a long
# Retry-After means capacity, not a blip).
MAX_CREATE_RETRY_AFTER = 30.0
MAX_CREATE_RETRIES = 2


def _never_reached(exc: BaseException) -> bool:
    """True when a connection error proves the request never got to the server."""
    if isinstance(exc, ConnectTimeout):
        return True
    text = repr(exc)
    return any(
        s in text
        for s in (
            "NewConnectionError",
            "Connection refused",
            "NameResolutionError",
            "Name or service not known",
            "nodename nor servname",
        )
    )


def retry_after_seconds(resp: requests.Response) -> Optional[float]:
    header = resp.headers.get("Retry-After")
    if header:
        header = header.strip()
        try:
            return max(0.0, float(header))
        except ValueError:
            try:
                when = parsedate_to_datetime(header)
                return max(0.0, when.timestamp() - time.time())
            except (TypeError, ValueError, IndexError):
                pass
    try:
        body = resp.json()
        if isinstance(body, dict) and body.get("retry_after_seconds") is not None:
            return max(0.0, float(body["retry_after_seconds"]))
    except ValueError:
        pass
    return None


def error_message(resp: requests.Response) -> str:
    """Doubleword sends plain text for most errors, JSON for 429/503 and an OpenAI envelope on
    inference routes; read whichever it is."""
    text = ""
    try:
        text = read_capped(resp, MAX_ERROR_BODY).decode(resp.encoding or "utf-8", "replace")
    except Exception:  # a broken (or endless) body must not hide the status
        text = ""
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested past any real answer
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            text = str(err["message"])
        elif body.get("message"):
            text = str(body["message"])
        elif isinstance(err, str):
            text = err
    text = text.strip()
    if len(text) > MAX_ERROR_TEXT:  # the server's words, capped: they are shown, never obeyed
        text = text[:MAX_ERROR_TEXT] + "…"
    return text or resp.reason or "no details provided"


MAX_ERROR_TEXT = 500


# The longest line of a result file read (a request body is at most 10 MiB; its answer less).
MAX_RESULT_LINE = 256 << 20


@dataclass
class ContentResult:
    """The outcome of one content download."""

    lines: int = 0  # complete lines handed to the sink
    last_line: Optional[int] = None  # X-Last-Line header
    incomplete: Optional[bool] = None  # X-Incomplete header
    interrupted: Optional[str] = None  # why the stream broke, if it did
    dropped_partial: bool = False


class DirectLoopbackSession(requests.Session):
    """A ``requests.Session`` that never sends loopback traffic through a proxy.

    ``requests`` applies HTTP(S)_PROXY / ALL_PROXY to 127.0.0.1 and localhost too unless
    NO_PROXY lists them, and a company proxy cannot reach this machine's loopback. Only the
    proxies of loopback URLs are dropped; everything else the environment configures (proxies
    and NO_PROXY for other hosts, REQUESTS_CA_BUNDLE, .netrc) stays as ``requests`` does it."""

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        # every request: the environment's proxies, CA bundle etc. merged into its settings
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if is_loopback_url(url):
            settings["proxies"] = {}
        return settings

    def rebuild_proxies(self, prepared_request, proxies):
        # each redirect: the proxies for the URL redirected to
        new_proxies = super().rebuild_proxies(prepared_request, proxies)
        if is_loopback_url(prepared_request.url or ""):
            prepared_request.headers.pop("Proxy-Authorization", None)
            return {}
        return new_proxies


class BearerAuth(requests.auth.AuthBase):
    """The API key as a Bearer token. It is the session's ``auth`` rather than a default header
    so that a ``~/.netrc`` entry for the host (which ``requests`` applies when no auth is set)
    cannot replace it with Basic credentials."""

    def __init__(self, key: str) -> None:
        self._key = key

    def __call__(self, r: Any) -> Any:
        r.headers["Authorization"] = f"Bearer {self._key}"
        return r

    def __repr__(self) -> str:
        return "BearerAuth(<redacted>)"


class Client:
    def __init__(self, config: Config, max_retries: int = 4, timeout: Tuple[float, float] = DEFAULT_TIMEOUT):
        self.config = config
        self.base_url = config.base_url.rstrip("/")
        self.max_retries = max_retries
        self.timeout = timeout
        register_secret(config.api_key)
        self.session = DirectLoopbackSession()
        self.session.headers["User-Agent"] = USER_AGENT
        if config.api_key:
            self.session.auth = BearerAuth(config.api_key)
        self.calls = 0  # requests sent, for polling-cost figures
        self.clock_offset: Optional[float] = None  # the server's clock minus ours (its Date header)
        self.server_software: Optional[str] = None  # its Server header (the sandbox names itself there)

    def server_now(self) -> float:
        """The server's time now, as its last Date header gave it (our clock until one came):
        durations against the server's own timestamps (a batch's start, its cancel) do not
        depend on this machine's clock being right."""
        return clock.now() + (self.clock_offset or 0.0)

    def _note_date(self, resp: requests.Response) -> None:
        self.server_software = resp.headers.get("Server") or self.server_software
        try:
            sent = parsedate_to_datetime(resp.headers.get("Date") or "")
        except (TypeError, ValueError, IndexError):
            return
        if sent is not None and sent.tzinfo is not None:
            self.clock_offset = sent.timestamp() - clock.now()

    def server_kind(self) -> str:
        """What answers at the base URL: "doubleword" (Doubleword's API), "sandbox" (the bundled
        local sandbox, which says so in its Server header) or "other" (a self-hosted or another
        OpenAI-compatible server)."""
        if (self.server_software or "").startswith(SANDBOX_SERVER):
            return "sandbox"
        host = (urlsplit(self.base_url).hostname or "").lower()
        return "doubleword" if host == DOUBLEWORD_HOST or host.endswith("." + DOUBLEWORD_HOST) else "other"

    def clone(self) -> Client:
        """A client with the same settings and a session of its own (one per thread)."""
        return Client(self.config, max_retries=self.max_retries, timeout=self.timeout)

    # -- core -------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Optional[Dict[str, Any]] = None,
        json_body: Any = None,
        creates: bool = False,
        stream: bool = False,
        timeout: Optional[Tuple[float, float]] = None,
        body_factory: Optional[Callable[[], Tuple[Any, Dict[str, str]]]] = None,
        max_retries: Optional[int] = None,
        on_attempt: Optional[Callable[[], None]] = None,
    ) -> requests.Response:
        """Send a request; return the response for a 2xx status, raise a typed error otherwise.

        ``creates``: the request creates something and is not idempotent; it is retried only
        when it provably never reached the server (connection refused, connect timeout, 429).
        ``on_attempt`` is called before each attempt is sent (the submitter saves the time).
        """
        retries = self.max_retries if max_retries is None else max_retries
        label = f"{method} /{path.lstrip('/')}"
        attempt = 0
        while True:
            attempt += 1
            data: Any = None
            headers: Dict[str, str] = {}
            if on_attempt is not None:
                on_attempt()
            if body_factory is not None:
                data, headers = body_factory()
            try:
                self.calls += 1
                resp = self.session.request(
                    method,
                    self.url(path),
                    params=params,
                    json=json_body,
                    data=data,
                    headers=headers or None,
                    stream=stream,
                    timeout=timeout or self.timeout,
                )
            except RequestException as exc:
                if data is not None and hasattr(data, "close"):
                    data.close()
                reached = not _never_reached(exc)
                kind = "timed out" if isinstance(exc, (ReadTimeout, ConnectTimeout)) else "failed"
                reason = _short_reason(exc)
                can_retry = attempt <= retries and (not creates or not reached)
                if can_retry:
                    delay = self._backoff(attempt)
                    events.step(
                        f"retrying {label} after connection error ({reason}) in {delay:.1f}s "
                        f"(retry {attempt}/{retries})"
                    )
                    clock.sleep(delay)
                    continue
                if creates and reached:
                    raise APIConnectionError(
                        f"{label} {kind} after it was sent ({reason}); it may or may not have been applied",
                        hint="Run the same command again: it checks the server for what was already created "
                        "before sending anything twice.",
                        sent=True,
                    ) from None
                raise APIConnectionError(
                    f"{label} {kind}: {reason}",
                    hint=f"Check the network and the base URL ({self.base_url}); try again later.",
                    sent=reached,
                ) from None
            if data is not None and hasattr(data, "close"):
                data.close()
            self._note_date(resp)
            if resp.status_code < 400:
                return resp
            status = resp.status_code
            retryable = status in RETRY_STATUSES and (not creates or status in UNSENT_STATUSES)
            wait = retry_after_seconds(resp) if retryable else None
            if creates and wait is not None and wait > MAX_CREATE_RETRY_AFTER:
                # e.g. "insufficient capacity for the 1h window": waiting minutes inside one command
                # helps nobody; say so at once.
                retryable = False
            if retryable and attempt <= min(retries, MAX_CREATE_RETRIES if creates else retries):
                delay = min(wait, MAX_RETRY_AFTER) if wait is not None else self._backoff(attempt)
                resp.close()
                events.step(f"retrying {label} after HTTP {status} in {delay:.1f}s (retry {attempt}/{retries})")
                clock.sleep(delay)
                continue
            message = error_message(resp)
            resp.close()
            hint = hint_for_status(status)
            if creates and status == 429 and path.startswith("batches"):
                hint = (
                    "The server is out of capacity or over a limit for now. Try again later, or use the "
                    "24h window (-w 24h) if this was 1h."
                )
            if creates and status >= 500:
                hint = (
                    "The server failed after receiving the request; it may or may not have been applied. "
                    "Run the same command again: it checks before creating anything twice."
                )
            error = APIStatusError(
                status, f"{label} returned HTTP {status}: {message}", method, path, hint=hint, body=message
            )
            if status == 404 and not any(is_uuid(part) for part in path.split("/")):
                # no id in the path: the route itself is missing, so the base URL is wrong
                error.hint = (
                    f"The base URL {self.base_url} does not look like the API root; it should end in "
                    "/v1 (e.g. https://api.doubleword.ai/v1). Check DOUBLEWORD_BASE_URL or --base-url."
                )
                error.exit_code = EXIT_CONFIG
            raise error

    def _backoff(self, attempt: int) -> float:
        base = min(MAX_BACKOFF, 2.0 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)

    def get_json(self, path: str, params: Optional[Dict[str, Any]] = None, shape: Optional[Shape] = None) -> Any:
        """GET a JSON reply of the shape expected; a reply that is not (cut, not JSON, an object
        without the fields every such reply has) is a server error: retried, then an error in words."""
        attempt = 0
        while True:
            attempt += 1
            resp = self.request("GET", path, params=params, stream=True)
            doc, problem = _parse(resp, shape)
            if problem is None:
                return doc
            if attempt > self.max_retries:
                raise malformed("GET", path, problem)
            delay = self._backoff(attempt)
            events.step(f"retrying GET /{path.lstrip('/')} after a malformed reply ({problem}) in {delay:.1f}s")
            clock.sleep(delay)

    def _json_reply(self, method: str, path: str, resp: requests.Response, shape: Optional[Shape]) -> Any:
        """The JSON of the reply to a request that is not repeated (a create): a malformed reply
        leaves it unknown whether it was applied, as a broken connection would."""
        doc, problem = _parse(resp, shape)
        if problem is not None:
            raise malformed(method, path, problem, sent=True)
        return doc

    # -- files ------------------------------------------------------------------------------
    def upload_file(
        self,
        path: str,
        filename: Optional[str] = None,
        start: int = 0,
        end: Optional[int] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> Dict[str, Any]:
        """Upload (a byte range of) a JSONL file, streamed, with purpose=batch."""
        name = filename or os.path.basename(path)

        def body() -> Tuple[Any, Dict[str, str]]:
            mp = MultipartFile(path, name, {"purpose": "batch"}, start=start, end=end, progress=progress)
            return mp, {"Content-Type": mp.content_type}

        resp = self.request("POST", "files", creates=True, body_factory=body, timeout=UPLOAD_TIMEOUT, stream=True)
        return self._json_reply("POST", "files", resp, OBJECT_WITH_ID)

    def delete_file(self, file_id: str) -> None:
        """Delete an uploaded file (cancels every unfinished batch made from it). Deleting twice
        is harmless, so the call may be retried; a file already gone is not an error."""
        try:
            self.request("DELETE", f"files/{check_id(file_id, 'file')}").close()
        except APIStatusError as exc:
            if exc.status != 404:
                raise

    def get_file(self, file_id: str) -> Dict[str, Any]:
        return self.get_json(f"files/{check_id(file_id, 'file')}", shape=OBJECT_WITH_ID)

    def find_files(self, search: str, limit: int = 100) -> List[Dict[str, Any]]:
        body = self.get_json("files", params={"search": search, "purpose": "batch", "limit": limit}, shape=LIST)
        return [f for f in body.get("data", []) if isinstance(f, dict)]

    def cost_estimate(self, file_id: str, completion_window: str = "24h") -> Dict[str, Any]:
        return self.get_json(
            f"files/{check_id(file_id, 'file')}/cost-estimate", params={"completion_window": completion_window}
        )

    def stream_content(
        self, file_id: str, skip: int, on_line: Callable[[bytes], None], limit: Optional[int] = None
    ) -> ContentResult:
        """Stream ``GET /files/{id}/content?skip=N`` and hand each complete line to ``on_line``.

        A broken connection does not raise: the result says how many complete lines arrived
        and that the stream was interrupted; a trailing partial line is dropped so that the
        caller can resume from ``skip + lines``.
        """
        params: Dict[str, Any] = {"skip": max(0, int(skip))}
        if limit is not None:
            params["limit"] = limit
        resp = self.request(
            "GET", f"files/{check_id(file_id, 'file')}/content", params=params, stream=True, timeout=DOWNLOAD_TIMEOUT
        )
        result = ContentResult()
        h = resp.headers.get("X-Last-Line")
        result.last_line = int(h) if h and h.strip().isdigit() else None
        inc = resp.headers.get("X-Incomplete")
        result.incomplete = None if inc is None else inc.strip().lower() == "true"
        pending = bytearray()  # the line being received (appended to, never copied whole)
        try:
            for block in resp.iter_content(chunk_size=1 << 16):
                if not block:
                    continue
                if b"\n" not in block:
                    pending.extend(block)
                    if len(pending) > MAX_RESULT_LINE:
                        raise APIConnectionError(
                            f"a line of file {file_id} is over {MAX_RESULT_LINE >> 20} MB: not a result the API sends",
                            hint="The server, or a proxy between here and it, sends malformed content; try again "
                            "later, and check the base URL.",
                        )
                    continue
                *complete, rest = block.split(b"\n")
                if pending:
                    complete[0] = bytes(pending) + complete[0]
                for line in complete:
                    if line.strip():
                        on_line(line)
                    result.lines += 1
                pending = bytearray(rest)
        except (RequestException, OSError) as exc:  # cut connection mid-body
            result.interrupted = _short_reason(exc)
        finally:
            resp.close()
        last = bytes(pending)
        if last.strip():
            if result.interrupted is None and _is_json(last):
                # the body ended cleanly with a final line that lacks its newline
                on_line(last)
                result.lines += 1
            else:
                result.dropped_partial = True
                if result.interrupted is None:
                    result.interrupted = "the body ended in the middle of a line"
        return result

    # -- batches ----------------------------------------------------------------------------
    def create_batch(
        self,
        input_file_id: str,
        completion_window: str,
        metadata: Dict[str, str],
        endpoint: str = "/v1/chat/completions",
        on_attempt: Optional[Callable[[], None]] = None,
    ) -> Dict[str, Any]:
        body = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": completion_window,
            "metadata": metadata,
        }
        resp = self.request(
            "POST", "batches", json_body=body, creates=True, timeout=CREATE_TIMEOUT, on_attempt=on_attempt, stream=True
        )
        return self._json_reply("POST", "batches", resp, BATCH)

    def get_batch(self, batch_id: str) -> Dict[str, Any]:
        return self.get_json(f"batches/{check_id(batch_id, 'batch')}", shape=BATCH)

    def list_batches(
        self,
        limit: int = 100,
        after: Optional[str] = None,
        status: Optional[str] = None,
        search: Optional[str] = None,
        include: Optional[str] = None,
    ) -> Dict[str, Any]:
        params: Dict[str, Any] = {"limit": limit}
        if include:
            params["include"] = include
        if after:
            params["after"] = after
        if status:
            params["status"] = status
        if search:
            params["search"] = search
        return self.get_json("batches", params=params, shape=LIST)

    def batch_analytics(self, batch_id: str) -> Dict[str, Any]:
        """The batch's analytics: token totals and, where the server bills, total_cost (a string)."""
        return self.get_json(f"batches/{check_id(batch_id, 'batch')}/analytics", shape=OBJECT)

    def cancel_batch(self, batch_id: str) -> Dict[str, Any]:
        # Cancelling twice is harmless, so the call may be retried.
        path = f"batches/{check_id(batch_id, 'batch')}/cancel"
        return self._json_reply("POST", path, self.request("POST", path, stream=True), BATCH)

    def list_models(self, reasoning: bool = False) -> List[Dict[str, Any]]:
        """The models the key may use; with ``reasoning``, each model that reasons lists its
        ``supported_reasoning_efforts`` (a server that does not know the query ignores it)."""
        params = {"include_reasoning_capabilities": "true"} if reasoning else None
        body = self.get_json("models", params=params, shape=LIST)
        return [m for m in body.get("data", []) if isinstance(m, dict)]


# What a reply must hold to be read at all (a reason when it does not, else None).
Shape = Callable[[Any], Optional[str]]


def OBJECT(doc: Any) -> Optional[str]:  # noqa: N802 (a constant of the module, called)
    return None if isinstance(doc, dict) else "not a JSON object"


def OBJECT_WITH_ID(doc: Any) -> Optional[str]:  # noqa: N802
    if not isinstance(doc, dict):
        return "not a JSON object"
    return None if is_uuid(doc.get("id")) else "no id of the API's form (a bare UUID)"


def BATCH(doc: Any) -> Optional[str]:  # noqa: N802
    problem = OBJECT_WITH_ID(doc)
    if problem is None and not isinstance(doc.get("status"), str):
        problem = "a batch without a status"
    return problem


def LIST(doc: Any) -> Optional[str]:  # noqa: N802
    if not isinstance(doc, dict):
        return "not a JSON object"
    return None if isinstance(doc.get("data"), list) else "a list without data"


def read_capped(resp: requests.Response, limit: int) -> bytes:
    """The body, decompressed, read up to ``limit`` bytes: a reply that would be larger (an
    endless body, a decompression bomb) is a malformed reply, never a memory spike."""
    buf = bytearray()
    for block in resp.iter_content(chunk_size=1 << 16):
        buf.extend(block)
        if len(buf) > limit:
            resp.close()
            raise MalformedReply(f"a reply over {limit // (1 << 20)} MB")
    return bytes(buf)


class MalformedReply(Exception):
    pass


# The largest JSON reply read (a page of 100 batches or files is a few hundred kB), and the
# part of an error body that is read at all.
MAX_JSON_REPLY = 64 << 20
MAX_ERROR_BODY = 64 << 10


def _parse(resp: requests.Response, shape: Optional[Shape]) -> Tuple[Any, Optional[str]]:
    try:
        raw = read_capped(resp, MAX_JSON_REPLY)
        doc = json.loads(raw)
    except MalformedReply as exc:
        return None, str(exc)
    except (RequestException, OSError) as exc:
        return None, f"the reply broke off ({_short_reason(exc)})"
    except (ValueError, RecursionError):  # not JSON, or nested past any real answer
        text = raw[:80].decode("utf-8", "replace")
        return None, f"not JSON: {text!r}" if text else "an empty body"
    finally:
        resp.close()
    return doc, shape(doc) if shape is not None else None


def malformed(method: str, path: str, problem: str, sent: bool = False) -> APIConnectionError:
    label = f"{method} /{path.lstrip('/')}"
    if sent:
        return APIConnectionError(
            f"{label} got a reply that is not what the API sends ({problem}); it may or may not have been applied",
            hint="Run the same command again: it checks the server for what was already created before sending "
            "anything twice.",
            sent=True,
        )
    return APIConnectionError(
        f"{label} kept getting replies that are not what the API sends ({problem})",
        hint="The server, or a proxy between here and it, sends malformed replies; try again later, and check "
        "the base URL.",
    )


SANDBOX_SERVER = "DoublewordSandbox/"  # the sandbox's Server header (scripts/_dwsandbox/routing.py)
DOUBLEWORD_HOST = "doubleword.ai"


def check_id(value: str, kind: str) -> str:
    if not is_uuid(value):
        from .errors import UsageError

        raise UsageError(
            f"{value!r} is not a valid {kind} id",
            hint=f"Doubleword {kind} ids are bare UUIDs such as 6f1c2e0a-…; no '{kind}-' prefix.",
        )
    return value.lower()


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
        return True
    except (ValueError, RecursionError):  # not JSON, or nested past any real answer
        return False


def _short_reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    for marker in (
        "Read timed out",
        "Connection refused",
        "Connection reset",
        "Connection aborted",
        "timed out",
        "IncompleteRead",
        "InvalidChunkLength",
        "Connection broken",
        "RemoteDisconnected",
        "Name or service not known",
    ):
        if marker in text:
            return f"{type(exc).__name__}: {marker}"
    return f"{type(exc).__name__}: {text[:200]}"


__all__ = ["Client", "ContentResult", "MultipartFile", "is_uuid", "check_id"]
