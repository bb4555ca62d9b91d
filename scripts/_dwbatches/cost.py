"""What a job costs: the local estimate before (a range), the server's estimates, the actual cost after.

Figures come from the dated price table (``pricing``): before a run from the validation
report's token estimates, after it from the tokens the server reported for each successful
request.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import pricing
from .download import BatchReport
from .merge import Merger


def usage_and_cost(merger: Merger, reports: Sequence[BatchReport], windows: Dict[Optional[int], str]
                   ) -> Tuple[Dict[str, int], Dict[str, Any]]:
    """What the results written cost: the tokens the server reported for each successful
    request, priced with the price table for the window of its batch; by round and in all.
    (The raw files are indexed two per batch, output then error, in the order of ``reports``.)"""
    total = {"requests": 0, "input_tokens": 0, "output_tokens": 0}
    by_round: Dict[Any, Dict[str, Any]] = {}
    usd_total = Decimal(0)
    unpriced: List[str] = []
    for (file_idx, model), (n, tin, tout) in sorted(merger.usage.items()):
        rep = reports[file_idx // 2]
        window = (rep.batch or {}).get("completion_window") or windows.get(rep.round) or "24h"
        row = by_round.setdefault((rep.round, window), {"round": rep.round, "completion_window": window,
                                                        "requests": 0, "input_tokens": 0, "output_tokens": 0,
                                                        "usd": Decimal(0)})
        for key, value in (("requests", n), ("input_tokens", tin), ("output_tokens", tout)):
            row[key] += value
            total[key] += value
        cost = pricing.cost(model, window, tin, tout)
        if cost is None:
            if model not in unpriced:
                unpriced.append(model)
            continue
        row["usd"] += cost
        usd_total += cost
    rounds = []
    for row in by_round.values():
        row["usd"] = pricing.money(row["usd"])
        rounds.append(row)
    cost_doc: Dict[str, Any] = {
        "usd": pricing.money(usd_total) if total["requests"] and not (unpriced and not usd_total) else None,
        "prices_as_of": pricing.PRICES_AS_OF,
        "basis": "tokens the server reported for each successful request x the price table's price for its window",
        "rounds": rounds,
    }
    if unpriced:
        cost_doc["unpriced_models"] = unpriced
    return total, cost_doc
