"""Answers that are answers: an HTTP 200 that is empty, cut, not the JSON asked for or filtered
is counted, marked and never a success; the printed next fixes it with new settings, and
nothing with a good answer is sent twice. Through the scripts against the sandbox (whose
reasoning models think 64 tokens before they answer)."""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

from helpers import job_state, read_jsonl, run_script
from sandbox_helper import INSTRUCT_MODEL

SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["positive", "negative"]}, "why": {"type": "string"}},
    "required": ["label", "why"],
}


def prompts(n: int) -> None:
    Path("p.txt").write_text("".join(f"Classify review number {i}: it was fine\n" for i in range(n)), encoding="utf-8")


def run_next(doc: dict, sandbox) -> tuple:
    """Run the command a report printed as `next`, as printed; (exit code, report, stderr)."""
    argv = shlex.split(doc["next"])
    assert Path(argv[1]).name.endswith(".py"), doc["next"]
    return run_script(Path(argv[1]).name, *argv[2:], env=sandbox.env())


def requests_sent(sandbox) -> int:
    return sum(n for k, n in sandbox.stats()["requests"].items() if k == "POST /v1/files")


def test_the_classification_recipe_on_a_reasoning_model_is_caught_and_fixed(sandbox):
    """The trap: a one-word classification with --max-tokens 5 on the default model (it reasons
    first). Every answer is empty: exit 5 with the counts, never "succeeded"; the printed next
    switches reasoning off, runs, and every request then has a good answer."""
    prompts(6)
    code, built, err = run_script(
        "create_batch_file.py", "r.jsonl", "--prompts", "p.txt", "--system", "Answer with one word.",
        "--max-tokens", "5",
    )  # fmt: skip
    assert code == 0, err
    code, doc, err = run_script(
        "run_batch.py", "r.jsonl", "--wait", "--interval", "0.2", "--format", "simple", env=sandbox.env()
    )
    assert code == 5, err
    assert doc["succeeded"] == 0 and doc["answers"] == {
        "good": 0,
        "empty": 6,
        "truncated": 0,
        "invalid_json": 0,
        "filtered": 0,
    }
    assert "0/6 succeeded, 6 answered badly" in err and "6/6 succeeded" not in err
    rows = read_jsonl(doc["output"])
    assert all(r["ok"] is False and r["answer_check"] == "empty" and r["content"] is None for r in rows)
    assert "spent 5 token(s) reasoning" in rows[0]["error"]
    assert doc["bad_answer_sample"][0]["answer_check"] == "empty"
    assert doc["fix"]["changes"] == {"reasoning": "none"} and "reasoning" in doc["fix"]["reason"]
    assert doc["next"].endswith("retry_failed.py --job r.dwjob --reasoning none")
    errors = read_jsonl(doc["errors"])
    assert [e["error"]["code"] for e in errors] == ["empty"] * 6  # the server's lines, marked
    assert doc["usage"]["output_tokens"] == 30  # billed although empty

    code, retried, err = run_next(doc, sandbox)
    assert code == 0, err
    assert retried["answers"]["empty"] == 6 and retried["changes"] == {"reasoning": "none"}
    sent = read_jsonl(retried["input"])
    assert all(r["body"]["reasoning_effort"] == "none" and r["body"]["max_tokens"] == 5 for r in sent)
    assert all(r["body"]["chat_template_kwargs"] == {"enable_thinking": False} for r in sent)
    assert job_state("r.dwjob")["rounds"][1]["changes"] == {"reasoning": "none"}
    code, polled, err = run_next(retried, sandbox)  # poll.py
    code, polled, err = run_script("poll.py", "--job", "r.dwjob", "--wait", "--interval", "0.2", env=sandbox.env())
    assert code == 0, err
    code, fetched, err = run_next(polled, sandbox)
    assert code == 0, err
    assert fetched["succeeded"] == 6 and fetched["answers"]["good"] == 6 and fetched["next"] is None
    assert all(r["ok"] and r["content"] == "Classify" for r in read_jsonl(fetched["output"]))
    assert [r["round"] for r in fetched["cost"]["rounds"]] == [1, 2]  # each round's cost is shown
    code, polled, err = run_script("poll.py", "--job", "r.dwjob", env=sandbox.env())
    assert code == 0 and polled["answers"]["good"] == 6


