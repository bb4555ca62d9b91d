"""create_batch_file.py and _dwbatches.build.builder: request shapes, ids, sidecar, atomic writes,
and that what it builds is accepted by validate_batch_file.py and by the sandbox."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from _dwbatches.build import builder, sources, template
from _dwbatches.core.errors import InputError, UsageError
from helpers import is_error, ok_json, run, run_script

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
    doc = ok_json(
        run(
            "create_batch_file.py",
            "out.jsonl",
            "--prompts",
            "questions.txt",
            "-m",
            "Qwen/Qwen3.5-9B",
            "--system",
            "Be brief.",
            "--temperature",
            "0.2",
            "--max-tokens",
            "50",
            "--top-p",
            "0.9",
            "--stop",
            "END",
            "--stop",
            "###",
        )
    )
    rows = lines(tmp_path / "out.jsonl")
    assert [r["custom_id"] for r in rows] == ["questions-000001", "questions-000003"]  # line numbers
    assert rows[0] == {
        "custom_id": "questions-000001",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "Qwen/Qwen3.5-9B",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
            "temperature": 0.2,
            "max_tokens": 50,
            "top_p": 0.9,
            "stop": ["END", "###"],
        },
    }
    assert rows[1]["body"]["messages"][1]["content"] == "Name a colour."
    assert doc["path"] == str(tmp_path / "out.jsonl") and doc["requests"] == 2
    assert doc["bytes"] == (tmp_path / "out.jsonl").stat().st_size
    assert doc["models"] == {"Qwen/Qwen3.5-9B": 2} and doc["endpoint"] == "/v1/chat/completions"
    assert doc["source"] is None and doc["next"].endswith("submit.py out.jsonl")


def test_prompts_from_stdin_with_a_custom_prefix(tmp_path):
    doc = ok_json(
        run("create_batch_file.py", "o.jsonl", "--prompts", "-", "--id-prefix", "task", input="alpha\nbeta\n")
    )
    assert [r["custom_id"] for r in lines("o.jsonl")] == ["task-000001", "task-000002"]
    assert lines("o.jsonl")[0]["body"]["model"] == builder.DEFAULT_CHAT_MODEL and doc["requests"] == 2


def test_csv_with_id_column_template_and_sidecar(tmp_path):
    (tmp_path / "reviews.csv").write_text(
        'id,text,stars\nr-17,"Great, really ""great""",5\nr-18,"two\nlines",1\n', encoding="utf-8"
    )
    doc = ok_json(
        run(
            "create_batch_file.py",
            "reviews.jsonl",
            "--csv",
            "reviews.csv",
            "--id-column",
            "id",
            "--template",
            "Rate ({stars} stars): {text}",
            "--max-tokens",
            "5",
        )
    )
    rows = lines("reviews.jsonl")
    assert [r["custom_id"] for r in rows] == ["reviews-r-17", "reviews-r-18"]
    assert rows[0]["body"]["messages"][0]["content"] == 'Rate (5 stars): Great, really "great"'
    assert rows[1]["body"]["messages"][0]["content"] == "Rate (1 stars): two\nlines"
    sidecar = json.loads((tmp_path / "reviews.source.json").read_text())
    assert sidecar["kind"] == "csv" and sidecar["path"] == str(tmp_path / "reviews.csv")
    assert sidecar["id_column"] == "id" and sidecar["ids_from_row_numbers"] is False
    assert sidecar["id_prefix"] == "reviews" and sidecar["rows"] == 2
    assert sidecar["output"] == str(tmp_path / "reviews.jsonl")
    assert doc["source"] == {k: v for k, v in sidecar.items() if k not in ("output", "output_sha256")}


def test_csv_without_id_column_numbers_data_rows(tmp_path):
    (tmp_path / "d.csv").write_text('\ufeffq\n"multi\nline"\n\nsecond\n', encoding="utf-8")
    doc = ok_json(run("create_batch_file.py", "d.jsonl", "--csv", "d.csv", "--template", "{q}"))
    assert [r["custom_id"] for r in lines("d.jsonl")] == ["d-000001", "d-000002"]
    assert doc["source"]["ids_from_row_numbers"] is True and doc["source"]["id_column"] is None


