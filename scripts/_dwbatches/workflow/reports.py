"""What each command prints on stdout: one declaration per report (``core.reportspec``).

Each script's ``--help`` shows its report from here, the field lists of SKILL.md and
docs/scripts.md are written from here (``make docs``), and ``tests/test_contract.py`` checks every
document the scripts print against it. A new field is one line here. Shapes that several reports
share (request counts, a batch's row, the cost estimate, the reuse of answers) are declared once.
"""

from __future__ import annotations

from typing import Dict

from ..core.reportspec import (
    BOOL,
    INT,
    NUMBER,
    STR,
    Report,
    Shape,
    extend,
    field,
    forms,
    list_of,
    map_of,
    obj,
    referring,
    report,
)

# -- shared shapes -------------------------------------------------------------------------------

REQUEST_COUNTS = obj(field("total", INT), field("completed", INT), field("failed", INT))
BAD_ANSWERS = obj(field("empty", INT), field("truncated", INT), field("invalid_json", INT), field("filtered", INT))
ANSWER_CHECKS = extend(obj(field("good", INT)), *BAD_ANSWERS.fields)
CHANGES = obj(
    field("model", STR, only="when changed"),
    field("max_tokens", INT, only="when changed"),
    field("reasoning", STR, only="when changed"),
)
CHUNK_REF = obj(
    field("round", INT),
    field("chunk", INT),
    field("held", STR, "why it is held, e.g. over --max-cost", null="when not"),
)
SOURCE = obj(
    field("kind", STR, "csv"),
    field("path", STR),
    field("id_column", STR, null="when ids come from row numbers"),
    field("ids_from_row_numbers", BOOL),
    field("id_prefix", STR, null=""),
    field("lines_in_row_order", BOOL),
    field("delimiter", STR, only="when known"),
    field("bom", BOOL, only="when known"),
    field("template", STR, null=""),
    field("rows", INT, null=""),
    field("sha256", STR, null=""),
    field("bytes", INT, null=""),
    field("mtime", NUMBER, null=""),
    name="source",
)
PRICE = obj(field("input", NUMBER), field("output", NUMBER))

# A batch as poll.py, fetch_results.py and run_batch.py report it.
BATCH = obj(
    field("batch_id", STR),
    field("status", STR, "the server's status; here also deleted or unreachable", null=""),
    field("request_counts", REQUEST_COUNTS),
    field("output_file_id", STR, null=""),
    field("error_file_id", STR, null=""),
    field("expires_at", INT, null=""),
    field("expired_at", INT, only="when present"),
    field("round", INT, only="for a job"),
    field("chunk", INT, only="for a job"),
    name="batch",
)
FETCHED = obj(field("output", INT), field("error", INT))
FETCHED_BATCH = extend(
    BATCH,
    field(
        "fetched",
        FETCHED,
        "how far into each of the server's files the saved download reaches, in the server's line count: a "
        "line the server sent twice counts once",
    ),
    field("new_lines", FETCHED, "the lines this run downloaded: a line sent twice counts twice"),
    field("verified", BOOL, "the download matches the batch's request counts", null="until the batch has ended"),
    field("notes", list_of(STR), only="when the download found something to say"),
    field("unreachable", STR, only="when the batch or its files are gone from the server: why"),
    name="fetched_batch",
)

ESTIMATED_COST = obj(
    field(
        "usd",
        STR,
        "the headline estimate in dollars: the server's figure when it estimated every chunk, else the price "
        "table's low_usd",
        null="when nothing could be priced",
    ),
    field(
        "basis",
        STR,
        "what usd is: server = the server's estimate of every chunk, answers about as long as their prompts, "
        "max_tokens ignored; price_table = each answer about as long as its prompt x 1.1, at most its "
        "max_tokens, at the prices of prices_as_of for window: prices may have changed, the live ones are on "
        "Doubleword's models page",
        null="when nothing could be priced",
    ),
    field(
        "server_usd",
        STR,
        "the sum of the server's estimates of chunks_estimated chunks, which --max-cost compares",
        null="before an upload",
    ),
    field("chunks_estimated", INT, "chunks the server's figure covers"),
    field("chunks", INT),
    field(
        "low_usd",
        STR,
        "the price-table range: low = answers about as long as their prompts, at most max_tokens",
        null="",
    ),
    field(
        "high_usd",
        STR,
        "high = every request uses its whole max_tokens",
        null="when a request sets no max_tokens: its model's output_tokens_high is null",
    ),
    field("input_tokens", INT, "the tokens behind usd", null=""),
    field("output_tokens", INT, null=""),
    field("window", STR, "the completion window priced"),
    field("prices_as_of", STR, "the price table's date"),
    field(
        "models",
        list_of(
            obj(
                field("model", STR),
                field("requests", INT),
                field("input_tokens", INT),
                field("output_tokens_low", INT),
                field("output_tokens_high", INT, null="when a request sets no max_tokens"),
                field("usd_low", STR, null="without a local price"),
                field("usd_high", STR, null=""),
                field("price_per_1m_tokens", PRICE, only="for a model with a local price"),
            )
        ),
    ),
    field("unpriced_models", list_of(STR), only="when the price table lacks a model: the range leaves it out"),
    name="estimated_cost",
)

