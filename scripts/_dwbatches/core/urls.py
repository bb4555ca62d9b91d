"""Which hosts are this machine's own (loopback): one rule for the client and the sandbox.

A loopback base URL is reached without a proxy and may use plain http (the key never leaves
the machine); any other host needs https unless --allow-insecure-http. The sandbox warns when
it is bound to anything else, and answers only requests whose Host is loopback (or the
address it is bound to). Standard library only.

Loopback means a literal address in 127.0.0.0/8, ``::1``, or the exact name ``localhost``.
Other names are never taken for loopback, whatever they end in: ``*.localhost`` and the like
are resolved through DNS, and may resolve to any machine.

``redact_userinfo``: a URL with the user name and password (``user:pass@``) replaced by
``***@``, for messages about a URL that must not echo them.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

# the user information of a URL: what comes before an @ ahead of the first /, ? or # after
# the scheme's //, or ahead of them when there is no //
_USERINFO = re.compile(r"^((?:[^/?#]*?//)?)[^/?#]*@")


def is_loopback(host: str) -> bool:
    """The exact name ``localhost``, an address in 127.0.0.0/8, or ``::1`` (brackets allowed)."""
    host = (host or "").strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    # an IPv4-mapped IPv6 address (::ffff:127.0.0.1) counts as loopback on some Pythons and not
    # on others: it is not among the three forms above, so it is not loopback here
    return addr.is_loopback and not (addr.version == 6 and addr.ipv4_mapped is not None)


def is_loopback_url(url: str) -> bool:
    try:
        return is_loopback(urlsplit(url).hostname or "")
    except ValueError:
        return False


def has_userinfo(url: str) -> bool:
    """Whether ``url`` names a user or a password before its host (``http://user:pass@host``)."""
    return bool(_USERINFO.search(url or ""))


def redact_userinfo(url: str) -> str:
    """``url`` with its user name and password, if any, replaced by ``***``."""
    return _USERINFO.sub(r"\1***@", url or "")


__all__ = ["has_userinfo", "is_loopback", "is_loopback_url", "redact_userinfo"]
