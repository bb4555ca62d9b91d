"""Building a batch file: requests from prompts, a CSV or a JSONL file, validated as written;
or an existing batch file rebuilt with another model, answer budget or reasoning effort.

create_batch_file.py in one function, ``build(output_path, BuildOptions)``: check the options
once, read the input (see ``sources``), render each row with the template, write the requests
(``builder.BatchFileWriter``, which validates each line) and, for a CSV, the sidecar that ties
the batch file to it. With ``from_batch``, every request of the batch file is kept (ids and
order unchanged) and changed by ``requestedit.Changes``, and the input's CSV sidecar goes
along. Nothing here talks to the API.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..api import reasoning
from ..api.reasoning import DEFAULT_EFFORT, EFFORTS
from ..api.requestedit import Changes
from ..api.requestrules import MAX_OUTPUT_LIMIT
from ..build.builder import (
    DEFAULT_CHAT_MODEL,
    DEFAULT_EMBEDDING_MODEL,
    EMBEDDINGS,
    ENDPOINTS,
    EXAMPLE_PROMPTS,
    BatchFileWriter,
    LineTemplate,
    build_request,
    check_custom_id,
    custom_id_for,
    default_model,
    prefix_from_path,
    read_sidecar,
    remove_sidecar,
    row_id_text,
    sidecar_path,
    write_sidecar,
)
from ..build.sources import DELIMITER_NAMES, CsvRows, iter_jsonl_rows, iter_prompts, line_list, parse_delimiter
from ..build.template import Template, placeholder_hint
from ..core import commands
from ..core.errors import InputError, UsageError
from ..core.files import refuse_overwrite
from ..core.flags import check_number
from ..core.optionspec import group, number, option, to_argv
from ..core.output import Outcome, narrate
from ..jobs.job import default_job_dir
from ..jobs.jobrecord import sha256_file
from ..submit.planning import job_dir_for_next
from ..validation.validate import MAX_BODY_BYTES, iter_requests, validated_input

# A trial: at most this many requests (one chunk) go straight to submit.py; more go through its
# dry run first, which shows the cost before anything is sent.
TRIAL_REQUESTS = 100


# The --help sections of create_batch_file.py's flags.
INPUT = "input (one of; none writes an example file)"
REQUEST = "request"


@dataclass
class BuildOptions:
    """What create_batch_file.py was given: the input (one of prompts, csv, jsonl, from_batch;
    none writes example prompts), how rows become prompts and ids, and the request's options
    (``endpoint`` None: chat completions)."""

    prompts: Optional[str] = option(
        "--prompts",
        metavar="FILE",
        group=INPUT,
        exclusive="input",
        show=commands.display_path,
        help="one prompt per line ('-' = stdin); blank lines are skipped",
    )
    csv: Optional[str] = option(
        "--csv",
        metavar="FILE",
        group=INPUT,
        exclusive="input",
        show=commands.display_path,
        help="a CSV with a header row; needs --template (or a 'prompt' column)",
    )
    jsonl: Optional[str] = option(
        "--jsonl",
        metavar="FILE",
        group=INPUT,
        exclusive="input",
        show=commands.display_path,
        help="one JSON object per line; needs --template (or a 'prompt' field)",
    )
    from_batch: Optional[str] = option(
        "--from-batch",
        metavar="FILE",
        group=INPUT,
        exclusive="input",
        show=commands.display_path,
        help="an existing batch JSONL file, rebuilt with -m, --max-tokens and --reasoning (every request kept)",
    )
    template: Optional[str] = option(
        "--template",
        metavar="TEXT",
        group=INPUT,
        help="prompt template with {column} / {field} placeholders ({a.b} reaches nested fields)",
    )
    delimiter: Optional[str] = option(
        "--delimiter",
        metavar="CHAR",
        group=INPUT,
        help="CSV column separator: , ; tab (or \\t) or | (default: detected from the header row)",
    )
    id_column: Optional[str] = option(
        "--id-column",
        "--id-field",
        metavar="NAME",
        group=INPUT,
        help="column/field holding a unique row id, used in the custom ids",
    )
    id_prefix: Optional[str] = option(
        "--id-prefix",
        metavar="TEXT",
        group=INPUT,
        help="custom id prefix (default: the input file name without its extension; '' for bare ids)",
    )
    limit: Optional[int] = option(
        "--limit", type=int, metavar="N", group=INPUT, help="use only the first N rows (a trial run)"
    )
    endpoint: Optional[str] = option("--endpoint", choices=ENDPOINTS, group=REQUEST, help=f"default {ENDPOINTS[0]}")
    model: Optional[str] = option(
        "-m",
        "--model",
        group=REQUEST,
        help=f"model (default {DEFAULT_CHAT_MODEL}; embeddings {DEFAULT_EMBEDDING_MODEL})",
    )
    system: Optional[str] = option(
        "--system", metavar="TEXT", group=REQUEST, help="system prompt (/v1/responses: instructions)"
    )
    temperature: Optional[float] = option(
        "--temperature", type=float, metavar="T", group=REQUEST, show=number, help="sampling temperature (0 or more)"
    )
    max_tokens: Optional[int] = option(
        "--max-tokens",
        type=int,
        metavar="N",
        group=REQUEST,
        help="the most tokens an answer may use, thinking included (/v1/responses: max_output_tokens)",
    )
    top_p: Optional[float] = option(
        "--top-p", type=float, metavar="P", group=REQUEST, show=number, help="nucleus sampling (above 0, at most 1)"
    )
    stop: List[str] = option("--stop", metavar="TEXT", repeat=True, group=REQUEST, help="stop sequence (repeatable)")
    response_format_json: bool = option(
        "--response-format-json", switch=True, group=REQUEST, help="ask for a JSON object (JSON mode)"
    )
    json_schema: Optional[str] = option(
        "--json-schema",
        metavar="FILE",
        group=REQUEST,
        show=commands.display_path,
        help="ask for JSON matching this JSON Schema (strict)",
    )
    extra_body: Optional[str] = option(
        "--extra-body", metavar="JSON", group=REQUEST, help="more body fields, e.g. '{\"seed\": 1}'"
    )
    reasoning: Optional[str] = option(
        "--reasoning",
        choices=EFFORTS,
        group=REQUEST,
        help="how much the model thinks before it answers: none (off; classification and extraction), low, "
        f"medium or high (default: the model's own; {DEFAULT_EFFORT} for the Qwen3 models and gpt-oss)",
    )
    max_body_bytes: int = option(
        "--max-body-bytes", type=int, default=MAX_BODY_BYTES, group=REQUEST, hidden=True, help="(tests)"
    )
    output: str = field(default="", repr=False)


@dataclass
class BuildCommand:
    """create_batch_file.py's output file and options (each field is also its flag)."""

    output: Optional[str] = option(
        "OUTPUT.jsonl",
        positional=True,
        show=commands.display_path,
        help="the batch file to write (replaced atomically)",
    )
    build: BuildOptions = group(BuildOptions)


