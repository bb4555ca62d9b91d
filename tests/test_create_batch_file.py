"""create_batch_file.py and _dwbatches.builder: request shapes, ids, sidecar, atomic writes,
and that what it builds is accepted by validate_batch_file.py and by the sandbox."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from _dwbatches import builder
from _dwbatches.errors import InputError, UsageError
from helpers import ok_json, run

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def lines(path):
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]


def build(*args, capsys):
    import create_batch_file
    code = create_batch_file.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# -- shapes and ids ---------------------------------------------------------------------------

def test_prompts_file_gives_numbered_chat_requests_with_every_option(tmp_path):
    (tmp_path / "questions.txt").write_text("What is 2+2?\n\nName a colour.\r\n")
    doc = ok_json(run("create_batch_file.py", "out.jsonl", "--prompts", "questions.txt", "-m", "Qwen/Qwen3.5-9B",
                      "--system", "Be brief.", "--temperature", "0.2", "--max-tokens", "50", "--top-p", "0.9",
                      "--stop", "END", "--stop", "###"))
    rows = lines(tmp_path / "out.jsonl")
    assert [r["custom_id"] for r in rows] == ["questions-000001", "questions-000003"]  # line numbers
    assert rows[0] == {"custom_id": "questions-000001", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "Qwen/Qwen3.5-9B",
                                "messages": [{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "What is 2+2?"}],
                                "temperature": 0.2, "max_tokens": 50, "top_p": 0.9, "stop": ["END", "###"]}}
    assert rows[1]["body"]["messages"][1]["content"] == "Name a colour."
    assert doc["path"] == str(tmp_path / "out.jsonl") and doc["requests"] == 2
    assert doc["bytes"] == (tmp_path / "out.jsonl").stat().st_size
    assert doc["models"] == {"Qwen/Qwen3.5-9B": 2} and doc["endpoint"] == "/v1/chat/completions"
    assert doc["source"] is None and doc["next"].endswith("submit.py out.jsonl")


def test_prompts_from_stdin_with_a_custom_prefix(tmp_path):
    doc = ok_json(run("create_batch_file.py", "o.jsonl", "--prompts", "-", "--id-prefix", "task",
                      input="alpha\nbeta\n"))
    assert [r["custom_id"] for r in lines("o.jsonl")] == ["task-000001", "task-000002"]
    assert lines("o.jsonl")[0]["body"]["model"] == builder.DEFAULT_CHAT_MODEL and doc["requests"] == 2


def test_csv_with_id_column_template_and_sidecar(tmp_path):
    (tmp_path / "reviews.csv").write_text('id,text,stars\nr-17,"Great, really ""great""",5\n'
                                          'r-18,"two\nlines",1\n', encoding="utf-8")
    doc = ok_json(run("create_batch_file.py", "reviews.jsonl", "--csv", "reviews.csv", "--id-column", "id",
                      "--template", "Rate ({stars} stars): {text}", "--max-tokens", "5"))
    rows = lines("reviews.jsonl")
    assert [r["custom_id"] for r in rows] == ["reviews-r-17", "reviews-r-18"]
    assert rows[0]["body"]["messages"][0]["content"] == 'Rate (5 stars): Great, really "great"'
    assert rows[1]["body"]["messages"][0]["content"] == "Rate (1 stars): two\nlines"
    sidecar = json.loads((tmp_path / "reviews.source.json").read_text())
    assert sidecar["kind"] == "csv" and sidecar["path"] == str(tmp_path / "reviews.csv")
    assert sidecar["id_column"] == "id" and sidecar["custom_ids_in_row_order"] is False
    assert sidecar["id_prefix"] == "reviews" and sidecar["rows"] == 2
    assert sidecar["output"] == str(tmp_path / "reviews.jsonl")
    assert doc["source"] == {k: v for k, v in sidecar.items() if k not in ("output", "output_sha256")}


def test_csv_without_id_column_numbers_data_rows(tmp_path):
    (tmp_path / "d.csv").write_text("\ufeffq\n\"multi\nline\"\n\nsecond\n", encoding="utf-8")
    doc = ok_json(run("create_batch_file.py", "d.jsonl", "--csv", "d.csv", "--template", "{q}"))
    assert [r["custom_id"] for r in lines("d.jsonl")] == ["d-000001", "d-000002"]
    assert doc["source"]["custom_ids_in_row_order"] is True and doc["source"]["id_column"] is None


def test_csv_prompt_column_needs_no_template(tmp_path):
    (tmp_path / "p.csv").write_text("prompt,other\nhello,x\n")
    ok_json(run("create_batch_file.py", "p.jsonl", "--csv", "p.csv"))
    assert lines("p.jsonl")[0]["body"]["messages"][0]["content"] == "hello"
    (tmp_path / "n.csv").write_text("text\nhello\n")
    proc = run("create_batch_file.py", "n.jsonl", "--csv", "n.csv")
    assert proc.returncode == 2 and proc.stdout == "" and "--template" in proc.stderr and "text" in proc.stderr


