"""Every recipe in references/recipes.md runs end to end against the sandbox.

For each numbered recipe: its commands run in order (conventions as in test_docs.py), the
request shown after the build command is exactly the first line the command writes, the
results file the recipe promises exists with one row per input row (in input order), and
its Python snippets run on those results.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest
from helpers import DOC_INPUTS, ROOT, DocRunner, doc_commands, fenced_blocks

pytestmark = pytest.mark.slow  # not in `make test-fast`

RECIPES = ROOT / "references" / "recipes.md"


def recipe_sections() -> List[Tuple[str, str]]:
    """(title, text) of each numbered recipe ("## 1. ...")."""
    text = RECIPES.read_text(encoding="utf-8")
    parts = re.split(r"^## ", text, flags=re.M)
    return [(p.splitlines()[0], p) for p in parts[1:] if re.match(r"\d+\. ", p)]


SECTIONS = recipe_sections()


def test_there_are_at_least_five_recipes():
    titles = " ".join(t.lower() for t, _ in SECTIONS)
    assert len(SECTIONS) >= 5
    for word in ("classify", "extract", "summarise", "embed", "eval"):
        assert word in titles, f"no recipe about {word!r}"


def test_recipe_inputs_exist():
    text = RECIPES.read_text(encoding="utf-8")
    for ref in set(re.findall(r"examples/[A-Za-z0-9_.-]+\.[a-z]+", text)):
        assert (ROOT / ref).is_file(), f"recipes.md names {ref}, which does not exist"


def read_rows(path: Path) -> List[dict]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("title,section", SECTIONS, ids=[t.split(".")[0] for t, _ in SECTIONS])
def test_recipe_runs_end_to_end(title, section, tmp_path, sandbox):
    runner = DocRunner.create(tmp_path, sandbox, DOC_INPUTS)
    try:
        cmds = doc_commands(RECIPES, section)
        assert cmds, f"recipe {title!r} shows no commands"
        build = cmds[0]
        assert build.argv[1] == "scripts/create_batch_file.py", "a recipe starts with create_batch_file.py"
        built = None
        last_fetch = None
        for cmd in cmds:
            doc = runner.run(cmd)
            if cmd is build:
                built = doc
            if cmd.argv[1] in ("scripts/fetch_results.py", "scripts/run_batch.py"):
                last_fetch = (cmd, doc)
        assert built is not None and last_fetch is not None, "a recipe builds, runs and fetches"

        # the request shown is the first line the build command writes
        shown = [json.loads(block) for _, block in fenced_blocks(section, "json")]
        assert shown, f"recipe {title!r} does not show the request it builds"
        first_line = Path(built["path"]).read_text(encoding="utf-8").splitlines()[0]
        assert shown[0] == json.loads(first_line), "the request shown differs from what the command writes"

        # finished? (the sandbox is fast, but a fetch may still have found the batch running)
        cmd, report = last_fetch
        if runner.outputs[-1][1] == 6 or not report.get("complete", True):
            subprocess.run(
                [
                    sys.executable,
                    "scripts/poll.py",
                    "--job",
                    report["job"],
                    "--wait",
                    "--interval",
                    "0.2",
                    "--timeout",
                    "60",
                ],
                cwd=runner.work,
                env=runner.env,
                capture_output=True,
                timeout=90,
            )
            report = runner.run(cmd)
        assert report["succeeded"] == built["requests"], report

        # the promised results file, one row per input row, in input order
        promised = re.search(r"^Results: `([^`]+)`", section, re.M)
        assert promised, f"recipe {title!r} does not say where the results are"
        output = Path(report["output"])
        assert output.name == promised.group(1)
        assert output.is_file()
        rows = read_rows(output)
        assert len(rows) == built["requests"]
        if output.suffix == ".jsonl":
            ids = [json.loads(line)["custom_id"] for line in Path(built["path"]).read_text().splitlines()]
            assert [r["custom_id"] for r in rows] == ids
        else:
            assert {"response", "error"} <= set(rows[0])
            assert all(r["response"] for r in rows)

        # the snippets run on those results
        for _, code in fenced_blocks(section, "python"):
            proc = subprocess.run(
                [sys.executable, "-c", code], cwd=runner.work, capture_output=True, text=True, timeout=60
            )
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.strip()
    finally:
        runner.close()
