"""list_models.py: whether each model reasons (the server's supported_reasoning_efforts, else
the known family), and --for FILE, which ranks the models by that file's own estimated cost and
prints the rebuild for the cheapest; run against the sandbox, the rebuild run as printed."""

from __future__ import annotations

import json
import shlex
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from _dwbatches.cost import pricing
from helpers import is_error, ok_json, run

THINKS = "Qwen/Qwen3.5-35B-A3B-FP8"
SMALL = "Qwen/Qwen3.5-4B"  # the lowest input + output price: --sort price puts it first
CHEAP_INPUT = "Qwen/Qwen3-14B-FP8"  # the lowest input price among the models that can stop thinking
ALWAYS = "openai/gpt-oss-20b"
OCR = "allenai/olmOCR-2-7B-1025-FP8"
UNKNOWN = "acme/unknown-1"
EMBED = "Qwen/Qwen3-Embedding-8B"
MODELS = ",".join([THINKS, SMALL, CHEAP_INPUT, ALWAYS, OCR, UNKNOWN])


@pytest.fixture
def offered(sandbox_factory):
    return sandbox_factory("--models", MODELS)


def by_id(doc):
    return {m["id"]: m for m in doc["models"]}


def run_next(command, env):
    """Run a printed `next` command (create_batch_file.py ...) as printed."""
    argv = shlex.split(command)
    assert argv[1].endswith("create_batch_file.py"), command
    return ok_json(run("create_batch_file.py", *argv[2:], env=env))


def test_each_model_says_whether_it_reasons_from_the_server_or_its_family(offered):
    doc = ok_json(run("list_models.py", env=offered.env()))
    models = by_id(doc)
    assert models[THINKS]["reasoning"] == {
        "reasons": True,
        "efforts": ["none", "low", "medium", "high"],
        "can_switch_off": True,
        "source": "server",
    }
    assert models[ALWAYS]["reasoning"] == {
        "reasons": True,
        "efforts": ["low", "medium", "high"],
        "can_switch_off": False,
        "source": "server",
    }
    # the server lists efforts only for models that reason: the others fall back to their family
    for mid in (OCR, EMBED):
        assert models[mid]["reasoning"] == {
            "reasons": False,
            "efforts": [],
            "can_switch_off": None,
            "source": "known family",
        }
    assert models[UNKNOWN]["reasoning"] == {"reasons": None, "efforts": None, "can_switch_off": None, "source": None}


