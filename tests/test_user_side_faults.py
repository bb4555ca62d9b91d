"""What users do to their own files between a submit and a fetch: the promise still holds.

Every result exactly once, on its own row; nothing that succeeded is submitted (and paid for)
again; nothing is written at a place the project no longer lives. Each test reproduces one
ordinary action through the real scripts against the sandbox:

- the job's download folder (or a bare fetch's ``.dwraw`` folder) is deleted;
- the source CSV is re-sorted, or a row is inserted, after the submit;
- the project folder is moved (``mv projA projB``);
- the input is edited after the submit, keeping its size;
- one chunk's output file is gone from the server;
- the job is cancelled while (or before) a submit creates its batches;
- a job directory written by the previous release (job.json format 1) is used as it is.

(An unterminated CSV quote: tests/test_create_batch_file.py; a report written over its input
and file-system errors: tests/test_filesystem_errors.py.)
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest
from helpers import ROOT, batch_ids_of, is_error, job_state, make_job, read_jsonl, run_script, wait_until, write_input
from sandbox_helper import Sandbox, list_all

V1_JOB = ROOT / "tests" / "data" / "v1-job"


def server_batches(sb, job_dir):
    job_id = job_state(job_dir)["job_id"]
    return [b for b in list_all(sb, "batches") if (b.get("metadata") or {}).get("dwb_job") == job_id]


def wait_job(sb, job_dir):
    for bid in batch_ids_of(job_dir):
        sb.wait_batch(bid)


# -- the download folder is deleted ------------------------------------------------------------


def test_a_deleted_download_folder_is_downloaded_again_and_nothing_is_resubmitted(sandbox, tmp_path):
    ids = write_input("p.jsonl", 3)
    code, doc, err = run_script(
        "run_batch.py", "p.jsonl", "--wait", "--format", "simple", "--interval", "0.2", env=sandbox.env()
    )
    assert code == 0 and doc["succeeded"] == 3, err
    shutil.rmtree("p.dwjob/results")

    code, doc, err = run_script("fetch_results.py", "--job", "p.dwjob", env=sandbox.env())
    assert code == 0, err
    assert (doc["succeeded"], doc["failed"], doc["missing"]) == (3, 0, 0)
    assert err.count("is missing; downloading it again from the start") == 1, err  # said once
    assert [r["custom_id"] for r in read_jsonl(doc["output"])] == ids and doc["next"] is None

    code, doc, err = run_script("retry_failed.py", "--job", "p.dwjob", env=sandbox.env())
    assert code == 0 and doc["requests"] == 0 and "nothing to retry" in err
    assert len(server_batches(sandbox, "p.dwjob")) == 1  # nothing was submitted twice


def test_a_short_download_file_is_downloaded_again(sandbox, tmp_path):
    ids = write_input("p.jsonl", 5)
    job = make_job(sandbox, "p.jsonl")
    wait_job(sandbox, job)
    assert run_script("fetch_results.py", "--job", job, env=sandbox.env())[0] == 0
    raw = Path(job, "results", f"{batch_ids_of(job)[0]}.output.jsonl")
    raw.write_bytes(raw.read_bytes()[:40])  # cut short, e.g. by a sync tool
    code, doc, err = run_script("fetch_results.py", "--job", job, "--format", "simple", env=sandbox.env())
    assert code == 0, err
    assert "is shorter than recorded" in err
    assert [r["custom_id"] for r in read_jsonl(doc["output"]) if r["ok"]] == ids


def test_bare_batch_ids_after_deleting_the_raw_folder(sandbox, tmp_path):
    ids = write_input("p.jsonl", 4)
    bid = batch_ids_of(make_job(sandbox, "p.jsonl"))[0]
    sandbox.wait_batch(bid)
    args = ("fetch_results.py", bid, "-o", "out.jsonl", "--input", "p.jsonl", "--format", "simple")
    assert run_script(*args, env=sandbox.env())[0] == 0
    shutil.rmtree("out.jsonl.dwraw")
    code, doc, err = run_script(*args, env=sandbox.env())
    assert code == 0 and (doc["succeeded"], doc["missing"]) == (4, 0), err
    assert [r["custom_id"] for r in read_jsonl("out.jsonl")] == ids


# -- the source CSV is re-sorted ---------------------------------------------------------------


def write_csv(path, rows, header=("id", "text")):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def read_csv(path):
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


ROWS = [("7", "apples"), ("3", "bananas"), ("5", "cherries"), ("1", "dates")]


def build_csv_job(sandbox, *id_flags):
    write_csv("rows.csv", ROWS)
    code, doc, err = run_script(
        "create_batch_file.py", "rows.jsonl", "--csv", "rows.csv", *id_flags, "--template", "Name the fruit {text}"
    )
    assert code == 0, err
    code, doc, err = run_script("run_batch.py", "rows.jsonl", "--wait", "--interval", "0.2", env=sandbox.env())
    assert code == 0 and doc["format"] == "csv", err
    return doc


def test_a_resorted_csv_with_an_id_column_keeps_every_answer_on_its_row(sandbox, tmp_path):
    build_csv_job(sandbox, "--id-column", "id")
    # the user sorts the sheet and inserts a row at the top
    write_csv("rows.csv", [("9", "elderberries")] + sorted(ROWS, key=lambda r: r[1], reverse=True))
    code, doc, err = run_script("fetch_results.py", "--job", "rows.dwjob", "-o", "after.csv", env=sandbox.env())
    assert code == 0, err
    assert any("changed since the batch was built" in w for w in doc["warnings"])
    rows = read_csv("after.csv")
    assert [r["text"] for r in rows] == ["elderberries", "dates", "cherries", "bananas", "apples"]
    assert rows[0]["response"] == "" and rows[0]["error"] == "no request was made for this row"
    for r in rows[1:]:
        assert r["text"] in r["response"] and r["error"] == "", r  # each answer beside its own text


def test_a_deleted_csv_row_keeps_its_answer_and_a_repeated_id_gets_no_copy(sandbox, tmp_path):
    build_csv_job(sandbox, "--id-column", "id")
    # the user deletes the bananas row and pastes a row repeating the apples id
    write_csv("rows.csv", [("7", "apples"), ("5", "cherries"), ("1", "dates"), ("7", "apples again")])
    code, doc, err = run_script("fetch_results.py", "--job", "rows.dwjob", "-o", "after.csv", env=sandbox.env())
    assert code == 0, err
    assert (doc["requests"], doc["succeeded"], doc["unexpected"]) == (4, 4, 0)  # the paid answer is counted
    assert doc["cost"]["rounds"][0]["requests"] == 4
    rows = read_csv("after.csv")
    assert [(r["id"], r["text"]) for r in rows] == [
        ("7", "apples"),
        ("5", "cherries"),
        ("1", "dates"),
        ("7", "apples again"),
        ("3", ""),
    ]
    assert "bananas" in rows[4]["response"] and rows[4]["error"] == ""  # appended, with its id
    assert rows[3]["response"] == "" and "same id" in rows[3]["error"]  # not the apples answer
    assert any("no row in the CSV any more" in w and "rows-3" in w for w in doc["warnings"])
    assert any("repeat the id of an earlier row" in w for w in doc["warnings"])
    assert "warning: 1 request(s) have no row in the CSV any more" in err


def test_a_csv_saved_again_with_semicolons_or_without_its_id_column(sandbox, tmp_path):
    build_csv_job(sandbox, "--id-column", "id")
    with open("rows.csv", "w", newline="", encoding="utf-8") as fh:  # Excel in a European locale
        csv.writer(fh, delimiter=";").writerows([("id", "text"), *reversed(ROWS)])
    code, doc, err = run_script("fetch_results.py", "--job", "rows.dwjob", "-o", "semi.csv", env=sandbox.env())
    assert code == 0 and (doc["succeeded"], doc["unexpected"]) == (4, 0), err
    with open("semi.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    assert [r["id"] for r in rows] == ["1", "5", "3", "7"] and all(r["text"] in r["response"] for r in rows)

    write_csv("rows.csv", ROWS, header=("key", "text"))  # the id column renamed
    code, doc, err = run_script("fetch_results.py", "--job", "rows.dwjob", "-o", "renamed.csv", env=sandbox.env())
    assert code == 2 and is_error(doc)
    assert "rows.csv has no 'id' column any more" in err and "--format simple" in err
    assert not Path("renamed.csv").exists()


def test_a_resorted_csv_with_positional_ids_is_refused_and_simple_still_works(sandbox, tmp_path):
    build_csv_job(sandbox)
    before = os.stat("rows.csv")
    write_csv("rows.csv", list(reversed(ROWS)))
    # the same size and, as after `cp -p` or `rsync -t`, the same modification time
    os.utime("rows.csv", ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat("rows.csv").st_size == before.st_size
    code, doc, err = run_script("fetch_results.py", "--job", "rows.dwjob", "-o", "after.csv", env=sandbox.env())
    assert code == 2 and is_error(doc)
    assert "rows.csv changed since the batch was built from it" in err and "--format simple" in err
    assert not Path("after.csv").exists()
    code, doc, err = run_script("fetch_results.py", "--job", "rows.dwjob", "--format", "simple", env=sandbox.env())
    assert code == 0 and doc["succeeded"] == 4, err
    texts = [r["content"] for r in read_jsonl(doc["output"])]
    assert all(fruit in t for (_, fruit), t in zip(ROWS, texts))  # keyed by custom_id, in the built order


# -- the project folder is moved ---------------------------------------------------------------


def test_a_moved_project_keeps_working_in_its_new_place(sandbox, tmp_path):
    proj_a, proj_b = tmp_path / "projA", tmp_path / "projB"
    proj_a.mkdir()
    os.chdir(proj_a)
    ids = write_input("p.jsonl", 4)
    sandbox.set_faults({"fail_custom_ids": ["req-2"], "fail_status": 500})
    code, doc, err = run_script(
        "run_batch.py", "p.jsonl", "--wait", "--format", "simple", "--interval", "0.2", env=sandbox.env()
    )
    assert code == 5 and doc["failed"] == 1, err
    stored = job_state("p.dwjob")
    assert stored["version"] == 2 and stored["input"]["path"] == "../p.jsonl"  # relative: portable
    assert stored["results"]["output"] == "../p.results.jsonl"

    os.chdir(tmp_path)
    proj_a.rename(proj_b)
    os.chdir(proj_b)
    sandbox.clear_faults()
    code, doc, err = run_script("retry_failed.py", "--job", "p.dwjob", env=sandbox.env())
    assert code == 0 and doc["requests"] == 1, err  # the input was found in its new place
    wait_job(sandbox, "p.dwjob")
    code, doc, err = run_script("fetch_results.py", "--job", "p.dwjob", env=sandbox.env())
    assert code == 0, err
    assert doc["output"] == str(proj_b / "p.results.jsonl")
    assert [r["custom_id"] for r in read_jsonl(doc["output"])] == ids
    assert not proj_a.exists()  # nothing written at the old place


def test_a_project_with_its_job_in_a_subfolder_moves_and_copies_whole(sandbox, tmp_path):
    proj_c = tmp_path / "projC"
    for sub in ("data", "out"):
        (proj_c / sub).mkdir(parents=True)
    os.chdir(proj_c)
    write_csv("data/p.csv", ROWS)
    code, _, err = run_script(
        "create_batch_file.py",
        "data/p.jsonl",
        "--csv",
        "data/p.csv",
        "--id-column",
        "id",
        "--template",
        "Name the fruit {text}",
    )
    assert code == 0, err
    code, doc, err = run_script(
        "run_batch.py",
        "data/p.jsonl",
        "--job",
        "jobs/p.dwjob",
        "--wait",
        "-o",
        "out/answers.csv",
        "--interval",
        "0.2",
        env=sandbox.env(),
    )
    assert code == 0, err
    stored = job_state("jobs/p.dwjob")
    assert stored["input"]["path"] == "../../data/p.jsonl" and stored["source"]["path"] == "../../data/p.csv"
    assert stored["results"]["output"] == "../../out/answers.csv"

    os.chdir(tmp_path)
    shutil.copytree(proj_c, tmp_path / "copy")  # a copy of the whole project works on its own files
    proj_c.rename(tmp_path / "projD")
    for place in ("projD", "copy"):
        os.chdir(tmp_path / place)
        Path("out/answers.csv").unlink()
        code, doc, err = run_script("fetch_results.py", "--job", "jobs/p.dwjob", env=sandbox.env())
        assert code == 0 and doc["succeeded"] == 4, err
        assert doc["output"] == str(tmp_path / place / "out" / "answers.csv")
        assert [r["id"] for r in read_csv("out/answers.csv")] == [i for i, _ in ROWS]
    assert not proj_c.exists()  # nothing written at the old place


def test_a_remembered_output_folder_that_is_gone_is_not_recreated(sandbox, tmp_path):
    write_input("p.jsonl", 2)
    Path("out").mkdir()
    code, _, err = run_script(
        "run_batch.py", "p.jsonl", "--wait", "-o", "out/answers.jsonl", "--interval", "0.2", env=sandbox.env()
    )
    assert code == 0, err
    shutil.rmtree("out")
    code, doc, err = run_script("fetch_results.py", "--job", "p.dwjob", env=sandbox.env())
    assert code == 2 and is_error(doc) and "folder that no longer exists" in err and "-o PATH" in err
    assert not Path("out").exists()
    code, doc, err = run_script("fetch_results.py", "--job", "p.dwjob", "-o", "here.jsonl", env=sandbox.env())
    assert code == 0 and doc["succeeded"] == 2, err


# -- the input is edited after the submit ------------------------------------------------------


def test_an_input_edited_after_submission_keeps_every_result_by_its_submitted_id(sandbox, tmp_path):
    ids = write_input("p.jsonl", 3)
    job = make_job(sandbox, "p.jsonl", 1)
    wait_job(sandbox, job)
    data = Path("p.jsonl").read_bytes()
    edited = data.replace(b'"req-1"', b'"req-X"')
    assert len(edited) == len(data)
    before = os.stat("p.jsonl")
    Path("p.jsonl").write_bytes(edited)
    os.utime("p.jsonl", ns=(before.st_atime_ns, before.st_mtime_ns))  # the time kept, as `cp -p` does
    code, doc, err = run_script("fetch_results.py", "--job", job, "--format", "simple", env=sandbox.env())
    assert code == 0, err
    assert (doc["succeeded"], doc["failed"], doc["missing"], doc["unexpected"]) == (3, 0, 0, 0)
    assert [r["custom_id"] for r in read_jsonl(doc["output"])] == ids  # as submitted
    assert any("changed since it was submitted" in w for w in doc["warnings"])
    assert "the server's copy" in err


# -- one chunk's output file is gone from the server -------------------------------------------


def test_one_chunk_whose_output_file_is_gone_does_not_block_the_others(sandbox, tmp_path):
    ids = write_input("p.jsonl", 9)
    job = make_job(sandbox, "p.jsonl", 3)
    wait_job(sandbox, job)
    first = sandbox.batch(batch_ids_of(job)[0])
    assert sandbox.delete(f"files/{first['output_file_id']}").status == 200

    code, doc, err = run_script("fetch_results.py", "--job", job, "--format", "simple", env=sandbox.env())
    assert code == 5, err
    assert doc["unreachable"] == [
        {"batch_id": first["id"], "round": 1, "chunk": 1, "results_lost": 3, "reason": doc["unreachable"][0]["reason"]}
    ]
    assert doc["next"] is None and "retry_failed.py --job p.dwjob --force" in err  # a plain retry would refuse
    assert any("3 request(s) completed on the server (and were billed)" in w for w in doc["warnings"])
    assert "is gone from the server" in doc["unreachable"][0]["reason"]
    assert (doc["succeeded"], doc["missing"]) == (6, 3)
    rows = read_jsonl(doc["output"])
    assert [r["custom_id"] for r in rows] == ids
    assert [r["ok"] for r in rows] == [False] * 3 + [True] * 6
    assert f"batch {first['id']} (round 1 chunk 1, unreachable)" in err
    # retrying would run requests that had completed on the server: refused unless --force
    code, doc, err = run_script("retry_failed.py", "--job", job, env=sandbox.env())
    assert code == 2 and is_error(doc) and "3 request(s) of theirs had completed" in err
    assert "pay for them twice" in err and "retry_failed.py --job p.dwjob --force" in err
    code, doc, err = run_script("retry_failed.py", "--job", job, "--force", env=sandbox.env())
    assert code == 0 and doc["requests"] == 3, err
    wait_job(sandbox, job)
    code, doc, err = run_script("fetch_results.py", "--job", job, "--format", "simple", env=sandbox.env())
    assert code == 0 and (doc["succeeded"], doc["missing"]) == (9, 0), err
    assert doc["next"] is None and "--force" not in err  # the lost results were run again: no more hint


def test_a_chunk_whose_error_file_is_gone_is_retried_without_paying_twice(sandbox, tmp_path):
    write_input("p.jsonl", 9)
    sandbox.set_faults({"fail_custom_ids": ["req-2"], "fail_status": 500})
    job = make_job(sandbox, "p.jsonl", 3)
    wait_job(sandbox, job)
    first = sandbox.batch(batch_ids_of(job)[0])
    assert sandbox.delete(f"files/{first['error_file_id']}").status == 200  # only req-2's error is gone

    code, doc, err = run_script("fetch_results.py", "--job", job, "--format", "simple", env=sandbox.env())
    assert code == 5 and doc["unreachable"][0]["results_lost"] == 0, err  # every success is on disk
    assert (doc["succeeded"], doc["failed"], doc["missing"]) == (8, 0, 1)
    assert doc["next"].endswith("retry_failed.py --job p.dwjob")
    sandbox.clear_faults()
    code, doc, err = run_script("retry_failed.py", "--job", job, env=sandbox.env())
    assert code == 0 and (doc["requests"], doc["missing"]) == (1, 1), err  # req-2 alone, no --force needed
    wait_job(sandbox, job)
    code, doc, err = run_script("fetch_results.py", "--job", job, "--format", "simple", env=sandbox.env())
    assert code == 0 and (doc["succeeded"], doc["missing"]) == (9, 0), err  # complete: the gone file held no result


# -- the job is cancelled ----------------------------------------------------------------------


def test_a_cancelled_job_creates_no_further_batch(sandbox, tmp_path):
    write_input("p.jsonl", 6)
    code, doc, err = run_script("submit.py", "p.jsonl", "--max-requests", "2", "--max-cost", "0", env=sandbox.env())
    assert code == 2 and "no batch was created" in err  # uploaded, held over the cost cap
    code, doc, err = run_script("cancel_batch.py", "--job", "p.dwjob", env=sandbox.env())
    assert code == 0 and doc["cancelled"] == 0, err
    assert Path("p.dwjob", "cancel.json").exists()
    code, doc, err = run_script("submit.py", "p.jsonl", env=sandbox.env())
    assert code == 2 and is_error(doc) and "was cancelled" in err and "--job NEW_DIR" in err
    assert sandbox.stats()["batches"] == 0
    code, doc, err = run_script("poll.py", "--job", "p.dwjob", env=sandbox.env())
    assert doc["status"] != "not_submitted" and doc["unsubmitted"] == []


def test_a_cancel_recorded_while_a_submit_creates_batches_stops_it(sandbox, tmp_path, monkeypatch, capsys):
    """cancel_batch.py --job records the cancel without the job lock; the submit holding the lock
    reads it before each batch it creates and cancels one created as the cancel came in."""
    import submit
    from _dwbatches.core import http
    from _dwbatches.jobs.job import Job

    write_input("p.jsonl", 6)
    real_create = http.Client.create_batch
    created = []

    def create_then_cancel(self, *args, **kwargs):
        b = real_create(self, *args, **kwargs)
        created.append(b["id"])
        if len(created) == 1:  # the user cancels the job while the submit runs
            Job(str(tmp_path / "p.dwjob")).request_cancel()
        return b

    monkeypatch.setattr(http.Client, "create_batch", create_then_cancel)
    for k, v in sandbox.env().items():
        monkeypatch.setenv(k, v)
    code = submit.main(["p.jsonl", "--max-requests", "2", "--parallel", "1"])  # one create at a time
    out, err = capsys.readouterr()
    assert code == 0, err
    assert len(created) == 1 and sandbox.stats()["requests"]["POST /v1/batches"] == 1
    assert sandbox.wait_batch(created[0])["status"] == "cancelled"
    assert "created as the job was being cancelled; cancelled it" in err
    assert "the job was cancelled; no batch is created for it" in err


# -- a job written by the previous release -----------------------------------------------------


def test_a_job_written_by_the_previous_release_loads_and_finishes(tmp_path):
    """tests/data/v1-job: a 6-request job in 2 chunks submitted and fetched by the previous
    release (job.json "format": 1, absolute paths), one request failed; with the sandbox's
    database of that moment. The paths and the server's address are filled in here."""
    work = tmp_path / "v1"
    shutil.copytree(V1_JOB, work)
    data_dir = tmp_path / "sandbox-data"
    data_dir.mkdir()
    shutil.move(str(work / "sandbox.db"), data_dir / "sandbox.db")
    sb = Sandbox(data_dir, api_key="sk-test-v1fixture").start()
    try:
        state_path = work / "data.dwjob" / "job.json"
        text = state_path.read_text(encoding="utf-8").replace("{{DIR}}", str(work))
        state_path.write_text(text.replace("{{BASE_URL}}", sb.base_url), encoding="utf-8")
        os.chdir(work)
        code, doc, err = run_script("poll.py", "--job", "data.dwjob", env=sb.env())
        assert code == 5 and doc["status"] == "partially_failed", err
        code, doc, err = run_script("fetch_results.py", "--job", "data.dwjob", env=sb.env())
        assert code == 5 and (doc["succeeded"], doc["failed"]) == (5, 1) and doc["format"] == "simple", err
        code, doc, err = run_script("retry_failed.py", "--job", "data.dwjob", env=sb.env())
        assert code == 0 and doc["round"] == 2 and doc["sample"] == ["v1-3"], err
        for bid in batch_ids_of("data.dwjob"):
            sb.wait_batch(bid)
        code, doc, err = run_script("fetch_results.py", "--job", "data.dwjob", env=sb.env())
        assert code == 0 and doc["succeeded"] == 6, err
        assert [r["custom_id"] for r in read_jsonl(doc["output"])] == [f"v1-{i}" for i in range(6)]
        assert job_state("data.dwjob")["version"] == 2
    finally:
        sb.stop()