def build_command(command: BuildCommand) -> Outcome:
    """create_batch_file.py with its options."""
    return build(str(command.output), command.build)


def rebuild_command(input_path: str, model: str, reasoning: Optional[str], max_tokens: Optional[int]) -> str:
    """create_batch_file.py --from-batch: ``input_path`` rebuilt for ``model`` (list_models.py
    --for), into ``<stem>.<model>.jsonl`` beside it (``.2``, ``.3``... when that exists)."""
    stem, ext = os.path.splitext(input_path)
    name = re.sub(r"[^a-z0-9.]+", "-", model.rsplit("/", 1)[-1].lower()).strip("-.") or "model"
    out, n = f"{stem}.{name}{ext or '.jsonl'}", 2
    while os.path.exists(out):
        out, n = f"{stem}.{name}.{n}{ext or '.jsonl'}", n + 1
    opts = BuildOptions(from_batch=input_path, model=model, reasoning=reasoning, max_tokens=max_tokens)
    return commands.command("create_batch_file.py", *to_argv(BuildCommand(output=out, build=opts)))


def build(output_path: str, opts: BuildOptions) -> Outcome:
    """Write the batch file ``output_path`` (atomically) and report it."""
    opts.output = output_path
    check_number("--temperature", opts.temperature, "0.7", at_least=0)
    check_number("--top-p", opts.top_p, "0.9", above=0, at_most=1)
    check_number("--limit", opts.limit, "20", at_least=1)
    check_number("--max-tokens", opts.max_tokens, "500", at_least=1, at_most=MAX_OUTPUT_LIMIT)
    check_number("--max-body-bytes", opts.max_body_bytes, str(MAX_BODY_BYTES), at_least=1)
    if opts.from_batch is not None:
        return _rebuild(opts)
    endpoint = opts.endpoint or ENDPOINTS[0]
    if (opts.template or opts.id_column) and not (opts.csv or opts.jsonl):
        flag = "--template" if opts.template else "--id-column"
        raise UsageError(f"{flag} needs --csv or --jsonl", hint="--prompts takes one literal prompt per line.")
    if opts.delimiter is not None:
        if not opts.csv:
            raise UsageError("--delimiter needs --csv", hint="Only CSV input has a column separator.")
        parse_delimiter(opts.delimiter)
    extra = _json_object(opts.extra_body, "--extra-body") if opts.extra_body else None
    schema = _read_schema(opts.json_schema) if opts.json_schema else None
    schema_name = (
        os.path.splitext(os.path.basename(opts.json_schema))[0].split(".")[0] if opts.json_schema else "output"
    )
    options: Dict[str, Any] = dict(
        system=opts.system,
        temperature=opts.temperature,
        max_tokens=opts.max_tokens,
        top_p=opts.top_p,
        stop=opts.stop or None,
        json_mode=opts.response_format_json,
        json_schema=schema,
        schema_name=schema_name,
        extra_body=extra,
    )
    model = opts.model or default_model(endpoint)
    warnings: List[str] = []
    if opts.reasoning is not None:
        options["extra_body"] = _with_effort(extra, model, endpoint, opts.reasoning, warnings)
    # check the options once, before reading any input
    build_request(endpoint, "check", "check", model, **options)

    input_path = opts.prompts or opts.csv or opts.jsonl
    if input_path is None and os.path.isfile(opts.output):
        raise UsageError(
            f"OUTPUT {opts.output} exists; with no input (--prompts, --csv or --jsonl), "
            "create_batch_file.py writes example prompts and will not replace a file with them",
            hint="Pass the input the file should be built from (e.g. --prompts prompts.txt), or name "
            "an OUTPUT that does not exist yet for the example.",
        )
    sidecar = sidecar_path(opts.output)
    flag = "--prompts" if opts.prompts else "--csv" if opts.csv else "--jsonl"
    given = {
        f"input given with {flag}": None if input_path == "-" else input_path,
        "JSON schema given with --json-schema": opts.json_schema,
    }
    refuse_overwrite({"OUTPUT": opts.output, "the sidecar of OUTPUT": sidecar}, given)
    prefix = (
        opts.id_prefix
        if opts.id_prefix is not None
        else prefix_from_path(input_path, "example" if input_path is None else "prompt")
    )
    if prefix and (check_custom_id(prefix) or len(prefix) > 40):
        raise UsageError(
            f"--id-prefix {prefix!r} cannot start a custom id ({check_custom_id(prefix) or 'longer than 40 bytes'})",
            hint="Use a short prefix of letters, digits, '-' and '_'.",
        )

    source: Optional[Dict[str, Any]] = None
    rows: Iterator[Tuple[int, str, str]]  # (source line, custom id, prompt)
    csv_input: Optional[CsvRows] = None
    csv_stat: Optional[os.stat_result] = None
    blank_lines: List[int] = []  # CSV rows whose template columns are all empty
    if opts.csv:
        if opts.csv != "-":
            csv_stat = _stat(opts.csv)
        csv_input = CsvRows(opts.csv, opts.delimiter)
        _narrate_csv_format(csv_input)
        rows = _csv_rows(csv_input, opts, prefix, blank_lines)
        if opts.csv != "-":
            source = {
                "kind": "csv",
                "path": os.path.abspath(opts.csv),
                "id_column": opts.id_column,
                "ids_from_row_numbers": opts.id_column is None,
                "id_prefix": prefix,
                "lines_in_row_order": True,
                "delimiter": csv_input.delimiter,
                "bom": csv_input.bom,
                "template": opts.template if opts.template is not None else "{prompt}",
            }
    elif opts.jsonl:
        rows = _jsonl_rows(opts, prefix)
    elif opts.prompts:
        rows = ((n, custom_id_for(prefix, n), p) for n, p in iter_prompts(opts.prompts))
    else:
        rows = ((n, custom_id_for(prefix, n), p) for n, p in enumerate(EXAMPLE_PROMPTS, 1))

    if opts.limit is not None:
        rows = itertools.islice(rows, opts.limit)  # reads no row past the last one taken
    writer = BatchFileWriter(opts.output, max_body_bytes=opts.max_body_bytes)
    template = LineTemplate.of(lambda cid, prompt: build_request(endpoint, cid, prompt, model, **options))
    empty = 0
    try:
        if template is not None:
            add = writer.add_built
            for line, cid, prompt in rows:
                if not prompt or prompt.isspace():
                    if not (blank_lines and blank_lines[-1] == line):
                        empty += 1  # (CSV rows with every template column empty have their own warning)
                add(template, cid, prompt, line)
        for line, cid, prompt in rows:  # (none left after the template's loop)
            if not prompt.strip() and not (blank_lines and blank_lines[-1] == line):
                empty += 1
            writer.add(build_request(endpoint, cid, prompt, model, **options), line=line)
        if source is not None and opts.csv and csv_stat is not None:
            source.update(_fingerprint(opts.csv, csv_stat))
        summary = writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        if csv_input is not None:
            csv_input.close()

    warnings.extend(summary["warnings"])
    if csv_input is not None:
        warnings.extend(csv_input.warnings())
    if blank_lines:
        warnings.append(
            f"{len(blank_lines)} row(s) have every column the template uses empty; their "
            f"requests were built anyway (lines {line_list(blank_lines)})"
        )
    if empty:
        warnings.append(f"{empty} prompt(s) are empty")
    if input_path is None:
        narrate(f"no input given: wrote {len(EXAMPLE_PROMPTS)} example prompts to {opts.output}")
    return _finish(opts.output, summary, source, warnings)


