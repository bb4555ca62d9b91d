"""Answer budgets: whether a request's output limit (``max_tokens``; ``max_output_tokens`` on
``/v1/responses``) leaves room for what must come out within it: the thinking of a model that
reasons first (``reasoning.thinking_room``), and the smallest JSON object that its JSON mode or
schema allows. A request that fails either gets an HTTP 200 with an empty or cut-off answer.

The validator looks at a request only when its limit is below ``GATE``: a body that names no
effort and no JSON format is judged in its hot loop from its model's default thinking
(``default_room``); any other against the thinking of the effort it names (``Budgets.room``),
and by ``Budgets.check`` when that is more than its limit or it asks for JSON. Findings are
counted per model and kind (``Budgets.found``, merged over the pieces of a file by ``merge``)
and become one warning each (``warnings``), with the count, the first line numbers and the fix.

The smallest object a schema allows, in tokens (``schema_tokens``): its shortest JSON text (the
required properties only, each with its shortest value: ``""`` for a string, or as long as
``minLength``; ``0``; ``false``; ``null``; the fewest items an array takes; the shortest ``enum``
or ``const`` value; the shortest of ``anyOf``/``oneOf``; ``$ref`` followed within the schema),
written as models write it (a space after each colon and comma), at ``CHARS_PER_TOKEN``
characters a token, plus ``VALUE_TOKENS`` for each value, since an answer's values are rarely
the shortest. JSON mode without a schema counts as an object of one short property. An
estimate from below: a limit under it cannot hold the object.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from ..api import reasoning
from ..api.requestedit import EFFORT_FIELDS

CHARS_PER_TOKEN = 3  # quoted names and JSON punctuation come out in short tokens
VALUE_TOKENS = 2
MAX_DEPTH = 32  # nested schemas (and $ref cycles) deeper than this count as one short value
LINES_SHOWN = 5

# No thinking room and no JSON object needs this many tokens: a request whose limit is at
# least GATE is not looked at.
GATE = 2 * max(reasoning.THINKING_ROOM.values())

THINKING = "thinking"
JSON_OBJECT = "json"

# The body fields that ask for a JSON format (chat, /v1/responses), and all the fields that change
# what a limit must hold: those and the effort asked for. A body without any of them is judged
# by its model's default thinking alone.
FORMAT_FIELDS = ("response_format", "text")
FIELDS = frozenset((*EFFORT_FIELDS, *reasoning.TEMPLATE_OFF, *FORMAT_FIELDS))

_JSON_MODE_SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
_THINKING_URLS = ("/v1/chat/completions", "/v1/responses", "/v1/messages")
_CHAT = _THINKING_URLS[0]


def default_room(model: str) -> int:
    """The thinking room a request for ``model`` needs when it names no effort (0 when the model
    does not reason by default, or is unknown)."""
    return reasoning.thinking_room(model, {}, _CHAT) or 0


def json_schema_of(body: Dict[str, Any], url: str) -> Optional[Dict[str, Any]]:
    """The schema of the JSON object a request asks for (JSON mode: an object of one short
    property), or None when it asks for no JSON format."""
    if url == "/v1/responses":
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
        schema = fmt.get("schema") if isinstance(fmt, dict) else None
    else:
        fmt = body.get("response_format")
        inner = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = inner.get("schema") if isinstance(inner, dict) else None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        return _JSON_MODE_SCHEMA
    if kind == "json_schema":
        return schema if isinstance(schema, dict) else {}
    return None


def schema_tokens(schema: Dict[str, Any]) -> int:
    """The tokens of the smallest object ``schema`` allows (see the module docstring)."""
    chars, values = _shortest(schema, schema, 0)
    return -(-chars // CHARS_PER_TOKEN) + VALUE_TOKENS * values


def _dumped(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(", ", ": ")))


def _ref(root: Dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#"):
        return None
    node: Any = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _shortest(schema: Any, root: Dict[str, Any], depth: int) -> Tuple[int, int]:
    """(characters, values) of the shortest JSON text ``schema`` allows."""
    if depth > MAX_DEPTH or not isinstance(schema, dict):
        return 1, 1
    if "const" in schema:
        return _dumped(schema["const"]), 1
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return min(_dumped(v) for v in enum), 1
    if isinstance(schema.get("$ref"), str):
        return _shortest(_ref(root, schema["$ref"]), root, depth + 1)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return min(_shortest(o, root, depth + 1) for o in options)
    parts = schema.get("allOf")
    if isinstance(parts, list) and parts:
        return max(_shortest(p, root, depth + 1) for p in parts)
    kind = schema.get("type")
    if isinstance(kind, list):
        return min(
            (_shortest(dict(schema, type=k), root, depth + 1) for k in kind if isinstance(k, str)), default=(1, 1)
        )
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else None
    if kind == "object":
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = [r for r in schema.get("required") or () if isinstance(r, str)]
        chars, values = 2, 0
        for name in required:
            c, v = _shortest(props.get(name), root, depth + 1)
            chars += _dumped(name) + 2 + c
            values += v
        return chars + 2 * max(0, len(required) - 1), values
    if kind == "array":
        count = schema.get("minItems")
        count = count if type(count) is int and count > 0 else 0
        if not count:
            return 2, 0
        c, v = _shortest(schema.get("items"), root, depth + 1)
        return 2 + count * c + 2 * (count - 1), count * v
    if kind == "string":
        least = schema.get("minLength")
        return 2 + (least if type(least) is int and least > 0 else 0), 1
    if kind == "boolean":
        return 5, 1
    if kind == "null":
        return 4, 1
    return 1, 1  # a number, or any value


class Budgets:
    """One piece's requests whose limit is too small: ``found`` maps (model, kind) to [requests,
    smallest limit, largest limit, thinking room, object tokens, effort (None: the model's
    default), first lines], plain data that goes between processes."""

    def __init__(self) -> None:
        self.found: Dict[Tuple[str, str], List[Any]] = {}
        self._format: Any = None  # the last JSON format seen, and the tokens of its object
        self._format_tokens = 0
        self._rooms: Dict[Tuple[str, str, Optional[str]], int] = {}  # (model, url, effort) -> thinking room

    def entry(self, model: str, kind: str, room: int, tokens: int, effort: Optional[str]) -> List[Any]:
        """The counts of ``model``'s requests of ``kind`` (made when new), with the largest
        thinking room (and its effort) and object seen."""
        e = self.found.get((model, kind))
        if e is None:
            e = self.found[(model, kind)] = [0, GATE, 0, room, tokens, effort, []]
        else:
            _widen(e, room, tokens, effort)
        return e

    def add_run(self, model: str, room: int, count: int, low: int, high: int, lines: List[int]) -> None:
        """Add ``count`` requests for ``model`` that name no effort and no JSON format, whose
        limits (``low`` to ``high``) are below its default thinking ``room`` (their first lines)."""
        e = self.entry(model, THINKING, room, 0, None)
        e[0] += count
        e[1], e[2] = min(e[1], low), max(e[2], high)
        e[6] = sorted(e[6] + lines)[:LINES_SHOWN]

    def room(self, model: str, body: Dict[str, Any], url: str, effort: Optional[str]) -> int:
        """The thinking room of a request for ``model`` on ``url`` that asks for ``effort`` (the
        body's ``reasoning.requested_effort``), which depends on those three alone."""
        room = self._rooms.get((model, url, effort))
        if room is None:
            room = (reasoning.thinking_room(model, body, url) or 0) if url in _THINKING_URLS else 0
            self._rooms[(model, url, effort)] = room
        return room

    def check(
        self, model: str, body: Dict[str, Any], url: str, limit: int, line: int, effort: Optional[str], room: int
    ) -> None:
        """Count a request (asking for ``effort``, whose thinking takes ``room``) whose ``limit``
        cannot hold its thinking, or its thinking and the smallest JSON object it asks for."""
        if limit < room:
            e = self.entry(model, THINKING, room, 0, effort)
        else:
            fmt = body.get(FORMAT_FIELDS[1] if url == "/v1/responses" else FORMAT_FIELDS[0])
            if fmt is None:
                return
            if fmt != self._format:
                schema = json_schema_of(body, url)
                self._format, self._format_tokens = fmt, (schema_tokens(schema) if schema is not None else 0)
            tokens = self._format_tokens
            if not tokens or limit >= tokens + room:
                return
            e = self.entry(model, JSON_OBJECT, room, tokens, effort)
        e[0] += 1
        if limit < e[1]:
            e[1] = limit
        if limit > e[2]:
            e[2] = limit
        if e[0] <= LINES_SHOWN:
            e[6].append(line)


def _widen(e: List[Any], room: int, tokens: int, effort: Optional[str]) -> None:
    if room > e[3]:
        e[3], e[5] = room, effort
    e[4] = max(e[4], tokens)


def merge(total: Dict[Tuple[str, str], List[Any]], part: Dict[Tuple[str, str], List[Any]], base: int) -> None:
    """Add a piece's findings (its line numbers after ``base``) to the file's, in file order."""
    for key, (count, low, high, room, tokens, effort, lines) in part.items():
        if not count:
            continue
        e = total.get(key)
        if e is None:
            total[key] = [count, low, high, room, tokens, effort, [base + n for n in lines]]
            continue
        e[6].extend(base + n for n in lines[: max(0, LINES_SHOWN - e[0])])
        e[0] += count
        e[1], e[2] = min(e[1], low), max(e[2], high)
        _widen(e, room, tokens, effort)


def warnings(total: Dict[Tuple[str, str], List[Any]]) -> List[str]:
    """One warning per model and kind: what is too small, why, and the fix."""
    out = []
    for (model, kind), (count, low, high, room, tokens, effort, lines) in total.items():
        at = (
            ("line " if count == 1 else "lines ")
            + f"{', '.join(map(str, lines))}"
            + (f" and {count - len(lines)} more" if count > len(lines) else "")
        )
        most = f"at most {low} tokens" if low == high else f"at most {low} to {high} tokens"
        effort_words = f"at its default effort, {reasoning.DEFAULT_EFFORT}" if effort is None else f"at effort {effort}"
        if kind == THINKING:
            why = (
                f", but it thinks before it answers and the thinking counts against max_tokens (often {room} tokens "
                f"{effort_words}): the answers would come back empty"
            )
        else:
            why = (
                f" in JSON, but the smallest object their format allows takes about {tokens} tokens"
                + (f", after thinking that often takes {room} tokens {effort_words}" if room else "")
                + ": the objects would be cut off and would not parse"
            )
        out.append(f"{count} request(s) ({at}) ask {model} for {most}{why}; {fix(model, kind, high, room, tokens)}")
    return out


def fix(model: str, kind: str, high: int, room: int, tokens: int) -> str:
    """The settings that give the requests room: thinking off when the model can switch it off,
    else its lowest effort, with a max_tokens of the answer (the largest limit asked for, or the
    JSON object) plus that effort's thinking."""
    answer = tokens if kind == JSON_OBJECT else high
    if not room:
        return f"build with --max-tokens {tokens} or more"
    takes = reasoning.efforts(model) or ()
    if "none" in takes:
        off = "--reasoning none" + (f" and --max-tokens {tokens}" if high < tokens else "")
        return f"build with {off}, or --max-tokens {answer + room} or more"
    low = takes[0] if takes else reasoning.DEFAULT_EFFORT
    return f"build with --reasoning {low} and --max-tokens {answer + reasoning.THINKING_ROOM.get(low, room)} or more"
