"""The shared client core: config, retries, Retry-After, error mapping, redaction, streaming.

HTTP sequences are scripted with ``responses``; the end-to-end behaviour against the
sandbox is covered by the script tests.
"""

from __future__ import annotations

import json
import os

import pytest
import requests
import responses
from _dwbatches.core import clock, config, errors, events, output
from _dwbatches.core import http as dwhttp
from helpers import is_error
from responses import matchers
from responses.registries import OrderedRegistry

BASE = "https://api.example.test/v1"
KEY = "sk-core-test-" + "Q" * 34
BID = "6f1c2e0a-1b2c-4d5e-8f90-0123456789ab"


@pytest.fixture(autouse=True)
def _loud():
    output.set_quiet(False)
    yield
    output.set_quiet(False)


@pytest.fixture
def sleeps(monkeypatch):
    calls = []
    monkeypatch.setattr(clock, "sleep", lambda s: calls.append(s))
    return calls


@pytest.fixture
def client(monkeypatch):
    monkeypatch.setenv("DOUBLEWORD_API_KEY", KEY)
    cfg = config.load_config(base_url=BASE)
    return dwhttp.Client(cfg, max_retries=3)


# -- config ---------------------------------------------------------------------------------


def test_missing_key_is_a_config_error_naming_the_fix(monkeypatch):
    monkeypatch.delenv("DOUBLEWORD_API_KEY", raising=False)
    with pytest.raises(errors.ConfigError) as ei:
        config.load_config()
    assert ei.value.exit_code == 3
    assert "DOUBLEWORD_API_KEY" in ei.value.message and ".env" in ei.value.hint


def test_dotenv_in_cwd_is_read_but_never_overrides_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "DOUBLEWORD_API_KEY=sk-from-dotenv-xxxxxxxx\nDOUBLEWORD_BASE_URL=http://127.0.0.1:9/v1\n"
    )
    cfg = config.load_config()
    assert cfg.api_key == "sk-from-dotenv-xxxxxxxx"
    assert cfg.key_source.startswith(".env at ")
    assert cfg.base_url == "http://127.0.0.1:9/v1"
    monkeypatch.setenv("DOUBLEWORD_API_KEY", "sk-from-environment-yyy")
    # the environment's key never goes to the server the .env names
    with pytest.raises(errors.ConfigError) as ei:
        config.load_config()
    assert ei.value.exit_code == 3 and "refusing to send the environment's key" in ei.value.message
    monkeypatch.setenv("DOUBLEWORD_BASE_URL", "http://127.0.0.1:8/v1")
    cfg = config.load_config()
    assert cfg.api_key == "sk-from-environment-yyy" and cfg.key_source == "environment"
    assert cfg.base_url == "http://127.0.0.1:8/v1" and cfg.base_url_source == "environment"
    # the flag beats both
    assert config.load_config(base_url="https://x.test/v1/").base_url == "https://x.test/v1"
    assert "sk-" not in repr(cfg)


@pytest.mark.parametrize("url", ["http://api.doubleword.ai/v1", "http://10.0.0.5:8000/v1", "http://example.com"])
def test_plain_http_to_a_remote_host_is_refused(url, monkeypatch):
    monkeypatch.setenv("DOUBLEWORD_API_KEY", KEY)
    with pytest.raises(errors.ConfigError) as ei:
        config.load_config(base_url=url)
    assert ei.value.exit_code == 3 and "--allow-insecure-http" in ei.value.hint
    assert config.load_config(base_url=url, allow_insecure_http=True).base_url == url.rstrip("/")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8089/v1", "http://localhost:1/v1", "http://[::1]:5/v1", "https://api.doubleword.ai/v1"]
)
def test_loopback_http_and_https_are_allowed(url, monkeypatch):
    monkeypatch.setenv("DOUBLEWORD_API_KEY", KEY)
    assert config.load_config(base_url=url).base_url == url


def test_not_a_url_is_refused(monkeypatch):
    monkeypatch.setenv("DOUBLEWORD_API_KEY", KEY)
    with pytest.raises(errors.ConfigError):
        config.load_config(base_url="ftp://x/v1")


# -- retries --------------------------------------------------------------------------------


@responses.activate(registry=OrderedRegistry)
def test_get_retries_5xx_then_succeeds(client, sleeps, capsys):
    """Each retry is an event (the client prints nothing itself)."""
    url = f"{BASE}/batches/{BID}"
    responses.get(url, status=500, body="boom")
    responses.get(url, status=502, body="bad gateway")
    responses.get(
        url,
        json={"id": BID, "status": "completed"},
        match=[matchers.header_matcher({"Authorization": f"Bearer {KEY}"})],
    )
    with events.capture() as heard:
        assert client.get_batch(BID)["status"] == "completed"
    assert len(sleeps) == 2 and all(0 < s <= dwhttp.MAX_BACKOFF for s in sleeps)
    said = heard.of(events.STEP)
    assert len(said) == 2 and all(s.startswith("retrying GET /batches") for s in said), said
    assert "HTTP 500" in said[0] and "HTTP 502" in said[1]
    assert KEY not in "".join(said)
    assert capsys.readouterr().err == ""


