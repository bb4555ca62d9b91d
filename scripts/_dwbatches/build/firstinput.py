"""The user's input, when one obvious file is there: what check_setup.py's first build names.

Looked for in the working directory only: a prompts file (``.txt``, one prompt a line), a CSV
or TSV, or a JSONL file (rows of data, or a batch file already). Files the skill writes
(results, errors, batch files it built with their sidecar, requirements) and hidden files are
not inputs. One candidate: its build command, with the options SKILL.md uses for a first job,
when it runs as printed (a CSV or JSONL needs a ``prompt`` column or field, else only the
file and its columns are named); several, or none: no guess.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from ..api import reasoning
from .builder import sidecar_path
from .sources import CsvRows

INPUT_EXTENSIONS = (".txt", ".csv", ".tsv", ".jsonl")
NOT_INPUTS = ("requirements.txt", "requirements-dev.txt", "license.txt", "readme.txt")
SKILL_OUTPUTS = (".results.jsonl", ".results.csv", ".errors.jsonl")
# The answer budget of a first job, as SKILL.md builds one: room for a paragraph.
FIRST_MAX_TOKENS = 500


def candidates(folder: str = ".") -> List[str]:
    """Files in ``folder`` that look like the user's input, sorted."""
    found = []
    for name in sorted(os.listdir(folder)):
        low = name.lower()
        path = os.path.join(folder, name)
        if name.startswith(".") or not low.endswith(INPUT_EXTENSIONS) or low in NOT_INPUTS:
            continue
        if low.endswith(SKILL_OUTPUTS) or not os.path.isfile(path):
            continue
        if low.endswith(".jsonl") and _built_from_a_csv_here(path):
            continue  # a batch file built from a CSV that is itself the input
        found.append(name)
    return found


def _built_from_a_csv_here(path: str) -> bool:
    """The batch file has a sidecar naming the CSV it was built from, and that CSV is still there."""
    try:
        with open(sidecar_path(path), encoding="utf-8") as fh:
            source = json.load(fh)
    except (OSError, ValueError, RecursionError):
        return False
    csv_path = source.get("path") if isinstance(source, dict) else None
    return isinstance(csv_path, str) and os.path.isfile(csv_path)


def _first_json(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                if raw.strip():
                    obj = json.loads(raw)
                    return obj if isinstance(obj, dict) else None
    except (OSError, ValueError, RecursionError):
        return None
    return None


def describe(name: str) -> Dict[str, Any]:
    """What the file is: kind (prompts, csv, jsonl rows, batch) and its columns or fields."""
    low = name.lower()
    if low.endswith(".txt"):
        return {"path": name, "kind": "prompts"}
    if low.endswith((".csv", ".tsv")):
        try:
            with CsvRows(name) as rows:
                return {"path": name, "kind": "csv", "columns": list(rows.header)}
        except Exception:  # unreadable: named, not guessed about
            return {"path": name, "kind": "csv", "columns": None}
    first = _first_json(name) or {}
    if {"custom_id", "body"} <= set(first):
        return {"path": name, "kind": "batch"}
    return {"path": name, "kind": "jsonl", "fields": sorted(first)}


def reasoning_args(model: str) -> List[str]:
    """The options of a first build for ``model``: a budget for a paragraph and, for a model that
    thinks, thinking off (or low, with room for it, where it cannot be switched off)."""
    fam = reasoning.family(model)
    if fam is None or not fam.reasons:
        return ["--max-tokens", str(FIRST_MAX_TOKENS)]
    if fam.can_switch_off:
        return ["--max-tokens", str(FIRST_MAX_TOKENS), "--reasoning", "none"]
    return ["--max-tokens", str(FIRST_MAX_TOKENS + 1024), "--reasoning", "low"]


def first_build(model: Optional[str], model_args: List[str], output: str) -> Dict[str, Any]:
    """{input, build}: the one obvious input (None when there is none or several, with the
    candidates) and the create_batch_file.py arguments that build it (None when they would not
    run as printed: a CSV or JSONL without a prompt column or field; a batch file needs no build)."""
    found = candidates()
    if len(found) != 1:
        return {"input": None, "candidates": found, "build": None}
    info = describe(found[0])
    opts = reasoning_args(model) if model else []
    build: Optional[List[str]] = None
    if info["kind"] == "prompts":
        build = [output, "--prompts", info["path"], *model_args, *opts]
    elif info["kind"] == "csv" and "prompt" in (info.get("columns") or []):
        build = [output, "--csv", info["path"], *model_args, *opts]
    elif info["kind"] == "jsonl" and "prompt" in info.get("fields", []):
        build = [output, "--jsonl", info["path"], *model_args, *opts]
    return {"input": info, "candidates": found, "build": build}
