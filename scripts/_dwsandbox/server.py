"""The server process: the HTTP server, the command line (flags, help, exit codes), the
ready line on stdout and a clean shutdown on SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import sys
import threading
from http.server import ThreadingHTTPServer
from typing import Any

# Standard library only as well: platform differences (Windows, macOS, Linux) live there.
from _dwbatches.core import compat, urls

from . import __version__
from .app import App
from .backends import upstream_refusal
from .config import MAX_BODY_BYTES, MAX_FILE_BYTES, MAX_REQUESTS_PER_FILE, Config, log
from .faults import Faults
from .routing import Handler


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = compat.reuse_address()  # never on Windows: a busy port must stay busy
    request_queue_size = 128

    def __init__(self, address: tuple, handler: type, app: App, family: int = socket.AF_INET) -> None:
        self.address_family = family
        self.app = app
        super().__init__(address, handler)

    def server_bind(self) -> None:
        compat.exclusive_address(self.socket)
        super().server_bind()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout)):
            return
        super().handle_error(request, client_address)


EPILOG = """\
API (relative to the printed base_url; /ai/v1/... is accepted too):
  POST   /files                         upload JSONL (multipart: file, purpose=batch,
                                        expires_after[anchor], expires_after[seconds]) -> 201
  GET    /files                         ?after&limit&order&purpose&search
  GET    /files/{id}                    DELETE /files/{id}
  GET    /files/{id}/content            ?skip&limit&search; X-Incomplete, X-Last-Line
  GET    /files/{id}/cost-estimate      ?completion_window=24h|1h
  POST   /batches                       {input_file_id, endpoint, completion_window, metadata} -> 201
  GET    /batches                       ?after&limit&status&search&completion_window&include
  GET    /batches/{id}                  DELETE /batches/{id} -> 204
  POST   /batches/{id}/cancel           POST /batches/{id}/retry
  POST   /batches/{id}/retry-requests   {"request_ids": [...]}
  GET    /batches/{id}/results          GET /batches/{id}/analytics
  GET    /models

Sandbox-only endpoints (same auth; not part of the real API, never counted in stats):
  GET  /_sandbox/faults         read the fault document (plus remaining counters)
  PUT  /_sandbox/faults         replace the fault document (JSON body; {} clears it)
  GET  /_sandbox/stats          {"requests": {"POST /v1/files": 3, ...}, "files": N,
                                 "batches": N, "uploads_received": N}
                                requests: API calls by method + route template (faulted
                                ones included); files: stored input files; batches: not
                                deleted; uploads_received: uploads whose body was read
  POST /_sandbox/reset-stats    zero the request counters and uploads_received
  POST /_sandbox/reset          forget every file, batch and request, restore the faults
                                given at start, zero the counters (a fresh server, without
                                a restart; the test suite shares one server this way)

Fault document (all fields optional; --faults, DW_SANDBOX_FAULTS or PUT /_sandbox/faults):
  {"fail_rate": 0.2,                    fraction of requests that fail (hash of request id)
   "fail_custom_ids": ["req-3"],        these custom_ids always fail
   "fail_status": 500,                  500 -> RetriableHttpStatus, 400 -> NonRetriableHttpStatus
   "http": [{"method": "POST", "path": "/v1/files", "status": 429, "times": 2,
             "retry_after": 1, "retry_after_header": true, "after_body": false,
             "message": "optional body text"},
            {"path": "/v1/batches", "drop": true, "after_body": true, "times": 1}],
   "drop_content_after_lines": 5, "drop_content_times": 1,
   "duplicate_output_line": true, "late_line_after_cancel": true,
   "extra_latency": 2.0, "extra_latency_paths": ["/v1/batches"],
   "slow_upload_read": {"after_bytes": 1048576, "pause": 5},
   "hold_create": {"seconds": 8, "visible": "after", "times": 1},
   "bad_answers": {"req-1": "empty", "req-2": "filtered"},
   "billed_price_factor": 0.5, "pause_requests": true}
  An http rule answers instead of the route ("path" is a prefix, "*" matches all; without
  "times" it never wears out). With "after_body": true the route runs first and its reply is
  replaced. "drop": true closes the connection without a reply.
  drop_content_after_lines: the next drop_content_times (default 1) unlimited content
  downloads send N lines plus half a line, then close without the final chunk.
  duplicate_output_line: output-file downloads repeat their first line.
  late_line_after_cancel: after a cancel, one in-flight request still completes (true: after
  --latency; a number: after that many seconds).
  extra_latency: seconds before every /v1 reply (only under extra_latency_paths if given).
  slow_upload_read: pause reading an upload body once, after after_bytes bytes.
  hold_create: the next "times" (default: every) valid POST /batches take "seconds" more.
  "visible": "after" (default): the batch is stored when the hold ends, so a look-up meanwhile
  finds nothing (a create the server is still working on); "before": it is stored and listed
  at once and only the reply waits. The server finishes the create even if the client is gone.
  bad_answers: the built-in model's next answer to each custom_id is bad, once: "empty"
  (content ""), "filtered" (finish_reason content_filter), "invalid_json" (text that is not
  JSON), "missing_fields" ({} where a schema asked for fields); HTTP 200 all the same.
  billed_price_factor: analytics' total_cost is the list cost (total_list_cost) times this
  (as a discount or a changed price would make it; default 1).
  pause_requests: while true, no request of any batch starts (those running finish), so a
  batch stays unfinished for as long as a test needs; false or {} lets them run again.

