"""tests/hostile_server.py, the programmable server other tests stand attackers and odd
upstreams on: it answers as told and records what reached it."""

from __future__ import annotations

import http.client
import json

import pytest
import requests


def test_rules_answer_in_order_wear_out_and_record_every_request(hostile_server):
    hostile_server.reply("POST", "/v1/files", 429, headers={"Retry-After": "1"}, body="slow down", times=1)
    hostile_server.reply("POST", "/v1/files", json={"id": "f1"})
    hostile_server.redirect("/old", "http://elsewhere.example/new", status=308)
    base = hostile_server.base_url
    first = requests.post(f"{base}/files", data=b"abc", headers={"Authorization": "Bearer k"}, timeout=10)
    assert (first.status_code, first.text, first.headers["Retry-After"]) == (429, "slow down", "1")
    second = requests.post(f"{base}/files?purpose=batch", data=b"def", timeout=10)
    assert second.status_code == 200 and second.json() == {"id": "f1"}
    assert second.headers["Content-Type"] == "application/json"
    moved = requests.get(hostile_server.url("/old/x"), allow_redirects=False, timeout=10)
    assert (moved.status_code, moved.headers["Location"]) == (308, "http://elsewhere.example/new")
    missing = requests.delete(f"{base}/batches/1", timeout=10)
    assert (missing.status_code, missing.text) == (404, "no reply programmed")
    seen = hostile_server.seen("POST", "/v1/files")
    assert [(r.body, r.header("authorization")) for r in seen] == [(b"abc", "Bearer k"), (b"def", None)]
    assert seen[1].target == "/v1/files?purpose=batch" and seen[1].path == "/v1/files"
    assert [r.method for r in hostile_server.requests] == ["POST", "POST", "GET", "DELETE"]


def test_it_records_what_a_proxy_is_sent_and_can_drop_a_connection(hostile_server):
    hostile_server.reply("GET", "/v1/models", json={"data": []})
    hostile_server.reply("*", "/v1/batches", drop=True)
    proxies = {"http": hostile_server.url(), "https": hostile_server.url()}
    res = requests.get("http://api.example/v1/models", proxies=proxies, timeout=10)
    assert res.json() == {"data": []}
    assert hostile_server.requests[-1].target == "http://api.example/v1/models"
    with pytest.raises(requests.exceptions.ProxyError):
        requests.get("https://api.example/v1/models", proxies=proxies, timeout=10)
    assert (hostile_server.requests[-1].method, hostile_server.requests[-1].target) == ("CONNECT", "api.example:443")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{hostile_server.base_url}/batches", timeout=10)
    conn = http.client.HTTPConnection("127.0.0.1", hostile_server.port, timeout=10)
    conn.putrequest("POST", "/v1/models")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    conn.send(b'3\r\n{"a\r\n4\r\n":1}\r\n0\r\n\r\n')
    assert conn.getresponse().status == 404  # POST: no rule for it
    conn.close()
    assert json.loads(hostile_server.requests[-1].body) == {"a": 1}
    hostile_server.clear()
    assert (
        hostile_server.requests == []
        and requests.get(f"{hostile_server.base_url}/models", timeout=10).status_code == 404
    )
