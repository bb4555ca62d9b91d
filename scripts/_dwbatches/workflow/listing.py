"""Listing: the account's batches (newest first, a page at a time or all of them), the jobs of
the project or of one input file (``jobfinder``), and the models the key may use, with their
prices and whether they reason; or ranked by what a batch file would cost on each
(``modelchoice``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ..core import commands
from ..core.errors import UsageError
from ..core.flags import check_number
from ..core.optiongroups import Target
from ..core.optionspec import number, option, to_argv
from ..core.output import Outcome, human_view, narrate
from ..cost import modelchoice, pricing
from ..cost.pricing import WINDOWS
from ..jobs import answerstore, jobfinder, jobstatus
from ..jobs.jobrecord import sha256_file
from ..results.answerreuse import sync
from ..submit import lookup
from .building import rebuild_command
from .checking import poll_line
from .common import Connection, client_for

STATUSES = ("in_progress", "completed", "failed", "cancelled", "expired")
PAGE_MAX = 100
FIND = "finding jobs (instead of the account's batches)"  # a --help section


@dataclass
class ListOptions:
    """What list_batches.py lists: a page of the account's batches, or (one of) the jobs here,
    the jobs of a batch file, the answer store (each field is also its flag, ``optionspec``)."""

    limit: Optional[int] = option(
        "--limit", type=int, metavar="N", help=f"batches per page (1-{PAGE_MAX}; default 20, or {PAGE_MAX} with --all)"
    )
    status: Optional[str] = option(
        "--status",
        choices=STATUSES,
        help="only batches with this status; expired: past their deadline, whatever their status (no batch is "
        "ever reported with a status expired)",
    )
    search: Optional[str] = option("--search", metavar="TEXT", help="match metadata, file names or ids")
    after: Optional[str] = option("--after", metavar="BATCH_ID", help="start after this batch (a previous last_id)")
    follow: bool = option("--all", switch=True, help="follow pages until there are no more")
    jobs: bool = option(
        "--jobs",
        switch=True,
        group=FIND,
        exclusive="find",
        help="the job directories below the working directory, as they record themselves (no key, nothing sent)",
    )
    input: Optional[str] = option(
        "--input",
        metavar="FILE",
        group=FIND,
        exclusive="find",
        show=commands.display_path,
        help="the jobs and batches of this batch file (by its contents)",
    )
    answers: Optional[str] = option(
        "--answers",
        const=".",
        metavar="FOLDER",
        group=FIND,
        exclusive="find",
        show=commands.display_path,
        help="the answer store of the job directories in FOLDER (default: here): size, jobs (nothing sent)",
    )
    clear_answers: Optional[str] = option(
        "--clear-answers",
        const=".",
        metavar="FOLDER",
        group=FIND,
        exclusive="find",
        show=commands.display_path,
        help="drop every answer of that store",
    )
    answers_limit: Optional[float] = option(
        "--answers-limit",
        type=float,
        metavar="MB",
        group=FIND,
        show=number,
        help="with --answers: the store's size limit in MB (default 1000)",
    )


def listing(options: ListOptions, conn: Connection) -> Outcome:
    """list_batches.py: the answer store, the jobs here, the jobs of a file, or the account's batches."""
    if options.answers is not None or options.clear_answers is not None or options.answers_limit is not None:
        clear = options.clear_answers is not None
        folder = options.clear_answers if clear else options.answers  # (a limit alone: the store here)
        return answer_store(folder or ".", clear, options.answers_limit)
    if options.jobs:
        return list_jobs()
    if options.input:
        return jobs_of_input(conn, options.input)
    return list_batches(conn, options)


@dataclass
class ModelOptions:
    """What list_models.py lists, in which order, or for which batch file (each field is also its flag)."""

    chat: bool = option("--chat", switch=True, exclusive="kind", help="only chat / completion models")
    embeddings: bool = option("--embeddings", switch=True, exclusive="kind", help="only embeddings models")
    sort: Optional[str] = option(
        "--sort",
        choices=("id", "price"),
        exclusive="order",
        help="order: by id (default) or by the 24h input plus output price per 1M tokens, models without "
        "a known price last (not the cheapest for a given file: see --for)",
    )
    for_file: Optional[str] = option(
        "--for",
        metavar="FILE",
        exclusive="order",
        show=commands.display_path,
        help="rank the models by this batch file's own estimated cost (input and output tokens), cheapest first",
    )
    completion_window: str = option(
        "-w",
        "--completion-window",
        choices=WINDOWS,
        default=WINDOWS[0],
        help="with --for: the window to rank by (both are priced; default %(default)s)",
    )

    @property
    def kind(self) -> Optional[str]:
        return "chat" if self.chat else "embeddings" if self.embeddings else None