The built-in model answers with an echo of the prompt ("Echo: <prompt> [<hash>]"), as a JSON
object when the request asks for JSON (a schema's required fields filled), and with one word
(the prompt's first) when the system prompt asks for "one word".

Reasoning models: the built-in chat models of the reasoning families (Qwen3, Qwen3.5,
gpt-oss; not the Instruct ones) think --reasoning-tokens tokens before they answer (a quarter
at reasoning_effort low, four times at high; none at "none" or chat_template_kwargs
{"enable_thinking": false}, where the family can switch it off). The thinking counts against
max_tokens / max_completion_tokens / max_output_tokens: a limit at or below it gives content
null, reasoning_content, finish_reason "length"; a limit that cuts the answer gives the cut
text and "length". usage.completion_tokens_details.reasoning_tokens counts it, and so does
analytics' total_reasoning_tokens. GET /models?include_reasoning_capabilities=true lists
supported_reasoning_efforts; an effort a model cannot take is refused on upload (400).

Security: every request needs the key (the random one of the ready line unless --api-key or
DW_SANDBOX_API_KEY gives one; --no-auth accepts any), and a Host header that is loopback or
the --host address (or an --allow-host name). The data dir is created 0700, its database
0600. Calls to --upstream never follow a redirect (a redirect fails that request), and a
plain-http --upstream on another machine is refused when there is an upstream key.

Exit codes:
  0  clean shutdown (SIGTERM or SIGINT)
  2  bad arguments, invalid fault document, an --upstream refused (user info in it; plain http
     to another machine with a key), data dir not usable or port not free

Examples:
  python3 scripts/sandbox_server.py
  DW_SANDBOX_API_KEY=sk-test-123 python3 scripts/sandbox_server.py --port 0 --data-dir /tmp/sb --latency 0.05
  python3 scripts/sandbox_server.py --upstream http://localhost:11434 --upstream-model llama3.2
  python3 scripts/sandbox_server.py --faults '{"fail_rate": 0.1}' --window-scale 0.001
  DOUBLEWORD_BASE_URL=http://127.0.0.1:8089/v1 DOUBLEWORD_API_KEY=<api_key of the ready line> <client>
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sandbox_server.py",
        description="Local sandbox of the Doubleword Batch API (files, batches, content streaming, "
        "cancel/retry), with a deterministic built-in model and fault injection. "
        "Prints one JSON line {base_url, port, pid, data_dir, api_key} on stdout when ready (api_key: "
        "the random key it requires when none was given; null otherwise).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("server")
    g.add_argument("--host", default=None, help="bind address (default 127.0.0.1; non-loopback prints a warning)")
    g.add_argument("--port", type=int, default=8089, help="port (default 8089; 0 picks a free port)")
    g.add_argument("--data-dir", default=".sandbox", help="directory for the SQLite state (default .sandbox)")
    g.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' (better: env DW_SANDBOX_API_KEY, which other users "
        "cannot see in the process list); default: a random key, printed in the ready line",
    )
    g.add_argument(
        "--no-auth",
        action="store_true",
        help="accept every request without a key (anyone on this machine can then read the stored prompts "
        "and spend through --upstream)",
    )
    g.add_argument(
        "--allow-host",
        action="append",
        metavar="NAME",
        help="also answer requests whose Host header names NAME (this machine's name or address when "
        "--host binds beyond loopback); loopback names and addresses and the --host address are always "
        "answered, any other Host gets 421 (DNS rebinding). Repeatable",
    )
    g.add_argument("--forbidden-key", default=None, help="a key that is answered with 403 (wrong key purpose)")
    g.add_argument("-v", "--verbose", action="store_true", help="log each request line on stderr")
    g = p.add_argument_group("models and limits")
    g.add_argument("--models", default=None, help="comma-separated chat models (replaces the built-in list)")
    g.add_argument("--embedding-models", default=None, help="comma-separated embedding models")
    g.add_argument(
        "--max-file-bytes", type=int, default=MAX_FILE_BYTES, help=f"upload size limit (default {MAX_FILE_BYTES})"
    )
    g.add_argument(
        "--max-requests-per-file",
        type=int,
        default=MAX_REQUESTS_PER_FILE,
        help=f"lines per file (default {MAX_REQUESTS_PER_FILE}; 0 = no limit)",
    )
    g.add_argument(
        "--max-body-bytes",
        type=int,
        default=MAX_BODY_BYTES,
        help=f"request body limit (default {MAX_BODY_BYTES // (1024 * 1024)} MiB)",
    )
    g.add_argument(
        "--reasoning-tokens",
        type=int,
        default=64,
        help="tokens a reasoning model thinks before it answers, at medium effort (default 64; 0: none thinks)",
    )
    g = p.add_argument_group("processing")
    g.add_argument("--validating-delay", type=float, default=0.1, help="seconds a new batch stays validating (0.1)")
    g.add_argument("--finalizing-delay", type=float, default=0.05, help="seconds a batch stays finalizing (0.05)")
    g.add_argument("--concurrency", type=int, default=8, help="worker threads (default 8)")
    g.add_argument("--latency", type=float, default=0.0, help="seconds per request (default 0)")
    g.add_argument(
        "--latency-jitter", type=float, default=0.0, help="extra 0..J seconds per request (stable per request)"
    )
    g.add_argument("--window-scale", type=float, default=1.0, help="multiply completion windows (e.g. 0.001)")
    g.add_argument(
        "--faults", default=None, help="fault document as JSON, or @path to a JSON file (env DW_SANDBOX_FAULTS)"
    )
    g = p.add_argument_group("upstream (instead of the built-in model)")
    g.add_argument("--upstream", default=None, help="OpenAI-compatible base URL; each line is POSTed to URL + line url")
    g.add_argument(
        "--upstream-api-key", default=None, help="Bearer key for the upstream (or env DW_SANDBOX_UPSTREAM_API_KEY)"
    )
    g.add_argument("--upstream-model", default=None, help="replace body.model with this name when forwarding")
    g.add_argument("--upstream-timeout", type=float, default=300.0, help="seconds per upstream call (default 300)")
    g.add_argument("--upstream-retries", type=int, default=3, help="retries for 5xx/429/408/404 (default 3)")
    g.add_argument(
        "--upstream-allow-insecure-http",
        action="store_true",
        help="allow a plain-http --upstream on another machine with an upstream key (the key travels "
        "unencrypted; refused otherwise). Redirects from the upstream are never followed",
    )
    p.add_argument("--version", action="version", version="%(prog)s " + __version__)
    return p


def main(argv: list | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.api_key == "":
        log("--api-key is empty; to accept requests without a key, pass --no-auth")
        return 2
    if args.no_auth and args.api_key:
        log("--api-key and --no-auth contradict each other; pass one of them")
        return 2
    host = args.host or "127.0.0.1"
    if not urls.is_loopback(host):
        log(f"WARNING: binding {host} exposes the sandbox beyond this machine")
    if args.no_auth:
        log("WARNING: --no-auth: every request is accepted without a key")
    faults = Faults()
    raw_faults = args.faults if args.faults is not None else os.environ.get("DW_SANDBOX_FAULTS")
    if raw_faults:
        try:
            if raw_faults.startswith("@"):
                with open(raw_faults[1:], encoding="utf-8") as fh:
                    raw_faults = fh.read()
            faults.replace(json.loads(raw_faults))
        except (OSError, ValueError) as err:
            log(f"invalid fault document: {err}")
            return 2
    args.host = host
    cfg = Config(args)
    if cfg.upstream:
        refusal = upstream_refusal(cfg.upstream, bool(cfg.upstream_api_key), cfg.upstream_allow_insecure_http)
        if refusal:
            log(refusal)
            return 2
    try:
        app = App(cfg, faults)
    except (OSError, sqlite3.Error) as err:
        log(f"cannot open data dir {cfg.data_dir}: {err}")
        return 2
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        server = SandboxHTTPServer((host, cfg.port), Handler, app, family)
    except OSError as err:
        log(f"cannot bind {host}:{cfg.port}: {err}")
        return 2
    port = server.server_address[1]
    app.engine.start()
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)  # both exist on Windows too (SIGHUP and the rest do not)
    signal.signal(signal.SIGINT, on_signal)
    serve = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    serve.start()
    url_host = host
    if host in ("0.0.0.0", ""):
        url_host = "127.0.0.1"
    elif host == "::":
        url_host = "[::1]"
    elif ":" in host:
        url_host = f"[{host}]"
    ready = {
        "base_url": f"http://{url_host}:{port}/v1",
        "port": port,
        "pid": os.getpid(),
        "data_dir": cfg.data_dir,
        # the random key it made (a key given by flag or environment is never echoed; none: null)
        "api_key": cfg.api_key if cfg.key_generated else None,
    }
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    if cfg.verbose:
        log("listening on {} (data dir {})".format(ready["base_url"], cfg.data_dir))
    while not stop.wait(0.1):
        pass
    if cfg.verbose:
        log("shutting down")
    server.shutdown()
    server.server_close()
    app.close()
    return 0
