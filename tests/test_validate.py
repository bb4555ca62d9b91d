"""validate_batch_file.py and _dwbatches.validation.validate: the report, warnings, limits and the chunk plan."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from _dwbatches.validation import validate
from helpers import is_error, run

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
MODEL = "Qwen/Qwen3.5-9B"


def line(cid, url="/v1/chat/completions", model=MODEL, **body):
    b = {"model": model}
    if url in ("/v1/chat/completions", "/v1/messages"):
        b["messages"] = [{"role": "user", "content": "hi"}]
    elif url == "/v1/completions":
        b["prompt"] = "hi"
    else:
        b["input"] = "hi"
    b.update(body)
    return {"custom_id": cid, "method": "POST", "url": url, "body": b}


def write(path, rows, sep="\n"):
    path.write_text(sep.join(r if isinstance(r, str) else json.dumps(r) for r in rows) + sep, encoding="utf-8")
    return path


def run_script(*args):
    return run("validate_batch_file.py", *args)


def test_valid_file_report(tmp_path):
    path = write(
        tmp_path / "ok.jsonl",
        [line(f"a-{i}") for i in range(5)] + [line("e-1", "/v1/embeddings", "Qwen/Qwen3-Embedding-8B")],
    )
    proc = run_script(path, "--max-requests", 4)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["valid"] is True and doc["requests"] == 6 and doc["lines"] == 6 and doc["errors"] == []
    assert doc["bytes"] == path.stat().st_size and doc["chunks"] == 2
    assert doc["models"] == {MODEL: 5, "Qwen/Qwen3-Embedding-8B": 1}
    assert doc["endpoints"] == {"/v1/chat/completions": 5, "/v1/embeddings": 1}
    assert any("more than one model" in w for w in doc["warnings"])
    assert any("more than one url" in w for w in doc["warnings"])
    assert "valid, 6 requests" in proc.stderr


def test_invalid_file_prints_errors_on_stderr_only_and_writes_the_report(tmp_path):
    rows = [line("a"), line("b"), "{oops", line("a"), json.dumps(line("c")).replace('"POST"', '"GET"')]
    path = write(tmp_path / "bad.jsonl", rows)
    proc = run_script(path, "--report", tmp_path / "r.json", "--max-errors", 2, "-q")
    assert proc.returncode == 2 and is_error(proc.stdout)
    assert "line 3: invalid JSON" in proc.stderr
    assert "line 4 (custom_id 'a'): duplicate custom_id 'a' (first used on line 1)" in proc.stderr
    assert "... and 1 more" in proc.stderr and "line 5" not in proc.stderr
    assert "error: " in proc.stderr and "nothing was sent" in proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["valid"] is False and report["errors_total"] == 3
    assert [e["line"] for e in report["errors"]] == [3, 4]


def test_missing_file_is_a_usage_error(tmp_path):
    proc = run_script(tmp_path / "nope.jsonl")
    assert proc.returncode == 2 and is_error(proc.stdout) and "no such file" in proc.stderr


def test_edge_cases_the_server_accepts_are_valid(tmp_path):
    rows = [
        json.dumps(line("lower")).replace('"POST"', '"post"'),  # method is case-insensitive
        line("tab\there"),  # TAB is allowed in a custom_id
        line("caf\u00e9-\u00fc"),  # non-ASCII is accepted by the server (64 bytes max)
        line("x" * 64),  # exactly 64 bytes
        line("c-1", "/v1/completions"),
        line("m-1", "/v1/messages"),
        line("r-1", "/v1/responses"),
        dict(line("extra"), note="ignored by the server"),
        line("prio", priority=5),
    ]
    path = write(tmp_path / "edge.jsonl", rows, sep="\r\n")
    rep = validate.validate_file(str(path))
    assert rep.valid, rep.errors
    assert rep.requests == len(rows)
    assert any("extra top-level keys (note)" in w for w in rep.warnings)
    assert any("CRLF" in w for w in rep.warnings)


def test_nan_and_infinity_are_refused_although_python_parses_them(tmp_path):
    text = json.dumps(line("n")).replace('"model"', '"temperature": NaN, "model"')
    assert json.loads(text)["body"]["temperature"] != 0  # Python's json accepts it
    rep = validate.validate_file(str(write(tmp_path / "nan.jsonl", [text])))
    assert not rep.valid and "NaN is not valid JSON" in rep.errors[0]["message"]


def test_many_duplicates_are_all_counted(tmp_path):
    rows = [line(f"id-{i}") for i in range(120)] * 2
    rep = validate.validate_file(str(write(tmp_path / "dup.jsonl", rows)))
    assert rep.errors_total == 120 and len(rep.errors) == validate.ERRORS_KEPT
    assert rep.errors[0] == {
        "line": 121,
        "custom_id": "id-0",
        "message": "duplicate custom_id 'id-0' (first used on line 1); results are matched "
        "by custom_id, so each must be unique",
    }


def test_body_size_limit_override(tmp_path):
    path = write(
        tmp_path / "b.jsonl", [line("a"), line("b", max_tokens=5, messages=[{"role": "user", "content": "x" * 500}])]
    )
    assert validate.validate_file(str(path)).valid
    rep = validate.validate_file(str(path), max_body_bytes=300)
    assert [e["line"] for e in rep.errors] == [2] and "at most 300" in rep.errors[0]["message"]


def test_token_estimates_per_model(tmp_path):
    rows = [
        line("a", max_tokens=100),
        line("b"),
        line("e", "/v1/embeddings", "Qwen/Qwen3-Embedding-8B"),
        line("r", "/v1/responses", max_output_tokens=7),
    ]
    compact = [json.dumps(r, separators=(",", ":"), ensure_ascii=False) for r in rows]
    for text, spelled in ((compact, compact_body), ([json.dumps(r) for r in rows], spaced_body)):
        path = write(tmp_path / "t.jsonl", text)
        rep = validate.validate_file(str(path))
        tokens = [spelled(r["body"]) // 4 for r in rows]
        chat = rep.model_tokens[MODEL]
        assert chat["requests"] == 3
        # input tokens: each body's bytes / 4 (the envelope left out), summed over the model's
        # requests; output: max_tokens where given, else input x 1.1
        assert chat["input_tokens"] == tokens[0] + tokens[1] + tokens[3]
        assert chat["output_tokens"] == 100 + tokens[1] * 11 // 10 + 7
        assert chat["output_tokens_low"] == min(100, tokens[0] * 11 // 10) + tokens[1] * 11 // 10 + min(
            7, tokens[3] * 11 // 10
        )
        assert rep.model_tokens["Qwen/Qwen3-Embedding-8B"]["input_tokens"] == tokens[2]
        assert rep.model_tokens["Qwen/Qwen3-Embedding-8B"]["output_tokens"] == 0


def compact_body(body):
    """A body's bytes as the server stores and counts it: compact JSON, UTF-8."""
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def spaced_body(body):
    return len(json.dumps(body))


