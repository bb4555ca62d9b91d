"""Product constants of the sandbox, its Config (from the command line) and its log."""

from __future__ import annotations

import argparse
import os
import secrets
import sys

# The facts the client checks against, from the one module both import.
from _dwbatches.core.apifacts import (
    ALLOWED_URLS,
    COMPLETION_WINDOWS,
    MAX_BODY_BYTES,
    MAX_CUSTOM_ID_BYTES,
    MAX_FILE_BYTES,
    MAX_REQUESTS_PER_FILE,
    RESERVED_METADATA_KEYS,
    WINDOW_SECONDS,
)

DEFAULT_CHAT_MODELS = (
    "Qwen/Qwen3.5-35B-A3B-FP8",
    "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8",
    "Qwen/Qwen3.5-9B",
    "openai/gpt-oss-20b",
)
DEFAULT_EMBEDDING_MODELS = ("Qwen/Qwen3-Embedding-8B",)
BATCH_STATUS_FILTERS = ("in_progress", "completed", "failed", "cancelled", "expired")
RESULT_STATUS_FILTERS = ("completed", "failed", "pending", "in_progress")
PAGE_DEFAULT = 20
PAGE_MAX = 101
MULTIPART_OVERHEAD = 10 * 1024
INPUT_FILE_TTL = 30 * 86400
MAX_JSON_BODY = 16 * 1024 * 1024
SANDBOX_USER_ID = "5a9d1b7e-0c3f-4f6a-9a51-5b0d0a11ce00"
SANDBOX_USER_EMAIL = "sandbox-user@localhost"
MODEL_CREATED = 1735689600
UNSUPPORTED_WINDOW = "Unsupported completion_window. Allowed values: " + ", ".join(COMPLETION_WINDOWS)


# bind addresses that mean every address of the machine
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def log(msg: str) -> None:
    sys.stderr.write(f"[sandbox] {msg}\n")
    sys.stderr.flush()


def new_key() -> str:
    """The key a sandbox started without one accepts: random, printed in its ready line."""
    return "sk-sandbox-" + secrets.token_urlsafe(27)


def _model_list(value: str) -> tuple:
    return tuple(m.strip() for m in value.split(",") if m.strip())


class Config:
    def __init__(self, args: argparse.Namespace) -> None:
        self.host = args.host
        self.port = args.port
        self.data_dir = os.path.abspath(args.data_dir)
        # the key: --api-key, else DW_SANDBOX_API_KEY, else a random one (printed in the ready
        # line); none only with --no-auth. key_generated: whether it is the random one.
        given = args.api_key or os.environ.get("DW_SANDBOX_API_KEY") or None
        self.key_generated = not (given or args.no_auth)
        self.api_key = None if args.no_auth else (given or new_key())
        # the names a request's Host header may give besides loopback: the address bound (unless
        # it is every address) and --allow-host (DNS rebinding: a page of another site, its name
        # pointed at 127.0.0.1, reaches the sandbox with that name as its Host)
        self.allowed_hosts = {h.strip().strip("[]").lower() for h in (args.allow_host or []) if h.strip()}
        if args.host not in WILDCARD_HOSTS:
            self.allowed_hosts.add(args.host.strip("[]").lower())
        self.forbidden_key = args.forbidden_key or None
        self.chat_models = _model_list(args.models) if args.models else DEFAULT_CHAT_MODELS
        self.embedding_models = (
            _model_list(args.embedding_models) if args.embedding_models is not None else DEFAULT_EMBEDDING_MODELS
        )
        self.max_file_bytes = args.max_file_bytes
        self.max_requests_per_file = args.max_requests_per_file
        self.max_body_bytes = args.max_body_bytes
        self.reasoning_tokens = max(0, args.reasoning_tokens)
        self.validating_delay = max(0.0, args.validating_delay)
        self.finalizing_delay = max(0.0, args.finalizing_delay)
        self.concurrency = max(1, args.concurrency)
        self.latency = max(0.0, args.latency)
        self.latency_jitter = max(0.0, args.latency_jitter)
        self.upstream = args.upstream
        self.upstream_api_key = args.upstream_api_key or os.environ.get("DW_SANDBOX_UPSTREAM_API_KEY") or None
        self.upstream_model = args.upstream_model
        self.upstream_timeout = args.upstream_timeout
        self.upstream_retries = max(0, args.upstream_retries)
        self.upstream_allow_insecure_http = args.upstream_allow_insecure_http
        self.window_scale = args.window_scale
        self.verbose = args.verbose


__all__ = [
    "ALLOWED_URLS",
    "BATCH_STATUS_FILTERS",
    "COMPLETION_WINDOWS",
    "Config",
    "DEFAULT_CHAT_MODELS",
    "DEFAULT_EMBEDDING_MODELS",
    "INPUT_FILE_TTL",
    "MAX_BODY_BYTES",
    "MAX_CUSTOM_ID_BYTES",
    "MAX_FILE_BYTES",
    "MAX_JSON_BODY",
    "MAX_REQUESTS_PER_FILE",
    "MODEL_CREATED",
    "MULTIPART_OVERHEAD",
    "PAGE_DEFAULT",
    "PAGE_MAX",
    "RESERVED_METADATA_KEYS",
    "RESULT_STATUS_FILTERS",
    "SANDBOX_USER_EMAIL",
    "SANDBOX_USER_ID",
    "UNSUPPORTED_WINDOW",
    "WILDCARD_HOSTS",
    "WINDOW_SECONDS",
    "log",
    "new_key",
]