def test_nothing_to_retry_is_known_without_the_input(sandbox, tmp_path):
    write_input("p.jsonl", 3)
    job = make_job(sandbox, "p.jsonl", 1)
    wait_job(sandbox, job)
    batch = sandbox.batch(batch_ids_of(job)[0])
    Path("p.jsonl").unlink()  # the input is gone, and so is the server's copy
    assert sandbox.delete(f"files/{batch['input_file_id']}").status == 200
    code, doc, err = run_script("retry_failed.py", "--job", job, env=sandbox.env())
    assert code == 0 and doc["requests"] == 0 and "nothing to retry" in err, err


# -- the job directory is deleted and the file submitted again ----------------------------------


def test_a_file_submitted_again_under_a_new_job_is_refused_until_resubmit(sandbox, tmp_path):
    ids = write_input("p.jsonl", 3)
    job = make_job(sandbox, "p.jsonl", 1)
    wait_job(sandbox, job)
    first = batch_ids_of(job)[0]
    assert sandbox.batch(first)["metadata"]["dwb_input"] == job_state(job)["input"]["sha256"][:16]
    shutil.rmtree(job)  # the job directory is lost

    for script in ("submit.py", "run_batch.py"):
        code, doc, err = run_script(script, "p.jsonl", env=sandbox.env())
        assert code == 2 and is_error(doc), err
        assert "p.jsonl was already submitted, with the same contents, by another job" in err
        assert f"{first} (completed)" in err and "--resubmit" in err
    assert len(list_all(sandbox, "batches")) == 1 and not Path(job).exists()  # nothing sent, no job made
    # the hint's command gets the earlier results
    fetch = err.split("get those results with ", 1)[1].split(". If that job", 1)[0]
    assert fetch.endswith(f"fetch_results.py {first} --input p.jsonl")
    ran = run_script("fetch_results.py", first, "--input", "p.jsonl", env=sandbox.env())
    assert ran[0] == 0 and ran[1]["succeeded"] == 3
    assert sorted(r["custom_id"] for r in read_jsonl(ran[1]["output"])) == sorted(ids)

    code, doc, err = run_script("submit.py", "p.jsonl", "--resubmit", env=sandbox.env())
    assert code == 0 and len(doc["batches"]) == 1, err
    assert len(list_all(sandbox, "batches")) == 2