def models_command(options: ModelOptions, conn: Connection) -> Outcome:
    """list_models.py with its options."""
    return list_models(conn, options.kind, options.sort or "id", options.for_file, options.completion_window)


def brief(b: Dict[str, Any]) -> Dict[str, Any]:
    doc = jobstatus.summarize_batch(b)
    doc = {
        "batch_id": doc.pop("batch_id"),
        "status": doc.pop("status"),
        "created_at": b.get("created_at"),
        "completion_window": b.get("completion_window"),
        "endpoint": b.get("endpoint"),
        "input_file_id": b.get("input_file_id"),
        **doc,
    }
    meta = b.get("metadata")
    if isinstance(meta, dict) and meta:
        doc["metadata"] = meta
    return doc


def list_batches(conn: Connection, options: ListOptions) -> Outcome:
    """list_batches.py: one page (``limit``), or every page with ``follow``."""
    from ..core.http import check_id

    limit, status, search, after_id, follow = (
        options.limit,
        options.status,
        options.search,
        options.after,
        options.follow,
    )
    if limit is None:
        limit = PAGE_MAX if follow else 20
    if not 1 <= limit <= PAGE_MAX:
        raise UsageError(f"--limit must be between 1 and {PAGE_MAX}")
    after = check_id(after_id, "batch") if after_id else None
    client = client_for(conn)
    found: List[Dict[str, Any]] = []
    seen = set()
    has_more = False
    last_id = None
    while True:
        page = client.list_batches(limit=limit, after=after, status=status, search=search)
        data = [b for b in page.get("data") or [] if isinstance(b, dict)]
        fresh = [b for b in data if b.get("id") not in seen]
        for b in fresh:
            seen.add(b.get("id"))
            found.append(brief(b))
        has_more = bool(page.get("has_more"))
        last_id = page.get("last_id") or (data[-1].get("id") if data else None)
        if not follow or not has_more or not fresh or not last_id or last_id == after:
            break
        after = last_id
        narrate(f"{len(found)} batches so far…")
    doc: Dict[str, Any] = {"batches": found, "count": len(found), "has_more": has_more, "last_id": last_id}
    if has_more and last_id:  # the next page: the same listing, after the last batch of this one
        doc["next"] = commands.command("list_batches.py", *to_argv(options, after=last_id, limit=limit))
    else:
        doc["next"] = None
    counts: Dict[str, int] = {}
    for b in found:
        counts[b["status"]] = counts.get(b["status"], 0) + 1
    narrate(
        f"{len(found)} batch(es)"
        + (": " + ", ".join(f"{n} {s}" for s, n in counts.items()) if counts else "")
        + (" (more: see next)" if has_more else "")
    )
    return Outcome(doc)


def list_jobs() -> Outcome:
    """list_batches.py --jobs: the job directories of the project (below the working directory),
    as they record themselves; nothing is sent, no key is needed."""
    found = jobfinder.project_jobs(".")
    narrate(f"{len(found)} job directory(ies) below {os.getcwd()}")
    for j in found[:10]:
        narrate(f"  {commands.display_path(j['job'])}: {j['status']}, {j['requests']} requests")
    return Outcome({"jobs": found, "count": len(found), "next": found[0]["next"] if len(found) == 1 else None})


