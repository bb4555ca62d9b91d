"""Helpers shared by the test modules: running the scripts, job files, waiting, a throttling proxy.

Running a script
----------------
``run(script, *args, env=..., input=..., cwd=...)`` runs ``scripts/<script>`` and returns a
``subprocess.CompletedProcess`` (returncode, stdout, stderr as text). By default the script's
``main(argv)`` runs *in this process* with its own environment, working directory, argv,
stdin, stdout and stderr, exactly as a child process would see them; this saves a Python
start-up and the imports per run. A real child process is used instead when:

- ``python=`` names another interpreter, or ``subprocess=True`` is passed (tests where the
  process boundary is the point: kills, ``--help``, key hygiene, other Pythons);
- the environment asks for a crash hook (``DOUBLEWORD_BATCHES_CRASH_AT``), which ends the
  process with ``os._exit``;
- another in-process run is already going on in this process (runs from several threads);
- ``DWB_TESTS_SUBPROCESS=1`` is set (run the whole suite with child processes, to check that
  both ways agree).

``run_script`` returns ``(exit code, parsed stdout or None, stderr)``. Every JSON report a run
prints is checked against its declaration (``check_report``), whatever the test.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import queue
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from _dwbatches.core.sandbox import SandboxProcess
from sandbox_helper import CHAT_MODEL as SANDBOX_CHAT_MODEL
from sandbox_helper import REPO_ROOT, SCRIPTS, chat_requests, jsonl_bytes

ROOT = REPO_ROOT
CRASH_VAR = "DOUBLEWORD_BATCHES_CRASH_AT"
SUBPROCESS_VAR = "DWB_TESTS_SUBPROCESS"
_in_process_lock = threading.Lock()


# -- running scripts ---------------------------------------------------------------------------


def run(
    script: str,
    *args: Any,
    env: Optional[Dict[str, str]] = None,
    input: Optional[str] = None,
    cwd: Any = None,
    python: Optional[str] = None,
    timeout: float = 180,
    subprocess: bool = False,
) -> subprocess_mod.CompletedProcess:
    """Run ``scripts/<script>`` with ``args``; see the module docstring."""
    argv = [str(a) for a in args]
    environ = os.environ if env is None else env
    child = subprocess or python is not None or environ.get(CRASH_VAR) or os.environ.get(SUBPROCESS_VAR) == "1"
    if not child and _in_process_lock.acquire(blocking=False):
        try:
            proc = _run_in_process(script, argv, env, input, cwd)
        finally:
            _in_process_lock.release()
    else:
        proc = subprocess_mod.run(
            [python or sys.executable, str(SCRIPTS / script), *argv],
            env=env,
            cwd=cwd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    check_report(script, argv, proc)
    return proc


def check_report(script: str, argv: List[str], proc: Any) -> None:
    """Every report a test gets from a script has the shape its declaration says
    (``workflow/reports.py``): the whole suite checks the contract, not only test_contract.py."""
    from _dwbatches.core import reportspec
    from _dwbatches.workflow.reports import REPORTS

    rep = REPORTS.get(Path(script).name)
    if rep is None or "--help" in argv or "--version" in argv:
        return
    try:
        doc = json.loads(proc.stdout)
    except (ValueError, TypeError):
        return  # no JSON document: the human view, a crash hook, nothing printed
    if not isinstance(doc, dict) or set(doc) <= {"error", "exit_code"}:
        return
    problems = reportspec.problems(rep, doc)
    assert not problems, f"{script} {' '.join(argv)}: the report differs from its declaration: " + "; ".join(problems)


subprocess_mod = subprocess


def run_script(name: str, *args: Any, env: Optional[Dict[str, str]] = None, timeout: float = 120, **kwargs: Any):
    """Run a script; return (exit code, parsed stdout or None, stderr)."""
    proc = run(name, *args, env=env, timeout=timeout, **kwargs)
    doc = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, doc, proc.stderr


def ok_json(proc: Any) -> Any:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return json.loads(proc.stdout)


class _Stream(io.TextIOWrapper):
    """A text stream over bytes, like a child process's stdout/stderr/stdin (``.buffer`` too)."""

    def __init__(self, data: bytes = b"") -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8", errors="replace", write_through=True)

    def value(self) -> str:
        self.flush()
        return self.buffer.getvalue().decode("utf-8", errors="replace")  # type: ignore[attr-defined]

    def isatty(self) -> bool:
        return False


def _load_script(script: str) -> Any:
    name = Path(script).stem
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module(name)


