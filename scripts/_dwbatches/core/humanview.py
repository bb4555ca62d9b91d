"""The human view of a report: what a person reads on a terminal instead of the JSON document.

The view is derived from the report itself, field by field in the report's order:

- a value: as it is; ``yes``/``no`` for a boolean; a path relative to the working directory;
  ``*_seconds`` as a duration, ``*_at`` as a local time, ``bytes`` in kB/MB, ``usd`` in dollars;
- an object of counts on one line (``30 good, 2 empty``; the zeros left out unless all are);
  an amount (an object with ``usd``) as the dollar figure with its basis and range;
- a list of values on one line; a list of objects as a small table (``VIEWS``: its columns),
  or its length when no table is declared for it;
- the report's warnings, then its next command.

Each script names only what its view leaves out and the columns of its tables (``VIEWS``).
Every text from the report is shown on one line with its control characters escaped
(``output.one_line``): a view never carries a terminal escape from a server or an input.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .progress import duration

MAX_ROWS = 20  # table rows shown; the rest are counted
MAX_CELL = 60  # characters of a table cell
MAX_ITEMS = 8  # items of a list shown on one line
MAX_VALUE = 200  # characters of a value

# Fields no view shows: server-side ids a person never types, digests, pagination cursors
# (the next command carries them).
NEVER = frozenset({"job_id", "input_file_id", "output_file_id", "error_file_id", "input_sha256", "last_id"})


@dataclass(frozen=True)
class Column:
    """A table column: ``header`` and ``value``, a field path (``request_counts.failed``) or a
    template of paths (``{request_counts.completed}/{request_counts.total}``). A column whose
    cells are all empty is left out, and so is one whose cells are all equal when ``same_hidden``."""

    header: str
    value: str
    same_hidden: bool = False


@dataclass(frozen=True)
class Table:
    """A list of objects of the report (``path``: a field, or a dotted path into one) shown as a
    table when it has at least ``min_rows`` rows."""

    path: str
    columns: Tuple[Column, ...]
    min_rows: int = 1
    title: Optional[str] = None


@dataclass(frozen=True)
class View:
    """What one script's view leaves out (``hide``; ``only_set``: shown only when not zero or
    empty) and its tables."""

    tables: Tuple[Table, ...] = ()
    hide: frozenset = frozenset()
    only_set: frozenset = frozenset()
    lead: Tuple[str, ...] = ()  # fields shown first, in this order


def _cols(*spec: Any) -> Tuple[Column, ...]:
    return tuple(Column(*s) for s in spec)


PROGRESS = "{request_counts.completed}/{request_counts.total}"
_BATCH_COLUMNS = (
    ("round", "round", True),
    ("chunk", "chunk"),
    ("batch", "batch_id"),
    ("status", "status"),
    ("done", PROGRESS),
    ("failed", "request_counts.failed"),
)
BATCHES = Table("batches", _cols(*_BATCH_COLUMNS), min_rows=2)
FETCHED = Table(
    "batches", _cols(*_BATCH_COLUMNS, ("results", "fetched.output"), ("errors", "fetched.error")), min_rows=2
)
COST_ROUNDS = Table(
    "cost.rounds",
    _cols(
        ("round", "round"),
        ("window", "completion_window"),
        ("requests", "requests"),
        ("input tokens", "input_tokens"),
        ("output tokens", "output_tokens"),
        ("usd", "usd"),
    ),
    min_rows=2,
    title="cost per round",
)
SAMPLES = (
    Table("failed_sample", _cols(("failed request", "custom_id"), ("error", "error")), title="failed (first few)"),
    Table(
        "bad_answer_sample",
        _cols(("request", "custom_id"), ("check", "answer_check"), ("detail", "detail")),
        title="answers that are not answers (first few)",
    ),
)
FETCH = View(
    tables=(FETCHED, COST_ROUNDS, *SAMPLES),
    hide=frozenset({"request_counts", "format"}),
    only_set=frozenset({"unexpected", "missing_sample"}),
)
PRICE = "{price_per_1m_tokens.24h.input} / {price_per_1m_tokens.24h.output}"
PRICE_1H = "{price_per_1m_tokens.1h.input} / {price_per_1m_tokens.1h.output}"

VIEWS: Dict[str, View] = {
    "check_setup.py": View(hide=frozenset({"checks"}), only_set=frozenset({"sandbox"})),
    "create_batch_file.py": View(),
    "validate_batch_file.py": View(
        tables=(Table("errors", _cols(("line", "line"), ("error", "message"))),),
        only_set=frozenset({"blank_lines", "invalid_lines", "errors_total"}),
    ),
    "list_models.py": View(
        tables=(
            Table(
                "models",
                _cols(
                    ("rank", "for_file.rank"),
                    ("model", "id"),
                    ("kind", "kind"),
                    ("$/1M in / out, 24h", PRICE),
                    ("1h", PRICE_1H),
                    ("this file, 24h", "{for_file.usd.24h}"),
                    ("1h ", "{for_file.usd.1h}"),
                    ("thinks", "reasoning.efforts"),
                    ("not eligible", "for_file.why_not"),
                ),
            ),
        )
    ),
    "list_batches.py": View(
        tables=(
            Table(
                "batches",
                _cols(
                    ("batch", "batch_id"),
                    ("status", "status"),
                    ("created", "created_at"),
                    ("window", "completion_window"),
                    ("done", PROGRESS),
                    ("failed", "request_counts.failed"),
                ),
            ),
            Table(
                "jobs",
                _cols(
                    ("job", "job"),
                    ("status", "status"),
                    ("requests", "requests"),
                    ("rounds", "rounds"),
                    ("updated", "updated_at"),
                    ("batches", "batches"),
                ),
            ),
        )
    ),
    "submit.py": View(
        tables=(
            BATCHES,
            Table(
                "plan",
                _cols(
                    ("chunk", "index"),
                    ("lines", "{start_line}-{end_line}"),
                    ("requests", "requests"),
                    ("bytes", "bytes"),
                ),
                min_rows=2,
            ),
        ),
        hide=frozenset({"metadata", "endpoints"}),
    ),
    "poll.py": View(tables=(BATCHES,), only_set=frozenset({"timed_out"})),
    "fetch_results.py": FETCH,
    "run_batch.py": View(tables=FETCH.tables, hide=FETCH.hide, only_set=FETCH.only_set),
    "cancel_batch.py": View(
        tables=(
            Table(
                "batches", _cols(("batch", "batch_id"), ("action", "action"), ("status", "status"), ("why", "reason"))
            ),
        )
    ),
    "retry_failed.py": View(tables=(BATCHES,), only_set=frozenset({"dry_run"})),
}


# -- values ---------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    from .output import one_line

    return one_line(text)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _path(text: str) -> str:
    if os.path.isabs(text):
        from .commands import display_path

        return display_path(text)
    return text


def size(n: float) -> str:
    if n < 1000:
        return f"{int(n)} B"
    for unit in ("kB", "MB", "GB"):
        n /= 1000.0
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}"
    return str(n)  # not reached


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))


def words(key: str) -> str:
    """A field name as a label: ``eta_seconds`` → ``eta``, ``request_counts`` → ``request counts``."""
    for suffix in ("_seconds", "_at"):
        if key.endswith(suffix) and len(key) > len(suffix):
            key = key[: -len(suffix)]
    return key.replace("_", " ")


def scalar(value: Any, key: str = "") -> str:
    """One value, in words."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if key.endswith("_seconds"):
            return duration(value)
        if key.endswith("_at") and value > 1e8:
            return _when(value)
        if key == "bytes":
            return size(value)
        if key == "rate":
            return f"{value:g} requests/s"
        if key == "usd" or key.endswith("_usd"):
            return f"${value}"
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str):
        if key == "usd" or key.endswith("_usd"):
            return f"${value}"
        return _one_line(_path(value))
    if isinstance(value, list):
        return _items(value, key)
    if isinstance(value, dict):
        return inline(value)
    return _one_line(str(value))


