"""What a job costs: the local estimate before (a range), the server's estimates, the actual cost after.

Before a run, figures come from the dated price table (``pricing``) and the validation report's
token estimates. After it, the billed figure comes from the server (each batch's analytics,
``total_cost``), with the price-table figure beside it as an estimate from the tokens the
server reported for every answer received.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple

from . import pricing

if TYPE_CHECKING:  # annotations only: the results a cost is computed from are a layer above
    from ..jobs.jobrecord import Chunk
    from ..results.download import BatchReport
    from ..results.merge import ResultIndex
    from ..validation.validate import Report


def billed_cost(analytics: Any) -> Optional[Decimal]:
    """The billed amount in a batch's analytics (``total_cost``, a string), or None."""
    value = analytics.get("total_cost") if isinstance(analytics, dict) else None
    if value is None and isinstance(analytics, dict) and analytics.get("total_requests") == 0:
        return Decimal(0)  # nothing ran, nothing billed (the server leaves total_cost out)
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


def usage_and_cost(
    index: ResultIndex,
    reports: Sequence[BatchReport],
    windows: Dict[Optional[int], str],
    billed: Dict[str, Optional[Decimal]],
) -> Tuple[Dict[str, int], Dict[str, Any]]:
    """What the job cost, by round and in all: every answer received (good or not, in every
    round: each was billed), its tokens as the server reported them (reasoning included in the
    output tokens) priced with the price table for its batch's window (``estimated_usd``), and
    the server's billed figure where every batch of the round has one (``billed_usd``, from the
    batches' analytics). ``usd`` is the billed figure when the whole job has one, else the
    estimate; ``basis`` says which. (The raw files are indexed two per batch, output then
    error, in the order of ``reports``.)"""
    keys = ("requests", "input_tokens", "output_tokens", "reasoning_tokens")
    total = dict.fromkeys(keys, 0)
    by_round: Dict[Any, Dict[str, Any]] = {}
    unpriced: List[str] = []

    def round_row(rep: BatchReport) -> Dict[str, Any]:
        window = (rep.batch or {}).get("completion_window") or windows.get(rep.round) or "24h"
        row = by_round.get((rep.round, window))
        if row is None:
            row = by_round[(rep.round, window)] = dict(
                {"round": rep.round, "completion_window": window}, **dict.fromkeys(keys, 0)
            )
            row.update(estimated=Decimal(0), billed=Decimal(0), billed_known=True)
        return row

    for rep in reports:  # every batch's billed figure, answers or not
        row = round_row(rep)
        amount = billed.get(rep.batch_id)
        if amount is None:
            row["billed_known"] = False
        else:
            row["billed"] += amount
    for (file_idx, model), counts in sorted(index.usage.items()):
        rep = reports[file_idx // 2]
        row = round_row(rep)
        for key, value in zip(keys, counts):
            row[key] += value
            total[key] += value
        cost = pricing.cost(model, row["completion_window"], counts[1], counts[2])
        if cost is None:
            if model not in unpriced:
                unpriced.append(model)
            continue
        row["estimated"] += cost
    rounds = []
    estimated = billed_total = Decimal(0)  # the sums of the round figures as shown, so that they add up
    all_billed = bool(by_round)
    for row in by_round.values():
        known, amount = row.pop("billed_known"), row.pop("billed")
        row["estimated_usd"] = pricing.money(row.pop("estimated"))
        row["billed_usd"] = pricing.money(amount) if known else None
        estimated += Decimal(row["estimated_usd"])
        if known:
            billed_total += Decimal(row["billed_usd"])
        all_billed = all_billed and known
        row["usd"] = None  # set below, on the job's basis
        rounds.append(row)
    priced = total["requests"] and not (unpriced and not estimated)
    cost_doc: Dict[str, Any] = {
        "usd": None,
        "basis": None,
        "billed_usd": _sum_text(billed_total) if all_billed else None,
        "estimated_usd": _sum_text(estimated) if priced else None,
        "prices_as_of": pricing.PRICES_AS_OF,
        "rounds": rounds,
    }
    if all_billed:
        cost_doc["usd"], cost_doc["basis"] = cost_doc["billed_usd"], BILLED
        for row in rounds:
            row["usd"] = row["billed_usd"]
    elif priced:
        cost_doc["usd"], cost_doc["basis"] = cost_doc["estimated_usd"], ESTIMATED
        for row in rounds:
            row["usd"] = row["estimated_usd"]
    if unpriced:
        cost_doc["unpriced_models"] = unpriced
    return total, cost_doc


BILLED, ESTIMATED = "billed", "estimated"  # the values of ``basis`` (what they mean: workflow/reports.py)


def _sum_text(value: Decimal) -> str:
    """A sum of amounts as shown, in full (never in exponent notation)."""
    return format(value.normalize(), "f") if value else "0"


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
            entry["usd_low"] = pricing.money(low)
            totals["low"] += low
            if high_out is None:
                entry["usd_high"] = None
            else:
                high = pricing.cost(model, completion_window, t["input_tokens"], high_out) or Decimal(0)
                entry["usd_high"] = pricing.money(high)
                totals["high"] += high
            entry["price_per_1m_tokens"] = {"input": float(p[0]), "output": float(p[1])}
        models.append(entry)
    known = not unpriced or bool(totals["low"])
    doc: Dict[str, Any] = {
        "low": {
            "usd": pricing.money(totals["low"]) if known else None,
            "input_tokens": tokens["input"],
            "output_tokens": tokens["low"],
            "basis": "each answer about as long as its prompt x 1.1 (the server's rule), at most its max_tokens",
        },
        "high": {
            "usd": pricing.money(totals["high"]) if known and not unbounded else None,
            "input_tokens": tokens["input"],
            "output_tokens": tokens["high"] if not unbounded else None,
            "basis": (
                "every request uses its whole max_tokens"
                if not unbounded
                else f"no upper bound: {unbounded} request(s) set no max_tokens"
            ),
        },
        "source": f"local estimate from the price table of {pricing.table_age()} ({completion_window} window)",
        "models": models,
    }
    if unpriced:
        doc["unpriced_models"] = unpriced
        doc["note"] = "no local price for " + ", ".join(unpriced) + "; the totals leave them out"
    return doc
