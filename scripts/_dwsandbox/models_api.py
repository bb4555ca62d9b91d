"""The models API (``/v1/models``, OpenAI error envelope): the configured chat and embedding models,
with ``supported_reasoning_efforts`` when asked (``?include_reasoning_capabilities=true``)."""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING

from _dwbatches.api import reasoning

from .config import MODEL_CREATED
from .wire import ApiError, Response, json_response

if TYPE_CHECKING:
    from .app import App
    from .routing import Request


def model_obj(model: str, capabilities: bool = False) -> dict:
    obj = {"id": model, "object": "model", "created": MODEL_CREATED, "owned_by": model.split("/", 1)[0]}
    takes = reasoning.efforts(model) if capabilities else None
    if takes:  # omitted for models that do not reason, as the server omits optional fields
        obj["supported_reasoning_efforts"] = list(takes)
    return obj


def list_models(app: App, req: Request) -> Response:
    models = list(app.cfg.chat_models) + list(app.cfg.embedding_models)
    capabilities = (req.q("include_reasoning_capabilities") or "").lower() == "true"
    return json_response({"object": "list", "data": [model_obj(m, capabilities) for m in models]})


def get_model(app: App, req: Request) -> Response:
    model = urllib.parse.unquote(req.params["model"])
    if not app.has_model(model):
        raise ApiError(404, f"The model '{model}' does not exist", style="openai", code="model_not_found")
    return json_response(model_obj(model))
