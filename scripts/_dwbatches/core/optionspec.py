"""Options declared once: a dataclass field that carries its command-line flag gives the
argparse argument, the value read back from the parsed flags, and the flag written again in a
printed command (``next``), so that a printed command keeps every flag that matters.

    @dataclass
    class Options:
        window: Optional[str] = option("-w", "--completion-window", choices=WINDOWS, help="...")
        resubmit: bool = option("--resubmit", switch=True, help="...")

    add_arguments(Options, parser)      # the flags, in field order
    opts = from_args(Options, args)     # the dataclass from parsed flags
    check(opts)                         # each flag's own check, then the class's ``check_options()``
    to_argv(opts)                       # ["-w", "1h", "--resubmit"]: the flags whose value is not the default

A flag group several commands share is a dataclass of its own, composed in with ``group``
(``target: Target = group(Target)``): its flags are the command's, declared once. A
``positional`` field is an argument without a dash (``repeat``: any number of them), and
``const`` gives a flag whose value may be left out (``--answers`` alone means ``--answers .``).

Standard library only.
"""

from __future__ import annotations

import argparse
import dataclasses
from decimal import Decimal
from typing import Any, Callable, Dict, List, Optional, Sequence

_FLAG = "dwb_flag"
_GROUP = "dwb_group"
_TITLE = "dwb_title"


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
    positional: bool = False  # an argument without a dash, shown as ``names[0]`` (e.g. BATCH_ID)
    const: Optional[str] = None  # the value of the flag given alone (its value may be left out)
    check: Optional[Callable[[str, Any], None]] = None  # (flag, value): raises UsageError for a bad value
    required: bool = False  # argparse refuses the command without it

    @property
    def dest(self) -> str:
        return self.names[-1].lstrip("-").replace("-", "_")

    @property
    def label(self) -> str:
        """How an error names it: its long flag, or the name shown for a positional argument."""
        return self.names[0] if self.positional else self.names[-1]


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


def group(cls: Any, title: Optional[str] = None) -> Any:
    """A dataclass field holding a flag group (a dataclass of flags): its flags are the
    command's, listed in --help under ``title`` (those without a section of their own)."""
    return dataclasses.field(default_factory=cls, metadata={_GROUP: cls, _TITLE: title})


def groups(cls: Any) -> List[Any]:
    """The fields of ``cls`` that hold a flag group, in declaration order."""
    return [f for f in dataclasses.fields(cls) if _GROUP in f.metadata]


def flags(cls: Any) -> List[Any]:
    """(field, Flag) of every flag of ``cls``, those of its groups included, in declaration order."""
    return [(f, flag) for f, flag, _ in _sections(cls, None)]


def _sections(cls: Any, title: Optional[str]) -> List[Any]:
    """(field, Flag, its --help section) of every flag of ``cls``."""
    out: List[Any] = []
    for f in dataclasses.fields(cls):
        if _FLAG in f.metadata:
            flag = f.metadata[_FLAG]
            out.append((f, flag, flag.group if flag.group is not None else title))
        elif _GROUP in f.metadata:
            out += _sections(f.metadata[_GROUP], f.metadata[_TITLE] if f.metadata[_TITLE] is not None else title)
    return out


def names(cls: Any) -> List[str]:
    """Every option string of ``cls`` (``-w``, ``--completion-window``, ...), positional arguments aside."""
    return [n for _, flag in flags(cls) if not flag.positional for n in flag.names]


def in_range(
    example: str, at_least: Optional[float] = None, above: Optional[float] = None, at_most: Optional[float] = None
) -> Callable[[str, Any], None]:
    """The check of a numeric flag (``flags.check_number``): finite and in range, else exit 2
    naming the flag, with ``example``."""
    from .flags import check_number

    def check_it(flag: str, value: Any) -> None:
        check_number(flag, value, example, at_least=at_least, above=above, at_most=at_most)

    return check_it


