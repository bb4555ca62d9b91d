"""The cheapest model for a batch file (list_models.py --for): each model the key can use,
priced for this file's own tokens in both windows, and what a rebuild of the file for it would
set (create_batch_file.py --from-batch).

The tokens are the validator's (``validate.Report``): the input tokens as the server counts
them, and the output bound (the sum of max_tokens; the server's estimate, input x 1.1, for
requests that set none). A model that thinks adds its thinking at the lowest effort it takes:
none when it can switch thinking off (the rebuild switches it off), else ``THINKING_ROOM`` of
that effort a request (the rebuild raises max_tokens by as much). A model is not eligible when
it cannot take the requests (an embeddings model for chat, a chat model for embeddings, an OCR
model for requests that hold no image or file); one without a known price is not ranked.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Dict, List, Optional

from ..api import reasoning
from ..validation.validate import validated_input
from . import pricing

EMBEDDINGS = "/v1/embeddings"
# The content parts of a request that hold an image or a file (what OCR models read), as they
# stand in a line: a quoted JSON string, which text inside a prompt cannot be (its quotes are
# escaped).
DOCUMENT_PARTS = (b'"image_url"', b'"input_image"', b'"input_file"')
_READ = 1 << 20


@dataclass(frozen=True)
class FileNeeds:
    """What a batch file asks of a model."""

    path: str
    requests: int
    endpoint: str  # the url of most requests
    documents: bool  # some request holds an image or a file
    input_tokens: int
    answer_tokens: int  # the output bound: the sum of max_tokens (+ the server's estimate for the unbounded)
    unbounded: int  # chat requests without max_tokens
    largest: Optional[int]  # the largest max_tokens

    @property
    def kind(self) -> str:
        """The kind of model that can serve the requests: "chat" or "embeddings"."""
        return "embeddings" if self.endpoint == EMBEDDINGS else "chat"

    def as_dict(self) -> Dict[str, Any]:
        return {
            "path": self.path,
            "requests": self.requests,
            "endpoint": self.endpoint,
            "input_tokens": self.input_tokens,
            "output_tokens": self.answer_tokens,
            "output_basis": (
                "the sum of max_tokens"
                if not self.unbounded
                else f"max_tokens where given; for the {self.unbounded} request(s) without, the server's "
                "estimate (input x 1.1)"
            ),
            "documents": self.documents,
        }


def needs_of(path: str) -> FileNeeds:
    """Validate ``path`` (refused when invalid, its errors listed as events) and read what it needs."""
    rep = validated_input(path, "--for", "nothing was priced")
    if EMBEDDINGS in rep.endpoints and len(rep.endpoints) > 1:
        from ..core.errors import UsageError

        raise UsageError(
            f"{path} (--for) holds {EMBEDDINGS} requests and others; no one model can serve both",
            hint="Put the embeddings requests in a file of their own, and price each file.",
        )
    tokens = rep.model_tokens.values()
    largest = max((t["largest_max_tokens"] or 0 for t in tokens), default=0)
    return FileNeeds(
        path=path,
        requests=rep.requests,
        endpoint=max(rep.endpoints, key=lambda u: rep.endpoints[u]),
        documents=_holds_documents(path),
        input_tokens=rep.estimated_input_tokens,
        answer_tokens=sum(t["output_tokens"] for t in tokens),
        unbounded=rep.requests_without_max_tokens,
        largest=largest or None,
    )


def _holds_documents(path: str) -> bool:
    keep = max(len(p) for p in DOCUMENT_PARTS) - 1
    tail = b""
    with open(path, "rb") as fh:
        while True:
            block = fh.read(_READ)
            if not block:
                return False
            data = tail + block
            if any(p in data for p in DOCUMENT_PARTS):
                return True
            tail = data[-keep:]


def reasoning_of(model_id: str, listed: Any = None) -> Dict[str, Any]:
    """Whether a model reasons: from the server's ``supported_reasoning_efforts`` when it lists
    them, else from the known family (``reasoning.efforts``), else unknown (nulls)."""
    if isinstance(listed, list) and all(isinstance(e, str) for e in listed):
        takes, source = reasoning.efforts(model_id, listed), "server"
    else:
        takes, source = reasoning.efforts(model_id), "known family"
    if takes is None:
        return {"reasons": None, "efforts": None, "can_switch_off": None, "source": None}
    return {
        "reasons": bool(takes),
        "efforts": list(takes),
        "can_switch_off": "none" in takes if takes else None,
        "source": source,
    }


def estimate(model_id: str, kind: str, thinks: Dict[str, Any], needs: FileNeeds) -> Dict[str, Any]:
    """What ``needs`` would cost on a model (``kind`` chat or embeddings; ``thinks`` its
    ``reasoning_of``), and the settings of the rebuild for it; ``rank`` is set by ``rank``."""
    doc: Dict[str, Any] = {"eligible": True, "why_not": None, "rank": None, "usd": None}
    why = _why_not(model_id, kind, needs)
    if why is not None:
        return dict(
            doc, eligible=False, why_not=why, output_tokens=None, thinking_tokens=None, thinking=None, rebuild=None
        )
    rebuild: Dict[str, Any] = {"model": model_id, "reasoning": None, "max_tokens": None}
    output, added = needs.answer_tokens, 0
    takes = thinks["efforts"]
    if needs.kind == "embeddings":
        note = None
    elif thinks["reasons"] is None:
        note = "unknown"  # (what each code means: workflow/reports.py, shown by --help)
    elif not takes:
        note = "does_not_think"
    elif "none" in takes:
        rebuild["reasoning"] = "none"
        note = "switched_off"
    else:
        low = takes[0]
        room = reasoning.THINKING_ROOM.get(low, reasoning.THINKING_ROOM[reasoning.DEFAULT_EFFORT])
        rebuild["reasoning"] = low
        added = room * needs.requests
        if needs.largest is not None and not needs.unbounded:
            rebuild["max_tokens"] = needs.largest + room
            output = rebuild["max_tokens"] * needs.requests
        else:
            output += added
        note = "always"
    costs = {w: pricing.cost(model_id, w, needs.input_tokens, output) for w in pricing.WINDOWS}
    usd = {w: pricing.money(c) for w, c in costs.items() if c is not None}
    return dict(
        doc,
        usd=usd if len(usd) == len(costs) else None,
        output_tokens=output,
        thinking_tokens=added,
        thinking=note,
        rebuild=rebuild,
    )


def _why_not(model_id: str, kind: str, needs: FileNeeds) -> Optional[str]:
    if kind != needs.kind:
        if kind == "embeddings":
            return f"an embeddings model cannot answer {needs.endpoint} requests"
        return f"a {kind} model cannot serve {EMBEDDINGS} requests"
    fam = reasoning.family(model_id)
    if fam is not None and fam.kind == "ocr" and not needs.documents:
        return "an OCR model, for reading images and documents; these requests hold neither"
    return None


def rank(models: List[Dict[str, Any]], needs: FileNeeds, window: str) -> Optional[Dict[str, Any]]:
    """Order ``models`` (each with its ``for_file`` estimate) cheapest first in ``window`` (the
    exact cost, then the fewest output tokens), those without a known price (unranked) after
    them, the models that cannot take the file last; number the ranked ones. Returns the
    cheapest, or None."""

    def key(m: Dict[str, Any]) -> tuple:
        est = m["for_file"]
        if not est["eligible"]:
            return (2, Decimal(0), 0, m["id"])
        if est["usd"] is None:
            return (1, Decimal(0), 0, m["id"])
        cost = pricing.cost(m["id"], window, needs.input_tokens, est["output_tokens"])
        return (0, cost, est["output_tokens"], m["id"])

    models.sort(key=key)
    ranked = [m for m in models if m["for_file"]["eligible"] and m["for_file"]["usd"] is not None]
    for n, m in enumerate(ranked, 1):
        m["for_file"]["rank"] = n
    return ranked[0] if ranked else None


__all__ = ["FileNeeds", "estimate", "needs_of", "rank", "reasoning_of"]
