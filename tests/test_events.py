"""Engines report events (``core.events``), and only the workflow layer says them
(``workflow/narration.py``): an engine driven inside ``events.capture()`` is checked by its
events, with nothing on stderr; the same events, said by a script, are the lines people see."""

from __future__ import annotations

import os

import pytest
from _dwbatches.core import config, events
from _dwbatches.core.http import Client
from _dwbatches.jobs.job import Job
from _dwbatches.results import fetch
from _dwbatches.workflow import narration
from helpers import batch_ids_of, make_job, run_script, wait_job, write_input


def test_the_download_and_merge_engine_report_events_and_print_nothing(sandbox, tmp_path, monkeypatch, capsys):
    write_input(tmp_path / "in.jsonl", 6)
    job_dir = make_job(sandbox, tmp_path / "in.jsonl", 2)
    wait_job(sandbox, job_dir)
    os.remove(tmp_path / "in.jsonl")  # the merge reads the server's copy, and says so for the report
    monkeypatch.setenv("DOUBLEWORD_API_KEY", sandbox.api_key)
    client = Client(config.load_config(sandbox.base_url))
    capsys.readouterr()
    with events.capture() as heard, Job(job_dir) as job:
        job.load()
        out = fetch.fetch_job(client, job, fmt="simple")
    assert capsys.readouterr().err == ""  # nothing said: the events were captured
    assert out.code == 0 and out.doc["answers"]["good"] == 6
    steps = heard.of(events.STEP)
    for bid in batch_ids_of(job_dir):
        assert f"batch {bid}: +3 results, +0 errors (completed)" in steps, steps
        transfers = [e.data["phase"] for e in heard if e.kind == events.PROGRESS and bid in e.message]
        assert transfers[0] == "start" and transfers[-1] == "end", transfers
    note = next(w for w in heard.report_warnings() if "is gone" in w)
    assert "the requests as submitted are the server's copy" in note
    assert note not in out.doc["warnings"]  # the workflow puts an event for the report there
    # the script: the same note said on stderr and put in the report (by the merge's record, now)
    code, doc, err = run_script("fetch_results.py", "--job", job_dir, env=sandbox.env())
    assert code == 0 and note in doc["warnings"] and note in err
    assert "nothing new since the last merge" in err


def test_an_event_with_nobody_listening_is_dropped(capsys):
    events.step("said to nobody")
    events.warning("nobody hears this either", report=True)
    events.listing(["line 1: nobody"])
    assert capsys.readouterr().err == ""
    with events.capture() as heard:
        events.warning("heard", report=True)
        with events.capture() as inner:  # the innermost sink takes it; a capture passes nothing on
            events.step("inner")
        with events.overheard() as both:  # overheard passes it on
            events.step("both")
    assert heard.lines() == ["warning: heard", "both"] and heard.report_warnings() == ["heard"]
    assert inner.lines() == ["inner"] and both.lines() == ["both"]


def test_the_narration_says_routine_steps_of_the_first_and_last_chunks_only(capsys):
    """The submitter reports each routine step; the narration shapes them (the first chunks and the
    last one by one, those between as one line per step and round), for any engine that gives them."""
    with narration.command():
        for rnd in (1, 2):
            for i in range(1, 13):
                events.step(f"chunk {i}/12: uploaded", routine="uploaded", round=rnd, chunk=i, chunks=12, job="j")
        events.step("chunk 1/3: uploaded", routine="uploaded", round=1, chunk=1, chunks=3, job="j")
        events.listing(["line 2: not JSON"])
    lines = capsys.readouterr().err.splitlines()
    assert lines[:5] == [
        "chunk 1/12: uploaded",
        "chunk 2/12: uploaded",
        "chunk 3/12: uploaded",
        "chunks 4-11: uploaded as planned (not listed one by one)",
        "chunk 12/12: uploaded",
    ]
    assert lines.count("chunks 4-11 of round 2: uploaded as planned (not listed one by one)") == 1
    assert lines[-2:] == ["chunk 1/3: uploaded", "line 2: not JSON"] and len(lines) == 12


def test_an_invalid_file_lists_its_lines_as_events_even_for_a_quiet_command(tmp_path, capsys):
    from _dwbatches.core.errors import InputError
    from _dwbatches.validation.validate import validated_input

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"custom_id": "a"}\nnot json\n', encoding="utf-8")
    with events.capture() as heard, pytest.raises(InputError):
        validated_input(str(bad), "FILE", "nothing was sent")
    listed = heard.of(events.LISTING)
    assert len(listed) == 2 and listed[0].startswith("line 1 (custom_id 'a'): missing field(s)"), listed
    assert listed[1].startswith("line 2: invalid JSON"), listed
    assert capsys.readouterr().err == ""
    code, _, err = run_script("validate_batch_file.py", bad, "-q")  # said on stderr, even with --quiet
    assert code == 2 and [line for line in err.splitlines() if line.startswith("line ")] == listed