@pytest.mark.parametrize(
    "dump",
    [
        lambda r: json.dumps(r, separators=(",", ":"), ensure_ascii=False),  # the builder's lines: the body's bytes
        lambda r: json.dumps(r, separators=(",", ":")),  # non-ASCII as \u escapes: encoded as the server stores it
        lambda r: json.dumps(r, ensure_ascii=False, indent=None, separators=(", ", ":")),  # another shape: encoded
        lambda r: json.dumps(r, separators=(",", ":"), ensure_ascii=False).replace("\n", "\r\n"),  # CRLF: encoded
        lambda r: json.dumps({k: r[k] for k in ("body", "url", "method", "custom_id")}, separators=(",", ":")),
    ],
)
def test_input_tokens_are_counted_from_the_body_as_the_server_counts_them(tmp_path, dump):
    rows = [
        line(f"q{i}", messages=[{"role": "user", "content": text}], max_tokens=50)
        for i, text in enumerate(["hi", "Grüße aus Köln, naïve café", "日本語のテキスト " * 9, 'a\nb "q" \\ tab\t'])
    ]
    path = write(tmp_path / "u.jsonl", [dump(r) for r in rows])
    rep = validate.validate_file(str(path))
    assert rep.valid, rep.errors
    assert rep.model_tokens[MODEL]["input_tokens"] == sum(compact_body(r["body"]) // 4 for r in rows)


@pytest.mark.parametrize("seed", range(6))
def test_chunk_plan_respects_both_limits_and_covers_every_request_once_in_order(tmp_path, seed):
    rng = random.Random(seed)
    rows, expected = [], []
    for i in range(400):
        r = line(f"r{i}", max_tokens=5, messages=[{"role": "user", "content": "y" * rng.randint(0, 300)}])
        rows.append(json.dumps(r))
        expected.append(f"r{i}")
        for _ in range(rng.choice([0, 0, 0, 1, 3])):
            rows.append(rng.choice(["", "   ", "\t"]))
    path = write(tmp_path / "p.jsonl", rows)
    max_bytes = rng.randint(1200, 6000)
    max_requests = rng.randint(3, 40)
    rep = validate.validate_file(str(path), max_requests=max_requests, max_bytes=max_bytes)
    assert rep.valid
    data = path.read_bytes()
    seen = []
    prev_end = 0
    for i, ch in enumerate(rep.chunks, 1):
        assert ch.index == i and ch.requests <= max_requests and ch.bytes <= max_bytes
        assert ch.start_byte >= prev_end
        prev_end = ch.end_byte
        part = data[ch.start_byte : ch.end_byte]
        assert part.endswith(b"\n") and data[: ch.start_byte].count(b"\n") + 1 == ch.start_line
        ids = [json.loads(x)["custom_id"] for x in part.split(b"\n") if x.strip()]
        assert len(ids) == ch.requests and json.loads(part.split(b"\n")[0])["custom_id"] == ids[0]
        assert data[: ch.end_byte].count(b"\n") == ch.end_line
        seen += ids
    assert seen == expected
    # the gaps between chunks hold only blank lines
    covered = bytearray(len(data))
    for ch in rep.chunks:
        covered[ch.start_byte : ch.end_byte] = b"\x01" * ch.bytes
    gaps = bytes(b for b, c in zip(data, covered) if not c)
    assert not gaps.strip()


def test_chunk_endpoint_is_the_most_common_url(tmp_path):
    rows = [
        line("e1", "/v1/embeddings", "Qwen/Qwen3-Embedding-8B"),
        line("c1"),
        line("e2", "/v1/embeddings", "Qwen/Qwen3-Embedding-8B"),
    ]
    rep = validate.validate_file(str(write(tmp_path / "m.jsonl", rows)))
    assert rep.chunks[0].endpoint == "/v1/embeddings"


def test_a_line_longer_than_max_bytes_is_an_error_with_its_line(tmp_path):
    rows = [line("a"), line("b", messages=[{"role": "user", "content": "z" * 400}])]
    rep = validate.validate_file(str(write(tmp_path / "l.jsonl", rows)), max_bytes=300)
    assert not rep.valid and rep.errors[0]["line"] == 2 and rep.chunks == []


def test_every_count_is_over_the_same_lines(tmp_path):
    # a duplicate custom_id, a missing model and a broken line among 8 requests
    no_model = line("m")
    del no_model["body"]["model"]
    rows = [line(f"a-{i}") for i in range(6)] + [
        line("a-2"),
        no_model,
        "{broken",
        "",
        line("e-1", "/v1/embeddings", "Qwen/Qwen3-Embedding-8B"),
    ]
    path = write(tmp_path / "mixed.jsonl", rows)
    proc = run_script(path, "--report", tmp_path / "r.json", "-q")
    assert proc.returncode == 2
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["requests"] == 7 and doc["invalid_lines"] == doc["errors_total"] == 3 and doc["blank_lines"] == 1
    assert doc["models"] == {MODEL: 6, "Qwen/Qwen3-Embedding-8B": 1}
    assert doc["endpoints"] == {"/v1/chat/completions": 6, "/v1/embeddings": 1}
    assert doc["lines"] == doc["requests"] + doc["blank_lines"] + doc["invalid_lines"] == 11
    assert [e["line"] for e in doc["errors"]] == [7, 8, 9]
    rep = validate.validate_file(str(path))
    assert sum(t["requests"] for t in rep.model_tokens.values()) == 7


def test_the_help_lists_exactly_the_fields_printed(tmp_path):
    proc = run("validate_batch_file.py", "--help", subprocess=True)
    assert proc.returncode == 0
    from _dwbatches.core import reportspec
    from _dwbatches.workflow.reports import REPORTS

    declared = REPORTS["validate_batch_file.py"]
    assert " ".join(reportspec.help_text(declared).split()) in " ".join(proc.stdout.split())
    listed = [f.name for f in declared.shapes[0].fields]
    good = write(tmp_path / "ok.jsonl", [line("a")])
    bad = write(tmp_path / "bad.jsonl", [line("a"), "{"])
    printed = json.loads(run_script(good).stdout)
    assert run_script(bad, "--report", tmp_path / "r.json", "-q").returncode == 2
    reported = json.loads((tmp_path / "r.json").read_text())
    assert listed == list(printed) == list(reported)
