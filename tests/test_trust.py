"""Trust: what may configure the scripts, where the key may go, who may read what they write.

- A .env that another user owns, or that other users may write (a world-writable parent
  folder, a shared group), is ignored with a warning: the key never reaches the server it
  names (an attacker's server here, a HostileServer that records what reaches it).
- A base URL from a .env never gets the key of the environment (exit 3), unless it is
  Doubleword's own API; with the base URL in the environment too, the .env's is not used.
- A base URL with user:password@ in it is refused (exit 3) from the environment, the flag, a
  .env or a job's job.json, and the password is never printed.
- Loopback is literal: 127.0.0.0/8, ::1 and the name localhost; ``*.localhost`` is an
  ordinary host (https, or through the proxy with --allow-insecure-http).
- Files written for the user (the built batch file, its sidecar, reports, results, errors,
  the results CSV) get the mode the umask gives (0640 under umask 027); the job's own files
  stay 0600.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from _dwbatches.core import compat, config, errors, files, urls
from helpers import ROOT, SCRIPTS, is_error, make_job, run_script, write_input
from sandbox_helper import INSTRUCT_MODEL

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NOBODY = 65534
POSIX = pytest.mark.skipif(compat.IS_WINDOWS, reason="POSIX owners and permission bits")
KEY = "sk-victim-" + "v" * 38  # the key of the environment: it must never reach the attacker
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def clean_env(**extra: str) -> dict:
    """os.environ without the key, the base URL and proxies (the time scale of the tests stays)."""
    env = {
        k: v for k, v in os.environ.items() if k not in (config.KEY_VAR, config.URL_VAR) and k.upper() not in PROXY_VARS
    }
    env.update(extra)
    return env


def through(proxy, **extra: str) -> dict:
    """An environment whose http and https traffic goes through ``proxy`` (a HostileServer:
    it records each request and refuses tunnels), so nothing reaches the real API."""
    env = clean_env(**extra)
    for name in ("HTTP_PROXY", "HTTPS_PROXY"):
        env[name] = env[name.lower()] = proxy.url()
    return env


def write_dotenv(folder: Path, text: str, mode: int = 0o600) -> Path:
    path = folder / ".env"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


# -- a .env that may not be the user's ------------------------------------------------------------


def shared_folder(tmp_path: Path) -> Path:
    """A world-writable folder (sticky, as /tmp) with the user's project below it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "project").mkdir()
    return shared


def untrusted_cases():
    cases = [pytest.param("world-writable", id="writable-by-everyone")]
    root_only = pytest.mark.skipif(not IS_ROOT, reason="giving a file to another user needs root")
    cases.append(pytest.param("other-owner", id="owned-by-another-user", marks=root_only))
    cases.append(pytest.param("group-writable", id="writable-by-another-group", marks=root_only))
    return cases


def plant(path: Path, how: str) -> str:
    """Make the .env at ``path`` one the user cannot trust; the reason the warning gives."""
    if how == "world-writable":
        path.chmod(0o666)
        return "every user may write to it (mode 0666)"
    if how == "other-owner":
        os.chown(path, NOBODY, NOBODY)
        path.chmod(0o644)
        return f"it belongs to another user (uid {NOBODY})"
    os.chown(path, os.geteuid(), NOBODY)
    path.chmod(0o660)
    return f"the other users of its group (gid {NOBODY}) may write to it (mode 0660)"


@POSIX
@pytest.mark.parametrize("how", untrusted_cases())
def test_a_dotenv_others_could_write_never_gets_the_key(tmp_path, hostile_factory, how):
    """The report: a world-writable parent's .env, owned by another user, redirected the
    environment's key to its server. The key of the environment, the .env naming the
    attacker's server: the .env is ignored, the attacker sees nothing, the key goes only where
    it would have gone without that file (Doubleword's API: a proxy stands in for the network
    and refuses the tunnel)."""
    attacker, proxy = hostile_factory(), hostile_factory()
    shared = shared_folder(tmp_path)
    dotenv = write_dotenv(shared, f"DOUBLEWORD_BASE_URL={attacker.base_url}\nDOUBLEWORD_API_KEY=sk-attacker-1\n")
    why = plant(dotenv, how)
    code, doc, err = run_script("list_models.py", env=through(proxy, DOUBLEWORD_API_KEY=KEY), cwd=shared / "project")
    assert f"warning: ignoring the .env file {dotenv}: {why}" in err and "chmod go-w" in err
    assert code == 1 and is_error(doc), err  # the API cannot be reached here: the proxy refuses
    assert attacker.requests == []
    assert [r.target for r in proxy.requests][:1] == ["api.doubleword.ai:443"]  # a tunnel, no header in sight
    assert {r.method for r in proxy.requests} == {"CONNECT"}
    assert KEY not in err
    # without a key in the environment the ignored .env gives none either
    code, doc, err = run_script("list_batches.py", env=through(proxy), cwd=shared / "project")
    assert code == 3 and "DOUBLEWORD_API_KEY is not set" in err and "ignoring the .env file" in err
    assert attacker.requests == []


