#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = ["requests>=2.28,<3", "python-dotenv>=1.0,<2"]
# ///
"""Build a batch JSONL file from prompts, a CSV or a JSONL file (local only: no key, no network).

Custom ids are <prefix>-<row id> when --id-column names an id column (or field), else
<prefix>-<line or row number, zero-padded to 6 digits>; the prefix defaults to the input's
file name. Duplicate or unusable ids, and template placeholders the input lacks, are errors
that name the line. The file is validated and written atomically: OUTPUT is replaced only by
a complete, valid file. With no input option a 5-prompt example file is written.

examples:
  python3 scripts/create_batch_file.py requests.jsonl --prompts prompts.txt --max-tokens 500
  cat prompts.txt | python3 scripts/create_batch_file.py requests.jsonl --prompts -
  python3 scripts/create_batch_file.py reviews.jsonl --csv reviews.csv --id-column id \\
      --template "Classify the sentiment of this review as positive or negative: {text}" \\
      --system "Answer with one word." --max-tokens 5
  python3 scripts/create_batch_file.py facts.jsonl --jsonl docs.jsonl --id-column doc_id \\
      --template "Extract the people named in: {body}" --json-schema people.schema.json
  python3 scripts/create_batch_file.py vectors.jsonl --prompts texts.txt --endpoint /v1/embeddings

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
results can be written back into it, with the same delimiter and BOM.

output (stdout, JSON): path, requests, bytes, models, endpoint, chunks (files submit.py will
upload), source, warnings, next (the submit command)."""

from __future__ import annotations

import argparse
import itertools
import json
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from _dwbatches import output
from _dwbatches.builder import (
    DELIMITER_NAMES,
    ENDPOINTS,
    EXAMPLE_PROMPTS,
    BatchFileWriter,
    CsvRows,
    Template,
    build_request,
    check_custom_id,
    custom_id_for,
    default_model,
    iter_jsonl_rows,
    iter_prompts,
    line_list,
    parse_delimiter,
    prefix_from_path,
    remove_sidecar,
    row_id_text,
    sidecar_path,
    write_sidecar,
)
from _dwbatches.errors import EXIT_OK, InputError, UsageError
from _dwbatches.files import refuse_overwrite
from _dwbatches.job import sha256_file
from _dwbatches.validate import MAX_BODY_BYTES


def _json_object(text: str, what: str) -> Dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}", hint="Pass a JSON object, e.g. '{\"seed\": 7}'.") from None
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object")
    return value