REUSE = obj(
    field("sent", INT, "requests sent"),
    field("reused", INT, "answers of earlier jobs of the folder"),
    field("copies", INT, "repeats of a request of this job"),
    field("from_jobs", map_of("JOB", INT), "answers reused, by job directory"),
    field("saved_usd_low", STR, "the local estimate of what was not sent", null=""),
    field("saved_usd_high", STR, null=""),
    field(
        "saved_usd",
        STR,
        "what those answers cost when they were got, their tokens priced for this job's window",
        null="until the results are fetched",
    ),
    name="reuse",
)

THIS_RUN = obj(field("uploaded", INT), field("created", INT), field("found", INT, "found on the server"))
BATCHES_OMITTED = field(
    "batches_omitted",
    INT,
    "how many batches the report leaves out: at most 5 are listed, those that need attention first; "
    "--all-batches lists every one",
)
NEXT = field("next", STR, "the command to run next", null="when there is none")
WARNINGS = field("warnings", list_of(STR))

# -- the commands -------------------------------------------------------------------------------

CHECK_SETUP = report(
    "check_setup.py",
    field("ready", BOOL),
    field(
        "checks",
        list_of(obj(field("name", STR), field("ok", BOOL), field("detail", STR), field("fix", STR, null="when ok"))),
    ),
    field("base_url", STR),
    field(
        "server",
        STR,
        "what answers there: doubleword = Doubleword's API, sandbox = the bundled local sandbox, other = a "
        "self-hosted or another server",
    ),
    field("key_source", STR, "where the key came from", null="without a key"),
    field("sandbox", BOOL, "true with --sandbox"),
    field("models", list_of(STR)),
    field(
        "input",
        obj(
            field("path", STR),
            field("kind", STR, "prompts, csv, jsonl or batch"),
            field("columns", list_of(STR), only="for a CSV"),
            field("fields", list_of(STR), only="for a JSONL"),
        ),
        "the user's input when one obvious file is in the working directory",
        null="when there is none or several",
    ),
    field(
        "next",
        STR,
        "the first command for that input: its build with --max-tokens 500 and reasoning off, or a batch "
        "file's dry run; the example prompts' build when the folder holds no input; the file it writes does "
        "not exist yet: reviews.jsonl, else reviews-2.jsonl, ...",
        null="when the input needs a --template or there are several, said on stderr",
    ),
)

CREATE_BATCH_FILE = report(
    "create_batch_file.py",
    field("path", STR),
    field("requests", INT),
    field("bytes", INT),
    field("models", map_of("MODEL", INT), "requests per model"),
    field("endpoint", STR),
    field("chunks", INT, "files submit.py will upload"),
    field("source", SOURCE, "the CSV the file was built from, as its sidecar keeps it", null="for prompts or JSONL"),
    WARNINGS,
    field("changes", CHANGES, "the settings given", only="with --from-batch"),
    field(
        "next",
        STR,
        "the submit command, with --dry-run above 100 requests or one chunk, so that the cost is seen before "
        "anything is sent; with --job NEW_DIR when OUTPUT.dwjob holds another input's job, or a cancelled one",
    ),
)

