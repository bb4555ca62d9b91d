"""The sandbox's code: a package of small modules, standard library only, one source for the facts
it shares with the client, and a thin runnable script."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from sandbox_helper import SANDBOX_PACKAGE, SCRIPTS, SERVER_SCRIPT

# The client modules the sandbox may import (each standard library only).
CLIENT_MODULES = {
    "_dwbatches.core.apifacts",
    "_dwbatches.core.compat",
    "_dwbatches.cost.pricing",
    "_dwbatches.api.reasoning",
    "_dwbatches.core.urls",
}
MAX_MODULE_LINES = 500
STDLIB_FALLBACK = {  # Python 3.9 has no sys.stdlib_module_names
    "__future__",
    "argparse",
    "contextlib",
    "datetime",
    "decimal",
    "hashlib",
    "hmac",
    "http",
    "json",
    "math",
    "os",
    "queue",
    "re",
    "signal",
    "socket",
    "sqlite3",
    "sys",
    "threading",
    "time",
    "traceback",
    "typing",
    "urllib",
    "uuid",
    "ipaddress",
    "ctypes",
    "subprocess",
    "shlex",
    "fcntl",
    "msvcrt",
    "errno",
    "stat",
}


def modules() -> list:
    found = sorted(SANDBOX_PACKAGE.glob("*.py"))
    assert len(found) >= 10
    return found


def imports_of(path: Path) -> list:
    """(module, level) of every import in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").split(".")[0] == "_dwbatches":
                package = SCRIPTS.joinpath(*node.module.split("."))
                out += [
                    (f"{node.module}.{a.name}" if (package / f"{a.name}.py").is_file() else node.module, 0)
                    for a in node.names
                ]
            else:
                out.append((node.module or "", node.level))
    return out


def test_the_package_is_standard_library_only():
    stdlib = getattr(sys, "stdlib_module_names", STDLIB_FALLBACK)
    for path in [*modules(), SERVER_SCRIPT]:
        for name, level in imports_of(path):
            if level or name == "_dwsandbox" or name.startswith("_dwsandbox."):
                continue
            assert name in CLIENT_MODULES or name.split(".")[0] in stdlib, f"{path.name} imports {name}"
    for name in CLIENT_MODULES:
        path = SCRIPTS.joinpath(*name.split(".")).with_suffix(".py")
        package = name.rsplit(".", 1)[0]
        for imported, level in imports_of(path):
            if level:
                parent = package.rsplit(".", level - 1)[0] if level > 1 else package
                target = f"{parent}.{imported}" if imported else parent
                assert target in CLIENT_MODULES or target == "_dwbatches", f"{path.name} imports .{imported}"
            else:
                assert imported.split(".")[0] in stdlib, f"{path.name} imports {imported}"


def test_modules_are_small_and_each_is_described():
    doc = ast.get_docstring(ast.parse((SANDBOX_PACKAGE / "__init__.py").read_text(encoding="utf-8")))
    for path in modules():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= MAX_MODULE_LINES, f"{path.name} has {lines} lines"
        if path.name != "__init__.py":
            assert f"``{path.name}``" in doc, f"_dwsandbox/__init__.py does not describe {path.name}"


def test_no_class_reaches_into_the_private_members_of_another():
    """``x._name`` only on self or cls: what another module or class needs is public."""
    found = []
    for path in [*modules(), SCRIPTS / "_dwbatches" / "core" / "sandbox.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    found.append(f"{path.name}:{node.lineno}: .{node.attr}")
    assert not found, found


def test_the_script_is_a_thin_cli():
    text = SERVER_SCRIPT.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 60
    assert text.rstrip().endswith("raise SystemExit(main())")


def test_client_and_sandbox_share_one_copy_of_the_api_facts():
    import sandbox_server
    from _dwbatches.api import requestrules
    from _dwbatches.core import apifacts
    from _dwbatches.cost import pricing
    from _dwbatches.submit import planning
    from _dwbatches.validation import validate
    from _dwsandbox import config

    assert requestrules.ALLOWED_URLS is apifacts.ALLOWED_URLS is config.ALLOWED_URLS
    for name in ("MAX_CUSTOM_ID_BYTES", "MAX_BODY_BYTES", "MAX_REQUESTS_PER_FILE", "MAX_FILE_BYTES"):
        assert (
            getattr(validate if name != "MAX_CUSTOM_ID_BYTES" else requestrules, name)
            == getattr(apifacts, name)
            == getattr(config, name)
        ), name
    assert planning.SERVER_RESERVED_KEYS == apifacts.RESERVED_METADATA_KEYS == config.RESERVED_METADATA_KEYS
    assert tuple(planning.WINDOWS) == pricing.WINDOWS == apifacts.COMPLETION_WINDOWS
    assert tuple(apifacts.WINDOW_SECONDS) == apifacts.COMPLETION_WINDOWS
    args = sandbox_server.build_parser().parse_args([])
    assert args.max_file_bytes == apifacts.MAX_FILE_BYTES
    assert args.max_requests_per_file == apifacts.MAX_REQUESTS_PER_FILE
    assert args.max_body_bytes == apifacts.MAX_BODY_BYTES