def answer_store(folder: str = ".", clear: bool = False, limit_mb: Optional[float] = None) -> Outcome:
    """list_batches.py --answers [FOLDER]: the answer store of the job directories in ``folder``
    (``answerstore``): its size and the jobs its answers came from, brought up to date with
    them first (made again from them when it was deleted); ``limit_mb`` sets its limit (the
    answers used least recently are dropped to meet it); ``clear`` drops every answer (the jobs
    so far are not read in again). Nothing is sent, no key is needed."""
    check_number("--answers-limit", limit_mb, "500", above=0)
    if not os.path.isdir(folder):
        raise UsageError(f"{folder}: no such folder", hint="Pass the folder that holds the job directories.")
    path = answerstore.store_path(folder)
    beside = list(jobfinder.job_dirs(folder, depth=1))
    info: Dict[str, Any] = {"folder": os.path.abspath(folder), "store": path}
    store = answerstore.AnswerStore.open(folder, create=bool(beside) or clear or limit_mb is not None)
    if store is None:
        info.update(answers=0, bytes=0, limit_bytes=answerstore.DEFAULT_LIMIT, file_bytes=0, batches_read=0, jobs=[])
        narrate(f"no answer store in {commands.display_path(folder)} (no job directory beside it)")
        return Outcome({"answers": info, "next": None})
    with store:
        if not clear:
            sync(store)  # the answers of jobs finished since (or all of them: a deleted store)
        if clear:
            info["cleared"] = store.clear()
        if limit_mb is not None:
            info["dropped"] = store.set_limit(int(limit_mb * 1_000_000))
        info.update(store.stats())
    narrate(
        f"answer store {commands.display_path(path)}: {info['answers']} answer(s), {info['bytes'] / 1e6:.1f} MB of "
        f"{info['limit_bytes'] / 1e6:.0f} MB, from {len(info['jobs'])} job(s)"
        + (f"; {info['cleared']} cleared" if clear else "")
        + (f"; {info['dropped']} dropped to meet the limit" if info.get("dropped") else "")
    )
    return Outcome({"answers": info, "next": None})


def jobs_of_input(conn: Connection, input_path: str) -> Outcome:
    """list_batches.py --input FILE: the batches every job of this file created (found on the
    server by the file's sha256, which new jobs mark their batches with) and the job
    directories here that hold it."""
    if not os.path.isfile(input_path):
        raise UsageError(f"{input_path}: no such file", hint="Pass the batch file a job submitted.")
    sha = sha256_file(input_path)
    client = client_for(conn)
    mark = lookup.input_mark(sha)
    page = client.list_batches(limit=PAGE_MAX, search=mark)
    batches = [
        b
        for b in page.get("data") or []
        if isinstance(b, dict) and isinstance(b.get("metadata"), dict) and b["metadata"].get(lookup.INPUT_KEY) == mark
    ]
    local = [j for j in jobfinder.project_jobs(".") if j["input_sha256"] == sha]
    by_id = {j["job_id"]: j for j in local}
    jobs: Dict[str, Dict[str, Any]] = {}
    for b in batches:
        jid = b["metadata"].get("dwb_job") or ""
        entry = jobs.setdefault(jid, {"job_id": jid or None, "job": (by_id.get(jid) or {}).get("job"), "batches": []})
        entry["batches"].append(brief(b))
    for j in local:
        jobs.setdefault(j["job_id"], {"job_id": j["job_id"], "job": j["job"], "batches": []})
    found = list(jobs.values())
    here = [j for j in found if j["job"]]
    narrate(
        f"{input_path}: {len(found)} job(s), {len(batches)} batch(es) on the server"
        + (f"; job directories here: {', '.join(commands.display_path(j['job']) for j in here)}" if here else "")
    )
    nxt = poll_line(Target(job=here[0]["job"])) if len(here) == 1 else None
    return Outcome({"input": os.path.abspath(input_path), "input_sha256": sha, "jobs": found, "next": nxt})


def model_kind(model_id: str) -> str:
    """The API does not say; a model whose id names "embed" is an embeddings model."""
    return "embeddings" if "embed" in model_id.lower() else "chat"


def price_key(model: Dict[str, Any]) -> tuple:
    """Cheapest first (the 24h input plus output price); models without a price last."""
    p = model["price_per_1m_tokens"]
    if not p:
        return (1, 0.0, model["id"])
    return (0, p["24h"]["input"] + p["24h"]["output"], model["id"])


