"""What to change when answers come back bad: the settings of a rerun, and why, in one line.

The merge notes what each bad answer shows (``Tally.add``): a cut (finish reason "length":
empty or truncated) with the token budget it used and whether the model reasoned first, text
that is not the JSON asked for, a content filter. ``pick`` turns that into one fix for the job:
reasoning off for short answers on a model that can switch it off; else a larger budget; a
plain rerun for answers that were complete but not the JSON asked for (answers vary between
runs); nothing for filtered answers (a rerun would be filtered again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Set

from ..api import reasoning
from ..api.requestedit import Changes
from . import answers

# Answers this short need no thinking: below this budget a cut on a reasoning model is fixed by
# switching the reasoning off (where the model can), not by paying for more thinking.
SHORT_ANSWER = reasoning.THINKING_ROOM["low"]


@dataclass
class Tally:
    cut: int = 0  # empty or truncated at the token limit
    budget: int = 0  # the largest token budget a cut answer used up
    thought: int = 0  # cut answers whose model reasoned first
    models: Set[str] = field(default_factory=set)  # models of the cut answers
    invalid_json: int = 0
    empty: int = 0  # empty although the model stopped by itself
    filtered: int = 0

    def add(self, check: str, body: Any) -> None:
        body = body if isinstance(body, dict) else {}
        used = answers.budget_used(body)
        if check in (answers.EMPTY, answers.TRUNCATED) and used is not None:
            self.cut += 1
            self.budget = max(self.budget, used)
            self.thought += answers.reasoning_tokens(body) > 0
            self.models.add(str(body.get("model") or ""))
        elif check == answers.EMPTY:
            self.empty += 1
        elif check == answers.INVALID_JSON:
            self.invalid_json += 1
        elif check == answers.FILTERED:
            self.filtered += 1


@dataclass
class Fix:
    changes: Changes
    reason: str

    def to_dict(self) -> Dict[str, Any]:
        return {"changes": self.changes.to_dict(), "reason": self.reason}


def pick(t: Tally) -> Optional[Fix]:
    """The rerun that fixes the bad answers, or None when a rerun would not help."""
    if t.cut:
        models = ", ".join(sorted(m for m in t.models if m)) or "the model"
        off = all((reasoning.family(m) or reasoning.Family("", "", ())).can_switch_off for m in t.models)
        if t.thought and off and t.budget < SHORT_ANSWER:
            return Fix(
                Changes(reasoning="none"),
                f"{t.cut} answer(s) came back empty or cut: {models} spent the budget of {t.budget} token(s) "
                "reasoning before it answered; a short answer needs no reasoning, so the rerun switches it off",
            )
        room = reasoning.THINKING_ROOM[reasoning.DEFAULT_EFFORT] if t.thought else 256
        need = max(t.budget * 2, t.budget + room)
        new = _round_up(need, 64 if need < 1024 else 256)
        why = "the model reasons first and the reasoning counts against max_tokens" if t.thought else "they need more"
        return Fix(
            Changes(max_tokens=new),
            f"{t.cut} answer(s) came back empty or cut at max_tokens {t.budget} ({why}); the rerun allows {new}",
        )
    if t.invalid_json or t.empty:
        what = []
        if t.invalid_json:
            what.append(f"{t.invalid_json} answer(s) were not the JSON asked for")
        if t.empty:
            what.append(f"{t.empty} answer(s) were empty")
        return Fix(Changes(), f"{' and '.join(what)}; answers vary between runs, so the rerun asks again as they were")
    return None


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


__all__ = ["Fix", "SHORT_ANSWER", "Tally", "pick"]
