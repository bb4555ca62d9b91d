"""What answers the requests of a batch: the deterministic built-in model (reasoning models
think first), or an OpenAI-compatible upstream (``--upstream``). Each returns (status, body
text, prompt tokens, completion tokens, reasoning tokens), the upstream also a failure reason
or None."""

from __future__ import annotations

import hashlib
import json
import math
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from _dwbatches.api import reasoning
from _dwbatches.core import urls

from .wire import compact, failure_reason, http_failure, is_retriable_status


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return " ".join(parts)
    return ""


def _tokens(chars: int) -> int:
    return max(1, int(math.ceil(chars / 4.0)))


def _answer(text: str, limit: Any) -> tuple:
    """(text, its tokens, cut short): ``text``, cut to ``limit`` tokens (4 characters each,
    the rule ``_tokens`` counts by) when it is longer, as a model stops at max_tokens."""
    tokens = _tokens(len(text))
    if limit is None or tokens <= limit:
        return text, tokens, False
    text = text[: limit * 4]
    return text, _tokens(len(text)), True


def _client_error(message: str) -> tuple:
    body = compact({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}})
    return 400, body, 0, 0, 0


# How much a reasoning model thinks at each effort, as a share of the sandbox's --reasoning-tokens.
EFFORT_SCALE = {"low": 0.25, "medium": 1.0, "high": 4.0}

# What a bad_answers fault makes of an answer (the fault document names these kinds).
BAD_ANSWERS = ("empty", "filtered", "invalid_json", "missing_fields")


def _schema_of(body: dict, url: str) -> Any:
    """The JSON a request asks for: None (text), {} (any JSON object: JSON mode) or its schema."""
    fmt = body.get("response_format")
    if url == "/v1/responses":
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return {}
    if fmt.get("type") == "json_schema":
        holder = fmt.get("json_schema")
        schema = (holder if isinstance(holder, dict) else fmt).get("schema")
        return schema if isinstance(schema, dict) else {}
    return None


def _value_for(schema: Any, text: str) -> Any:
    """A value that satisfies a JSON Schema (its required properties filled), built from ``text``."""
    if not isinstance(schema, dict):
        return text
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        required = required if isinstance(required, list) else list(props)
        return {name: _value_for(props.get(name), text) for name in required if isinstance(name, str)}
    if kind == "array":
        return [_value_for(schema.get("items"), text)]
    if kind in ("integer", "number"):
        return len(text) % 100
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text


def _instructions(body: dict, url: str) -> str:
    """The system prompt of a request (system messages, Responses instructions, Messages system)."""
    parts = [body.get("instructions"), body.get("system")]
    if url != "/v1/responses":
        for m in body.get("messages") or []:
            if isinstance(m, dict) and m.get("role") in ("system", "developer"):
                parts.append(_text_of(m.get("content")))
    return " ".join(p for p in parts if isinstance(p, str))


class Generated:
    """What the built-in model produced for one request: thinking, then the answer, both
    within the request's token limit (thinking first: it counts against the limit)."""

    def __init__(self, answer: str, think: int, limit: Any, bad: Any) -> None:
        self.reasoning_tokens = min(think, limit) if limit is not None else think
        self.reasoning = _thinking_text(self.reasoning_tokens) if self.reasoning_tokens else None
        left = None if limit is None else limit - self.reasoning_tokens
        self.finish = "stop"
        if left is not None and left <= 0:
            self.content, self.answer_tokens, self.finish = None, 0, "length"
        else:
            self.content, self.answer_tokens, cut = _answer(answer, left)
            if cut:
                self.finish = "length"
        if bad == "empty":
            self.content, self.answer_tokens = "", 0
        elif bad == "filtered":
            self.content, self.answer_tokens, self.finish = None, 0, "content_filter"
        elif bad == "invalid_json":
            self.content = "Here is the JSON you asked for: {" + answer[:20]
            self.answer_tokens = _tokens(len(self.content))
        elif bad == "missing_fields":
            self.content, self.answer_tokens = "{}", 1

    @property
    def completion_tokens(self) -> int:
        return self.reasoning_tokens + self.answer_tokens


