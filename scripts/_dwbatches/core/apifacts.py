"""Facts about the Doubleword Batch API that the client and the sandbox server both rely on.

One copy: the client's checks (``validate.py``, ``submitter.py``, ``pricing.py``) and the
sandbox (``scripts/_dwsandbox``) import these, so that what the client checks before an upload
is what the sandbox enforces on it. Sources: the server's code defaults and the documented
production limits. Standard library only (the sandbox imports it).
"""

from __future__ import annotations

import uuid
from typing import Any, Dict

# The request urls a batch line may name, and the endpoints a batch may be created for.
ALLOWED_URLS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages")

# completion_window values, and how long a batch has before it expires.
COMPLETION_WINDOWS = ("24h", "1h")
WINDOW_SECONDS: Dict[str, int] = {"24h": 86400, "1h": 3600}

# Batch metadata keys the server sets itself: any a client sends is dropped silently.
RESERVED_METADATA_KEYS = frozenset(
    {"created_by_email", "context_name", "context_type", "request_source", "created_by", "dw_user_agent"}
)

# Limits of an uploaded file (documented production limits) and of one request line.
MAX_FILE_BYTES = 200_000_000
MAX_REQUESTS_PER_FILE = 50_000
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_CUSTOM_ID_BYTES = 64


def is_uuid(value: Any) -> bool:
    """File and batch ids are bare UUIDs (lower case, with hyphens): an id of any other form
    is not the server's, and never becomes a path or a URL."""
    try:
        return str(uuid.UUID(value)) == value.lower() and value == value.strip()
    except (ValueError, AttributeError, TypeError):
        return False


__all__ = [
    "ALLOWED_URLS",
    "COMPLETION_WINDOWS",
    "MAX_BODY_BYTES",
    "MAX_CUSTOM_ID_BYTES",
    "MAX_FILE_BYTES",
    "MAX_REQUESTS_PER_FILE",
    "RESERVED_METADATA_KEYS",
    "WINDOW_SECONDS",
    "is_uuid",
]