def test_csv_prompt_column_needs_no_template(tmp_path):
    (tmp_path / "p.csv").write_text("prompt,other\nhello,x\n")
    ok_json(run("create_batch_file.py", "p.jsonl", "--csv", "p.csv"))
    assert lines("p.jsonl")[0]["body"]["messages"][0]["content"] == "hello"
    (tmp_path / "n.csv").write_text("text\nhello\n")
    proc = run("create_batch_file.py", "n.jsonl", "--csv", "n.csv")
    assert proc.returncode == 2 and is_error(proc.stdout) and "--template" in proc.stderr and "text" in proc.stderr


def test_jsonl_template_with_nested_fields_and_numeric_ids(tmp_path):
    (tmp_path / "docs.jsonl").write_text(
        '{"doc_id": 7, "meta": {"title": "A"}, "tags": ["x", "y"]}\n\n'
        '{"doc_id": 8, "meta": {"title": "B"}, "tags": []}\n'
    )
    ok_json(
        run(
            "create_batch_file.py",
            "t.jsonl",
            "--jsonl",
            "docs.jsonl",
            "--id-field",
            "doc_id",
            "--template",
            "Title: {meta.title}; tags {tags}; {{literal}}",
        )
    )
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
    assert lines("e.jsonl")[0] == {
        "custom_id": "p-000001",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "Qwen/Qwen3-Embedding-8B", "input": "some text"},
    }
    assert doc["endpoint"] == "/v1/embeddings"
    ok_json(
        run(
            "create_batch_file.py",
            "r.jsonl",
            "--prompts",
            "p.txt",
            "--endpoint",
            "/v1/responses",
            "--system",
            "Reply in French.",
            "--max-tokens",
            "64",
            "--temperature",
            "0",
            "--response-format-json",
        )
    )
    assert lines("r.jsonl")[0]["body"] == {
        "model": builder.DEFAULT_CHAT_MODEL,
        "input": "some text",
        "instructions": "Reply in French.",
        "temperature": 0.0,
        "max_output_tokens": 64,
        "text": {"format": {"type": "json_object"}},
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["--endpoint", "/v1/embeddings", "--system", "x"], "--system"),
        (["--endpoint", "/v1/embeddings", "--max-tokens", "5"], "--max-tokens"),
        (["--endpoint", "/v1/responses", "--stop", "x"], "--stop"),
        (["--extra-body", '{"model": "other"}'], "model"),
        (["--extra-body", "[1]"], "JSON object"),
        (["--extra-body", "{nope"], "not valid JSON"),
        (["--template", "{x}"], "needs --csv or --jsonl"),
        (["--max-tokens", "0"], "at least 1"),
        (["--id-prefix", "bad\u0001"], "--id-prefix"),
    ],
)
def test_option_errors_exit_2_and_write_nothing(tmp_path, args, message, capsys):
    (tmp_path / "p.txt").write_text("hi\n")
    code, out, err = build("o.jsonl", "--prompts", "p.txt", *args, capsys=capsys)
    assert code == 2 and is_error(out) and message in err
    assert sorted(os.listdir(tmp_path)) == ["p.txt"]


def test_structured_output_options(tmp_path):
    (tmp_path / "p.txt").write_text("Acme raised $5M\n")
    (tmp_path / "deal.schema.json").write_text(
        json.dumps({"type": "object", "properties": {"company": {"type": "string"}}, "required": ["company"]})
    )
    ok_json(
        run(
            "create_batch_file.py",
            "s.jsonl",
            "--prompts",
            "p.txt",
            "--json-schema",
            "deal.schema.json",
            "--extra-body",
            '{"seed": 3, "chat_template_kwargs": {"enable_thinking": false}}',
        )
    )
    body = lines("s.jsonl")[0]["body"]
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "deal",
            "strict": True,
            "schema": {"type": "object", "properties": {"company": {"type": "string"}}, "required": ["company"]},
        },
    }
    assert body["seed"] == 3 and body["chat_template_kwargs"] == {"enable_thinking": False}