def _finish(
    output_path: str,
    summary: Dict[str, Any],
    source: Optional[Dict[str, Any]],
    warnings: List[str],
    changes: Optional[Changes] = None,
) -> Outcome:
    """The sidecar (written for a CSV source, else removed) and the report of a written file."""
    if source is not None:
        source["rows"] = summary["requests"]
        write_sidecar(output_path, source)
    else:
        remove_sidecar(output_path)  # a sidecar from an earlier CSV build no longer applies
    from _dwbatches.core.commands import command, display_path

    submit = [display_path(summary["path"])]
    fresh = job_dir_for_next(summary["path"], default_job_dir(summary["path"]))
    if fresh is not None:  # the default job directory holds another input's job
        submit += ["--job", display_path(fresh)]
    if summary["requests"] > TRIAL_REQUESTS or summary["chunks"] > 1:
        submit.append("--dry-run")  # the cost checked before a job of that size is sent (its next submits)
    doc = {
        "path": summary["path"],
        "requests": summary["requests"],
        "bytes": summary["bytes"],
        "models": summary["models"],
        "endpoint": summary["endpoint"],
        "chunks": summary["chunks"],
        "source": source,
        "warnings": warnings,
        "next": command("submit.py", *submit),
    }
    if changes is not None:
        doc["changes"] = changes.to_dict()
    for w in warnings:
        narrate(f"warning: {w}")
    narrate(f"wrote {summary['requests']} request(s), {summary['bytes']} bytes, to {output_path}")
    return Outcome(doc)


