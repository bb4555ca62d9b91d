"""Never paying twice for one request: through the scripts against the sandbox (real sockets).

A new job's deterministic requests (temperature 0, embeddings) whose endpoint and body an
earlier job of the folder answered well take that answer and are not sent; identical requests
within one job are sent once; sampled ones are sent unless --reuse-sampled; --no-reuse sends
everything. What the sandbox received is read back from the files it was sent (every custom_id
of every upload), so "sent" is counted where it is paid for.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Dict, List

from helpers import DOC_INPUTS, ROOT, DocRunner, doc_commands, job_state, read_jsonl, run, run_script
from sandbox_helper import INSTRUCT_MODEL, list_all

RUN = ("--wait", "--interval", "0.2")
RECIPES = ROOT / "references" / "recipes.md"


class Uploads:
    """What the sandbox received: ``new()`` is the custom_id of every request in every file
    uploaded since the last call (read back from the server's copies of the files)."""

    def __init__(self, sb) -> None:
        self.sb = sb
        self.seen: set = set()

    def new(self) -> List[str]:
        ids = []
        for f in list_all(self.sb, "/v1/files"):
            if f.get("purpose") != "batch" or f["id"] in self.seen:
                continue
            self.seen.add(f["id"])
            ids += [json.loads(x)["custom_id"] for x in self.sb.content(f["id"]).text.splitlines() if x.strip()]
        return sorted(ids)


def write_reviews(path: str, first: int, count: int, mode: str = "w") -> None:
    with open(path, mode, newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        if mode == "w":
            writer.writerow(["id", "text"])
        for i in range(first, first + count):
            writer.writerow([f"r{i:03d}", f"Review number {i}: the kettle {'works' if i % 3 else 'leaks'}."])


def build(out: str, csv_path: str, *extra: str) -> dict:
    code, doc, err = run_script(
        "create_batch_file.py", out, "--csv", csv_path, "--id-column", "id", "--template", "{text}",
        "-m", INSTRUCT_MODEL, "--temperature", "0", "--max-tokens", "20", *extra,
    )  # fmt: skip
    assert code == 0, err
    return doc


def rows_of(path: str) -> List[Dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def requests_file(path: str, bodies: List[dict], ids: List[str]) -> None:
    lines = [
        {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body}
        for cid, body in zip(ids, bodies)
    ]
    Path(path).write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")


def chat(text: str, **extra) -> dict:
    return {"model": INSTRUCT_MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 20, **extra}


def test_rows_added_to_a_csv_are_the_only_requests_sent(sandbox):
    """The recipe: 40 rows run; 10 rows appended, the file built again and run again as a new
    job: exactly the 10 new requests reach the server, and the CSV has 50 rows, each with its
    own answer (40 of them reused, saying from which job)."""
    uploads = Uploads(sandbox)
    write_reviews("reviews.csv", 1, 40)
    build("reviews.jsonl", "reviews.csv")
    code, first, err = run_script("run_batch.py", "reviews.jsonl", *RUN, env=sandbox.env())
    assert code == 0, err
    assert first["succeeded"] == 40 and first["reuse"]["sent"] == 40 and first["reuse"]["reused"] == 0
    assert "40 good answer(s) added to the answer store" in err
    assert len(uploads.new()) == 40

    write_reviews("reviews.csv", 41, 10, mode="a")
    built = build("reviews.jsonl", "reviews.csv")
    assert built["requests"] == 50 and "--job reviews.2.dwjob" in built["next"]
    code, second, err = run_script("run_batch.py", "reviews.jsonl", "--job", "reviews.2.dwjob", *RUN, env=sandbox.env())
    assert code == 0, err
    assert uploads.new() == [f"reviews-r{i:03d}" for i in range(41, 51)]  # exactly the new rows
    assert second["reuse"]["sent"] == 10 and second["reuse"]["reused"] == 40 and second["reuse"]["copies"] == 0
    assert second["reuse"]["from_jobs"] == {"reviews.dwjob": 40}
    assert second["requests"] == 50 and second["succeeded"] == 50 and second["failed"] == second["missing"] == 0
    assert second["request_counts"] == {"total": 50, "completed": 50, "failed": 0}
    assert second["usage"]["requests"] == 10  # what this job paid for
    assert float(second["reuse"]["saved_usd"]) > 0
    assert "10 sent, 40 answered without being sent" in err

    rows = rows_of(second["output"])
    assert [r["id"] for r in rows] == [f"r{i:03d}" for i in range(1, 51)]
    assert all(r["answer_check"] == "good" and r["response"] for r in rows)
    assert [r["reused_from"] for r in rows] == ["reviews.dwjob"] * 40 + [""] * 10
    answers_before = {r["id"]: r["response"] for r in rows_of(first["output"])}
    assert all(r["response"] == answers_before[r["id"]] for r in rows[:40])  # each on its own row
    assert len({r["response"] for r in rows}) == 50  # every answer is its own review's
    code, polled, err = run_script("poll.py", "--job", "reviews.2.dwjob", env=sandbox.env())
    assert code == 0 and polled["status"] == "completed", err


def test_identical_requests_in_one_job_are_sent_once(sandbox):
    """20 requests with 5 distinct bodies (temperature 0): 5 sent, 20 answered, each copy with
    the answer of the request it repeats and saying so."""
    uploads = Uploads(sandbox)
    texts = [f"Question {i % 5}: name a colour" for i in range(20)]
    ids = [f"q-{i:02d}" for i in range(20)]
    requests_file("qs.jsonl", [chat(t, temperature=0) for t in texts], ids)
    code, doc, err = run_script("run_batch.py", "qs.jsonl", *RUN, "--format", "simple", env=sandbox.env())
    assert code == 0, err
    assert uploads.new() == ids[:5]
    assert doc["reuse"]["sent"] == 5 and doc["reuse"]["copies"] == 15 and doc["reuse"]["reused"] == 0
    assert doc["requests"] == 20 and doc["succeeded"] == 20
    lines = read_jsonl(doc["output"])
    assert [x["custom_id"] for x in lines] == ids
    by_id = {x["custom_id"]: x for x in lines}
    for i, cid in enumerate(ids):
        assert by_id[cid]["ok"] and by_id[cid]["content"] == by_id[ids[i % 5]]["content"]
        if i >= 5:
            assert by_id[cid]["reused"]["custom_id"] == ids[i % 5] and by_id[cid]["reused"]["job"] == "qs.dwjob"
        else:
            assert "reused" not in by_id[cid]
    assert doc["usage"]["requests"] == 5


def test_a_failed_request_is_retried_once_and_its_copies_follow(sandbox):
    """The request that a copy repeats fails: the retry sends it alone, and the copies take
    its new answer. A second job's retry, its input gone, reads the requests it sent from its
    own round-1 input and results come in the order they arrived."""
    uploads = Uploads(sandbox)
    ids = [f"q-{i}" for i in range(6)]
    requests_file("qs.jsonl", [chat(f"Question {i % 2}", temperature=0) for i in range(6)], ids)
    sandbox.set_faults({"fail_custom_ids": ["q-1"], "fail_status": 500})
    code, doc, err = run_script("run_batch.py", "qs.jsonl", *RUN, "--format", "simple", env=sandbox.env())
    assert code == 5, err
    assert doc["failed"] == 3 and doc["succeeded"] == 3  # q-1 and its copies q-3, q-5
    sandbox.clear_faults()
    code, retried, err = run_script("retry_failed.py", "--job", "qs.dwjob", env=sandbox.env())
    assert code == 0, err
    assert retried["requests"] == 1 and [json.loads(x)["custom_id"] for x in open(retried["input"])] == ["q-1"]
    code, doc, err = run_script("run_batch.py", "qs.jsonl", *RUN, "--format", "simple", env=sandbox.env())
    assert code == 0, err
    assert doc["succeeded"] == 6
    lines = {x["custom_id"]: x for x in read_jsonl(doc["output"])}
    assert lines["q-3"]["content"] == lines["q-5"]["content"] == lines["q-1"]["content"]
    assert uploads.new() == ["q-0", "q-1", "q-1"]

    requests_file(
        "more.jsonl", [chat(f"Question {i % 3}", temperature=0) for i in range(6)], [f"m{i}" for i in range(6)]
    )
    sandbox.set_faults({"fail_custom_ids": ["m2"], "fail_status": 500})
    code, doc, err = run_script("run_batch.py", "more.jsonl", *RUN, env=sandbox.env())
    assert code == 5 and doc["reuse"]["reused"] == 4 and doc["reuse"]["copies"] == 1, err  # m2 sent, m5 its copy
    sandbox.clear_faults()
    Path("more.jsonl").unlink()
    code, retried, err = run_script("retry_failed.py", "--job", "more.dwjob", env=sandbox.env())
    assert code == 0 and retried["requests"] == 1, err
    code, doc, err = run_script("poll.py", "--job", "more.dwjob", *RUN, env=sandbox.env())
    code, doc, err = run_script("fetch_results.py", "--job", "more.dwjob", "--format", "simple", env=sandbox.env())
    assert code == 0 and doc["succeeded"] == 6 and "order they arrived" in err, err
    assert sorted(x["custom_id"] for x in read_jsonl(doc["output"])) == [f"m{i}" for i in range(6)]
    assert uploads.new() == ["m2", "m2"]


def test_empty_and_cut_answers_are_never_reused(sandbox):
    """An answer that was empty, cut at max_tokens or not the JSON asked for is not in the store:
    the next job sends those requests again and reuses only the good ones."""
    uploads = Uploads(sandbox)
    bodies = [chat(f"Tell me about item {i}", temperature=0) for i in range(5)]
    bodies.append(chat("Tell me a long story about item 5", temperature=0, max_tokens=2))  # cut
    ids = [f"a-{i}" for i in range(6)]
    requests_file("one.jsonl", bodies, ids)
    sandbox.set_faults({"bad_answers": {"a-1": "empty"}})
    code, doc, err = run_script("run_batch.py", "one.jsonl", *RUN, env=sandbox.env())
    assert code == 5, err
    assert doc["answers"]["empty"] == 1 and doc["answers"]["truncated"] == 1
    sandbox.clear_faults()
    assert len(uploads.new()) == 6
    requests_file("two.jsonl", bodies, [f"b-{i}" for i in range(6)])
    code, doc, err = run_script("run_batch.py", "two.jsonl", *RUN, env=sandbox.env())
    assert code == 5, err  # the cut one is cut again: it is sent, not reused
    assert uploads.new() == ["b-1", "b-5"]
    assert doc["reuse"]["reused"] == 4 and doc["reuse"]["sent"] == 2
    assert doc["answers"]["good"] == 5 and doc["answers"]["truncated"] == 1


def test_no_reuse_sends_everything_and_sampled_requests_need_a_flag(sandbox):
    """Temperature 0 is reused by default; --no-reuse sends every request (repeats too);
    sampled requests (no temperature, or one above 0) are sent again unless --reuse-sampled."""
    uploads = Uploads(sandbox)
    det = [chat(f"Q{i}", temperature=0) for i in range(3)] + [chat("Q0", temperature=0.0)]
    sampled = [chat(f"S{i}") for i in range(2)] + [chat("S0"), chat("T", temperature=0.7)]
    requests_file("a.jsonl", det + sampled, [f"a{i}" for i in range(8)])
    code, doc, err = run_script("run_batch.py", "a.jsonl", *RUN, env=sandbox.env())
    assert code == 0, err
    assert doc["reuse"] == dict(doc["reuse"], sent=7, copies=1, reused=0)  # 0 and 0.0 are one temperature
    assert len(uploads.new()) == 7

    requests_file("b.jsonl", det + sampled, [f"b{i}" for i in range(8)])
    code, doc, err = run_script("run_batch.py", "b.jsonl", "--no-reuse", *RUN, env=sandbox.env())
    assert code == 0, err
    assert doc["reuse"] is None and doc["succeeded"] == 8
    assert len(uploads.new()) == 8  # all of them

    requests_file("c.jsonl", det + sampled, [f"c{i}" for i in range(8)])
    code, doc, err = run_script("run_batch.py", "c.jsonl", *RUN, env=sandbox.env())
    assert code == 0, err
    assert uploads.new() == ["c4", "c5", "c6", "c7"]  # the sampled ones
    assert doc["reuse"]["reused"] == 4

    requests_file("d.jsonl", det + sampled, [f"d{i}" for i in range(8)])
    code, doc, err = run_script("run_batch.py", "d.jsonl", "--reuse-sampled", *RUN, env=sandbox.env())
    assert code == 0, err
    assert uploads.new() == []  # nothing sent
    assert doc["reuse"]["sent"] == 0 and doc["reuse"]["reused"] == 8 and doc["succeeded"] == 8
    assert doc["batches"] == [] and doc["status"] == "completed"


def test_the_dry_run_shows_what_would_be_sent_reused_and_saved(sandbox):
    uploads = Uploads(sandbox)
    requests_file("a.jsonl", [chat(f"Q{i}", temperature=0) for i in range(6)], [f"a{i}" for i in range(6)])
    assert run_script("run_batch.py", "a.jsonl", *RUN, env=sandbox.env())[0] == 0
    assert len(uploads.new()) == 6
    requests_file("b.jsonl", [chat(f"Q{i}", temperature=0) for i in range(9)], [f"b{i}" for i in range(9)])
    code, dry, err = run_script("submit.py", "b.jsonl", "--dry-run", env=sandbox.env())
    assert code == 0, err
    assert dry["requests"] == 9 and dry["reuse"]["sent"] == 3 and dry["reuse"]["reused"] == 6
    assert sum(c["requests"] for c in dry["plan"]) == 3
    assert float(dry["reuse"]["saved_usd_low"]) > 0 and dry["reuse"]["saved_usd"] is None
    assert "6 of 9 requests not sent" in err and "sending 3" in err
    assert not Path("b.dwjob").exists() and uploads.new() == []  # nothing written, nothing sent
    code, dry, err = run_script("submit.py", "b.jsonl", "--dry-run", "--no-reuse", env=sandbox.env())
    assert code == 0 and dry["reuse"] is None and sum(c["requests"] for c in dry["plan"]) == 9


def test_the_store_deleted_is_rebuilt_and_nothing_is_lost(sandbox):
    """The store is a cache of the job directories: deleted, it is made again from them (also
    once the first job's input has changed), and the next job still sends only what is new."""
    uploads = Uploads(sandbox)
    requests_file("a.jsonl", [chat(f"Q{i}", temperature=0) for i in range(8)], [f"a{i}" for i in range(8)])
    assert run_script("run_batch.py", "a.jsonl", *RUN, env=sandbox.env())[0] == 0
    assert len(uploads.new()) == 8
    code, shown, err = run_script("list_batches.py", "--answers")
    assert code == 0, err
    assert shown["answers"]["answers"] == 8 and shown["answers"]["jobs"][0]["job"] == "a.dwjob"
    shutil.rmtree(".dwb-answers")
    requests_file("a.jsonl", [chat("something else", temperature=0)], ["z"])  # the first job's input changed
    requests_file("b.jsonl", [chat(f"Q{i}", temperature=0) for i in range(10)], [f"b{i}" for i in range(10)])
    code, doc, err = run_script("run_batch.py", "b.jsonl", *RUN, env=sandbox.env())
    assert code == 0, err
    assert doc["reuse"]["reused"] == 8 and uploads.new() == ["b8", "b9"]
    code, shown, err = run_script("list_batches.py", "--answers")
    assert shown["answers"]["answers"] == 10
    assert {j["job"]: j["answers"] for j in shown["answers"]["jobs"]} == {"a.dwjob": 8, "b.dwjob": 2}


def test_the_store_is_shown_bounded_cleared_and_never_holds_a_path_or_the_key(sandbox, tmp_path):
    requests_file("a.jsonl", [chat(f"Q{i}", temperature=0) for i in range(10)], [f"a{i}" for i in range(10)])
    assert run_script("run_batch.py", "a.jsonl", *RUN, env=sandbox.env())[0] == 0
    db = Path(".dwb-answers", "answers.sqlite3")
    data = db.read_bytes() + (Path(str(db) + "-wal").read_bytes() if Path(str(db) + "-wal").exists() else b"")
    assert sandbox.api_key.encode() not in data and str(tmp_path).encode() not in data
    code, shown, err = run_script("list_batches.py", "--answers")
    assert code == 0, err
    info = shown["answers"]
    assert info["answers"] == 10 and info["bytes"] > 0 and info["limit_bytes"] == 1_000_000_000
    per_answer = info["bytes"] // 10
    code, shown, err = run_script("list_batches.py", "--answers", "--answers-limit", str(per_answer * 5 / 1e6))
    assert code == 0, err
    assert shown["answers"]["answers"] <= 5 and shown["answers"]["dropped"] >= 5
    assert shown["answers"]["bytes"] <= per_answer * 5
    code, cleared, err = run_script("list_batches.py", "--clear-answers")
    assert code == 0, err
    assert cleared["answers"]["answers"] == 0 and cleared["answers"]["cleared"] >= 1
    requests_file("b.jsonl", [chat(f"Q{i}", temperature=0) for i in range(10)], [f"b{i}" for i in range(10)])
    code, doc, err = run_script("run_batch.py", "b.jsonl", *RUN, env=sandbox.env())
    assert code == 0 and doc["reuse"]["reused"] == 0 and doc["reuse"]["sent"] == 10  # cleared stays cleared


def test_a_moved_project_keeps_its_answers(sandbox, tmp_path):
    Path("proj").mkdir()
    requests_file("proj/a.jsonl", [chat(f"Q{i}", temperature=0) for i in range(4)], [f"a{i}" for i in range(4)])
    assert run_script("run_batch.py", "proj/a.jsonl", *RUN, env=sandbox.env())[0] == 0
    shutil.move("proj", "moved")
    requests_file("moved/b.jsonl", [chat(f"Q{i}", temperature=0) for i in range(5)], [f"b{i}" for i in range(5)])
    code, doc, err = run_script("run_batch.py", "moved/b.jsonl", *RUN, "--format", "simple", env=sandbox.env())
    assert code == 0, err
    assert doc["reuse"]["reused"] == 4 and doc["reuse"]["from_jobs"] == {"a.dwjob": 4}
    assert [x["custom_id"] for x in read_jsonl(doc["output"])] == [f"b{i}" for i in range(5)]
    assert job_state("moved/b.dwjob")["reuse"]["reused"] == 4


def test_two_jobs_fetched_at_once_both_land_in_the_store(sandbox):
    """Two run_batch.py processes finishing together write one store (WAL, busy timeout)."""
    for name in ("a", "b"):
        requests_file(
            f"{name}.jsonl", [chat(f"{name}{i}", temperature=0) for i in range(30)], [f"{name}{i}" for i in range(30)]
        )
    procs: Dict[str, object] = {}

    def go(name: str) -> None:
        procs[name] = run("run_batch.py", f"{name}.jsonl", *RUN, env=sandbox.env(), subprocess=True)

    threads = [threading.Thread(target=go, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(p.returncode == 0 for p in procs.values()), [p.stderr for p in procs.values()]  # type: ignore[attr-defined]
    with sqlite3.connect(".dwb-answers/answers.sqlite3") as db:
        assert db.execute("SELECT job, COUNT(*) FROM answers GROUP BY job ORDER BY job").fetchall() == [
            ("a.dwjob", 30),
            ("b.dwjob", 30),
        ]
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_the_recipe_for_rows_added_to_a_csv_runs_as_written(tmp_path, sandbox):
    """references/recipes.md, "Rows added to a CSV": after recipe 1's CSV has run, rows are
    appended and the recipe's two commands run as written: only the new rows are sent."""
    text = RECIPES.read_text(encoding="utf-8")
    section = text[text.index("## Rows added to a CSV") :].split("\n## ", 1)[0]
    build, again = doc_commands(RECIPES, section)
    runner = DocRunner.create(tmp_path, sandbox, DOC_INPUTS)
    try:
        uploads = Uploads(sandbox)
        first = runner.run(build)
        proc = run("run_batch.py", "reviews.jsonl", *RUN, env=runner.env, cwd=runner.work)
        assert proc.returncode == 0, proc.stderr
        assert len(uploads.new()) == first["requests"] == 8
        with open(runner.work / "examples" / "reviews.csv", "a", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([["r101", "kettle", "Too loud."], ["r102", "toaster", "Burns the bread."]])
        built = runner.run(build)
        assert built["requests"] == 10 and "--job reviews.2.dwjob" in built["next"]
        doc = runner.run(again)
        assert uploads.new() == ["reviews-r101", "reviews-r102"]
        assert doc["reuse"]["sent"] == 2 and doc["reuse"]["reused"] == 8 and doc["succeeded"] == 10
        promised = re.search(r"^Results: `([^`]+)`", section, re.M)
        assert promised and Path(doc["output"]).name == promised.group(1)
        rows = rows_of(doc["output"])
        assert [r["id"] for r in rows][-2:] == ["r101", "r102"] and len(rows) == 10
        assert [bool(r["reused_from"]) for r in rows] == [True] * 8 + [False] * 2
    finally:
        runner.close()


def test_a_job_that_reused_answers_resumes_from_its_own_round_input(sandbox):
    """Round 1 of a job that reused answers sends its own file; a resume with the input moved
    keeps sending that file (never the whole input), and sends nothing twice."""
    uploads = Uploads(sandbox)
    requests_file("a.jsonl", [chat(f"Q{i}", temperature=0) for i in range(4)], [f"a{i}" for i in range(4)])
    assert run_script("run_batch.py", "a.jsonl", *RUN, env=sandbox.env())[0] == 0
    requests_file("b.jsonl", [chat(f"Q{i}", temperature=0) for i in range(6)], [f"b{i}" for i in range(6)])
    code, doc, err = run_script("submit.py", "b.jsonl", "--max-cost", "0", env=sandbox.env())
    assert code == 2 and "b.dwjob" in err, err  # uploaded, held over the cost limit
    Path("b.jsonl").rename("moved.jsonl")
    code, doc, err = run_script("run_batch.py", "moved.jsonl", "--job", "b.dwjob", *RUN, env=sandbox.env())
    assert code == 0, err
    assert "the input moved" in err and job_state("b.dwjob")["rounds"][0]["input_path"] == "rounds/round-1.jsonl"
    assert doc["succeeded"] == 6 and doc["reuse"]["reused"] == 4
    assert uploads.new()[-2:] == ["b4", "b5"] and len(uploads.new()) == 0


def test_a_job_that_reused_answers_fetches_again_without_merging(sandbox):
    """A job with reused answers and copies: a fetch with nothing new merges nothing and gives
    the merge's report again; the reused answers or the copies' list touched, it merges again."""
    texts = [f"Q{i}" for i in range(6)]
    requests_file("a.jsonl", [chat(t, temperature=0) for t in texts], [f"a{i}" for i in range(6)])
    assert run_script("run_batch.py", "a.jsonl", *RUN, env=sandbox.env())[0] == 0
    texts += ["Q6", "Q7", "Q6", "Q7"]  # 6 answered by the first job, 2 new, 2 copies of the new
    requests_file("b.jsonl", [chat(t, temperature=0) for t in texts], [f"b{i}" for i in range(10)])
    code, ran, err = run_script("run_batch.py", "b.jsonl", *RUN, "--format", "simple", env=sandbox.env())
    assert code == 0 and (ran["reuse"]["reused"], ran["reuse"]["copies"], ran["reuse"]["sent"]) == (6, 2, 2), err
    out, state = Path(ran["output"]), Path("b.dwjob", "job.json")
    written = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (out, state)]

    code, noop, err = run_script("fetch_results.py", "--job", "b.dwjob", env=sandbox.env())
    assert code == 0 and "nothing new since the last merge" in err and "merging the results again" not in err, err
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (out, state)] == written  # nothing written
    assert noop["reuse"] == ran["reuse"] and noop["succeeded"] == 10 and noop["usage"] == ran["usage"]

    for name, why in (("reused.jsonl", "changed: the answers reused"), ("copies.jsonl", "changed: the requests")):
        os.utime(Path("b.dwjob", "reuse", name), ns=(1, 1))
        code, again, err = run_script("fetch_results.py", "--job", "b.dwjob", env=sandbox.env())
        assert code == 0 and "merging the results again" in err and why in err, err
        assert json.dumps(again) == json.dumps(noop)  # the recorded report is the merge's, key for key
        assert [x["custom_id"] for x in read_jsonl(again["output"])] == [f"b{i}" for i in range(10)]


def test_a_job_larger_than_the_store_fills_it_once_and_leaves_the_rest_out(sandbox):
    """Once the store must drop answers to take a job's in, the job's further batches are
    recorded as read without their answers (said once), instead of each pushing out the last."""
    requests_file("c.jsonl", [chat(f"C{i}", temperature=0) for i in range(2)], ["c0", "c1"])
    assert run_script("run_batch.py", "c.jsonl", *RUN, env=sandbox.env())[0] == 0
    code, shown, err = run_script("list_batches.py", "--answers")
    per_answer = shown["answers"]["bytes"] // 2
    code, shown, err = run_script("list_batches.py", "--answers", "--answers-limit", str(per_answer * 6.5 / 1e6))
    assert code == 0 and shown["answers"]["answers"] == 2, err

    requests_file("a.jsonl", [chat(f"Q{i}", temperature=0) for i in range(12)], [f"a{i}" for i in range(12)])
    code, doc, err = run_script("run_batch.py", "a.jsonl", "--max-requests", "4", *RUN, env=sandbox.env())
    assert code == 0 and doc["succeeded"] == 12, err
    assert "the answer store reached its size limit: the answers of 1 more batch(es) of a.dwjob" in err, err
    code, shown, err = run_script("list_batches.py", "--answers")
    info = shown["answers"]
    assert info["batches_read"] == 4  # every batch is read in, so none is read again
    assert info["bytes"] <= per_answer * 6.5
    with sqlite3.connect(str(Path(".dwb-answers", "answers.sqlite3"))) as db:
        kept = sorted(r[0] for r in db.execute("SELECT custom_id FROM answers WHERE job = 'a.dwjob'"))
    assert kept and all(int(cid[1:]) < 8 for cid in kept), kept  # the third batch's answers never went in
    code, again, err = run_script("fetch_results.py", "--job", "a.dwjob", env=sandbox.env())
    assert code == 0 and "reached its size limit" not in err, err
    assert run_script("list_batches.py", "--answers")[1]["answers"] == info