def test_no_input_writes_a_five_prompt_example(tmp_path):
    doc = ok_json(run("create_batch_file.py", "example.jsonl"))
    rows = lines("example.jsonl")
    assert doc["requests"] == 5 == len({r["body"]["messages"][0]["content"] for r in rows})
    assert [r["custom_id"] for r in rows] == [f"example-{i:06d}" for i in range(1, 6)]


def test_no_input_never_replaces_an_existing_file(tmp_path):
    Path("requests.jsonl").write_text("my own requests\n")
    proc = run("create_batch_file.py", "requests.jsonl")
    assert proc.returncode == 2 and is_error(proc.stdout)
    assert "error: OUTPUT requests.jsonl exists; with no input" in proc.stderr
    assert "hint: Pass the input the file should be built from" in proc.stderr
    assert Path("requests.jsonl").read_text() == "my own requests\n"
    assert sorted(os.listdir(".")) == ["requests.jsonl"]
    Path("prompts.txt").write_text("hi\n")  # with an input it is replaced, as OUTPUT always is
    assert ok_json(run("create_batch_file.py", "requests.jsonl", "--prompts", "prompts.txt"))["requests"] == 1


def test_limit_takes_the_first_rows(tmp_path):
    (tmp_path / "p.txt").write_text("".join(f"q{i}\n" for i in range(10)))
    assert ok_json(run("create_batch_file.py", "o.jsonl", "--prompts", "p.txt", "--limit", "3"))["requests"] == 3


# -- atomic output ----------------------------------------------------------------------------


def test_a_failed_build_leaves_the_existing_output_and_sidecar_untouched(tmp_path, capsys):
    (tmp_path / "a.csv").write_text("id,text\n1,x\n2,y\n")
    assert build("out.jsonl", "--csv", "a.csv", "--id-column", "id", "--template", "{text}", capsys=capsys)[0] == 0
    before = (tmp_path / "out.jsonl").read_bytes(), (tmp_path / "out.source.json").read_bytes()
    (tmp_path / "b.csv").write_text("id,text\n1,x\n" + "".join(f"{i},t\n" for i in range(2, 500)) + "1,dup\n")
    code, out, err = build("out.jsonl", "--csv", "b.csv", "--id-column", "id", "--template", "{text}", capsys=capsys)
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
    assert lines(tmp_path / "lib.jsonl")[4]["body"] == {
        "model": builder.DEFAULT_CHAT_MODEL,
        "input": "hi",
        "instructions": "be brief",
        "max_output_tokens": 9,
    }
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
    tpl = template.Template("{a} and {b.c}")
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
        [
            "j_out.jsonl",
            "--jsonl",
            "j.jsonl",
            "--id-field",
            "k",
            "--template",
            "Echo: {body}",
            "--endpoint",
            "/v1/responses",
        ],
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


# -- CSV input: quotes, empty rows, delimiters, line endings, BOM, fingerprint ------------------


def csv_build(tmp_path, name, data, *args):
    """Write ``data`` (bytes) to ``name`` and run create_batch_file.py on it."""
    (tmp_path / name).write_bytes(data)
    out = name.rsplit(".", 1)[0] + ".jsonl"
    return run("create_batch_file.py", out, "--csv", name, *args), tmp_path / out


def prompts_of(path):
    return [r["body"]["messages"][-1]["content"] for r in lines(path)]


def assert_refused(proc, out, *wording):
    assert proc.returncode == 2, proc.stderr
    assert is_error(proc.stdout)
    assert proc.stderr.count("error: ") == 1 and "\nhint: " in proc.stderr
    for w in wording:
        assert w in proc.stderr, proc.stderr
    assert not out.exists() and not out.with_name(out.stem + ".source.json").exists()


