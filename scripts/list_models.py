#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = ["requests>=2.28,<3", "python-dotenv>=1.0,<2"]
# ///
"""List the models your key can use (GET /models), so requests name a real model.

The API does not say which models are chat and which are embeddings models; --chat and
--embeddings filter by name (models whose id contains "embed" are embeddings models).

examples:
  python3 scripts/list_models.py
  python3 scripts/list_models.py --embeddings

output (stdout, JSON): count, models (id, kind, owned_by, created)."""

from __future__ import annotations

from typing import Optional, Sequence

from _dwbatches import output
from _dwbatches.errors import EXIT_OK


def model_kind(model_id: str) -> str:
    return "embeddings" if "embed" in model_id.lower() else "chat"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True)
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--chat", action="store_true", help="only chat / completion models")
    kind.add_argument("--embeddings", action="store_true", help="only embeddings models")
    args = output.parse_args(parser, argv)

    def body() -> int:
        from _dwbatches import config
        from _dwbatches.http import Client
        client = Client(config.load_config(args.base_url, args.allow_insecure_http))
        models = []
        for m in client.list_models():
            mid = str(m.get("id", ""))
            k = model_kind(mid)
            if (args.chat and k != "chat") or (args.embeddings and k != "embeddings"):
                continue
            models.append({"id": mid, "kind": k, "owned_by": m.get("owned_by"), "created": m.get("created")})
        models.sort(key=lambda m: m["id"])
        output.narrate(f"{len(models)} model(s)")
        output.emit({"count": len(models), "models": models})
        return EXIT_OK

    return output.run(body)


if __name__ == "__main__":
    raise SystemExit(main())
