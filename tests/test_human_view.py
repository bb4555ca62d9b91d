"""The human view: on a terminal the scripts print a short readable view instead of the JSON
document (a summary, small tables, the next command; errors as text with the hint), and the
JSON document with --json or DOUBLEWORD_BATCHES_JSON, or whenever stdout is not a terminal.

The scripts run under a pseudo-terminal (tests/ptyrun.py; POSIX only) against the sandbox.
Every command of SKILL.md passes --json, so an agent whose tool runs commands in a
pseudo-terminal still reads one JSON document: the SKILL.md workflow runs under one here.
"""

from __future__ import annotations

import json
import os
import re
import shlex

import pytest
from _dwbatches.core import humanview
from helpers import DOC_INPUTS, ROOT, DocRunner, doc_commands, make_job, run_script, wait_job, write_input
from ptyrun import HAVE_PTY, run_argv_in_pty, run_in_pty

needs_pty = pytest.mark.skipif(not HAVE_PTY, reason="no pseudo-terminals (Windows)")
SKILL_MD = ROOT / "SKILL.md"


def not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


def view_fields(text: str) -> dict:
    """The ``label  value`` lines at the top of a view."""
    out = {}
    for line in text.splitlines():
        if not line.strip():
            break
        label, _, value = re.split(r"(\s{2,})", line, maxsplit=1)
        out[label] = value.strip()
    return out


@pytest.fixture
def three_chunk_job(sandbox, tmp_path):
    write_input(tmp_path / "data.jsonl", 30)
    job = make_job(sandbox, tmp_path / "data.jsonl", 3)
    wait_job(sandbox, job)
    return job


@needs_pty
def test_poll_and_fetch_of_a_multi_chunk_job_show_the_status_the_chunks_and_the_next_command(
    sandbox, tmp_path, three_chunk_job
):
    env = sandbox.env()
    _, doc, _ = run_script("poll.py", "--job", three_chunk_job, env=env)  # piped: the JSON document
    poll = run_in_pty("poll.py", "--job", three_chunk_job, env=env, cwd=tmp_path)
    assert poll.code == 0, poll.stderr
    assert not_json(poll.stdout)
    fields = view_fields(poll.stdout)
    assert fields["status"] == "completed" and fields["finished"] == "yes"
    assert fields["request counts"] == "30 total, 30 completed"
    assert fields["job"] == "data.dwjob"  # relative to the working directory
    rows = [ln.split() for ln in poll.stdout.splitlines() if ln.strip().split(" ")[0].isdigit()]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (str(b["chunk"]), b["batch_id"], "completed", "10/10") for b in doc["batches"]
    ]
    assert poll.stdout.rstrip().splitlines()[-1] == f"next: {doc['next']}"
    assert "next:" not in poll.stderr  # the view shows it; stderr keeps the progress line
    assert "completed: 30/30 done" in poll.stderr

    fetch = run_in_pty("fetch_results.py", "--job", three_chunk_job, env=env, cwd=tmp_path)
    assert fetch.code == 0, fetch.stderr
    fields = view_fields(fetch.stdout)
    assert fields["succeeded"] == "30" and fields["answers"] == "30 good"
    assert fields["output"] == "data.results.jsonl"
    assert re.fullmatch(r"\$[0-9.]+ \(billed\)", fields["cost"]), fields["cost"]
    table = fetch.stdout.split("batches:")[1]
    for b in doc["batches"]:  # each chunk with what was fetched from it
        assert re.search(rf"{b['batch_id']}\s+completed\s+10/10\s+0\s+10\s+0", table), table


@needs_pty
def test_list_models_shows_the_models_with_their_prices_once(sandbox, tmp_path):
    _, doc, _ = run_script("list_models.py", env=sandbox.env())
    res = run_in_pty("list_models.py", env=sandbox.env(), cwd=tmp_path)
    assert res.code == 0, res.stderr
    for m in doc["models"]:
        p = m["price_per_1m_tokens"]
        price = f"{p['24h']['input']:g} / {p['24h']['output']:g}"
        assert re.search(rf"^\s+{re.escape(m['id'])}\s+{m['kind']}\s+{re.escape(price)}\s", res.stdout, re.M), (
            m["id"],
            res.stdout,
        )
        assert m["id"] not in res.stderr  # the table is not printed twice
    assert "$/1M in / out, 24h" in res.stdout


@pytest.mark.slow
@needs_pty
def test_json_flag_or_variable_gives_the_json_document_on_a_terminal_and_the_next_keeps_json(
    sandbox, tmp_path, three_chunk_job
):
    env = sandbox.env()
    _, piped, _ = run_script("poll.py", "--job", three_chunk_job, env=env)
    res = run_in_pty("poll.py", "--job", three_chunk_job, "--json", env=env, cwd=tmp_path)
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert set(doc) == set(piped) and doc["batches"] == piped["batches"]
    assert doc["next"] == piped["next"] + " --json"
    assert "next: " + doc["next"] in res.stderr  # as when piped
    res = run_in_pty("poll.py", "--job", three_chunk_job, env=dict(env, DOUBLEWORD_BATCHES_JSON="1"), cwd=tmp_path)
    assert json.loads(res.stdout)["status"] == "completed"
    # the next command runs as printed and keeps the JSON
    argv = shlex.split(doc["next"])
    again = run_argv_in_pty(argv, env=env, cwd=tmp_path)
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout)["complete"] is True