@pytest.mark.parametrize(
    "data, line",
    [
        (b'id,text\n1,fine\n2,"stray quote start\n3,also fine\n4,more\n', 3),
        (b'id,text\r\n1,"two\r\nlines"\r\n2,"ok"\r\n3,"open\r\n4,x\r\n', 5),  # CRLF, after a closed multi-line field
        (b'id,a,b\n1,"multi\nline\nhere","open\n2,x,y', 4),  # opened on a later line of its own row
        (b'id,"text\n1,a\n2,b\n', 1),  # in the header
        (b'id,text\n1,a\n2,"unclosed at the very end', 3),
    ],
)
def test_a_quote_left_open_to_the_end_of_the_file_is_refused_with_its_line(tmp_path, data, line):
    proc, out = csv_build(tmp_path, "q.csv", data, "--template", "{text}" if b"text" in data else "{a}")
    last = data.count(b"\n") + (not data.endswith(b"\n"))
    assert_refused(
        proc,
        out,
        f"error: q.csv: line {line}: a quoted field starts here and is never closed",
        f"end of the file (line {last})",
        'two quotes ("")',
    )


def test_closed_multi_line_quoted_fields_are_read_whole(tmp_path):
    data = b'id,text,n\n1,"para one\n\npara two, with ""quotes""",7\n2,"last\nrow",'  # no newline at the end
    doc = ok_json(csv_build(tmp_path, "m.csv", data, "--template", "{text} ({n})")[0])
    assert prompts_of("m.jsonl") == ['para one\n\npara two, with "quotes" (7)', "last\nrow ()"]
    assert doc["requests"] == 2 and doc["warnings"] == []


def test_a_stray_quote_closed_by_a_later_one_is_warned_about(tmp_path):
    data = b'id,text\n1,fine\n2,"stray start\n3,also fine\n4,more\n5,"legit"\n6,ok\n'
    proc, out = csv_build(tmp_path, "s.csv", data, "--template", "{text}")
    doc = ok_json(proc)
    assert doc["requests"] == 3
    warning = (
        "line 3: a quoted field runs to line 6 and 3 of its lines look like rows of their own; if a quote "
        "there lacks its closing pair, those rows were read into this field"
    )
    assert doc["warnings"] == [warning]
    assert f"warning: {warning}" in proc.stderr
    # a letter over several lines, with a comma on one of them, is not suspicious
    proc, _ = csv_build(
        tmp_path, "l.csv", b'id,text\n1,"Dear team,\nthanks.\nBest,\nBob"\n2,ok\n', "--template", "{text}"
    )
    assert ok_json(proc)["warnings"] == [] and "warning" not in proc.stderr


def test_a_row_that_runs_over_several_lines_has_a_hint_about_quotes(tmp_path):
    data = b'id,text\n1,a\n2,"stray\n3,b\n4,"x",extra\n'
    proc, out = csv_build(tmp_path, "r.csv", data, "--template", "{text}")
    assert_refused(
        proc, out, "error: r.csv: line 3: the row has 3 field(s), the header has 2", "The row runs from line 3 to 5"
    )


def test_empty_rows_are_skipped_with_a_counted_warning_and_do_not_take_a_number(tmp_path):
    data = b"id,text\n1,a\n,\n\n2,b\n   \n , \n3,c\n"
    proc, out = csv_build(tmp_path, "e.csv", data, "--template", "{text}")
    doc = ok_json(proc)
    assert [r["custom_id"] for r in lines(out)] == ["e-000001", "e-000002", "e-000003"]
    assert prompts_of(out) == ["a", "b", "c"]
    assert doc["warnings"] == ["skipped 4 empty row(s) (lines 3, 4, 6, 7)"]
    assert "warning: skipped 4 empty row(s) (lines 3, 4, 6, 7)" in proc.stderr
    assert doc["source"]["rows"] == 3
    # with an id column too: an empty row has no id, and is skipped rather than refused
    doc = ok_json(csv_build(tmp_path, "i.csv", data, "--template", "{text}", "--id-column", "id")[0])
    assert [r["custom_id"] for r in lines("i.jsonl")] == ["i-1", "i-2", "i-3"]
    assert doc["warnings"] == ["skipped 4 empty row(s) (lines 3, 4, 6, 7)"]


def test_a_csv_of_only_empty_rows_has_no_data_rows(tmp_path):
    proc, out = csv_build(tmp_path, "z.csv", b"id,text\n,\n\n", "--template", "{text}")
    assert_refused(
        proc,
        out,
        "error: z.csv: line 1: the CSV has a header row but no data rows",
        "2 empty row(s) were skipped (lines 2, 3)",
    )


