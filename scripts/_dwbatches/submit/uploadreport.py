"""What an upload says: its progress (as events), and a server's refusal of a chunk explained in
the terms of the user's file (the flag to change, or the physical line the server meant)."""

from __future__ import annotations

import os
import re
from typing import Optional

from ..core.errors import APIStatusError, DWError
from ..core.events import Transfer
from ..jobs.jobrecord import Chunk, Round


def mb(n: float) -> str:
    if n < 1e6:
        return f"{n / 1e3:.1f} kB"
    return f"{n / 1e6:.1f} MB"


class Progress(Transfer):
    """Upload progress, as events: said on a terminal as one line rewritten in place (percent,
    rate, ETA); else a line a second, none for a quick upload (``progress.Meter``)."""

    def __init__(self, label: str, interval: float = 1.0):
        super().__init__(
            label,
            mb,
            plain_every=interval,
            plain=lambda pct, sent, total, rate: f"{label}: {pct:5.1f}% ({mb(sent)} of {mb(total)}, {mb(rate)}/s)",
        )


def explain_upload_error(label: str, rnd: Round, ch: Chunk, exc: APIStatusError) -> DWError:
    """A server's refusal of an upload, in the terms of the user's file: a smaller --max-bytes
    or --max-requests to run again with, or the physical line of the round's input."""
    msg = exc.body or exc.message
    if exc.status == 413:
        return DWError(
            f"the server refused {label} ({mb(ch.bytes)}) as too large: {msg}",
            hint=f"Run the same command again with a smaller --max-bytes, e.g. --max-bytes "
            f"{max(1, ch.bytes // 2)}; the chunks not yet uploaded are split again.",
            exit_code=exc.exit_code,
        )
    m = re.search(r"exceeds the maximum of (\d+)", msg or "")
    if exc.status == 400 and m and "requests" in msg:
        return DWError(
            f"the server refused {label} ({ch.requests} requests): {msg}",
            hint=f"Run the same command again with --max-requests {m.group(1)}; the chunks not yet "
            "uploaded are split again.",
            exit_code=exc.exit_code,
        )
    m = re.search(r"\b[Ll]ine (\d+)\b", msg or "")
    if m:
        line = physical_line(rnd.input_path, ch.start_byte, ch.end_byte, ch.start_line, int(m.group(1)))
        if line is not None:
            return DWError(
                f"the server refused {label}: {msg} (that is line {line} of {os.path.basename(rnd.input_path)})",
                hint=exc.hint or "Fix that line and run the command again.",
                exit_code=exc.exit_code,
            )
    return exc


def physical_line(path: str, start_byte: int, end_byte: int, start_line: int, nth: int) -> Optional[int]:
    """The physical line number of the ``nth`` non-blank line (1-based) of a chunk, which is how
    the server numbers lines in its error messages."""
    if nth < 1:
        return None
    with open(path, "rb") as fh:
        fh.seek(start_byte)
        offset, n, seen = start_byte, start_line - 1, 0
        for raw in fh:
            if offset >= end_byte:
                return None
            n += 1
            offset += len(raw)
            if raw.strip():
                seen += 1
                if seen == nth:
                    return n
    return None
