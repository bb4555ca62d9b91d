"""check_setup.py and list_models.py, run as real scripts (issue: getting started)."""

from __future__ import annotations

import json
import os
import socket

import helpers
from helpers import is_error, run_script


def run(script, *args, env=None, cwd=None):
    base = {k: v for k, v in os.environ.items() if not k.startswith("DOUBLEWORD_")}
    base.update(env or {})
    p = helpers.run(script, *args, env=base, cwd=cwd, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_sandbox_mode_is_green_without_a_key(tmp_path):
    code, out, err = run("check_setup.py", "--sandbox", cwd=tmp_path)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ready"] is True and doc["sandbox"] is True
    assert [c["name"] for c in doc["checks"]][:3] == ["python", "package requests", "package python-dotenv"]
    assert all(c["ok"] for c in doc["checks"])
    assert "Qwen/Qwen3-Embedding-8B" in doc["models"]
    assert "sandbox stopped" in err


def test_no_key_exits_3_and_names_the_variable_and_dotenv(tmp_path):
    code, out, err = run("check_setup.py", cwd=tmp_path)
    assert code == 3 and is_error(out)
    assert "FAIL  API key" in err and "DOUBLEWORD_API_KEY" in err and ".env" in err


def test_key_from_dotenv_is_found_and_its_source_reported(sandbox, tmp_path):
    (tmp_path / ".env").write_text(f"DOUBLEWORD_API_KEY={sandbox.api_key}\nDOUBLEWORD_BASE_URL={sandbox.base_url}\n")
    code, out, err = run("check_setup.py", cwd=tmp_path)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["key_source"] == f".env at {tmp_path / '.env'}"
    assert sandbox.api_key not in out + err


def test_wrong_key_against_the_sandbox_exits_3(sandbox, tmp_path):
    code, out, err = run(
        "check_setup.py",
        env={"DOUBLEWORD_API_KEY": "sk-wrong-" + "x" * 38, "DOUBLEWORD_BASE_URL": sandbox.base_url},
        cwd=tmp_path,
    )
    assert code == 3 and is_error(out)
    assert "refused (401)" in err and "sk-wrong-" not in err


def test_forbidden_key_is_reported_as_403(sandbox_factory, tmp_path):
    bad = "sk-platform-" + "p" * 35
    sb = sandbox_factory("--forbidden-key", bad)
    code, out, err = run(
        "check_setup.py", env={"DOUBLEWORD_API_KEY": bad, "DOUBLEWORD_BASE_URL": sb.base_url}, cwd=tmp_path
    )
    assert code == 3 and is_error(out) and "(403)" in err and bad not in err


def test_unreachable_api_exits_1(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    code, out, err = run(
        "check_setup.py",
        env={"DOUBLEWORD_API_KEY": "sk-any-" + "k" * 40, "DOUBLEWORD_BASE_URL": f"http://127.0.0.1:{port}/v1"},
        cwd=tmp_path,
    )
    assert code == 1 and is_error(out) and "FAIL  API reachable" in err


def test_insecure_remote_url_is_a_config_problem(tmp_path):
    code, out, err = run(
        "check_setup.py",
        env={"DOUBLEWORD_API_KEY": "sk-any-" + "k" * 40, "DOUBLEWORD_BASE_URL": "http://api.example.invalid/v1"},
        cwd=tmp_path,
    )
    assert code == 3 and is_error(out) and "--allow-insecure-http" in err


def test_list_models_and_filters(sandbox, tmp_path):
    env = {"DOUBLEWORD_API_KEY": sandbox.api_key, "DOUBLEWORD_BASE_URL": sandbox.base_url}
    code, out, err = run("list_models.py", env=env, cwd=tmp_path)
    assert code == 0, err
    doc = json.loads(out)
    ids = {m["id"]: m["kind"] for m in doc["models"]}
    assert ids["Qwen/Qwen3-Embedding-8B"] == "embeddings" and ids["Qwen/Qwen3.5-9B"] == "chat"
    assert doc["count"] == len(doc["models"])
    code, out, _ = run("list_models.py", "--embeddings", env=env, cwd=tmp_path)
    assert [m["id"] for m in json.loads(out)["models"]] == ["Qwen/Qwen3-Embedding-8B"]
    code, out, _ = run("list_models.py", "--chat", env=env, cwd=tmp_path)
    assert "Qwen/Qwen3-Embedding-8B" not in {m["id"] for m in json.loads(out)["models"]}
    code, out, err = run("list_models.py", env={"DOUBLEWORD_BASE_URL": sandbox.base_url}, cwd=tmp_path)
    assert code == 3 and is_error(out)


def test_list_models_shows_prices_and_sorts_the_cheapest_first(sandbox, tmp_path):
    """One command answers "which model is the cheapest?"."""
    env = {"DOUBLEWORD_API_KEY": sandbox.api_key, "DOUBLEWORD_BASE_URL": sandbox.base_url}
    code, out, err = run("list_models.py", "--chat", "--sort", "price", env=env, cwd=tmp_path)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["prices_as_of"] == "2026-04-13" and doc["default_model"] == "Qwen/Qwen3.5-35B-A3B-FP8"
    priced = [m for m in doc["models"] if m["price_per_1m_tokens"]]
    assert priced and all(set(m["price_per_1m_tokens"]) == {"24h", "1h"} for m in priced)
    keys = [m["price_per_1m_tokens"]["24h"]["input"] + m["price_per_1m_tokens"]["24h"]["output"] for m in priced]
    assert keys == sorted(keys)  # cheapest first
    assert doc["models"][: len(priced)] == priced  # unknown prices last
    nine_b = next(m for m in doc["models"] if m["id"] == "Qwen/Qwen3.5-9B")["price_per_1m_tokens"]
    assert nine_b == {"24h": {"input": 0.03, "output": 0.29}, "1h": {"input": 0.04, "output": 0.35}}
    assert "prices per 1M tokens from the price table of 2026-04-13" in err


def test_check_setup_next_builds_the_users_own_input_and_runs_as_printed(sandbox, tmp_path):
    """No input here: the example prompts' build. One prompts file: its build, named after it, with
    the first-job options SKILL.md uses (a paragraph's budget, thinking off); each runs as printed."""
    env = {"DOUBLEWORD_API_KEY": sandbox.api_key, "DOUBLEWORD_BASE_URL": sandbox.base_url}
    code, out, err = run("check_setup.py", env=env, cwd=tmp_path)
    assert code == 0, err
    doc = json.loads(out)
    argv = doc["next"].split()[2:]
    assert doc["input"] is None and argv == ["requests.jsonl", "--max-tokens", "500", "--reasoning", "none"], argv
    (tmp_path / "prompts.txt").write_text("Say hi\n")
    code, out, err = run("check_setup.py", env=env, cwd=tmp_path)
    doc = json.loads(out)
    assert doc["input"] == {"path": "prompts.txt", "kind": "prompts"}
    argv = doc["next"].split()[2:]
    assert argv[:3] == ["prompts.jsonl", "--prompts", "prompts.txt"] and "--reasoning" in argv, argv
    code, out, err = run("create_batch_file.py", *argv, env=env, cwd=tmp_path)
    assert code == 0 and json.loads(out)["requests"] == 1 and not json.loads(out)["warnings"], err


def test_check_setup_next_never_names_a_file_that_exists(sandbox, tmp_path):
    """The printed build never writes over a file or a job directory of its name."""
    env = {"DOUBLEWORD_API_KEY": sandbox.api_key, "DOUBLEWORD_BASE_URL": sandbox.base_url}
    (tmp_path / "requests.dwjob").mkdir()
    (tmp_path / "requests-2.dwjob").mkdir()
    code, out, err = run("check_setup.py", env=env, cwd=tmp_path)
    assert code == 0, err
    argv = json.loads(out)["next"].split()[2:]
    assert argv[0] == "requests-3.jsonl", argv
    code, out, err = run("create_batch_file.py", *argv, env=env, cwd=tmp_path)
    assert code == 0 and json.loads(out)["requests"] == 5, err


def test_check_setup_names_a_csv_a_batch_file_or_several_inputs_without_guessing(sandbox, tmp_path):
    env = {"DOUBLEWORD_API_KEY": sandbox.api_key, "DOUBLEWORD_BASE_URL": sandbox.base_url}
    (tmp_path / "reviews.csv").write_text("id,text\n1,great\n2,awful\n")
    code, out, err = run("check_setup.py", env=env, cwd=tmp_path)
    doc = json.loads(out)
    assert doc["input"] == {"path": "reviews.csv", "kind": "csv", "columns": ["id", "text"]}
    assert doc["next"] is None  # a template is the user's to write
    assert '--csv reviews.csv --template "...{text}..."' in err, err

    code, out, err = run(
        "create_batch_file.py", "reviews.jsonl", "--csv", "reviews.csv", "--template", "{text}", cwd=tmp_path
    )
    assert code == 0, err  # the built batch file (with its sidecar) is not a second input
    code, out, err = run("check_setup.py", env=env, cwd=tmp_path)
    assert json.loads(out)["input"]["path"] == "reviews.csv", err

    (tmp_path / "reviews.csv").unlink()
    code, out, err = run("check_setup.py", env=env, cwd=tmp_path)
    doc = json.loads(out)
    assert doc["input"] == {"path": "reviews.jsonl", "kind": "batch"}
    assert doc["next"].split()[2:] == ["reviews.jsonl", "--dry-run"]
    code, out, err = run(*doc["next"].split()[1:], env=env, cwd=tmp_path)
    assert code == 0 and json.loads(out)["dry_run"] is True, err

    (tmp_path / "notes.txt").write_text("one\n")
    code, out, err = run("check_setup.py", env=env, cwd=tmp_path)
    doc = json.loads(out)
    assert doc["input"] is None and doc["next"] is None and "several inputs are here" in err


def test_check_setup_says_what_the_server_is(sandbox, hostile_server):
    """The bundled sandbox names itself; another server is 'other' (Doubleword's own API is
    known by its host)."""
    code, doc, err = run_script("check_setup.py", env=sandbox.env())
    assert code == 0 and doc["server"] == "sandbox" and "the bundled local sandbox" in err, err
    hostile_server.reply("GET", "/v1/models", json={"object": "list", "data": [{"id": "m", "object": "model"}]})
    env = dict(sandbox.env(), DOUBLEWORD_BASE_URL=hostile_server.base_url)
    code, doc, err = run_script("check_setup.py", env=env)
    assert code == 0 and doc["server"] == "other" and "neither Doubleword's API nor the bundled sandbox" in err, err


def test_check_setup_lists_models_whose_ids_are_not_strings(sandbox, hostile_server):
    """A server that lists a model id as a number still gets its report (the ids as text, the
    way list_models.py shows them), not an unexpected error."""
    models = [{"id": 7, "object": "model"}, {"id": "m", "object": "model"}, {"object": "model"}]
    hostile_server.reply("GET", "/v1/models", json={"object": "list", "data": models})
    env = dict(sandbox.env(), DOUBLEWORD_BASE_URL=hostile_server.base_url)
    code, doc, err = run_script("check_setup.py", env=env)
    assert code == 0 and doc["models"] == ["7", "m"], err
    assert "2 model(s): 7, m" in err, err


def test_an_old_price_table_says_so_wherever_a_figure_comes_from_it(monkeypatch):
    import datetime

    from _dwbatches.cost import pricing

    class Day(datetime.date):
        today_is = datetime.date.fromisoformat(pricing.PRICES_AS_OF)

        @classmethod
        def today(cls):
            return cls.today_is

    monkeypatch.setattr(pricing.datetime, "date", Day)
    Day.today_is = Day.fromisoformat(pricing.PRICES_AS_OF) + datetime.timedelta(days=pricing.STALE_DAYS)
    assert pricing.table_age() == pricing.PRICES_AS_OF
    Day.today_is += datetime.timedelta(days=1)
    assert pricing.table_age() == f"{pricing.PRICES_AS_OF}, {pricing.STALE_DAYS + 1} days old: prices may have " + (
        "changed; the live ones are on Doubleword's models page"
    )
