"""Checks that keep SKILL.md, README.md and the references true as the code changes.

- SKILL.md frontmatter against the Agent Skills spec (and `agentskills validate` from the
  skills-ref package on a copy of the skill folder named doubleword-batches);
- every script named in SKILL.md exists and every script is named; each script's --help runs
  standalone and lists the exit codes;
- every environment variable the code reads is declared in the SKILL.md metadata;
- every command in a ```bash block of SKILL.md, README.md and docs/*.md runs against the
  sandbox, in order, and exits with a code the docs allow (see ``helpers.DocRunner`` for the
  conventions);
- every sample output in README.md and docs/*.md has the shape of what the scripts print now
  (``docsamples``: `make docs` writes them);
- the README's first screen: install in a virtual environment or with uv, the two commands
  and their forms without make (the same as the Makefile's), links that resolve;
- the bundle that `clawhub publish` would upload (.gitignore + .clawhubignore, dot-files
  and non-text files skipped, as ClawHub does) holds what an agent needs and nothing else;
- requirements.txt, pyproject.toml and the PEP 723 header of every script name the same
  dependencies, with floors above the known credential-leak advisories of requests and
  python-dotenv (and the scripts use python-dotenv only to read .env files).

Doc command conventions (the docs rely on them; keep them in sync):

- Only lines starting with ``python3 scripts/`` are run; ``\\`` continues a line.
- A trailing comment that mentions ``exit``/``exits`` lists the allowed exit codes
  (``# exit 0 or 6 ...``); without one, only 0 is allowed.
- Placeholders are whole ALL-CAPS words: ``BATCH_ID`` is the first ``batches[].batch_id``
  printed by an earlier command; ``MODEL`` is a chat model. Any other ALL-CAPS word fails.
- ``python3 scripts/sandbox_server.py ... &`` starts that sandbox (port and data dir replaced
  by free ones); the following commands use it, as ``export DOUBLEWORD_BASE_URL=...`` would.
- The commands run in a scratch directory that holds copies of scripts/ and examples/, plus
  the inputs named in ``DOC_INPUTS``.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import docsamples
import pytest
from helpers import DOC_INPUTS, DocRunner, doc_commands, fresh_env, parse_command

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
SKILL_MD = ROOT / "SKILL.md"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
SCRIPTS_DOC = DOCS / "scripts.md"
REFERENCES = ROOT / "references"

SKILL_NAME = "doubleword-batches"
ALLOWED_KEYS = {"name", "description", "license", "compatibility", "metadata", "allowed-tools"}
EXIT_CODES = ("0", "1", "2", "3", "4", "5", "6")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def split_frontmatter(text: str):
    assert text.startswith("---\n"), "SKILL.md must start with a YAML frontmatter block"
    end = text.index("\n---\n", 4)
    return text[4:end], text[end + 5 :]


def load_yaml(text: str) -> Dict[str, Any]:
    """Parse the frontmatter the way strict validators do (strictyaml: no flow style)."""
    try:
        import strictyaml
    except ImportError:
        strictyaml = None
    if strictyaml is not None:
        return strictyaml.load(text).data
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(text)


def frontmatter() -> Dict[str, Any]:
    fm, _ = split_frontmatter(SKILL_MD.read_text(encoding="utf-8"))
    return load_yaml(fm)


def public_scripts() -> List[str]:
    return sorted(p.name for p in SCRIPTS.glob("*.py") if not p.name.startswith("_"))


def env_vars_read_by_code() -> Dict[str, str]:
    """Environment variable names the scripts read: literal arguments of os.environ[...],
    os.environ.get/getenv, and every "DOUBLEWORD_*" / "DW_*" string literal (constants that
    are passed to os.environ.get later)."""
    found: Dict[str, str] = {}
    pattern_call = re.compile(
        r"""(?:os\.environ(?:\.get)?|os\.getenv|environ\.get)\s*[\(\[]\s*["']([A-Z][A-Z0-9_]*)["']"""
    )
    pattern_literal = re.compile(r"""["']((?:DOUBLEWORD|DW)_[A-Z0-9_]+)["']""")
    for path in sorted(SCRIPTS.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for rx in (pattern_call, pattern_literal):
            for m in rx.finditer(text):
                found.setdefault(m.group(1), str(path.relative_to(ROOT)))
    return found


# ---------------------------------------------------------------------------------------------
# SKILL.md against the Agent Skills spec
# ---------------------------------------------------------------------------------------------


def test_frontmatter_follows_the_spec():
    fm_text, body = split_frontmatter(SKILL_MD.read_text(encoding="utf-8"))
    fm = load_yaml(fm_text)
    assert set(fm) <= ALLOWED_KEYS, f"keys outside the spec: {set(fm) - ALLOWED_KEYS}"
    name = fm["name"]
    assert name == SKILL_NAME
    assert len(name) <= 64 and re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name)
    desc = fm["description"]
    assert isinstance(desc, str) and 0 < len(desc) <= 1024, len(desc)
    assert "<" not in desc and ">" not in desc
    compat = fm.get("compatibility", "")
    assert isinstance(compat, str) and len(compat) <= 500, len(compat)
    assert len(body.strip("\n").splitlines()) <= 300, "SKILL.md body is over 300 lines"


def test_frontmatter_is_block_yaml_only():
    fm_text, _ = split_frontmatter(SKILL_MD.read_text(encoding="utf-8"))
    for n, line in enumerate(fm_text.splitlines(), 2):
        value = line.split("#", 1)[0]
        assert not re.search(r"(:|^\s*-)\s*[\[{]", value), f"SKILL.md line {n} uses flow style: {line!r}"


def test_description_says_when_and_when_not():
    desc = frontmatter()["description"].lower()
    for word in ("prompts", "rows", "documents", "eval", "extract", "embed", "cost"):
        assert word in desc, f"the description should mention {word!r}"
    assert "do not use" in desc and "single" in desc


def test_metadata_holds_version_and_clawhub_block():
    meta = frontmatter()["metadata"]
    assert str(meta["version"]) == "0.1.0"
    oc = meta["openclaw"]
    assert oc["primaryEnv"] == "DOUBLEWORD_API_KEY"
    assert "DOUBLEWORD_API_KEY" in oc["requires"]["env"]
    assert "python3" in oc["requires"]["bins"]
    names = [v["name"] for v in oc["envVars"]]
    assert "DOUBLEWORD_BASE_URL" in names and "DOUBLEWORD_API_KEY" in names


def test_version_matches_the_package():
    init = (SCRIPTS / "_dwbatches" / "__init__.py").read_text(encoding="utf-8")
    version = re.search(r'__version__\s*=\s*"([^"]+)"', init).group(1)
    assert str(frontmatter()["metadata"]["version"]) == version


def test_every_env_var_the_code_reads_is_declared():
    declared = {v["name"] for v in frontmatter()["metadata"]["openclaw"]["envVars"]}
    read = env_vars_read_by_code()
    assert {"DOUBLEWORD_API_KEY", "DOUBLEWORD_BASE_URL"} <= set(read), read
    missing = {name: where for name, where in read.items() if name not in declared}
    assert not missing, f"declare these in SKILL.md metadata.openclaw.envVars: {missing}"
    unread = declared - set(read)
    assert not unread, f"SKILL.md declares variables no script reads (test hooks live in tests/hooks): {unread}"


def test_agentskills_validate_accepts_a_copy_of_the_skill(tmp_path):
    pytest.importorskip("skills_ref")
    skill = tmp_path / SKILL_NAME
    skill.mkdir()
    shutil.copy(SKILL_MD, skill / "SKILL.md")
    shutil.copytree(SCRIPTS, skill / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REFERENCES, skill / "references")
    proc = subprocess.run(
        [sys.executable, "-c", "from skills_ref.cli import main; main()", "validate", str(skill)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # and the validator really checks: a wrong folder name is refused
    wrong = tmp_path / "wrong-name"
    shutil.copytree(skill, wrong)
    proc = subprocess.run(
        [sys.executable, "-c", "from skills_ref.cli import main; main()", "validate", str(wrong)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0


def test_evals_file_is_well_formed():
    doc = json.loads((ROOT / "evals" / "evals.json").read_text(encoding="utf-8"))
    assert doc["skill_name"] == SKILL_NAME
    for ev in doc["evals"]:
        assert ev["prompt"] and ev["expectations"]
        for f in ev.get("files", []):
            assert (ROOT / f).is_file(), f
    kinds = {q["should_trigger"] for q in doc["trigger_queries"]}
    assert kinds == {True, False}


# ---------------------------------------------------------------------------------------------
# scripts named in SKILL.md, and their --help
# ---------------------------------------------------------------------------------------------


def test_scripts_named_in_skill_md_exist_and_all_are_named():
    text = SKILL_MD.read_text(encoding="utf-8")
    named = set(re.findall(r"scripts/([A-Za-z0-9_]+\.py)", text)) | set(re.findall(r"`([a-z_]+\.py)`", text))
    existing = set(public_scripts())
    assert named - existing == set(), f"SKILL.md names scripts that do not exist: {named - existing}"
    assert existing - named == set(), f"SKILL.md does not mention: {existing - named}"


@pytest.mark.parametrize("script", public_scripts())
def test_help_runs_standalone_and_lists_exit_codes(script, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / script), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=fresh_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "exit codes" in out.lower(), f"{script} --help does not list its exit codes"
    block = out.lower().split("exit codes", 1)[1]
    # the sandbox is a server, not a client: it lists its own (fewer) codes; each client script
    # lists the codes it can return (errors.SCRIPT_EXITS), and no other
    from _dwbatches.core.errors import SCRIPT_EXITS

    codes = ("0", "2") if script == "sandbox_server.py" else [str(c) for c in SCRIPT_EXITS[script]]
    for code in EXIT_CODES:
        listed = bool(re.search(rf"^\s*{code}\s", block, re.M))
        assert listed == (code in codes), f"{script} --help {'lacks' if code in codes else 'lists'} exit code {code}"


def test_skill_md_links_the_references():
    text = SKILL_MD.read_text(encoding="utf-8")
    for ref in ("references/api_reference.md", "references/troubleshooting.md", "references/recipes.md"):
        assert ref in text
        assert (ROOT / ref).is_file(), ref


def test_api_reference_has_contents_and_date():
    text = (REFERENCES / "api_reference.md").read_text(encoding="utf-8")
    assert "## Contents" in text
    assert "2026-11-25" in text and "10.13.1" in text
    # every link in the table of contents points at a heading that exists
    anchors = {github_anchor(h) for h in re.findall(r"^#{2,3} (.+)$", text, re.M)}
    for target in re.findall(r"\]\(#([^)]+)\)", text):
        assert target in anchors, f"api_reference.md links to a missing heading #{target}"


def github_anchor(heading: str) -> str:
    a = heading.strip().lower()
    a = re.sub(r"[^\w\- ]", "", a)
    return a.replace(" ", "-")


def test_api_reference_does_not_repeat_the_known_mistakes():
    text = (REFERENCES / "api_reference.md").read_text(encoding="utf-8")
    # offset, file- ids and the expired status appear only as warnings
    for line in text.splitlines():
        if "?offset" in line or "offset=" in line:
            assert re.search(r"ignore|no `offset`|not", line, re.I), line
    assert "skip" in text


@pytest.mark.slow  # several script runs or a server restart: in make test, not the inner loop
def test_the_exit_code_tables_say_what_every_scripts_help_says():
    """One text for each exit code (errors.EXIT_MEANINGS): SKILL.md's and docs/scripts.md's tables and
    every script's --help agree, the job path (4) and the busy job lock (1) included."""
    from _dwbatches.core.errors import EXIT_CODES_HELP, EXIT_MEANINGS

    meanings = dict(EXIT_MEANINGS)
    for doc in (SKILL_MD, SCRIPTS_DOC):
        table = doc.read_text(encoding="utf-8").split("## Exit codes", 1)[1].split("\n## ", 1)[0]
        rows = {int(code): text for code, text in re.findall(r"^\| (\d+) \| (.*?) \|", table, re.M)}
        assert rows == meanings, f"{doc.name}'s exit codes differ from errors.EXIT_MEANINGS"
    assert "no job at the --job path" in EXIT_CODES_HELP and "its lock is busy" in EXIT_CODES_HELP
    flat = " ".join(EXIT_CODES_HELP.split())
    for code, text in EXIT_MEANINGS:
        assert f" {code} {text.replace('`', '')}" in flat
    from _dwbatches.core.errors import SCRIPT_EXITS, exit_codes_help

    scripts = [s for s in public_scripts() if s != "sandbox_server.py"]  # (the server has its own)
    assert sorted(SCRIPT_EXITS) == sorted(scripts)  # every script says which codes it can return
    for script in scripts:
        out = subprocess.run(
            [sys.executable, str(SCRIPTS / script), "--help"], capture_output=True, text=True, timeout=60
        ).stdout
        assert " ".join(out.split()).endswith(" ".join(exit_codes_help(script).split())), script
    assert "--max-cost" not in exit_codes_help("poll.py") and "--max-cost" in exit_codes_help("submit.py")
    assert " 5 " not in exit_codes_help("create_batch_file.py") and " 6 " not in exit_codes_help("cancel_batch.py")


def test_troubleshooting_covers_the_errors_the_scripts_raise():
    text = " ".join((REFERENCES / "troubleshooting.md").read_text(encoding="utf-8").lower().split())
    for message in error_messages():
        key = " ".join(message.lower().split()).rstrip(" ($:;,'\"")
        assert key in text, f"troubleshooting.md does not explain the error {message!r}"


def error_messages() -> List[str]:
    """The fixed start of each message the scripts raise (up to the first placeholder)."""
    out = []
    rx = re.compile(
        r"""raise (?:UsageError|InputError|ConfigError|JobError|DWError|CostLimitExceeded)\(\s*f?["']([^"'{]{12,})"""
    )
    for path in sorted(SCRIPTS.rglob("*.py")):
        if path.name == "sandbox_server.py":
            continue
        for m in rx.finditer(path.read_text(encoding="utf-8")):
            msg = m.group(1).strip()
            if msg not in out:
                out.append(msg)
    return out


# ---------------------------------------------------------------------------------------------
# documented commands run against the sandbox
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def doc_runner(tmp_path, sandbox):
    runner = DocRunner.create(tmp_path, sandbox, DOC_INPUTS)
    yield runner
    runner.close()


@pytest.mark.slow
def test_skill_md_commands_run_against_the_sandbox(doc_runner):
    cmds = doc_commands(SKILL_MD)
    assert len(cmds) >= 8, "SKILL.md should show the workflow as commands"
    # more prompts than the trial's --limit 20, so that the trial is a sample and the full file
    # another file (with 20 or fewer, the two are the same file: a second job for it is refused)
    examples = [p for p in (ROOT / "examples" / "prompts.txt").read_text(encoding="utf-8").splitlines() if p.strip()]
    prompts = [f"{p} (take {i // len(examples) + 1})" for i, p in enumerate(examples * 3)]
    assert len(prompts) > 20
    (doc_runner.work / "prompts.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    for cmd in cmds:
        doc_runner.run(cmd)
    # the workflow really produced results in input order
    results = doc_runner.work / "requests.results.jsonl"
    assert results.is_file()
    rows = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(prompts) and all(r["ok"] for r in rows)


def pages_with_commands() -> List[Path]:
    return [p for p in docsamples.PAGES if doc_commands(p)]


@pytest.mark.slow
@pytest.mark.parametrize("page", pages_with_commands(), ids=lambda p: p.name)
def test_doc_pages_run_and_show_what_the_scripts_print_now(page, doc_runner):
    """Every command of README.md and docs/*.md runs; every sample block below one has the
    shape of what it prints now (`make docs` writes them)."""
    results = docsamples.run_page(page, doc_runner)
    assert not docsamples.differences(page, results), "\n".join(docsamples.differences(page, results))


def test_the_field_lists_of_the_docs_are_written_from_the_report_declarations():
    """SKILL.md's and docs/scripts.md's lists of what a script prints come from
    workflow/reports.py (`make docs` writes them); a list edited by hand, or left behind by a
    change of the declarations, fails here."""
    assert docsamples.stale_fields() == [], "\n".join(docsamples.stale_fields())
    skill = SKILL_MD.read_text(encoding="utf-8")
    assert "<!-- fields: fetch_results.py " in skill and "<!-- fields: poll.py " in skill
    scripts_md = SCRIPTS_DOC.read_text(encoding="utf-8")
    from _dwbatches.workflow.reports import REPORTS

    for script in REPORTS:
        assert f"<!-- fields: {script} -->" in scripts_md, script
    stale = skill.replace("`succeeded` (good answers)", "`succeeded` (answers)", 1)
    assert docsamples.with_fields(stale) == skill  # a stale list is told apart, and rewritten


def test_the_pages_with_samples_are_the_ones_that_run():
    with_samples = docsamples.pages_with_samples()
    assert README in with_samples and DOCS / "walkthrough.md" in with_samples
    assert set(with_samples) <= set(pages_with_commands())


def test_a_stale_sample_is_found_and_make_docs_rewrites_it(tmp_path, sandbox):
    """The check fails on a sample whose shape the scripts no longer print (a field that became
    a list, a field gone), and the generator writes what they print now."""
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\npython3 scripts/create_batch_file.py x.jsonl --prompts prompts.txt\n```\n\n"
        "<!-- sample: stdout keys=requests,warnings,next -->\n```json\n"
        '{"requests": 8, "warnings": 0, "next": "python3 scripts/submit.py x.jsonl"}\n```\n<!-- /sample -->\n\n'
        "<!-- sample: stderr -->\n```text\nwrote 8 requests\n```\n<!-- /sample -->\n",
        encoding="utf-8",
    )
    scratch = tmp_path / "scratch"
    results = docsamples.page_results(page, sandbox, scratch)
    problems = docsamples.differences(page, results)
    assert len(problems) == 2 and "'stdout keys=requests,warnings,next' differs" in problems[0], problems
    assert docsamples.write(page, results)
    text = page.read_text(encoding="utf-8")
    assert '"warnings": []' in text and '"next": "python3 scripts/submit.py x.jsonl"' in text
    assert str(scratch) not in text
    again = docsamples.page_results(page, sandbox, tmp_path / "scratch2")
    assert docsamples.differences(page, again) == []
    # values that differ between runs (ids, numbers, paths) are not differences; fields are
    shown = json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])
    assert docsamples.shape("json", json.dumps(dict(shown, requests=9))) == docsamples.shape("json", json.dumps(shown))
    assert docsamples.shape("json", json.dumps({"requests": 8})) != docsamples.shape("json", json.dumps(shown))
    assert docsamples.blank("batch 41324570-d9bd-4603-8647-47854b5c1530: +6 results in 0.4 s") == docsamples.blank(
        "batch 8869c020-3318-4439-9dc6-9a1938dd1783: +8 results in 12 s"
    )


# -- the README's first screen ---------------------------------------------------------------------


def makefile_recipe(target: str) -> List[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    block = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.M).group(1)
    return [line.strip() for line in block.splitlines()]


def test_readme_first_screen_installs_runs_and_links():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 90, f"README.md is {len(lines)} lines: keep it to one screen and link the rest"
    assert "<owner>" not in text and "github.com/" not in text  # no invented clone URL
    # install: a virtual environment (or uv), never pip into the system Python
    assert "python3 -m venv .venv" in text and ".venv/bin/python -m pip install -r requirements.txt" in text
    assert "uv run scripts/" in text
    assert not re.search(r"^python3 -m pip install", text, re.M)
    # the two commands, and the same without make (Windows): what the Makefile runs
    assert "make demo" in text and "make test" in text
    assert makefile_recipe("demo") == ["$(PY) examples/demo.py"]
    assert ".venv\\Scripts\\python examples\\demo.py" in text
    for line in makefile_recipe("lint"):  # $(PY) -m ruff check scripts tests bench examples, ...
        assert line.replace("$(PY)", ".venv\\Scripts\\python") in text, line
    test_line = next(line for line in makefile_recipe("test") if "pytest" in line)
    pytest_args = test_line.split("$(PY)", 1)[1].replace("$(WORKERS)", "6").strip()
    assert f".venv\\Scripts\\python {pytest_args}" in text
    assert ".venv\\Scripts\\python -m pip install -r requirements-dev.txt" in text


def test_every_relative_link_of_the_docs_resolves():
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"
    linked = set(re.findall(r"\]\(docs/([a-z_-]+\.md)\)", README.read_text(encoding="utf-8")))
    assert linked == {p.name for p in DOCS.glob("*.md")}, "README.md should link every page of docs/"


def test_doc_command_parser_conventions():
    argv, comment = parse_command('python3 scripts/poll.py --job "a b.dwjob"  # exit 0 or 6 while running')
    assert argv == ["python3", "scripts/poll.py", "--job", "a b.dwjob"]
    assert comment.startswith("# exit")
    assert parse_command('python3 scripts/x.py --template "#{n} is fine"')[0][-1] == "#{n} is fine"


# ---------------------------------------------------------------------------------------------
# the published bundle
# ---------------------------------------------------------------------------------------------

# ClawHub's publish walk: skips names starting with "." and node_modules, applies these
# patterns, .gitignore and .clawhubignore, and keeps only files with a text extension.
CLAWHUB_DEFAULT_IGNORES = [".git/", "node_modules/", ".clawhub/", ".clawdhub/"]
CLAWHUB_TEXT_EXTENSIONS = {
    "md",
    "mdx",
    "txt",
    "json",
    "json5",
    "yaml",
    "yml",
    "toml",
    "js",
    "cjs",
    "mjs",
    "ts",
    "mts",
    "cts",
    "tsx",
    "jsx",
    "py",
    "sh",
    "ps1",
    "psm1",
    "psd1",
    "r",
    "rb",
    "go",
    "rs",
    "swift",
    "kt",
    "java",
    "cs",
    "cpp",
    "c",
    "h",
    "hpp",
    "sql",
    "csv",
    "ini",
    "cfg",
    "env",
    "xml",
    "html",
    "css",
    "scss",
    "sass",
    "svg",
}
# The project's own budget for what an install downloads (ClawHub allows 50 MB): it grows only on purpose.
BUNDLE_MAX_BYTES = 1_200_000


class IgnoreRules:
    """gitignore-style matching: comments, ! negation, leading / anchors, trailing / for
    directories, *, ? and **; a pattern without a slash matches a name at any depth."""

    def __init__(self, lines: List[str]):
        self.rules = []
        for raw in lines:
            line = raw.rstrip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            if negate:
                line = line[1:]
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            anchored = "/" in line
            line = line.lstrip("/")
            self.rules.append((negate, dir_only, anchored, self._regex(line)))

    @staticmethod
    def _regex(pat: str):
        out, i = "", 0
        while i < len(pat):
            if pat.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pat.startswith("**", i):
                out += ".*"
                i += 2
            elif pat[i] == "*":
                out += "[^/]*"
                i += 1
            elif pat[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(pat[i])
                i += 1
        return re.compile(out + r"\Z")

    def _matches(self, path: str, is_dir: bool) -> bool:
        ignored = False
        for negate, dir_only, anchored, rx in self.rules:
            if dir_only and not is_dir:
                continue
            target = path if anchored else path.rsplit("/", 1)[-1]
            if rx.match(target):
                ignored = not negate
        return ignored

    def ignores(self, rel: str) -> bool:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            if self._matches("/".join(parts[:i]), True):
                return True
        return self._matches(rel, False)


def read_lines(path: Path) -> List[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []


def bundle_files(root: Path = ROOT) -> Dict[str, int]:
    rules = IgnoreRules(CLAWHUB_DEFAULT_IGNORES + read_lines(root / ".gitignore") + read_lines(root / ".clawhubignore"))
    files: Dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "node_modules")
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if rules.ignores(rel):
                continue
            ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
            if ext not in CLAWHUB_TEXT_EXTENSIONS:
                continue
            files[rel] = full.stat().st_size
    return files


def test_bundle_holds_what_an_agent_needs_and_nothing_else():
    files = bundle_files()
    for needed in (
        "SKILL.md",
        "requirements.txt",
        "references/api_reference.md",
        "references/troubleshooting.md",
        "references/recipes.md",
        "scripts/sandbox_server.py",
        "scripts/_dwbatches/__init__.py",
    ):
        assert needed in files, f"the published bundle lacks {needed}"
    for script in public_scripts():
        assert f"scripts/{script}" in files
    for forbidden in ("tests/", "bench/", ".ci/", ".venv/", "demo-run/", "evals/", ".git/", ".benchmarks/"):
        assert not [f for f in files if f.startswith(forbidden)], f"{forbidden} would be published"
    assert not [f for f in files if f.rsplit("/", 1)[-1] in (".env", "README.md", "Makefile", "pyproject.toml")]
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    top = {f.split("/", 1)[0] for f in files}
    assert top <= {"SKILL.md", "scripts", "references", "examples", "requirements.txt", "LICENSE", "LICENSE.txt"}, top
    total = sum(files.values())
    assert total < BUNDLE_MAX_BYTES, f"the bundle is {total} bytes"


def test_bundle_keeps_every_file_the_docs_point_agents_to():
    files = bundle_files()
    for doc in ("SKILL.md", "references/recipes.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        for ref in set(
            re.findall(r"\b((?:scripts|references|examples)/[A-Za-z0-9_./-]+\.(?:py|md|csv|txt|json))\b", text)
        ):
            if (ROOT / ref).is_file():
                assert ref in files, f"{doc} points to {ref}, which would not be published"


def test_ignore_rules_follow_gitignore_semantics():
    rules = IgnoreRules(["/tests/", "__pycache__/", "*.pyc", "/README.md", "docs/*.md", "!docs/keep.md"])
    assert rules.ignores("tests/test_x.py")
    assert not rules.ignores("scripts/tests.py")
    assert rules.ignores("scripts/__pycache__/a.cpython-311.pyc")
    assert rules.ignores("a/b/c.pyc")
    assert rules.ignores("README.md") and not rules.ignores("references/README.md")
    assert rules.ignores("docs/a.md") and not rules.ignores("docs/keep.md")
    assert fnmatch.fnmatch("x.py", "*.py")


def test_bundle_walk_skips_what_clawhub_skips(tmp_path):
    (tmp_path / "SKILL.md").write_text("x")
    (tmp_path / ".env").write_text("DOUBLEWORD_API_KEY=sk-secret")
    (tmp_path / "data.jsonl").write_text("{}")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.py").write_text("")
    (tmp_path / ".clawhubignore").write_text("/tests/\n")
    assert bundle_files(tmp_path) == {"SKILL.md": 1}


def test_create_batch_file_help_names_the_default_models_the_code_uses():
    from _dwbatches.build import builder

    out = subprocess.run(
        [sys.executable, str(SCRIPTS / "create_batch_file.py"), "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    text = " ".join(out.split())
    assert f"model (default {builder.DEFAULT_CHAT_MODEL}; embeddings {builder.DEFAULT_EMBEDDING_MODEL})" in text


# ---------------------------------------------------------------------------------------------
# dependencies: one list, floors above the advisories
# ---------------------------------------------------------------------------------------------

PEP723 = re.compile(r"(?m)^# /// script$\s(?P<content>(^#(| .*)$\s)+)^# ///$")
# (package, marker or "", the lowest version the floor may be)
FLOORS = [
    ("requests", "", (2, 32, 4)),  # CVE-2023-32681 (2.31.0), CVE-2024-35195 (2.32.2), CVE-2024-47081 (2.32.4)
    ("python-dotenv", 'python_version >= "3.10"', (1, 2, 2)),  # CVE-2026-28684 (1.2.2 needs Python 3.10)
    ("python-dotenv", 'python_version < "3.10"', (1, 0)),  # the newest for 3.9 is 1.2.1
]


def normalized(requirement: str) -> str:
    return requirement.replace(" ", "").replace("'", '"')


def script_dependencies() -> Dict[str, List[str]]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    out = {}
    for path in sorted(SCRIPTS.glob("*.py")):
        m = PEP723.search(path.read_text(encoding="utf-8"))
        assert m, f"{path.name} has no PEP 723 header"
        block = "".join(line[2:] if line.startswith("# ") else line[1:] for line in m.group("content").splitlines(True))
        meta = tomllib.loads(block)
        assert meta["requires-python"] == ">=3.9", path.name
        out[path.name] = [normalized(r) for r in meta["dependencies"]]
    return out


def test_every_list_of_dependencies_is_the_same_with_floors_above_the_advisories():
    tomllib = pytest.importorskip("tomllib")
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    required = [normalized(line) for line in lines if line.strip() and not line.startswith("#")]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert [normalized(r) for r in project["dependencies"]] == required
    for name, deps in script_dependencies().items():
        assert deps == ([] if name == "sandbox_server.py" else required), name  # the sandbox: standard library
    floors = []
    for requirement in required:
        spec, _, marker = requirement.partition(";")
        m = re.fullmatch(r"([a-z0-9-]+)>=([0-9.]+),<([0-9]+)", spec)
        assert m, requirement
        floors.append((m.group(1), marker, tuple(int(x) for x in m.group(2).split("."))))
    assert len(floors) == len(FLOORS)
    for (name, marker, floor), (want_name, want_marker, lowest) in zip(floors, FLOORS):
        assert (name, marker) == (want_name, normalized(want_marker))
        assert floor >= lowest, f"{name} {marker}: floor {floor} is below {lowest}"


def test_python_dotenv_is_only_used_to_read():
    """CVE-2026-28684 is in set_key and unset_key (they follow symlinks when rewriting a .env):
    on Python 3.9, which cannot install the fixed 1.2.2, the scripts must not call them."""
    used = set()
    for path in SCRIPTS.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "dotenv":
                used |= {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "dotenv" for a in node.names), path
    assert used == {"dotenv_values"}