@POSIX
def test_untrusted_by_reads_the_owner_and_the_mode(monkeypatch):
    me, group = os.geteuid(), os.getegid()
    other = NOBODY if me != NOBODY else NOBODY - 1

    def st(uid: int, mode: int, gid: int = group) -> os.stat_result:
        return os.stat_result((stat.S_IFREG | mode, 1, 1, 1, uid, gid, 10, 0, 0, 0))

    assert compat.untrusted_by(st(me, 0o600)) is None
    assert compat.untrusted_by(st(me, 0o644)) is None
    assert compat.untrusted_by(st(0, 0o644)) is None  # root's: root could change anything anyway
    assert compat.untrusted_by(st(me, 0o664)) is None  # a user-private group (umask 002)
    assert compat.untrusted_by(st(other, 0o600)) == f"it belongs to another user (uid {other})"
    assert compat.untrusted_by(st(me, 0o666)) == "every user may write to it (mode 0666)"
    assert compat.untrusted_by(st(me, 0o1602)) == "every user may write to it (mode 1602)"
    assert compat.untrusted_by(st(me, 0o660, group + 1)) == (
        f"the other users of its group (gid {group + 1}) may write to it (mode 0660)"
    )
    monkeypatch.setattr(compat, "IS_WINDOWS", True)  # ownership is not checked there
    assert compat.untrusted_by(st(other, 0o666)) is None


# -- the environment's key and a .env's base URL ----------------------------------------------------


def test_a_dotenv_base_url_never_gets_the_environments_key(sandbox, hostile_server, tmp_path):
    """A .env the user owns (a cloned repository's, say) names a server; the key comes from the
    environment: refused, nothing sent. The base URL in the environment too: the .env's is not
    used. The key in that .env: the file's own key goes to the file's own server."""
    write_dotenv(tmp_path, f"DOUBLEWORD_BASE_URL={hostile_server.base_url}\n")
    for script in ("list_batches.py", "check_setup.py"):
        code, doc, err = run_script(script, env=clean_env(DOUBLEWORD_API_KEY=KEY))
        assert code == 3 and is_error(doc), err
        assert f"error: the base URL {hostile_server.base_url} comes from the .env file {tmp_path / '.env'}" in err
        assert "refusing to send the environment's key" in err and "hint: " in err
        assert KEY not in err
    assert hostile_server.requests == []

    code, doc, err = run_script("list_batches.py", env=sandbox.env())  # key and URL from the environment
    assert code == 0 and doc["batches"] == [], err
    assert hostile_server.requests == []

    write_dotenv(tmp_path, f"DOUBLEWORD_BASE_URL={sandbox.base_url}\nDOUBLEWORD_API_KEY={sandbox.api_key}\n")
    code, doc, err = run_script("check_setup.py", env=clean_env())  # both from the .env
    assert code == 0 and doc["key_source"] == f".env at {tmp_path / '.env'}", err


def test_a_dotenv_naming_doubleword_s_own_api_keeps_the_environments_key(tmp_path, monkeypatch):
    write_dotenv(tmp_path, "DOUBLEWORD_BASE_URL=https://api.doubleword.ai/v1/\n")
    monkeypatch.setenv("DOUBLEWORD_API_KEY", KEY)
    cfg = config.load_config()
    assert (cfg.api_key, cfg.base_url, cfg.key_source) == (KEY, config.DEFAULT_BASE_URL, "environment")


# -- a base URL with a user name and password -------------------------------------------------------

PASSWORD = "pw-" + "s3cret" * 6


def assert_refused_silently(code, doc, err, server) -> None:
    assert code == 3 and is_error(doc), err
    assert "has a user name or password in it; refusing it" in err and "***@" in err
    assert PASSWORD not in err and "dwuser" not in err
    assert server.requests == []


