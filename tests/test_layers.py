"""The package's layout holds: each sub-package of ``_dwbatches`` imports only from those before it
in LAYERS (ARCHITECTURE.md), and no module imports another module's private names.

Imports used only in annotations (under ``if TYPE_CHECKING:``) do not count: they never run.
Below ``workflow/`` nothing prints or writes to stderr: engines emit events (``core/events.py``).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Tuple

from helpers import ROOT, SCRIPTS

PACKAGE = SCRIPTS / "_dwbatches"
# The layers, lowest first: one declaration, also the order ARCHITECTURE.md describes.
LAYERS = ["core", "api", "jobs", "validation", "cost", "build", "submit", "results", "workflow"]


def modules() -> List[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def package_of(path: Path) -> Tuple[str, ...]:
    """The dotted package a file belongs to, as parts: ('_dwbatches', 'core')."""
    return ("_dwbatches",) + path.relative_to(PACKAGE).parent.parts


def runtime_imports(tree: ast.Module) -> Iterator[ast.ImportFrom]:
    """Every `from ... import` that runs (those under `if TYPE_CHECKING:` never do)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and id(node) not in skipped:
            yield node


def targets(path: Path, node: ast.ImportFrom) -> Iterator[Tuple[Tuple[str, ...], str]]:
    """(module parts, imported name) of one import, relative ones resolved; a name that is a
    module of the package stands for that module."""
    if node.level:
        base = package_of(path)
        base = base[: len(base) - (node.level - 1)]
    else:
        base = ()
    module = base + tuple((node.module or "").split(".")) if node.module else base
    for alias in node.names:
        as_module = module + (alias.name,)
        if SCRIPTS.joinpath(*as_module).with_suffix(".py").is_file() or SCRIPTS.joinpath(*as_module).is_dir():
            yield as_module, ""
        else:
            yield module, alias.name


def layer(parts: Tuple[str, ...]) -> int:
    """The rank of a module's layer; the package root (shared constants) is below every layer."""
    return LAYERS.index(parts[1]) if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else -1


def test_each_layer_imports_only_from_the_layers_below_it():
    found = []
    for path in modules():
        own = package_of(path)
        if len(own) < 2:
            continue
        assert own[1] in LAYERS, f"{path.relative_to(ROOT)}: package {own[1]} is not in LAYERS"
        for node in runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            for module, _ in targets(path, node):
                if module[0] != "_dwbatches":
                    continue
                if layer(module) > LAYERS.index(own[1]):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {'.'.join(module)}")
    assert not found, "imports from a higher layer:\n" + "\n".join(found)


def test_no_module_imports_another_modules_private_names():
    found = []
    for path in modules():
        for node in runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            for module, name in targets(path, node):
                if module[0] == "_dwbatches" and name.startswith("_") and not name.startswith("__"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} takes {'.'.join(module)}.{name}")
    assert not found, "private names taken from another module:\n" + "\n".join(found)