def _run_in_process(
    script: str, argv: List[str], env: Optional[Dict[str, str]], input: Optional[str], cwd: Any
) -> subprocess_mod.CompletedProcess:
    module = _load_script(script)
    from _dwbatches.core import output

    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    saved = (sys.stdin, sys.stdout, sys.stderr, sys.argv)
    out, err = _Stream(), _Stream()
    stdin = _Stream((input or "").encode("utf-8"))
    code: int
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        sys.stdin, sys.stdout, sys.stderr = stdin, out, err
        sys.argv = [str(SCRIPTS / script), *argv]
        output.set_quiet(False)
        try:
            code = module.main(argv)
        except SystemExit as exc:  # argparse errors and --help, as in a child process
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                err.write(f"{exc.code}\n")
                code = 1
        except BaseException:  # an uncaught exception ends a child process with a traceback, exit 1
            err.write(traceback.format_exc())
            code = 1
    finally:
        sys.stdin, sys.stdout, sys.stderr, sys.argv = saved
        output.set_quiet(False)
        os.chdir(saved_cwd)
        if env is not None:
            os.environ.clear()
            os.environ.update(saved_env)
    return subprocess_mod.CompletedProcess(
        [sys.executable, str(SCRIPTS / script), *argv], int(code or 0), out.value(), err.value()
    )


# -- job files -------------------------------------------------------------------------------


def write_input(path: Any, n: int, prefix: str = "req-", start: int = 0) -> List[str]:
    items = chat_requests(n, prefix=prefix, start=start)
    Path(path).write_bytes(jsonl_bytes(items))
    return [i["custom_id"] for i in items]


