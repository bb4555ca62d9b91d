"""The compact custom_id tables: a digest match is confirmed from disk, so even digests that
all collide never merge two ids; and the merge, the retry and their counts built on them stay
exact through the real scripts against the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _dwbatches.core import idtable
from _dwbatches.core.idtable import NOT_FOUND, FileIds, IdTable
from helpers import batch_ids_of, is_error, make_job, read_jsonl, run_script, write_input


def colliding(custom_id: str) -> int:
    """Three digests for every id there is: every lookup walks a long run of look-alikes."""
    return 1 + len(custom_id) % 3


def test_table_grows_and_keeps_values_and_marks():
    t = IdTable(capacity=10)
    for i in range(5000):
        assert t.find(f"id-{i}") == NOT_FOUND
        t.insert(f"id-{i}", i)
    assert len(t) == 5000
    assert all(t.value(t.find(f"id-{i}")) == i for i in range(0, 5000, 7))
    slot = t.find("id-42")
    assert t.mark(slot) is True and t.mark(slot) is False and t.value(slot) == 42
    t.set_value(slot, 7)
    assert t.value(slot) == 7 and t.mark(slot) is False and t.marked == 1  # the flag survives a new value
    assert sorted(v & ~idtable.MARK for v in t.values()) == sorted([7] + [i for i in range(5000) if i != 42])


def test_colliding_digests_are_told_apart_by_the_line_on_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(idtable, "digest", colliding)
    path = tmp_path / "in.jsonl"
    ids = [f"r{i}" for i in range(600)]
    offsets = []
    with open(path, "wb") as fh:
        for cid in ids:
            offsets.append(fh.tell())
            fh.write(json.dumps({"custom_id": cid}).encode() + b"\n")
    seen = FileIds(str(path))
    try:
        assert all(seen.first(cid, off) for cid, off in zip(ids, offsets))
        assert not any(seen.first(cid, off) for cid, off in zip(ids, offsets))  # each once
        assert len(seen.table) == 600 and "r600" not in seen and "r599" in seen
    finally:
        seen.close()


@pytest.fixture
def collisions(monkeypatch):
    monkeypatch.setattr(idtable, "digest", colliding)


def run_in_process(script, argv, env, monkeypatch, capsys):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    module = __import__(script)
    capsys.readouterr()
    code = module.main(argv)
    out = capsys.readouterr().out
    return code, json.loads(out)


@pytest.mark.slow
def test_merge_and_retry_are_exact_when_every_digest_collides(sandbox, tmp_path, monkeypatch, capsys, collisions):
    ids = write_input("data.jsonl", 90)
    bad = ["req-4", "req-17", "req-29", "req-61"]
    sandbox.set_faults({"fail_custom_ids": bad, "fail_status": 500})
    job = make_job(sandbox, "data.jsonl", 3)
    for bid in batch_ids_of(job):
        sandbox.wait_batch(bid)
    code, doc = run_in_process(
        "fetch_results", ["--job", job, "--format", "simple"], sandbox.env(), monkeypatch, capsys
    )
    assert code == 5
    assert (doc["requests"], doc["succeeded"], doc["failed"], doc["missing"], doc["unexpected"]) == (90, 86, 4, 0, 0)
    rows = read_jsonl(doc["output"])
    assert [r["custom_id"] for r in rows] == ids
    assert [r["custom_id"] for r in rows if not r["ok"]] == bad

    sandbox.clear_faults()
    code, doc = run_in_process("retry_failed", ["--job", job], sandbox.env(), monkeypatch, capsys)
    assert code == 0 and (doc["requests"], doc["failed"], doc["missing"]) == (4, 4, 0)
    assert [
        json.loads(line)["custom_id"] for line in Path(job, "rounds", "round-2.jsonl").read_text().splitlines()
    ] == bad
    for bid in batch_ids_of(job):
        sandbox.wait_batch(bid)
    code, doc = run_in_process("fetch_results", ["--job", job, "--format", "csv"], sandbox.env(), monkeypatch, capsys)
    assert code == 0 and (doc["succeeded"], doc["failed"], doc["missing"]) == (90, 0, 0)
    # the same job merged by a process with the real digests gives the same file
    real = Path(doc["output"]).read_bytes()
    code, doc, err = run_script("fetch_results.py", "--job", job, env=sandbox.env())
    assert code == 0, err
    assert Path(doc["output"]).read_bytes() == real


def test_results_without_the_input_come_in_file_order_each_once(sandbox, tmp_path, monkeypatch, capsys, collisions):
    ids = write_input("data.jsonl", 40)
    job = make_job(sandbox, "data.jsonl", 2)
    bids = batch_ids_of(job)
    for bid in bids:
        sandbox.wait_batch(bid)
    # bare batch ids, no --input: the order is the downloaded files' own
    code, doc = run_in_process("fetch_results", [*bids, "--out", "bare.jsonl"], sandbox.env(), monkeypatch, capsys)
    assert code == 0 and (doc["requests"], doc["succeeded"], doc["unexpected"]) == (40, 40, 0)
    assert sorted(r["custom_id"] for r in read_jsonl("bare.jsonl")) == sorted(ids)


def test_building_a_file_tells_colliding_ids_apart_and_still_finds_a_real_duplicate(
    tmp_path, monkeypatch, capsys, collisions
):
    Path("prompts.txt").write_text("".join(f"question {i}\n" for i in range(300)))
    code, doc = run_in_process(
        "create_batch_file", ["--prompts", "prompts.txt", "built.jsonl"], {}, monkeypatch, capsys
    )
    assert code == 0 and doc["requests"] == 300
    ids = [r["custom_id"] for r in read_jsonl("built.jsonl")]
    assert len(set(ids)) == 300

    rows = [f"k{i},text {i}" for i in range(200)] + ["k17,again"]
    Path("rows.csv").write_text("id,text\n" + "\n".join(rows) + "\n")
    module = __import__("create_batch_file")
    code = module.main(["--csv", "rows.csv", "--template", "{{text}}", "--id-column", "id", "rows.jsonl"])
    out, err = capsys.readouterr()
    assert code == 2 and is_error(out)
    assert "line 202: duplicate custom_id 'rows-k17' (first made from line 19)" in err
    assert not Path("rows.jsonl").exists() and not list(tmp_path.glob(".rows.jsonl.*"))


def test_a_table_in_a_file_holds_what_arrays_hold(monkeypatch):
    """Past FILE_SLOTS a table keeps its slots in a temporary file: the same answers as arrays,
    growing into the file and within it included."""
    from _dwbatches.core import idtable

    monkeypatch.setattr(idtable, "FILE_SLOTS", 4096)
    ids = [f"id-{i}" for i in range(20_000)]
    table = idtable.IdTable()  # starts in arrays, grows into a file
    for n, cid in enumerate(ids):
        assert table.find(cid) == idtable.NOT_FOUND
        table.insert(cid, n, marked=n % 3 == 0)
    assert table._file is not None and len(table) == 20_000
    assert all(table.value(table.find(cid)) == n for n, cid in enumerate(ids))
    assert table.find("id-x") == idtable.NOT_FOUND
    assert sorted(v & ~idtable.MARK for v in table.values()) == list(range(20_000))
    assert table.marked == sum(1 for n in range(20_000) if n % 3 == 0)
    assert table.mark(table.find("id-1")) and not table.mark(table.find("id-1"))
    sized = idtable.IdTable(capacity=10_000)  # sized into a file at once
    for n, cid in enumerate(ids[:10_000]):
        sized.insert(cid, n)
    assert sized._file is not None and sized.value(sized.find("id-9999")) == 9999
    table.close()
    sized.close()
    assert table._file is None and len(table) == 20_000  # (the count stays readable)


def test_the_tables_of_a_process_share_one_budget_of_slots_in_arrays(monkeypatch):
    """Two tables that together would pass FILE_SLOTS: the second lives in a file; closing the
    first gives its slots back."""
    from _dwbatches.core import idtable

    monkeypatch.setattr(idtable, "FILE_SLOTS", 5000)
    monkeypatch.setattr(idtable, "_IN_ARRAYS", [0])
    first = idtable.IdTable(capacity=3000)  # 4001 slots
    second = idtable.IdTable(capacity=3000)
    assert first._file is None and second._file is not None
    first.insert("a", 1)
    second.insert("a", 2)
    assert first.value(first.find("a")) == 1 and second.value(second.find("a")) == 2
    first.close()
    third = idtable.IdTable(capacity=3000)
    assert third._file is None and len(first) == 1 and first.find("a") == idtable.NOT_FOUND
    second.close()
    third.close()
    assert idtable._IN_ARRAYS == [0]
