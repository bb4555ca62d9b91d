"""Configuration: API key and base URL from the environment, then ./.env.

The .env file is the first regular file (or named pipe) called ``.env`` in the working
directory or one of its parents, as python-dotenv finds it; a directory called ``.env`` (often
a virtual environment) is not one and is passed over. A byte-order mark (Windows Notepad,
PowerShell) is ignored; a .env that cannot be read or decoded is a configuration error.

Trust: a .env names the server the key is sent to, so one that another user could have
written (owned by another user, or writable by others: ``compat.untrusted_by``; not checked
on Windows) is ignored with a warning. A .env never sends the environment's key elsewhere:
a base URL from a .env while the key comes from the environment is refused (exit 3), unless
it is Doubleword's own API. A base URL with a user name or password in it is refused (it
would be echoed in reports and saved in job.json), without echoing them.
"""

from __future__ import annotations

import codecs
import io
import os
import stat
from dataclasses import dataclass
from typing import Dict, Optional, Tuple
from urllib.parse import urlsplit

from . import compat, events
from .errors import ConfigError
from .output import exit_missing_packages
from .urls import has_userinfo, is_loopback, redact_userinfo

try:
    from dotenv import dotenv_values
except ImportError as _exc:  # exit 3 with the install command rather than a traceback
    exit_missing_packages(_exc)

DEFAULT_BASE_URL = "https://api.doubleword.ai/v1"
KEY_VAR = "DOUBLEWORD_API_KEY"
URL_VAR = "DOUBLEWORD_BASE_URL"
# where a base URL came from (Config.base_url_source), as an error names it
URL_SOURCES = {"flag": "--base-url", "environment": URL_VAR, "job": "the job directory's job.json"}


def missing_key_hint() -> str:
    from .commands import command  # the command as it runs from the working directory

    return (
        "Set DOUBLEWORD_API_KEY in the environment (export DOUBLEWORD_API_KEY=sk-...) or put "
        "DOUBLEWORD_API_KEY=sk-... in a .env file in the directory you run the script from (or a folder "
        "above it). Create a key at https://app.doubleword.ai/api-keys. To rehearse without a key, add --sandbox "
        "to the command (the bundled sandbox), e.g. " + command("check_setup.py", "--sandbox")
    )


@dataclass
class Config:
    api_key: Optional[str]
    base_url: str
    key_source: Optional[str]  # "environment", ".env at <path>", or None
    base_url_source: str  # "flag", "environment", ".env at <path>", "job", "default"
    dotenv_path: Optional[str] = None

    def __repr__(self) -> str:  # never show the key
        return (
            f"Config(api_key={'<set>' if self.api_key else '<missing>'}, base_url={self.base_url!r}, "
            f"key_source={self.key_source!r})"
        )


DOTENV_HINT = (
    "Make the file readable by you (e.g. chmod 600 FILE) or move it away; the scripts also take "
    "DOUBLEWORD_API_KEY and DOUBLEWORD_BASE_URL from the environment."
)


def find_dotenv_file(start: Optional[str] = None) -> Optional[str]:
    """The path of the .env file in ``start`` (default: the working directory) or the nearest
    parent that has one, or None."""
    try:
        here = os.path.abspath(start or os.getcwd())
    except OSError:  # the working directory was deleted
        return None
    while True:
        candidate = os.path.join(here, ".env")
        try:
            mode = os.stat(candidate).st_mode
        except OSError:  # absent, a dangling link, or a directory we may not look into
            mode = 0
        if stat.S_ISREG(mode) or stat.S_ISFIFO(mode):
            return candidate
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def decode_dotenv(data: bytes, path: str) -> str:
    """The text of a .env file: UTF-8, with or without a byte-order mark, or UTF-16 with one."""
    try:
        if data.startswith(codecs.BOM_UTF8):
            text = data[len(codecs.BOM_UTF8) :].decode("utf-8")
        elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            text = data.decode("utf-16")
        else:
            text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"cannot read the .env file {path}: it is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
            f"offset {exc.start})",
            hint="Save the file as UTF-8 (in Notepad: Save as, Encoding: UTF-8).",
        ) from None
    if "\x00" in text:
        raise ConfigError(
            f"cannot read the .env file {path}: it contains NUL bytes (UTF-16 without a byte-order mark?)",
            hint="Save the file as UTF-8 (in Notepad: Save as, Encoding: UTF-8).",
        )
    return text


def _ignore_untrusted(path: str, why: str) -> Tuple[None, Dict[str, str]]:
    events.warning(
        f"ignoring the .env file {path}: {why}, so it may not be yours (a .env names the server "
        "your key is sent to). If it is yours, make it writable by you alone: "
        + compat.quote_args(["chmod", "go-w", path])
        + " (owned by you)"
    )
    return None, {}


def read_dotenv() -> Tuple[Optional[str], Dict[str, str]]:
    """Return (path, values) of the .env found from the current directory upwards; (None, {})
    when there is none, or when it cannot be trusted (a warning says why)."""
    path = find_dotenv_file()
    if not path:
        return None, {}
    try:
        why = compat.untrusted_by(os.stat(path))  # before opening: another user's pipe is never opened
    except OSError:
        why = None  # gone, or not ours to look at: opening it tells
    if why:
        return _ignore_untrusted(path, why)
    try:
        with open(path, "rb") as fh:
            why = compat.untrusted_by(os.fstat(fh.fileno()))  # the file opened, should it have been swapped
            if why:
                return _ignore_untrusted(path, why)
            data = fh.read()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the .env file {path}: {exc.strerror or exc}", hint=DOTENV_HINT.replace("FILE", path)
        ) from None
    text = decode_dotenv(data, path)
    values = {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}
    return path, values


