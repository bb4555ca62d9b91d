"""Sandbox: --upstream forwards each request to an OpenAI-compatible server (a local stub here)."""

from __future__ import annotations

import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sandbox_helper import CHAT_MODEL, Sandbox, new_api_key


class StubUpstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list = []
    calls: dict = {}

    def log_message(self, format, *args):  # quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        type(self).seen.append((self.path, self.headers.get("Authorization"), body.get("model")))
        count = type(self).calls[prompt] = type(self).calls.get(prompt, 0) + 1
        if prompt == "fail-400":
            self.reply(400, {"error": {"message": "bad request from upstream"}})
        elif prompt == "fail-500" or (prompt == "flaky" and count == 1):
            self.reply(503, {"error": {"message": "overloaded"}})
        elif prompt == "not-json":
            self.reply(200, None, raw=b"plain text answer")
        else:
            self.reply(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi " + prompt}}],
                             "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})  # fmt: skip

    def reply(self, status, obj, raw=None):
        data = raw if raw is not None else json.dumps(obj, indent=2).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def upstream():
    StubUpstream.seen = []
    StubUpstream.calls = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubUpstream)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def item(custom_id, content):
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}]},
    }


def test_upstream_forwarding_and_failures(sandbox_factory, upstream):
    sb = sandbox_factory(
        "--upstream", upstream + "/v1",
        "--upstream-api-key", "upstream-secret",
        "--upstream-model", "local-model",
        "--upstream-retries", "1",
        "--upstream-timeout", "5",
    )  # fmt: skip
    items = [
        item("ok", "hello"),
        item("flaky", "flaky"),
        item("bad", "fail-400"),
        item("down", "fail-500"),
        item("text", "not-json"),
    ]
    batch = sb.submit(items)
    done = sb.wait_batch(batch["id"])
    assert done["request_counts"] == {"total": 5, "completed": 3, "failed": 2}
    out = {line["custom_id"]: line["response"] for line in sb.content(batch["output_file_id"]).lines()}
    assert out["ok"]["status_code"] == 200
    assert out["ok"]["body"]["choices"][0]["message"]["content"] == "hi hello"
    assert out["ok"]["body"]["model"] == "local-model"  # --upstream-model rewrote the body
    assert out["flaky"]["body"]["choices"][0]["message"]["content"] == "hi flaky"  # retried after a 503
    assert out["text"]["body"] == "plain text answer"  # a non-JSON body comes back as a JSON string
    errors = {
        line["custom_id"]: json.loads(line["error"]["message"]) for line in sb.content(batch["error_file_id"]).lines()
    }
    assert errors["bad"]["type"] == "NonRetriableHttpStatus"
    assert errors["bad"]["details"]["status"] == 400
    assert "bad request from upstream" in errors["bad"]["details"]["body"]
    assert errors["down"]["type"] == "RetriableHttpStatus"
    assert errors["down"]["details"]["status"] == 503
    assert StubUpstream.calls["fail-500"] == 2  # one retry
    assert StubUpstream.calls["fail-400"] == 1  # never retried
    assert {path for path, _, _ in StubUpstream.seen} == {"/v1/chat/completions"}
    assert {auth for _, auth, _ in StubUpstream.seen} == {"Bearer upstream-secret"}
    assert sb.get_json(f"batches/{batch['id']}/analytics")["total_prompt_tokens"] == 6  # usage of the two JSON answers


def test_upstream_network_error(sandbox_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    sb = sandbox_factory("--upstream", f"http://127.0.0.1:{closed_port}", "--upstream-retries", "0")
    batch = sb.submit([item("a", "hello")])
    assert sb.wait_batch(batch["id"])["status"] == "failed"
    (error,) = sb.content(batch["error_file_id"]).lines()
    assert json.loads(error["error"]["message"])["type"] == "NetworkError"


def test_a_local_upstream_is_reached_past_a_proxy_in_the_environment(tmp_path, upstream):
    """A model server on this machine (Ollama, vLLM) is reached directly even with
    HTTP_PROXY set, as the client reaches the sandbox: the proxy here is a closed port."""
    env = dict(
        os.environ, HTTP_PROXY="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9", ALL_PROXY="http://127.0.0.1:9"
    )
    sb = Sandbox(
        tmp_path / "data",
        api_key=new_api_key(),
        env=env,
        extra_args=("--upstream", upstream + "/v1", "--upstream-retries", "0"),
    )
    sb.start()
    try:
        batch = sb.submit([item("a", "hello"), item("b", "there")])
        done = sb.wait_batch(batch["id"])
        assert done["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
        out = {line["custom_id"]: line["response"]["body"] for line in sb.content(batch["output_file_id"]).lines()}
        assert out["b"]["choices"][0]["message"]["content"] == "hi there"
    finally:
        sb.stop()