def _thinking_text(tokens: int) -> str:
    """Deterministic thinking of ``tokens`` tokens (4 characters each)."""
    unit = "Let me think. "
    text = (unit * (tokens * 4 // len(unit) + 1))[: tokens * 4]
    return text


class BuiltinModel:
    """A deterministic stand-in model: echoes the prompt with a stable hash (as JSON when the
    request asks for JSON). Models of the reasoning families (``_dwbatches.api.reasoning``) think
    ``reasoning_tokens`` tokens first (scaled by the effort asked; none where the model can
    switch thinking off), and the thinking counts against the request's token limit."""

    def __init__(self, reasoning_tokens: int = 0) -> None:
        self.reasoning_tokens = max(0, int(reasoning_tokens))

    def thinking(self, model: str, body: dict, url: str) -> int:
        if not self.reasoning_tokens or not reasoning.thinks(model, body, url):
            return 0
        effort = reasoning.requested_effort(body, url) or reasoning.DEFAULT_EFFORT
        return max(1, int(self.reasoning_tokens * EFFORT_SCALE.get(effort, 1.0)))

    def __call__(self, url: str, body_text: str, model: str, bad: Any = None) -> tuple:
        """(status, body text, prompt tokens, completion tokens, reasoning tokens); ``bad``: a
        kind of BAD_ANSWERS to give instead of a good answer, or None."""
        try:
            body = json.loads(body_text)
        except ValueError:
            return _client_error("request body is not valid JSON")
        if not isinstance(body, dict):
            return _client_error("request body must be a JSON object")
        digest = hashlib.sha256(body_text.encode("utf-8")).hexdigest()
        now = int(time.time())
        if url == "/v1/embeddings":
            return self._embeddings(body, model, digest)
        limit = reasoning.output_limit(body)
        if url == "/v1/completions":
            prompt = body.get("prompt")
            if isinstance(prompt, list):
                prompt = " ".join(str(p) for p in prompt)
            if not isinstance(prompt, str):
                return _client_error("'prompt' is required")
            gen = Generated(f"Echo: {prompt[:60]} [{digest[:8]}]", 0, limit, bad)
            pt = _tokens(len(prompt))
            resp = {
                "id": "cmpl-" + digest[:24],
                "object": "text_completion",
                "created": now,
                "model": model,
                "choices": [{"text": gen.content or "", "index": 0, "logprobs": None, "finish_reason": gen.finish}],
                "usage": {
                    "prompt_tokens": pt,
                    "completion_tokens": gen.completion_tokens,
                    "total_tokens": pt + gen.completion_tokens,
                },
            }
            return 200, compact(resp), pt, gen.completion_tokens, 0
        if url == "/v1/responses":
            inp = body.get("input")
            if isinstance(inp, str):
                prompt, total_chars = inp, len(inp)
            elif isinstance(inp, list):
                texts = [_text_of(item.get("content")) if isinstance(item, dict) else str(item) for item in inp]
                users = [
                    _text_of(item.get("content"))
                    for item in inp
                    if isinstance(item, dict) and item.get("role", "user") == "user"
                ]
                prompt = users[-1] if users else (texts[-1] if texts else "")
                total_chars = sum(len(t) for t in texts)
            else:
                return _client_error("'input' is required")
            if isinstance(body.get("instructions"), str):
                total_chars += len(body["instructions"])
            gen = Generated(self._text(prompt, digest, body, url), self.thinking(model, body, url), limit, bad)
            it = _tokens(total_chars)
            incomplete = gen.finish == "length"
            output: list = []
            if gen.reasoning:
                output.append(
                    {
                        "type": "reasoning",
                        "id": "rs_" + digest[8:32],
                        "summary": [],
                        "content": [{"type": "reasoning_text", "text": gen.reasoning}],
                    }
                )
            if gen.content is not None:
                output.append(
                    {
                        "type": "message",
                        "id": "msg_" + digest[32:56],
                        "status": "incomplete" if incomplete else "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": gen.content, "annotations": []}],
                    }
                )
            ot = gen.completion_tokens
            resp = {
                "id": "resp_" + digest[:32],
                "object": "response",
                "created_at": now,
                "status": "incomplete" if incomplete else "completed",
                "model": model,
                "output": output,
                "output_text": gen.content or "",
                "usage": {
                    "input_tokens": it,
                    "output_tokens": ot,
                    "total_tokens": it + ot,
                    "output_tokens_details": {"reasoning_tokens": gen.reasoning_tokens},
                },
            }
            if incomplete:
                resp["incomplete_details"] = {"reason": "max_output_tokens"}
            elif gen.finish == "content_filter":
                resp["status"] = "incomplete"
                resp["incomplete_details"] = {"reason": "content_filter"}
            return 200, compact(resp), it, ot, gen.reasoning_tokens
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _client_error("'messages' must be a non-empty array")
        texts = [_text_of(m.get("content")) if isinstance(m, dict) else "" for m in messages]
        users = [_text_of(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        prompt = users[-1] if users else texts[-1]
        total_chars = sum(len(t) for t in texts)
        if isinstance(body.get("system"), str):
            total_chars += len(body["system"])
        gen = Generated(self._text(prompt, digest, body, url), self.thinking(model, body, url), limit, bad)
        pt = _tokens(total_chars)
        ct = gen.completion_tokens
        if url == "/v1/messages":
            content = []
            if gen.reasoning:
                content.append({"type": "thinking", "thinking": gen.reasoning, "signature": ""})
            if gen.content is not None:
                content.append({"type": "text", "text": gen.content})
            stop = {"length": "max_tokens", "content_filter": "refusal"}.get(gen.finish, "end_turn")
            resp = {
                "id": "msg_" + digest[:24],
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": {"input_tokens": pt, "output_tokens": ct},
            }
            return 200, compact(resp), pt, ct, gen.reasoning_tokens
        message: dict = {"role": "assistant", "content": gen.content}
        if gen.reasoning is not None:
            message["reasoning_content"] = gen.reasoning
        usage: dict = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
        if gen.reasoning_tokens:
            usage["completion_tokens_details"] = {"reasoning_tokens": gen.reasoning_tokens}
        resp = {
            "id": "chatcmpl-" + digest[:24],
            "object": "chat.completion",
            "created": now,
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": gen.finish}],
            "usage": usage,
        }
        return 200, compact(resp), pt, ct, gen.reasoning_tokens

    @staticmethod
    def _text(prompt: str, digest: str, body: dict, url: str) -> str:
        """The answer: an echo of the prompt, as a JSON object when the request asks for JSON;
        one word (the prompt's first) when the instructions ask for one word."""
        if "one word" in _instructions(body, url).lower():
            return (prompt.split() or ["Echo"])[0].strip(".,:;!?\"'")
        echo = f"Echo: {prompt[:60]} [{digest[:8]}]"
        schema = _schema_of(body, url)
        if schema is None:
            return echo
        value = _value_for(schema, echo) if schema else {"answer": echo}
        return json.dumps(value, ensure_ascii=False)

    @staticmethod
    def _embeddings(body: dict, model: str, digest: str) -> tuple:
        inp = body.get("input")
        if isinstance(inp, str) or (isinstance(inp, list) and inp and all(isinstance(x, int) for x in inp)):
            items = [inp]
        elif isinstance(inp, list) and inp:
            items = inp
        else:
            return _client_error("'input' is required")
        data = []
        chars = 0
        for index, item in enumerate(items):
            text = item if isinstance(item, str) else compact(item)
            chars += len(text)
            h = hashlib.sha256(text.encode("utf-8")).digest()
            vec = [round((b / 255.0) * 2 - 1, 6) for b in h[:8]]
            data.append({"object": "embedding", "index": index, "embedding": vec})
        pt = _tokens(chars)
        resp = {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": pt, "total_tokens": pt}}
        return 200, compact(resp), pt, 0, 0


def upstream_refusal(base: str, has_key: bool, allow_insecure_http: bool) -> str | None:
    """Why the sandbox must not start with this ``--upstream`` (or None): user info in it (never
    echoed), not an http(s) URL, or plain http to another machine while an upstream key would
    travel with each request (unless ``--upstream-allow-insecure-http``)."""
    if urls.has_userinfo(base):
        return (
            f"--upstream {urls.redact_userinfo(base)} has a user name or password in it; give the upstream's "
            "key with DW_SANDBOX_UPSTREAM_API_KEY (or --upstream-api-key)"
        )
    try:
        parts = urlsplit(base)
        host = parts.hostname
        parts.port  # noqa: B018 - a port that is not a number raises ValueError here
    except ValueError:
        return f"--upstream {base!r} is not an http(s) URL"
    if parts.scheme not in ("http", "https") or not host:
        return f"--upstream {base!r} is not an http(s) URL"
    if parts.scheme == "http" and has_key and not urls.is_loopback(host) and not allow_insecure_http:
        return (
            f"refusing a plain-http --upstream to {host!r}, another machine: the upstream key would travel "
            "unencrypted. Use https://, or pass --upstream-allow-insecure-http if this network is trusted"
        )
    return None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib would send the request again, Authorization header
    (the upstream key) included, to whatever host the Location names. The 3xx reply comes back
    as an HTTPError, and fails that request."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


class UpstreamBackend:
    """Forwards each request body to ``base + line url`` with urllib (never following a
    redirect: a redirect fails the request)."""

    def __init__(
        self, base: str, api_key: str | None, timeout: float, retries: int, model: str | None, stop: threading.Event
    ):
        self.base = base.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.model = model
        self.stop = stop
        # a model server on this machine is reached directly, never through HTTP(S)_PROXY
        # (the client's rule: loopback bypasses proxies); others follow the environment
        handlers: list = [_NoRedirects()]
        if urls.is_loopback_url(self.base):
            handlers.append(urllib.request.ProxyHandler({}))
        self._open = urllib.request.build_opener(*handlers).open

    def target(self, url: str) -> str:
        if self.base.endswith("/v1") and url.startswith("/v1/"):
            return self.base + url[3:]
        return self.base + url

    def __call__(self, url: str, body_text: str, model: str) -> tuple:
        """Return (status, text, prompt_tokens, completion_tokens, reasoning_tokens, failure_or_None)."""
        payload = body_text
        if self.model:
            try:
                obj = json.loads(body_text)
                obj["model"] = self.model
                payload = compact(obj)
            except (ValueError, TypeError):
                pass
        data = payload.encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = "Bearer " + self.api_key
        attempt = 0
        while True:
            attempt += 1
            req = urllib.request.Request(self.target(url), data=data, headers=headers, method="POST")
            location = None
            try:
                with self._open(req, timeout=self.timeout) as resp:
                    status, text = resp.status, resp.read().decode("utf-8", "replace")
            except urllib.error.HTTPError as err:
                status = err.code
                location = err.headers.get("Location") if err.headers is not None else None
                try:
                    text = err.read().decode("utf-8", "replace")
                except Exception:
                    text = ""
            except socket.timeout as err:
                return 0, "", 0, 0, 0, failure_reason("Timeout", {"error": f"request timed out: {err}"})
            except (urllib.error.URLError, OSError, ValueError) as err:
                reason = getattr(err, "reason", err)
                if isinstance(reason, socket.timeout):
                    return 0, "", 0, 0, 0, failure_reason("Timeout", {"error": "request timed out"})
                return 0, "", 0, 0, 0, failure_reason("NetworkError", {"error": str(reason)})
            if 300 <= status < 400:
                return (
                    status,
                    "",
                    0,
                    0,
                    0,
                    failure_reason(
                        "UpstreamRedirect",
                        {
                            "status": status,
                            "location": urls.redact_userinfo(location or ""),
                            "error": "the upstream answered with a redirect, which is not followed (the upstream key "
                            "would go with it); point --upstream at the final URL",
                        },
                    ),
                )
            if status < 400:
                pt, ct, rt = 0, 0, 0
                try:
                    obj = json.loads(text)
                    text = compact(obj)
                    usage = obj.get("usage") if isinstance(obj, dict) else None
                    if isinstance(usage, dict):
                        pt = int(usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0)
                        ct = int(usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0)
                        details = usage.get("completion_tokens_details") or usage.get("output_tokens_details")
                        if isinstance(details, dict):
                            rt = int(details.get("reasoning_tokens") or 0)
                except (ValueError, TypeError):
                    text = json.dumps(text)
                return status, text, pt, ct, rt, None
            if is_retriable_status(status) and attempt <= self.retries and not self.stop.is_set():
                self.stop.wait(min(5.0, 0.5 * (2 ** (attempt - 1))))
                continue
            return status, "", 0, 0, 0, http_failure(status, text)
