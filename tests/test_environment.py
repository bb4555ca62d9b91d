"""What a first run meets on real machines: proxies, odd .env files, missing packages.

- HTTP(S)_PROXY / ALL_PROXY: a loopback base URL (the sandbox) is reached directly, even
  through a dead proxy; a remote base URL still goes through the proxy, and NO_PROXY still
  exempts a listed remote host (a recording proxy in a thread checks both).
- .env: a byte-order mark (Windows Notepad, PowerShell) is ignored; a directory called .env
  (often a virtual environment) is passed over; a .env that cannot be read or decoded is exit
  3 naming the file.
- requests / python-dotenv not importable (blocked by a sitecustomize.py on PYTHONPATH):
  exit 3, "error: the Python package ... is not installed" and the pip / uv command, stdout
  empty; the local-only scripts keep working.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import List, Optional, Tuple
from urllib.parse import urlsplit

import pytest
from helpers import is_error
from sandbox_helper import REPO_ROOT, SCRIPTS, non_loopback_address

pytestmark = pytest.mark.slow  # not in `make test-fast`

DEAD_PROXY = "http://127.0.0.1:9"  # discard port: nothing listens there
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
REMOTE_HOST = "dw.example"
REQUIREMENTS = str(REPO_ROOT / "requirements.txt")


# -- helpers ------------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict:
    """os.environ without DOUBLEWORD_* and proxy variables (any case), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOUBLEWORD_") and k.upper() not in PROXY_VARS}
    env.update(extra)
    return env


def proxy_env(proxy: str, **extra: str) -> dict:
    """Proxy variables in both spellings, as shells in companies set them."""
    env = clean_env(**extra)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = proxy
    return env


def run(script: str, *args, env: dict, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / script), *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return json.loads(proc.stdout)


def example_input(path: Path) -> Path:
    ok_json(run("create_batch_file.py", path, env=clean_env()))
    return path


class RecordingProxy:
    """A forward HTTP proxy in a thread: records each request line; forwards plain-http requests
    to ``route`` (host, port) or else to the host the URL names; refuses CONNECT with 502."""

    def __init__(self, route: Optional[Tuple[str, int]] = None) -> None:
        self.seen: List[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_CONNECT(self) -> None:
                proxy.seen.append(self.requestline)
                self.send_response(502, "no tunnels here")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def forward(self) -> None:
                proxy.seen.append(self.requestline)
                parts = urlsplit(self.path)
                host, port = route or (parts.hostname, parts.port or 80)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("connection", "proxy-connection", "keep-alive")
                }
                conn = http.client.HTTPConnection(host, port, timeout=60)
                try:
                    conn.request(
                        self.command,
                        parts.path + (f"?{parts.query}" if parts.query else ""),
                        body=body or None,
                        headers=headers,
                    )
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "content-length", "transfer-encoding", "date", "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- proxies ------------------------------------------------------------------------------------


def test_check_setup_sandbox_passes_with_a_dead_proxy_set(tmp_path):
    doc = ok_json(run("check_setup.py", "--sandbox", env=proxy_env(DEAD_PROXY), cwd=tmp_path))
    assert doc["ready"] is True and doc["sandbox"] is True


def test_run_batch_wait_against_the_sandbox_passes_with_a_dead_proxy_set(sandbox, tmp_path):
    path = example_input(tmp_path / "ex.jsonl")
    env = proxy_env(DEAD_PROXY, DOUBLEWORD_API_KEY=sandbox.api_key, DOUBLEWORD_BASE_URL=sandbox.base_url)
    doc = ok_json(run("run_batch.py", path, "--wait", "--timeout", "120", env=env, cwd=tmp_path))
    assert doc["complete"] is True and doc["succeeded"] == 5 and doc["failed"] == 0
    assert len(Path(doc["output"]).read_text(encoding="utf-8").splitlines()) == 5


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_never_reaches_the_proxy(sandbox, tmp_path, host):
    base = sandbox.base_url.replace("127.0.0.1", host)
    with RecordingProxy() as proxy:
        env = proxy_env(proxy.url, DOUBLEWORD_API_KEY=sandbox.api_key, DOUBLEWORD_BASE_URL=base)
        doc = ok_json(run("list_models.py", env=env, cwd=tmp_path))
    assert doc["count"] >= 1
    assert proxy.seen == []


