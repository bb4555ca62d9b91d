"""Reports declared once: the fields a command prints on stdout, each with its JSON type and one
line for the reader. One declaration gives the "output (stdout, JSON)" paragraph of the
script's ``--help`` (``help_text``), the field lists of the docs (``inline``, ``listing``, written
by ``make docs``) and the check of a printed document against it (``problems``, run by
``tests/test_contract.py`` and by every test that runs a script). ``report``/``forms`` also
register the declaration under its script's name, where ``output.make_parser`` finds it
(``report_of``).

    REQUEST_COUNTS = obj(field("total", INT, "requests"), field("completed", INT), field("failed", INT))
    POLL = report(
        "poll.py",
        field("status", STR, "the job's status"),
        field("request_counts", REQUEST_COUNTS),
        field("answers", ANSWERS, "the answers of the job's last fetch", null="until a fetch"),
        field("expired_at", INT, "when it expired", only="when present"),
    )

A field with ``only`` may be absent (the text says when it is there); a field with ``null`` may be
null (the text says when). ``one_of`` is for the rare field that really has two shapes.
A command whose report has several forms (``submit.py`` and ``--dry-run``) declares one ``Shape``
each; a document is checked against the form it is closest to. A shape several fields share is
named (``obj(..., name="batch")``): --help lists its fields once, then says {as above}; a field
with ``ref`` leaves its fields to another script's --help.

Standard library only.
"""

from __future__ import annotations

import dataclasses
import textwrap
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union


@dataclass(frozen=True)
class Scalar:
    kind: str  # str, int, number (int or float), bool


@dataclass(frozen=True)
class Obj:
    fields: Tuple[Field, ...]
    name: str = ""  # a shape several fields share: --help lists its fields once, then "{as above}"


@dataclass(frozen=True)
class ListOf:
    item: Type


@dataclass(frozen=True)
class MapOf:
    """An object whose keys are names (models, endpoints, job directories), each with a value."""

    key: str  # what the keys are, for the reader
    value: Type


@dataclass(frozen=True)
class OneOf:
    options: Tuple[Type, ...]


Type = Union[Scalar, Obj, ListOf, MapOf, OneOf]

STR, INT, NUMBER, BOOL = Scalar("str"), Scalar("int"), Scalar("number"), Scalar("bool")


@dataclass(frozen=True)
class Field:
    name: str
    type: Type
    text: str = ""  # one line for the reader
    only: Optional[str] = None  # may be absent: when it is there ("with --dry-run")
    null: Optional[str] = None  # may be null: when ("until a fetch"; "" when it goes without saying)
    ref: Optional[str] = None  # another script whose --help lists its fields ("submit.py"); say so in text

    @property
    def optional(self) -> bool:
        return self.only is not None

    @property
    def nullable(self) -> bool:
        return self.null is not None


@dataclass(frozen=True)
class Shape:
    """One form of a command's report: its fields, and when it is printed (None: the usual one)."""

    fields: Tuple[Field, ...]
    when: Optional[str] = None


@dataclass(frozen=True)
class Report:
    script: str
    shapes: Tuple[Shape, ...]

    def field(self, name: str) -> Field:
        """The top-level field ``name`` (of the first form that has it)."""
        for shape in self.shapes:
            for f in shape.fields:
                if f.name == name:
                    return f
        raise KeyError(f"{self.script} declares no field {name!r}")


def field(
    name: str,
    type: Type,
    text: str = "",
    only: Optional[str] = None,
    null: Optional[str] = None,
    ref: Optional[str] = None,
) -> Field:
    return Field(name, type, text, only, null, ref)


def obj(*fields: Field, name: str = "") -> Obj:
    return Obj(tuple(fields), name)


def referring(fields: Sequence[Field], script: str) -> Tuple[Field, ...]:
    """``fields`` as another report lists them: those with fields of their own say that
    ``script``'s --help lists them (the check still checks them whole)."""
    return tuple(dataclasses.replace(f, ref=script) if _subfields(f.type) else f for f in fields)


def list_of(item: Type) -> ListOf:
    return ListOf(item)


def map_of(key: str, value: Type) -> MapOf:
    return MapOf(key, value)


def one_of(*options: Type) -> OneOf:
    return OneOf(tuple(options))


def extend(base: Obj, *fields: Field, drop: Sequence[str] = (), name: Optional[str] = None) -> Obj:
    """``base`` with ``fields`` added after its own (a field of the same name replaced in place)
    and the fields named in ``drop`` left out."""
    new = {f.name: f for f in fields}
    kept = [new.pop(f.name, f) for f in base.fields if f.name not in drop]
    return Obj(tuple(kept) + tuple(new.values()), base.name if name is None else name)


