"""_dwbatches.validation.validate in pieces and processes: the report is the same however the file is cut
and whichever process checks a piece; duplicate custom_ids are found across pieces, and a
digest collision never makes a false duplicate."""

from __future__ import annotations

import json
import random
import time

import pytest
from _dwbatches.core import apifacts
from _dwbatches.validation import chunkplan, piececheck, validate, workerpool

MODEL = "Qwen/Qwen3.5-9B"
EMBED = "Qwen/Qwen3-Embedding-8B"
URLS = list(apifacts.ALLOWED_URLS)


def request(rng, cid):
    url = rng.choice(URLS) if rng.random() < 0.2 else "/v1/chat/completions"
    body = {"model": rng.choice([MODEL, EMBED, "other/model"]) if rng.random() < 0.3 else MODEL}
    if url in ("/v1/chat/completions", "/v1/messages"):
        body["messages"] = [{"role": "user", "content": "x" * rng.randint(0, 150)}]
    elif url == "/v1/completions":
        body["prompt"] = "p" * rng.randint(0, 80)
    else:
        body["input"] = "i" * rng.randint(0, 80)
    roll = rng.random()
    if roll < 0.3:
        body["max_tokens"] = rng.randint(1, 100)
    elif roll < 0.35:
        body["max_output_tokens"] = rng.randint(1, 100)
    line = {"custom_id": cid, "method": "POST", "url": url, "body": body}
    if rng.random() < 0.03:
        line["note"] = "extra"
    return json.dumps(line, ensure_ascii=rng.random() < 0.5)


BROKEN = [
    "{oops",
    "[1, 2]",
    '{"custom_id": 7}',
    '"just a string"',
    '{"a": NaN}',
    json.dumps({"custom_id": "g", "method": "GET", "url": "/v1/chat/completions", "body": {}}),
]


def make_file(path, rng, n, errors=True, crlf=False, bom=False):
    """n requests with, when errors, broken lines, invalid UTF-8 and duplicate ids (near and
    far from their first use) in between; blank lines; CRLF and a BOM on demand. Returns the
    expected duplicates: (line, custom_id, first line)."""
    rows = []
    first_line = {}
    dups = []
    for i in range(n):
        cid = f"id-{i}" if rng.random() > 0.05 else f"caf\u00e9-{i}"
        if errors and i and rng.random() < 0.06:
            cid = rng.choice(list(first_line))  # used before: a duplicate
        rows.append(request(rng, cid).encode("utf-8"))
        if cid in first_line:
            dups.append((len(rows), cid, first_line[cid]))
        else:
            first_line[cid] = len(rows)
        if errors and rng.random() < 0.04:
            rows.append(rng.choice(BROKEN).encode("utf-8") if rng.random() < 0.8 else b'{"bad": "\xff\xfe"}')
        if rng.random() < 0.05:
            rows.append(rng.choice([b"", b"  ", b"\t"]))
    sep = b"\r\n" if crlf else b"\n"
    data = sep.join(rows) + (sep if rng.random() < 0.8 else b"")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return dups


def full(rep):
    """Everything a report holds, comparable."""
    doc = rep.as_dict()
    doc.update(
        chunks=[(c.as_dict(), c.urls, c.endpoint) for c in rep.chunks],
        model_tokens=rep.model_tokens,
        max_output_tokens=rep.max_output_tokens,
        requests_without_max_tokens=rep.requests_without_max_tokens,
    )
    return doc


@pytest.fixture
def helper_share(monkeypatch):
    """Slow this process down on its first pieces, so that the helper processes have started
    and take some; count how many pieces this process checked itself."""
    counts = {"here": 0, "all": 0, "run": 0}
    real = workerpool.check_piece

    def slow(*args, **kwargs):
        counts["here"] += 1
        counts["run"] += 1
        if counts["run"] <= 15:
            time.sleep(0.01)
        return real(*args, **kwargs)

    real_run = validate.run_tasks

    def run(path, tasks, *args, **kwargs):
        counts["all"] += len(tasks)
        counts["run"] = 0
        return real_run(path, tasks, *args, **kwargs)

    monkeypatch.setattr(workerpool, "check_piece", slow)
    monkeypatch.setattr(validate, "run_tasks", run)
    return counts