def _items(values: Sequence[Any], key: str = "") -> str:
    shown = [scalar(v, key) for v in values[:MAX_ITEMS] if not isinstance(v, (dict, list))]
    more = len(values) - MAX_ITEMS
    return ", ".join(shown) + (f", … ({len(values)} in all)" if more > 0 else "")


def money(d: Dict[str, Any]) -> Optional[str]:
    """An amount: ``$1.37 (basis; range $1.20 to $1.60)``, from an object with ``usd`` (or
    only a ``low``/``high`` range), whatever else it holds."""

    def usd(v: Any) -> Optional[str]:
        if isinstance(v, dict):
            v = v.get("usd")
        return None if v is None or isinstance(v, (dict, list)) else f"${v}"

    low = usd(d.get("low")) or usd(d.get("low_usd"))
    high = usd(d.get("high")) or usd(d.get("high_usd"))
    head = usd(d.get("usd"))
    if head is None and low is None:
        return None
    span = f"{low} to {high or 'unbounded'}" if low else None
    basis = d.get("basis") if isinstance(d.get("basis"), str) else d.get("source")
    basis = _BASIS_WORDS.get(basis, basis) if isinstance(basis, str) else basis
    notes = [_one_line(basis)] if isinstance(basis, str) and basis else []
    if head is None:
        return f"{span}" + (f" ({'; '.join(notes)})" if notes else "")
    if span and span != f"{head} to {head}":
        notes.append(f"range {span}")
    return head + (f" ({'; '.join(notes)})" if notes else "")


