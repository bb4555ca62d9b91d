"""Result lines, read: success or failure, the error in words, the useful content, the prompt.

Pure functions over parsed lines of output and error files (and request lines), no I/O.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from .answers import CHECKS


def is_success(obj: Dict[str, Any]) -> bool:
    resp = obj.get("response")
    if not isinstance(resp, dict) or obj.get("error"):
        return False
    status = resp.get("status_code")
    return not (isinstance(status, int) and status >= 400)


def error_text(obj: Dict[str, Any]) -> str:
    """A readable message for a failed line (error line, or an output line with status >= 400)."""
    err = obj.get("error")
    if isinstance(err, dict):
        msg = err.get("message")
        if isinstance(msg, str):
            try:
                reason = json.loads(msg)
            except (ValueError, RecursionError):  # not JSON, or nested past any real answer
                reason = None
            if isinstance(reason, dict) and reason.get("type"):
                details = reason.get("details")
                text = str(reason["type"])
                if isinstance(details, dict):
                    if details.get("status") is not None:
                        text += f" (HTTP {details['status']})"
                    body = details.get("body") or details.get("message") or details.get("error")
                    if body:
                        text += f": {short(body)}"
                elif details:
                    text += f": {short(details)}"
                return text
            return msg
        if msg is not None:
            return short(msg)
        return short(err)
    if isinstance(err, str):
        return err
    resp = obj.get("response")
    if isinstance(resp, dict):
        body = resp.get("body")
        detail = body
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            detail = body["error"].get("message") or body["error"]
        return f"HTTP {resp.get('status_code')}: {short(detail)}"
    return "failed (no details)"


def short(value: Any, limit: int = 1000) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"


def extract_content(body: Any) -> Any:
    """The useful payload of a response body: chat text, completion text, Responses output
    text, Messages text, or the embedding vector(s)."""
    if not isinstance(body, dict):
        return body
    choices = body.get("choices")
    if isinstance(choices, list) and choices:
        vals = []
        for c in choices:
            if not isinstance(c, dict):
                continue
            msg = c.get("message")
            if isinstance(msg, dict):
                content = msg.get("content")
                if content is None and msg.get("tool_calls"):
                    content = msg["tool_calls"]
                vals.append(content)
            else:
                vals.append(c.get("text"))
        return vals[0] if len(vals) == 1 else vals
    data = body.get("data")
    if isinstance(data, list) and data and isinstance(data[0], dict) and "embedding" in data[0]:
        vecs = [d.get("embedding") for d in data if isinstance(d, dict)]
        return vecs[0] if len(vecs) == 1 else vecs
    if isinstance(body.get("output_text"), str):
        return body["output_text"]
    output = body.get("output")
    if isinstance(output, list):
        texts = []
        for item in output:
            if isinstance(item, dict) and item.get("type") == "message":
                for part in item.get("content") or []:
                    if isinstance(part, dict) and part.get("type") in ("output_text", "text"):
                        texts.append(part.get("text") or "")
        if texts:
            return "".join(texts)
    content = body.get("content")
    if isinstance(content, list):
        texts = [p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if texts:
            return "".join(texts)
    return body


def simple_line(custom_id: str, obj: Optional[Dict[str, Any]], check: str, error: Optional[str]) -> Dict[str, Any]:
    """One request in the simple format: ``ok`` only for a good answer; ``answer_check`` says
    what became of it (``answers.CHECKS``, "failed" or "missing"); an answer that is not good
    keeps its content (a cut text, text that is not the JSON asked for) and says why in ``error``."""
    line: Dict[str, Any] = {"custom_id": custom_id, "ok": error is None, "answer_check": check}
    if check in CHECKS:
        body = ((obj or {}).get("response") or {}).get("body")
        usage = body.get("usage") if isinstance(body, dict) else None
        line.update(content=extract_content(body), usage=usage, error=error)
    else:
        line.update(content=None, usage=None, error=error)
    origin = reused_from(obj)
    if origin is not None:  # not sent: the answer an earlier request got (see answerreuse)
        line["reused"] = origin
    return line


REUSED_KEY = "dwb_reused"  # on a result line that was not downloaded: where its answer came from


def reused_from(obj: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """{job, job_id, custom_id} of the answer a request took without being sent, or None."""
    origin = obj.get(REUSED_KEY) if isinstance(obj, dict) else None
    return origin if isinstance(origin, dict) else None


def csv_cell(content: Any, raw: bool = False) -> str:
    """A value as a CSV cell; text a spreadsheet would run as a formula (starting with = + - @,
    a tab or a carriage return) gets a leading ' so that it shows as text, unless ``raw``."""
    if content is None:
        return ""
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    if not raw and text[:1] in FORMULA_STARTS:
        return "'" + text
    return text


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def request_text(line: bytes) -> str:
    """What a request asked, for a CSV of results: the last user message of a chat request,
    the prompt of a completion, the input of a Responses or an embeddings request."""
    try:
        body = json.loads(line).get("body") or {}
    except (ValueError, AttributeError, RecursionError):
        return ""
    if not isinstance(body, dict):
        return ""
    messages = body.get("messages")
    if isinstance(messages, list):
        for msg in reversed(messages):
            if isinstance(msg, dict) and msg.get("role") == "user":
                return _text_of(msg.get("content"))
    for key in ("prompt", "input"):
        if key in body:
            return _text_of(body[key])
    return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in content]
        if all(isinstance(p, str) for p in parts):
            return "\n".join(x for x in parts if x)
    return json.dumps(content, ensure_ascii=False)