@responses.activate(registry=OrderedRegistry)
def test_retry_after_header_wins_over_body(client, sleeps):
    url = f"{BASE}/batches/{BID}"
    responses.get(
        url,
        status=429,
        headers={"Retry-After": "7"},
        json={"error": "too_many_requests", "message": "slow down", "retry_after_seconds": 30},
    )
    responses.get(url, status=503, json={"error": "service_unavailable", "message": "x", "retry_after_seconds": 4})
    responses.get(url, json={"id": BID, "status": "validating"})
    client.get_batch(BID)
    assert sleeps == [7.0, 4.0]


@responses.activate(registry=OrderedRegistry)
def test_retries_give_up_with_exit_1_and_the_server_message(client, sleeps):
    url = f"{BASE}/batches/{BID}"
    for _ in range(4):
        responses.get(
            url,
            status=503,
            json={"error": "service_unavailable", "message": "pool exhausted", "retry_after_seconds": 1},
        )
    with pytest.raises(errors.APIStatusError) as ei:
        client.get_batch(BID)
    assert ei.value.exit_code == 1 and ei.value.status == 503
    assert "pool exhausted" in ei.value.message
    assert len(sleeps) == 3


@pytest.mark.parametrize(
    "status,code", [(400, 2), (401, 3), (403, 3), (402, 3), (404, 4), (413, 2), (422, 2), (409, 2)]
)
@responses.activate
def test_plain_text_errors_map_to_exit_codes(client, sleeps, status, code):
    responses.get(
        f"{BASE}/batches/{BID}", status=status, body="Batch not found or plain text reason", content_type="text/plain"
    )
    with pytest.raises(errors.APIStatusError) as ei:
        client.get_batch(BID)
    assert ei.value.exit_code == code
    assert "plain text reason" in ei.value.message
    assert sleeps == []


@responses.activate
def test_openai_error_envelope_is_read(client):
    responses.get(
        f"{BASE}/models", status=401, json={"error": {"message": "Invalid API key", "type": "invalid_request_error"}}
    )
    with pytest.raises(errors.APIStatusError) as ei:
        client.list_models()
    assert "Invalid API key" in ei.value.message and ei.value.exit_code == 3


@responses.activate(registry=OrderedRegistry)
def test_create_batch_is_not_retried_after_a_5xx(client, sleeps):
    responses.post(f"{BASE}/batches", status=500, body="internal")
    with pytest.raises(errors.APIStatusError) as ei:
        client.create_batch(BID, "24h", {})
    assert len(responses.calls) == 1 and sleeps == []
    assert "may or may not" in ei.value.hint


@responses.activate(registry=OrderedRegistry)
def test_create_batch_is_retried_after_429_which_means_not_processed(client, sleeps):
    responses.post(f"{BASE}/batches", status=429, headers={"Retry-After": "2"}, json={"error": "too_many_requests"})
    responses.post(f"{BASE}/batches", status=201, json={"id": BID, "status": "validating"})
    assert client.create_batch(BID, "24h", {"a": "b"})["id"] == BID
    assert sleeps == [2.0]


@responses.activate(registry=OrderedRegistry)
def test_create_batch_after_a_read_timeout_is_not_retried(client, sleeps):
    responses.post(f"{BASE}/batches", body=requests.exceptions.ReadTimeout("Read timed out"))
    with pytest.raises(errors.APIConnectionError) as ei:
        client.create_batch(BID, "24h", {})
    assert ei.value.sent is True and len(responses.calls) == 1 and sleeps == []


def test_connection_refused_is_retried_even_for_creating_requests(sleeps, monkeypatch):
    monkeypatch.setenv("DOUBLEWORD_API_KEY", KEY)
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    c = dwhttp.Client(config.load_config(base_url=f"http://127.0.0.1:{port}/v1"), max_retries=2)
    with pytest.raises(errors.APIConnectionError) as ei:
        c.create_batch(BID, "24h", {})
    assert ei.value.sent is False and len(sleeps) == 2


def test_non_uuid_ids_are_refused_locally(client):
    with pytest.raises(errors.UsageError):
        client.get_batch("batch_abc123")
    with pytest.raises(errors.UsageError):
        client.get_file("file-abc")


# -- timeouts -------------------------------------------------------------------------------


def test_every_call_has_a_timeout(client, monkeypatch):
    seen = []
    real = requests.Session.request

    def spy(self, method, url, **kw):
        seen.append(kw.get("timeout"))
        raise requests.exceptions.ConnectTimeout("no")

    monkeypatch.setattr(requests.Session, "request", spy)
    monkeypatch.setattr(clock, "sleep", lambda s: None)
    for call in (
        lambda: client.get_batch(BID),
        lambda: client.list_batches(),
        lambda: client.create_batch(BID, "24h", {}),
    ):
        with pytest.raises(errors.APIConnectionError):
            call()
    assert seen and all(isinstance(t, tuple) and all(t) for t in seen)
    monkeypatch.setattr(requests.Session, "request", real)