@pytest.mark.slow  # eight seeds of about 1.5 s each
@pytest.mark.parametrize("seed", range(8))
def test_the_report_is_the_same_however_the_file_is_cut_and_whichever_process_checks_it(tmp_path, seed, helper_share):
    rng = random.Random(seed)
    path = tmp_path / "f.jsonl"
    # seed 0 and 1: valid files (then the chunk plans must agree); the others carry errors,
    # some more than ERRORS_KEPT
    errors = seed >= 2
    make_file(
        path, rng, rng.randint(150, 400) if seed < 6 else 900, errors=errors, crlf=seed % 3 == 1, bom=seed in (4, 5)
    )
    limits = dict(max_requests=rng.randint(1, 60), max_bytes=rng.randint(400, 6000), max_body_bytes=10**7)
    whole = validate.validate_file(str(path), **limits, processes=1, piece_bytes=1 << 30)
    assert whole.valid is not errors
    if not errors:
        assert len(whole.chunks) > 2
    doc = full(whole)
    for processes, piece_bytes in [(1, 1), (1, rng.randint(50, 3000)), (3, rng.randint(1, 400)), (2, 1)]:
        other = validate.validate_file(str(path), **limits, processes=processes, piece_bytes=piece_bytes)
        assert full(other) == doc, (processes, piece_bytes)
    # the helper processes did check some of the pieces
    assert helper_share["here"] < helper_share["all"]


def test_the_counts_agree_with_each_other(tmp_path):
    for seed in range(10):
        rng = random.Random(100 + seed)
        path = tmp_path / f"{seed}.jsonl"
        make_file(path, rng, rng.randint(20, 300), errors=seed % 2 == 0)
        rep = validate.validate_file(str(path), max_bytes=rng.choice([300, 10**8]))
        assert rep.lines == rep.requests + rep.blank_lines + rep.invalid_lines
        assert rep.requests == sum(rep.models.values()) == sum(rep.endpoints.values())
        assert rep.requests == sum(t["requests"] for t in rep.model_tokens.values())
        assert rep.errors_total == rep.invalid_lines
        assert rep.estimated_input_tokens == sum(t["input_tokens"] for t in rep.model_tokens.values())


@pytest.mark.parametrize("processes", [1, 3])
def test_duplicates_across_pieces_are_reported_on_their_lines(tmp_path, processes):
    rng = random.Random(7)
    path = tmp_path / "d.jsonl"
    expected = make_file(path, rng, 400, errors=True)
    assert len(expected) > 10
    rep = validate.validate_file(str(path), processes=processes, piece_bytes=rng.randint(100, 2000))
    dups = [(e["line"], e["custom_id"], e["message"]) for e in rep.errors if "duplicate" in e["message"]]
    kept_lines = {e["line"] for e in rep.errors}
    want = [
        (line, cid, piececheck.DUPLICATE.format(cid=cid, first=first))
        for line, cid, first in expected
        if line in kept_lines or line < rep.errors[-1]["line"]
    ]
    assert dups == want


def test_a_digest_collision_is_no_duplicate(tmp_path, monkeypatch):
    rng = random.Random(3)
    path = tmp_path / "c.jsonl"
    expected = make_file(path, rng, 300, errors=True)
    clean = tmp_path / "clean.jsonl"
    make_file(clean, random.Random(4), 300, errors=False)
    honest = [full(validate.validate_file(str(p), piece_bytes=500)) for p in (path, clean)]
    monkeypatch.setattr(piececheck, "_digest", lambda data: 7)  # every id has the same digest
    for p, want in zip((path, clean), honest):
        for piece_bytes in (1 << 30, 500, 1):
            assert full(validate.validate_file(str(p), processes=1, piece_bytes=piece_bytes)) == want
    assert honest[1]["valid"] and honest[1]["errors_total"] == 0  # no false duplicate
    dups = [e["line"] for e in honest[0]["errors"] if "duplicate" in e["message"]]
    assert dups and dups == [line for line, _, _ in expected][: len(dups)]