def report(script: str, *fields: Field) -> Report:
    return declare(Report(script, (Shape(tuple(fields)),)))


def forms(script: str, *shapes: Shape) -> Report:
    return declare(Report(script, tuple(shapes)))


_REPORTS: Dict[str, Report] = {}


def declare(rep: Report) -> Report:
    """Make ``rep`` the report of its script (``report_of``: what its --help shows)."""
    _REPORTS[rep.script] = rep
    return rep


def report_of(script: Optional[str]) -> Optional[Report]:
    """The report declared for ``script`` (a file name), or None."""
    return _REPORTS.get(script or "")


# -- text ------------------------------------------------------------------------------------------


def _note(f: Field) -> str:
    """What is said of a field in parentheses: when it is there, what it is, when it is null."""
    parts = []
    if f.only:
        parts.append(f"only {f.only}")
    if f.text:
        parts.append(f.text)
    if f.null:
        parts.append(f"null {f.null}")
    text = "; ".join(parts)
    if f.only and f.text:
        text = f"only {f.only}: " + "; ".join(parts[1:])
    return text


def _inner(t: Type, seen: Set[str]) -> str:
    """A type's fields as the help shows them: {a, b (text)} for an object, [{...}] for a list
    of objects, {MODEL: {...}} for a map; nothing for a plain value. A named shape already
    shown (``seen``) is {as above}."""
    if isinstance(t, Obj):
        if t.name and t.name in seen:
            return "{as above}"
        if t.name:
            seen.add(t.name)
        return "{" + ", ".join(_item(f, seen) for f in t.fields) + "}"
    if isinstance(t, ListOf):
        inner = _inner(t.item, seen)
        return f"[{inner}]" if inner else ""
    if isinstance(t, MapOf):
        inner = _inner(t.value, seen)
        return "{" + f"{t.key}: {inner}" + "}" if inner else ""
    if isinstance(t, OneOf):
        shown = [s for s in (_inner(o, seen) for o in t.options) if s]
        return " or ".join(shown)
    return ""


def _item(f: Field, seen: Set[str]) -> str:
    note = _note(f)
    inner = "" if f.ref else _inner(f.type, seen)  # (the other script's --help lists them)
    out = f.name
    if note:
        out += f" ({note})"
    if inner:
        out += " " + inner
    return out


def help_text(rep: Report, width: int = 95) -> str:
    """The "output (stdout, JSON): ..." paragraphs of a script's --help, one per form."""
    paras = []
    seen: Set[str] = set()
    for shape in rep.shapes:
        head = "output" + (f" {shape.when}" if shape.when else "") + " (stdout, JSON): "
        body = head + ", ".join(_item(f, seen) for f in shape.fields) + "."
        paras.append(textwrap.fill(body, width, break_on_hyphens=False, break_long_words=False))
    return "\n\n".join(paras)


def inline(rep: Report, names: Sequence[str]) -> str:
    """Markdown for the fields ``names`` (``a.b`` for a field inside another) on one line:
    `name` (text), ... (SKILL.md's snippets)."""
    out = []
    for name in names:
        f = find(rep, name)
        out.append(f"`{name}`" + (f" ({f.text})" if f.text else ""))
    return ", ".join(out)


def listing(rep: Report) -> str:
    """Markdown for every field of a report, nested fields indented, a shared shape listed once
    (docs/scripts.md)."""
    lines: List[str] = []
    seen: Set[str] = set()
    for shape in rep.shapes:
        depth = 0
        if len(rep.shapes) > 1:
            lines.append(f"- *{shape.when or 'by default'}:*")
            depth = 1
        for f in shape.fields:
            _listing(f, depth, lines, seen)
    return "\n".join(lines) + "\n"


def _listing(f: Field, depth: int, lines: List[str], seen: Set[str]) -> None:
    note = _note(f)
    named = _named(f.type)
    again = bool(named) and named in seen
    kind = _kind(f.type) + (" or null" if f.nullable else "") + (", as above" if again else "")
    lines.append("  " * depth + f"- `{f.name}` ({kind})" + (f": {note}" if note else ""))
    if f.ref or again:
        return
    if named:
        seen.add(named)
    for sub in _subfields(f.type):
        _listing(sub, depth + 1, lines, seen)


def _named(t: Type) -> str:
    """The name of the shared shape a type is (or holds in a list), or ""."""
    if isinstance(t, ListOf):
        return _named(t.item)
    return t.name if isinstance(t, Obj) else ""


