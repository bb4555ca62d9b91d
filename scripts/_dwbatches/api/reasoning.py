"""Reasoning models: which models think before they answer, the efforts each takes, the request
fields that set the effort, and the room thinking needs in ``max_tokens``.

One copy for the client (the builder, the validator, list_models.py, the answer checks, the
retry with new settings) and the sandbox (which of its built-in models think, and what it
accepts). Standard library only (the sandbox imports it).

Facts (``shared/reference/reasoning_models.md``): the Qwen3 and Qwen3.5 chat models think by
default and can be switched off (``reasoning_effort: "none"``, which servers map to the chat
template's ``enable_thinking: false``; both are sent, since a server without that mapping
reads only the template switch); gpt-oss always thinks, ``reasoning_effort`` sets how much;
Qwen "Instruct" models, embeddings and OCR models do not think. The thinking counts against
``max_tokens`` (``max_completion_tokens``; ``max_output_tokens`` on ``/v1/responses``): a
budget it uses up gives an HTTP 200 with no answer and ``finish_reason: "length"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

# Every effort a request may name (the OpenAI values Doubleword lists), lowest first.
EFFORTS = ("none", "low", "medium", "high")

# The effort a reasoning model uses when a request names none.
DEFAULT_EFFORT = "medium"

# Tokens a reasoning model commonly spends thinking at each effort, before its answer: a
# max_tokens below this leaves the answer little or no room. Typical figures for short tasks
# on the Qwen3 and gpt-oss families, not bounds.
THINKING_ROOM: Dict[str, int] = {"low": 1024, "medium": 4096, "high": 16384}

# The chat template switch of the families that can stop thinking (vLLM's chat_template_kwargs).
TEMPLATE_OFF = {"chat_template_kwargs": {"enable_thinking": False}}


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # "chat", "ocr" (reads documents; not for text tasks) or "embeddings"
    efforts: Tuple[str, ...]  # the efforts it takes; () = it does not reason
    template_switch: bool = False  # "none" is also sent as chat_template_kwargs.enable_thinking false

    @property
    def reasons(self) -> bool:
        return bool(self.efforts)

    @property
    def can_switch_off(self) -> bool:
        return "none" in self.efforts


# First match wins: the order keeps embeddings and Instruct models out of the thinking families.
_FAMILIES: Sequence[Tuple[str, Family]] = (
    (r"embed", Family("embeddings", "embeddings", ())),
    (r"ocr", Family("ocr", "ocr", ())),
    (r"^qwen/qwen3(\.\d+)?-.*instruct", Family("qwen3-instruct", "chat", ())),
    (r"^qwen/qwen3(\.\d+)?-.*thinking", Family("qwen3-thinking", "chat", ("low", "medium", "high"))),
    (r"^qwen/qwen3(\.\d+)?-", Family("qwen3", "chat", EFFORTS, template_switch=True)),
    (r"^openai/gpt-oss-", Family("gpt-oss", "chat", ("low", "medium", "high"))),
)
_COMPILED = tuple((re.compile(p, re.IGNORECASE), f) for p, f in _FAMILIES)


def family(model: str) -> Optional[Family]:
    """The known family of a model id, or None when the id is not one this module knows."""
    for pattern, fam in _COMPILED:
        if pattern.search(model):
            return fam
    return None


def efforts(model: str, listed: Optional[Sequence[str]] = None) -> Optional[Tuple[str, ...]]:
    """The efforts ``model`` takes: the server's list when it gave one, else the known family's;
    () when the model does not reason; None when nothing is known."""
    if listed is not None:
        return tuple(e for e in EFFORTS if e in listed) + tuple(e for e in listed if e not in EFFORTS)
    fam = family(model)
    return fam.efforts if fam is not None else None


def requested_effort(body: Dict[str, Any], url: str) -> Optional[str]:
    """The effort a request body asks for ("none" when it switches thinking off), or None when it
    names none (the model's default)."""
    if url == "/v1/responses":
        reasoning = body.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    else:
        effort = body.get("reasoning_effort")
    kwargs = body.get("chat_template_kwargs")
    if (isinstance(kwargs, dict) and kwargs.get("enable_thinking") is False) or body.get("enable_thinking") is False:
        return "none"
    return effort if isinstance(effort, str) else None


def effort_fields(model: str, url: str, effort: str) -> Dict[str, Any]:
    """The body fields that ask ``model`` for ``effort`` on ``url`` ({} for a model known not to
    reason). A family that cannot take the effort is refused by the caller (``effort_problem``)."""
    fam = family(model)
    if fam is not None and not fam.reasons:
        return {}
    if url == "/v1/responses":
        fields: Dict[str, Any] = {"reasoning": {"effort": effort}}
    else:
        fields = {"reasoning_effort": effort}
    if effort == "none" and (fam is None or fam.template_switch) and url != "/v1/responses":
        fields.update(TEMPLATE_OFF)
    return fields


def effort_problem(model: str, effort: str, listed: Optional[Sequence[str]] = None) -> Optional[str]:
    """Why ``model`` cannot take ``effort`` (one sentence), or None when it can or nothing is known."""
    if effort not in EFFORTS and listed is None:
        return f"reasoning effort {effort!r} is not one of {', '.join(EFFORTS)}"
    takes = efforts(model, listed)
    if takes is None or not takes or effort in takes:
        return None
    if effort == "none":
        return f"{model} always reasons and cannot switch it off; its efforts are {', '.join(takes)}"
    return f"{model} takes the reasoning efforts {', '.join(takes)}, not {effort!r}"


# The request fields that bound an answer, in the order a server reads them.
LIMIT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def output_limit(body: Dict[str, Any]) -> Optional[int]:
    """The answer's token limit a request sets (the first of ``LIMIT_FIELDS`` given as a
    positive integer), or None. Thinking counts against it."""
    for key in LIMIT_FIELDS:
        value = body.get(key)
        if type(value) is int and value > 0:
            return value
    return None


def thinks(model: str, body: Dict[str, Any], url: str, listed: Optional[Sequence[str]] = None) -> Optional[bool]:
    """Whether a request makes its model think first: None when the model is unknown."""
    if url not in ("/v1/chat/completions", "/v1/responses", "/v1/messages"):
        return False
    takes = efforts(model, listed)
    if takes is None:
        return None
    if not takes:
        return False
    return requested_effort(body, url) != "none" or "none" not in takes


def thinking_room(model: str, body: Dict[str, Any], url: str) -> Optional[int]:
    """The tokens of thinking to leave room for in ``max_tokens``, or None when the request
    does not make its model think (or the model is unknown)."""
    if not thinks(model, body, url):
        return None
    effort = requested_effort(body, url) or DEFAULT_EFFORT
    return THINKING_ROOM.get(effort, THINKING_ROOM[DEFAULT_EFFORT])


__all__ = [
    "DEFAULT_EFFORT",
    "EFFORTS",
    "Family",
    "LIMIT_FIELDS",
    "TEMPLATE_OFF",
    "THINKING_ROOM",
    "effort_fields",
    "effort_problem",
    "efforts",
    "family",
    "output_limit",
    "requested_effort",
    "thinking_room",
    "thinks",
]
