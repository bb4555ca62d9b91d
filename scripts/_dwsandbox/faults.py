"""Fault injection: the fault document (``--faults``, ``DW_SANDBOX_FAULTS``, ``PUT /_sandbox/faults``),
its validation, its consumable counters, and the reply an http rule gives instead of a route.

A new fault: add its field to ``Faults.FIELDS`` (and its check to ``Faults.validate``), a method
that reads it here, the call where it applies (engine.py, files_api.py, routing.py ...), and a
line in the fault document part of ``server.EPILOG``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.client import responses as http_reasons
from typing import Any

from .backends import BAD_ANSWERS
from .wire import ApiError, Response, text_response


class Faults:
    """The fault document and its consumable counters (thread safe)."""

    FIELDS = (
        "fail_rate",
        "fail_custom_ids",
        "fail_status",
        "http",
        "drop_content_after_lines",
        "drop_content_times",
        "duplicate_output_line",
        "late_line_after_cancel",
        "extra_latency",
        "extra_latency_paths",
        "slow_upload_read",
        "hold_create",
        "bad_answers",
        "billed_price_factor",
        "pause_requests",
    )
    RULE_FIELDS = (
        "method",
        "path",
        "status",
        "times",
        "retry_after",
        "retry_after_header",
        "after_body",
        "drop",
        "message",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._doc: dict = {}
        self._rules: list = []
        self._drop_left = 0
        self._fail_ids: frozenset = frozenset()
        self._bad_left: dict = {}
        self._holds_left: int | None = None

    @staticmethod
    def validate(doc: Any) -> dict:
        if doc is None:
            return {}
        if not isinstance(doc, dict):
            raise ValueError("The fault document must be a JSON object")
        out = {}
        for key, value in doc.items():
            if key.startswith("_"):
                continue
            if key not in Faults.FIELDS:
                raise ValueError("Unknown fault field '{}'. Known fields: {}".format(key, ", ".join(Faults.FIELDS)))
            out[key] = value

        def number(name: str, lo: float, hi: float | None = None) -> None:
            if name in out:
                v = out[name]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < lo or (hi is not None and v > hi):
                    rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
                    raise ValueError(f"'{name}' must be a number in {rng}")

        def integer(name: str, lo: int, src: dict | None = None) -> None:
            src = out if src is None else src
            if name in src:
                v = src[name]
                if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                    raise ValueError(f"'{name}' must be an integer >= {lo}")

        def boolean(name: str, src: dict | None = None) -> None:
            src = out if src is None else src
            if name in src and not isinstance(src[name], bool):
                raise ValueError(f"'{name}' must be true or false")

        def str_list(name: str) -> None:
            if name in out:
                v = out[name]
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    raise ValueError(f"'{name}' must be a list of strings")

        number("fail_rate", 0, 1)
        str_list("fail_custom_ids")
        integer("fail_status", 100)
        integer("drop_content_after_lines", 0)
        integer("drop_content_times", 1)
        boolean("duplicate_output_line")
        boolean("pause_requests")
        if "late_line_after_cancel" in out:
            late = out["late_line_after_cancel"]
            if not isinstance(late, (bool, int, float)) or (not isinstance(late, bool) and late < 0):
                raise ValueError("'late_line_after_cancel' must be true, false or a number of seconds >= 0")
        number("extra_latency", 0)
        number("billed_price_factor", 0)
        if "bad_answers" in out:
            bad = out["bad_answers"]
            if not isinstance(bad, dict) or not all(v in BAD_ANSWERS for v in bad.values()):
                raise ValueError(
                    "'bad_answers' must be an object {custom_id: kind}, kind one of " + ", ".join(BAD_ANSWERS)
                )
        str_list("extra_latency_paths")
        if "slow_upload_read" in out:
            slow = out["slow_upload_read"]
            if not isinstance(slow, dict):
                raise ValueError("'slow_upload_read' must be an object {after_bytes, pause}")
            integer("after_bytes", 0, slow)
            p = slow.get("pause", 0)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or p < 0:
                raise ValueError("'slow_upload_read.pause' must be a number >= 0")
        if "hold_create" in out:
            hold = out["hold_create"]
            if not isinstance(hold, dict) or set(hold) - {"seconds", "visible", "times"}:
                raise ValueError("'hold_create' must be an object {seconds, visible, times}")
            s = hold.get("seconds")
            if isinstance(s, bool) or not isinstance(s, (int, float)) or s < 0:
                raise ValueError("'hold_create.seconds' must be a number >= 0")
            if hold.get("visible", "after") not in ("after", "before"):
                raise ValueError("'hold_create.visible' must be 'after' or 'before'")
            integer("times", 1, hold)
        if "http" in out:
            rules = out["http"]
            if not isinstance(rules, list):
                raise ValueError("'http' must be a list of rules")
            for rule in rules:
                if not isinstance(rule, dict):
                    raise ValueError("each 'http' rule must be an object")
                for key in rule:
                    if key not in Faults.RULE_FIELDS:
                        raise ValueError(
                            "Unknown http rule field '{}'. Known fields: {}".format(key, ", ".join(Faults.RULE_FIELDS))
                        )
                if not rule.get("drop"):
                    st = rule.get("status")
                    if isinstance(st, bool) or not isinstance(st, int) or not 100 <= st <= 599:
                        raise ValueError("each 'http' rule needs an integer 'status' (or \"drop\": true)")
                integer("times", 1, rule)
                boolean("after_body", rule)
                boolean("drop", rule)
                boolean("retry_after_header", rule)
                ra = rule.get("retry_after")
                if ra is not None and (isinstance(ra, bool) or not isinstance(ra, (int, float)) or ra < 0):
                    raise ValueError("'retry_after' must be a number >= 0")
                for key in ("method", "path", "message"):
                    if key in rule and not isinstance(rule[key], str):
                        raise ValueError(f"'{key}' must be a string")
        return out

    def replace(self, doc: Any) -> None:
        clean = self.validate(doc)
        with self._lock:
            self._doc = clean
            self._rules = [dict(r, _left=r.get("times")) for r in clean.get("http", [])]
            if "drop_content_after_lines" in clean:
                self._drop_left = int(clean.get("drop_content_times", 1))
            else:
                self._drop_left = 0
            self._fail_ids = frozenset(clean.get("fail_custom_ids", []))
            self._bad_left = dict(clean.get("bad_answers", {}))
            self._holds_left = clean.get("hold_create", {}).get("times")

    def document(self) -> dict:
        with self._lock:
            doc = json.loads(json.dumps(self._doc))
            doc["_remaining"] = {"http_times": [r["_left"] for r in self._rules], "drop_content_times": self._drop_left}
            if "bad_answers" in doc:
                doc["_remaining"]["bad_answers"] = sorted(self._bad_left)
            if "hold_create" in doc:
                doc["_remaining"]["hold_create_times"] = self._holds_left
            return doc

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._doc.get(key, default)

    def take_http(self, method: str, paths: tuple) -> dict | None:
        with self._lock:
            for rule in self._rules:
                if rule["_left"] is not None and rule["_left"] <= 0:
                    continue
                want = rule.get("method")
                if want and want != "*" and want.upper() != method:
                    continue
                prefix = rule.get("path", "*")
                if prefix != "*" and not any(p.startswith(prefix) for p in paths):
                    continue
                if rule["_left"] is not None:
                    rule["_left"] -= 1
                return dict(rule)
        return None

    def request_failure(self, request_id: str, custom_id: str) -> int | None:
        """The status a request must fail with, or None."""
        with self._lock:
            doc = self._doc
            if not doc:
                return None
            status = int(doc.get("fail_status", 500))
            if custom_id in self._fail_ids:
                return status
            rate = float(doc.get("fail_rate", 0) or 0)
        if rate <= 0:
            return None
        draw = int(hashlib.sha256(request_id.encode()).hexdigest()[:16], 16) / float(1 << 64)
        return status if draw < rate else None

    def take_bad_answer(self, custom_id: str) -> str | None:
        """The kind of bad answer ``custom_id`` gets this time (each is given once), or None."""
        with self._lock:
            return self._bad_left.pop(custom_id, None) if self._bad_left else None

    def requests_paused(self) -> bool:
        """Whether no request may start now (``pause_requests``; those running finish)."""
        with self._lock:
            return bool(self._doc.get("pause_requests"))

    def billed_price_factor(self) -> float:
        with self._lock:
            return float(self._doc.get("billed_price_factor", 1.0))

    def take_content_drop(self) -> int | None:
        with self._lock:
            if self._drop_left <= 0 or "drop_content_after_lines" not in self._doc:
                return None
            self._drop_left -= 1
            return int(self._doc["drop_content_after_lines"])

    def extra_latency(self, path: str) -> float:
        with self._lock:
            delay = float(self._doc.get("extra_latency", 0) or 0)
            prefixes = self._doc.get("extra_latency_paths")
        if delay <= 0:
            return 0.0
        if prefixes and not any(path.startswith(p) for p in prefixes):
            return 0.0
        return delay

    def take_create_hold(self) -> tuple | None:
        """(seconds, visible first) for the next batch create to hold, or None (each of
        ``times`` creates is held once; without ``times`` every one is)."""
        with self._lock:
            hold = self._doc.get("hold_create")
            if not hold or (self._holds_left is not None and self._holds_left <= 0):
                return None
            if self._holds_left is not None:
                self._holds_left -= 1
            return float(hold["seconds"]), hold.get("visible", "after") == "before"

    def slow_upload(self) -> tuple | None:
        with self._lock:
            slow = self._doc.get("slow_upload_read")
        if not slow:
            return None
        return int(slow.get("after_bytes", 0)), float(slow.get("pause", 0))


def fault_response(rule: dict) -> Response:
    """The reply of an http rule: a dropped connection, the busy JSON of 429/503, or plain text."""
    if rule.get("drop"):
        resp = Response(0)
        resp.drop = True
        return resp
    status = int(rule["status"])
    message = rule.get("message")
    if status in (429, 503):
        default = "Too many requests. Please retry later." if status == 429 else "Service temporarily unavailable."
        err = ApiError(
            status,
            message or default,
            style="busy",
            retry_after=rule.get("retry_after"),
            retry_after_header=rule.get("retry_after_header", True),
        )
        return err.response()
    return text_response(status, message or http_reasons.get(status, "Error"))