def test_a_base_url_with_user_info_is_refused_without_echoing_it(hostile_server, tmp_path):
    url = hostile_server.base_url.replace("http://", f"http://dwuser:{PASSWORD}@")
    for script in ("list_batches.py", "check_setup.py", "list_models.py"):
        code, doc, err = run_script(script, env=clean_env(DOUBLEWORD_API_KEY=KEY, DOUBLEWORD_BASE_URL=url))
        assert_refused_silently(code, doc, err, hostile_server)
        assert "(from DOUBLEWORD_BASE_URL)" in err
    code, doc, err = run_script("list_batches.py", "--base-url", url, env=clean_env(DOUBLEWORD_API_KEY=KEY))
    assert_refused_silently(code, doc, err, hostile_server)
    assert "(from --base-url)" in err
    dotenv = write_dotenv(tmp_path, f"DOUBLEWORD_BASE_URL={url}\nDOUBLEWORD_API_KEY={KEY}\n")
    code, doc, err = run_script("list_batches.py", env=clean_env())
    assert_refused_silently(code, doc, err, hostile_server)
    assert f"(from .env at {dotenv})" in err


def test_a_job_remembering_a_base_url_with_user_info_is_refused(sandbox, hostile_server):
    write_input("data.jsonl", 2)
    job = make_job(sandbox, "data.jsonl")
    state = json.loads(Path(job, "job.json").read_text(encoding="utf-8"))
    state["base_url"] = hostile_server.base_url.replace("http://", f"http://dwuser:{PASSWORD}@")
    Path(job, "job.json").write_text(json.dumps(state), encoding="utf-8")
    code, doc, err = run_script("poll.py", "--job", job, env=clean_env(DOUBLEWORD_API_KEY=sandbox.api_key))
    assert_refused_silently(code, doc, err, hostile_server)
    assert "(from the job directory's job.json)" in err


def test_user_info_is_redacted_whatever_the_url_looks_like():
    for url, shown in [
        (f"http://u:{PASSWORD}@h/v1", "http://***@h/v1"),
        (f"https://{PASSWORD}@h:8443/v1?x=a@b", "https://***@h:8443/v1?x=a@b"),
        (f"u:{PASSWORD}@h/v1", "***@h/v1"),  # no scheme
        (f"http://u:p@{PASSWORD}@h/v1", "http://***@h/v1"),  # an @ in the password
    ]:
        assert urls.has_userinfo(url) and urls.redact_userinfo(url) == shown
        with pytest.raises(errors.ConfigError) as ei:
            config.check_base_url(url)
        assert PASSWORD not in ei.value.message + (ei.value.hint or "")
    for url in ("http://h/v1@x", "https://api.doubleword.ai/v1", "http://[::1]:8/v1"):
        assert not urls.has_userinfo(url) and urls.redact_userinfo(url) == url


# -- loopback is literal ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.42.0.9", True),
        ("::1", True),
        ("[::1]", True),
        ("sandbox.localhost", False),  # resolved through DNS: could be any machine
        ("localhost.", False),
        ("localhost.example.com", False),
        ("127.0.0.1.nip.io", False),
        ("::ffff:127.0.0.1", False),  # loopback on some Pythons only: not here
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("", False),
    ],
)
def test_loopback_is_literal(host, loopback):
    assert urls.is_loopback(host) is loopback
    bare = host.strip("[]")
    assert urls.is_loopback_url(f"http://{'[' + bare + ']' if ':' in bare else bare}:8/v1") is loopback


def test_a_dot_localhost_name_is_an_ordinary_host(sandbox, hostile_server):
    """``*.localhost`` used to be trusted by name: plain http allowed and the proxy bypassed,
    for whatever it resolves to. Now it needs https, and with --allow-insecure-http it goes
    through the proxy like any other host (the proxy here records it)."""
    base = f"http://dwb-sandbox.localhost:{sandbox.port}/v1"
    code, doc, err = run_script("list_models.py", env=through(hostile_server, DOUBLEWORD_API_KEY=KEY,
                                                               DOUBLEWORD_BASE_URL=base))  # fmt: skip
    assert code == 3 and "refusing plain-http base URL to non-loopback host 'dwb-sandbox.localhost'" in err
    assert hostile_server.requests == []
    env = through(hostile_server, DOUBLEWORD_API_KEY=sandbox.api_key, DOUBLEWORD_BASE_URL=base)
    code, doc, err = run_script("list_models.py", "--allow-insecure-http", env=env)
    assert code != 0  # the recording proxy answers 404
    assert hostile_server.requests[0].target.startswith(f"{base}/models")  # not bypassed, not resolved here


# -- files written for the user honour the umask ----------------------------------------------------