@needs_pty
def test_an_error_on_a_terminal_is_text_with_its_hint_and_what_the_exit_code_means(sandbox, tmp_path):
    res = run_in_pty("poll.py", "--job", tmp_path / "nothing.dwjob", env=sandbox.env(), cwd=tmp_path)
    assert res.code == 4
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert lines[0].startswith("error: no job found at ")
    assert lines[1].startswith("hint: ")
    assert lines[2] == "(exit 4: not found (404, or no job at the --job path))"
    bad = run_in_pty("poll.py", "--no-such-flag", env=sandbox.env(), cwd=tmp_path)
    assert bad.code == 2 and bad.stdout == ""
    assert "unrecognized arguments: --no-such-flag" in bad.stderr
    piped = run_script("poll.py", "--no-such-flag", env=sandbox.env())[1]
    assert piped["error"]["code"] == "usage"  # piped, the JSON error document as ever


def test_the_view_escapes_control_characters_from_the_report():
    doc = {
        "status": "done\x1b[2J\rforged",
        "models": {"evil\x1b]0;title\x07": 3},
        "batches": [
            {"batch_id": "b\x1b[31m1", "status": "x\ny", "chunk": 1, "request_counts": {"completed": 1, "total": 1}},
            {"batch_id": "b2", "status": "ok", "chunk": 2, "request_counts": {"completed": 1, "total": 1}},
        ],
        "warnings": ["line one\nnext: rm -rf /"],
        "next": "python3 scripts/fetch_results.py --job 'a\nb'",
    }
    text = humanview.render(doc, "poll.py")
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert "\\x1b[2J\\rforged" in text and "\\n" in text
    assert [ln for ln in text.splitlines() if ln.startswith("next:")] == [
        "next: python3 scripts/fetch_results.py --job 'a\\nb'"
    ]
    err = humanview.render_error("bad\x1b[2J", "first line\nsecond\x1b[0m", 3)
    assert "\x1b" not in err and err.splitlines()[2] == "      second\\x1b[0m"


def test_the_view_of_a_report_no_view_knows_is_its_fields():
    text = humanview.render(
        {"ready": True, "eta_seconds": 280, "bytes": 5781, "counts": {"good": 3, "empty": 0}, "items": [{"a": 1}]}
    )
    assert view_fields(text) == {
        "ready": "yes",
        "eta": "4m40s",
        "bytes": "5.8 kB",
        "counts": "3 good",
        "items": "1 (--json lists them)",
    }


def test_every_command_of_skill_md_asks_for_json():
    for cmd in doc_commands(SKILL_MD):
        if cmd.argv[1] != "scripts/sandbox_server.py":
            assert "--json" in cmd.argv, f"{cmd.where}: {cmd.text}"


class PtyDocRunner(DocRunner):
    """Runs each documented command with stdout on a pseudo-terminal (stderr a pipe)."""

    def execute(self, argv):
        import subprocess

        res = run_argv_in_pty(argv, env=self.env, cwd=self.work, timeout=300)
        return subprocess.CompletedProcess(argv, res.code, res.stdout, res.stderr)


@needs_pty
@pytest.mark.slow
def test_skill_md_workflow_in_a_pseudo_terminal_prints_one_json_document_each(tmp_path, sandbox):
    runner = PtyDocRunner.create(tmp_path, sandbox, DOC_INPUTS)
    try:
        examples = [p for p in (ROOT / "examples" / "prompts.txt").read_text(encoding="utf-8").splitlines() if p]
        prompts = [f"{p} (take {i})" for i, p in enumerate(examples * 3)]
        (runner.work / "prompts.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
        for cmd in doc_commands(SKILL_MD):
            runner.run(cmd)  # asserts the exit code and json.loads(stdout)
        ran = [c for c, _, doc in runner.outputs if isinstance(doc, dict)]
        assert len(ran) >= 15
        assert os.path.isfile(runner.work / "requests.results.jsonl")
    finally:
        runner.close()


@needs_pty
def test_a_job_with_a_retry_round_shows_the_cost_of_each_round(sandbox, tmp_path):
    write_input(tmp_path / "data.jsonl", 6)
    sandbox.set_faults({"fail_custom_ids": ["req-1"], "fail_status": 500})
    job = make_job(sandbox, tmp_path / "data.jsonl")
    wait_job(sandbox, job)
    assert run_script("fetch_results.py", "--job", job, env=sandbox.env())[0] == 5
    code, doc, err = run_script("retry_failed.py", "--job", job, env=sandbox.env())
    assert code == 0 and doc["round"] == 2, err
    wait_job(sandbox, job)
    _, piped, _ = run_script("fetch_results.py", "--job", job, env=sandbox.env())
    res = run_in_pty("fetch_results.py", "--job", job, env=sandbox.env(), cwd=tmp_path)
    assert res.code == 5, res.stderr
    rounds = res.stdout.split("cost per round:\n")[1].split("\n\n")[0].splitlines()
    assert rounds[0].split() == ["round", "window", "requests", "input", "tokens", "output", "tokens", "usd"]
    for line, r in zip(rounds[1:], piped["cost"]["rounds"]):
        assert line.split() == [
            str(r["round"]),
            "24h",
            str(r["requests"]),
            str(r["input_tokens"]),
            str(r["output_tokens"]),
            f"${r['usd']}",
        ]
    assert len(rounds) == 3
    assert "failed request" in res.stdout and "req-1" in res.stdout  # the failed sample
    next_lines = [ln for ln in res.stdout.splitlines() if ln.startswith("next: ")]
    assert next_lines == ([f"next: {piped['next']}"] if piped["next"] else [])