# The codes of a cost's ``basis`` (workflow/reports.py says what each means), in words.
_BASIS_WORDS = {
    "server": "the server's estimate",
    "price_table": "price table",
    "billed": "billed",
    "estimated": "estimated from the price table",
}

_FIELD_NAME = re.compile(r"[a-z][a-z0-9_]*")


def inline(d: Dict[str, Any]) -> str:
    """An object on one line: counts as ``30 good, 2 empty`` (zeros left out unless all are
    zero), other fields as ``name value``; an amount as ``money``."""
    m = money(d)
    if m is not None:
        return m
    counts = {k: v for k, v in d.items() if isinstance(v, int) and not isinstance(v, bool)}
    if counts and len(counts) == len(d) and not all(_FIELD_NAME.fullmatch(k) for k in d):
        return ", ".join(f"{_one_line(k)} ({v})" for k, v in counts.items())  # by name: models, endpoints
    if counts and len(counts) == len(d) and any(counts.values()):
        return ", ".join(f"{v} {words(k)}" for k, v in counts.items() if v)
    parts = []
    for k, v in d.items():
        if v is None or v == [] or v == {}:
            continue
        if isinstance(v, int) and not isinstance(v, bool):
            parts.append(f"{v} {words(k)}")
        elif isinstance(v, dict):
            parts.append(f"{words(k)} ({inline(v)})")
        else:
            parts.append(f"{words(k)} {scalar(v, k)}")
    return ", ".join(parts)


# -- tables ---------------------------------------------------------------------------------


def lookup(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


_FIELD = re.compile(r"\{([^{}]+)\}")


def cell(row: Dict[str, Any], value: str) -> str:
    """A table cell: a field path, or a template of them (empty when any is missing)."""
    if "{" not in value:
        return _clip(scalar(lookup(row, value), value.rsplit(".", 1)[-1]), MAX_CELL)
    found: List[str] = []

    def sub(m: Any) -> str:
        v = lookup(row, m.group(1))
        text = scalar(v, m.group(1).rsplit(".", 1)[-1]) if v is not None else ""
        found.append(text)
        return text

    text = _FIELD.sub(sub, value)
    return "" if not all(found) else _clip(text, MAX_CELL)


def table(rows: Sequence[Dict[str, Any]], columns: Sequence[Column]) -> List[str]:
    """Rows as aligned text (numbers right-aligned); empty columns left out."""
    shown = [r for r in rows[:MAX_ROWS] if isinstance(r, dict)]
    grid = [[cell(r, c.value) for c in columns] for r in shown]
    keep = []
    for i, c in enumerate(columns):
        values = [g[i] for g in grid]
        if not any(values) or (c.same_hidden and len(set(values)) == 1 and len(values) > 0):
            continue
        keep.append(i)
    if not keep:
        return []
    heads = [columns[i].header.strip() for i in keep]
    body = [[g[i] for i in keep] for g in grid]
    widths = [max([len(h)] + [len(b[j]) for b in body]) for j, h in enumerate(heads)]
    numeric = [all(re.fullmatch(r"[$]?[\d.,/ -]*", b[j]) for b in body) for j in range(len(heads))]

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)]
        return "  ".join(out).rstrip()

    lines = [line(heads)] + [line(b) for b in body]
    if len(rows) > MAX_ROWS:
        lines.append(f"… and {len(rows) - MAX_ROWS} more (--json shows every one)")
    return lines