def test_many_empty_rows_are_listed_in_short(tmp_path):
    data = b"text\nx\n" + b",\n" * 0 + b"\n" * 25 + b"y\n"
    doc = ok_json(csv_build(tmp_path, "b.csv", data, "--template", "{text}")[0])
    assert doc["warnings"] == ["skipped 25 empty row(s) (lines 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, ... (15 more))"]


def test_rows_whose_template_columns_are_all_empty_are_built_and_warned_about(tmp_path):
    data = b"id,text,note,other\n1,,,x\n2,b,,\n3,,,\n4,,n,\n"
    proc, out = csv_build(tmp_path, "p.csv", data, "--id-column", "id", "--template", "{id}: {text} {note}")
    doc = ok_json(proc)
    assert [r["custom_id"] for r in lines(out)] == ["p-1", "p-2", "p-3", "p-4"]
    assert prompts_of(out) == ["1:  ", "2: b ", "3:  ", "4:  n"]
    warning = "2 row(s) have every column the template uses empty; their requests were built anyway (lines 2, 4)"
    assert doc["warnings"] == [warning] and f"warning: {warning}" in proc.stderr
    # an empty prompt is counted once, by the clearer of the two warnings
    doc = ok_json(csv_build(tmp_path, "t.csv", b"id,text\n1,\n2,b\n", "--template", "{text}")[0])
    assert doc["warnings"] == [
        "1 row(s) have every column the template uses empty; their requests were built anyway (lines 2)"
    ]


@pytest.mark.parametrize(
    "header, delimiter, name",
    [("id;text;stars", ";", "semicolons"), ("id\ttext\tstars", "\t", "tabs"), ("id|text|stars", "|", "pipes")],
)
def test_the_delimiter_is_detected_from_the_header_and_recorded(tmp_path, header, delimiter, name):
    rows = [["r1", "great, really", "5"], ["r2", 'a "quoted" word', "1"]]
    body = "".join(delimiter.join(f'"{v}"' if '"' in v else v for v in r) + "\n" for r in rows)
    body = body.replace('"a "quoted" word"', '"a ""quoted"" word"')
    proc, out = csv_build(
        tmp_path, "d.csv", (header + "\n" + body).encode(), "--id-column", "id", "--template", "{text} ({stars})"
    )
    doc = ok_json(proc)
    assert prompts_of(out) == ["great, really (5)", 'a "quoted" word (1)']
    assert f"d.csv: the header row is split by {name} ({delimiter!r}), so that is the delimiter" in proc.stderr
    sidecar = json.loads((tmp_path / "d.source.json").read_text())
    assert sidecar["delimiter"] == doc["source"]["delimiter"] == delimiter
    with sources.CsvRows(str(tmp_path / "d.csv")) as rows_read:
        assert rows_read.delimiter == delimiter and rows_read.dialect.delimiter == delimiter
        assert rows_read.header == ["id", "text", "stars"]


def test_a_comma_header_or_a_tie_means_comma_and_is_not_narrated(tmp_path):
    proc, out = csv_build(tmp_path, "c.csv", b"title;sub,text\nA;a,x\n", "--template", "{text}")
    doc = ok_json(proc)
    assert doc["source"]["delimiter"] == "," and prompts_of(out) == ["x"] and "delimiter" not in proc.stderr
    proc, out = csv_build(tmp_path, "one.csv", b"text\nhello; world\n", "--template", "{text}")
    assert ok_json(proc)["source"]["delimiter"] == "," and prompts_of(out) == ["hello; world"]


@pytest.mark.parametrize("flag", [";", "semicolon"])
def test_delimiter_flag_overrides_the_detection(tmp_path, flag):
    proc, out = csv_build(
        tmp_path, "c.csv", b"title;sub,text\nA;a,x\n", "--delimiter", flag, "--template", "{sub,text}"
    )
    doc = ok_json(proc)
    assert prompts_of(out) == ["a,x"] and doc["source"]["delimiter"] == ";" and "split by" not in proc.stderr


