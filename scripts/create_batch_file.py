#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = [
#   "requests>=2.32.4,<3",
#   "python-dotenv>=1.2.2,<2; python_version >= '3.10'",
#   "python-dotenv>=1.0,<2; python_version < '3.10'",
# ]
# ///
"""Build a batch JSONL file from prompts, a CSV or a JSONL file, or rebuild one for another model
(local only: no key, no network).

Custom ids are <prefix>-<row id> when --id-column names an id column (or field), else
<prefix>-<line or row number, zero-padded to 6 digits>; the prefix defaults to the input's
file name without its extension (reviews.csv: reviews-000001). Duplicate or unusable ids, and template placeholders the input lacks, are errors
that name the line. The file is validated and written atomically: OUTPUT is replaced only by
a complete, valid file. With no input option a 5-prompt example file is written (never
over an existing file: exit 2).

examples:
  python3 scripts/create_batch_file.py requests.jsonl --prompts prompts.txt --max-tokens 500
  cat prompts.txt | python3 scripts/create_batch_file.py requests.jsonl --prompts -
  python3 scripts/create_batch_file.py reviews.jsonl --csv reviews.csv --id-column id \\
      --template "Classify the sentiment of this review as positive or negative: {text}" \\
      --system "Answer with one word." --max-tokens 5
  python3 scripts/create_batch_file.py facts.jsonl --jsonl docs.jsonl --id-column doc_id \\
      --template "Extract the people named in: {body}" --json-schema people.schema.json
  python3 scripts/create_batch_file.py vectors.jsonl --prompts texts.txt --endpoint /v1/embeddings
  python3 scripts/create_batch_file.py labels.jsonl --prompts items.txt --max-tokens 5 --reasoning none
  python3 scripts/create_batch_file.py reviews.gpt-oss.jsonl --from-batch reviews.jsonl \\
      -m openai/gpt-oss-20b --reasoning low --max-tokens 1029

Reasoning: the Qwen3 and Qwen3.5 chat models (the default among them) and gpt-oss think before
they answer, and the thinking counts against --max-tokens: a small --max-tokens gives empty
answers. --reasoning sets the effort in every request, with the fields the model needs (none
switches thinking off; gpt-oss cannot: low is its least). A model known not to reason gets no
field (a warning says so). The file is checked as it is written: a request whose --max-tokens
leaves no room for its model's thinking, or for the smallest JSON object its format allows,
is a warning naming the fix.

--from-batch FILE rebuilds an existing batch file: every request kept, custom ids and order
unchanged, with -m, --max-tokens and --reasoning applied (the only request flags it takes);
the input's CSV sidecar (FILE's stem + .source.json) goes along to OUTPUT's, so that results
can still be written back into the CSV. list_models.py --for FILE prints this command for the
cheapest model.

CSV input: the first row names the columns. The delimiter (, ; tab or |) is detected from
the header row (the one that splits it into the most columns; a tie gives a comma) unless
--delimiter says it. UTF-8 with or without a BOM; LF, CRLF or CR-only line endings. Fields
holding the delimiter, quotes or line breaks are quoted ("a ""quoted"" word"). A quoted field
left open to the end of the file is an error naming the line it starts on; one that seems to
have taken in rows of its own is a warning. Rows whose fields are all empty are skipped (they
get no number), and rows whose template columns (the id column aside) are all empty are
still built; both are listed in warnings, with their line numbers. A CSV build also writes
OUTPUT.source.json beside it (stem + .source.json: the CSV's path, size, mtime, sha256,
delimiter and BOM, and how the custom ids were made) so that submit.py remembers the CSV and
results can be written back into it, with the same delimiter and BOM."""

from __future__ import annotations

from typing import Optional, Sequence

from _dwbatches.core import output
from _dwbatches.workflow import cli
from _dwbatches.workflow.building import BuildCommand, build_command

OPTIONS = BuildCommand


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=False, script=__file__)
    return cli.run(parser, OPTIONS, argv, lambda command, _: build_command(command))


if __name__ == "__main__":
    raise SystemExit(main())