def test_the_scan_sees_what_it_checks():
    """The scan resolves relative imports and sees the layers' own files: it cannot pass by seeing nothing."""
    merge = PACKAGE / "results" / "merge.py"
    seen = {
        m for node in runtime_imports(ast.parse(merge.read_text(encoding="utf-8"))) for m, _ in targets(merge, node)
    }
    assert ("_dwbatches", "results", "answers") in seen and ("_dwbatches", "core", "errors") in seen
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..results.merge import X\n")
    assert [n.module for n in runtime_imports(tree)] == ["typing"]
    assert {p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == {PACKAGE / n for n in LAYERS}


def test_architecture_md_describes_the_layers_in_order():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    positions = [text.find(f"`{name}/`") for name in LAYERS]
    assert -1 not in positions, "ARCHITECTURE.md names every layer as `name/`"
    assert positions == sorted(positions, reverse=True), "ARCHITECTURE.md lists the layers from the top down"
    assert len(text.splitlines()) < 100


def test_the_job_lock_is_taken_only_by_the_workflow_layer():
    """``job.lock(`` / ``with job:`` appear in workflow/ only (and in jobs/job.py, which defines them);
    the layers below work on a locked job and fail at once without it."""
    found = []
    for path in modules():
        own = package_of(path)
        if len(own) > 1 and own[1] == "workflow" or path == PACKAGE / "jobs" / "job.py":
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ("job.lock(", "job.unlock(", "with job:", "with Job("):
            if needle in text:
                found.append(f"{path.relative_to(ROOT)}: {needle}")
    for script in SCRIPTS.glob("*.py"):
        text = script.read_text(encoding="utf-8")
        if "with job" in text or ".lock(" in text:
            found.append(f"{script.relative_to(ROOT)} takes a lock")
    assert not found, "the job lock taken outside the workflow layer:\n" + "\n".join(found)


def test_an_engine_refuses_a_job_that_is_not_locked(tmp_path):
    from _dwbatches.jobs.job import Job
    from _dwbatches.submit.submitter import Submitter

    job = Job(str(tmp_path / "j"))
    try:
        Submitter(job, client=None)
    except RuntimeError as exc:
        assert "without its lock" in str(exc)
    else:
        raise AssertionError("a submitter took a job nobody had locked")
    job.lock()
    try:
        Submitter(job, client=None)
    finally:
        job.unlock()


# -- narration: engines report events (core/events.py); only the workflow layer says them --

# The renderers, in core: what the workflow layer says with.
RENDERERS = {PACKAGE / "core" / name for name in ("output.py", "progress.py", "humanview.py")}
# What says something on stderr: print, and the renderers' functions (an engine emits an event).
SAYERS = {"print", "narrate", "say_always", "live", "live_drop", "live_end", "wait_line", "Meter"}


def says(tree: ast.Module) -> Iterator[Tuple[int, str]]:
    """(line, what) for each place in ``tree`` that writes to stderr or calls a sayer."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("stderr", "__stderr__"):
            if getattr(node.value, "id", "") == "sys":
                yield node.lineno, "sys.stderr"
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if name in SAYERS:
                yield node.lineno, f"{name}()"
        elif isinstance(node, ast.ImportFrom):  # taken to be called elsewhere, or subclassed
            for alias in node.names:
                if alias.name in SAYERS:
                    yield node.lineno, f"imports {alias.name}"


def test_only_the_workflow_layer_and_the_renderers_say_anything():
    """Below workflow/ a module never writes to stderr: it emits events (``core.events``) and the
    workflow says them (``workflow/narration.py``). ``core/compat.py`` only sets the stream's
    encoding; ``core/sandbox.py`` hands a log file to a child process as its stderr."""
    allowed = {(PACKAGE / "core" / "compat.py", "sys.stderr")}
    found = []
    for path in modules():
        own = package_of(path)
        if len(own) > 1 and own[1] == "workflow" or path in RENDERERS:
            continue
        for line, what in says(ast.parse(path.read_text(encoding="utf-8"))):
            if (path, what) not in allowed:
                found.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert not found, "engines that say something themselves (emit an event instead):\n" + "\n".join(found)


def test_the_narration_scan_sees_what_it_checks():
    tree = ast.parse(
        "import sys\nsys.stderr.write('x')\nprint('y', file=sys.stderr)\noutput.narrate('z')\nMeter('a', str)\n"
        "from ..core.progress import Meter\n"
    )
    assert [what for _, what in sorted(says(tree))] == [
        "sys.stderr",
        "print()",
        "sys.stderr",
        "narrate()",
        "Meter()",
        "imports Meter",
    ]
    narration = PACKAGE / "workflow" / "narration.py"
    assert any(what == "narrate()" for _, what in says(ast.parse(narration.read_text(encoding="utf-8"))))
    assert not list(says(ast.parse("from ..core import events\nevents.step('fine')\n")))


def test_every_script_run_says_what_the_engines_report():
    """A script's run is held in the workflow's narration (registered when ``_dwbatches.workflow``
    is imported): a script that never imports it would run with nobody listening, and say nothing
    of what its engines report."""
    missing = []
    for script in sorted(SCRIPTS.glob("*.py")):
        text = script.read_text(encoding="utf-8")
        if "output.run(" in text and "from _dwbatches.workflow" not in text:
            missing.append(script.name)
    assert not missing, f"scripts that run without the workflow's narration: {missing}"