def test_remote_http_base_url_goes_through_the_proxy(sandbox_factory, tmp_path):
    # the proxy hands dw.example's requests to the sandbox (which answers that name when told
    # to: it checks the Host header): the whole call works through it
    sandbox = sandbox_factory("--allow-host", REMOTE_HOST)
    port = int(urlsplit(sandbox.base_url).port)
    with RecordingProxy(route=("127.0.0.1", port)) as proxy:
        env = proxy_env(proxy.url, DOUBLEWORD_API_KEY=sandbox.api_key, DOUBLEWORD_BASE_URL=f"http://{REMOTE_HOST}/v1")
        doc = ok_json(run("list_models.py", "--allow-insecure-http", env=env, cwd=tmp_path))
    assert doc["count"] >= 1
    assert proxy.seen == [f"GET http://{REMOTE_HOST}/v1/models?include_reasoning_capabilities=true HTTP/1.1"]


def test_remote_https_base_url_goes_through_the_proxy(tmp_path):
    key = "sk-proxy-test-" + "k" * 34
    with RecordingProxy() as proxy:
        env = proxy_env(proxy.url, DOUBLEWORD_API_KEY=key, DOUBLEWORD_BASE_URL=f"https://{REMOTE_HOST}/v1")
        proc = run("check_setup.py", env=env, cwd=tmp_path)
    assert proc.returncode == 1 and is_error(proc.stdout), proc.stderr
    assert "FAIL  API reachable" in proc.stderr and key not in proc.stderr
    assert proxy.seen and all(line.startswith(f"CONNECT {REMOTE_HOST}:443 HTTP/") for line in proxy.seen)


def test_no_proxy_still_exempts_a_remote_host(sandbox_factory, tmp_path):
    addr = non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address to listen on")
    sb = sandbox_factory("--host", addr)
    base = f"http://{addr}:{sb.port}/v1"
    with RecordingProxy() as proxy:
        env = proxy_env(proxy.url, DOUBLEWORD_API_KEY=sb.api_key, DOUBLEWORD_BASE_URL=base)
        ok_json(run("list_models.py", "--allow-insecure-http", env=env, cwd=tmp_path))
        # a remote host: through the proxy
        assert proxy.seen == [f"GET {base}/models?include_reasoning_capabilities=true HTTP/1.1"]
        for no_proxy in (addr, f"example.org,{addr}"):
            proxy.seen.clear()
            env["NO_PROXY"] = env["no_proxy"] = no_proxy
            ok_json(run("list_models.py", "--allow-insecure-http", env=env, cwd=tmp_path))
            assert proxy.seen == [], no_proxy  # listed in NO_PROXY: direct


# -- .env ---------------------------------------------------------------------------------------


def dotenv_text(sandbox) -> str:
    return f"DOUBLEWORD_API_KEY={sandbox.api_key}\r\nDOUBLEWORD_BASE_URL={sandbox.base_url}\r\n"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])
def test_dotenv_with_or_without_a_byte_order_mark_is_read(sandbox, tmp_path, encoding):
    # utf-8-sig: Windows Notepad's UTF-8 with BOM; utf-16 (with BOM): PowerShell 5's "> .env"
    (tmp_path / ".env").write_bytes(dotenv_text(sandbox).encode(encoding))
    proc = run("check_setup.py", env=clean_env(), cwd=tmp_path)
    doc = ok_json(proc)
    assert doc["key_source"] == f".env at {tmp_path / '.env'}"
    assert doc["base_url"] == sandbox.base_url
    assert sandbox.api_key not in proc.stdout + proc.stderr


def test_submit_reads_a_dotenv_with_a_byte_order_mark(sandbox, tmp_path):
    (tmp_path / ".env").write_bytes(dotenv_text(sandbox).encode("utf-8-sig"))
    path = example_input(tmp_path / "ex.jsonl")
    proc = run("submit.py", path, env=clean_env(), cwd=tmp_path)
    doc = ok_json(proc)
    assert sandbox.wait_batch(doc["batches"][0]["batch_id"])["status"] == "completed"
    assert sandbox.api_key not in proc.stdout + proc.stderr


