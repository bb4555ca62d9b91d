"""Every command's options are declared once (``optionspec``): the flags, the parsed options and
every printed command come from that declaration.

- For every options class in the package (found by scanning it, so a new class is covered
  without a word here) and generated values: ``from_args(parse(to_argv(opts))) == opts``: a
  printed command gives back the options it was written from, every flag kept.
- Each script's --help lists exactly the flags its declaration (``OPTIONS``) and the shared
  groups it takes declare.
- The flags a user gives that the next step needs go into the commands a script prints (the
  connection, --all-batches, the wait flags of run_batch.py), and those commands run as printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import pkgutil
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import _dwbatches
import pytest
from _dwbatches.core import compat, optionspec
from _dwbatches.core.errors import LOCAL_SCRIPTS
from _dwbatches.core.optiongroups import BatchList, Connection, View
from _dwbatches.core.output import BATCH_LISTS
from helpers import SUBPROCESS_VAR, make_job, ok_json, run, write_input
from sandbox_helper import SCRIPTS

SCRIPT_NAMES = sorted(p.name for p in SCRIPTS.glob("*.py") if p.name != "sandbox_server.py")


def options_classes() -> List[type]:
    """Every dataclass in the package with a flag or a flag group among its fields."""
    found: Dict[str, type] = {}
    for info in pkgutil.walk_packages(_dwbatches.__path__, "_dwbatches."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__:
                if optionspec.flags(obj) or optionspec.groups(obj):
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


CLASSES = options_classes()

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789._=:,é"


def token(rng: random.Random) -> str:
    """A value as a user might type it (never starting with a dash, never empty)."""
    first = rng.choice("abcxyzé0123")
    return first + "".join(rng.choice(TOKEN_CHARS) for _ in range(rng.randrange(0, 12)))


def generate(cls: Any, rng: random.Random) -> Any:
    """Options of ``cls`` with random values: each flag at its default or another value it can
    take; at most one flag of each set that excludes one another; printed=False flags at their
    default (a printed command leaves them out on purpose)."""
    flags = {field.name: flag for field, flag in optionspec.flags(cls)}
    groups = {field.name: field.default_factory for field in optionspec.groups(cls)}
    values: Dict[str, Any] = {}
    used_exclusive = set()
    for field in dataclasses.fields(cls):
        if field.name in groups:
            values[field.name] = generate(groups[field.name], rng)
            continue
        flag = flags.get(field.name)
        if flag is None or not flag.printed:
            continue
        if flag.exclusive is not None:
            if flag.exclusive in used_exclusive or rng.random() < 0.5:
                continue
            used_exclusive.add(flag.exclusive)
        elif not flag.required and not flag.positional and rng.random() < 0.3:
            continue  # the default
        values[field.name] = value_for(flag, rng)
    return cls(**values)


def value_for(flag: optionspec.Flag, rng: random.Random) -> Any:
    if flag.switch:
        return rng.random() < 0.7
    if flag.repeat:
        return [one_value(flag, rng) for _ in range(rng.randrange(0, 4))]
    if flag.const is not None and rng.random() < 0.4:
        return flag.const
    return one_value(flag, rng)


def one_value(flag: optionspec.Flag, rng: random.Random) -> Any:
    if flag.choices:
        return rng.choice(list(flag.choices))
    if flag.type is int:
        return rng.choice([0, 1, 7, 1000, rng.randrange(0, 10**9)])
    if flag.type is float:
        return rng.choice([0.0, 1e-7, 0.5, 3.0, 540.0, 1e6, rng.uniform(0, 1e4), float(rng.randrange(1, 99))])
    return token(rng)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__.rsplit('.', 1)[-1]}.{c.__name__}")
def test_a_printed_command_gives_back_the_options_it_was_written_from(cls):
    rng = random.Random(f"{cls.__module__}.{cls.__name__}")
    opts = generate(cls, rng)
    assert optionspec.parse(cls, optionspec.to_argv(opts)) == opts
    # optionspec.parse is a parser made by add_arguments, read back by from_args: the same parser,
    # made once, reads the other 299 (a parser keeps nothing from one parse_args to the next)
    parser = argparse.ArgumentParser(add_help=False)
    optionspec.add_arguments(cls, parser)
    for _ in range(299):
        opts = generate(cls, rng)
        argv = optionspec.to_argv(opts)
        assert optionspec.from_args(cls, parser.parse_args(argv)) == opts, argv


def test_the_scan_finds_every_script_s_declaration():
    names = {f"{c.__module__}.{c.__name__}" for c in CLASSES}
    for script in SCRIPT_NAMES:
        module = load(script)
        opts = module.OPTIONS
        assert f"{opts.__module__}.{opts.__name__}" in names or not dataclasses.fields(opts), script
    assert len(CLASSES) >= 15  # the shared groups and every command's


def load(script: str) -> Any:
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module(Path(script).stem)


def listed_flags(help_text: str) -> List[str]:
    """The option strings --help lists: each line of a section that starts with a dash."""
    out: List[str] = []
    for line in help_text.splitlines():
        m = re.match(r"^  (-\S.*?)(?:\s{2,}|$)", line)
        if m:
            out += [part.split()[0] for part in m.group(1).split(", ")]
    return out


@pytest.mark.parametrize("script", SCRIPT_NAMES)
def test_help_lists_exactly_the_declared_flags(script):
    proc = subprocess.run([sys.executable, str(SCRIPTS / script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    options = load(script).OPTIONS
    groups = [options, View]
    if script not in LOCAL_SCRIPTS:
        groups.append(Connection)
    if script in BATCH_LISTS:
        groups.append(BatchList)
    declared = {"-h", "--help", "--version"}
    for cls in groups:
        declared |= {
            n for _, flag in optionspec.flags(cls) if not flag.hidden and not flag.positional for n in flag.names
        }
    listed = listed_flags(proc.stdout)
    assert sorted(set(listed)) == sorted(declared), script
    assert len(listed) == len(set(listed)), script  # each once
    usage = proc.stdout.split("\n\n", 1)[0]
    for _, flag in optionspec.flags(options):
        if flag.positional:
            assert (flag.metavar or flag.names[0]) in usage, (script, flag.names)


# -- flags a printed command must keep ---------------------------------------------------------


def runs_as_printed(command: str, env: Dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, shell=True, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(compat.IS_WINDOWS, reason="POSIX shell quoting of the printed command")
def test_a_base_url_given_as_a_flag_goes_into_every_next_command(sandbox):
    """The job talks only to its own server: a next step without the user's --base-url would
    go to the configured server and be refused."""
    write_input("in.jsonl", 3)
    env = sandbox.env()
    url = env.pop("DOUBLEWORD_BASE_URL")
    doc = ok_json(run("submit.py", "in.jsonl", "--base-url", url, env=env, subprocess=True))
    assert shlex.split(doc["next"])[-2:] == ["--base-url", url], doc["next"]
    polled = runs_as_printed(doc["next"], env)
    assert polled.returncode == 0, polled.stderr
    nxt = json.loads(polled.stdout)["next"]
    assert "--base-url" in shlex.split(nxt), nxt
    ran = runs_as_printed(nxt, env)  # a poll again, or the fetch
    assert ran.returncode in (0, 6), ran.stderr
    # a local script's command takes no connection flags
    bad = runs_as_printed(
        f"{shlex.quote(sys.executable)} {shlex.quote(str(SCRIPTS / 'list_models.py'))} --for in.jsonl "
        f"--base-url {shlex.quote(url)}",
        env,
    )
    assert bad.returncode == 0, bad.stderr
    rebuild = json.loads(bad.stdout)["next"]
    assert rebuild and "--base-url" not in rebuild and runs_as_printed(rebuild, env).returncode == 0


@pytest.mark.skipif(compat.IS_WINDOWS, reason="POSIX shell quoting of the printed command")
def test_all_batches_goes_along_to_the_scripts_that_list_batches(sandbox):
    write_input("in.jsonl", 14)
    env = sandbox.env()
    doc = ok_json(run("submit.py", "in.jsonl", "--max-requests", "2", "--all-batches", env=env, subprocess=True))
    assert len(doc["batches"]) == 7 and doc["batches_omitted"] == 0
    assert doc["next"].endswith(" --all-batches"), doc["next"]
    polled = runs_as_printed(doc["next"], env)
    assert polled.returncode == 0, polled.stderr
    report = json.loads(polled.stdout)
    assert len(report["batches"]) == 7 and report["batches_omitted"] == 0
    listing = runs_as_printed(
        f"{shlex.quote(sys.executable)} {shlex.quote(str(SCRIPTS / 'list_batches.py'))} --limit 3", env
    )
    page = json.loads(listing.stdout)
    assert page["has_more"] and "--all-batches" not in page["next"]  # list_batches.py takes none
    assert json.loads(runs_as_printed(page["next"], env).stdout)["count"] == 3


@pytest.mark.slow
@pytest.mark.skipif(compat.IS_WINDOWS, reason="POSIX shell quoting of the printed command")
def test_run_batch_goes_on_with_the_wait_flags_it_was_given(sandbox_factory):
    sb = sandbox_factory("--latency", "0.5", "--concurrency", "1")
    write_input("data.jsonl", 12)
    env = sb.env()
    proc = run(
        "run_batch.py",
        "data.jsonl",
        "--wait",
        "--interval",
        "0.2",
        "--timeout",
        "0.5",
        "--format",
        "simple",
        env=env,
        subprocess=True,
    )
    assert proc.returncode == 6, proc.stderr
    nxt = json.loads(proc.stdout)["next"]
    args = shlex.split(nxt)
    for flag, value in (("--interval", "0.2"), ("--timeout", "0.5"), ("--format", "simple")):
        assert args[args.index(flag) + 1] == value, nxt
    assert "--wait" in args
    ran = runs_as_printed(nxt, env)  # goes on where it stopped, with the same flags
    assert ran.returncode in (0, 6), ran.stderr
    again = json.loads(ran.stdout)
    assert again["job"] == json.loads(proc.stdout)["job"]
    if ran.returncode == 6:
        assert again["next"] == nxt


@pytest.mark.skipif(compat.IS_WINDOWS, reason="POSIX shell quoting of the printed command")
def test_the_cancel_a_dry_run_previews_runs_as_printed(sandbox_factory):
    sb = sandbox_factory("--latency", "5", "--concurrency", "1")
    write_input("in.jsonl", 4)
    env = sb.env()
    job = make_job(sb, "in.jsonl")
    doc = ok_json(run("cancel_batch.py", "--job", job, "--dry-run", "--all-batches", env=env, subprocess=True))
    assert doc["would_cancel"] == 1, doc
    assert shlex.split(doc["next"])[-3:] == ["--job", Path(job).name, "--all-batches"], doc["next"]
    ran = runs_as_printed(doc["next"], env)
    assert ran.returncode == 0, ran.stderr
    done = json.loads(ran.stdout)
    assert done["cancelled"] == 1 and "would_cancel" not in done
    assert shlex.split(done["next"])[-3:] == ["--job", Path(job).name, "--all-batches"]  # the fetch


# -- every command a script prints parses with the declaration of the script it names ----------


def full_parser(script: str) -> argparse.ArgumentParser:
    """The flags ``script`` takes (its declaration and the shared groups), without
    ``output.make_parser`` (whose state belongs to the script running)."""
    parser = argparse.ArgumentParser(prog=script, add_help=False)
    for cls in [load(script).OPTIONS, View]:
        optionspec.add_arguments(cls, parser)
    if script not in LOCAL_SCRIPTS:
        optionspec.add_arguments(Connection, parser)
    if script in BATCH_LISTS:
        optionspec.add_arguments(BatchList, parser)
    return parser


@pytest.mark.skipif(os.environ.get(SUBPROCESS_VAR) == "1", reason="the commands are watched in this process")
def test_every_printed_command_parses_with_the_declaration_of_its_script(sandbox, monkeypatch):
    """Every command line the scripts write (next, hints, resume commands, from any layer) is
    taken apart again by the parser of the script it names: a flag it does not declare, a
    missing value or two exclusive flags fail here."""
    parsers = {name: full_parser(name) for name in SCRIPT_NAMES}
    seen: List[List[str]] = []
    refused: List[str] = []
    quote = compat.quote_args

    def watched(args: Any) -> str:
        args = [str(a) for a in args]
        name = Path(args[0]).name if args else ""
        if name in parsers:
            seen.append(args)
            try:
                opts = optionspec.from_args(load(name).OPTIONS, parsers[name].parse_args(args[1:]))
            except SystemExit:
                refused.append(quote(args))
            else:
                assert optionspec.parse(load(name).OPTIONS, optionspec.to_argv(opts)) == opts
        return quote(args)

    monkeypatch.setattr(compat, "quote_args", watched)
    env = sandbox.env()
    write_input("in.jsonl", 6)
    write_input("other.jsonl", 2)
    Path("bad.jsonl").write_text("{}\n", encoding="utf-8")
    steps = [
        ("submit.py", "in.jsonl", "--dry-run", "--max-requests", "2", "-w", "1h", "--metadata", "a=b"),
        ("submit.py", "in.jsonl", "--max-requests", "2", "-w", "1h", "--metadata", "a=b", "--all-batches"),
        ("poll.py", "--job", "in.dwjob"),
        ("fetch_results.py", "--job", "in.dwjob", "--format", "simple"),
        ("submit.py", "in.jsonl"),  # the same input again: refused, with the commands of the first job
        ("retry_failed.py", "--job", "in.dwjob", "--dry-run", "--rerun", "failed,missing", "-m", "x"),
        ("cancel_batch.py", "--job", "in.dwjob", "--dry-run"),
        ("cancel_batch.py", "--job", "in.dwjob"),
        ("retry_failed.py", "--job", "in.dwjob"),  # refused after the cancel, with the fetch in its hint
        ("run_batch.py", "other.jsonl", "--timeout", "0.5", "--interval", "0.2", "--format", "simple"),
        ("list_batches.py", "--limit", "1", "--status", "completed"),
        ("list_batches.py", "--jobs"),
        ("list_batches.py", "--input", "in.jsonl"),
        ("list_batches.py", "--answers"),
        ("list_models.py", "--for", "in.jsonl", "-w", "1h"),
        ("validate_batch_file.py", "bad.jsonl", "--max-errors", "3"),
        ("poll.py",),  # no target: the hint names the jobs here
        ("check_setup.py",),
    ]
    for script, *args in steps:
        run(script, *args, env=env)
    assert not refused, refused
    printed = {Path(args[0]).name for args in seen}
    assert {"poll.py", "fetch_results.py", "submit.py", "run_batch.py"} <= printed, printed
    assert {"list_batches.py", "create_batch_file.py", "retry_failed.py", "cancel_batch.py"} & printed