def _read_schema(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read the JSON schema {path}: {exc.strerror or exc}") from None
    schema = _json_object(text, f"the JSON schema in {path}")
    # accept both a bare schema and an OpenAI-style {"name", "schema", "strict"} wrapper
    if isinstance(schema.get("schema"), dict) and "type" not in schema:
        return schema["schema"]
    return schema


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = output.make_parser(__doc__, network=False)
    parser.add_argument("output", metavar="OUTPUT.jsonl", help="the batch file to write (replaced atomically)")
    src = parser.add_argument_group("input (one of; none writes an example file)")
    ex = src.add_mutually_exclusive_group()
    ex.add_argument("--prompts", metavar="FILE", help="one prompt per line ('-' = stdin); blank lines are skipped")
    ex.add_argument("--csv", metavar="FILE", help="a CSV with a header row; needs --template (or a 'prompt' column)")
    ex.add_argument("--jsonl", metavar="FILE", help="one JSON object per line; needs --template (or a 'prompt' field)")
    src.add_argument("--template", metavar="TEXT",
                     help='prompt template with {column} / {field} placeholders ({a.b} reaches nested fields)')
    src.add_argument("--delimiter", metavar="CHAR",
                     help="CSV column separator: , ; tab (or \\t) or | (default: detected from the header row)")
    src.add_argument("--id-column", "--id-field", dest="id_column", metavar="NAME",
                     help="column/field holding a unique row id, used in the custom ids")
    src.add_argument("--id-prefix", metavar="TEXT",
                     help="custom id prefix (default: the input file name; '' for bare ids)")
    src.add_argument("--limit", type=int, metavar="N", help="use only the first N rows (a trial run)")
    req = parser.add_argument_group("request")
    req.add_argument("--endpoint", choices=ENDPOINTS, default=ENDPOINTS[0], help="default %(default)s")
    req.add_argument("-m", "--model",
                     help="model (default Qwen/Qwen3.5-35B-A3B-FP8; embeddings Qwen/Qwen3-Embedding-8B)")
    req.add_argument("--system", metavar="TEXT", help="system prompt (/v1/responses: instructions)")
    req.add_argument("--temperature", type=float, metavar="T")
    req.add_argument("--max-tokens", type=int, metavar="N", help="(/v1/responses: max_output_tokens)")
    req.add_argument("--top-p", type=float, metavar="P")
    req.add_argument("--stop", action="append", metavar="TEXT", help="stop sequence (repeatable)")
    req.add_argument("--response-format-json", action="store_true", help="ask for a JSON object (JSON mode)")
    req.add_argument("--json-schema", metavar="FILE", help="ask for JSON matching this JSON Schema (strict)")
    req.add_argument("--extra-body", metavar="JSON", help="more body fields, e.g. '{\"seed\": 1}'")
    req.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES, help=argparse.SUPPRESS)
    args = output.parse_args(parser, argv)

    def body() -> int:
        if args.limit is not None and args.limit < 1:
            raise UsageError("--limit must be at least 1")
        if args.max_tokens is not None and args.max_tokens < 1:
            raise UsageError("--max-tokens must be at least 1")
        if (args.template or args.id_column) and not (args.csv or args.jsonl):
            flag = "--template" if args.template else "--id-column"
            raise UsageError(f"{flag} needs --csv or --jsonl",
                             hint="--prompts takes one literal prompt per line.")
        if args.delimiter is not None:
            if not args.csv:
                raise UsageError("--delimiter needs --csv", hint="Only CSV input has a column separator.")
            parse_delimiter(args.delimiter)
        extra = _json_object(args.extra_body, "--extra-body") if args.extra_body else None
        schema = _read_schema(args.json_schema) if args.json_schema else None
        schema_name = os.path.splitext(os.path.basename(args.json_schema))[0].split(".")[0] if args.json_schema \
            else "output"
        options: Dict[str, Any] = dict(system=args.system, temperature=args.temperature, max_tokens=args.max_tokens,
                                       top_p=args.top_p, stop=args.stop, json_mode=args.response_format_json,
                                       json_schema=schema, schema_name=schema_name, extra_body=extra)
        model = args.model or default_model(args.endpoint)
        # check the options once, before reading any input
        build_request(args.endpoint, "check", "check", model, **options)

        input_path = args.prompts or args.csv or args.jsonl
        sidecar = sidecar_path(args.output)
        flag = "--prompts" if args.prompts else "--csv" if args.csv else "--jsonl"
        given = {f"input given with {flag}": None if input_path == "-" else input_path,
                 "JSON schema given with --json-schema": args.json_schema}
        refuse_overwrite({"OUTPUT": args.output, "the sidecar of OUTPUT": sidecar}, given)
        prefix = args.id_prefix if args.id_prefix is not None else prefix_from_path(
            input_path, "example" if input_path is None else "prompt")
        if prefix and (check_custom_id(prefix) or len(prefix) > 40):
            raise UsageError(f"--id-prefix {prefix!r} cannot start a custom id "
                             f"({check_custom_id(prefix) or 'longer than 40 bytes'})",
                             hint="Use a short prefix of letters, digits, '-' and '_'.")

        source: Optional[Dict[str, Any]] = None
        rows: Iterator[Tuple[int, str, str]]  # (source line, custom id, prompt)
        csv_input: Optional[CsvRows] = None
        csv_stat: Optional[os.stat_result] = None
        blank_lines: List[int] = []  # CSV rows whose template columns are all empty
        if args.csv:
            if args.csv != "-":
                csv_stat = _stat(args.csv)
            csv_input = CsvRows(args.csv, args.delimiter)
            _narrate_csv_format(csv_input)
            rows = _csv_rows(csv_input, args, prefix, blank_lines)
            if args.csv != "-":
                source = {"kind": "csv", "path": os.path.abspath(args.csv), "id_column": args.id_column,
                          "ids_from_row_numbers": args.id_column is None, "id_prefix": prefix,
                          "lines_in_row_order": True, "delimiter": csv_input.delimiter, "bom": csv_input.bom}
        elif args.jsonl:
            rows = _jsonl_rows(args, prefix)
        elif args.prompts:
            rows = ((n, custom_id_for(prefix, n), p) for n, p in iter_prompts(args.prompts))
        else:
            rows = ((n, custom_id_for(prefix, n), p) for n, p in enumerate(EXAMPLE_PROMPTS, 1))

        if args.limit is not None:
            rows = itertools.islice(rows, args.limit)  # reads no row past the last one taken
        writer = BatchFileWriter(args.output, max_body_bytes=args.max_body_bytes)
        empty = 0
        try:
            for line, cid, prompt in rows:
                if not prompt.strip() and not (blank_lines and blank_lines[-1] == line):
                    empty += 1  # (CSV rows with every template column empty have their own warning)
                writer.add(build_request(args.endpoint, cid, prompt, model, **options), line=line)
            if source is not None and csv_stat is not None:
                source.update(_fingerprint(args.csv, csv_stat))
            summary = writer.close()
        except BaseException:
            writer.abort()
            raise
        finally:
            if csv_input is not None:
                csv_input.close()

        if source is not None:
            source["rows"] = summary["requests"]
            write_sidecar(args.output, source)
        else:
            remove_sidecar(args.output)  # a sidecar from an earlier CSV build no longer applies
        warnings = list(summary["warnings"])
        if csv_input is not None:
            warnings.extend(csv_input.warnings())
        if blank_lines:
            warnings.append(f"{len(blank_lines)} row(s) have every column the template uses empty; their "
                            f"requests were built anyway (lines {line_list(blank_lines)})")
        if empty:
            warnings.append(f"{empty} prompt(s) are empty")
        from _dwbatches.batches import command, display_path
        doc = {"path": summary["path"], "requests": summary["requests"], "bytes": summary["bytes"],
               "models": summary["models"], "endpoint": summary["endpoint"], "chunks": summary["chunks"],
               "source": source, "warnings": warnings,
               "next": command("submit.py", display_path(summary["path"]))}
        for w in warnings:
            output.narrate(f"warning: {w}")
        if input_path is None:
            output.narrate(f"no input given: wrote {len(EXAMPLE_PROMPTS)} example prompts to {args.output}")
        output.narrate(f"wrote {summary['requests']} request(s), {summary['bytes']} bytes, to {args.output}")
        output.emit(doc)
        return EXIT_OK

    return output.run(body)