# -- the view -------------------------------------------------------------------------------


@dataclass
class _Block:
    fields: List[Tuple[str, str]] = field(default_factory=list)
    tables: List[Tuple[str, List[str]]] = field(default_factory=list)


def render(doc: Dict[str, Any], script: Optional[str] = None) -> str:
    """The view of ``script``'s report ``doc`` (any report: unknown scripts get the generic view)."""
    view = VIEWS.get(script or "", View())
    block = _Block()
    tabled = {t.path.split(".")[0]: t for t in view.tables}
    skip = set(NEVER) | set(view.hide) | {"next", "warnings"}
    keys = [k for k in view.lead if k in doc] + [k for k in doc if k not in view.lead]
    for key in keys:
        value = doc[key]
        if key in skip:
            continue
        if key in view.only_set and not value:
            continue
        if key in tabled or isinstance(value, dict) and any(t.path.startswith(key + ".") for t in view.tables):
            _add_tables(block, doc, key, view)
            if key in tabled and tabled[key].path == key:
                continue  # the list itself is the table
        if value is None or value == [] or value == {} or value == "":
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            if key not in tabled:
                block.fields.append((words(key), f"{len(value)} (--json lists them)"))
            continue
        text = scalar(value, key)
        if text:
            block.fields.append((words(key), _clip(text, MAX_VALUE)))
    lines: List[str] = []
    if block.fields:
        width = min(max(len(k) for k, _ in block.fields), 24)
        lines += [f"{k.ljust(width)}  {v}" for k, v in block.fields]
    for title, rows in block.tables:
        lines += ["", f"{title}:"] + ["  " + r for r in rows]
    warnings = doc.get("warnings") or []
    if warnings:
        lines.append("")
        lines += [f"warning: {_one_line(str(w))}" for w in warnings]
    if doc.get("next"):
        lines += ["", f"next: {_one_line(str(doc['next']))}"]
    return "\n".join(lines).strip("\n") + "\n"


def _add_tables(block: _Block, doc: Dict[str, Any], key: str, view: View) -> None:
    for t in view.tables:
        if t.path.split(".")[0] != key:
            continue
        rows = lookup(doc, t.path)
        if not isinstance(rows, list) or len(rows) < max(1, t.min_rows):
            continue
        lines = table(rows, t.columns)
        if lines:
            block.tables.append((t.title or words(t.path.rsplit(".", 1)[-1]), lines))


def render_error(message: str, hint: Optional[str], exit_code: int, script: Optional[str] = None) -> str:
    """An error for people: the message, the hint (each of its lines on a line of its own,
    escaped), and what the exit code means."""
    from .errors import EXIT_MEANINGS, exit_meaning

    lines = [f"error: {_one_line(message)}"]
    if hint:
        parts = [_one_line(p) for p in str(hint).split("\n")]
        lines.append(f"hint: {parts[0]}")
        lines += [f"      {p}" for p in parts[1:]]
    if exit_code in dict(EXIT_MEANINGS):
        meaning = exit_meaning(exit_code, script).replace("`", "")
        lines.append(f"(exit {exit_code}: {meaning})")
    return "\n".join(lines) + "\n"


__all__ = ["VIEWS", "Column", "Table", "View", "duration", "inline", "money", "render", "render_error", "size"]
