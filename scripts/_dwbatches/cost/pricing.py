"""Prices, as data: the dated price table, the default models, and cost arithmetic.

The table is Doubleword's list price per million tokens (input, output) for each completion
window, as of ``PRICES_AS_OF``; the live prices are on Doubleword's models page. It is used
for local estimates (``submit.py --dry-run``), for the actual cost of a finished job (usage
reported by the server × these prices), for ``list_models.py``'s price columns, and by the
sandbox server for its cost estimates, so that every figure agrees. Standard library only.
"""

from __future__ import annotations

import datetime
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Dict, Optional, Tuple

from ..core.apifacts import COMPLETION_WINDOWS

PRICES_AS_OF = "2026-04-13"
WINDOWS = COMPLETION_WINDOWS

# model -> window -> (input, output) in USD per 1M tokens
PRICES: Dict[str, Dict[str, Tuple[str, str]]] = {
    "Qwen/Qwen3.5-4B": {"24h": ("0.04", "0.06"), "1h": ("0.05", "0.08")},
    "Qwen/Qwen3.5-9B": {"24h": ("0.03", "0.29"), "1h": ("0.04", "0.35")},
    "Qwen/Qwen3-14B-FP8": {"24h": ("0.02", "0.20"), "1h": ("0.03", "0.30")},
    "Qwen/Qwen3.5-35B-A3B-FP8": {"24h": ("0.05", "0.20"), "1h": ("0.07", "0.30")},
    "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8": {"24h": ("0.05", "0.20"), "1h": ("0.07", "0.30")},
    "Qwen/Qwen3-VL-235B-A22B-Instruct-FP8": {"24h": ("0.10", "0.40"), "1h": ("0.15", "0.55")},
    "Qwen/Qwen3.5-397B-A17B": {"24h": ("0.15", "1.20"), "1h": ("0.30", "1.80")},
    "nvidia/NVIDIA-Nemotron-3-Super-120B-A12B-NVFP4": {"24h": ("0.15", "0.38"), "1h": ("0.23", "0.56")},
    "openai/gpt-oss-20b": {"24h": ("0.02", "0.15"), "1h": ("0.03", "0.20")},
    "allenai/olmOCR-2-7B-1025-FP8": {"24h": ("0.10", "0.10"), "1h": ("0.15", "0.15")},
    "lightonai/LightOnOCR-2-1B-bbox-soup": {"24h": ("0.05", "0.05"), "1h": ("0.08", "0.08")},
    "Qwen/Qwen3-Embedding-8B": {"24h": ("0.02", "0.0"), "1h": ("0.03", "0.0")},
}

# The model create_batch_file.py uses when none is given, the one check_setup.py suggests and
# the recipes use: a capable general model at a low price. For the cheapest model fit for a
# task, see list_models.py --sort price.
DEFAULT_MODEL = "Qwen/Qwen3.5-35B-A3B-FP8"
DEFAULT_EMBEDDING_MODEL = "Qwen/Qwen3-Embedding-8B"

MILLION = Decimal(1_000_000)

# Past this age the table is said to be old wherever a figure comes from it.
STALE_DAYS = 90


def table_age() -> str:
    """The price table's date, and its age when it is past STALE_DAYS, in words:
    "2026-04-13" or "2026-04-13, 238 days old: prices may have changed; the live ones are on
    Doubleword's models page"."""
    days = (datetime.date.today() - datetime.date.fromisoformat(PRICES_AS_OF)).days
    if days <= STALE_DAYS:
        return PRICES_AS_OF
    return f"{PRICES_AS_OF}, {days} days old: prices may have changed; the live ones are on Doubleword's models page"


def price(model: str, window: str) -> Optional[Tuple[Decimal, Decimal]]:
    """(input, output) USD per 1M tokens, or None for a model the table does not know."""
    entry = PRICES.get(model, {}).get(window)
    if entry is None:
        return None
    return Decimal(entry[0]), Decimal(entry[1])


def cost(model: str, window: str, input_tokens: int, output_tokens: int) -> Optional[Decimal]:
    p = price(model, window)
    if p is None:
        return None
    return (Decimal(int(input_tokens)) * p[0] + Decimal(int(output_tokens)) * p[1]) / MILLION


def price_doc(model: str) -> Optional[Dict[str, Dict[str, float]]]:
    """{"24h": {"input": .., "output": ..}, "1h": {...}} per 1M tokens, or None if unknown."""
    if model not in PRICES:
        return None
    return {w: {"input": float(p[0]), "output": float(p[1])} for w, p in PRICES[model].items()}


def money(value: Decimal, up: bool = False) -> str:
    """Dollars as text, by one rule everywhere (JSON and stderr): cents from $1, two
    significant digits below it ($0.50, $0.0012, $0.000083), never in exponent notation; 0 is
    "0". ``up``: round up (a limit that must not fall below the amount)."""
    if value == 0:
        return "0"
    q = Decimal("0.01") if abs(value) >= 1 else Decimal(1).scaleb(value.adjusted() - 1)
    return format(value.quantize(q, rounding=ROUND_CEILING if up else ROUND_HALF_UP), "f")


__all__ = [
    "PRICES",
    "PRICES_AS_OF",
    "WINDOWS",
    "DEFAULT_MODEL",
    "DEFAULT_EMBEDDING_MODEL",
    "price",
    "cost",
    "price_doc",
    "money",
    "table_age",
]