VALIDATE_BATCH_FILE = report(
    "validate_batch_file.py",
    field("valid", BOOL, "true when no line has an error"),
    field("file", STR, "the file, as given"),
    field("requests", INT, "lines that are valid requests: what submit.py would send"),
    field("bytes", INT, "the file's size"),
    field("lines", INT, "physical lines: requests + blank_lines + invalid_lines"),
    field("blank_lines", INT, "empty or whitespace-only lines, skipped as the server does"),
    field("invalid_lines", INT, "lines with an error, one error each"),
    field("models", map_of("MODEL", INT), "requests per body.model, in order of first use"),
    field("endpoints", map_of("URL", INT), "requests per url, in order of first use"),
    field(
        "errors",
        list_of(obj(field("line", INT), field("custom_id", STR, null=""), field("message", STR))),
        "the first --max-errors errors in line order",
    ),
    field("errors_total", INT, "all errors: invalid_lines, or 1 when the file is empty or only blank lines"),
    field(
        "warnings",
        list_of(STR),
        "what the server accepts but may not be meant, also on stderr: e.g. a max_tokens that leaves a "
        "model that thinks no room for the answer, with the fix",
    ),
    field(
        "estimated_input_tokens",
        INT,
        "each request body's bytes / 4, compact JSON without the envelope, summed: the server's own estimate",
    ),
    field("chunks", INT, "how many files submit.py would upload; 0 when invalid"),
)

SUBMITTED_BATCH = obj(
    field("batch_id", STR, null="until created"),
    field("input_file_id", STR, null="until uploaded"),
    field("round", INT),
    field("chunk", INT),
    field("lines", list_of(INT), "[first, last] line of the input"),
    field("requests", INT),
    field("status", STR, null=""),
)

_SUBMIT = (
    field("job", STR, "the job directory; pass it to the other scripts as --job"),
    field("job_id", STR),
    field("batches", list_of(SUBMITTED_BATCH)),
    field("requests", INT),
    field("chunks", INT),
    field("completion_window", STR),
    field("estimated_cost", ESTIMATED_COST, "also on stderr", null="when nothing is known"),
    field("reuse", REUSE, "what the job did not send: answers at hand, see fetch_results.py", null="with --no-reuse"),
    field("source", SOURCE, "the CSV the input was built from", null="for another input"),
    field("resumed", BOOL),
    field("this_run", THIS_RUN),
    field("unsubmitted", list_of(CHUNK_REF), only="when chunks have no batch, held over --max-cost"),
    NEXT,
    BATCHES_OMITTED,
)

SUBMIT = forms(
    "submit.py",
    Shape(_SUBMIT),
    Shape(
        (
            field("dry_run", BOOL),
            field("job", STR),
            field("job_exists", BOOL),
            field("resumes_job", BOOL, "the job directory holds this input's job", null="when there is no job yet"),
            field("requests", INT),
            field("bytes", INT),
            field("chunks", INT),
            field(
                "plan",
                list_of(
                    obj(
                        field("index", INT),
                        field("start_line", INT),
                        field("end_line", INT),
                        field("start_byte", INT),
                        field("end_byte", INT),
                        field("requests", INT),
                        field("bytes", INT),
                        field("endpoint", STR),
                    )
                ),
                "the files submit.py would upload",
            ),
            field("completion_window", STR),
            field("metadata", map_of("KEY", STR)),
            field("models", map_of("MODEL", INT), "requests per model"),
            field("endpoints", map_of("URL", INT), "requests per url"),
            field(
                "estimated_cost",
                ESTIMATED_COST,
                "as above, of the requests that would be sent; server_usd null: nothing is sent",
                null="when nothing is known",
            ),
            field(
                "reuse",
                REUSE,
                "what a new job would send and not send",
                null="with --no-reuse or for a job that would resume",
            ),
            WARNINGS,
            field(
                "next",
                STR,
                "the submit command; with --job NEW_DIR when the job directory holds another input's job or a "
                "cancelled one, which the real run would refuse",
            ),
        ),
        when="with --dry-run",
    ),
)

POLL = report(
    "poll.py",
    field(
        "status",
        STR,
        "the job's status: not_submitted, in_progress, completed, partially_failed, failed, cancelled, expired, "
        "deleted or mixed",
    ),
    field("finished", BOOL),
    field("request_counts", REQUEST_COUNTS),
    field(
        "answers",
        ANSWER_CHECKS,
        "the answer checks of the job's last fetch when it covered every batch, finished",
        null="until then: poll.py reads no results, the fetch checks them",
    ),
    field("batches", list_of(BATCH)),
    field("unsubmitted", list_of(CHUNK_REF), "chunks without a batch"),
    field(
        "duplicates",
        list_of(obj(field("batch_id", STR), field("duplicate_of", STR), field("round", INT), field("chunk", INT))),
        "second batches the server made for the requests of a chunk, when a create was sent again while one "
        "was in progress: recorded in job.json and cancelled when found running; empty for batch ids",
    ),
    field("rate", NUMBER, "requests/s", null="when unknown"),
    field("eta_seconds", INT, null="when unknown"),
    field("timed_out", BOOL),
    field("job", STR, null="for batch ids"),
    NEXT,
    BATCHES_OMITTED,
)

