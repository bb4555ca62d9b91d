#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = [
#   "requests>=2.32.4,<3",
#   "python-dotenv>=1.2.2,<2; python_version >= '3.10'",
#   "python-dotenv>=1.0,<2; python_version < '3.10'",
# ]
# ///
"""List the models your key can use (GET /models), with their prices, so requests name a real model.

The API does not say which models are chat and which are embeddings models; --chat and
--embeddings filter by name (models whose id contains "embed" are embeddings models).
Prices come from the price table dated prices_as_of (USD per million tokens, input and
output, for the 24h and the 1h window; null for a model the table does not know); the live
prices are on Doubleword's models page. --sort price lists the cheapest first (by the 24h
input plus output price), so the first chat model is the cheapest one: try it on a sample
(create_batch_file.py --limit 20) before the whole job.

examples:
  python3 scripts/list_models.py
  python3 scripts/list_models.py --chat --sort price        # the cheapest chat model first
  python3 scripts/list_models.py --embeddings

output (stdout, JSON): count, prices_as_of, default_model (create_batch_file.py's default),
models (id, kind, owned_by, created, price_per_1m_tokens {24h {input, output}, 1h {input,
output}} or null)."""

from __future__ import annotations

from typing import Optional, Sequence

from _dwbatches import cli, output
from _dwbatches.workflow.listing import list_models


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True)
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--chat", action="store_true", help="only chat / completion models")
    kind.add_argument("--embeddings", action="store_true", help="only embeddings models")
    parser.add_argument(
        "--sort",
        choices=("id", "price"),
        default="id",
        help="order: by id (default) or by price, cheapest first (24h input + output; "
        "models without a known price last)",
    )
    args = output.parse_args(parser, argv)
    kind_wanted = "chat" if args.chat else "embeddings" if args.embeddings else None
    return output.run(lambda: output.finish(list_models(cli.connection(args), kind_wanted, args.sort)))


if __name__ == "__main__":
    raise SystemExit(main())