def test_a_directory_called_dotenv_is_passed_over(sandbox, tmp_path):
    # `python -m venv .env` is common: such a directory is not a .env file, and the search goes
    # on upwards, as python-dotenv's does
    (tmp_path / ".env").write_text(dotenv_text(sandbox), encoding="utf-8")
    work = tmp_path / "project"
    (work / ".env" / "bin").mkdir(parents=True)
    doc = ok_json(run("check_setup.py", env=clean_env(), cwd=work))
    assert doc["key_source"] == f".env at {tmp_path / '.env'}"


def assert_unreadable(proc: subprocess.CompletedProcess, path: Path, why: str, secret: str = "") -> None:
    assert proc.returncode == 3 and is_error(proc.stdout), proc.stderr
    lines = proc.stderr.splitlines()
    error = next(line for line in lines if line.startswith("error: "))
    assert error.startswith(f"error: cannot read the .env file {path}: {why}"), error
    assert any(line.startswith("hint: ") for line in lines)
    assert "unexpected" not in proc.stderr and "Traceback" not in proc.stderr
    if secret:
        assert secret not in proc.stderr


def unreadable_cases(tmp_path: Path):
    """(script, args) that read the configuration, run from a subdirectory of the .env's."""
    return [
        ("check_setup.py", ()),
        ("list_models.py", ()),
        ("list_batches.py", ()),
        ("submit.py", (tmp_path / "sub" / "ex.jsonl",)),
    ]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc/self/mem")
def test_unreadable_dotenv_in_a_parent_is_exit_3_naming_it(tmp_path):
    # /proc/self/mem is a regular file that even root cannot read from offset 0 (EIO)
    dotenv = tmp_path / ".env"
    dotenv.symlink_to("/proc/self/mem")
    sub = tmp_path / "sub"
    sub.mkdir()
    example_input(sub / "ex.jsonl")
    for script, args in unreadable_cases(tmp_path):
        proc = run(script, *args, env=clean_env(), cwd=sub)
        assert_unreadable(proc, dotenv, "Input/output error")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_dotenv_without_read_permission_is_exit_3_naming_it(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("DOUBLEWORD_API_KEY=sk-perm-" + "p" * 38 + "\n", encoding="utf-8")
    dotenv.chmod(0)
    sub = tmp_path / "sub"
    sub.mkdir()
    example_input(sub / "ex.jsonl")
    try:
        for script, args in unreadable_cases(tmp_path):
            proc = run(script, *args, env=clean_env(), cwd=sub)
            assert_unreadable(proc, dotenv, "Permission denied")
            assert "chmod" in proc.stderr
    finally:
        dotenv.chmod(0o600)


@pytest.mark.parametrize(
    "data, why",
    [
        (b"DOUBLEWORD_API_KEY=sk-latin1-\xe9" + b"x" * 30 + b"\n", "it is not UTF-8 text (byte 0xe9"),
        (("DOUBLEWORD_API_KEY=sk-utf16-" + "x" * 30 + "\n").encode("utf-16-le"), "it contains NUL bytes"),
    ],
    ids=["latin-1", "utf-16-without-bom"],
)
def test_dotenv_that_is_not_utf8_is_exit_3_naming_it(tmp_path, data, why):
    (tmp_path / ".env").write_bytes(data)
    proc = run("check_setup.py", env=clean_env(), cwd=tmp_path)
    assert_unreadable(proc, tmp_path / ".env", why, secret="x" * 30)
    assert "FAIL  .env file" in proc.stderr


# -- missing packages ---------------------------------------------------------------------------

BLOCKER = '''\
import sys

BLOCKED = {blocked!r}


class _Blocker:
    """Make these packages impossible to import, as if they were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
'''


def without(tmp_path: Path, *modules: str, **extra: str) -> dict:
    """An environment whose Python cannot import ``modules`` (a sitecustomize.py blocks them)."""
    site = tmp_path / ("no-" + "-".join(modules))
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=set(modules)), encoding="utf-8")
    env = clean_env(**extra)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def network_cases(tmp_path: Path):
    """(script, args) of every script that talks to the API, with arguments that are valid."""
    path = example_input(tmp_path / "ex.jsonl")
    batch_id = "6f1c2e0a-1b2c-4d5e-8f90-0123456789ab"
    return [
        ("submit.py", (path,)),
        ("poll.py", (batch_id,)),
        ("fetch_results.py", (batch_id,)),
        ("run_batch.py", (path, "--wait")),
        ("check_setup.py", ()),
        ("check_setup.py", ("--sandbox",)),
        ("list_models.py", ()),
        ("list_batches.py", ()),
        ("cancel_batch.py", (batch_id,)),
        ("retry_failed.py", ("--job", tmp_path / "ex.dwjob")),
    ]