COST = obj(
    field(
        "usd",
        STR,
        "what the job cost: billed_usd once the server reports it for every batch, else estimated_usd",
        null="",
    ),
    field(
        "basis",
        STR,
        "which of the two usd is: billed = the batches' total_cost in their analytics; estimated = the tokens "
        "the server reported for every answer received, reasoning included, x the price table's price for its "
        "window",
        null="when nothing is known",
    ),
    field("billed_usd", STR, "the sum of the batches' billed total_cost", null="until every batch has one"),
    field("estimated_usd", STR, "the tokens of every answer received x the price table", null="without prices"),
    field("prices_as_of", STR),
    field(
        "rounds",
        list_of(
            obj(
                field("round", INT, null="for batch ids"),
                field("completion_window", STR),
                field("requests", INT),
                field("input_tokens", INT),
                field("output_tokens", INT),
                field("reasoning_tokens", INT),
                field("estimated_usd", STR),
                field("billed_usd", STR, null=""),
                field("usd", STR, null=""),
            )
        ),
    ),
    field("unpriced_models", list_of(STR), only="when the price table lacks a model"),
)

_FETCHED = (
    field("complete", BOOL, "every batch ended and its results are downloaded"),
    field("status", STR, "the job's status, see poll.py"),
    field("request_counts", REQUEST_COUNTS),
    field("requests", INT),
    field("succeeded", INT, "good answers"),
    field("failed", INT, "requests that failed"),
    field("missing", INT, "requests with no result: not run yet, or never"),
    field("answers", ANSWER_CHECKS, "the HTTP 200 results by check: any but good makes exit 5"),
    field("output", STR, "the results file, in input order"),
    field("errors", STR, "the errors file"),
    field("format", STR),
    field("failed_sample", list_of(obj(field("custom_id", STR), field("error", STR))), "up to 5"),
    field("missing_sample", list_of(STR), "up to 5 custom_ids"),
    field(
        "bad_answer_sample",
        list_of(obj(field("custom_id", STR), field("answer_check", STR), field("detail", STR, null=""))),
        "up to 5",
    ),
    field(
        "fix",
        obj(field("changes", CHANGES), field("reason", STR, "one sentence")),
        "the changes for the rerun",
        only="when answers are not good",
        null="when a rerun would not help",
    ),
    field("unexpected", INT, "results whose custom_id is not in the input"),
    field(
        "usage",
        obj(
            field("requests", INT),
            field("input_tokens", INT),
            field("output_tokens", INT),
            field("reasoning_tokens", INT),
        ),
        "every answer received in every round, good or not: each was billed; reasoning counts in the output tokens",
    ),
    field("cost", COST, "amounts in dollars: cents from $1, two significant digits below"),
    field("batches", list_of(FETCHED_BATCH)),
    field("unsubmitted", list_of(CHUNK_REF), only="when a chunk has no batch"),
    field(
        "unreachable",
        list_of(
            obj(
                field("batch_id", STR),
                field("round", INT, only="for a job"),
                field("chunk", INT, only="for a job"),
                field("reason", STR),
                field(
                    "results_lost", INT, "requests it completed whose results were never downloaded", only="for a job"
                ),
            )
        ),
        "then next is null, as a retry would pay for them twice",
        only="when a batch or its files are gone from the server",
    ),
    WARNINGS,
)

FETCH_RESULTS = report(
    "fetch_results.py",
    *_FETCHED,
    field(
        "reuse", REUSE, "answers this job did not send", only="for a job", null="when it was submitted with --no-reuse"
    ),
    field("job", STR, null="for batch ids"),
    field("state", STR, "the state file", only="for batch ids"),
    NEXT,
    field("hint", STR, "how to rerun them", only="for batch ids that finished unsuccessfully"),
    BATCHES_OMITTED,
)

