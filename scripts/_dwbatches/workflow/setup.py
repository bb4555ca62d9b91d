"""Checking the setup: Python, the packages, the key, the base URL, API access and models.

check_setup.py in one function: each check is narrated on stderr as ok/FAIL with its fix,
the first failure ends the run with its exit code (3 for the key or configuration, 1 when
the API cannot be reached), and a ready setup gets a report with a first build command.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ..core.errors import (
    EXIT_API,
    EXIT_CONFIG,
    REQUIRED_PACKAGES,
    ConfigError,
    DWError,
    install_hint,
    missing_packages_error,
)
from ..core.output import Outcome, narrate
from .common import Connection, sandbox_config

MIN_PYTHON = (3, 9)

# What answers at the base URL, in words (``http.Client.server_kind``).
SERVER_WORDS = {
    "doubleword": "Doubleword's API",
    "sandbox": "the bundled local sandbox (a rehearsal: no real model, no money)",
    "other": "a server that is neither Doubleword's API nor the bundled sandbox (self-hosted or another)",
}


class Checks:
    def __init__(self) -> None:
        self.items: List[Dict[str, Any]] = []

    def add(self, name: str, ok: bool, detail: str, fix: Optional[str] = None) -> bool:
        self.items.append({"name": name, "ok": ok, "detail": detail, "fix": None if ok else fix})
        narrate(f"{'ok  ' if ok else 'FAIL'}  {name}: {detail}")
        if not ok and fix:
            narrate(f"      fix: {fix}")
        return ok


def _default_chat_model(ids: List[str]) -> Optional[str]:
    """The model to suggest: the default of create_batch_file.py when the key can use it, else
    the first chat model listed."""
    from ..cost.pricing import DEFAULT_MODEL

    chat = [m for m in ids if "embed" not in m.lower()]
    if DEFAULT_MODEL in chat:
        return DEFAULT_MODEL
    return chat[0] if chat else None


def _free_name(stem: str = "requests") -> str:
    """An output name for a first build that overwrites nothing: ``requests.jsonl``, else
    ``requests-2.jsonl``, ... (with no job directory of that name either)."""
    name, n = stem, 1
    while os.path.exists(name + ".jsonl") or os.path.exists(name + ".dwjob"):
        n += 1
        name = f"{stem}-{n}"
    return name + ".jsonl"


def _first_steps(ids: List[str]) -> Tuple[Optional[str], Dict[str, Any]]:
    """(next, what was found): the first command for the user's own input when one obvious input
    file is here (its build, with the options SKILL.md uses; a batch file's dry run), the example
    prompts' build when the folder holds no input at all, else no command (several inputs, or a
    CSV or JSONL whose prompt needs a --template: named on stderr). Runs as printed: it names
    only files that exist and an output that does not exist yet."""
    from ..build.firstinput import candidates, first_build, reasoning_args
    from ..core.commands import command, display_path
    from ..cost.pricing import DEFAULT_MODEL

    model = _default_chat_model(ids)
    model_args = ["-m", model] if model and model != DEFAULT_MODEL else []
    found = candidates()
    stem = os.path.splitext(found[0])[0] if len(found) == 1 else "requests"
    first = first_build(model, model_args, _free_name(stem))
    info = first["input"]
    if first["build"]:
        return command("create_batch_file.py", *first["build"]), first
    if info and info["kind"] == "batch":
        return command("submit.py", display_path(info["path"]), "--dry-run"), first
    if not found:  # nothing of the user's here: a first build of example prompts
        return command(
            "create_batch_file.py", _free_name(), *model_args, *reasoning_args(model or DEFAULT_MODEL)
        ), first
    if info:
        names = info.get("columns") or info.get("fields") or []
        texty = [n for n in names if n.lower() not in ("id", "key", "index", "row", "custom_id")] or ["text"]
        narrate(
            f"next: build from {info['path']} with a template naming its {'columns' if 'columns' in info else 'fields'} "
            f"({', '.join(names[:8])}), e.g. create_batch_file.py {_free_name(stem)} "
            f'--{"csv" if info["kind"] == "csv" else "jsonl"} {info["path"]} --template "...{{{texty[0]}}}..." '
            "(see SKILL.md step 1)"
        )
    else:
        narrate(f"next: several inputs are here ({', '.join(found[:8])}); build from the one to run (SKILL.md step 1)")
    return None, first


def _version(package: str) -> str:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:  # not installed as a distribution (vendored, zipapp)
        return ""


@dataclass
class SetupOptions:
    """check_setup.py takes no options of its own: only the connection (``--sandbox``) and the view."""


def check_setup(conn: Connection) -> Outcome:
    """check_setup.py: each check on stderr; the report when everything is ready."""
    checks = Checks()
    py = sys.version_info
    if not checks.add(
        "python",
        py >= MIN_PYTHON,
        f"Python {py.major}.{py.minor}.{py.micro}",
        "Install Python 3.9 or newer (e.g. from python.org or your package manager).",
    ):
        raise ConfigError("Python is too old", hint="Install Python 3.9 or newer.")
    missing = []
    for module, package in REQUIRED_PACKAGES:
        try:
            importlib.import_module(module)
            checks.add(f"package {package}", True, f"{package} {_version(package)}".strip())
        except ImportError as exc:
            missing.append((package, exc))
            checks.add(f"package {package}", False, f"not importable ({exc})", install_hint("check_setup.py"))
    if missing:
        raise missing_packages_error(missing, "check_setup.py")
    return _check_api(conn, checks)


def _check_api(conn: Connection, checks: Checks) -> Outcome:
    from ..core import config
    from ..core.http import Client

    if conn.sandbox:
        cfg = sandbox_config(conn)
    else:
        try:
            cfg = config.load_config(conn.base_url, conn.allow_insecure_http, require_key=False)
        except ConfigError as exc:
            name = (
                "API key"
                if exc.message.startswith(config.KEY_VAR)
                else ".env file"
                if exc.message.startswith("cannot read the .env file")
                else "base URL"
            )
            checks.add(name, False, exc.message, exc.hint)
            raise
    if not checks.add(
        "API key",
        bool(cfg.api_key),
        (cfg.key_source if conn.sandbox else f"DOUBLEWORD_API_KEY set (from {cfg.key_source})")
        if cfg.api_key
        else "DOUBLEWORD_API_KEY is not set",
        config.missing_key_hint(),
    ):
        raise ConfigError("DOUBLEWORD_API_KEY is not set", hint=config.missing_key_hint())
    secure = cfg.base_url.startswith("https://")
    checks.add(
        "base URL",
        True,
        f"{cfg.base_url} ({'https' if secure else 'plain http to loopback'}; from {cfg.base_url_source})",
    )

    client = Client(cfg, max_retries=1)
    try:
        models = client.list_models()
    except DWError as exc:
        status = getattr(exc, "status", None)
        if status in (401, 403):
            what = "the key was refused (401)" if status == 401 else "the key may not use this API (403)"
            checks.add("API access", False, what, exc.hint)
            raise ConfigError(f"{what}: {exc.message}", hint=exc.hint) from None
        checks.add("API reachable", False, exc.message, f"Check the network and the base URL ({cfg.base_url}).")
        raise DWError(
            exc.message,
            hint=exc.hint or "Check the network and the base URL.",
            exit_code=EXIT_CONFIG if exc.exit_code == EXIT_CONFIG else EXIT_API,
        ) from None
    kind = client.server_kind()
    checks.add(
        "API access", True, f"GET /models answered; the key was accepted by {SERVER_WORDS[kind]} at {cfg.base_url}"
    )
    ids = [str(m["id"]) for m in models if m.get("id")]  # as list_models.py shows them
    checks.add(
        "models",
        bool(ids),
        f"{len(ids)} model(s): {', '.join(ids[:8])}{' …' if len(ids) > 8 else ''}",
        "The key can use no model; check its groups in the Doubleword console.",
    )
    next_command, first = _first_steps(ids)
    return Outcome(
        {
            "ready": True,
            "checks": checks.items,
            "base_url": cfg.base_url,
            "server": kind,
            "key_source": cfg.key_source,
            "sandbox": conn.sandbox,
            "models": ids,
            "input": first["input"],
            "next": next_command,
        }
    )