def _effort_refusal(flag: str, model: str, problem: str) -> UsageError:
    """An effort ``model`` cannot take, blamed on ``flag``; the hint names the efforts it takes."""
    takes = reasoning.efforts(model) or (reasoning.DEFAULT_EFFORT,)
    room = reasoning.THINKING_ROOM.get(takes[0], reasoning.THINKING_ROOM[reasoning.DEFAULT_EFFORT])
    listed = " or ".join([", ".join(takes[:-1]), takes[-1]] if len(takes) > 1 else takes)
    return UsageError(
        f"{flag}: {problem}",
        hint=f"{model} takes --reasoning {listed}; {takes[0]} thinks least: leave about {room} tokens of "
        "--max-tokens for it on top of the answer.",
    )


def _no_embeddings(flag: str, requests: str = "") -> UsageError:
    return UsageError(
        f"{flag} does not apply to /v1/embeddings{requests}",
        hint=f"Drop {flag}: embeddings requests are {{model, input}}, and embeddings models do not reason.",
    )


def _not_reasoning(model: str, effort: str, requests: str = "its requests") -> str:
    return f"--reasoning {effort}: {model} does not reason (it answers at once), so nothing was written for {requests}"


def _with_effort(
    extra: Optional[Dict[str, Any]], model: str, endpoint: str, effort: str, warnings: List[str]
) -> Optional[Dict[str, Any]]:
    """The --extra-body fields with those that ask ``model`` for ``effort`` (the rule of
    ``requestedit.Changes``); refuses what cannot be asked (exit 2, blaming --reasoning)."""
    if endpoint == EMBEDDINGS:
        raise _no_embeddings("--reasoning")
    problem = reasoning.effort_problem(model, effort)
    if problem is not None:
        raise _effort_refusal(f"--reasoning {effort}", model, problem)
    if extra and reasoning.requested_effort(extra, endpoint) is not None:
        warnings.append(
            f"--reasoning {effort} replaces the reasoning effort that --extra-body asks for "
            f"({reasoning.requested_effort(extra, endpoint)})"
        )
    fam = reasoning.family(model)
    if fam is not None and not fam.reasons:
        warnings.append(_not_reasoning(model, effort))
        return extra
    body = Changes(reasoning=effort).apply(dict(extra or {}, model=model), endpoint)
    del body["model"]
    return body


