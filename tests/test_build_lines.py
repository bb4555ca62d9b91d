"""The lines of a build are written from one template (the request made once, its custom_id and
prompt put in): byte for byte what json.dumps of each request writes, and every request still
checked (an unusual id, a body too large, a lone surrogate, a custom_id used twice), with the
source line in the message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _dwbatches.build import builder
from _dwbatches.build.builder import BatchFileWriter, LineTemplate, build_request
from _dwbatches.core.errors import InputError
from helpers import run_script

TRICKY = [
    ("q-1", "plain"),
    ('id "quoted" \\ back', 'a "quote", a \\ backslash, \n\r\t controls \x00 \x1f \x7f'),
    ("caf\u00e9-\u2028", "\u00e9t\u00e9 \u2028 \u2029 \U0001f600 \ue000 {braces} </script>"),
    ("x", ""),
]

OPTIONS = [
    ("/v1/chat/completions", {}),
    (
        "/v1/chat/completions",
        {"system": "be brief", "temperature": 0.5, "max_tokens": 300, "stop": ["\n"], "json_mode": True},
    ),
    ("/v1/chat/completions", {"json_schema": {"type": "object"}, "extra_body": {"seed": 7, "n": None}}),
    ("/v1/responses", {"system": "s", "max_tokens": 50, "json_mode": True}),
    ("/v1/embeddings", {}),
]


@pytest.mark.parametrize("endpoint,options", OPTIONS)
def test_a_template_line_is_what_json_dumps_writes(endpoint, options):
    def make(cid, prompt):
        return build_request(endpoint, cid, prompt, None, **options)

    tpl = LineTemplate.of(make)
    assert tpl is not None
    for cid, prompt in TRICKY:
        expected = json.dumps(make(cid, prompt), ensure_ascii=False, separators=(",", ":")) + "\n"
        assert tpl.line(cid, prompt) == expected.encode("utf-8")


def test_a_template_is_not_used_when_the_request_breaks_the_rules():
    assert LineTemplate.of(lambda cid, prompt: build_request("/v1/chat/completions", cid, prompt, " ")) is None


def test_each_built_request_is_still_checked(tmp_path):
    tpl = LineTemplate.of(lambda cid, prompt: build_request("/v1/chat/completions", cid, prompt))
    assert tpl is not None
    cases = [
        ("x" * 65, "hi", "line 3: custom_id is 65 bytes"),
        ("a\x01b", "hi", "line 3: custom_id contains the control character"),
        ("ok", "y" * 2000, "line 3: body is"),
        ("ok", "\ud800 lone", "line 3: cannot write the request as JSON"),
    ]
    for cid, prompt, message in cases:
        w = BatchFileWriter(str(tmp_path / "o.jsonl"), max_body_bytes=1000)
        w.add_built(tpl, "first", "fine", line=2)
        with pytest.raises(InputError, match=message.replace("(", r"\(")):
            w.add_built(tpl, cid, prompt, line=3)
        w.abort()
    w = BatchFileWriter(str(tmp_path / "o.jsonl"))
    w.add_built(tpl, "tab\tid", "a tab is allowed in an id", line=1)  # unusual, checked in full: fine
    w.close()
    assert json.loads((tmp_path / "o.jsonl").read_text())["custom_id"] == "tab\tid"


def test_a_duplicate_found_at_the_end_names_both_source_lines(tmp_path):
    tpl = LineTemplate.of(lambda cid, prompt: build_request("/v1/chat/completions", cid, prompt))
    w = BatchFileWriter(str(tmp_path / "d.jsonl"))
    for line, cid in ((2, "a"), (3, "b"), (7, "c"), (8, "b")):  # lines 4 to 6: a multi-line row
        w.add_built(tpl, cid, "p", line=line)
    with pytest.raises(InputError, match=r"line 8: duplicate custom_id 'b' \(first made from line 3\)"):
        w.close()
    assert not (tmp_path / "d.jsonl").exists()
    with pytest.raises(InputError, match=r"request 3: duplicate custom_id 'q' \(first made from request 1\)"):
        builder.write_batch_file([builder.chat_request(c, "p") for c in ("q", "r", "q")], str(tmp_path / "e.jsonl"))


def test_a_csv_with_unusual_ids_builds_as_before(tmp_path):
    Path("u.csv").write_text('id,text\n  spaced  ,alpha\n"caf\u00e9",bravo\n7,"multi\nline"\n', encoding="utf-8")
    code, doc, err = run_script("create_batch_file.py", "u.jsonl", "--csv", "u.csv", "--id-column", "id")
    assert code != 0 and "prompt" in err  # no template and no prompt column: refused as before
    code, doc, err = run_script(
        "create_batch_file.py", "u.jsonl", "--csv", "u.csv", "--id-column", "id", "--template", "Say: {text}"
    )
    assert code == 0, err
    lines = [json.loads(x) for x in Path("u.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["custom_id"] for x in lines] == ["u-spaced", "u-caf\u00e9", "u-7"]
    assert lines[2]["body"]["messages"][0]["content"] == "Say: multi\nline"
    Path("dup.csv").write_text('id,text\n1,a\n2,"b\nb"\n1,c\n', encoding="utf-8")
    code, doc, err = run_script(
        "create_batch_file.py", "dup.jsonl", "--csv", "dup.csv", "--id-column", "id", "--template", "{text}"
    )
    assert code == 2 and "line 5: duplicate custom_id 'dup-1' (first made from line 2)" in err, err
