#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = [
#   "requests>=2.32.4,<3",
#   "python-dotenv>=1.2.2,<2; python_version >= '3.10'",
#   "python-dotenv>=1.0,<2; python_version < '3.10'",
# ]
# ///
"""List the models your key can use (GET /models), with their prices and whether they reason, so
requests name a real model; or rank them by what one batch file would cost on each (--for).

The API does not say which models are chat and which are embeddings models; --chat and
--embeddings filter by name (models whose id contains "embed" are embeddings models).
Prices come from the price table dated prices_as_of (USD per million tokens, input and
output, for the 24h and the 1h window; null for a model the table does not know); the live
prices are on Doubleword's models page. Whether a model reasons (thinks before it answers,
with the thinking counted against max_tokens) comes from the server's
supported_reasoning_efforts, else from the model's known family.

--for FILE prices a batch file on every model: its own input tokens (as the server counts
them) and its output bound (the sum of max_tokens), in both windows, cheapest first in the
-w window. A model that thinks adds its thinking at the lowest effort it takes: none when it
can switch thinking off (the rebuild switches it off), else the usual thinking of its lowest
effort for each request (gpt-oss: low), which the rebuild adds to max_tokens too. Models that cannot take the requests (embeddings models for chat,
OCR models for text only) are not eligible, and models without a known price are unranked.
next is the command that rebuilds FILE for the cheapest (create_batch_file.py --from-batch,
every request kept): try it on a sample (add --limit 20) before the whole job.

--sort price orders by the 24h input price plus the output price per 1M tokens: a rough order
that ignores how many input and output tokens a job has (for long prompts with short answers
its first model is not the cheapest); --for FILE ranks by that file's own cost.

examples:
  python3 scripts/list_models.py
  python3 scripts/list_models.py --for requests.jsonl          # the cheapest model for this file
  python3 scripts/list_models.py --for requests.jsonl -w 1h
  python3 scripts/list_models.py --chat --sort price
  python3 scripts/list_models.py --embeddings"""

from __future__ import annotations

from typing import Optional, Sequence

from _dwbatches.core import output
from _dwbatches.workflow import cli
from _dwbatches.workflow.listing import ModelOptions, models_command

OPTIONS = ModelOptions


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=True, script=__file__)
    return cli.run(parser, OPTIONS, argv, models_command)


if __name__ == "__main__":
    raise SystemExit(main())