class _OldServer(BaseHTTPRequestHandler):
    """A server that does not know include_reasoning_capabilities: it lists bare models."""

    seen: list = []

    def do_GET(self):  # noqa: N802 (the handler's name)
        self.seen.append(self.path)
        body = json.dumps({"object": "list", "data": [{"id": THINKS, "object": "model"}, {"id": UNKNOWN}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_server_that_omits_the_efforts_falls_back_to_the_known_family(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OldServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {
            "DOUBLEWORD_API_KEY": "sk-old-server-0123456789",
            "DOUBLEWORD_BASE_URL": f"http://127.0.0.1:{server.server_port}/v1",
        }
        models = by_id(ok_json(run("list_models.py", env=env)))
    finally:
        server.shutdown()
        server.server_close()
    assert _OldServer.seen[-1] == "/v1/models?include_reasoning_capabilities=true"
    assert models[THINKS]["reasoning"]["source"] == "known family"
    assert models[THINKS]["reasoning"]["can_switch_off"] is True
    assert models[UNKNOWN]["reasoning"]["reasons"] is None


def build(name, prompt, count, *flags):
    Path(name.replace(".jsonl", ".txt")).write_text((prompt + "\n") * count)
    return ok_json(run("create_batch_file.py", name, "--prompts", name.replace(".jsonl", ".txt"), *flags))


def test_for_ranks_by_the_files_own_tokens_and_the_input_output_ratio_changes_the_winner(offered):
    env = offered.env()
    long_prompt = "Classify the tone of this passage. " + "lorem ipsum dolor sit amet " * 300
    one_word = ("--system", "Answer with one word.")  # the sandbox's model then answers within 5 tokens
    build("long.jsonl", long_prompt, 40, "--max-tokens", "5", "--reasoning", "none", *one_word)
    build("short.jsonl", "Write a short story about a lighthouse.", 40, "--max-tokens", "2000", "--reasoning", "none")
    by_price = ok_json(run("list_models.py", "--chat", "--sort", "price", env=env))
    assert by_price["models"][0]["id"] == SMALL  # the rough order: the lowest input + output price

    doc = ok_json(run("list_models.py", "--for", "long.jsonl", env=env))
    assert doc["cheapest"] == CHEAP_INPUT != by_price["models"][0]["id"]  # long prompts: the input price wins
    report = ok_json(run("validate_batch_file.py", "long.jsonl"))
    assert doc["file"] == {
        "path": "long.jsonl",
        "requests": 40,
        "endpoint": "/v1/chat/completions",
        "input_tokens": report["estimated_input_tokens"],
        "output_tokens": 40 * 5,
        "output_basis": "the sum of max_tokens",
        "documents": False,
    }
    models = by_id(doc)
    for mid, m in models.items():  # every price is the file's own tokens x the price table, in both windows
        est = m["for_file"]
        if est["usd"] is not None:
            for w in ("24h", "1h"):
                cost = pricing.cost(mid, w, report["estimated_input_tokens"], est["output_tokens"])
                assert est["usd"][w] == pricing.money(cost)
    ranked = [m["id"] for m in doc["models"] if m["for_file"]["rank"]]
    assert ranked == [CHEAP_INPUT, SMALL, THINKS, ALWAYS]
    costs = [Decimal(models[mid]["for_file"]["usd"]["24h"]) for mid in ranked]
    assert costs == sorted(costs)
    # gpt-oss cannot stop thinking: its lowest effort's thinking is added, and its rebuild leaves room
    gpt = models[ALWAYS]["for_file"]
    assert gpt["thinking_tokens"] == 40 * 1024 and gpt["output_tokens"] == 40 * (5 + 1024)
    assert gpt["rebuild"] == {"model": ALWAYS, "reasoning": "low", "max_tokens": 1029}
    assert gpt["thinking"] == "always"
    assert models[SMALL]["for_file"]["thinking_tokens"] == 0
    assert models[SMALL]["for_file"]["rebuild"] == {"model": SMALL, "reasoning": "none", "max_tokens": None}
    assert models[THINKS]["reasoning"]["reasons"] is True  # the reasoning models are marked
    # not eligible, with the reason; no price: unranked
    assert models[OCR]["for_file"]["eligible"] is False and "OCR" in models[OCR]["for_file"]["why_not"]
    assert models[EMBED]["for_file"]["why_not"] == "an embeddings model cannot answer /v1/chat/completions requests"
    assert models[UNKNOWN]["for_file"]["eligible"] is True and models[UNKNOWN]["for_file"]["rank"] is None
    assert models[UNKNOWN]["for_file"]["usd"] is None
    assert [m["id"] for m in doc["models"]][len(ranked) :] == [UNKNOWN, EMBED, OCR]
    # the next command rebuilds the file for the winner; the rebuild runs on the sandbox
    assert doc["window"] == "24h" and "--from-batch long.jsonl" in doc["next"]
    rebuilt = run_next(doc["next"], env)
    assert rebuilt["models"] == {CHEAP_INPUT: 40} and rebuilt["warnings"] == []
    assert rebuilt["changes"] == {"model": CHEAP_INPUT, "reasoning": "none"}
    done = ok_json(run("run_batch.py", rebuilt["path"], "--wait", "--timeout", "60", "--interval", "0.2", env=env))
    assert done["succeeded"] == 40

    # short prompts, long answers: the output price wins, in both windows
    for window in ("24h", "1h"):
        doc = ok_json(run("list_models.py", "--for", "short.jsonl", "-w", window, env=env))
        assert doc["cheapest"] == SMALL and doc["window"] == window
        assert doc["next"].endswith(f"short.qwen3.5-4b.jsonl --from-batch short.jsonl -m {SMALL} --reasoning none")


def test_for_a_model_that_always_thinks_prints_a_rebuild_with_room_and_it_runs(sandbox_factory):
    sb = sandbox_factory("--models", f"{ALWAYS},Qwen/Qwen3.5-397B-A17B")
    # long prompts: gpt-oss's input price pays for its thinking
    build("c.jsonl", "Is this spam? " + "Win a prize now! " * 2000, 3, "--max-tokens", "5", "--reasoning", "none")
    doc = ok_json(run("list_models.py", "--for", "c.jsonl", env=sb.env()))
    assert doc["cheapest"] == ALWAYS
    assert doc["next"].endswith(f"-m {ALWAYS} --max-tokens 1029 --reasoning low")
    rebuilt = run_next(doc["next"], sb.env())
    assert rebuilt["warnings"] == []  # room for the thinking: no warning
    assert {r["body"]["reasoning_effort"] for r in map(json.loads, Path(rebuilt["path"]).read_text().splitlines())} == {
        "low"
    }
    done = ok_json(run("run_batch.py", rebuilt["path"], "--wait", "--timeout", "60", "--interval", "0.2", env=sb.env()))
    assert done["succeeded"] == 3


def test_for_an_embeddings_file_or_one_with_images_picks_the_models_that_can_take_it(offered, sandbox_factory):
    Path("t.txt").write_text("one\ntwo\n")
    ok_json(run("create_batch_file.py", "e.jsonl", "--prompts", "t.txt", "--endpoint", "/v1/embeddings"))
    doc = ok_json(run("list_models.py", "--for", "e.jsonl", env=offered.env()))
    models = by_id(doc)
    assert doc["cheapest"] == EMBED and doc["next"].endswith(f"-m {EMBED}")
    assert models[THINKS]["for_file"]["why_not"] == "a chat model cannot serve /v1/embeddings requests"
    assert models[EMBED]["for_file"]["thinking_tokens"] == 0 and models[EMBED]["for_file"]["thinking"] is None
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    line = {
        "custom_id": "scan-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": OCR, "messages": [{"role": "user", "content": [image]}], "max_tokens": 500},
    }
    Path("scan.jsonl").write_text(json.dumps(line) + "\n")
    doc = ok_json(run("list_models.py", "--for", "scan.jsonl", env=offered.env()))
    assert doc["file"]["documents"] is True and by_id(doc)[OCR]["for_file"]["eligible"] is True
    text_only = dict(line, body=dict(line["body"], messages=[{"role": "user", "content": "hi"}]))
    Path("q.jsonl").write_text(json.dumps(text_only) + "\n")
    ocr_only = sandbox_factory("--models", OCR)
    doc = ok_json(run("list_models.py", "--for", "q.jsonl", "--chat", env=ocr_only.env()))
    assert doc["cheapest"] is None and doc["next"] is None  # the only chat model reads documents


def test_for_refuses_a_file_it_cannot_price_before_asking_the_server(offered):
    offered.reset_stats()
    Path("bad.jsonl").write_text('{"custom_id": "a"}\n')
    proc = run("list_models.py", "--for", "bad.jsonl", env=offered.env())
    assert proc.returncode == 2 and is_error(proc.stdout)
    assert (
        "line 1 (custom_id 'a'): missing field(s)" in proc.stderr
        and "bad.jsonl (--for): 1 invalid line(s); nothing was priced" in proc.stderr
    )
    proc = run("list_models.py", "--for", "nothere.jsonl", env=offered.env())
    assert proc.returncode == 2 and "nothere.jsonl (--for): no such file" in proc.stderr
    proc = run("list_models.py", "--for", "bad.jsonl", "--sort", "price", env=offered.env())
    assert proc.returncode == 2 and "not allowed with argument --for" in proc.stderr
    chat = {
        "custom_id": "c",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": THINKS, "messages": [{"role": "user", "content": "hi"}]},
    }
    embed = {"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {"model": EMBED, "input": "hi"}}
    Path("mixed.jsonl").write_text(json.dumps(chat) + "\n" + json.dumps(embed) + "\n")
    proc = run("list_models.py", "--for", "mixed.jsonl", env=offered.env())
    assert proc.returncode == 2 and "holds /v1/embeddings requests and others" in proc.stderr
    assert "GET /v1/models" not in offered.stats()["requests"]
    ok_json(run("list_models.py", env=offered.env()))
    assert offered.stats()["requests"]["GET /v1/models"] == 1