def check_key(key: str, source: Optional[str]) -> None:
    """Refuse a key with a line break, a space, a control or a non-ASCII character inside.

    No real key has one, and sending it would fail inside the HTTP library with an error that
    quotes the whole header value, key included."""
    bad = next((c for c in key if not "!" <= c <= "~"), None)
    if bad is None:
        return
    if bad in "\r\n":
        what = "a line break"
    elif bad.isspace():
        what = "a space or tab"
    elif ord(bad) < 0x20 or ord(bad) == 0x7F:
        what = "a control character"
    else:
        what = "a non-ASCII character"
    raise ConfigError(
        f"DOUBLEWORD_API_KEY contains {what} (key from {source or 'the environment'}); an API key is a "
        "single word of printable ASCII characters",
        hint="Copy the key again from https://app.doubleword.ai/api-keys and put it on one line "
        "(DOUBLEWORD_API_KEY=sk-...), without quotes around escape sequences such as \\n.",
    )


def check_base_url(url: str, allow_insecure_http: bool = False, source: Optional[str] = None) -> str:
    """The base URL, without trailing slashes, or a ConfigError: user info in it (named by
    ``source``, where the URL came from, never echoed), not http(s), or plain http to a host
    that is not loopback (unless allowed)."""
    url = url.strip().rstrip("/")
    origin = f" (from {URL_SOURCES.get(source or '', source)})" if source else ""
    if has_userinfo(url):
        raise ConfigError(
            f"the base URL {redact_userinfo(url)}{origin} has a user name or password in it; refusing it "
            "(it would be shown in reports and saved in job directories)",
            hint="Remove the user:password@ part from the base URL; the scripts authenticate with "
            "DOUBLEWORD_API_KEY alone.",
        )
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - a port that is not a number raises ValueError here
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise ConfigError(
            f"base URL {url!r} is not an http(s) URL",
            hint="Use e.g. https://api.doubleword.ai/v1 (DOUBLEWORD_BASE_URL or --base-url).",
        )
    if parts.scheme == "http" and not is_loopback(host) and not allow_insecure_http:
        raise ConfigError(
            f"refusing plain-http base URL to non-loopback host {host!r}: the API key would travel unencrypted",
            hint="Use https://, or pass --allow-insecure-http if this network is trusted.",
        )
    if not parts.path.rstrip("/").endswith("/v1"):
        events.warning(
            f"the base URL {url} does not end in /v1; Doubleword's API lives under /v1 "
            "(e.g. https://api.doubleword.ai/v1)"
        )
    return url


def refuse_dotenv_url(url: str, path: str) -> None:
    """A .env names the server but the key comes from the environment: the environment's key
    would go to a server that file chose (a .env in a cloned repository or a shared folder)."""
    raise ConfigError(
        f"the base URL {url} comes from the .env file {path}, but DOUBLEWORD_API_KEY comes from the "
        "environment; refusing to send the environment's key to a server named by a .env file",
        hint=f"If that server is right, set DOUBLEWORD_BASE_URL in the environment too (or pass --base-url); "
        f"to use a key that .env holds, unset DOUBLEWORD_API_KEY; otherwise remove "
        f"DOUBLEWORD_BASE_URL from {path}.",
    )


def load_config(base_url: Optional[str] = None, allow_insecure_http: bool = False, require_key: bool = True) -> Config:
    """The key and base URL: the flag, then DOUBLEWORD_BASE_URL, then the nearest .env, then
    Doubleword's API (a job directory never chooses the server: ``job.check_server``). A key from the environment is never sent
    to a server that only a .env names (``refuse_dotenv_url``)."""
    try:
        dotenv_path, dotenv = read_dotenv()
    except ConfigError as exc:
        if not (os.environ.get(KEY_VAR) and (base_url or os.environ.get(URL_VAR))):
            raise
        # the environment gives all the .env could: go on, and say what was left out
        events.warning(f"{exc.message}; using DOUBLEWORD_API_KEY and the base URL from the environment")
        dotenv_path, dotenv = None, {}
    dotenv_label = f".env at {dotenv_path}" if dotenv_path else None

    key = os.environ.get(KEY_VAR) or None
    key_source = "environment" if key else None
    if not key and dotenv.get(KEY_VAR):
        key, key_source = dotenv[KEY_VAR], dotenv_label
    if key is not None:
        key = key.strip() or None
        key_source = key_source if key else None
    if key is not None:
        check_key(key, key_source)

    if base_url:
        url, url_source = base_url, "flag"
    elif os.environ.get(URL_VAR):
        url, url_source = os.environ[URL_VAR], "environment"
    elif dotenv.get(URL_VAR):
        url, url_source = dotenv[URL_VAR], dotenv_label or ".env"
        if key_source == "environment" and url.strip().rstrip("/") != DEFAULT_BASE_URL:
            refuse_dotenv_url(redact_userinfo(url.strip()), dotenv_path or ".env")
    else:
        url, url_source = DEFAULT_BASE_URL, "default"
    url = check_base_url(url, allow_insecure_http, None if url_source == "default" else url_source)

    if require_key and not key:
        raise ConfigError("DOUBLEWORD_API_KEY is not set", hint=missing_key_hint())
    return Config(api_key=key, base_url=url, key_source=key_source, base_url_source=url_source, dotenv_path=dotenv_path)
