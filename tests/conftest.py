"""Shared pytest fixtures.

Every test runs in its own temporary working directory with DOUBLEWORD_API_KEY and
DOUBLEWORD_BASE_URL removed, so no real key or ``.env`` can be picked up.

Sandbox fixtures (see tests/sandbox_helper.py):
    sandbox          a fresh local sandbox server (random sk-test- key), stopped afterwards
    sandbox_factory  sandbox_factory("--latency", "0.05", ...) starts more, all stopped afterwards
"""

from __future__ import annotations

import pytest
from sandbox_helper import Sandbox, new_api_key


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("DOUBLEWORD_API_KEY", "DOUBLEWORD_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sandbox_factory(tmp_path_factory):
    """Start sandboxes with extra CLI args: ``sandbox_factory("--latency", "0.1")``.

    Keyword arguments: ``api_key`` (default: a fresh random key; pass ``""`` for no auth),
    ``data_dir`` (default: a new temporary directory).
    """
    started: list = []

    def start(*extra_args: str, api_key: str | None = None, data_dir=None) -> Sandbox:
        key = new_api_key() if api_key is None else (api_key or None)
        directory = data_dir or tmp_path_factory.mktemp("sandbox") / "data"
        sb = Sandbox(directory, api_key=key, extra_args=extra_args)
        started.append(sb)
        return sb.start()

    yield start
    for sb in started:
        sb.stop()


@pytest.fixture
def sandbox(sandbox_factory) -> Sandbox:
    """A fresh sandbox server with default settings."""
    return sandbox_factory()
