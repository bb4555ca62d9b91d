"""The package's one clock: every wait of the client goes through ``sleep`` here.

Backoffs between retries, ``Retry-After`` waits, the pauses between status checks, the
pauses before a broken download resumes and the settle delays before an interrupted upload
or create is looked up again all call ``sleep``; messages name the nominal delay. The wait
for a job or results lock held by another command is scaled the same way (``scale``).

``DOUBLEWORD_BATCHES_TIME_SCALE`` (for the test suite only; default 1) multiplies every such
wait by a factor between 0 and 1, so that tests of backoffs and polling take the same steps
in a fraction of the time. Deadlines (``--timeout``) stay in real time.
"""

from __future__ import annotations

import os
import time

SCALE_VAR = "DOUBLEWORD_BATCHES_TIME_SCALE"

monotonic = time.monotonic
now = time.time


def scale() -> float:
    """The factor applied to waits: 1 unless the test-only variable sets one in [0, 1]."""
    raw = os.environ.get(SCALE_VAR)
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        return 1.0
    return value if 0.0 <= value <= 1.0 else 1.0


def sleep(seconds: float) -> None:
    """Wait ``seconds`` (scaled, see the module docstring)."""
    if seconds > 0:
        time.sleep(seconds * scale())