@pytest.mark.parametrize("flag", ["\t", "\\t", "tab", "TAB"])
def test_delimiter_flag_takes_a_tab_in_several_spellings(tmp_path, flag):
    proc, out = csv_build(tmp_path, "t.csv", b"id\ttext\n1\ta, b\n", "--delimiter", flag, "--template", "{text}")
    assert prompts_of(out) == ["a, b"] and ok_json(proc)["source"]["delimiter"] == "\t"


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--csv", "c.csv", "--template", "{text}", "--delimiter", ":"],
            "--delimiter ':' is not supported; use one of , ; tab |",
        ),
        (
            ["--csv", "c.csv", "--template", "{text}", "--delimiter", ",,"],
            "--delimiter ',,' is not supported; use one of , ; tab |",
        ),
        (["--prompts", "c.csv", "--delimiter", ";"], "--delimiter needs --csv"),
    ],
)
def test_delimiter_usage_errors(tmp_path, args, message):
    (tmp_path / "c.csv").write_text("id,text\n1,a\n")
    proc = run("create_batch_file.py", "o.jsonl", *args)
    assert_refused(proc, tmp_path / "o.jsonl", f"error: {message}")


def test_cr_only_line_endings_are_read_as_line_ends(tmp_path):
    data = b'id,text\r1,"cell with\nan LF inside"\r\r2,b\r3,c'
    proc, out = csv_build(tmp_path, "mac.csv", data, "--id-column", "id", "--template", "{text}")
    doc = ok_json(proc)
    assert prompts_of(out) == ["cell with\nan LF inside", "b", "c"]
    assert "mac.csv: lines end with a lone CR (an old Mac export); each CR ends a line" in proc.stderr
    assert doc["warnings"] == ["skipped 1 empty row(s) (lines 3)"]
    # line numbers count CRs: the duplicate id is on line 5
    proc, out = csv_build(
        tmp_path, "dup.csv", b"id,text\r1,a\r2,b\r\r1,c\r", "--id-column", "id", "--template", "{text}"
    )
    assert_refused(proc, out, "line 5: duplicate custom_id 'dup-1' (first made from line 2)")
    proc, out = csv_build(tmp_path, "open.csv", b'id,text\r1,a\r2,"open\r3,c\r', "--template", "{text}")
    assert_refused(proc, out, "open.csv: line 3: a quoted field starts here and is never closed")


def test_cr_only_prompts_files_are_read_too(tmp_path):
    (tmp_path / "p.txt").write_bytes(b"first\r\rthird\r")
    ok_json(run("create_batch_file.py", "p.jsonl", "--prompts", "p.txt"))
    assert [r["custom_id"] for r in lines("p.jsonl")] == ["p-000001", "p-000003"]
    assert prompts_of("p.jsonl") == ["first", "third"]


def test_line_ending_detection_across_the_first_read(tmp_path, monkeypatch):
    monkeypatch.setattr(sources.TextLines, "HEAD", 4)
    monkeypatch.setattr(sources.TextLines, "CHUNK", 3)
    cases = {
        b"abc\r\ndef\r\n": ["abc\r\n", "def\r\n"],
        b"abc\rdef\rg": ["abc\r", "def\r", "g"],
        b"ab\ncdefgh\ni": ["ab\n", "cdefgh\n", "i"],
        b"abcdefgh\n": ["abcdefgh\n"],
        b"": [],
        b"\xef\xbb\xbfa\rb": ["a\r", "b"],
    }
    for i, (data, want) in enumerate(cases.items()):
        (tmp_path / f"f{i}").write_bytes(data)
        with sources.TextLines(str(tmp_path / f"f{i}")) as tl:
            assert list(tl) == want, data
            assert tl.line == len(want) and tl.bom == data.startswith(b"\xef\xbb\xbf")


