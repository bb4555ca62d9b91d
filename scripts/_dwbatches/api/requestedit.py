"""New settings for requests already built: another model, another answer budget, another
reasoning effort. One rule for every place that changes requests (a retry with new settings, a
batch file rebuilt for another model), so that a changed request is the one a build would have
made. Standard library only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from . import reasoning

# The command-line flags of each setting (create_batch_file.py, retry_failed.py, the printed fixes).
FLAGS = {"model": ("-m", "--model"), "max_tokens": ("--max-tokens",), "reasoning": ("--reasoning",)}

# Every field by which a body asks for (or switches off) thinking; a new effort replaces them all.
EFFORT_FIELDS = ("reasoning_effort", "reasoning", "enable_thinking")


@dataclass(frozen=True)
class Changes:
    """What to change in each request; None leaves a setting as it was."""

    model: Optional[str] = None
    max_tokens: Optional[int] = None
    reasoning: Optional[str] = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.model, self.max_tokens, self.reasoning))

    def to_dict(self) -> Dict[str, Any]:
        return {
            k: v
            for k, v in (("model", self.model), ("max_tokens", self.max_tokens), ("reasoning", self.reasoning))
            if v is not None
        }

    @classmethod
    def from_dict(cls, doc: Optional[Dict[str, Any]]) -> Changes:
        doc = doc or {}
        return cls(model=doc.get("model"), max_tokens=doc.get("max_tokens"), reasoning=doc.get("reasoning"))

    def problem(self, body: Dict[str, Any], url: str) -> Optional[str]:
        """Why the changed request could not run (its model cannot take the effort it would ask
        for, e.g. reasoning off on a model that always reasons), or None."""
        changed = self.apply(body, url)
        effort = reasoning.requested_effort(changed, url)
        if effort is None:
            return None
        return reasoning.effort_problem(str(changed.get("model") or ""), effort)

    def apply(self, body: Dict[str, Any], url: str) -> Dict[str, Any]:
        """A copy of ``body`` with the changes made (the body is not modified)."""
        if not self:
            return body
        out = copy.deepcopy(body)
        if self.model is not None:
            out["model"] = self.model
        if self.max_tokens is not None:
            given = [k for k in reasoning.LIMIT_FIELDS if k in out]
            if given:
                for key in given:
                    out[key] = self.max_tokens
            else:
                out["max_output_tokens" if url == "/v1/responses" else "max_tokens"] = self.max_tokens
        if self.reasoning is not None:
            for key in EFFORT_FIELDS:
                out.pop(key, None)
            kwargs = out.get("chat_template_kwargs")
            if isinstance(kwargs, dict):
                kwargs.pop("enable_thinking", None)
                if not kwargs:
                    del out["chat_template_kwargs"]
            for key, value in reasoning.effort_fields(str(out.get("model") or ""), url, self.reasoning).items():
                if isinstance(value, dict) and isinstance(out.get(key), dict):
                    out[key] = dict(out[key], **value)
                else:
                    out[key] = value
        return out

    def then(self, later: Changes) -> Changes:
        """These changes followed by ``later`` (a setting ``later`` gives wins)."""
        return Changes(
            model=later.model if later.model is not None else self.model,
            max_tokens=later.max_tokens if later.max_tokens is not None else self.max_tokens,
            reasoning=later.reasoning if later.reasoning is not None else self.reasoning,
        )

    def args(self) -> List[str]:
        """The changes as command-line arguments (the long flags of ``FLAGS``)."""
        out: List[str] = []
        for key, value in self.to_dict().items():
            out += [FLAGS[key][-1], str(value)]
        return out

    def describe(self) -> str:
        """The changes in words, e.g. "max_tokens 2000, reasoning none"."""
        return ", ".join(f"{k} {v}" for k, v in self.to_dict().items())


__all__ = ["FLAGS", "Changes"]
