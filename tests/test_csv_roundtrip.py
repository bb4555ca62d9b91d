"""A CSV through the whole round trip on the sandbox: create_batch_file.py → submit.py →
fetch_results.py --format csv, with empty rows, other delimiters, a BOM, CR-only line
endings, and a job built before empty rows were skipped. The sandbox's model echoes the
prompt, so each answer shows which row it belongs to."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from helpers import job_state, make_job, read_jsonl, run_script, wait_job

BOM = b"\xef\xbb\xbf"


def roundtrip(sandbox, name, data, *build_args, fetch_args=()):
    """Build from ``data`` (bytes), submit, wait, fetch as CSV; return (built doc, result bytes)."""
    Path(name).write_bytes(data)
    stem = name.rsplit(".", 1)[0]
    code, built, err = run_script("create_batch_file.py", f"{stem}.jsonl", "--csv", name, *build_args)
    assert code == 0, err
    job = make_job(sandbox, f"{stem}.jsonl")
    wait_job(sandbox, job)
    out = Path(f"{stem}.answers.csv")
    code, doc, err = run_script(
        "fetch_results.py", "--job", job, "--format", "csv", "-o", out, *fetch_args, env=sandbox.env()
    )
    assert code == 0, err
    assert doc["succeeded"] == built["requests"] and doc["missing"] == 0 and doc["unexpected"] == 0
    return built, out.read_bytes()


def parse(raw: bytes, delimiter: str = ","):
    text = raw.decode("utf-8")
    return list(csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), delimiter=delimiter))


def test_empty_rows_get_no_request_but_come_back_and_every_answer_lands_on_its_row(sandbox):
    data = b"topic,text\nA,first\n,\n\nB,second\n  ,  \nC,third\n,\n"
    built, raw = roundtrip(sandbox, "e.csv", data, "--template", "Say {text}")
    assert built["warnings"] == ["skipped 4 empty row(s) (lines 3, 4, 6, 8)"]
    assert [r["custom_id"] for r in read_jsonl("e.jsonl")] == ["e-000001", "e-000002", "e-000003"]
    rows = parse(raw)
    assert rows[0] == ["topic", "text", "response", "error", "answer_check"]
    # every row of the CSV comes back (a blank line is no row), the empty ones without an answer
    assert [r[:2] for r in rows[1:]] == [
        ["A", "first"],
        ["", ""],
        ["B", "second"],
        ["  ", "  "],
        ["C", "third"],
        ["", ""],
    ]
    for row in rows[1:]:
        if row[0].strip():
            assert f"Say {row[1]}" in row[2] and row[3] == "" and row[4] == "good"
        else:
            assert row[2:] == ["", "no request was made for this row", ""]


def test_rows_with_empty_template_columns_keep_their_place(sandbox):
    data = b"id,text\n1,one\n2,\n3,three\n"
    built, raw = roundtrip(sandbox, "b.csv", data, "--template", "Q: {text}")
    assert built["requests"] == 3 and "lines 3" in built["warnings"][0]
    rows = parse(raw)
    assert [r[0] for r in rows[1:]] == ["1", "2", "3"]
    assert "Q: one" in rows[1][2] and "Q: three" in rows[3][2] and rows[2][3] == ""


def test_a_semicolon_csv_with_a_bom_comes_back_with_semicolons_and_the_bom(sandbox):
    data = BOM + 'id;text;note\r\nr1;Crème brûlée, s\'il vous plaît;x\r\nr2;"two\r\nlines; one cell";y\r\n'.encode()
    built, raw = roundtrip(sandbox, "fr.csv", data, "--id-column", "id", "--template", "Translate: {text}")
    assert built["source"]["delimiter"] == ";" and built["source"]["bom"] is True
    assert raw.startswith(BOM) and not raw.startswith(BOM + BOM)
    first = raw[len(BOM) :].split(b"\r\n", 1)[0]
    assert first == b"id;text;note;response;error;answer_check"
    rows = parse(raw, ";")
    assert [r[:3] for r in rows[1:]] == [
        ["r1", "Crème brûlée, s'il vous plaît", "x"],
        ["r2", "two\r\nlines; one cell", "y"],
    ]
    assert "Translate: Crème brûlée" in rows[1][3]
    # read back as Excel would: the BOM makes the header's first name "id", not "\ufeffid"
    assert list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline=""), delimiter=";"))[0]["id"] == "r1"


def test_a_tab_separated_csv_is_detected_and_written_back_with_tabs(sandbox):
    data = b"id\ttext\n1\tcommas, stay, inside\n2\tplain\n"
    built, raw = roundtrip(sandbox, "t.csv", data, "--template", "{text}")
    assert built["source"]["delimiter"] == "\t" and built["source"]["bom"] is False
    assert not raw.startswith(BOM)
    rows = parse(raw, "\t")
    assert rows[0] == ["id", "text", "response", "error", "answer_check"]
    assert [r[1] for r in rows[1:]] == ["commas, stay, inside", "plain"]
    assert "commas, stay, inside" in rows[1][2]


def test_a_delimiter_given_to_the_builder_is_the_one_the_fetch_uses(sandbox):
    # a comma and a semicolon split this header equally, so detection alone would pick the comma
    data = b"title;sub,text\nA;a,x\nB;b,y\n"
    built, raw = roundtrip(sandbox, "g.csv", data, "--delimiter", ";", "--template", "{sub,text}")
    assert built["source"]["delimiter"] == ";"
    rows = parse(raw, ";")
    assert rows[0] == ["title", "sub,text", "response", "error", "answer_check"]
    assert [r[:2] for r in rows[1:]] == [["A", "a,x"], ["B", "b,y"]]
    assert "a,x" in rows[1][2] and "b,y" in rows[2][2]


def test_a_cr_only_csv_round_trips(sandbox):
    data = b"id,text\rm1,old mac\r\rm2,export\r"
    built, raw = roundtrip(sandbox, "mac.csv", data, "--template", "{text}")
    rows = parse(raw)
    assert [r[:2] for r in rows[1:]] == [["m1", "old mac"], ["m2", "export"]]
    assert "old mac" in rows[1][2] and "export" in rows[2][2]


def test_a_job_built_before_empty_rows_were_skipped_still_matches_its_rows(sandbox, tmp_path):
    # what the earlier builder made of this CSV: the ',' row had a request (an empty prompt) and
    # a number, and its sidecar recorded no delimiter
    Path("old.csv").write_bytes(b"id,text\n1,alpha\n,\n\n2,bravo\n")
    reqs = [
        {
            "custom_id": f"old-{n:06d}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "Qwen/Qwen3.5-35B-A3B-FP8", "messages": [{"role": "user", "content": p}]},
        }
        for n, p in ((1, "alpha"), (2, ""), (3, "bravo"))
    ]
    Path("old.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reqs))
    import hashlib

    sha = hashlib.sha256(Path("old.jsonl").read_bytes()).hexdigest()
    Path("old.source.json").write_text(
        json.dumps(
            {
                "kind": "csv",
                "path": str(tmp_path / "old.csv"),
                "id_column": None,
                "custom_ids_in_row_order": True,
                "id_prefix": "old",
                "lines_in_row_order": True,
                "rows": 3,
                "output": str(tmp_path / "old.jsonl"),
                "output_sha256": sha,
            }
        )
    )
    job = make_job(sandbox, "old.jsonl")
    assert "delimiter" not in job_state(job)["source"]
    wait_job(sandbox, job)
    code, doc, err = run_script(
        "fetch_results.py", "--job", job, "--format", "csv", "-o", "old.answers.csv", env=sandbox.env()
    )
    assert code == 0, err
    rows = parse(Path("old.answers.csv").read_bytes())
    assert [r[:2] for r in rows[1:]] == [["1", "alpha"], ["", ""], ["2", "bravo"]]
    assert "alpha" in rows[1][2] and "bravo" in rows[3][2]
    assert "alpha" not in rows[2][2] and "bravo" not in rows[2][2] and rows[2][3] == ""


def test_columns_chooses_and_names_the_columns_of_a_prompts_job_and_is_remembered(sandbox):
    """A CSV of question and answer from a prompts job: --columns picks, orders and renames the
    columns (no custom_id), a later fetch keeps the choice, and a column that does not exist is
    refused with the names there are."""
    Path("qs.txt").write_text("What is 2+2?\nName a colour.\n", encoding="utf-8")
    code, built, err = run_script("create_batch_file.py", "qs.jsonl", "--prompts", "qs.txt")
    assert code == 0, err
    job = make_job(sandbox, "qs.jsonl")
    wait_job(sandbox, job)
    args = ("fetch_results.py", "--job", job, "--format", "csv", "-o", "qa.csv")
    code, doc, err = run_script(*args, "--columns", "question=prompt,answer=response", env=sandbox.env())
    assert code == 0, err
    rows = parse(Path("qa.csv").read_bytes())
    assert rows[0] == ["question", "answer"]
    assert [r[0] for r in rows[1:]] == ["What is 2+2?", "Name a colour."] and all(r[1] for r in rows[1:])
    Path("qa.csv").unlink()
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sandbox.env())  # remembered
    assert code == 0 and parse(Path("qa.csv").read_bytes())[0] == ["question", "answer"], err

    code, doc, err = run_script(*args, "--columns", "question=text", env=sandbox.env())
    assert code == 2 and doc["error"]["message"].startswith("--columns names 'text', which is not a column")
    assert "custom_id, prompt, response, error, answer_check" in doc["error"]["hint"]
    code, doc, err = run_script(*args, "--columns", "a=prompt,a=response", env=sandbox.env())
    assert code == 2 and "writes 'a' twice" in doc["error"]["message"]
    code, doc, err = run_script("fetch_results.py", "--job", job, "--format", "simple", "--columns", "prompt")
    assert code == 2 and "--columns applies to --format csv" in doc["error"]["message"]