def test_an_id_used_many_times_points_at_its_first_line(tmp_path):
    line = request(random.Random(1), "same")
    path = tmp_path / "same.jsonl"
    path.write_text("\n".join([line] * 3000) + "\n")
    rep = validate.validate_file(str(path), processes=2, piece_bytes=20000)
    assert rep.requests == 1 and rep.invalid_lines == rep.errors_total == 2999
    assert [e["line"] for e in rep.errors] == list(range(2, 52))
    assert all("(first used on line 1)" in e["message"] for e in rep.errors)


def test_a_duplicate_that_is_also_too_long_has_one_error(tmp_path):
    short = json.dumps(
        {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": EMBED, "input": "x"}}
    )
    long = json.dumps(
        {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": EMBED, "input": "x" * 400}}
    )
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join([short, long, short]) + "\n")
    rep = validate.validate_file(str(path), max_bytes=300)
    assert [(e["line"], e["message"][:20]) for e in rep.errors] == [
        (2, "the line is 521 byte"),
        (3, "duplicate custom_id "),
    ]
    assert rep.requests == 1 and rep.invalid_lines == 2


DIES_AFTER_TWO_TASKS = """
import os, sys; sys.path.insert(0, sys.argv[1]); from _dwbatches.validation import workerpool as v
inp, out = sys.stdin.buffer, sys.stdout.buffer; path = v._read_frame(inp)
for _ in range(2):
    number, task = v._read_frame(inp); v._write_frame(out, (number, v._do(path, task)))
os._exit(1)
"""


@pytest.mark.parametrize("how", ["no such interpreter", "helper exits", "helper dies midway"])
def test_helpers_that_cannot_start_or_fail_leave_the_work_to_this_process(tmp_path, monkeypatch, how):
    rng = random.Random(11)
    path = tmp_path / "f.jsonl"
    make_file(path, rng, 300, errors=True)
    want = full(validate.validate_file(str(path), processes=1))
    if how == "no such interpreter":
        monkeypatch.setattr(workerpool.sys, "executable", str(tmp_path / "no-python"))
    elif how == "helper exits":
        monkeypatch.setattr(workerpool, "_BOOT", "import sys; sys.stdin.buffer.read(20); sys.exit(3)")
    else:
        monkeypatch.setattr(workerpool, "_BOOT", DIES_AFTER_TWO_TASKS)
    assert full(validate.validate_file(str(path), processes=3, piece_bytes=700)) == want


def test_helper_results_equal_this_process_results(tmp_path):
    rng = random.Random(5)
    path = tmp_path / "f.jsonl"
    make_file(path, rng, 200, errors=True, bom=True)
    pieces = chunkplan.cut(str(path), path.stat().st_size, 900)
    tasks = [("piece", s, e, 10**8, 10**7, 4) for s, e in pieces]
    helper = workerpool.Helper(str(path))
    try:
        queue = workerpool._Queue(len(tasks))
        helper.serve(tasks, queue, depth=2)
    finally:
        helper.stop()
    assert queue.results == [workerpool._do(str(path), t) for t in tasks]


def test_pieces_start_at_line_starts_and_cover_the_file(tmp_path):
    path = tmp_path / "p.jsonl"
    data = b"".join(b"x" * random.Random(i).randint(0, 50) + b"\n" for i in range(200)) + b"tail"
    path.write_bytes(data)
    for piece_bytes in (1, 7, 64, 1000, 1 << 20):
        pieces = chunkplan.cut(str(path), len(data), piece_bytes)
        assert pieces[0][0] == 0 and pieces[-1][1] == len(data)
        for (_, end), (start, _) in zip(pieces, pieces[1:]):
            assert end == start and data[start - 1 : start] == b"\n"
    assert chunkplan.cut(str(path), 0, 10) == []


def test_an_interrupted_validation_leaves_no_helper_behind(tmp_path, monkeypatch):
    psutil = pytest.importorskip("psutil")
    path = tmp_path / "f.jsonl"
    make_file(path, random.Random(2), 600, errors=False)
    calls = []

    def interrupt(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(chunkplan.Planner, "add", interrupt)
    with pytest.raises(KeyboardInterrupt):
        validate.validate_file(str(path), processes=3, piece_bytes=2000)

    def helpers():
        alive = []
        for p in psutil.Process().children(recursive=True):
            try:
                if "_worker_main" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:  # (ended meanwhile)
                pass
        return alive

    deadline = time.monotonic() + 10
    while helpers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert helpers() == []
