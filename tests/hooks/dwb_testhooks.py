"""Test hooks, installed by the tests into the scripts they run; nothing of this ships in the
product. ``tests/hooks`` goes on PYTHONPATH (tests/conftest.py), so ``sitecustomize`` installs
the hooks in every Python the tests start, before a script imports anything; the test process
installs them on itself the same way (``install()``).

- ``DOUBLEWORD_BATCHES_TIME_SCALE`` (a factor between 0 and 1): every wait of the client's one
  clock (``_dwbatches.core.clock``: backoffs, Retry-After waits, poll pauses, settle delays, lock
  waits) is multiplied by it, so tests of backoffs and polling take the same steps in a fraction
  of the time. Deadlines (``--timeout``) stay in real time. Read at each wait.
- ``DOUBLEWORD_BATCHES_CRASH_AT=after_upload|after_create[:N]``: the submitter ends the process
  with ``os._exit(137)`` (as ``kill -9`` would) right after the upload / create of chunk N (any
  chunk without ``:N``) returned, before its result is recorded; ``:raise`` raises an unexpected
  error there instead (for the tests of its report).
- ``DOUBLEWORD_BATCHES_FILE_SLOTS=N``: id tables of more than N slots live in a file
  (``_dwbatches.core.idtable.FILE_SLOTS``), so that small jobs take the path of huge ones.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable, Dict

SCALE_VAR = "DOUBLEWORD_BATCHES_TIME_SCALE"
CRASH_VAR = "DOUBLEWORD_BATCHES_CRASH_AT"
SLOTS_VAR = "DOUBLEWORD_BATCHES_FILE_SLOTS"


def time_scale() -> float:
    """The factor the tests set for waits: 1 unless the variable holds one in [0, 1]."""
    raw = os.environ.get(SCALE_VAR)
    try:
        value = float(raw) if raw else 1.0
    except ValueError:
        return 1.0
    return value if 0.0 <= value <= 1.0 else 1.0


def _patch_clock(module: Any) -> None:
    module.scale = time_scale


def crash_point(name: str, index: int) -> None:
    """Die like ``kill -9`` (or raise) at a named point, as ``CRASH_VAR`` asks."""
    spec = os.environ.get(CRASH_VAR)
    if not spec:
        return
    point, _, which = spec.partition(":")
    if point == name and which.strip() == "raise":
        raise RuntimeError(f"test hook {CRASH_VAR}={spec}")
    if point == name and (not which or which.strip() == str(index)):
        sys.stderr.flush()
        os._exit(137)


def _after(point: str, method: Callable[..., Any], chunk_arg: int) -> Callable[..., Any]:
    """``method``, followed by the crash point of the chunk it was called for."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = method(self, *args, **kwargs)
        crash_point(point, args[chunk_arg].index)
        return result

    return wrapper


def _patch_submitter(module: Any) -> None:
    cls = module.Submitter
    # The upload and the create of a chunk, each either sent now or found after an ambiguous
    # reply: the crash comes as the one that ran returns, before the chunk records it.
    cls._upload = _after("after_upload", cls._upload, 1)
    cls._resolve_upload = _after("after_upload", cls._resolve_upload, 1)
    cls._create = _after("after_create", cls._create, 0)
    cls._resolve_create = _after("after_create", cls._resolve_create, 1)


def _patch_idtable(module: Any) -> None:
    raw = os.environ.get(SLOTS_VAR)
    if raw and raw.isdigit():
        module.FILE_SLOTS = int(raw)


PATCHES: Dict[str, Callable[[Any], None]] = {
    "_dwbatches.core.clock": _patch_clock,
    "_dwbatches.core.idtable": _patch_idtable,
    "_dwbatches.submit.submitter": _patch_submitter,
}


class _PatchOnImport:
    """Finds nothing itself: wraps the loader of a patched module to patch it once loaded. (A
    meta path finder needs only ``find_spec``; not subclassing ``importlib.abc.MetaPathFinder``
    spares every Python the tests start the import of ``importlib.abc`` and what it pulls in.)"""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                load = spec.loader.exec_module

                def exec_module(module: Any, load: Callable[[Any], None] = load) -> None:
                    load(module)
                    PATCHES[fullname](module)

                spec.loader.exec_module = exec_module  # type: ignore[method-assign]
                return spec
        return None


def install() -> None:
    """Patch the hooked modules already imported, and every later import of them."""
    if any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        return
    for name, patch in PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])
    sys.meta_path.insert(0, _PatchOnImport())