def _row_id(row: Dict[str, Any], column: str, line: int, prefix: str) -> str:
    rid = row_id_text(row.get(column), line, column)
    cid = custom_id_for(prefix, row_id=rid)
    err = check_custom_id(cid)
    if err:
        raise InputError(f"line {line}: the id {rid!r} cannot be used: custom id {cid!r}: {err}",
                         hint="Row ids must be short (the custom id, prefix included, is at most 64 bytes) "
                              "and free of control characters; or drop --id-column to number the rows.",
                         line=line)
    return cid


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _fingerprint(path: str, before: os.stat_result) -> Dict[str, Any]:
    """The CSV's size, mtime and sha256, for telling later whether it was edited; refuses a
    CSV that changed while it was being read."""
    digest = sha256_file(path)
    after = _stat(path)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise InputError(f"{path} changed while it was being read",
                         hint="Wait until whatever writes the CSV has finished, then run the command again.")
    return {"bytes": after.st_size, "mtime": after.st_mtime, "sha256": digest}


def _narrate_csv_format(csv_input: CsvRows) -> None:
    if csv_input.delimiter_detected and csv_input.delimiter != ",":
        output.narrate(f"{csv_input.path}: the header row is split by {DELIMITER_NAMES[csv_input.delimiter]}s "
                       f"({csv_input.delimiter!r}), so that is the delimiter; pass --delimiter to choose another")
    if csv_input.newline == "\r":
        output.narrate(f"{csv_input.path}: lines end with a lone CR (an old Mac export); each CR ends a line")


def _csv_rows(csv_input: CsvRows, args: Any, prefix: str, blank_lines: List[int]) -> Iterator[Tuple[int, str, str]]:
    header = csv_input.header
    where = args.csv
    if args.id_column is not None and args.id_column not in header:
        raise InputError(f"{where}: line 1: the id column {args.id_column!r} is not in the header; columns: "
                         f"{', '.join(header)}", hint="Pass one of the columns to --id-column.", line=1)
    if args.template is None:
        if "prompt" not in header:
            raise UsageError("--csv needs --template (the CSV has no 'prompt' column)",
                             hint=f"e.g. --template \"...{{{header[0]}}}...\"; columns: {', '.join(header)}")
        template = Template("{prompt}")
    else:
        template = Template(args.template)
    missing = template.missing(header)
    if missing:
        raise InputError(f"{where}: line 1: the template placeholder {{{missing[0]}}} is not a column of the CSV; "
                         f"available columns: {', '.join(header)}",
                         hint="Placeholders must match the header exactly (case and spaces included).", line=1)
    # the columns whose values make the prompt (the id column alone does not)
    used = [f for f in dict.fromkeys(template.fields) if f != args.id_column]
    number = 0
    for line, row in csv_input:
        number += 1
        cid = _row_id(row, args.id_column, line, prefix) if args.id_column else custom_id_for(prefix, number)
        prompt = template.render(row, line, "column")
        if used and not any(row[f].strip() for f in used):
            blank_lines.append(line)
        yield line, cid, prompt


def _jsonl_rows(args: Any, prefix: str) -> Iterator[Tuple[int, str, str]]:
    template = Template(args.template if args.template is not None else "{prompt}")
    for line, obj in iter_jsonl_rows(args.jsonl):
        if args.template is None and "prompt" not in obj:
            raise UsageError("--jsonl needs --template (the objects have no 'prompt' field)",
                             hint=f"e.g. --template \"...{{field}}...\"; fields on line {line}: "
                                  f"{', '.join(obj) or '(none)'}")
        if args.id_column is not None:
            if args.id_column not in obj:
                raise InputError(f"{args.jsonl}: line {line}: the id field {args.id_column!r} is missing; fields: "
                                 f"{', '.join(obj) or '(none)'}", hint="Every object needs the id field.", line=line)
            cid = _row_id(obj, args.id_column, line, prefix)
        else:
            cid = custom_id_for(prefix, line)
        yield line, cid, template.render(obj, line, "field", dotted=True, source=args.jsonl)


if __name__ == "__main__":
    raise SystemExit(main())
