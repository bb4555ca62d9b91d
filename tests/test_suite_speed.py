"""The suite stays quick to start: every test process collects every test module, so what a
module imports at its top is paid once per process (see docs/development.md, "Cheap starts")."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# Packages that take a large part of a second of CPU to import: imported inside the tests that
# use them, never at the top of a module (the OpenAI SDK alone is about 0.8 s).
HEAVY = {"openai", "httpx", "pydantic", "asyncio", "anyio"}


def top_level_imports(tree: ast.Module):
    """(line, package) of each import that runs when the module is imported: the statements
    at its top, outside functions and classes (``pytest.importorskip("x")`` included)."""
    for node in tree.body:
        for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else ():
            if isinstance(sub, ast.Import):
                yield from ((sub.lineno, alias.name.split(".")[0]) for alias in sub.names)
            elif isinstance(sub, ast.ImportFrom) and sub.module and not sub.level:
                yield sub.lineno, sub.module.split(".")[0]
            elif (
                isinstance(sub, ast.Call)
                and isinstance(sub.func, ast.Attribute)
                and sub.func.attr == "importorskip"
                and sub.args
                and isinstance(sub.args[0], ast.Constant)
            ):
                yield sub.lineno, str(sub.args[0].value).split(".")[0]


def test_no_test_module_imports_a_heavy_package_at_its_top():
    found = [
        f"{path.name}:{line} imports {name}"
        for path in sorted(TESTS.glob("*.py"))
        for line, name in top_level_imports(ast.parse(path.read_text(encoding="utf-8")))
        if name in HEAVY
    ]
    assert not found, found


def test_the_scan_sees_imports_at_the_top_and_not_inside_functions():
    tree = ast.parse(
        "import openai.types\nfrom httpx import Client\nx = pytest.importorskip('pydantic')\n"
        "try:\n    import anyio\nexcept ImportError:\n    pass\n"
        "def test():\n    import asyncio\n"
    )
    assert [name for _, name in top_level_imports(tree)] == ["openai", "httpx", "pydantic", "anyio"]
