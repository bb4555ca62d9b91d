"""Guards that protect a user's data and money: no overwriting inputs, no relabelling a
finished batch, clear errors for a wrong job path or base URL."""

from __future__ import annotations

import time

import pytest
from helpers import is_error, make_job, run_script, write_input
from sandbox_helper import chat_requests


@pytest.mark.slow  # several seconds of a slowed sandbox
def test_cancel_skips_a_finalizing_batch(sandbox_factory, tmp_path):
    sb = sandbox_factory("--finalizing-delay", "3")
    b = sb.submit(chat_requests(2))
    deadline = time.time() + 10
    while sb.batch(b["id"])["status"] != "finalizing" and time.time() < deadline:
        time.sleep(0.05)
    assert sb.batch(b["id"])["status"] == "finalizing"
    code, doc, err = run_script("cancel_batch.py", b["id"], env=sb.env())
    assert code == 0, err
    assert doc["batches"][0]["action"] == "skipped" and doc["cancelled"] == 0
    assert sb.stats()["requests"].get("POST /v1/batches/{id}/cancel", 0) == 0
    assert sb.wait_batch(b["id"])["status"] == "completed"


def test_fetch_never_overwrites_the_input_or_the_source_csv(sandbox, tmp_path):
    (tmp_path / "rows.csv").write_text("id,text\n1,good\n2,bad\n")
    code, doc, err = run_script(
        "create_batch_file.py", "rows.jsonl", "--csv", "rows.csv", "--id-column", "id", "--template", "Classify: {text}"
    )
    assert code == 0, err
    code, doc, err = run_script("submit.py", "rows.jsonl", env=sandbox.env())
    assert code == 0, err
    job = doc["job"]
    before = (tmp_path / "rows.csv").read_bytes(), (tmp_path / "rows.jsonl").read_bytes()
    for target in ("rows.csv", "rows.jsonl"):
        code, doc, err = run_script("fetch_results.py", "--job", job, "-o", target, env=sandbox.env())
        assert code == 2 and is_error(doc) and "refusing to overwrite" in err
        code, doc, err = run_script("fetch_results.py", "--job", job, "--errors", target, env=sandbox.env())
        assert code == 2 and "refusing to overwrite" in err
    assert ((tmp_path / "rows.csv").read_bytes(), (tmp_path / "rows.jsonl").read_bytes()) == before


def test_create_never_overwrites_its_input(tmp_path):
    (tmp_path / "p.txt").write_text("one\ntwo\n")
    code, doc, err = run_script("create_batch_file.py", "p.txt", "--prompts", "p.txt")
    assert code == 2 and "refusing to overwrite" in err
    assert (tmp_path / "p.txt").read_text() == "one\ntwo\n"


def test_job_path_that_is_a_file_is_a_usage_error(sandbox, tmp_path):
    write_input("data.jsonl", 3)
    for script in ("poll.py", "fetch_results.py", "retry_failed.py", "cancel_batch.py"):
        code, doc, err = run_script(script, "--job", "data.jsonl", env=sandbox.env())
        assert code == 2 and is_error(doc) and "not a job directory" in err, (script, err)


def test_base_url_without_v1_gets_a_configuration_hint(sandbox, tmp_path):
    write_input("data.jsonl", 3)
    job = make_job(sandbox, "data.jsonl")
    root = sandbox.base_url[: -len("/v1")]
    env = dict(sandbox.env(), DOUBLEWORD_BASE_URL=root)
    code, doc, err = run_script("list_batches.py", env=env)
    assert code == 3 and is_error(doc) and "should end in /v1" in err and "does not end in /v1" in err
    assert job
