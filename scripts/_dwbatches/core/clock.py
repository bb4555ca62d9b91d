"""The package's one clock: every wait of the client goes through ``sleep`` here.

Backoffs between retries, ``Retry-After`` waits, the pauses between status checks, the
pauses before a broken download resumes and the settle delays before an interrupted upload
or create is looked up again all call ``sleep``; messages name the nominal delay. The wait
for a job or results lock held by another command is scaled the same way (``scale``).

Because every wait passes here, the test suite can shorten them all at once (its hooks replace
``scale``); deadlines (``--timeout``) stay in real time.
"""

from __future__ import annotations

import time

monotonic = time.monotonic
now = time.time


def scale() -> float:
    """The factor applied to every wait: 1."""
    return 1.0


def sleep(seconds: float) -> None:
    """Wait ``seconds`` (scaled, see the module docstring)."""
    if seconds > 0:
        time.sleep(seconds * scale())
