"""Progress people can read: uploads, downloads and waits.

On a terminal (stderr is one, without --json or --quiet: ``output.live_terminal``) each
transfer and each wait is a part of one line rewritten in place: percent, how much of how
much, rate and ETA. Elsewhere (a pipe, a log, an agent) they are plain lines: a transfer's at
most every ``plain_every`` seconds and none for a quick one; a wait's only when the status or
the counts changed since the last check (never "in_progress: 0/60000 done" again and again).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Optional, Tuple

from . import output

if TYPE_CHECKING:
    from .events import Transfer

LIVE_EVERY = 0.1  # seconds between two redraws of a transfer on a terminal


def duration(seconds: float) -> str:
    """``45s``, ``4m40s``, ``2h05m``: an ETA or a wait, in every progress line and view."""
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


class Meter:
    """The progress of one transfer (``events.Transfer``: its label, how to write an amount,
    the plain line and how often), drawn as it goes: called with (done, total). Without a plain
    line of its own, the plain line says the same as the live line without the ETA."""

    def __init__(self, transfer: Transfer):
        self.label = transfer.label
        self.unit = transfer.unit
        self.plain_every = transfer.plain_every
        self.plain = transfer.plain
        self.t0 = time.monotonic()
        self.last_plain = self.t0
        self.last_live = 0.0
        self.first: Optional[float] = None  # done at the first call (a resumed download starts above 0)

    def _rate(self, done: float, now: float) -> float:
        return (done - (self.first or 0)) / max(now - self.t0, 1e-6)

    def __call__(self, done: float, total: float) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = done
        finished = bool(total) and done >= total
        if output.live_terminal():
            if finished:
                self.close()
                return
            if now - self.last_live < LIVE_EVERY:
                return
            self.last_live = now
            output.live(self.live_text(done, total, now), self)
            return
        if not finished and now - self.last_plain < self.plain_every:
            return
        if finished and now - self.t0 < self.plain_every:
            return  # a quick transfer needs no progress lines; the caller says when it is done
        self.last_plain = now
        pct = 100.0 * done / total if total else 100.0
        rate = self._rate(done, now)
        if self.plain is not None:
            output.narrate(self.plain(pct, done, total, rate))
        else:
            output.narrate(f"{self.label}: {pct:.0f}% ({self.unit(done)} of {self.unit(total)}, {self.unit(rate)}/s)")

    def live_text(self, done: float, total: float, now: float) -> str:
        rate = self._rate(done, now)
        text = f"{self.label}: "
        if total:
            text += f"{100.0 * done / total:.0f}% ({self.unit(done)} of {self.unit(total)})"
        else:
            text += self.unit(done)
        if now - self.t0 >= 0.5 and rate > 0:
            text += f", {self.unit(rate)}/s"
            if total and done < total:
                text += f", ETA {duration((total - done) / rate)}"
        return text

    def close(self) -> None:
        """The transfer ended (or stopped): its part of the line goes."""
        output.live_drop(self)


def lines(n: float) -> str:
    return f"{int(n):,} lines"


_WAIT = "wait"  # the wait's part of the progress line


def wait_line(text: str, key: Tuple[Any, ...], previous: Optional[Tuple[Any, ...]], percent: Optional[float]) -> None:
    """The line of one status check (``text``, e.g. "in_progress: 412/1000 done, 2.1 req/s,
    ETA 4m40s"): on a terminal the wait's part of the progress line, with the percent; else a
    plain line when ``key`` (what the check found: status and counts) differs from
    ``previous`` (the last check's; None for the first check)."""
    if output.live_terminal():
        if percent is not None:
            head, sep, rest = text.partition(" done")
            text = f"{head} done ({percent:.0f}%){rest}" if sep else text
        output.live(text, _WAIT)
    elif key != previous:
        output.narrate(text)


__all__ = ["Meter", "duration", "lines", "wait_line"]