def run_under_umask(mask: int, script: str, *args, env: dict, cwd: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / script), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.umask(mask),
    )
    assert proc.returncode == 0, (script, proc.stderr)
    return json.loads(proc.stdout)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.slow
@POSIX
def test_files_for_the_user_get_the_umasks_mode_and_job_files_stay_private(sandbox, tmp_path):
    """umask 027 (group may read, others nothing): the results files were 0644 whatever the
    umask; now 0640, as a file made by any other program. The job's files stay 0600."""
    env = dict(sandbox.env())
    (tmp_path / "reviews.csv").write_bytes((ROOT / "examples" / "reviews.csv").read_bytes())
    built = run_under_umask(0o027, "create_batch_file.py", "r.jsonl", "--csv", "reviews.csv", "--id-column", "id",
                            "--template", "Sentiment: {text}", "-m", INSTRUCT_MODEL, env=env, cwd=tmp_path)  # fmt: skip
    report = tmp_path / "report.json"
    run_under_umask(0o027, "validate_batch_file.py", "r.jsonl", "--report", report, env=env, cwd=tmp_path)
    ran = run_under_umask(0o027, "run_batch.py", "r.jsonl", "--wait", "--format", "csv", env=env, cwd=tmp_path)
    simple = tmp_path / "answers.jsonl"
    run_under_umask(0o027, "fetch_results.py", "--job", ran["job"], "--format", "simple", "-o", simple,
                    env=env, cwd=tmp_path)  # fmt: skip
    user_files = [built["path"], tmp_path / "r.source.json", report, ran["output"], ran["errors"], simple]
    assert {str(p): mode(p) for p in user_files} == {str(p): 0o640 for p in user_files}
    job = Path(ran["job"])
    assert mode(job) == 0o700 and mode(job / "job.json") == 0o600
    assert {mode(p) for p in (job / "results").iterdir()} == {0o600}


@POSIX
@pytest.mark.parametrize("proc_status", [True, False], ids=["umask-from-proc", "umask-set-and-restored"])
def test_atomic_output_honours_the_umask_unless_private(tmp_path, monkeypatch, proc_status):
    if not proc_status:  # macOS and the BSDs have no /proc/self/status

        def no_proc(*args, **kw):
            raise OSError("no /proc here")

        monkeypatch.setattr(compat, "open", no_proc, raising=False)
    old = os.umask(0o077)
    try:
        assert compat.new_file_mode() == 0o600
        with files.atomic_output(str(tmp_path / "results.jsonl")) as fh:
            fh.write(b"{}\n")
        os.umask(0o002)
        assert compat.new_file_mode() == 0o664
        with files.atomic_output(str(tmp_path / "shared.jsonl")) as fh:
            fh.write(b"{}\n")
        files.atomic_write_json(str(tmp_path / "job.json"), {"private": True})  # asks for 0600
        assert os.umask(0o002) == 0o002  # the umask was given back as it was
    finally:
        os.umask(old)
    assert mode(tmp_path / "results.jsonl") == 0o600
    assert mode(tmp_path / "shared.jsonl") == 0o664
    assert mode(tmp_path / "job.json") == 0o600


def test_a_crafted_job_cannot_send_the_key_anywhere(sandbox, hostile_server, tmp_path):
    """A job.json that names another server (plain http to another host, with its own
    allow_insecure_http) is data: every --job command talks to the server the user's own
    configuration names, refuses the job (exit 3) and sends nothing, to either server."""
    write_input("data.jsonl", 2)
    job = make_job(sandbox, "data.jsonl")
    state = json.loads(Path(job, "job.json").read_text(encoding="utf-8"))
    state["base_url"] = hostile_server.base_url.replace("127.0.0.1", "evil.example")
    state["allow_insecure_http"] = True
    Path(job, "job.json").write_text(json.dumps(state), encoding="utf-8")
    before = sandbox.stats()["requests"]
    for script, args in (
        ("poll.py", ["--job", job]),
        ("fetch_results.py", ["--job", job]),
        ("submit.py", ["data.jsonl"]),
    ):
        env = clean_env(DOUBLEWORD_API_KEY=sandbox.api_key, DOUBLEWORD_BASE_URL=sandbox.base_url)
        code, doc, err = run_script(script, *args, env=env)
        assert code == 3 and "was submitted to http://evil.example" in err, (script, err)
        code, doc, err = run_script(script, *args, env=clean_env(DOUBLEWORD_API_KEY=sandbox.api_key))
        assert code == 3 and "points at https://api.doubleword.ai/v1" in err, (script, err)
    assert hostile_server.requests == [] and sandbox.stats()["requests"] == before