def test_jsonl_template_with_nested_fields_and_numeric_ids(tmp_path):
    (tmp_path / "docs.jsonl").write_text('{"doc_id": 7, "meta": {"title": "A"}, "tags": ["x", "y"]}\n\n'
                                         '{"doc_id": 8, "meta": {"title": "B"}, "tags": []}\n')
    ok_json(run("create_batch_file.py", "t.jsonl", "--jsonl", "docs.jsonl", "--id-field", "doc_id",
                "--template", "Title: {meta.title}; tags {tags}; {{literal}}"))
    rows = lines("t.jsonl")
    assert [r["custom_id"] for r in rows] == ["docs-7", "docs-8"]
    assert rows[0]["body"]["messages"][0]["content"] == 'Title: A; tags ["x", "y"]; {literal}'


def test_jsonl_without_id_uses_physical_line_numbers(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"t": "a"}\n\n{"t": "b"}\n')
    ok_json(run("create_batch_file.py", "o.jsonl", "--jsonl", "in.jsonl", "--template", "{t}", "--id-prefix", ""))
    assert [r["custom_id"] for r in lines("o.jsonl")] == ["000001", "000003"]


def test_embeddings_and_responses_have_their_own_shapes(tmp_path):
    (tmp_path / "p.txt").write_text("some text\n")
    doc = ok_json(run("create_batch_file.py", "e.jsonl", "--prompts", "p.txt", "--endpoint", "/v1/embeddings"))
    assert lines("e.jsonl")[0] == {"custom_id": "p-000001", "method": "POST", "url": "/v1/embeddings",
                                   "body": {"model": "Qwen/Qwen3-Embedding-8B", "input": "some text"}}
    assert doc["endpoint"] == "/v1/embeddings"
    ok_json(run("create_batch_file.py", "r.jsonl", "--prompts", "p.txt", "--endpoint", "/v1/responses",
                "--system", "Reply in French.", "--max-tokens", "64", "--temperature", "0",
                "--response-format-json"))
    assert lines("r.jsonl")[0]["body"] == {"model": builder.DEFAULT_CHAT_MODEL, "input": "some text",
                                           "instructions": "Reply in French.", "temperature": 0.0,
                                           "max_output_tokens": 64, "text": {"format": {"type": "json_object"}}}


@pytest.mark.parametrize("args, message", [
    (["--endpoint", "/v1/embeddings", "--system", "x"], "--system"),
    (["--endpoint", "/v1/embeddings", "--max-tokens", "5"], "--max-tokens"),
    (["--endpoint", "/v1/responses", "--stop", "x"], "--stop"),
    (["--extra-body", '{"model": "other"}'], "model"),
    (["--extra-body", "[1]"], "JSON object"),
    (["--extra-body", "{nope"], "not valid JSON"),
    (["--template", "{x}"], "needs --csv or --jsonl"),
    (["--max-tokens", "0"], "at least 1"),
    (["--id-prefix", "bad\u0001"], "--id-prefix"),
])
def test_option_errors_exit_2_and_write_nothing(tmp_path, args, message, capsys):
    (tmp_path / "p.txt").write_text("hi\n")
    code, out, err = build("o.jsonl", "--prompts", "p.txt", *args, capsys=capsys)
    assert code == 2 and out == "" and message in err
    assert sorted(os.listdir(tmp_path)) == ["p.txt"]


def test_structured_output_options(tmp_path):
    (tmp_path / "p.txt").write_text("Acme raised $5M\n")
    (tmp_path / "deal.schema.json").write_text(json.dumps({"type": "object", "properties": {
        "company": {"type": "string"}}, "required": ["company"]}))
    ok_json(run("create_batch_file.py", "s.jsonl", "--prompts", "p.txt", "--json-schema", "deal.schema.json",
                "--extra-body", '{"seed": 3, "chat_template_kwargs": {"enable_thinking": false}}'))
    body = lines("s.jsonl")[0]["body"]
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "deal", "strict": True,
        "schema": {"type": "object", "properties": {"company": {"type": "string"}}, "required": ["company"]}}}
    assert body["seed"] == 3 and body["chat_template_kwargs"] == {"enable_thinking": False}


def test_no_input_writes_a_five_prompt_example(tmp_path):
    doc = ok_json(run("create_batch_file.py", "example.jsonl"))
    rows = lines("example.jsonl")
    assert doc["requests"] == 5 == len({r["body"]["messages"][0]["content"] for r in rows})
    assert [r["custom_id"] for r in rows] == [f"example-{i:06d}" for i in range(1, 6)]


def test_limit_takes_the_first_rows(tmp_path):
    (tmp_path / "p.txt").write_text("".join(f"q{i}\n" for i in range(10)))
    assert ok_json(run("create_batch_file.py", "o.jsonl", "--prompts", "p.txt", "--limit", "3"))["requests"] == 3


# -- atomic output ----------------------------------------------------------------------------

