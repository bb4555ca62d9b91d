"""Options declared once: a dataclass field that carries its command-line flag gives the
argparse argument, the value read back from the parsed flags, and the flag written again in a
printed command (``next``), so that a printed command keeps every flag that matters.

    @dataclass
    class Options:
        window: Optional[str] = option("-w", "--completion-window", choices=WINDOWS, help="...")
        resubmit: bool = option("--resubmit", switch=True, help="...")

    add_arguments(Options, parser)      # the flags, in field order
    opts = from_args(Options, args)     # the dataclass from parsed flags
    to_argv(opts)                       # ["-w", "1h", "--resubmit"]: the flags whose value is not the default

Standard library only.
"""

from __future__ import annotations

import argparse
import dataclasses
from decimal import Decimal
from typing import Any, Callable, Dict, List, Optional, Sequence

_FLAG = "dwb_flag"


@dataclasses.dataclass(frozen=True)
class Flag:
    names: Sequence[str]
    help: str
    type: Optional[Callable[[str], Any]] = None
    choices: Optional[Sequence[str]] = None
    metavar: Optional[str] = None
    switch: bool = False  # store_true
    repeat: bool = False  # append, one value each time
    show: Optional[Callable[[Any], str]] = None  # the value as written in a printed command
    printed: bool = True  # False: never repeated in a printed command (e.g. a one-off choice)
    group: Optional[str] = None  # the --help section it is listed in (its title)
    exclusive: Optional[str] = None  # flags sharing a name here exclude one another
    hidden: bool = False  # taken, but not listed in --help

    @property
    def dest(self) -> str:
        return self.names[-1].lstrip("-").replace("-", "_")


def number(value: float) -> str:
    """A float flag as a person would type it: 5, 0.0000001 (never 5.0 or 1e-07)."""
    return format(Decimal(repr(value)).normalize(), "f")


def option(*names: str, help: str, default: Any = None, **kw: Any) -> Any:
    """A dataclass field that is also a command-line flag (see the module docstring)."""
    flag = Flag(tuple(names), help, **kw)
    if flag.repeat:
        return dataclasses.field(default_factory=list, metadata={_FLAG: flag})
    if flag.switch:
        default = bool(default)
    return dataclasses.field(default=default, metadata={_FLAG: flag})


def flags(cls: Any) -> List[Any]:
    """(field, Flag) of every field of ``cls`` that is a flag, in declaration order."""
    return [(f, f.metadata[_FLAG]) for f in dataclasses.fields(cls) if _FLAG in f.metadata]


def add_arguments(cls: Any, parser: Any) -> None:
    """The flags of ``cls`` on ``parser`` (a parser or an argument group), each in its --help
    section (``group``) and its set of flags that exclude one another (``exclusive``)."""
    groups: Dict[Optional[str], Any] = {None: parser}
    exclusive: Dict[str, Any] = {}
    for field, flag in flags(cls):
        if flag.group not in groups:
            groups[flag.group] = parser.add_argument_group(flag.group)
        where = groups[flag.group]
        if flag.exclusive is not None:
            if flag.exclusive not in exclusive:
                exclusive[flag.exclusive] = where.add_mutually_exclusive_group()
            where = exclusive[flag.exclusive]
        kw: Dict[str, Any] = {"help": argparse.SUPPRESS if flag.hidden else flag.help, "dest": field.name}
        if flag.switch:
            kw["action"] = "store_true"
        else:
            if flag.repeat:
                kw["action"] = "append"
                kw["default"] = []
            elif field.default is not dataclasses.MISSING and field.default is not None:
                kw["default"] = field.default
            for key in ("type", "choices", "metavar"):
                value = getattr(flag, key)
                if value is not None:
                    kw[key] = value
        where.add_argument(*flag.names, **kw)


def from_args(cls: Any, args: Any, **extra: Any) -> Any:
    """An instance of ``cls`` from parsed flags (``extra``: fields that are not flags)."""
    values = {field.name: getattr(args, field.name) for field, _ in flags(cls)}
    for field, flag in flags(cls):
        if flag.repeat:
            values[field.name] = list(values[field.name] or [])
    values.update(extra)
    return cls(**values)


def to_argv(obj: Any, **override: Any) -> List[str]:
    """The flags of ``obj`` whose value differs from the default, as command-line arguments
    (``override``: other values for some fields, None to leave a flag out)."""
    out: List[str] = []
    for field, flag in flags(type(obj)):
        if not flag.printed:
            continue
        value = override[field.name] if field.name in override else getattr(obj, field.name)
        default = [] if flag.repeat else field.default
        if value is None or value == default or value is False:
            continue
        name = flag.names[0]
        if flag.switch:
            out.append(name)
        elif flag.repeat:
            for item in value:
                out += [name, flag.show(item) if flag.show else str(item)]
        else:
            out += [name, flag.show(value) if flag.show else str(value)]
    return out


__all__ = ["Flag", "add_arguments", "flags", "from_args", "number", "option", "to_argv"]
