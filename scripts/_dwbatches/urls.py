"""Which hosts are this machine's own (loopback): one rule for the client and the sandbox.

A loopback base URL is reached without a proxy and may use plain http (the key never leaves
the machine); any other host needs https unless --allow-insecure-http. The sandbox warns when
it is bound to anything else. Standard library only.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback(host: str) -> bool:
    """localhost, *.localhost, 127.0.0.0/8 and ::1 (brackets allowed)."""
    host = (host or "").strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    try:
        return is_loopback(urlsplit(url).hostname or "")
    except ValueError:
        return False


__all__ = ["is_loopback", "is_loopback_url"]