def test_the_sidecar_records_the_csv_fingerprint_delimiter_and_bom(tmp_path):
    data = "\ufeffid;text\nr1;café\n".encode("utf-8")
    proc, out = csv_build(tmp_path, "x.csv", data, "--id-column", "id", "--template", "{text}")
    doc = ok_json(proc)
    sidecar = json.loads((tmp_path / "x.source.json").read_text())
    st = os.stat(tmp_path / "x.csv")
    import hashlib

    assert sidecar["bytes"] == st.st_size == len(data) and sidecar["mtime"] == st.st_mtime
    assert isinstance(sidecar["mtime"], float)
    assert sidecar["sha256"] == hashlib.sha256(data).hexdigest()
    assert sidecar["delimiter"] == ";" and sidecar["bom"] is True
    for kept in (
        "kind",
        "path",
        "id_column",
        "ids_from_row_numbers",
        "id_prefix",
        "lines_in_row_order",
        "rows",
        "output",
        "output_sha256",
    ):
        assert kept in sidecar
    assert doc["source"] == {k: v for k, v in sidecar.items() if k not in ("output", "output_sha256")}
    assert prompts_of(out) == ["café"]
    with sources.CsvRows(str(tmp_path / "x.csv")) as rows:
        assert rows.bom is True and rows.header == ["id", "text"]
    doc = ok_json(csv_build(tmp_path, "y.csv", b"id,text\n1,a\n", "--template", "{text}")[0])
    assert doc["source"]["bom"] is False and doc["source"]["delimiter"] == ","


def test_a_csv_that_changes_while_it_is_read_is_refused(tmp_path, monkeypatch, capsys):
    from _dwbatches.workflow import building

    (tmp_path / "c.csv").write_text("id,text\n1,a\n")
    real = building.sha256_file

    def edit_then_hash(path):
        with open(path, "a") as fh:
            fh.write("2,b\n")
        return real(path)

    monkeypatch.setattr(building, "sha256_file", edit_then_hash)
    code, out, err = build("c.jsonl", "--csv", "c.csv", "--template", "{text}", capsys=capsys)
    assert code == 2 and is_error(out) and "error: c.csv changed while it was being read" in err and "hint: " in err
    assert not (tmp_path / "c.jsonl").exists() and not (tmp_path / "c.source.json").exists()


def test_help_documents_the_csv_options():
    proc = run("create_batch_file.py", "--help", subprocess=True)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for words in (
        "--delimiter CHAR",
        "detected from the header row",
        "CR-only",
        "left open",
        "are all empty are skipped",
        "sha256",
        "BOM",
    ):
        assert words in text, words


def test_limit_stops_reading_the_csv_at_the_last_row_taken(tmp_path):
    data = b"id,text\n1,a\n\n2,b\n,\n3,\n4,d\n"
    proc, out = csv_build(tmp_path, "l.csv", data, "--template", "{text}", "--limit", "2")
    doc = ok_json(proc)
    assert prompts_of(out) == ["a", "b"] and doc["source"]["rows"] == 2
    assert doc["warnings"] == ["skipped 1 empty row(s) (lines 3)"]  # not line 5, nor row 3's empty text


def test_a_json_example_in_a_template_names_the_brace_escape(tmp_path):
    (tmp_path / "t.csv").write_text("id,text\n1,hi\n", encoding="utf-8")
    proc = run(
        "create_batch_file.py",
        tmp_path / "o.jsonl",
        "--csv",
        tmp_path / "t.csv",
        "--template",
        'Answer as {"label": "x"} for {text}',
    )
    assert proc.returncode == 2 and is_error(proc.stdout)
    assert "{{" in proc.stderr and "double them" in proc.stderr
    ok_json(
        run(
            "create_batch_file.py",
            tmp_path / "o.jsonl",
            "--csv",
            tmp_path / "t.csv",
            "--template",
            'Answer as {{"label": "x"}} for {text}',
        )
    )
    body = json.loads((tmp_path / "o.jsonl").read_text().splitlines()[0])["body"]
    assert body["messages"][-1]["content"] == 'Answer as {"label": "x"} for hi'


@pytest.mark.parametrize(
    "flag,value", [("--temperature", "nan"), ("--top-p", "inf"), ("--extra-body", '{"seed": NaN}')]
)
def test_a_number_json_cannot_hold_is_blamed_on_its_flag(tmp_path, flag, value):
    proc = run("create_batch_file.py", tmp_path / "o.jsonl", "--prompts", "-", flag, value, input="hello\n")
    assert proc.returncode == 2 and is_error(proc.stdout) and proc.stderr.startswith(f"error: {flag}")
    assert "line 1" not in proc.stderr and not (tmp_path / "o.jsonl").exists()


