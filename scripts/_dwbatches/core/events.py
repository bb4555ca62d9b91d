"""What engines say, as events: the layers below ``workflow/`` never print.

An engine (a download, the merge, a submitter, the HTTP client's retries) reports what it does
as typed events, and goes on; the workflow layer decides what is said and where. It installs
a sink for the duration of a command (``listening``): ``workflow/narration.py`` says each event
on stderr as the commands always have, and puts the warnings that belong in a report in its
``warnings``. A test drives an engine inside ``capture()`` and checks the events it gave,
without reading stderr.

Kinds:
- ``STEP``: what is being done or was found, a line for people ("batch b1: +3 results").
- ``WARNING``: something to know; said as ``warning: <message>``.
- ``LISTING``: lines that are the result itself (a file's invalid lines), said even with --quiet.
- ``PROGRESS``: a transfer going on (a ``Transfer``'s start, amounts and end), for the
  progress line of a terminal or the plain lines elsewhere.

``report``: the message is also one of the report's ``warnings`` (whatever its kind).
``data``: what a renderer needs beyond the words (which transfer, which chunk of how many...).

With no sink installed (an engine used by a test or a program, outside any command) events
are dropped: nobody is listening, so nothing is said and nothing is kept.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

STEP = "step"
WARNING = "warning"
LISTING = "listing"
PROGRESS = "progress"
KINDS = (STEP, WARNING, LISTING, PROGRESS)


@dataclass(frozen=True)
class Event:
    kind: str
    message: str
    report: bool = False
    data: Dict[str, Any] = field(default_factory=dict)

    @property
    def line(self) -> str:
        """The event as a line for people (the words every command has always said)."""
        return f"warning: {self.message}" if self.kind == WARNING else self.message


Sink = Callable[[Event], None]

# The sinks installed, the innermost last; each (sink, passes): a sink that passes lets the
# event go on to the sinks outside it. One list for the process: events come from worker
# threads too (parallel uploads), and belong to the one command the process runs.
_sinks: List[Tuple[Sink, bool]] = []
_lock = threading.RLock()


def emit(event: Event) -> None:
    """Give ``event`` to the installed sinks, the innermost first (dropped when there is none)."""
    with _lock:
        sinks = list(_sinks)
    for sink, passes in reversed(sinks):
        sink(event)
        if not passes:
            return


def step(message: str, report: bool = False, **data: Any) -> None:
    emit(Event(STEP, message, report, data))


def warning(message: str, report: bool = False, **data: Any) -> None:
    emit(Event(WARNING, message, report, data))


def listing(lines: List[str], **data: Any) -> None:
    for text in lines:
        emit(Event(LISTING, text, False, data))


@contextlib.contextmanager
def listening(sink: Sink, passes: bool = False) -> Iterator[Sink]:
    """``sink`` gets the events emitted while the block runs (in any thread); with ``passes``,
    the sinks installed before it get them too."""
    entry = (sink, passes)
    with _lock:
        _sinks.append(entry)
    try:
        yield sink
    finally:
        with _lock:
            for i in range(len(_sinks) - 1, -1, -1):
                if _sinks[i] is entry:
                    del _sinks[i]
                    break


class Heard(List[Event]):
    """The events heard by ``capture`` or ``overheard``, in order."""

    def of(self, kind: str) -> List[str]:
        return [e.message for e in self if e.kind == kind]

    def lines(self) -> List[str]:
        """The lines the events say (progress says none)."""
        return [e.line for e in self if e.kind != PROGRESS]

    def report_warnings(self) -> List[str]:
        return [e.message for e in self if e.report]


@contextlib.contextmanager
def capture() -> Iterator[Heard]:
    """The events of the block, kept and not passed on (nothing is said)."""
    heard = Heard()
    lock = threading.Lock()

    def keep(event: Event) -> None:
        with lock:
            heard.append(event)

    with listening(keep):
        yield heard


@contextlib.contextmanager
def overheard() -> Iterator[Heard]:
    """The events of the block, kept and passed on: an engine that records what it said (a
    merge, given again by a fetch with nothing new) keeps them so."""
    heard = Heard()
    lock = threading.Lock()

    def keep(event: Event) -> None:
        with lock:
            heard.append(event)

    with listening(keep, passes=True):
        yield heard


class Transfer:
    """The progress of one transfer, as PROGRESS events: created as it starts, called with
    (done, total) as it goes, ``close()`` when it ends or stops. ``unit`` writes an amount
    (bytes, lines); ``plain`` the plain line from (percent, done, total, rate); ``plain_every``
    the seconds between plain lines (see ``progress.Meter``, which renders them)."""

    def __init__(
        self,
        label: str,
        unit: Callable[[float], str],
        plain_every: float = 1.0,
        plain: Optional[Callable[[float, float, float, float], str]] = None,
    ):
        self.label = label
        self.unit = unit
        self.plain_every = plain_every
        self.plain = plain
        emit(Event(PROGRESS, label, False, {"transfer": self, "phase": "start"}))

    def __call__(self, done: float, total: float) -> None:
        emit(Event(PROGRESS, self.label, False, {"transfer": self, "phase": "update", "done": done, "total": total}))

    def close(self) -> None:
        emit(Event(PROGRESS, self.label, False, {"transfer": self, "phase": "end"}))


__all__ = [
    "KINDS",
    "LISTING",
    "PROGRESS",
    "STEP",
    "WARNING",
    "Event",
    "Heard",
    "Transfer",
    "capture",
    "emit",
    "listening",
    "listing",
    "overheard",
    "step",
    "warning",
]
