"""Reasoning models in the build: create_batch_file.py --reasoning, the answer-budget warnings of
create_batch_file.py and validate_batch_file.py (a model that thinks first, a JSON object that
cannot fit), and --from-batch, which rebuilds a batch file with requestedit.Changes. Each is
run as the scripts run, and what they build goes to the sandbox."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from _dwbatches.api import reasoning
from _dwbatches.api.requestedit import Changes
from _dwbatches.validation import answerbudget, validate
from helpers import is_error, ok_json, run

THINKS = "Qwen/Qwen3.5-35B-A3B-FP8"  # the default model: thinks, and can stop
ALWAYS = "openai/gpt-oss-20b"  # always thinks; low is its least
INSTRUCT = "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8"  # does not think
EMBED = "Qwen/Qwen3-Embedding-8B"


def lines(path):
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]


def request(cid, model, max_tokens=None, url="/v1/chat/completions", **fields):
    body = {"model": model}
    if url == "/v1/responses":
        body["input"] = "Classify: fine"
        if max_tokens is not None:
            body["max_output_tokens"] = max_tokens
    else:
        body["messages"] = [{"role": "user", "content": "Classify: fine"}]
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
    body.update(fields)
    return {"custom_id": cid, "method": "POST", "url": url, "body": body}


def write(path, requests):
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in requests), encoding="utf-8")
    return str(path)


def refused(proc, *wording):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert is_error(proc.stdout) and proc.stderr.count("error: ") == 1 and "\nhint: " in proc.stderr
    for w in wording:
        assert w in proc.stderr, proc.stderr


def run_on_sandbox(sandbox, path, n):
    """Submit a built file to the sandbox and wait: every request completed, with an answer."""
    submitted = ok_json(run("submit.py", path, env=sandbox.env()))
    batch = sandbox.wait_batch(submitted["batches"][0]["batch_id"])
    assert batch["status"] == "completed", batch
    assert batch["request_counts"] == {"total": n, "completed": n, "failed": 0}
    return sandbox.content(batch["output_file_id"]).lines()


# -- create_batch_file.py --reasoning ----------------------------------------------------------


def test_reasoning_none_switches_thinking_off_in_every_request_and_the_sandbox_runs_it(sandbox, tmp_path):
    (tmp_path / "p.txt").write_text("Is this spam? Buy now\nHello, see you at noon\n")
    built = ok_json(
        run("create_batch_file.py", "c.jsonl", "--prompts", "p.txt", "--max-tokens", "5", "--reasoning", "none")
    )
    assert built["warnings"] == []  # thinking off: 5 tokens are enough
    for r in lines("c.jsonl"):
        assert r["body"]["reasoning_effort"] == "none"
        assert r["body"]["chat_template_kwargs"] == {"enable_thinking": False}
        assert reasoning.requested_effort(r["body"], r["url"]) == "none"
    run_on_sandbox(sandbox, "c.jsonl", 2)
    # /v1/responses asks with its reasoning object
    args = f"r.jsonl --prompts p.txt --endpoint /v1/responses -m {ALWAYS} --reasoning low --max-tokens 1100"
    built = ok_json(run("create_batch_file.py", *args.split()))
    assert built["warnings"] == []
    assert [r["body"]["reasoning"] for r in lines("r.jsonl")] == [{"effort": "low"}] * 2
    run_on_sandbox(sandbox, "r.jsonl", 2)


def test_an_effort_the_model_cannot_take_is_refused_as_the_server_would(sandbox, tmp_path):
    (tmp_path / "p.txt").write_text("one\n")
    proc = run("create_batch_file.py", "g.jsonl", "--prompts", "p.txt", "-m", ALWAYS, "--reasoning", "none")
    refused(proc, "error: --reasoning none: openai/gpt-oss-20b always reasons", "takes --reasoning low, medium or high")
    assert not (tmp_path / "g.jsonl").exists()
    # the sandbox refuses the same request on upload: the refusal above saved a round trip
    write("hand.jsonl", [request("a", ALWAYS, 2000, reasoning_effort="none")])
    proc = run("submit.py", "hand.jsonl", env=sandbox.env())
    assert proc.returncode == 2 and "always reasons" in proc.stderr, proc.stderr


def test_a_model_known_not_to_reason_gets_nothing_and_a_warning(sandbox, tmp_path):
    (tmp_path / "p.txt").write_text("one\ntwo\n")
    built = ok_json(run("create_batch_file.py", "i.jsonl", "--prompts", "p.txt", "-m", INSTRUCT, "--reasoning", "low"))
    assert built["warnings"] == [
        f"--reasoning low: {INSTRUCT} does not reason (it answers at once), so nothing was written for its requests"
    ]
    assert all(set(r["body"]) == {"model", "messages"} for r in lines("i.jsonl"))
    run_on_sandbox(sandbox, "i.jsonl", 2)


def test_embeddings_take_no_reasoning(tmp_path):
    (tmp_path / "p.txt").write_text("one\n")
    proc = run(
        "create_batch_file.py", "e.jsonl", "--prompts", "p.txt", "--endpoint", "/v1/embeddings", "--reasoning", "low"
    )
    refused(proc, "error: --reasoning does not apply to /v1/embeddings", "Drop --reasoning")
    assert not (tmp_path / "e.jsonl").exists()


def test_reasoning_replaces_an_effort_asked_in_extra_body_and_says_so(tmp_path):
    (tmp_path / "p.txt").write_text("one\n")
    extra = '{"reasoning_effort": "high", "chat_template_kwargs": {"enable_thinking": true, "x": 1}, "seed": 3}'
    built = ok_json(
        run("create_batch_file.py", "x.jsonl", "--prompts", "p.txt", "--extra-body", extra, "--reasoning", "none")
    )
    body = lines("x.jsonl")[0]["body"]
    assert body["reasoning_effort"] == "none" and body["seed"] == 3
    assert body["chat_template_kwargs"] == {"x": 1, "enable_thinking": False}
    assert built["warnings"] == ["--reasoning none replaces the reasoning effort that --extra-body asks for (high)"]


# -- the answer-budget warnings ----------------------------------------------------------------


def test_too_few_tokens_for_a_thinking_model_is_one_warning_per_model_with_the_fix(tmp_path):
    rows = [request(f"t{i}", THINKS, 5) for i in range(12)]
    rows[3:3] = [request(f"off{i}", THINKS, 5, reasoning_effort="none") for i in range(3)]  # thinking off: fine
    rows += [request(f"g{i}", ALWAYS, 500, reasoning_effort="low") for i in range(2)]
    rows += [request(f"h{i}", ALWAYS, 5000, reasoning_effort="high") for i in range(1)]
    rows += [request("i", INSTRUCT, 5), request("big", THINKS, 5000)]  # no thinking; room enough
    write("hand.jsonl", rows)
    proc = run("validate_batch_file.py", "hand.jsonl")
    doc = ok_json(proc)
    thinking = [w for w in doc["warnings"] if "thinks before it answers" in w]
    assert thinking == [
        f"12 request(s) (lines 1, 2, 3, 7, 8 and 7 more) ask {THINKS} for at most 5 tokens, but it thinks "
        "before it answers and the thinking counts against max_tokens (often 4096 tokens at its default effort, "
        "medium): the answers would come back empty; build with --reasoning none, or --max-tokens 4101 or more",
        f"3 request(s) (lines 16, 17, 18) ask {ALWAYS} for at most 500 to 5000 tokens, but it thinks before it "
        "answers and the thinking counts against max_tokens (often 16384 tokens at effort high): the answers "
        "would come back empty; build with --reasoning low and --max-tokens 6024 or more",
    ]
    for w in thinking:  # on stderr too
        assert f"warning: {w}" in proc.stderr
    # each fix, applied with --from-batch, leaves nothing to warn about
    ok_json(run("create_batch_file.py", "off.jsonl", "--from-batch", "hand.jsonl", "--reasoning", "none", "-m", THINKS))
    assert not [w for w in ok_json(run("validate_batch_file.py", "off.jsonl"))["warnings"] if "tokens" in w]
    ok_json(
        run(
            "create_batch_file.py",
            "low.jsonl",
            "--from-batch",
            "hand.jsonl",
            "-m",
            ALWAYS,
            "--reasoning",
            "low",
            "--max-tokens",
            "6024",
        )
    )
    assert not [w for w in ok_json(run("validate_batch_file.py", "low.jsonl"))["warnings"] if "tokens" in w]


def test_the_build_warns_too_and_its_fix_is_a_build_that_does_not(tmp_path):
    (tmp_path / "p.txt").write_text("a\nb\nc\n")
    proc = run("create_batch_file.py", "c.jsonl", "--prompts", "p.txt", "--max-tokens", "5")
    (warning,) = ok_json(proc)["warnings"]
    assert warning.startswith(f"3 request(s) (lines 1, 2, 3) ask {THINKS} for at most 5 tokens, but it thinks")
    assert f"warning: {warning}" in proc.stderr
    fix = warning.rsplit("build with ", 1)[1]
    assert fix == "--reasoning none, or --max-tokens 4101 or more"
    for flags in (["--reasoning", "none", "--max-tokens", "5"], ["--max-tokens", "4101"]):
        assert ok_json(run("create_batch_file.py", "c.jsonl", "--prompts", "p.txt", *flags))["warnings"] == []
    proc = run(
        "create_batch_file.py", "g.jsonl", "--prompts", "p.txt", "-m", ALWAYS, "--reasoning", "low", "--max-tokens", "5"
    )
    (warning,) = ok_json(proc)["warnings"]
    assert warning.endswith(
        "at effort low): the answers would come back empty; build with --reasoning low and --max-tokens 1029 or more"
    )


SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"enum": ["positive", "negative", "mixed"]},
        "confidence": {"type": "number"},
        "topics": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "summary": {"type": "string"},
        "unused": {"type": "string"},
    },
    "required": ["sentiment", "confidence", "topics", "summary"],
}


def test_a_json_format_whose_object_cannot_fit_is_warned_about(tmp_path):
    (tmp_path / "p.txt").write_text("a\nb\n")
    (tmp_path / "s.json").write_text(json.dumps(SCHEMA))
    need = answerbudget.schema_tokens(SCHEMA)
    # {"sentiment": "mixed", "confidence": 0, "topics": ["", ""], "summary": ""}: 73 characters, 5 values
    assert need == -(-73 // answerbudget.CHARS_PER_TOKEN) + 5 * answerbudget.VALUE_TOKENS == 35
    built = ok_json(
        run(
            "create_batch_file.py",
            "j.jsonl",
            "--prompts",
            "p.txt",
            "-m",
            INSTRUCT,
            "--json-schema",
            "s.json",
            "--max-tokens",
            "20",
        )
    )
    assert built["warnings"] == [
        f"2 request(s) (lines 1, 2) ask {INSTRUCT} for at most 20 tokens in JSON, but the smallest object their "
        f"format allows takes about {need} tokens: the objects would be cut off and would not parse; build with "
        f"--max-tokens {need} or more"
    ]
    args = ["--prompts", "p.txt", "-m", INSTRUCT, "--json-schema", "s.json", "--max-tokens", str(need)]
    assert ok_json(run("create_batch_file.py", "j.jsonl", *args))["warnings"] == []
    # a model that thinks needs the object's room after its thinking; /v1/responses too
    args = ["--prompts", "p.txt", "--endpoint", "/v1/responses", "--json-schema", "s.json", "--reasoning", "low"]
    (warning,) = ok_json(run("create_batch_file.py", "t.jsonl", *args, "--max-tokens", "1030"))["warnings"]
    assert f"takes about {need} tokens, after thinking that often takes 1024 tokens at effort low" in warning
    assert warning.endswith(f"build with --reasoning none, or --max-tokens {need + 1024} or more")
    assert ok_json(run("create_batch_file.py", "t.jsonl", *args, "--max-tokens", str(need + 1024)))["warnings"] == []
    # JSON mode without a schema: an object of one short property
    args = ["--prompts", "p.txt", "-m", INSTRUCT, "--response-format-json", "--max-tokens"]
    assert ok_json(run("create_batch_file.py", "m.jsonl", *args, "2"))["warnings"][0].endswith("--max-tokens 5 or more")
    assert ok_json(run("create_batch_file.py", "m.jsonl", *args, "5"))["warnings"] == []


@pytest.mark.parametrize(
    "schema, shortest, values",
    [
        ({}, "0", 1),
        ({"type": "boolean"}, "false", 1),
        ({"type": ["string", "null"]}, '""', 1),
        ({"const": "yes"}, '"yes"', 1),
        ({"anyOf": [{"type": "string", "minLength": 10}, {"type": "integer"}]}, "0", 1),
        ({"type": "object", "properties": {"a": {"type": "null"}}, "required": ["a", "b"]}, '{"a": null, "b": 0}', 2),
        (
            {"$defs": {"n": {"type": "integer"}}, "type": "array", "items": {"$ref": "#/$defs/n"}, "minItems": 3},
            "[0, 0, 0]",
            3,
        ),
        ({"type": "array", "items": {"type": "string"}}, "[]", 0),
        ({"$ref": "#"}, "0", 1),  # a cycle ends as one short value
    ],
)
def test_the_smallest_object_follows_the_documented_rule(schema, shortest, values):
    expected = -(-len(shortest) // answerbudget.CHARS_PER_TOKEN) + answerbudget.VALUE_TOKENS * values
    assert answerbudget.schema_tokens(schema) == expected


def expected_counts(rows):
    """(model, "thinking" or "json") -> requests, by the rule itself, one request at a time."""
    out = {}
    for r in rows:
        body, url = r["body"], r["url"]
        limit = reasoning.output_limit(body)
        room = reasoning.thinking_room(body["model"], body, url) or 0
        schema = answerbudget.json_schema_of(body, url)
        if limit is not None and limit < room:
            key = (body["model"], "thinking")
        elif limit is not None and schema is not None and limit < answerbudget.schema_tokens(schema) + room:
            key = (body["model"], "json")
        else:
            continue
        out[key] = out.get(key, 0) + 1
    return out


def warned_counts(warnings):
    out = {}
    for w in warnings:
        m = re.match(r"(\d+) request\(s\) \(lines? [^)]*\) ask (\S+) for at most [\d to]+ tokens( in JSON)?", w)
        if m:
            out[(m.group(2), "json" if m.group(3) else "thinking")] = int(m.group(1))
    return out


def test_the_warnings_count_every_request_by_the_rule_however_the_file_is_cut(tmp_path):
    rows = []
    for i in range(3000):
        model = (THINKS, ALWAYS, INSTRUCT)[(i // 5) % 3]  # runs of one model
        url = "/v1/responses" if i % 13 == 0 else "/v1/completions" if i % 17 == 0 else "/v1/chat/completions"
        extra = {}
        if i % 7 == 0 and model == THINKS:
            extra = {"reasoning": {"effort": "none"}} if url == "/v1/responses" else {"reasoning_effort": "none"}
        elif i % 19 == 0 and model != INSTRUCT:
            extra = {"reasoning": {"effort": "low"}} if url == "/v1/responses" else {"reasoning_effort": "low"}
        if i % 11 == 0:
            fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}}
            extra.update(
                {"text": {"format": {"type": "json_object"}}} if url == "/v1/responses" else {"response_format": fmt}
            )
        r = request(f"r{i}", model, 1 + (i * 37) % 5000, url=url, **extra)
        if url == "/v1/completions":
            r["body"]["prompt"] = r["body"].pop("messages")[0]["content"]
        rows.append(r)
    # one model and effort on three urls in a row: thinking on chat and responses, none on completions
    rows += [request("u1", THINKS, 500, reasoning_effort="low"), request("u2", THINKS, 500, reasoning_effort="low")]
    rows[-1]["url"], rows[-1]["body"]["prompt"] = "/v1/completions", rows[-1]["body"].pop("messages")[0]["content"]
    rows += [request("u3", THINKS, 500, url="/v1/responses", reasoning={"effort": "low"})]
    path = write(tmp_path / "many.jsonl", rows)
    whole = validate.validate_file(path, processes=1).warnings
    assert warned_counts(whole) == expected_counts(rows)
    assert {kind for _, kind in expected_counts(rows)} == {"thinking", "json"}
    for processes, piece in ((1, 4096), (2, 4096), (2, 70000)):
        assert validate.validate_file(path, processes=processes, piece_bytes=piece).warnings == whole


# -- create_batch_file.py --from-batch --------------------------------------------------------


def test_from_batch_makes_the_request_a_build_would_make(tmp_path):
    """One rule: a file rebuilt with -m, --max-tokens and --reasoning holds what a build with
    those flags holds (requestedit.Changes)."""
    (tmp_path / "p.txt").write_text("one\ntwo\nthree\n")
    for endpoint in ("/v1/chat/completions", "/v1/responses"):
        common = ["--prompts", "p.txt", "--endpoint", endpoint, "--system", "Be brief."]
        ok_json(run("create_batch_file.py", "a.jsonl", *common, "--max-tokens", "5"))
        changes = ["-m", ALWAYS, "--max-tokens", "1029", "--reasoning", "low"]
        ok_json(run("create_batch_file.py", "direct.jsonl", *common, *changes))
        rebuilt = ok_json(run("create_batch_file.py", "re.jsonl", "--from-batch", "a.jsonl", *changes))
        assert rebuilt["changes"] == {"model": ALWAYS, "max_tokens": 1029, "reasoning": "low"}
        assert Path("re.jsonl").read_bytes() == Path("direct.jsonl").read_bytes()
        assert lines("re.jsonl") == [
            dict(r, body=Changes(ALWAYS, 1029, "low").apply(r["body"], endpoint)) for r in lines("a.jsonl")
        ]


def test_from_batch_keeps_every_request_its_id_and_order_and_the_csv_write_back_works(sandbox, tmp_path):
    with open("reviews.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=";")
        w.writerow(["id", "text"])
        for i in (7, 3, 9, 1):
            w.writerow([f"r{i}", f"review number {i}"])
    args = "reviews.jsonl --csv reviews.csv --id-column id --max-tokens 5".split()
    ok_json(
        run("create_batch_file.py", *args, "--template", "Sentiment of: {text}", "--system", "Answer with one word.")
    )
    built = ok_json(
        run(
            "create_batch_file.py",
            "cheap.jsonl",
            "--from-batch",
            "reviews.jsonl",
            "-m",
            "Qwen/Qwen3.5-9B",
            "--reasoning",
            "none",
        )
    )
    assert [r["custom_id"] for r in lines("cheap.jsonl")] == ["reviews-r7", "reviews-r3", "reviews-r9", "reviews-r1"]
    assert built["warnings"] == [] and built["models"] == {"Qwen/Qwen3.5-9B": 4}
    source = json.loads(Path("cheap.source.json").read_text())
    original = json.loads(Path("reviews.source.json").read_text())
    assert source["output_sha256"] != original["output_sha256"]
    assert {k: v for k, v in source.items() if not k.startswith("output")} == {
        k: v for k, v in original.items() if not k.startswith("output")
    }
    assert built["source"]["path"] == original["path"]
    proc = run("run_batch.py", "cheap.jsonl", "--wait", "--timeout", "60", "--interval", "0.2", env=sandbox.env())
    doc = ok_json(proc)
    rows = list(csv.reader(open(doc["output"], encoding="utf-8"), delimiter=";"))
    assert rows[0] == ["id", "text", "response", "error", "answer_check"]
    assert [r[0] for r in rows[1:]] == ["r7", "r3", "r9", "r1"] and all(r[2] and not r[3] for r in rows[1:])


def test_from_batch_with_limit_takes_a_sample_and_the_sidecar_counts_it(tmp_path):
    Path("c.csv").write_text("text\na\nb\nc\n")
    ok_json(run("create_batch_file.py", "c.jsonl", "--csv", "c.csv", "--template", "{text}"))
    built = ok_json(run("create_batch_file.py", "s.jsonl", "--from-batch", "c.jsonl", "--limit", "2"))
    assert built["requests"] == 2 and built["source"]["rows"] == 2 and built["changes"] == {}
    assert lines("s.jsonl") == lines("c.jsonl")[:2]


def test_from_batch_refusals(tmp_path):
    write("think.jsonl", [request("a", THINKS, 5), request("b", THINKS, 5, reasoning_effort="none")])
    refused(
        run("create_batch_file.py", "o.jsonl", "--from-batch", "think.jsonl", "-m", ALWAYS),
        "error: -m openai/gpt-oss-20b: line 2 asks for reasoning none, but openai/gpt-oss-20b always reasons",
        "takes --reasoning low, medium or high",
    )
    refused(
        run("create_batch_file.py", "o.jsonl", "--from-batch", "think.jsonl", "-m", ALWAYS, "--reasoning", "none"),
        "error: --reasoning none: openai/gpt-oss-20b always reasons",
    )
    refused(
        run("create_batch_file.py", "o.jsonl", "--from-batch", "think.jsonl", "--system", "x"),
        "--system does not go with --from-batch",
    )
    refused(
        run("create_batch_file.py", "think.jsonl", "--from-batch", "think.jsonl", "--reasoning", "none"),
        "refusing to overwrite",
    )
    refused(
        run("create_batch_file.py", "o.jsonl", "--from-batch", "nothere.jsonl"),
        "nothere.jsonl (--from-batch): no such file",
    )
    Path("broken.jsonl").write_text(Path("think.jsonl").read_text() + "{not json\n")
    refused(
        run("create_batch_file.py", "o.jsonl", "--from-batch", "broken.jsonl", "--reasoning", "none"),
        "line 3: invalid JSON",
        "broken.jsonl (--from-batch): 1 invalid line(s); nothing was written",
    )
    write(
        "emb.jsonl",
        [{"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {"model": EMBED, "input": "x"}}],
    )
    for flag, value in (("--reasoning", "low"), ("--max-tokens", "5")):
        refused(
            run("create_batch_file.py", "o.jsonl", "--from-batch", "emb.jsonl", flag, value),
            f"error: {flag} does not apply to /v1/embeddings, and 1 request(s) of emb.jsonl are for it",
        )
    assert not Path("o.jsonl").exists()


def test_from_batch_of_a_file_for_a_model_that_does_not_reason_warns_per_model(tmp_path):
    write("mixed.jsonl", [request("a", INSTRUCT, 50), request("b", THINKS, 50), request("c", INSTRUCT, 50)])
    built = ok_json(run("create_batch_file.py", "o.jsonl", "--from-batch", "mixed.jsonl", "--reasoning", "none"))
    assert built["warnings"][0] == (
        f"--reasoning none: {INSTRUCT} does not reason (it answers at once), so nothing was written for its 2 request(s)"
    )
    assert built["warnings"][1].startswith("more than one model in the file")
    assert [("reasoning_effort" in r["body"]) for r in lines("o.jsonl")] == [False, True, False]


def test_from_batch_ignores_a_sidecar_of_another_version_and_removes_a_stale_one(tmp_path):
    Path("c.csv").write_text("text\na\nb\n")
    ok_json(run("create_batch_file.py", "c.jsonl", "--csv", "c.csv", "--template", "{text}"))
    with open("c.jsonl", "a") as fh:  # edited after the build: the sidecar no longer describes it
        fh.write(json.dumps(request("extra", THINKS, 9000)) + "\n")
    Path("o.source.json").write_text("{}")
    proc = run("create_batch_file.py", "o.jsonl", "--from-batch", "c.jsonl", "--reasoning", "none")
    assert ok_json(proc)["source"] is None and "describes an earlier version of c.jsonl" in proc.stderr
    assert not Path("o.source.json").exists()
