"""What answers the requests of a batch: the deterministic built-in model, or an
OpenAI-compatible upstream (``--upstream``). Each returns (status, body text, prompt tokens,
completion tokens), the upstream also a failure reason or None."""

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

from _dwbatches import urls

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


def _max_tokens(body: dict) -> Any:
    """The answer's token limit a request sets (max_completion_tokens, max_tokens or
    max_output_tokens, the first given as a positive integer), or None."""
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(key)
        if type(value) is int and value > 0:
            return value
    return None


def _answer(text: str, limit: Any) -> tuple:
    """(text, its tokens, cut short): the echo, cut to ``limit`` tokens (4 characters each,
    the rule ``_tokens`` counts by) when it is longer, as a model stops at max_tokens."""
    tokens = _tokens(len(text))
    if limit is None or tokens <= limit:
        return text, tokens, False
    text = text[: limit * 4]
    return text, _tokens(len(text)), True


def _client_error(message: str) -> tuple:
    body = compact({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}})
    return 400, body, 0, 0


class BuiltinModel:
    """A deterministic stand-in model: echoes the prompt with a stable hash."""

    def __call__(self, url: str, body_text: str, model: str) -> tuple:
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
        limit = _max_tokens(body)
        if url == "/v1/completions":
            prompt = body.get("prompt")
            if isinstance(prompt, list):
                prompt = " ".join(str(p) for p in prompt)
            if not isinstance(prompt, str):
                return _client_error("'prompt' is required")
            text, ct, cut = _answer(f"Echo: {prompt[:60]} [{digest[:8]}]", limit)
            pt = _tokens(len(prompt))
            resp = {
                "id": "cmpl-" + digest[:24],
                "object": "text_completion",
                "created": now,
                "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "length" if cut else "stop"}],
                "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
            }
            return 200, compact(resp), pt, ct
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
            text, ot, cut = _answer(f"Echo: {prompt[:60]} [{digest[:8]}]", limit)
            it = _tokens(total_chars)
            resp = {
                "id": "resp_" + digest[:32],
                "object": "response",
                "created_at": now,
                "status": "incomplete" if cut else "completed",
                "model": model,
                "output": [
                    {
                        "type": "message",
                        "id": "msg_" + digest[32:56],
                        "status": "incomplete" if cut else "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}],
                    }
                ],
                "output_text": text,
                "usage": {"input_tokens": it, "output_tokens": ot, "total_tokens": it + ot},
            }
            if cut:
                resp["incomplete_details"] = {"reason": "max_output_tokens"}
            return 200, compact(resp), it, ot
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _client_error("'messages' must be a non-empty array")
        texts = [_text_of(m.get("content")) if isinstance(m, dict) else "" for m in messages]
        users = [_text_of(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        prompt = users[-1] if users else texts[-1]
        total_chars = sum(len(t) for t in texts)
        if isinstance(body.get("system"), str):
            total_chars += len(body["system"])
        text, ct, cut = _answer(f"Echo: {prompt[:60]} [{digest[:8]}]", limit)
        pt = _tokens(total_chars)
        if url == "/v1/messages":
            resp = {
                "id": "msg_" + digest[:24],
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "max_tokens" if cut else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": pt, "output_tokens": ct},
            }
            return 200, compact(resp), pt, ct
        resp = {
            "id": "chatcmpl-" + digest[:24],
            "object": "chat.completion",
            "created": now,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "length" if cut else "stop",
                }
            ],
            "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
        }
        return 200, compact(resp), pt, ct

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
        return 200, compact(resp), pt, 0


class UpstreamBackend:
    """Forwards each request body to ``base + line url`` with urllib."""

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
        handlers = [urllib.request.ProxyHandler({})] if urls.is_loopback_url(self.base) else []
        self._open = urllib.request.build_opener(*handlers).open

    def target(self, url: str) -> str:
        if self.base.endswith("/v1") and url.startswith("/v1/"):
            return self.base + url[3:]
        return self.base + url

    def __call__(self, url: str, body_text: str, model: str) -> tuple:
        """Return (status, text, prompt_tokens, completion_tokens, failure_or_None)."""
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
            try:
                with self._open(req, timeout=self.timeout) as resp:
                    status, text = resp.status, resp.read().decode("utf-8", "replace")
            except urllib.error.HTTPError as err:
                status = err.code
                try:
                    text = err.read().decode("utf-8", "replace")
                except Exception:
                    text = ""
            except socket.timeout as err:
                return 0, "", 0, 0, failure_reason("Timeout", {"error": f"request timed out: {err}"})
            except (urllib.error.URLError, OSError, ValueError) as err:
                reason = getattr(err, "reason", err)
                if isinstance(reason, socket.timeout):
                    return 0, "", 0, 0, failure_reason("Timeout", {"error": "request timed out"})
                return 0, "", 0, 0, failure_reason("NetworkError", {"error": str(reason)})
            if status < 400:
                pt, ct = 0, 0
                try:
                    obj = json.loads(text)
                    text = compact(obj)
                    usage = obj.get("usage") if isinstance(obj, dict) else None
                    if isinstance(usage, dict):
                        pt = int(usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0)
                        ct = int(usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0)
                except (ValueError, TypeError):
                    text = json.dumps(text)
                return status, text, pt, ct, None
            if is_retriable_status(status) and attempt <= self.retries and not self.stop.is_set():
                self.stop.wait(min(5.0, 0.5 * (2 ** (attempt - 1))))
                continue
            return status, "", 0, 0, http_failure(status, text)