# The request flags that --from-batch does not take: its requests are kept as they are, but for
# the model, the answer budget and the reasoning effort.
_BUILD_ONLY = (
    ("--template", "template"),
    ("--delimiter", "delimiter"),
    ("--id-column", "id_column"),
    ("--id-prefix", "id_prefix"),
    ("--endpoint", "endpoint"),
    ("--system", "system"),
    ("--temperature", "temperature"),
    ("--top-p", "top_p"),
    ("--stop", "stop"),
    ("--response-format-json", "response_format_json"),
    ("--json-schema", "json_schema"),
    ("--extra-body", "extra_body"),
)


def _rebuild(opts: BuildOptions) -> Outcome:
    """--from-batch: every request of a batch file, in order and with its custom_id, with the
    changes of -m, --max-tokens and --reasoning made (``requestedit.Changes``), written and
    validated like any build; the input's CSV sidecar is copied to the output's."""
    path = opts.from_batch or ""
    given = [flag for flag, name in _BUILD_ONLY if getattr(opts, name)]
    if given:
        raise UsageError(
            f"{given[0]} does not go with --from-batch, which keeps each request as it is",
            hint="--from-batch changes only the model (-m), the answer budget (--max-tokens) and the reasoning "
            "effort (--reasoning); build from the original input to change anything else.",
        )
    changes = Changes(model=opts.model, max_tokens=opts.max_tokens, reasoning=opts.reasoning)
    refuse_overwrite(
        {"OUTPUT": opts.output, "the sidecar of OUTPUT": sidecar_path(opts.output)},
        {"input given with --from-batch": path, "sidecar of the --from-batch input": sidecar_path(path)},
    )
    rep = validated_input(path, "--from-batch", "nothing was written")
    for flag, value in (("--reasoning", opts.reasoning), ("--max-tokens", opts.max_tokens)):
        if value is not None and EMBEDDINGS in rep.endpoints:
            raise _no_embeddings(flag, f", and {rep.endpoints[EMBEDDINGS]} request(s) of {path} are for it")
    source, note = read_sidecar(path, sha256_file(path))
    if note:
        narrate(note)
    checked: Dict[Tuple[Any, str, Optional[str]], None] = {}
    silent: Dict[str, int] = {}  # models that do not reason: requests --reasoning wrote nothing for
    writer = BatchFileWriter(opts.output, max_body_bytes=opts.max_body_bytes)
    try:
        requests = iter_requests(path)
        if opts.limit is not None:
            requests = itertools.islice(requests, opts.limit)
        for line, obj, _ in requests:
            body, url = obj["body"], obj["url"]
            key = (body.get("model"), url, reasoning.requested_effort(body, url))
            if key not in checked:
                _check_change(changes, body, url, line)
                checked[key] = None
            changed = changes.apply(body, url)
            model = str(changed.get("model"))
            if opts.reasoning is not None and reasoning.efforts(model) == ():
                silent[model] = silent.get(model, 0) + 1
            writer.add(dict(obj, body=changed), line=line)
        summary = writer.close()
    except BaseException:
        writer.abort()
        raise
    warnings = [_not_reasoning(m, opts.reasoning or "", f"its {n} request(s)") for m, n in silent.items()]
    warnings.extend(summary["warnings"])
    narrate(f"{path}: {changes.describe() or 'unchanged'}")
    return _finish(opts.output, summary, source, warnings, changes)