def add_arguments(cls: Any, parser: Any) -> None:
    """The flags of ``cls`` on ``parser`` (a parser or an argument group), each in its --help
    section (``group``) and its set of flags that exclude one another (``exclusive``)."""
    sections: Dict[Optional[str], Any] = {None: parser}
    exclusive: Dict[str, Any] = {}
    for field, flag, section in _sections(cls, None):
        if section not in sections:
            sections[section] = parser.add_argument_group(section)
        where = sections[section]
        if flag.exclusive is not None:
            if flag.exclusive not in exclusive:
                exclusive[flag.exclusive] = where.add_mutually_exclusive_group()
            where = exclusive[flag.exclusive]
        kw: Dict[str, Any] = {"help": argparse.SUPPRESS if flag.hidden else flag.help}
        if flag.positional:
            kw["metavar"] = flag.metavar or flag.names[0]
        else:
            kw["dest"] = field.name
            if flag.required:
                kw["required"] = True
        if flag.switch:
            kw["action"] = "store_true"
        else:
            if flag.repeat:
                if flag.positional:
                    kw["nargs"] = "*"
                else:
                    kw["action"] = "append"
                kw["default"] = []
            elif field.default is not dataclasses.MISSING and field.default is not None:
                kw["default"] = field.default
            if flag.const is not None:
                kw.update(nargs="?", const=flag.const)
            for key in ("type", "choices", "metavar"):
                value = getattr(flag, key)
                if value is not None and key not in kw:
                    kw[key] = value
        where.add_argument(*([field.name] if flag.positional else flag.names), **kw)


def from_args(cls: Any, args: Any, **extra: Any) -> Any:
    """An instance of ``cls`` (its groups included) from parsed flags (``extra``: fields that
    are not flags)."""
    values: Dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if _GROUP in field.metadata:
            values[field.name] = from_args(field.metadata[_GROUP], args)
        elif _FLAG in field.metadata:
            value = getattr(args, field.name)
            values[field.name] = list(value or []) if field.metadata[_FLAG].repeat else value
    values.update(extra)
    return cls(**values)


def check(obj: Any) -> Any:
    """Refuse bad values (exit 2, naming the flag): each flag's own ``check``, then each group's
    and the class's ``check_options()`` (what involves several flags). Returns ``obj``."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if _GROUP in field.metadata:
            check(value)
        elif _FLAG in field.metadata:
            flag = field.metadata[_FLAG]
            if flag.check is not None and value is not None:
                flag.check(flag.label, value)
    check_options = getattr(obj, "check_options", None)
    if check_options is not None:
        check_options()
    return obj


def parse(cls: Any, argv: Sequence[str]) -> Any:
    """``cls`` from command-line arguments alone (a parser holding only its flags)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(cls, parser)
    return from_args(cls, parser.parse_args(list(argv)))


def to_argv(obj: Any, **override: Any) -> List[str]:
    """The flags of ``obj`` (its groups included) whose value differs from the default, as
    command-line arguments, positional arguments first (``override``: other values for some
    fields, None to leave a flag out)."""
    positional: List[str] = []
    out: List[str] = []
    _argv(obj, override, positional, out)
    return positional + out


def _argv(obj: Any, override: Dict[str, Any], positional: List[str], out: List[str]) -> None:
    for field in dataclasses.fields(obj):
        if _GROUP in field.metadata:
            _argv(getattr(obj, field.name), override, positional, out)
            continue
        if _FLAG not in field.metadata:
            continue
        flag = field.metadata[_FLAG]
        if not flag.printed:
            continue
        value = override[field.name] if field.name in override else getattr(obj, field.name)
        default = [] if flag.repeat else field.default
        if value is None or value is False or (value == default and not flag.positional):
            continue
        show = flag.show or str
        name = flag.names[0]
        if flag.positional:
            positional += [show(item) for item in value] if flag.repeat else [show(value)]
        elif flag.switch:
            out.append(name)
        elif flag.repeat:
            for item in value:
                out += [name, show(item)]
        elif flag.const is not None and value == flag.const:
            out.append(name)
        else:
            out += [name, show(value)]


__all__ = [
    "Flag",
    "add_arguments",
    "check",
    "flags",
    "from_args",
    "group",
    "groups",
    "in_range",
    "names",
    "number",
    "option",
    "parse",
    "to_argv",
]