def test_a_failed_build_leaves_the_existing_output_and_sidecar_untouched(tmp_path, capsys):
    (tmp_path / "a.csv").write_text("id,text\n1,x\n2,y\n")
    assert build("out.jsonl", "--csv", "a.csv", "--id-column", "id", "--template", "{text}", capsys=capsys)[0] == 0
    before = (tmp_path / "out.jsonl").read_bytes(), (tmp_path / "out.source.json").read_bytes()
    (tmp_path / "b.csv").write_text("id,text\n1,x\n" + "".join(f"{i},t\n" for i in range(2, 500)) + "1,dup\n")
    code, out, err = build("out.jsonl", "--csv", "b.csv", "--id-column", "id", "--template", "{text}",
                           capsys=capsys)
    assert code == 2 and "line 501" in err and "duplicate" in err
    assert ((tmp_path / "out.jsonl").read_bytes(), (tmp_path / "out.source.json").read_bytes()) == before
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "b.csv", "out.jsonl", "out.source.json"]


def test_a_non_csv_rebuild_removes_the_stale_sidecar(tmp_path, capsys):
    (tmp_path / "a.csv").write_text("text\nx\n")
    (tmp_path / "p.txt").write_text("x\n")
    assert build("out.jsonl", "--csv", "a.csv", "--template", "{text}", capsys=capsys)[0] == 0
    assert (tmp_path / "out.source.json").exists()
    assert build("out.jsonl", "--prompts", "p.txt", capsys=capsys)[0] == 0
    assert not (tmp_path / "out.source.json").exists()


# -- library API --------------------------------------------------------------------------------

def test_library_api(tmp_path):
    rows = [builder.chat_request(f"q-{i}", f"question {i}", max_tokens=10) for i in range(3)]
    rows.append(builder.embedding_request("e-1", "text"))
    rows.append(builder.responses_request("r-1", "hi", instructions="be brief", max_output_tokens=9))
    summary = builder.write_batch_file(rows, str(tmp_path / "lib.jsonl"))
    assert summary["requests"] == 5 and summary["endpoints"]["/v1/embeddings"] == 1
    assert lines(tmp_path / "lib.jsonl")[4]["body"] == {"model": builder.DEFAULT_CHAT_MODEL, "input": "hi",
                                                        "instructions": "be brief", "max_output_tokens": 9}
    with pytest.raises(InputError, match="duplicate custom_id 'q-0'"):
        builder.write_batch_file(rows + [builder.chat_request("q-0", "again")], str(tmp_path / "dup.jsonl"))
    with pytest.raises(InputError, match="65 bytes"):
        builder.write_batch_file([builder.chat_request("x" * 65, "hi")], str(tmp_path / "long.jsonl"))
    with pytest.raises(InputError, match="NaN|Out of range"):
        builder.write_batch_file([builder.chat_request("n", "hi", temperature=float("nan"))], str(tmp_path / "n.jsonl"))
    with pytest.raises(UsageError):
        builder.build_request("/v1/embeddings", "e", "t", system="no")
    assert not (tmp_path / "dup.jsonl").exists() and not (tmp_path / "long.jsonl").exists()
    assert builder.custom_id_for("p", 7) == "p-000007" and builder.custom_id_for("", row_id="a") == "a"
    tpl = builder.Template("{a} and {b.c}")
    assert tpl.fields == ["a", "b.c"] and tpl.missing(["a"]) == ["b.c"]
    assert tpl.render({"a": 1, "b": {"c": None}}, 1, dotted=True) == "1 and "


# -- accepted downstream ------------------------------------------------------------------------

def test_built_files_pass_validation_and_run_on_the_sandbox(sandbox, tmp_path):
    (tmp_path / "p.txt").write_text("one\ntwo\n")
    (tmp_path / "c.csv").write_text("id,text\na,hello\nb,world\n")
    (tmp_path / "j.jsonl").write_text('{"k": "x1", "body": "first"}\n{"k": "x2", "body": "second"}\n')
    builds = [
        ["p_out.jsonl", "--prompts", "p.txt", "-m", "Qwen/Qwen3.5-9B", "--max-tokens", "16"],
        ["c_out.jsonl", "--csv", "c.csv", "--id-column", "id", "--template", "Say {text}", "--system", "Be terse."],
        ["j_out.jsonl", "--jsonl", "j.jsonl", "--id-field", "k", "--template", "Echo: {body}",
         "--endpoint", "/v1/responses"],
        ["e_out.jsonl", "--prompts", "p.txt", "--endpoint", "/v1/embeddings"],
    ]
    for args in builds:
        built = ok_json(run("create_batch_file.py", *args))
        checked = ok_json(run("validate_batch_file.py", built["path"]))
        assert checked["valid"] and checked["requests"] == built["requests"] == 2
        submitted = ok_json(run("submit.py", built["path"], env=sandbox.env()))
        assert submitted["requests"] == 2
        batch = sandbox.wait_batch(submitted["batches"][0]["batch_id"])
        assert batch["status"] == "completed" and batch["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
        assert batch["endpoint"] == built["endpoint"]
        out = sandbox.content(batch["output_file_id"]).lines()
        assert sorted(o["custom_id"] for o in out) == sorted(r["custom_id"] for r in lines(built["path"]))