# -- streaming ------------------------------------------------------------------------------


def test_multipart_body_streams_a_byte_range_with_its_own_content_type(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_bytes(b"line-one\nline-two\nline-three\n")
    mp = dwhttp.MultipartFile(str(p), 'a"b.jsonl', {"purpose": "batch"}, start=9, end=18)
    data = b"".join(iter(lambda: mp.read(5), b""))
    assert len(data) == len(mp)
    assert b'name="purpose"\r\n\r\nbatch\r\n' in data
    assert b"Content-Type: application/jsonl\r\n\r\nline-two\n\r\n--" in data
    assert b"line-one" not in data and b"line-three" not in data
    assert b'filename="a_b.jsonl"' in data
    assert data.endswith(f"--{mp.boundary}--\r\n".encode())
    mp.close()


@responses.activate
def test_upload_sends_a_multipart_body_with_content_length(client, tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_bytes(b'{"a":1}\n' * 1000)

    def check(req):
        body = req.body
        raw = b"".join(iter(lambda: body.read(4096), b"")) if hasattr(body, "read") else body
        assert int(req.headers["Content-Length"]) == len(raw)
        assert req.headers["Content-Type"].startswith("multipart/form-data; boundary=")
        return 201, {}, json.dumps({"id": BID, "bytes": 8000})

    responses.add_callback(responses.POST, f"{BASE}/files", callback=check)
    assert client.upload_file(str(p))["id"] == BID


@responses.activate
def test_stream_content_drops_a_partial_last_line(client):
    responses.get(
        f"{BASE}/files/{BID}/content",
        body=b'{"custom_id":"a"}\n{"custom_id":"b"}\n{"custom_',
        headers={"X-Last-Line": "3", "X-Incomplete": "false"},
    )
    got = []
    res = client.stream_content(BID, 0, got.append)
    assert got == [b'{"custom_id":"a"}', b'{"custom_id":"b"}'] and res.lines == 2
    assert res.dropped_partial and res.last_line == 3 and res.incomplete is False


# -- output ---------------------------------------------------------------------------------


def test_the_key_is_redacted_from_everything_printed(client, capsys):
    output.narrate(f"oops {KEY}")
    output.emit({"k": KEY})
    rc = output.report_error(errors.DWError(f"bad {KEY}", hint=KEY))
    out, err = capsys.readouterr()
    assert KEY not in out and KEY not in err and "<redacted>" in err and rc == 1


def test_run_maps_errors_and_unexpected_exceptions(capsys):
    assert output.run(lambda: (_ for _ in ()).throw(errors.ConfigError("no key", hint="set it"))) == 3
    out, err = capsys.readouterr()
    assert is_error(out) and "error: no key" in err and "hint: set it" in err

    def boom():
        raise ValueError("weird")

    assert output.run(boom) == 1
    assert "unexpected ValueError" in capsys.readouterr().err


def test_exit_code_table_is_in_every_parser():
    p = output.make_parser("Title.\n\nexamples:\n  x")
    assert "exit codes:" in p.format_help() and "130" in p.format_help()
    assert os.environ.get("DOUBLEWORD_API_KEY") is None


@responses.activate
def test_rates_and_etas_use_the_servers_clock_not_this_machines(client):
    """With this machine's clock an hour behind, a batch that started 20 s ago by the server's
    clock (its in_progress_at, its Date header) is still seen as 20 s old."""
    import email.utils
    import time

    from _dwbatches.jobs import jobstatus

    server_now = time.time() + 3600
    batch = {"id": BID, "status": "in_progress", "in_progress_at": int(server_now) - 20}
    batch["request_counts"] = {"total": 200, "completed": 100, "failed": 0}
    date = email.utils.formatdate(server_now, usegmt=True)
    responses.get(f"{BASE}/batches/{BID}", json=batch, headers={"Date": date})
    client.get_batch(BID)
    assert abs(client.server_now() - server_now) < 2
    eta = jobstatus.rate_and_eta([batch], now=client.server_now())["eta_seconds"]
    assert 15 <= eta <= 25  # 100 done in 20 s, 100 to go; the local clock would say about 0 s


def test_the_server_kind_comes_from_the_host_or_the_sandboxs_own_name(monkeypatch):
    monkeypatch.setenv("DOUBLEWORD_API_KEY", KEY)
    real = dwhttp.Client(config.load_config(base_url="https://api.doubleword.ai/v1"))
    assert real.server_kind() == "doubleword"
    other = dwhttp.Client(config.load_config(base_url="https://llm.example.com/v1"))
    assert other.server_kind() == "other"
    other.server_software = "DoublewordSandbox/1.0.0"
    assert other.server_kind() == "sandbox"
