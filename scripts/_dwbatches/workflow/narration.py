"""What a command says: the engines' events (``core.events``) said on stderr, and the warnings
that belong in a report put there.

``command()`` holds every run of a script (``output.run``, registered in ``workflow/__init__``):
each event is said as the commands always have (``output.narrate``; the lines of a result even
with --quiet; a transfer's progress by ``progress.Meter``, a live line on a terminal), with one
shaping of its own: a routine step of a submit (an upload or a create that went as planned) is
said for the first ROUTINE_SHOWN chunks of a round and its last, the ones between as one line.
``reporting()`` collects the warnings an engine gives for the report of the command.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Dict, Iterator, List, Set, Tuple

from ..core import events, output
from ..core.events import Event
from ..core.progress import Meter

ROUTINE_SHOWN = 4  # a round's routine steps said one by one: its first chunks (and its last)


class Narrator:
    """The sink of a command: says each event on stderr."""

    def __init__(self) -> None:
        self.meters: Dict[Any, Meter] = {}  # by transfer (held: no other transfer takes its place)
        self.elided: Set[Tuple[Any, ...]] = set()
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if event.kind == events.PROGRESS:
            self.progress(event)
        elif event.kind == events.LISTING:
            output.say_always(event.line)
        elif "routine" in event.data:
            self.routine(event)
        else:
            output.narrate(event.line)

    def progress(self, event: Event) -> None:
        transfer, phase = event.data["transfer"], event.data.get("phase")
        with self.lock:
            if phase == "start" or (phase == "update" and transfer not in self.meters):
                self.meters[transfer] = Meter(transfer.label, transfer.unit, transfer.plain_every, transfer.plain)
            meter = self.meters.pop(transfer, None) if phase == "end" else self.meters.get(transfer)
        if meter is None:
            return
        if phase == "update":
            meter(event.data["done"], event.data["total"])
        elif phase == "end":
            meter.close()

    def routine(self, event: Event) -> None:
        """A step that went as planned: said for the first chunks and the last of a round; the
        ones between are said once, as one line (a job of hundreds of chunks keeps its narration
        short; anything unusual is always said)."""
        d = event.data
        n, index, rnd = int(d["chunks"]), int(d["chunk"]), int(d.get("round") or 1)
        if n <= ROUTINE_SHOWN + 1 or index < ROUTINE_SHOWN or index == n:
            output.narrate(event.line)
            return
        key = (d.get("job"), d["routine"], rnd)
        with self.lock:
            if key in self.elided:
                return
            self.elided.add(key)
        between = f"chunks {ROUTINE_SHOWN}-{n - 1}" + (f" of round {rnd}" if rnd > 1 else "")
        output.narrate(f"{between}: {d['routine']} as planned (not listed one by one)")


@contextlib.contextmanager
def command() -> Iterator[Narrator]:
    """The narration of one command: every event of the block said on stderr."""
    narrator = Narrator()
    with events.listening(narrator):
        yield narrator


@contextlib.contextmanager
def reporting() -> Iterator[List[str]]:
    """The warnings for the report given while the block runs (they are said too)."""
    found: List[str] = []
    lock = threading.Lock()

    def keep(event: Event) -> None:
        if event.report:
            with lock:
                found.append(event.message)

    with events.listening(keep, passes=True):
        yield found


__all__ = ["ROUTINE_SHOWN", "Narrator", "command", "reporting"]
