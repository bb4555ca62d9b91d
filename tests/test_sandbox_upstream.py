"""Sandbox: --upstream forwards each request to an OpenAI-compatible server (a local stub here).

The upstream key goes to the upstream only: a redirect is never followed (urllib would send the
request again, Authorization included, to the host it names), and a plain-http upstream on
another machine is refused at start while there is a key (unless
--upstream-allow-insecure-http says so).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sandbox_helper import CHAT_MODEL, SERVER_SCRIPT, Sandbox, new_api_key


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


# -- the upstream key goes to the upstream only ------------------------------------------------

UPSTREAM_KEY = "sk-upstream-" + "u" * 36
REDIRECTS = (301, 302, 303, 307, 308)


@pytest.fixture
def upstream_sandbox(tmp_path):
    """start(upstream) -> a sandbox forwarding to ``upstream`` with UPSTREAM_KEY (given in its
    environment, as the help advises: a flag shows in the process list); stopped afterwards."""
    started = []

    def start(upstream: str, *args: str) -> Sandbox:
        env = dict(os.environ, DW_SANDBOX_UPSTREAM_API_KEY=UPSTREAM_KEY)
        sb = Sandbox(tmp_path / f"data{len(started)}", api_key=new_api_key(), env=env,
                     extra_args=("--upstream", upstream, *args))  # fmt: skip
        started.append(sb)
        return sb.start()

    yield start
    for sb in started:
        sb.stop()


def test_upstream_redirects_are_never_followed(upstream_sandbox, hostile_factory):
    """Each redirect status once, to another host (a second server, named ``localhost``): it
    gets nothing, the key least of all; each request fails with the redirect, unretried."""
    upstream, elsewhere = hostile_factory(), hostile_factory()
    target = elsewhere.url("/v1/chat/completions", host="localhost")
    for status in REDIRECTS:
        upstream.redirect("/v1/chat/completions", target, status=status, times=1)
    elsewhere.reply(json={"choices": [{"message": {"role": "assistant", "content": "stolen"}}]})
    sb = upstream_sandbox(upstream.base_url, "--upstream-retries", "2")
    batch = sb.submit([item(f"r{i}", f"question {i}") for i in range(len(REDIRECTS))])
    done = sb.wait_batch(batch["id"])
    assert done["request_counts"] == {"total": 5, "completed": 0, "failed": 5}
    failures = [json.loads(line["error"]["message"]) for line in sb.content(batch["error_file_id"]).lines()]
    assert {f["type"] for f in failures} == {"UpstreamRedirect"}
    assert sorted(f["details"]["status"] for f in failures) == list(REDIRECTS)
    assert {f["details"]["location"] for f in failures} == {target}
    assert elsewhere.requests == []  # nothing followed the redirect
    posts = upstream.seen("POST", "/v1/chat/completions")
    assert len(posts) == 5  # one each: a redirect is not retried
    assert {p.header("Authorization") for p in posts} == {f"Bearer {UPSTREAM_KEY}"}
    assert UPSTREAM_KEY not in sb.log_text()


def start_server(tmp_path, *args: str, key: str = UPSTREAM_KEY) -> subprocess.CompletedProcess:
    """The server with these arguments, the upstream key in its environment; one that starts is
    stopped at its ready line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DW_SANDBOX_")}
    if key:
        env["DW_SANDBOX_UPSTREAM_API_KEY"] = key
    cmd = [sys.executable, str(SERVER_SCRIPT), "--port", "0", "--data-dir", str(tmp_path / "d"), *args]
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        ready = proc.stdout.readline()
        if ready:
            proc.terminate()
        out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(cmd, proc.returncode, ready + out, err)


@pytest.mark.parametrize(
    "upstream, words",
    [
        ("http://upstream.example/v1", "refusing a plain-http --upstream to 'upstream.example', another machine"),
        ("http://10.1.2.3:8000/v1", "refusing a plain-http --upstream to '10.1.2.3', another machine"),
        ("http://models.localhost:8000/v1", "refusing a plain-http --upstream to 'models.localhost'"),
        (f"https://me:{UPSTREAM_KEY}@upstream.example/v1", "--upstream https://***@upstream.example/v1 has a user"),
        ("ftp://upstream.example/v1", "--upstream 'ftp://upstream.example/v1' is not an http(s) URL"),
        ("upstream.example:8000", "is not an http(s) URL"),
    ],
)
def test_an_upstream_the_key_must_not_go_to_is_refused_at_start(tmp_path, upstream, words):
    proc = start_server(tmp_path, "--upstream", upstream)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert words in proc.stderr
    assert UPSTREAM_KEY not in proc.stderr


@pytest.mark.parametrize(
    "args, key",
    [
        (["--upstream", "http://upstream.example/v1", "--upstream-allow-insecure-http"], UPSTREAM_KEY),
        (["--upstream", "http://upstream.example/v1"], ""),  # no key: nothing secret travels
        (["--upstream", "https://upstream.example/v1"], UPSTREAM_KEY),
        (["--upstream", "http://127.0.0.1:9/v1"], UPSTREAM_KEY),
        (["--upstream", "http://[::1]:9/v1"], UPSTREAM_KEY),
    ],
    ids=["allowed-by-flag", "without-a-key", "https", "loopback", "loopback-v6"],
)
def test_an_upstream_the_key_may_go_to_starts(tmp_path, args, key):
    proc = start_server(tmp_path, *args, key=key)
    assert json.loads(proc.stdout.splitlines()[0])["base_url"].startswith("http://127.0.0.1:"), proc.stderr
