"""One cost estimate, one shape: submit.py --dry-run, submit.py and run_batch.py print
``estimated_cost`` with the same fields (cost/estimate.py): a headline figure ``usd`` with its
``basis`` (the server's estimate when it estimated every chunk, else the price table's), the
price-table range beside it, and the same figures in one line on stderr."""

from __future__ import annotations

import json
from pathlib import Path

from _dwbatches.cost.pricing import table_age
from helpers import run_script

SHAPE = {
    "usd",
    "basis",
    "server_usd",
    "chunks_estimated",
    "chunks",
    "low_usd",
    "high_usd",
    "input_tokens",
    "output_tokens",
    "window",
    "prices_as_of",
    "models",
}


def estimate_lines(err: str):
    return [line for line in err.splitlines() if line.startswith("estimated cost: ")]


def build(n: int = 6) -> None:
    Path("p.txt").write_text("".join(f"Say something kind about the number {i}\n" for i in range(n)))
    code, _, err = run_script(
        "create_batch_file.py", "r.jsonl", "--prompts", "p.txt", "--max-tokens", "200", "--reasoning", "none"
    )
    assert code == 0, err


def test_dry_run_and_submit_print_one_shape_with_the_server_figure_as_headline(sandbox):
    build()
    code, dry, err = run_script("submit.py", "r.jsonl", "--dry-run")
    assert code == 0, err
    before = dry["estimated_cost"]
    assert set(before) == SHAPE
    assert before["basis"] == "price_table" and before["usd"] == before["low_usd"]
    assert before["server_usd"] is None and (before["chunks_estimated"], before["chunks"]) == (0, 1)
    assert before["input_tokens"] == before["models"][0]["input_tokens"] > 0
    assert before["output_tokens"] == before["models"][0]["output_tokens_low"]
    assert estimate_lines(err) == [
        f"estimated cost: ${before['low_usd']} from the price table (answers as long as their prompts, at most "
        f"max_tokens); up to ${before['high_usd']} if every answer uses its whole max_tokens; prices of {table_age()}"
    ]

    code, doc, err = run_script("submit.py", "r.jsonl", env=sandbox.env())
    assert code == 0, err
    after = doc["estimated_cost"]
    assert set(after) == SHAPE
    assert after["basis"] == "server" and after["usd"] == after["server_usd"] and float(after["usd"]) > 0
    assert (after["chunks_estimated"], after["chunks"]) == (1, 1)
    # the range beside it is the dry run's, from the job record
    for key in ("low_usd", "high_usd", "prices_as_of", "models"):
        assert after[key] == before[key], key
    assert estimate_lines(err) == [
        f"estimated cost: ${after['usd']}, the server's estimate (answers as long as their prompts); "
        f"price table: ${after['low_usd']} to ${after['high_usd']}"
    ]
    # run_batch.py on the same job reports the same estimate
    code, ran, err = run_script("run_batch.py", "r.jsonl", "--wait", "--interval", "0.2", env=sandbox.env())
    assert code == 0, err
    assert (
        ran["estimated_cost"] == after and len(estimate_lines(err)) == 1 and f"estimated cost: ${after['usd']}," in err
    )


def test_a_chunk_without_the_servers_figure_puts_the_price_table_first(sandbox):
    build(6)
    # the first cost estimate fails (the only GET under /v1/files/ of a new submit)
    sandbox.set_faults({"http": [{"method": "GET", "path": "/v1/files/", "status": 404, "times": 1}]})
    code, doc, err = run_script("submit.py", "r.jsonl", "--max-requests", "3", "--parallel", "1", env=sandbox.env())
    assert code == 0, err
    est = doc["estimated_cost"]
    assert set(est) == SHAPE
    assert (est["chunks_estimated"], est["chunks"]) == (1, 2) and float(est["server_usd"]) > 0
    assert est["basis"] == "price_table" and est["usd"] == est["low_usd"]
    assert estimate_lines(err) == [
        f"estimated cost: ${est['low_usd']} from the price table (answers as long as their prompts, at most "
        f"max_tokens); up to ${est['high_usd']} if every answer uses its whole max_tokens; the server estimated "
        f"${est['server_usd']} for 1 of 2 chunks; prices of {table_age()}"
    ]


def test_a_job_recorded_by_an_earlier_version_keeps_the_shape(sandbox):
    """Earlier versions kept only {window, low_usd, high_usd, as_of} of the local estimate."""
    build()
    code, doc, err = run_script("submit.py", "r.jsonl", env=sandbox.env())
    assert code == 0, err
    record = Path("r.dwjob", "job.json")
    state = json.loads(record.read_text())
    old = {k: state["local_estimate"][k] for k in ("window", "low_usd", "high_usd", "as_of")}
    state["local_estimate"] = old
    record.write_text(json.dumps(state))
    code, again, err = run_script("submit.py", "r.jsonl", env=sandbox.env())
    assert code == 0, err
    est = again["estimated_cost"]
    assert set(est) == SHAPE and est["models"] == []
    assert (est["usd"], est["low_usd"], est["high_usd"]) == (
        doc["estimated_cost"]["usd"],
        old["low_usd"],
        old["high_usd"],
    )