def assert_missing(proc: subprocess.CompletedProcess, script: str, message: str) -> None:
    assert proc.returncode == 3, f"{script}: exit {proc.returncode}\n{proc.stderr}"
    assert is_error(proc.stdout), script
    lines = proc.stderr.splitlines()
    assert f"error: {message}" in lines, f"{script}:\n{proc.stderr}"
    hint = lines[lines.index(f"error: {message}") + 1]
    assert hint.startswith("hint: ") and f" -m pip install -r {REQUIREMENTS}" in hint, hint
    assert f"uv run {SCRIPTS / script}" in hint, hint
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr


@pytest.mark.parametrize("module, package", [("requests", "requests"), ("dotenv", "python-dotenv")])
def test_scripts_without_a_required_package_exit_3_with_the_install_command(sandbox, tmp_path, module, package):
    env = without(tmp_path, module, DOUBLEWORD_API_KEY=sandbox.api_key, DOUBLEWORD_BASE_URL=sandbox.base_url)
    for script, args in network_cases(tmp_path):
        proc = run(script, *args, env=env, cwd=tmp_path)
        assert_missing(proc, script, f"the Python package '{package}' is not installed")
        if script == "check_setup.py":  # its report names the package, then stops
            assert f"FAIL  package {package}: not importable" in proc.stderr
    assert sandbox.stats()["requests"] == {}  # nothing was sent


def test_both_packages_missing_are_named_together(tmp_path):
    env = without(tmp_path, "requests", "dotenv")
    proc = run("list_models.py", env=env, cwd=tmp_path)
    assert_missing(proc, "list_models.py", "the Python packages 'requests' and 'python-dotenv' are not installed")


def test_a_package_that_is_installed_but_broken_is_named(tmp_path):
    env = without(tmp_path, "urllib3")  # requests itself is there, its dependency is not
    proc = run("list_batches.py", env=env, cwd=tmp_path)
    assert_missing(
        proc, "list_batches.py", "the Python package 'requests' cannot be imported (No module named 'urllib3')"
    )


def test_local_scripts_work_without_requests_and_dotenv(tmp_path):
    env = without(tmp_path, "requests", "dotenv")
    path = tmp_path / "ex.jsonl"
    assert ok_json(run("create_batch_file.py", path, env=env, cwd=tmp_path))["requests"] == 5
    assert ok_json(run("validate_batch_file.py", path, env=env, cwd=tmp_path))["valid"] is True
    # a dry run sends nothing, so it needs neither
    assert ok_json(run("submit.py", path, "--dry-run", env=env, cwd=tmp_path))["requests"] == 5


def test_a_netrc_entry_for_the_host_does_not_replace_the_api_key(sandbox, tmp_path):
    """requests applies ~/.netrc (or $NETRC) credentials when a request has no auth; the key
    must still travel as the Bearer token."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password not-the-key\ndefault login x password y\n")
    netrc.chmod(0o600)
    env = dict(sandbox.env(), NETRC=str(netrc))
    doc = ok_json(run("list_batches.py", env=env))
    assert doc["batches"] == []
    proc = run("check_setup.py", env=env)
    assert ok_json(proc)["ready"] is True
