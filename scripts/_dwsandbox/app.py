"""The App: what every API function shares (config, faults, store, engine, counters), auth,
and a reset to a fresh state without a restart."""

from __future__ import annotations

import contextlib
import hmac
import os
import sqlite3
import threading
from typing import Any

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
        os.makedirs(os.path.join(cfg.data_dir, "tmp"), exist_ok=True)
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