def _check_change(changes: Changes, body: Dict[str, Any], url: str, line: int) -> None:
    """Refuse a change whose request could not run (exit 2, blaming the flag that made it)."""
    problem = changes.problem(body, url)
    if problem is None:
        return
    changed = changes.apply(body, url)
    model = str(changed.get("model"))
    if changes.reasoning is not None:
        raise _effort_refusal(f"--reasoning {changes.reasoning}", model, problem)
    effort = reasoning.requested_effort(changed, url)
    raise _effort_refusal(f"-m {changes.model}", model, f"line {line} asks for reasoning {effort}, but {problem}")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (JSON has no NaN or Infinity)")


def _json_object(text: str, what: str) -> Dict[str, Any]:
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise UsageError(f"{what} is not valid JSON: nested too deeply", hint="Pass a JSON object.") from None
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


def _row_id(row: Dict[str, Any], column: str, line: int, prefix: str) -> str:
    rid = row_id_text(row.get(column), line, column)
    cid = custom_id_for(prefix, row_id=rid)
    err = check_custom_id(cid)
    if err:
        raise InputError(
            f"line {line}: the id {rid!r} cannot be used: custom id {cid!r}: {err}",
            hint="Row ids must be short (the custom id, prefix included, is at most 64 bytes) "
            "and free of control characters; or drop --id-column to number the rows.",
            line=line,
        )
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
        raise InputError(
            f"{path} changed while it was being read",
            hint="Wait until whatever writes the CSV has finished, then run the command again.",
        )
    return {"bytes": after.st_size, "mtime": after.st_mtime, "sha256": digest}