RETRY_FAILED = report(
    "retry_failed.py",
    field("job", STR),
    field("round", INT, "the new or resumed round", null="if none"),
    field("requests", INT, "in that round"),
    field("failed", INT, "failed requests it reruns"),
    field("missing", INT, "requests that never ran it reruns"),
    field("answers", BAD_ANSWERS, "answers it reruns, by check"),
    field("changes", CHANGES, "the settings the rerun requests are sent with, changed from what was submitted"),
    field("sample", list_of(STR), "first custom_ids"),
    field(
        "batches",
        list_of(
            obj(
                field("batch_id", STR, null=""),
                field("chunk", INT),
                field("requests", INT),
                field("status", STR, null=""),
            )
        ),
    ),
    field("dry_run", BOOL),
    field("client_errors", INT, "failures that were HTTP 4xx: they may fail again", only="when a round was counted"),
    field("input", STR, "the round's file", only="when a round was written"),
    field("status", STR, "the job's status", only="when nothing was submitted"),
    field("reason", STR, "why", only="when nothing was submitted"),
    field("running", list_of(STR), "their ids", only="while batches run"),
    field("resumed", BOOL, only="when an interrupted round was resumed"),
    NEXT,
    BATCHES_OMITTED,
)

CANCEL_BATCH = report(
    "cancel_batch.py",
    field(
        "batches",
        list_of(
            obj(
                field("batch_id", STR),
                field("action", STR, "cancelled, skipped or would_cancel"),
                field("status", STR, null=""),
                field("request_counts", REQUEST_COUNTS),
                field(
                    "reason",
                    STR,
                    "'already <status>': a finished batch is left alone, as cancelling it would "
                    "only relabel it cancelled",
                    only="when skipped",
                ),
            )
        ),
    ),
    field("cancelled", INT),
    field("skipped", INT),
    field("would_cancel", INT, only="with --dry-run"),
    field("unsubmitted", list_of(CHUNK_REF), only="when chunks of the job have no batch"),
    field(
        "deleted_files",
        list_of(STR),
        "uploaded files no batch uses, e.g. held over --max-cost: deleted from the server",
        only="when the job had some",
    ),
    field("would_delete_files", list_of(STR), only="with --dry-run, when the job had such files"),
    field("job", STR, null="for batch ids"),
    field(
        "next",
        STR,
        "the fetch of what finished; after a --dry-run that found batches to cancel, the cancel it previewed",
        null="",
    ),
    BATCHES_OMITTED,
)

LISTED_BATCH = obj(
    field("batch_id", STR),
    field("status", STR),
    field("created_at", INT, null=""),
    field("completion_window", STR, null=""),
    field("endpoint", STR, null=""),
    field("input_file_id", STR, null=""),
    field("request_counts", REQUEST_COUNTS),
    field("output_file_id", STR, null=""),
    field("error_file_id", STR, null=""),
    field("expires_at", INT, null=""),
    field("expired_at", INT, only="when present"),
    field("metadata", map_of("KEY", STR), only="when the batch has some"),
)

LIST_BATCHES = forms(
    "list_batches.py",
    Shape(
        (
            field("batches", list_of(LISTED_BATCH), "newest first"),
            field("count", INT),
            field("has_more", BOOL),
            field("last_id", STR, "pass as --after for the next page", null="when none"),
            field("next", STR, "the next page", null="at the end"),
        )
    ),
    Shape(
        (
            field(
                "jobs",
                list_of(
                    obj(
                        field("job", STR),
                        field("job_id", STR, null=""),
                        field("input", STR, null=""),
                        field("input_sha256", STR, null=""),
                        field("requests", INT, null=""),
                        field("rounds", INT),
                        field("status", STR, "as last seen", null=""),
                        field("updated_at", NUMBER, null=""),
                        field("answers", ANSWER_CHECKS, "of the last fetch", null="before one"),
                        field("cancelled", BOOL),
                        field("next", STR, "the poll command"),
                    )
                ),
                "the job directories below the working directory",
            ),
            field("count", INT),
            field("next", STR, null="unless there is one job"),
        ),
        when="with --jobs",
    ),
    Shape(
        (
            field("input", STR),
            field("input_sha256", STR),
            field(
                "jobs",
                list_of(
                    obj(
                        field("job_id", STR, null=""),
                        field("job", STR, "the job directory here", null="when not here"),
                        field("batches", list_of(LISTED_BATCH)),
                    )
                ),
                "every job and batch of that file",
            ),
            field("next", STR, null=""),
        ),
        when="with --input",
    ),
    Shape(
        (
            field(
                "answers",
                obj(
                    field("folder", STR),
                    field("store", STR),
                    field("answers", INT, only="when the store exists"),
                    field("bytes", INT, only="when the store exists"),
                    field("limit_bytes", INT, only="when the store exists"),
                    field("file_bytes", INT, only="when the store exists"),
                    field("batches_read", INT, only="when the store exists"),
                    field(
                        "jobs",
                        list_of(obj(field("job", STR), field("job_id", STR, null=""), field("answers", INT))),
                        only="when the store exists",
                    ),
                    field("cleared", INT, only="with --clear-answers"),
                    field("dropped", INT, only="with --answers-limit"),
                ),
                "the answer store",
            ),
            field("next", STR, null=""),
        ),
        when="with --answers or --clear-answers",
    ),
)

