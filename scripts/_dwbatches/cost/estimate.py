"""What a job will cost, before it runs: one headline figure with its basis, the range beside it.

``estimated_cost`` has one shape in ``submit.py --dry-run``, ``submit.py`` and ``run_batch.py``:

    usd               the headline figure (dollars, a decimal string), or null when nothing could be priced
    basis             what ``usd`` is: "server" (the server's estimate of every chunk) or "price_table"
                      (the range's low end, when the server gave no figure for every chunk)
    server_usd        the sum of the server's estimates (null before an upload: a dry run), which --max-cost compares
    chunks_estimated  chunks the server's figure covers, of ``chunks``
    low_usd, high_usd the price-table range: answers about as long as their prompts (at most max_tokens),
                      and every answer using its whole max_tokens (null when a request sets none)
    input_tokens, output_tokens   the tokens behind ``usd``
    window            the completion window priced (null for a job recorded without it)
    prices_as_of      the date of the price table
    models            per model: requests, input_tokens, output_tokens_low, output_tokens_high, usd_low,
                      usd_high, price_per_1m_tokens
    unpriced_models   only when the price table lacks a model (the range leaves it out)

What the figures assume is said once, in the report's declaration (``workflow/reports.py``,
shown by ``--help``), not in every document.

The local part is computed from the validation report (``cost.local_estimate``) and kept in the
job record at submit, so a later run of the same job reports the same range.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Dict, Iterable, Optional

from . import pricing
from .cost import sum_estimates

SERVER, TABLE = "server", "price_table"  # the values of ``basis``


def recorded(local: Dict[str, Any], window: str) -> Dict[str, Any]:
    """The part of ``cost.local_estimate``'s report that a job keeps (``job.json`` local_estimate)."""
    low, high = local["low"], local["high"]
    return {
        "window": window,
        "as_of": pricing.PRICES_AS_OF,
        "low_usd": low["usd"],
        "high_usd": high["usd"],
        "input_tokens": low["input_tokens"],
        "output_tokens_low": low["output_tokens"],
        "output_tokens_high": high["output_tokens"],
        "high_basis": high["basis"],
        "models": local.get("models", []),
        "unpriced_models": local.get("unpriced_models", []),
    }


def estimated_cost(
    local: Optional[Dict[str, Any]], server_chunks: Iterable[Any] = (), chunks: Optional[int] = None
) -> Optional[Dict[str, Any]]:
    """The ``estimated_cost`` document from the recorded local estimate (``recorded``; a job of an
    earlier version recorded only the window and the two figures) and the chunks whose
    ``cost_estimate`` the server gave (none in a dry run). None when neither is known."""
    server_chunks = list(server_chunks)
    local = local or {}
    count = len(server_chunks) if chunks is None else chunks
    total, unknown = sum_estimates(server_chunks)
    known = len(server_chunks) - unknown
    if not known and not local:
        return None
    est = [c.cost_estimate or {} for c in server_chunks]
    server_usd = pricing.money(total) if known else None
    doc: Dict[str, Any] = {
        "usd": None,
        "basis": None,
        "server_usd": server_usd,
        "chunks_estimated": known,
        "chunks": count,
        "low_usd": local.get("low_usd"),
        "high_usd": local.get("high_usd"),
        "input_tokens": None,
        "output_tokens": None,
        "window": local.get("window"),
        "prices_as_of": local.get("as_of") or pricing.PRICES_AS_OF,
        "models": local.get("models") or [],
    }
    if known and known == count:
        doc.update(
            usd=server_usd,
            basis=SERVER,
            input_tokens=sum(int(e.get("total_estimated_input_tokens") or 0) for e in est),
            output_tokens=sum(int(e.get("total_estimated_output_tokens") or 0) for e in est),
        )
    elif doc["low_usd"] is not None:
        doc.update(
            usd=doc["low_usd"],
            basis=TABLE,
            input_tokens=local.get("input_tokens"),
            output_tokens=local.get("output_tokens_low"),
        )
    if local.get("unpriced_models"):
        doc["unpriced_models"] = list(local["unpriced_models"])
    return doc


def _age(as_of: str) -> str:
    return pricing.table_age() if as_of == pricing.PRICES_AS_OF else as_of


def describe(doc: Optional[Dict[str, Any]]) -> Optional[str]:
    """The estimate in one line for people (stderr): the headline, its basis, the range beside it."""
    if not doc or doc.get("usd") is None and doc.get("low_usd") is None:
        return None
    low, high = doc.get("low_usd"), doc.get("high_usd")
    if doc.get("basis") == SERVER:
        head = f"estimated cost: ${doc['usd']}, the server's estimate (answers as long as their prompts)"
        if low is None:
            return head
        if high is None:
            rng = f"from ${low} (no max_tokens bound)"
        elif Decimal(low) == Decimal(high):
            rng = f"${low}"
        else:
            rng = f"${low} to ${high}"
        return f"{head}; price table: {rng}"
    assert low is not None  # (not the server's figure: the headline is the price table's low end)
    head = f"estimated cost: ${low} from the price table (answers as long as their prompts, at most max_tokens)"
    if high is None:
        head += "; no upper bound (a request sets no max_tokens)"
    elif Decimal(low) != Decimal(high):
        head += f"; up to ${high} if every answer uses its whole max_tokens"
    if doc.get("server_usd") is not None:
        head += f"; the server estimated ${doc['server_usd']} for {doc['chunks_estimated']} of {doc['chunks']} chunks"
    return f"{head}; prices of {_age(doc.get('prices_as_of') or '')}"