def test_an_old_sidecar_field_is_read_under_its_new_name(tmp_path):
    from _dwbatches.jobs.jobrecord import sha256_file

    out = tmp_path / "b.jsonl"
    out.write_text("{}\n")
    sidecar = builder.sidecar_path(str(out))
    with open(sidecar, "w") as fh:
        json.dump({"kind": "csv", "custom_ids_in_row_order": True, "output_sha256": sha256_file(str(out))}, fh)
    source, note = builder.read_sidecar(str(out), sha256_file(str(out)))
    assert note is None and source == {"kind": "csv", "ids_from_row_numbers": True}


@pytest.mark.slow
def test_after_a_trial_in_the_same_file_next_names_a_new_job_and_runs(sandbox):
    """The trial ran as requests.jsonl (job requests.dwjob); the full file is rebuilt under the
    same name: create_batch_file's and submit --dry-run's next submit it as a new job, and run."""
    Path("prompts.txt").write_text("".join(f"prompt {i}\n" for i in range(6)))
    trial = ok_json(run("create_batch_file.py", "requests.jsonl", "--prompts", "prompts.txt", "--limit", "2"))
    assert trial["next"].endswith("submit.py requests.jsonl")  # no job yet: the default one
    code, doc, err = run_script("run_batch.py", "requests.jsonl", "--wait", "--interval", "0.2", env=sandbox.env())
    assert code == 0 and doc["succeeded"] == 2, err
    Path("requests.2.dwjob").mkdir()  # taken (by anything): the next free name is used
    proc = run("create_batch_file.py", "requests.jsonl", "--prompts", "prompts.txt")
    full = ok_json(proc)
    assert full["next"].endswith("submit.py requests.jsonl --job requests.3.dwjob"), full["next"]
    assert "the job at requests.dwjob was started with another input" in proc.stderr
    code, dry, err = run_script("submit.py", "requests.jsonl", "--dry-run", env=sandbox.env())
    assert code == 0 and dry["next"] == full["next"], err
    assert dry["job"] == os.path.abspath("requests.3.dwjob") and dry["job_exists"] is False
    # the printed command runs as printed
    ran = subprocess.run(full["next"], shell=True, env=sandbox.env(), capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["job"] == os.path.abspath("requests.3.dwjob")
    # built again: next resumes the job of this input (nothing is sent twice) ...
    proc = run("create_batch_file.py", "requests.jsonl", "--prompts", "prompts.txt")
    assert ok_json(proc)["next"] == full["next"] and "resumes this input's job at requests.3.dwjob" in proc.stderr
    ran = subprocess.run(full["next"], shell=True, env=sandbox.env(), capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and json.loads(ran.stdout)["this_run"]["created"] == 0, ran.stderr
    # ... and a sample in a file of its own never meets the full run
    sample = ok_json(run("create_batch_file.py", "sample.jsonl", "--prompts", "prompts.txt", "--limit", "2"))
    assert sample["next"].endswith("submit.py sample.jsonl")


def test_next_goes_through_the_dry_run_above_a_trial_and_each_step_runs_as_printed(sandbox, tmp_path):
    """A trial (at most 100 requests) is submitted straight away; a bigger job's next is the dry
    run, whose own next submits it."""
    Path("few.txt").write_text("".join(f"question {i}\n" for i in range(100)), encoding="utf-8")
    Path("many.txt").write_text("".join(f"question {i}\n" for i in range(101)), encoding="utf-8")
    code, doc, err = run_script("create_batch_file.py", "few.jsonl", "--prompts", "few.txt")
    assert code == 0 and "--dry-run" not in doc["next"], doc["next"]
    code, doc, err = run_script("create_batch_file.py", "many.jsonl", "--prompts", "many.txt")
    assert code == 0 and doc["next"].endswith("many.jsonl --dry-run"), doc["next"]
    code, dry, err = run_script(*shlex.split(doc["next"])[1:], env=sandbox.env())
    assert code == 0 and dry["dry_run"] is True and "estimated_cost" in dry, err
    code, sub, err = run_script(*shlex.split(dry["next"])[1:], env=sandbox.env())
    assert code == 0 and sub["requests"] == 101, err