def test_only_answers_that_are_not_good_are_sent_again(sandbox):
    """Invalid JSON against a schema (a missing field, text that does not parse) is flagged;
    the rerun asks those two again, as they were, and nothing with a good answer is sent twice."""
    Path("schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    prompts(5)
    code, built, err = run_script(
        "create_batch_file.py", "r.jsonl", "--prompts", "p.txt", "--json-schema", "schema.json", "-m", INSTRUCT_MODEL
    )
    assert code == 0, err
    ids = [json.loads(line)["custom_id"] for line in Path("r.jsonl").read_text().splitlines()]
    sandbox.set_faults({"bad_answers": {ids[1]: "invalid_json", ids[3]: "missing_fields"}})
    code, doc, err = run_script("run_batch.py", "r.jsonl", "--wait", "--interval", "0.2", env=sandbox.env())
    assert code == 5, err
    assert doc["answers"]["good"] == 3 and doc["answers"]["invalid_json"] == 2 and doc["succeeded"] == 3
    assert {s["custom_id"] for s in doc["bad_answer_sample"]} == {ids[1], ids[3]}
    assert doc["fix"]["changes"] == {} and "not the JSON asked for" in doc["fix"]["reason"]
    assert doc["next"].endswith("retry_failed.py --job r.dwjob")
    code, retried, err = run_next(doc, sandbox)
    assert code == 0, err
    assert retried["requests"] == 2 and retried["answers"]["invalid_json"] == 2
    assert [json.loads(line)["custom_id"] for line in Path(retried["input"]).read_text().splitlines()] == [
        ids[1],
        ids[3],
    ]
    code, doc, err = run_script(
        "run_batch.py", "r.jsonl", "--wait", "--interval", "0.2", "--format", "csv", env=sandbox.env()
    )
    assert code == 0, err
    assert doc["succeeded"] == 5 and doc["answers"]["invalid_json"] == 0
    with open(doc["output"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["answer_check"] for r in rows] == ["good"] * 5
    assert all(set(json.loads(r["response"])) == {"label", "why"} for r in rows)
    code, again, err = run_script("retry_failed.py", "--job", "r.dwjob", env=sandbox.env())
    assert code == 0 and again["round"] is None and "nothing to retry" in err


def test_cut_answers_are_rerun_with_a_larger_budget_never_unchanged(sandbox):
    """JSON cut at max_tokens is truncated (not invalid JSON); a plain retry would be cut again
    and is refused with the fix; the printed fix (a larger max_tokens) gives good answers."""
    Path("schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    prompts(3)
    code, built, err = run_script(
        "create_batch_file.py", "r.jsonl", "--prompts", "p.txt", "--json-schema", "schema.json",
        "-m", INSTRUCT_MODEL, "--max-tokens", "4",
    )  # fmt: skip
    assert code == 0, err
    code, doc, err = run_script(
        "run_batch.py", "r.jsonl", "--wait", "--interval", "0.2", "--format", "csv", env=sandbox.env()
    )
    assert code == 5, err
    assert doc["answers"]["truncated"] == 3
    with open(doc["output"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert all(r["answer_check"] == "truncated" and r["error"] == "answer cut at the token limit" for r in rows)
    assert all(len(r["response"]) == 16 for r in rows)  # the cut text is kept beside its error
    budget = doc["fix"]["changes"]["max_tokens"]
    assert doc["fix"]["changes"] == {"max_tokens": budget} and budget >= 4 + 256
    before = job_state("r.dwjob")
    code, refused, err = run_script("retry_failed.py", "--job", "r.dwjob", env=sandbox.env())
    assert code == 2 and "would be cut again" in err and f"--max-tokens {budget}" in err
    assert job_state("r.dwjob")["rounds"] == before["rounds"] and not Path("r.dwjob/rounds/round-2.jsonl").exists()
    code, retried, err = run_next(doc, sandbox)
    assert code == 0, err
    sent = Path(retried["input"]).read_text().splitlines()
    assert all(json.loads(line)["body"]["max_tokens"] == budget for line in sent)
    code, doc, err = run_script("run_batch.py", "r.jsonl", "--wait", "--interval", "0.2", env=sandbox.env())
    assert code == 0 and doc["answers"]["good"] == 3, err


def test_filtered_and_empty_answers_and_what_poll_reports(sandbox):
    """A filtered answer is not rerun (it would be filtered again): with nothing else to fix,
    next is null and the exit stays 5; poll reports the answers of the last fetch and agrees."""
    prompts(3)
    code, built, err = run_script(
        "create_batch_file.py", "r.jsonl", "--prompts", "p.txt", "-m", INSTRUCT_MODEL, "--max-tokens", "100"
    )
    assert code == 0, err
    ids = [json.loads(line)["custom_id"] for line in Path("r.jsonl").read_text().splitlines()]
    sandbox.set_faults({"bad_answers": {ids[0]: "filtered"}})
    code, doc, err = run_script("run_batch.py", "r.jsonl", "--wait", "--interval", "0.2", env=sandbox.env())
    assert code == 5, err
    assert doc["answers"]["filtered"] == 1 and doc["fix"] is None and doc["next"] is None
    code, polled, err = run_script("poll.py", "--job", "r.dwjob", env=sandbox.env())
    assert code == 5 and polled["answers"]["filtered"] == 1, err
    code, retried, err = run_script("retry_failed.py", "--job", "r.dwjob", "--rerun", "filtered", env=sandbox.env())
    assert code == 0 and retried["answers"]["filtered"] == 1 and retried["requests"] == 1, err


def test_poll_before_any_fetch_says_the_answers_are_not_checked(sandbox):
    prompts(2)
    code, built, err = run_script("create_batch_file.py", "r.jsonl", "--prompts", "p.txt", "--max-tokens", "5")
    code, sub, err = run_script("submit.py", "r.jsonl", env=sandbox.env())
    assert code == 0, err
    code, polled, err = run_script("poll.py", "--job", "r.dwjob", "--wait", "--interval", "0.2", env=sandbox.env())
    assert code == 0 and polled["answers"] is None and "not checked yet" in err
    assert "fetch_results.py --job r.dwjob" in polled["next"]
    code, fetched, err = run_next(polled, sandbox)
    assert code == 5 and fetched["answers"]["empty"] == 2


def test_retry_flags_are_checked_before_anything_is_sent(sandbox):
    prompts(2)
    run_script("create_batch_file.py", "r.jsonl", "--prompts", "p.txt", "--max-tokens", "5")
    code, doc, err = run_script("run_batch.py", "r.jsonl", "--wait", "--interval", "0.2", env=sandbox.env())
    assert code == 5
    code, bad, err = run_script("retry_failed.py", "--job", "r.dwjob", "--rerun", "failed,oops", env=sandbox.env())
    assert code == 2 and "error: --rerun" in err and "not oops" in err
    code, bad, err = run_script("retry_failed.py", "--job", "r.dwjob", "--max-tokens", "0", env=sandbox.env())
    assert code == 2 and "error: --max-tokens" in err
    code, bad, err = run_script(
        "retry_failed.py", "--job", "r.dwjob", "-m", "openai/gpt-oss-20b", "--reasoning", "none", env=sandbox.env()
    )
    assert code == 2 and "cannot switch it off" in err
    assert len(job_state("r.dwjob")["rounds"]) == 1
    code, dry, err = run_script(
        "retry_failed.py", "--job", "r.dwjob", "--max-tokens", "500", "--dry-run", env=sandbox.env()
    )
    assert code == 0 and dry["dry_run"] and dry["answers"]["empty"] == 2 and dry["changes"] == {"max_tokens": 500}
    assert dry["next"].endswith("retry_failed.py --job r.dwjob --max-tokens 500")