@pytest.mark.slow  # the wait after a cancel (scaled)
def test_a_cancelled_earlier_job_counts_only_for_what_it_finished(sandbox_factory, tmp_path):
    sb = sandbox_factory("--latency", "0.4", "--concurrency", "1")
    write_input("p.jsonl", 12)
    job = make_job(sb, "p.jsonl", 1)
    bid = batch_ids_of(job)[0]
    wait_until(lambda: sb.batch(bid)["request_counts"]["completed"] >= 2)
    sb.set_faults({"pause_requests": True})  # still running when the cancel comes
    code, doc, err = run_script("cancel_batch.py", "--job", job, env=sb.env())
    assert code == 0 and doc["cancelled"] == 1, err
    sb.wait_batch(bid)
    # the cancelled job's own rerun points at the retry that pays for nothing twice
    code, doc, err = run_script("submit.py", "p.jsonl", env=sb.env())
    assert code == 2 and "was cancelled" in err and "retry_failed.py --job p.dwjob --after-cancel" in err
    # a new job for the same file: its finished requests would be paid again
    code, doc, err = run_script("submit.py", "p.jsonl", "--job", "again.dwjob", env=sb.env())
    assert code == 2 and is_error(doc) and f"{bid} (cancelled)" in err and "--after-cancel" in err, err
    code, doc, err = run_script("retry_failed.py", "--job", job, "--after-cancel", env=sb.env())
    assert code == 0 and 0 < doc["requests"] <= 10, err  # only what did not finish

    # a batch cancelled before anything completed ran nothing: the file may go again
    write_input("q.jsonl", 4, prefix="q-")
    slow = sandbox_factory("--latency", "30", "--concurrency", "1")
    first = make_job(slow, "q.jsonl", 1)
    code, doc, err = run_script("cancel_batch.py", "--job", first, env=slow.env())
    assert code == 0 and doc["cancelled"] == 1, err
    slow.wait_batch(batch_ids_of(first)[0])
    code, doc, err = run_script("submit.py", "q.jsonl", "--job", "q2.dwjob", env=slow.env())
    assert code == 0 and len(doc["batches"]) == 1, err