def _narrate_csv_format(csv_input: CsvRows) -> None:
    if csv_input.delimiter_detected and csv_input.delimiter != ",":
        narrate(
            f"{csv_input.path}: the header row is split by {DELIMITER_NAMES[csv_input.delimiter]}s "
            f"({csv_input.delimiter!r}), so that is the delimiter; pass --delimiter to choose another"
        )
    if csv_input.newline == "\r":
        narrate(f"{csv_input.path}: lines end with a lone CR (an old Mac export); each CR ends a line")


def _csv_rows(csv_input: CsvRows, opts: Any, prefix: str, blank_lines: List[int]) -> Iterator[Tuple[int, str, str]]:
    header = csv_input.header
    where = opts.csv
    if opts.id_column is not None and opts.id_column not in header:
        raise InputError(
            f"{where}: line 1: the id column {opts.id_column!r} is not in the header; columns: {', '.join(header)}",
            hint="Pass one of the columns to --id-column.",
            line=1,
        )
    if opts.template is None:
        if "prompt" not in header:
            raise UsageError(
                "--csv needs --template (the CSV has no 'prompt' column)",
                hint=f'e.g. --template "...{{{header[0]}}}..."; columns: {", ".join(header)}',
            )
        template = Template("{prompt}")
    else:
        template = Template(opts.template)
    missing = template.missing(header)
    if missing:
        raise InputError(
            f"{where}: line 1: the template placeholder {{{missing[0]}}} is not a column of the CSV; "
            f"available columns: {', '.join(header)}",
            hint=placeholder_hint(missing[0], "Placeholders must match the header exactly (case and spaces included)."),
            line=1,
        )
    # the columns whose values make the prompt (the id column alone does not)
    used = [f for f in dict.fromkeys(template.fields) if f != opts.id_column]
    only = used[0] if len(used) == 1 else None
    render, id_column, head = template.render, opts.id_column, f"{prefix}-" if prefix else ""
    number = 0
    for line, row in csv_input:
        number += 1
        if id_column is None:
            cid = custom_id_for(prefix, number)
        else:
            rid = row[id_column]
            cid = head + rid
            if not rid or rid[0].isspace() or rid[-1].isspace() or check_custom_id(cid):  # anything unusual:
                cid = _row_id(row, id_column, line, prefix)  # the full rules, and their messages
        prompt = render(row, line, "column")
        if only is not None:
            value = row[only]
            if not value or value.isspace():
                blank_lines.append(line)
        elif used and not any(row[f].strip() for f in used):
            blank_lines.append(line)
        yield line, cid, prompt


def _jsonl_rows(opts: Any, prefix: str) -> Iterator[Tuple[int, str, str]]:
    template = Template(opts.template if opts.template is not None else "{prompt}")
    for line, obj in iter_jsonl_rows(opts.jsonl):
        if opts.template is None and "prompt" not in obj:
            raise UsageError(
                "--jsonl needs --template (the objects have no 'prompt' field)",
                hint=f'e.g. --template "...{{field}}..."; fields on line {line}: {", ".join(obj) or "(none)"}',
            )
        if opts.id_column is not None:
            if opts.id_column not in obj:
                raise InputError(
                    f"{opts.jsonl}: line {line}: the id field {opts.id_column!r} is missing; fields: "
                    f"{', '.join(obj) or '(none)'}",
                    hint="Every object needs the id field.",
                    line=line,
                )
            cid = _row_id(obj, opts.id_column, line, prefix)
        else:
            cid = custom_id_for(prefix, line)
        yield line, cid, template.render(obj, line, "field", dotted=True, source=opts.jsonl)