def _kind(t: Type) -> str:
    if isinstance(t, Scalar):
        return {"str": "string", "int": "integer", "number": "number", "bool": "boolean"}[t.kind]
    if isinstance(t, Obj):
        return "object"
    if isinstance(t, ListOf):
        return f"list of {_kind(t.item)}"
    if isinstance(t, MapOf):
        return f"object of {t.key}: {_kind(t.value)}"
    return " or ".join(_kind(o) for o in t.options)


def _subfields(t: Type) -> Tuple[Field, ...]:
    if isinstance(t, Obj):
        return t.fields
    if isinstance(t, (ListOf, MapOf)):
        return _subfields(t.item if isinstance(t, ListOf) else t.value)
    if isinstance(t, OneOf):
        out: Tuple[Field, ...] = ()
        for o in t.options:
            out += _subfields(o)
        return out
    return ()


def find(rep: Report, path: str) -> Field:
    """The field at ``path`` ("estimated_cost.usd", "batches.batch_id")."""
    head, *rest = path.split(".")
    f = rep.field(head)
    for name in rest:
        matches = [s for s in _subfields(f.type) if s.name == name]
        if not matches:
            raise KeyError(f"{rep.script}: {path}: no field {name!r}")
        f = matches[0]
    return f


# -- checking a document ---------------------------------------------------------------------------


def problems(rep: Report, doc: Any) -> List[str]:
    """What in ``doc`` differs from the report declared: keys printed but not declared, values of
    another JSON type, declared fields missing (nothing: it is one of the report's forms)."""
    return [f"{rep.script}: {p}" for p in _nearest(rep, doc)[1]]


def form_of(rep: Report, doc: Any) -> int:
    """The index of the form of ``rep`` that ``doc`` is (or is nearest to)."""
    return _nearest(rep, doc)[0]


def _nearest(rep: Report, doc: Any) -> Tuple[int, List[str]]:
    best: Tuple[int, List[str]] = (0, [])
    for i, shape in enumerate(rep.shapes):
        found = _check_obj(Obj(shape.fields), doc, "")
        if i == 0 or len(found) < len(best[1]):
            best = (i, found)
    return best


def _check_obj(t: Obj, value: Any, where: str) -> List[str]:
    if not isinstance(value, dict):
        return [f"{where or 'the document'}: {_json_type(value)}, declared an object"]
    out = []
    declared = {f.name: f for f in t.fields}
    for key in value:
        if key not in declared:
            out.append(f"{where}{key}: printed but not declared")
    for f in t.fields:
        if f.name not in value:
            if not f.optional:
                out.append(f"{where}{f.name}: declared but not printed")
            continue
        out += check_value(f, value[f.name], f"{where}{f.name}")
    return out


def check_value(f: Field, value: Any, where: str) -> List[str]:
    if value is None:
        return [] if f.nullable else [f"{where}: null, declared not nullable"]
    return _check(f.type, value, where)


def _check(t: Type, value: Any, where: str) -> List[str]:
    if isinstance(t, Scalar):
        ok = {
            "str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
        }[t.kind]
        return [] if ok else [f"{where}: {_json_type(value)}, declared {t.kind}"]
    if isinstance(t, Obj):
        return _check_obj(t, value, where + ".")
    if isinstance(t, ListOf):
        if not isinstance(value, list):
            return [f"{where}: {_json_type(value)}, declared a list"]
        out: List[str] = []
        for i, item in enumerate(value):
            out += _check(t.item, item, f"{where}[{i}]")
        return out
    if isinstance(t, MapOf):
        if not isinstance(value, dict):
            return [f"{where}: {_json_type(value)}, declared an object of {t.key}"]
        out = []
        for key, item in value.items():
            out += _check(t.value, item, f"{where}[{key!r}]")
        return out
    tried = [_check(o, value, where) for o in t.options]
    return [] if any(not p for p in tried) else min(tried, key=len)


def _json_type(value: Any) -> str:
    names: Dict[type, str] = {bool: "bool", int: "int", float: "number", str: "str", list: "a list", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


__all__ = [
    "BOOL",
    "INT",
    "NUMBER",
    "STR",
    "Field",
    "ListOf",
    "MapOf",
    "Obj",
    "OneOf",
    "Report",
    "Scalar",
    "Shape",
    "Type",
    "check_value",
    "declare",
    "extend",
    "field",
    "find",
    "form_of",
    "forms",
    "help_text",
    "inline",
    "list_of",
    "listing",
    "map_of",
    "obj",
    "one_of",
    "problems",
    "referring",
    "report",
    "report_of",
]
