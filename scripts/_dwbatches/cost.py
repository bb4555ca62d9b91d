"""What a job costs: the local estimate before (a range), the server's estimates, the actual cost after.

Figures come from the dated price table (``pricing``): before a run from the validation
report's token estimates, after it from the tokens the server reported for each successful
request.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from . import pricing
from .download import BatchReport
from .jobrecord import Chunk
from .merge import Merger
from .validate import Report


def usage_and_cost(
    merger: Merger, reports: Sequence[BatchReport], windows: Dict[Optional[int], str]
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
        row = by_round.setdefault(
            (rep.round, window),
            {
                "round": rep.round,
                "completion_window": window,
                "requests": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "usd": Decimal(0),
            },
        )
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
    shown_total = Decimal(0)  # the sum of the round figures as shown, so that they add up exactly
    for row in by_round.values():
        row["usd"] = pricing.money(row["usd"])
        shown_total += Decimal(row["usd"])
        rounds.append(row)
    cost_doc: Dict[str, Any] = {
        "usd": format(shown_total, "f") if total["requests"] and not (unpriced and not usd_total) else None,
        "prices_as_of": pricing.PRICES_AS_OF,
        "basis": "tokens the server reported for each successful request x the price table's price for its window",
        "rounds": rounds,
    }
    if unpriced:
        cost_doc["unpriced_models"] = unpriced
    return total, cost_doc


_money = pricing.money


def sum_estimates(chunks: Iterable[Chunk]) -> Tuple[Decimal, int]:
    """(sum of the server's total_estimated_cost, number of chunks without an estimate)."""
    total = Decimal(0)
    unknown = 0
    for ch in chunks:
        est = ch.cost_estimate or {}
        try:
            total += Decimal(str(est["total_estimated_cost"]))
        except (KeyError, InvalidOperation, TypeError):
            unknown += 1
    return total, unknown


def local_estimate(report: Report, completion_window: str) -> Dict[str, Any]:
    """The price-table estimate of a validated file (no network), as a range.

    Input tokens are each request body's bytes / 4, counted as the server counts them (the
    body as compact JSON; the envelope of custom_id, method and url left out; a line written
    with spaces after its separators keeps the body's spaces, a token or two more). ``low`` assumes
    each answer is about as long as its prompt × 1.1 (the server's fallback), capped by the
    request's ``max_tokens``, so it is at most the server's estimate; ``high`` assumes every request uses its whole ``max_tokens`` and
    is null when some chat request sets no ``max_tokens`` (then nothing bounds the answer).
    Embeddings produce no output tokens."""
    models = []
    totals = {"low": Decimal(0), "high": Decimal(0)}
    tokens = {"input": 0, "low": 0, "high": 0}
    unpriced: List[str] = []
    unbounded = 0
    for model, t in sorted(report.model_tokens.items()):
        p = pricing.price(model, completion_window)
        high_out = t.get("output_tokens_high")
        entry: Dict[str, Any] = {
            "model": model,
            "requests": t["requests"],
            "input_tokens": t["input_tokens"],
            "output_tokens_low": t["output_tokens_low"],
            "output_tokens_high": high_out,
        }
        tokens["input"] += t["input_tokens"]
        tokens["low"] += t["output_tokens_low"]
        if high_out is None:
            unbounded += t.get("requests_without_max_tokens", 0)
        else:
            tokens["high"] += high_out
        if p is None:
            entry["usd_low"] = entry["usd_high"] = None
            unpriced.append(model)
        else:
            low = pricing.cost(model, completion_window, t["input_tokens"], t["output_tokens_low"]) or Decimal(0)
            entry["usd_low"] = _money(low)
            totals["low"] += low
            if high_out is None:
                entry["usd_high"] = None
            else:
                high = pricing.cost(model, completion_window, t["input_tokens"], high_out) or Decimal(0)
                entry["usd_high"] = _money(high)
                totals["high"] += high
            entry["price_per_1m_tokens"] = {"input": float(p[0]), "output": float(p[1])}
        models.append(entry)
    known = not unpriced or bool(totals["low"])
    doc: Dict[str, Any] = {
        "low": {
            "usd": _money(totals["low"]) if known else None,
            "input_tokens": tokens["input"],
            "output_tokens": tokens["low"],
            "basis": "each answer about as long as its prompt x 1.1 (the server's rule), at most its max_tokens",
        },
        "high": {
            "usd": _money(totals["high"]) if known and not unbounded else None,
            "input_tokens": tokens["input"],
            "output_tokens": tokens["high"] if not unbounded else None,
            "basis": (
                "every request uses its whole max_tokens"
                if not unbounded
                else f"no upper bound: {unbounded} request(s) set no max_tokens"
            ),
        },
        "source": f"local estimate from the price table of {pricing.PRICES_AS_OF} ({completion_window} window); "
        "prices may have changed",
        "models": models,
    }
    if unpriced:
        doc["unpriced_models"] = unpriced
        doc["note"] = "no local price for " + ", ".join(unpriced) + "; the totals leave them out"
    return doc