def make_job(sb: Any, input_path: Any, chunks: int = 1, *flags: Any) -> str:
    """Submit ``input_path`` with submit.py (split into ``chunks`` chunks); return the job directory."""
    n = sum(1 for line in Path(input_path).read_bytes().splitlines() if line.strip())
    code, doc, err = run_script("submit.py", input_path, "--max-requests", -(-n // chunks), *flags, env=sb.env())
    assert code == 0, err
    assert len(doc["batches"]) + doc["batches_omitted"] == chunks
    return doc["job"]


def job_state(job_dir: Any) -> Dict[str, Any]:
    return json.loads(Path(job_dir, "job.json").read_text(encoding="utf-8"))


def job_chunks(state: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [c for r in state["rounds"] for c in r["chunks"]]


def batch_ids_of(job_dir: Any) -> List[str]:
    return [c["batch_id"] for c in job_chunks(job_state(job_dir))]


def read_jsonl(path: Any) -> List[Any]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def raw_lines(job_dir: Any, batch_id: str, kind: str = "output") -> List[Any]:
    p = Path(job_dir, "results", f"{batch_id}.{kind}.jsonl")
    return read_jsonl(p) if p.exists() else []


def wait_job(sb: Any, job_dir: Any, timeout: float = 60) -> None:
    for bid in batch_ids_of(job_dir):
        sb.wait_batch(bid, timeout=timeout)


def wait_until(pred: Any, timeout: float = 30.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def assert_each_once(out_path: Any, expected_ids: List[str]) -> List[Any]:
    rows = read_jsonl(out_path)
    ids = [r["custom_id"] for r in rows]
    assert ids == expected_ids
    return rows


# -- a throttling proxy ------------------------------------------------------------------------


class ThrottleProxy:
    """A TCP proxy in front of the sandbox whose server→client bytes can be slowed down."""

    def __init__(self, upstream_port: int, rate: Optional[float] = None) -> None:
        self.upstream_port = upstream_port
        self.rate = rate  # bytes per second, None = unthrottled
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(client, up, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, throttle: bool) -> None:
        try:
            while True:
                data = src.recv(4096)
                if not data:
                    break
                if throttle and self.rate:
                    time.sleep(len(data) / self.rate)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()


# -- a child process to talk to ------------------------------------------------------------


class Child:
    """A child process that reports by printing lines and is told to go on by a line on its
    stdin (portable: a reader thread, no select on pipes)."""

    def __init__(self, argv, env=None):
        self.proc = subprocess_mod.Popen(
            argv, env=env, stdin=subprocess_mod.PIPE, stdout=subprocess_mod.PIPE, text=True
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def expect(self, word, timeout=20.0):
        got = self.lines.get(timeout=timeout)
        assert got == word, f"expected {word!r}, the child said {got!r}"

    def silent_for(self, seconds):
        try:
            got = self.lines.get(timeout=seconds)
        except queue.Empty:
            return
        raise AssertionError(f"the child said {got!r} within {seconds}s")

    def tell(self):
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for fh in (self.proc.stdin, self.proc.stdout):
            try:
                fh.close()
            except OSError:
                pass


# -- documented commands (SKILL.md, README.md, docs/, references/) ------------------------------
#
# Conventions (the docs rely on them; keep them in sync):
# - Only lines starting with ``python3 scripts/`` are run; ``\`` continues a line.
# - A trailing comment that mentions ``exit``/``exits`` lists the allowed exit codes
#   (``# exit 0 or 6 ...``); without one, only 0 is allowed.
# - Placeholders are whole ALL-CAPS words: ``BATCH_ID`` is the first ``batches[].batch_id``
#   printed by an earlier command; ``MODEL`` is a chat model. Any other ALL-CAPS word fails.
# - ``python3 scripts/sandbox_server.py ... &`` starts that sandbox (port and data dir replaced
#   by free ones); the following commands use it, as ``export DOUBLEWORD_BASE_URL=...`` would.
# - The commands run in a scratch directory that holds copies of scripts/ and examples/, plus
#   the inputs named in ``DOC_INPUTS``.

DOC_CHAT_MODEL = "Qwen/Qwen3.5-35B-A3B-FP8"
# Inputs the documented commands name, in the scratch directory, from the repo's examples.
DOC_INPUTS = {"prompts.txt": "examples/prompts.txt", "reviews.csv": "examples/reviews.csv"}
COMMAND_TIMEOUT = 300


SHIM = Path(__file__).resolve().parent / "winshim"


def shim_env(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """An environment that runs Python under the Windows simulation (tests/winshim: the
    POSIX-only functions and modules removed; see tests/test_windows_shim.py)."""
    env = dict(os.environ if base is None else base)
    rest = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(SHIM) + (os.pathsep + rest if rest else "")
    return env


def fresh_env(**extra: str) -> Dict[str, str]:
    """A minimal environment: no DOUBLEWORD_* or DW_* variables from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOUBLEWORD_", "DW_"))}
    env.update(extra)
    return env


@dataclass
class DocCommand:
    where: str
    text: str
    argv: List[str]
    allowed: set
    background: bool = False


def fenced_blocks(text: str, lang: str = "bash"):
    """(first line number, block text) of each fenced block of the given language."""
    for m in re.finditer(rf"^([ \t]*)```{lang}[ \t]*\n(.*?)^[ \t]*```[ \t]*$", text, re.M | re.S):
        indent = len(m.group(1))
        lines = [ln[indent:] if ln[:indent].strip() == "" else ln for ln in m.group(2).splitlines()]
        yield text[: m.start(2)].count("\n") + 1, "\n".join(lines)


def parse_command(line: str):
    """(argv, comment) of one shell line; the comment starts at the first unquoted #."""
    quote, i = None, 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "\\":
            i += 1
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return shlex.split(line[:i]), line[i:].strip()
        i += 1
    return shlex.split(line), ""


def doc_commands(path: Path, text: Optional[str] = None, prefix: str = "python3 scripts/") -> List[DocCommand]:
    """The documented commands of a file (or of ``text``, a part of it), in order."""
    cmds = []
    if text is None:
        text = path.read_text(encoding="utf-8")
    for start, block in fenced_blocks(text):
        logical: List[tuple] = []
        buf, first = "", None
        for offset, raw in enumerate(block.splitlines()):
            if first is None:
                first = start + offset
            if raw.rstrip().endswith("\\"):
                buf += raw.rstrip()[:-1] + " "
                continue
            logical.append((first, buf + raw))
            buf, first = "", None
        for n, line in logical:
            line = line.strip()
            if not line.startswith(prefix):
                continue
            argv, comment = parse_command(line)
            allowed = {0}
            if re.search(r"\bexits?\b", comment, re.I):
                allowed = {int(x) for x in re.findall(r"\b(\d{1,3})\b", comment)}
            background = bool(argv) and argv[-1] == "&"
            if background:
                argv = argv[:-1]
            cmds.append(DocCommand(f"{path.name}:{n}", line, argv, allowed, background))
    return cmds


@dataclass
class DocRunner:
    """Runs documented commands in order in a scratch directory against a sandbox (each command
    in a child process, as a reader would run it)."""

    work: Path
    env: Dict[str, str]
    state: Dict[str, str] = field(default_factory=dict)
    outputs: List[tuple] = field(default_factory=list)  # (DocCommand, rc, parsed stdout)
    procs: List[Any] = field(default_factory=list)  # the CompletedProcess of each command run (not the sandbox)
    servers: List[Any] = field(default_factory=list)

    @classmethod
    def create(cls, tmp_path: Path, sandbox: Any, inputs: Optional[Dict[str, str]] = None) -> DocRunner:
        work = tmp_path / "work"
        work.mkdir()
        shutil.copytree(SCRIPTS, work / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "examples", work / "examples", ignore=shutil.ignore_patterns("__pycache__"))
        for name, src in (inputs or {}).items():
            shutil.copy(ROOT / src, work / name)
        env = fresh_env(DOUBLEWORD_API_KEY=sandbox.api_key or "sk-sandbox", DOUBLEWORD_BASE_URL=sandbox.base_url)
        return cls(work, env, {"MODEL": DOC_CHAT_MODEL})

    def substitute(self, cmd: DocCommand) -> List[str]:
        out = []
        for tok in cmd.argv:
            for word in re.findall(r"\b[A-Z][A-Z0-9_]{2,}\b", tok):
                if word in ("JSON", "CSV", "USD"):
                    continue
                assert word in self.state, f"{cmd.where}: unknown placeholder {word} in {cmd.text!r}"
                tok = re.sub(rf"\b{word}\b", self.state[word], tok)
            out.append(tok)
        return out

    def run(self, cmd: DocCommand) -> Optional[dict]:
        argv = self.substitute(cmd)
        assert argv[0] == "python3" and argv[1].startswith("scripts/"), cmd.text
        script = self.work / argv[1]
        assert script.is_file(), f"{cmd.where}: {argv[1]} does not exist"
        if argv[1] == "scripts/sandbox_server.py":
            return self.start_server(cmd, argv)
        assert not cmd.background, f"{cmd.where}: only the sandbox may run in the background"
        proc = self.execute([sys.executable, str(script), *argv[2:]])
        assert proc.returncode in cmd.allowed, (
            f"{cmd.where}: `{cmd.text}` exited {proc.returncode}, docs allow {sorted(cmd.allowed)}\n"
            f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
        )
        self.procs.append(proc)
        check_report(argv[1], argv[2:], proc)  # what the docs run prints is the declared report too
        doc = None
        if proc.stdout.strip():
            doc = json.loads(proc.stdout)  # stdout is exactly one JSON document
            self.remember(doc)
        self.outputs.append((cmd, proc.returncode, doc))
        return doc

    def execute(self, argv: List[str]) -> subprocess_mod.CompletedProcess:
        """Run one command (a subclass may run it otherwise: under a pseudo-terminal)."""
        return subprocess_mod.run(
            argv, cwd=self.work, env=self.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
        )

    def remember(self, doc: Any) -> None:
        if not isinstance(doc, dict):
            return
        for b in doc.get("batches") or []:
            if isinstance(b, dict) and b.get("batch_id"):
                self.state.setdefault("BATCH_ID", b["batch_id"])
                break

    def start_server(self, cmd: DocCommand, argv: List[str]) -> dict:
        assert cmd.background, f"{cmd.where}: start the sandbox in the background (&)"
        args = list(argv[2:])
        for flag in ("--port", "--data-dir"):  # the launcher gives a free port and a scratch data dir
            if flag in args:
                i = args.index(flag)
                del args[i : i + 2]
        server = SandboxProcess(
            str(self.work.parent / "doc-sandbox"),
            args,
            str(self.work.parent / "doc-sandbox.log"),
            api_key=None,
            env=fresh_env(),
            cwd=str(self.work),
            script=str(self.work / argv[1]),
        )
        self.servers.append(server)
        ready = server.start().ready
        self.env["DOUBLEWORD_BASE_URL"] = ready["base_url"]
        self.env["DOUBLEWORD_API_KEY"] = ready["api_key"]  # the random key it printed, as the docs say
        self.outputs.append((cmd, 0, ready))
        return ready

    def close(self) -> None:
        for server in self.servers:
            server.stop()


__all__ = [
    "run",
    "run_script",
    "ok_json",
    "write_input",
    "make_job",
    "job_state",
    "job_chunks",
    "batch_ids_of",
    "read_jsonl",
    "raw_lines",
    "wait_job",
    "wait_until",
    "assert_each_once",
    "ThrottleProxy",
    "DOC_INPUTS",
    "DOC_CHAT_MODEL",
    "DocCommand",
    "DocRunner",
    "doc_commands",
    "fenced_blocks",
    "fresh_env",
    "parse_command",
    "ROOT",
    "SCRIPTS",
    "SANDBOX_CHAT_MODEL",
    "Child",
]


def is_error(output: Any, exit_code: Optional[int] = None) -> bool:
    """Whether a run's stdout (text, or the parsed document) is its JSON error document,
    ``{"error": {code, message, hint}, "exit_code"}``, and nothing else."""
    doc = output
    if isinstance(output, (str, bytes)):
        try:
            doc = json.loads(output)
        except ValueError:
            return False
    if not isinstance(doc, dict) or set(doc) != {"error", "exit_code"}:
        return False
    err = doc["error"]
    shape = isinstance(err, dict) and set(err) == {"code", "message", "hint"} and isinstance(err["message"], str)
    return shape and (exit_code is None or doc["exit_code"] == exit_code)
