"""Writing the user's files: one check before anything is written, one atomic writer.

- ``refuse_overwrite``: every script that writes a file the user names checks it first: never
  over one of its inputs, never two outputs on one file, never onto a directory (exit 2,
  naming both paths).
- ``atomic_output``: a file is streamed into a temp file beside it, fsynced and renamed over
  it, so a reader sees the old file or the new one, never a part. A file written for the user
  (results, errors, reports: the default ``mode`` None) gets the mode the user's umask gives
  a new file (0644 under 022, 0600 under 077); the job's own files ask for 0600. An OSError while writing
  becomes a ``FileSystemError`` that names the file (the operating system's error for a
  failed ``write`` names none) and its cause in words (``errors.file_error``). When the write
  fails, the temp file is removed, and a failure of that cleanup never replaces the error
  that stopped the write.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from typing import IO, Any, Dict, Iterator, NoReturn, Optional

from . import compat
from .errors import UsageError, write_error

fsync_dir = compat.fsync_dir


def same_file(a: Optional[str], b: Optional[str]) -> bool:
    """True when both paths name the same file (existing or not)."""
    if not a or not b:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def refuse_overwrite(
    targets: Dict[str, Optional[str]],
    protected: Dict[str, Optional[str]],
    folders: Optional[Dict[str, Optional[str]]] = None,
    results: bool = False,
) -> None:
    """Refuse to write any target (name → path) over a protected input (name → path), inside a
    protected folder (name → path: a job directory, whose files are the job's own), over a
    file holding batch requests when the targets are ``results`` or reports (such a file is an
    input, whoever's it is), two targets on the same file, a
    target that is a directory, or one below a file (a user's data must never be replaced, and
    a write that cannot succeed should fail before the work, not after)."""
    names = [(n, p) for n, p in targets.items() if p]
    for i, (tname, tpath) in enumerate(names):
        for pname, ppath in protected.items():
            if same_file(tpath, ppath):
                raise UsageError(
                    f"{tname} {tpath} is the {pname} {ppath}; refusing to overwrite it",
                    hint=f"Choose another path for {tname}.",
                )
        for fname, fpath in (folders or {}).items():
            if fpath and _below(tpath, fpath):
                raise UsageError(
                    f"{tname} {tpath} is inside the {fname} {fpath}, which holds the job's own files",
                    hint=f"Choose a path for {tname} outside {fpath}.",
                )
        if results and _holds_requests(tpath):
            raise UsageError(
                f"{tname} {tpath} holds batch requests (its first line is a request, not a result); "
                "refusing to overwrite what may be an input",
                hint=f"Choose another path for {tname}, or move that file away first.",
            )
        blocker = _file_above(tpath)
        if blocker:
            raise UsageError(
                f"{tname} {tpath} cannot be written: {blocker} is a file, not a directory",
                hint=f"Choose another path for {tname}.",
            )
        for oname, opath in names[i + 1 :]:
            if same_file(tpath, opath):
                raise UsageError(
                    f"{tname} and {oname} are the same file ({tpath}, {opath})", hint="Give them different paths."
                )
        if os.path.isdir(tpath):
            raise UsageError(
                f"{tname} {tpath} is a directory, not a file",
                hint=f"Give {tname} the path of a file (inside that directory if you like).",
            )


def _below(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # another drive
        return False


def _holds_requests(path: str) -> bool:
    """Whether an existing file's first line is a batch request (custom_id, method, url, body):
    results and reports never are."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(1 << 20)
            while first and not first.strip():
                first = fh.readline(1 << 20)
    except OSError:
        return False
    try:
        obj = json.loads(first.lstrip(b"\xef\xbb\xbf"))
    except ValueError:
        return False
    return isinstance(obj, dict) and {"custom_id", "method", "url", "body"} <= obj.keys()


def _file_above(path: str) -> Optional[str]:
    """The nearest existing ancestor of ``path`` when it is not a directory (so nothing can be
    written below it), else None."""
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        up = os.path.dirname(parent)
        if up == parent:
            return None
        parent = up
    return parent if parent and not os.path.isdir(parent) else None


def discard(tmp: Optional[str], *handles: Any) -> None:
    """After a failed write: close the handles and remove the temp file, quietly (an error here
    must not replace the one being handled)."""
    for fh in handles:
        if fh is None:
            continue
        with contextlib.suppress(OSError, ValueError):
            if isinstance(fh, int):
                os.close(fh)
            else:
                fh.close()
    if tmp:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def reraise_named(exc: BaseException, path: str, **kw: Any) -> NoReturn:
    """Raise ``exc`` again, as a FileSystemError naming ``path`` when it is an OSError (see
    ``errors.write_error``). Call it in the ``except`` block that caught ``exc``."""
    err = write_error(exc, path, **kw)
    if err is exc:
        raise exc
    raise err from exc


class NamedWriter:
    """A file being written for the user: an OSError from ``write`` or ``flush`` names the file.
    Everything else is the underlying file object's."""

    def __init__(self, fh: IO[Any], path: str, what: Optional[str] = None):
        self._fh = fh
        self._path = path
        self._what = what

    def write(self, data: Any) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            reraise_named(exc, self._path, what=self._what)

    def flush(self) -> None:
        try:
            self._fh.flush()
        except OSError as exc:
            reraise_named(exc, self._path, what=self._what)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


@contextlib.contextmanager
def atomic_output(
    path: str, mode: Optional[int] = None, text: bool = False, make_dirs: bool = True, what: Optional[str] = None
) -> Iterator[IO[Any]]:
    """Stream a file into a temp file beside ``path``; fsync and rename over it on success.
    On any error the temp file is removed and ``path`` is left as it was. ``mode``: None for
    a file of the user's (the mode the umask gives a new file, ``compat.new_file_mode``), or a
    private one (0o600). ``make_dirs`` creates the directory first; ``what`` names the file in
    error messages."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    tmp: Optional[str] = None
    fd: Optional[int] = None
    fh: Optional[IO[Any]] = None
    try:
        if make_dirs:
            os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
        compat.set_mode(fd, compat.new_file_mode() if mode is None else mode, path=tmp)
        raw = os.fdopen(fd, "wb")
        fd = None
        fh = io.TextIOWrapper(raw, encoding="utf-8", newline="") if text else raw
    except BaseException as exc:
        discard(tmp, fh, fd)
        reraise_named(exc, path, what=what)
    try:
        yield NamedWriter(fh, path, what)  # type: ignore[misc]
    except BaseException:  # the caller's error (a write error is already named): clean up, keep it
        discard(tmp, fh)
        raise
    try:
        fh.flush()
        os.fsync(raw.fileno())
        fh.close()
        compat.replace(tmp, path)
    except BaseException as exc:
        discard(tmp, fh)
        reraise_named(exc, path, what=what)
    compat.fsync_dir(directory)


__all__ = ["same_file", "refuse_overwrite", "discard", "reraise_named", "NamedWriter", "atomic_output"]


def atomic_write_bytes(path: str, data: bytes, mode: Optional[int] = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically (see ``atomic_output``; ``mode`` None: a file
    of the user's); the directory must exist. A failure is a FileSystemError naming ``path``."""
    with atomic_output(path, mode, make_dirs=False) as fh:
        fh.write(data)


def atomic_write_json(path: str, doc: Any, mode: Optional[int] = 0o600) -> None:
    atomic_write_bytes(path, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"), mode)


def make_private_dir(path: str) -> None:
    """A directory only its owner can enter (0700 where modes exist), made if missing."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    compat.set_mode(path, 0o700)
