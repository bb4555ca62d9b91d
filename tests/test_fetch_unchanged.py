"""A fetch with nothing new merges nothing: the last merge's report comes back, identical to a
real merge's, and no file is written; any change to what a merge reads or writes (an output
deleted or edited, other output options, a new round, a raw file or a source CSV that changed)
merges as before."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Tuple

from _dwbatches.core import compat
from _dwbatches.jobs.jobrecord import FileStamp
from _dwbatches.results import fetch
from helpers import job_state, make_job, read_jsonl, run_script, wait_job, write_input

NOOP = "nothing new since the last merge"
AGAIN = "merging the results again"


def fetch_job(sb: Any, job: str, *args: Any) -> Tuple[int, Dict[str, Any], str]:
    code, doc, err = run_script("fetch_results.py", "--job", job, *args, env=sb.env())
    assert doc is not None, err
    return code, doc, err


def stamps(*paths: Any) -> List[Tuple[int, int]]:
    """(inode, mtime_ns) of each file: what a write, even of the same bytes, changes."""
    return [(os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in paths]


def dumped(doc: Dict[str, Any]) -> str:
    """The report as printed, keys in their order (two reports equal key for key and in order)."""
    return json.dumps(doc, indent=2)


def test_a_fetch_with_nothing_new_gives_the_merge_report_again_and_writes_nothing(sandbox, tmp_path):
    ids = write_input("data.jsonl", 30)
    sandbox.set_faults(
        {"fail_custom_ids": ids[3:5], "fail_status": 400, "bad_answers": {ids[7]: "filtered", ids[9]: "filtered"}}
    )
    job = make_job(sandbox, "data.jsonl", 2)
    wait_job(sandbox, job)
    code, first, err = fetch_job(sandbox, job, "--format", "simple")
    assert code == 5 and first["failed"] == 2 and first["answers"]["filtered"] == 2, err
    assert first["failed_sample"] and first["bad_answer_sample"] and "fix" in first
    out, errs, state = first["output"], first["errors"], Path(job) / "job.json"
    written = stamps(out, errs, state)

    code, noop, err = fetch_job(sandbox, job)
    assert code == 5 and NOOP in err and AGAIN not in err, err
    assert "warning: answers that are not answers: 2 filtered" in err  # said again, as the merge said it
    assert stamps(out, errs, state) == written  # neither the results, the errors nor job.json written

    os.utime(out)  # the same bytes, touched: no longer provably what the merge wrote
    code, forced, err = fetch_job(sandbox, job)
    assert code == 5 and AGAIN in err and "changed since the last merge wrote it" in err, err
    assert dumped(forced) == dumped(noop)  # the recorded report is a real merge's, key for key
    assert stamps(out)[0][0] != written[0][0]  # written again (a new file put in place)
    assert [k for k in noop] == [k for k in forced]
    assert noop["usage"] == forced["usage"] and noop["cost"] == forced["cost"]

    code, again, err = fetch_job(sandbox, job)
    assert NOOP in err and dumped(again) == dumped(forced)


def test_each_change_merges_again(sandbox, tmp_path):
    ids = write_input("data.jsonl", 20)
    sandbox.set_faults({"fail_custom_ids": ids[:2], "fail_status": 400})
    job = make_job(sandbox, "data.jsonl")
    wait_job(sandbox, job)
    code, doc, err = fetch_job(sandbox, job, "--format", "simple")
    assert code == 5 and doc["failed"] == 2, err
    out, errs = Path(doc["output"]), Path(doc["errors"])
    expected = out.read_bytes()

    def merges(*args: Any) -> Dict[str, Any]:
        code, doc, err = fetch_job(sandbox, job, *args)
        assert AGAIN in err and NOOP not in err, err
        code, again, err = fetch_job(sandbox, job, *args)
        assert NOOP in err and AGAIN not in err, err  # and then it is a no-op again
        for b in doc["batches"]:  # what this fetch downloaded is the one difference
            b["new_lines"] = {"output": 0, "error": 0}
        assert dumped(again) == dumped(doc)
        return doc

    out.unlink()  # the results file deleted
    merges()
    assert out.read_bytes() == expected

    errs.unlink()  # the errors file deleted
    merges()
    assert len(read_jsonl(errs)) == 2

    # an edit in place that keeps the size and the modification time
    st = out.stat()
    with open(out, "r+b") as fh:
        fh.seek(st.st_size // 2)
        fh.write(b"#")
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    merges()
    assert out.read_bytes() == expected

    raw = merges("--format", "raw")  # other output options
    assert raw["format"] == "raw" and len(read_jsonl(out)) == 18
    other = merges("-o", "other.jsonl")
    assert other["output"] == str(tmp_path / "other.jsonl")
    merges("--format", "simple", "-o", str(out))
    assert out.read_bytes() == expected

    # a raw file that changed (a line appended by hand: the merge reads every line)
    bid = job_state(job)["rounds"][0]["chunks"][0]["batch_id"]
    raw_file = Path(job) / "results" / f"{bid}.output.jsonl"
    with open(raw_file, "ab") as fh:
        fh.write(raw_file.read_bytes().splitlines(keepends=True)[0])
    merges()

    # a new round: the failed requests run again and their answers replace the errors
    sandbox.clear_faults()
    code, retried, err = run_script("retry_failed.py", "--job", job, env=sandbox.env())
    assert code == 0 and retried["requests"] == 2, err
    wait_job(sandbox, job)
    done = merges()
    assert done["succeeded"] == 20 and done["failed"] == 0

    # the job's input gone: the requests come from the server's copy, said in the report
    Path("data.jsonl").unlink()
    gone = merges()
    assert any("data.jsonl is gone" in w for w in gone["warnings"]) and gone["succeeded"] == 20


def test_a_changed_source_csv_merges_again_into_csv(sandbox, tmp_path):
    Path("q.csv").write_text("id,text\nr1,alpha\nr2,bravo\nr3,charlie\n")
    code, built, err = run_script(
        "create_batch_file.py", "q.jsonl", "--csv", "q.csv", "--id-column", "id", "--template", "Say {text}"
    )
    assert code == 0, err
    job = make_job(sandbox, "q.jsonl")
    wait_job(sandbox, job)
    code, doc, err = fetch_job(sandbox, job)
    assert code == 0 and doc["format"] == "csv", err
    code, doc, err = fetch_job(sandbox, job)
    assert NOOP in err, err

    Path("q.csv").write_text("id,text,note\nr1,alpha,x\nr2,bravo,y\nr3,charlie,z\n")  # a column added
    code, doc, err = fetch_job(sandbox, job)
    assert AGAIN in err and "the source CSV" in err, err
    with open(doc["output"], newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:3] == ["id", "text", "note"] and [r[2] for r in rows[1:]] == ["x", "y", "z"]

    code, cols, err = fetch_job(sandbox, job, "--columns", "id,response")  # other columns
    assert AGAIN in err, err
    with open(cols["output"], newline="") as fh:
        assert next(csv.reader(fh)) == ["id", "response"]


def test_a_stamp_tells_an_edit_that_keeps_size_and_time(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"x" * 200_000)
    before = FileStamp.of(str(path), compat.change_time_ns)
    assert before is not None and FileStamp.of(str(path), compat.change_time_ns) == before
    st = path.stat()
    with open(path, "r+b") as fh:  # the middle, outside the sampled head and tail
        fh.seek(100_000)
        fh.write(b"y")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = FileStamp.of(str(path), compat.change_time_ns)
    assert after is not None and after.bytes == before.bytes and after.mtime_ns == before.mtime_ns
    if compat.change_time_ns(path.stat()) is not None:  # POSIX: the kernel's change time moved
        assert after != before
    with open(path, "r+b") as fh:  # the head: caught by the sample on every platform
        fh.write(b"z")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert FileStamp.of(str(path), compat.change_time_ns) != before
    assert FileStamp.of(str(tmp_path / "none"), compat.change_time_ns) is None


def test_the_recorded_report_holds_what_a_merge_adds():
    """The keys a merge puts in a fetch report are the ones recorded and given again."""
    from _dwbatches.results.merge import MergeCounts

    doc = fetch._counts_doc(MergeCounts(), "o", "e", "raw")
    assert tuple(doc) == fetch.MERGE_KEYS[:-2] and fetch.MERGE_KEYS[-2:] == ("fix", "reuse")


def test_id_tables_in_files_merge_as_in_memory(sandbox, tmp_path):
    """Huge jobs keep their id tables in files (idtable.FILE_SLOTS): forced here for every table,
    the merges (raw, simple, CSV), a retry's input and the counts are those of tables in memory."""
    Path("q.csv").write_text("id,text\n" + "".join(f"r{i},question {i}\n" for i in range(40)))
    code, built, err = run_script("create_batch_file.py", "q.jsonl", "--csv", "q.csv", "--id-column", "id")
    assert code != 0  # (no template: the prompt column is missing)
    code, built, err = run_script(
        "create_batch_file.py", "q.jsonl", "--csv", "q.csv", "--id-column", "id", "--template", "{text}"
    )
    assert code == 0, err
    ids = [json.loads(x)["custom_id"] for x in Path("q.jsonl").read_text().splitlines()]
    sandbox.set_faults({"fail_custom_ids": ids[5:8], "fail_status": 400, "bad_answers": {ids[9]: "filtered"}})
    job = make_job(sandbox, "q.jsonl", 3)
    wait_job(sandbox, job)
    in_file = dict(sandbox.env(), DOUBLEWORD_BATCHES_FILE_SLOTS="0")
    for fmt in ("raw", "simple", "csv"):
        outs = {}
        for name, env in (("memory", sandbox.env()), ("file", in_file)):
            out = tmp_path / f"{name}.{fmt}"
            code, doc, err = run_script(
                "fetch_results.py", "--job", job, "--format", fmt, "-o", out, "--errors", f"{out}.err", env=env
            )
            assert code == 5, err
            doc = {k: v for k, v in doc.items() if k not in ("output", "errors", "next", "batches")}
            outs[name] = (out.read_bytes(), Path(f"{out}.err").read_bytes(), doc)
        assert outs["memory"] == outs["file"]
    code, doc, err = run_script("retry_failed.py", "--job", job, "--dry-run", env=in_file)
    code2, doc2, err2 = run_script("retry_failed.py", "--job", job, "--dry-run", env=sandbox.env())
    assert code == code2 == 0 and doc["requests"] == doc2["requests"] == 3, err
