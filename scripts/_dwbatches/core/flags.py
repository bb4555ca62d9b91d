"""Numeric flags, checked before anything is read, uploaded or sent: a value outside the flag's
range, NaN or infinity is blamed on the flag by name (exit 2), with an example that works.

(argparse turns ``nan`` and ``inf`` into floats without complaint, and a NaN passes every
comparison as False: the checks here are written so that it fails them.)
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

from .errors import UsageError

Number = Union[int, float]


def check_number(
    flag: str,
    value: Optional[Number],
    example: str,
    at_least: Optional[Number] = None,
    above: Optional[Number] = None,
    at_most: Optional[Number] = None,
) -> None:
    """Refuse ``value`` (None: not given, nothing to check) unless it is finite and in range:
    ``>= at_least``, ``> above``, ``<= at_most``."""
    if value is None:
        return
    rules = []
    if at_least is not None:
        rules.append(f"at least {at_least}")
    if above is not None:
        rules.append(f"more than {above}")
    if at_most is not None:
        rules.append(f"at most {at_most}")
    rule = " and ".join(rules)
    finite = math.isfinite(value)
    in_range = finite and not (
        (at_least is not None and not value >= at_least)
        or (above is not None and not value > above)
        or (at_most is not None and not value <= at_most)
    )
    if in_range:
        return
    what = f"a finite number {rule}".rstrip() if not finite else rule
    shown = int(value) if finite and float(value).is_integer() else value  # 5, not 5.0: as typed
    raise UsageError(f"{flag} must be {what}, not {shown}", hint=f"e.g. {flag} {example}")


def kinds_list(flag: str, value: object, known: Sequence[str], example: str) -> Tuple[str, ...]:
    """A comma-separated flag value, each item one of ``known``: the items, or exit 2 naming the flag."""
    items = tuple(v.strip() for v in str(value).split(",") if v.strip())
    wrong = [v for v in items if v not in known]
    if wrong or not items:
        raise UsageError(
            f"{flag} takes a comma-separated list of {', '.join(known)}; not {', '.join(wrong) or repr(value)}",
            hint=f"e.g. {flag} {example}",
        )
    return items