LIST_MODELS = report(
    "list_models.py",
    field("count", INT),
    field("prices_as_of", STR),
    field("default_model", STR, "create_batch_file.py's default"),
    field(
        "models",
        list_of(
            obj(
                field("id", STR),
                field("kind", STR, "chat or embeddings"),
                field("owned_by", STR, null=""),
                field("created", INT, null=""),
                field(
                    "price_per_1m_tokens",
                    obj(field("24h", PRICE), field("1h", PRICE)),
                    null="for a model the table does not know",
                ),
                field(
                    "reasoning",
                    obj(
                        field("reasons", BOOL, null="when unknown"),
                        field("efforts", list_of(STR), null="when unknown"),
                        field("can_switch_off", BOOL, null=""),
                        field("source", STR, "server or known family", null=""),
                    ),
                ),
                field(
                    "for_file",
                    obj(
                        field("eligible", BOOL),
                        field("why_not", STR, null="when eligible"),
                        field("rank", INT, "1 = cheapest", null="when unranked"),
                        field("usd", obj(field("24h", STR), field("1h", STR)), null="without a known price"),
                        field("output_tokens", INT, null=""),
                        field("thinking_tokens", INT, "added for its thinking", null=""),
                        field(
                            "thinking",
                            STR,
                            "does_not_think; switched_off = it thinks, but the rebuild sets --reasoning none, so "
                            "none is added; always = it always thinks: thinking_tokens added at its lowest effort "
                            "(rebuild.reasoning; rebuild.max_tokens is the largest answer plus that room); unknown = "
                            "not known whether it thinks, none added",
                            null="for embeddings or when not eligible",
                        ),
                        field(
                            "rebuild",
                            obj(
                                field("model", STR), field("reasoning", STR, null=""), field("max_tokens", INT, null="")
                            ),
                            null="when not eligible",
                        ),
                    ),
                    only="with --for",
                ),
            )
        ),
    ),
    field(
        "file",
        obj(
            field("path", STR),
            field("requests", INT),
            field("endpoint", STR, null=""),
            field("input_tokens", INT),
            field("output_tokens", INT),
            field("output_basis", STR),
            field("documents", BOOL),
        ),
        only="with --for",
    ),
    field("window", STR, only="with --for"),
    field("cheapest", STR, "the first model id", only="with --for", null=""),
    field("next", STR, "the rebuild for the cheapest", only="with --for", null=""),
)

_SUBMITTED = (
    field("job", STR),
    field("job_id", STR),
    field("submitted", obj(field("resumed", BOOL), field("chunks", INT), field("this_run", THIS_RUN))),
    field("estimated_cost", ESTIMATED_COST, "as submit.py's", null="when nothing is known", ref="submit.py"),
    field(
        "reuse",
        REUSE,
        "as submit.py's: what the job did not send, its answers at hand; saved_usd once fetched",
        null="with --no-reuse",
        ref="submit.py",
    ),
)

RUN_BATCH = forms(
    "run_batch.py",
    Shape(
        _SUBMITTED
        + (
            field("status", STR),
            field("finished", BOOL, "false"),
            field("request_counts", REQUEST_COUNTS),
            field("batches", list_of(BATCH)),
            field("unsubmitted", list_of(CHUNK_REF), only="when a chunk has no batch"),
            NEXT,
            BATCHES_OMITTED,
        ),
        when="without --wait while the job runs",
    ),
    Shape(
        _SUBMITTED + referring(_FETCHED, "fetch_results.py") + (NEXT, BATCHES_OMITTED),
        when="once finished, or with --wait; the fields of fetch_results.py's report, as its --help lists them",
    ),
)

REPORTS: Dict[str, Report] = {
    r.script: r
    for r in (
        CHECK_SETUP,
        CREATE_BATCH_FILE,
        VALIDATE_BATCH_FILE,
        SUBMIT,
        POLL,
        FETCH_RESULTS,
        RETRY_FAILED,
        CANCEL_BATCH,
        LIST_BATCHES,
        LIST_MODELS,
        RUN_BATCH,
    )
}

__all__ = ["REPORTS"]
