"""The App: what every API function shares (config, faults, store, engine, counters), auth,
the Host check, and a reset to a fresh state without a restart.

The data dir is created 0700 (one that exists is left as it is), its ``tmp`` dir is 0700 and
the database 0600 (``store.Store``): the stored prompts and answers are the user's alone.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import sqlite3
import threading
from typing import Any
from urllib.parse import urlsplit

from _dwbatches.core import compat, urls

from .config import WINDOW_SECONDS, Config
from .engine import Engine
from .faults import Faults
from .store import Store
from .wire import ApiError, parse_uuid


def live_row(conn: sqlite3.Connection, table: str, label: str, raw_id: str) -> Any:
    """The row of a file or batch (``table``, named ``label``) that exists, not deleted, or the
    400 / 404 the server answers."""
    row_id = parse_uuid(raw_id)
    if row_id is None:
        raise ApiError(400, f"Invalid {label.lower()} ID format")
    row = conn.execute(f"SELECT * FROM {table} WHERE id = ? AND deleted = 0", (row_id,)).fetchone()
    if row is None:
        raise ApiError(404, f"{label} with ID {raw_id} not found")
    return row


def private_dir(path: str) -> None:
    """Create ``path`` (and its parents) with mode 0700; a directory that exists keeps its mode."""
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o700, exist_ok=True)
        compat.set_mode(path, 0o700)


def host_name(header: str | None) -> str | None:
    """The host a Host header names (lowercase, IPv6 without brackets, no port), or None when
    it is missing or not a host[:port]."""
    value = (header or "").strip()
    if not value or any(c in value for c in "@/\\?# \t"):
        return None
    try:
        parts = urlsplit("//" + value)
        parts.port  # noqa: B018 - a port that is not a number raises ValueError here
        return parts.hostname or None
    except ValueError:
        return None


class Stats:
    """API calls by method and route template, and uploads whose body was read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict = {}
        self.uploads_received = 0

    def count(self, key: str) -> None:
        with self._lock:
            self.requests[key] = self.requests.get(key, 0) + 1

    def upload(self) -> None:
        with self._lock:
            self.uploads_received += 1

    def reset(self) -> None:
        with self._lock:
            self.requests = {}
            self.uploads_received = 0

    def snapshot(self) -> tuple:
        with self._lock:
            return dict(self.requests), self.uploads_received


class App:
    def __init__(self, cfg: Config, faults: Faults) -> None:
        self.cfg = cfg
        self.faults = faults
        private_dir(cfg.data_dir)
        private_dir(os.path.join(cfg.data_dir, "tmp"))
        compat.set_mode(os.path.join(cfg.data_dir, "tmp"), 0o700)  # uploads land there: the sandbox's alone
        for name in os.listdir(os.path.join(cfg.data_dir, "tmp")):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(cfg.data_dir, "tmp", name))
        self.store = Store(os.path.join(cfg.data_dir, "sandbox.db"))
        self.stats = Stats()
        self.engine = Engine(cfg, self.store, faults)
        self.initial_faults = {k: v for k, v in faults.document().items() if k != "_remaining"}
        self._reset_lock = threading.Lock()
        self.chat_models = set(cfg.chat_models)
        self.embedding_models = set(cfg.embedding_models)

    # auth --------------------------------------------------------------------------
    def check_auth(self, header: str | None, openai: bool) -> ApiError | None:
        style = "openai" if openai else "text"
        token = None
        if header:
            scheme, _, value = header.strip().partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                token = value.strip()
        if (
            token is not None
            and self.cfg.forbidden_key
            and hmac.compare_digest(token.encode(), self.cfg.forbidden_key.encode())
        ):
            return ApiError(403, "API key purpose 'platform' is not allowed for this endpoint", style=style)
        if not self.cfg.api_key:
            return None
        if token is None:
            return ApiError(401, "Authentication required", style=style, code="invalid_api_key")
        if not hmac.compare_digest(token.encode(), self.cfg.api_key.encode()):
            return ApiError(401, "Invalid API key", style=style, code="invalid_api_key")
        return None

    def check_host(self, header: str | None) -> ApiError | None:
        """421 unless the Host header names loopback (``urls.is_loopback``), the address bound
        or an --allow-host name: a web page of another site whose name was pointed at
        127.0.0.1 (DNS rebinding) sends its own name, and is not answered."""
        name = host_name(header)
        if name is not None and (urls.is_loopback(name) or name in self.cfg.allowed_hosts):
            return None
        named = ", ".join(sorted(h for h in self.cfg.allowed_hosts if not urls.is_loopback(h)))
        return ApiError(
            421,
            f"Host {(header or '')[:100]!r} is not answered here: this sandbox answers requests for localhost, "
            f"127.0.0.1 and ::1{' and ' + named if named else ''} only; start it with --allow-host NAME to "
            "answer another name",
        )

    # helpers -----------------------------------------------------------------------
    def window_seconds(self, window: str) -> int:
        return int(round(WINDOW_SECONDS[window] * self.cfg.window_scale))

    def has_model(self, model: str) -> bool:
        return model in self.chat_models or model in self.embedding_models

    # lifecycle ---------------------------------------------------------------------
    def reset(self) -> None:
        """Start afresh without a restart: no files, batches or requests, the faults the server
        was started with, zero counters. The workers are stopped first and started again, so
        nothing of the old state is written back."""
        with self._reset_lock:
            self.engine.stop()
            self.store.clear()
            self.faults.replace(self.initial_faults)
            self.stats.reset()
            self.engine = Engine(self.cfg, self.store, self.faults)
            self.engine.start()

    def close(self) -> None:
        self.engine.stop()
        self.store.close()
