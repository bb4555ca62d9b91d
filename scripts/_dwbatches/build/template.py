"""Prompt templates: "...{column}..." rendered against a CSV row or a JSON object.

``Template`` says which placeholder a row lacks and which names exist; literal braces are
written doubled (``{{`` and ``}}``).
"""

from __future__ import annotations

import json
import string
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..core.errors import InputError, UsageError


def placeholder_hint(name: str, usual: str) -> str:
    """The hint for a placeholder the input lacks: a JSON example written into the template
    (``{"label": ...}``) reads as a placeholder; literal braces are written doubled."""
    if any(c in name for c in "\"':") or name.strip() != name:
        return (
            'To write literal braces, e.g. a JSON example such as {"label": "..."}, double them: '
            '{{"label": "..."}}. ' + usual
        )
    return usual


class Template:
    """A ``str.format``-style template whose placeholders name columns or JSON fields.

    ``{name}`` looks the name up as is (names may contain spaces); for JSON rows a dotted
    ``{a.b}`` also reaches into nested objects. ``{{`` and ``}}`` are literal braces. Values
    are inserted as text; JSON objects and arrays as compact JSON; null as an empty string.
    """

    def __init__(self, text: str):
        self.text = text
        self.parts: List[Tuple[str, Optional[str], str, Optional[str]]] = []
        try:
            for literal, name, spec, conv in string.Formatter().parse(text):
                self.parts.append((literal, name, spec or "", conv))
        except ValueError as exc:
            raise UsageError(
                f"the template is not valid: {exc}",
                hint="Write placeholders as {column}; use {{ and }} for literal braces.",
            ) from None
        for _, name, _, _ in self.parts:
            if name is not None and not name.strip():
                raise UsageError(
                    "the template has an empty placeholder {}",
                    hint="Name a column or field inside the braces, e.g. {text}; use {{}} for literal braces.",
                )
        self.fields = [name for _, name, _, _ in self.parts if name is not None]
        # the usual template: text and plain {name}s, each value a string (a CSV cell): joined
        # at once (render's full path handles the rest, and says what is wrong)
        self._plain = (
            [(literal, name) for literal, name, spec, conv in self.parts]
            if all(not spec and conv is None for _, _, spec, conv in self.parts)
            else None
        )

    @staticmethod
    def lookup(row: Dict[str, Any], name: str, dotted: bool) -> Tuple[bool, Any]:
        if name in row:
            return True, row[name]
        if dotted and "." in name:
            cur: Any = row
            for part in name.split("."):
                if isinstance(cur, dict) and part in cur:
                    cur = cur[part]
                elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
                    cur = cur[int(part)]
                else:
                    return False, None
            return True, cur
        return False, None

    def missing(self, names: Iterable[str], dotted: bool = False) -> List[str]:
        """Placeholders that ``names`` (a header) cannot satisfy."""
        have = set(names)
        out = []
        for f in self.fields:
            if f in have or (dotted and f.split(".")[0] in have):
                continue
            if f not in out:
                out.append(f)
        return out

    def render(
        self, row: Dict[str, Any], line: int, what: str = "column", dotted: bool = False, source: Optional[str] = None
    ) -> str:
        plain = self._plain
        if plain is not None:
            try:
                if len(plain) == 1:  # "{text}", or a template without placeholders
                    literal, name = plain[0]
                    if name is None:
                        return literal
                    value = row[name]
                    if type(value) is str:
                        return literal + value
                else:
                    values = [row[name] if name is not None else "" for _, name in plain]
                    if all(type(v) is str for v in values):
                        return "".join([part for (literal, _), v in zip(plain, values) for part in (literal, v)])
            except (KeyError, TypeError):
                pass  # (the full path below says what is wrong)
        out: List[str] = []
        for literal, name, spec, conv in self.parts:
            out.append(literal)
            if name is None:
                continue
            found, value = self.lookup(row, name, dotted)
            if not found:
                available = ", ".join(str(k) for k in row) or "(none)"
                where = f"{source}: line {line}" if source else f"line {line}"
                raise InputError(
                    f"{where}: the template placeholder {{{name}}} is not a {what} of the "
                    f"input; available {what}s: {available}",
                    hint=placeholder_hint(name, f"Use one of the {what} names in the template."),
                    line=line,
                )
            if value is None:
                value = ""
            elif isinstance(value, (dict, list)):
                value = json.dumps(value, ensure_ascii=False)
            if conv == "r":
                value = repr(value)
            elif conv == "a":
                value = ascii(value)
            try:
                out.append(format(value, spec) if spec else str(value))
            except (ValueError, TypeError) as exc:
                raise InputError(f"line {line}: cannot format {{{name}}} with ':{spec}': {exc}", line=line) from None
        return "".join(out)