def list_models(
    conn: Connection, kind: Optional[str] = None, sort: str = "id", for_file: Optional[str] = None, window: str = "24h"
) -> Outcome:
    """list_models.py: the models (``kind`` "chat" or "embeddings" only), by id or by price; with
    ``for_file``, ranked by that batch file's own estimated cost in ``window``, cheapest first."""
    needs = modelchoice.needs_of(for_file) if for_file is not None else None  # (local: before the network)
    client = client_for(conn)
    models = []
    for m in client.list_models(reasoning=True):
        mid = str(m.get("id", ""))
        k = model_kind(mid)
        if kind and k != kind:
            continue
        entry = {
            "id": mid,
            "kind": k,
            "owned_by": m.get("owned_by"),
            "created": m.get("created"),
            "price_per_1m_tokens": pricing.price_doc(mid),
            "reasoning": modelchoice.reasoning_of(mid, m.get("supported_reasoning_efforts")),
        }
        if needs is not None:
            entry["for_file"] = modelchoice.estimate(mid, k, entry["reasoning"], needs)
        models.append(entry)
    models.sort(key=lambda m: m["id"])
    doc: Dict[str, Any] = {
        "count": len(models),
        "prices_as_of": pricing.PRICES_AS_OF,
        "default_model": pricing.DEFAULT_MODEL,
        "models": models,
    }
    if needs is None:
        if sort == "price":
            models.sort(key=price_key)
        narrate(f"{len(models)} model(s); prices per 1M tokens from the price table of {pricing.table_age()}")
        for m in models if not human_view() else ():  # (the view shows them in a table)
            narrate(f"  {m['id']} ({m['kind']}): {_price_words(m['price_per_1m_tokens'])}{_thinks_words(m)}")
        return Outcome(doc)
    best = modelchoice.rank(models, needs, window)
    rebuild = best["for_file"]["rebuild"] if best is not None else None
    doc.update(
        file=needs.as_dict(),
        window=window,
        cheapest=best["id"] if best is not None else None,
        next=rebuild_command(needs.path, **rebuild) if rebuild is not None else None,
    )
    narrate(
        f"{needs.path}: {needs.requests} request(s), about {needs.input_tokens} input tokens and at most "
        f"{needs.answer_tokens} output tokens; {len(models)} model(s), cheapest first for the {window} window "
        f"(prices as of {pricing.PRICES_AS_OF})"
    )
    for m in models if not human_view() else ():  # (the view shows them in a table)
        est = m["for_file"]
        if not est["eligible"]:
            narrate(f"  -  {m['id']}: not eligible: {est['why_not']}")
        elif est["usd"] is None:
            narrate(f"  -  {m['id']}: unranked: no known price")
        else:
            other = [w for w in pricing.WINDOWS if w != window]
            narrate(
                f"  {est['rank']}. {m['id']}: ${est['usd'][window]} ({window})"
                + "".join(f", ${est['usd'][w]} ({w})" for w in other)
                + (f"; {_thinking_words(est)}" if est["thinking"] else "")
            )
    if best is None:
        narrate("no model the key can use both takes these requests and has a known price")
    return Outcome(doc)


def _thinking_words(est: Dict[str, Any]) -> str:
    """A model's ``for_file.thinking`` code in words, with its figures."""
    code, rebuild = est["thinking"], est.get("rebuild") or {}
    if code == "always":
        words = f"always thinks: {est['thinking_tokens']} tokens added at its lowest effort, {rebuild.get('reasoning')}"
        if rebuild.get("max_tokens") is not None:
            words += f" (the rebuild sets --max-tokens {rebuild['max_tokens']}: the largest answer plus that room)"
        return words
    return {
        "unknown": "not known whether it thinks before it answers: no thinking added",
        "does_not_think": "does not think before it answers",
        "switched_off": "thinks, but can switch it off: the rebuild sets --reasoning none, so no thinking is added",
    }.get(code, str(code))


def _price_words(p: Optional[Dict[str, Dict[str, float]]]) -> str:
    if not p:
        return "price unknown"
    return (
        f"${p['24h']['input']:g} in / ${p['24h']['output']:g} out (24h), "
        f"${p['1h']['input']:g} / ${p['1h']['output']:g} (1h)"
    )


def _thinks_words(m: Dict[str, Any]) -> str:
    r = m["reasoning"]
    if not r["reasons"]:
        return "" if r["reasons"] is None else "; does not reason"
    return f"; reasons ({', '.join(r['efforts'])}{'' if r['can_switch_off'] else '; cannot switch it off'})"
