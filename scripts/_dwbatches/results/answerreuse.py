"""Never paying twice for one request: a new job sends only what has no answer at hand.

``planner``: round 1 of a new job, each request that may take an answer (``ReusePolicy``) looked
up in the folder's store (reused: ``<job>/reuse/reused.jsonl``) or among the input's earlier
requests (a copy: ``copies.jsonl``); the rest go to ``<job>/rounds/round-1.jsonl``.
``job_index``: the merge's one path (downloads, then the reused answers and the copies' answers
as result files not billed). ``read_in`` / ``sync``: verified downloads' good answers into the
store. See ARCHITECTURE.md ("Answers at hand").
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from ..core import events
from ..core.errors import DWError
from ..core.files import atomic_output, make_private_dir
from ..core.idtable import NOT_FOUND, FileIds, IdTable
from ..cost import pricing
from ..jobs import answerstore
from ..jobs.answerstore import AnswerStore, job_file, key_line, keys_path, parse_line, request_key
from ..jobs.job import Job
from ..jobs.jobfinder import job_dirs
from ..jobs.jobrecord import JobRecord, Reuse, Round, sha256_file
from ..validation.validate import MAX_FILE_BYTES, Report, validate_file
from . import answers
from .resultlines import REUSED_KEY, is_success

BLOCK = 2000  # requests looked up at once


@dataclass(frozen=True)
class ReusePolicy:
    """Which requests of a new job may take an answer at hand instead of being sent."""

    enabled: bool = True
    sampled: bool = False  # --reuse-sampled: sampled requests too

    def allows(self, obj: Dict[str, Any]) -> bool:
        return self.enabled and (self.sampled or answerstore.deterministic(obj))


# -- planning a new job ------------------------------------------------------------------------


@dataclass
class Planned:
    """What a new job does not send (``record``) and round 1's input: ``send_path`` (None: the
    input itself) with its report (None: nothing is sent)."""

    record: Reuse
    send_path: Optional[str]
    send_report: Optional[Report]


class _Lines:
    """Request lines of a file read back by byte offset, parsed (the last one read is kept)."""

    def __init__(self, path: str, files: Any):
        self.path, self.files = path, files
        self._fh: Optional[IO[bytes]] = None
        self._last: Tuple[int, Any] = (-1, None)

    def at(self, offset: int) -> Any:
        if self._last[0] != offset:
            if self._fh is None:
                self._fh = self.files.enter_context(open(self.path, "rb"))
            self._fh.seek(offset)
            self._last = (offset, parse_line(self._fh.readline()))
        return self._last[1]


class _Pass:
    """One streamed pass over a validated input; its files are opened on ``files``."""

    def __init__(self, input_path: str, report: Report, store: Optional[AnswerStore], out_dir: str, files: Any):
        self.input_path, self.store, self.out_dir, self.files = input_path, store, out_dir, files
        # the requests sent that others may repeat: key (hex) -> the offset of the line (read back
        # to confirm a match, so a collision of the table's digests never makes a copy); sized for
        # a quarter of the requests: small when most are answered, grown twice when none is
        lines = self.lines = _Lines(input_path, files)  # (no cycle through the table: it is freed at once)
        self.table = IdTable(lambda offset, key: request_key(lines.at(offset)).hex() == key, report.requests // 4)
        self.rec = Reuse()
        self.first_held = -1  # the byte offset of the first request not sent
        self._send: Optional[IO[bytes]] = None
        self._keys = self._open(os.path.join(answerstore.REUSE_DIR, "keys-round-1.jsonl"))
        self._reused = self._open(os.path.join(answerstore.REUSE_DIR, "reused.jsonl"))
        self._copies = self._open(os.path.join(answerstore.REUSE_DIR, "copies.jsonl"))

    def _open(self, name: str) -> IO[bytes]:
        return self.files.enter_context(atomic_output(os.path.join(self.out_dir, name), mode=0o600))

    def run(self, policy: ReusePolicy, touch: bool) -> None:
        block: List[Tuple[int, bytes, Dict[str, Any], bytes, bool]] = []
        with open(self.input_path, "rb") as fh:
            offset = 0
            for raw in fh:
                at, offset = offset, offset + len(raw)
                if raw.strip():
                    obj = parse_line(raw)  # a validated file: each request line is a JSON object
                    block.append((at, raw, obj, request_key(obj), policy.allows(obj)))
                if len(block) >= BLOCK:
                    self._decide(block, touch)
                    block = []
        self._decide(block, touch)
        if self._send is None and self.first_held >= 0 and self.rec.sent:
            self._open_send()  # every request sent came before the first one held back

    def _first(self, key: bytes) -> Optional[int]:
        """The offset of the request sent with this key, if one was."""
        slot = self.table.find(key.hex())
        return None if slot == NOT_FOUND else self.table.value(slot)

    def _decide(self, block: List[Tuple[int, bytes, Dict[str, Any], bytes, bool]], touch: bool) -> None:
        wanted = list({key for _, _, _, key, ok in block if ok and self._first(key) is None})
        found = self.store.lookup(wanted) if self.store is not None and wanted else {}
        stale, used = time.time() - answerstore.TOUCH_AFTER, []
        for at, raw, obj, key, ok in block:
            cid = obj["custom_id"]
            first = self._first(key) if ok else None
            if first is not None or (ok and key in found):
                if self.first_held < 0:
                    self.first_held = at
            if first is not None:
                self.rec.copies += 1
                of = self.lines.at(first)["custom_id"]
                self._copies.write(json.dumps({"custom_id": cid, "of": of}).encode("utf-8") + b"\n")
            elif ok and key in found:
                hit = found[key]
                self.rec.reused += 1
                self.rec.from_jobs[hit.job] = self.rec.from_jobs.get(hit.job, 0) + 1
                if hit.used_at < stale:
                    used.append(key)
                self._reused.write(answerstore.with_custom_id(hit.line, cid, hit.origin()) + b"\n")
            else:
                if ok:
                    self.table.insert(key.hex(), at)
                self.rec.sent += 1
                self._keys.write(key_line(cid, key, answers.expectation(obj)))
                if self._send is None and self.first_held >= 0:
                    self._open_send()
                if self._send is not None:
                    self._send.write(raw if raw.endswith(b"\n") else raw + b"\n")
        if used and touch and self.store is not None:
            with contextlib.suppress(Exception):  # the last use only orders what a full store drops first
                self.store.touch(used)

    def _open_send(self) -> None:
        """Round 1's own input, starting with the input's bytes before the first request held back."""
        make_private_dir(os.path.join(self.out_dir, "rounds"))  # private, as the job
        self._send = send = self._open(os.path.join("rounds", "round-1.jsonl"))
        with open(self.input_path, "rb") as src:
            left = self.first_held
            while left > 0:
                data = src.read(min(left, 1 << 20))
                if not data:
                    break
                send.write(data)
                left -= len(data)


def _estimate(report: Optional[Report], window: str) -> Tuple[Optional[Decimal], Optional[Decimal]]:
    """(low, high) of the local estimate of a validated file, unrounded (None: not known)."""
    low: Optional[Decimal] = Decimal(0)
    high: Optional[Decimal] = Decimal(0)
    for model, t in (report.model_tokens if report is not None else {}).items():
        lo = pricing.cost(model, window, t["input_tokens"], t["output_tokens_low"])
        out = t.get("output_tokens_high")
        hi = pricing.cost(model, window, t["input_tokens"], out) if out is not None else None
        low = low + lo if low is not None and lo is not None else None
        high = high + hi if high is not None and hi is not None else None
    return low, high


def _saved_range(full: Optional[Decimal], sent: Optional[Decimal]) -> Optional[str]:
    return None if full is None or sent is None else pricing.money(max(Decimal(0), full - sent))


def plan_new_job(
    job_dir: str,
    input_path: str,
    report: Report,
    policy: ReusePolicy,
    window: str,
    max_requests: int,
    max_bytes: int,
    max_body_bytes: int,
    dry_run: bool = False,
) -> Planned:
    """The reuse pass over a validated input for a new job at ``job_dir`` (the caller holds its
    lock). A dry run writes its files in a temporary folder (round 1's input, to be validated
    and estimated) and nothing in the job directory, nor the answers' last use."""
    folder = answerstore.store_folder(job_dir)
    # a dry run makes no store where there is none to read in (no job beside it)
    store = AnswerStore.open(folder, create=not dry_run or any(True for _ in job_dirs(folder, depth=1)))
    with contextlib.ExitStack() as outer:
        if store is not None:
            outer.callback(store.close)
            try:
                sync(store)
            except Exception as exc:  # sqlite3.Error, OSError: the answers already in are used all the same
                events.warning(f"the answer store could not read in the jobs beside it ({exc})")
        out_dir = outer.enter_context(tempfile.TemporaryDirectory(prefix="dwb-reuse-")) if dry_run else job_dir
        make_private_dir(os.path.join(out_dir, answerstore.REUSE_DIR))
        with contextlib.ExitStack() as files:  # written whole, or removed
            scan = _Pass(input_path, report, store, out_dir, files)
            scan.run(policy, touch=not dry_run)
        rec = scan.rec
        rec.sampled = policy.sampled
        sending: Optional[Report] = report
        planned = os.path.join(out_dir, "rounds", "round-1.jsonl") if rec.not_sent else None
        if planned is not None and not rec.sent:
            sending = None
            make_private_dir(os.path.dirname(planned))
            with atomic_output(planned, mode=0o600):
                pass  # round 1 sends nothing
        elif planned is not None:
            sending = validate_file(
                planned, max_requests=max_requests, max_bytes=max_bytes, max_body_bytes=max_body_bytes,
                line_limit=MAX_FILE_BYTES,
            )  # fmt: skip
        (full_low, full_high), (sent_low, sent_high) = _estimate(report, window), _estimate(sending, window)
        rec.saved_low_usd, rec.saved_high_usd = _saved_range(full_low, sent_low), _saved_range(full_high, sent_high)
    narrate_plan(rec)
    return Planned(rec, None if dry_run else planned, sending)


def planner(policy: ReusePolicy) -> Optional[Callable[..., Planned]]:
    """What ``submit.planning`` calls for a new job's round 1 (None: every request is sent)."""
    if not policy.enabled:
        return None
    return lambda job_dir, input_path, report, window, *limits: plan_new_job(
        job_dir, input_path, report, policy, window, *limits
    )


def narrate_plan(rec: Reuse) -> None:
    total = rec.sent + rec.not_sent
    if not rec.not_sent:
        return  # every request is sent, as without reuse
    parts = [", ".join(f"{n} answered by {job}" for job, n in sorted(rec.from_jobs.items()))] if rec.reused else []
    if rec.copies:
        parts.append(f"{rec.copies} repeating a request of this job, which is sent once")
    saved = f"; saves about ${rec.saved_low_usd}" if rec.saved_low_usd is not None else ""
    if saved and rec.saved_high_usd not in (None, rec.saved_low_usd):
        saved += f" to ${rec.saved_high_usd}"
    events.step(f"reuse: {rec.not_sent} of {total} requests not sent ({'; '.join(parts)}); sending {rec.sent}{saved}")


def doc(rec: Optional[Reuse], index: Any = None, window: str = "24h") -> Optional[Dict[str, Any]]:
    """The ``reuse`` field of a report (null when the job did not look for answers at hand);
    ``saved_usd`` once merged (``index``): the answers not sent, their tokens priced for ``window``."""
    if rec is None:
        return None
    saved: Optional[str] = None
    if index is not None:
        costs = [pricing.cost(model, window, c[1], c[2]) for model, c in index.unbilled.items()]
        known = [c for c in costs if c is not None]
        saved = pricing.money(sum(known, Decimal(0))) if known or not costs else None
    return {
        "sent": rec.sent,
        "reused": rec.reused,
        "copies": rec.copies,
        "from_jobs": dict(rec.from_jobs),
        "saved_usd_low": rec.saved_low_usd,
        "saved_usd_high": rec.saved_high_usd,
        "saved_usd": saved,
    }


# -- merging ------------------------------------------------------------------------------------


def job_index(job: Job, store: Any, targets: Any, capacity: int = 0) -> Any:
    """The merge's index of a job: its downloaded batches (``merge.build_index``), then its
    reused answers and its copies' answers, not billed."""
    from .merge import build_index

    index = build_index(store, targets, capacity=capacity)
    reuse = job.record.reuse
    try:
        if reuse is not None and reuse.reused and os.path.isfile(job_file(job.dir, "reused.jsonl")):
            index.add_file(job_file(job.dir, "reused.jsonl"), "output", billed=False)
        if reuse is not None and reuse.copies:
            index.add_file(_write_copies(job, index), "output", billed=False)
    except BaseException:
        index.close()
        raise
    return index


def merge_inputs(job: Job) -> List[Tuple[str, Optional[str]]]:
    """What a merge of ``job`` reads besides its downloads (``unchanged``'s inputs): the answers
    taken from the store when it was planned and which requests copy which. A copy's answer is
    its original's, read from the downloads, already among the inputs."""
    reuse = job.record.reuse
    if reuse is None or not reuse.not_sent:
        return []
    return [
        ("the answers reused", job_file(job.dir, "reused.jsonl") if reuse.reused else None),
        ("the requests that copy another", job_file(job.dir, "copies.jsonl") if reuse.copies else None),
    ]


def _write_copies(job: Job, index: Any) -> str:
    """Each copy's result: the one its request has now (the caller holds the job's lock)."""
    dest = job_file(job.dir, "copies.results.jsonl")
    origin = {"job": os.path.basename(job.dir), "job_id": job.record.job_id}
    with atomic_output(dest, mode=0o600) as out:
        for cid, of in iter_copies(job.dir):
            slot = index.find(of)
            obj = index.result(slot)[1] if slot != NOT_FOUND else None
            if isinstance(obj, dict):
                line = dict(obj, custom_id=cid, **{REUSED_KEY: dict(origin, custom_id=of)})
                out.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
    return dest


def iter_copies(job_dir: str) -> Iterator[Tuple[str, str]]:
    """(custom_id, the custom_id whose answer it takes) of each copy of a job."""
    with contextlib.suppress(FileNotFoundError), open(job_file(job_dir, "copies.jsonl"), "rb") as fh:
        for raw in fh:
            with contextlib.suppress(ValueError, TypeError, KeyError):
                doc = json.loads(raw)
                yield str(doc["custom_id"]), str(doc["of"])


def copy_ids(job: Job) -> Optional[FileIds]:
    """The custom_ids of a job's copies (None without any): a retry leaves them out."""
    path = job_file(job.dir, "copies.jsonl")
    if job.record.reuse is None or not job.record.reuse.copies or not os.path.isfile(path):
        return None
    ids = FileIds(path, capacity=job.record.reuse.copies)
    with open(path, "rb") as fh:
        offset = 0
        for raw in fh:
            with contextlib.suppress(ValueError, AttributeError):
                ids.add(json.loads(raw).get("custom_id"), offset)
            offset += len(raw)
    return ids


# -- reading answers in -------------------------------------------------------------------------


def _round_keys(job_dir: str, rnd: Round, write: bool) -> Optional[Iterator[Tuple[str, bytes, Any]]]:
    """The keys of a round's requests, in order: its keys file, else computed from its input
    when that is the file submitted (sha256), else from the server's copy of round 1 a fetch
    saved; None when none can be read. Saved as its keys file when ``write`` (own job)."""
    path = keys_path(job_dir, rnd.round)
    if os.path.isfile(path):
        return answerstore.read_keys(path)
    source = None
    with contextlib.suppress(OSError):
        if rnd.input_path and sha256_file(rnd.input_path) == rnd.input_sha256:
            source = rnd.input_path
    copy = os.path.join(job_dir, "results", "submitted-input.jsonl")
    if source is None and rnd.round == 1 and os.path.isfile(copy):
        source = copy
    if source is None:
        return None

    def computed(path: str) -> Iterator[Tuple[str, bytes, Any]]:
        with open(path, "rb") as fh:
            for raw in fh:
                with contextlib.suppress(ValueError, RecursionError):
                    obj = parse_line(raw) if raw.strip() else None
                    if isinstance(obj, dict) and isinstance(obj.get("custom_id"), str):
                        yield obj["custom_id"], request_key(obj), answers.expectation(obj)

    if not write:
        return computed(source)
    make_private_dir(os.path.dirname(path))
    with atomic_output(path, mode=0o600) as out:
        for cid, key, expect in computed(source):
            out.write(key_line(cid, key, expect))
    return answerstore.read_keys(path)


def _good_answers(path: str, keys: Dict[str, Tuple[bytes, Any]]) -> Iterator[Tuple[bytes, bytes, str]]:
    """(key, line without custom_id, custom_id) of each good answer of a downloaded output file."""
    seen: Set[str] = set()
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                obj = json.loads(raw) if raw.endswith(b"\n") else None
            except (ValueError, RecursionError):
                continue
            if not isinstance(obj, dict):
                continue
            cid = obj.get("custom_id")
            if isinstance(cid, str) and cid in keys and cid not in seen and is_success(obj):
                key, expect = keys[cid]
                if answers.check((obj.get("response") or {}).get("body"), expect) == answers.GOOD:
                    seen.add(cid)
                    yield key, answerstore.strip_custom_id(raw, obj), cid


def read_in_job(store: AnswerStore, job_dir: str, rec: JobRecord, known: Set[str], own: bool) -> int:
    """Add the good answers of a job's final, verified batches not read in yet (``known``);
    ``own``: the caller holds the job's lock. Returns the answers added.

    Once the store has had to drop answers to take this job's in, the job's further batches
    are recorded as read in without their answers: each would only push out the answers of the
    batch before it (a job larger than the store would rewrite it over and over)."""
    added, dropped_before, left_out = 0, store.dropped, 0
    name = os.path.basename(os.path.abspath(job_dir))
    for rnd in rec.rounds:
        ready = {
            ch.index
            for ch in rnd.chunks
            if ch.batch_id and ch.batch_id not in known and rec.fetch.get(ch.batch_id) is not None
            and rec.fetch[ch.batch_id].final and rec.fetch[ch.batch_id].verified
        }  # fmt: skip
        keys = _round_keys(job_dir, rnd, write=own) if ready else None
        if keys is None:
            continue
        for ch in rnd.chunks:  # the keys list each chunk's requests in turn
            full = store.dropped > dropped_before
            chunk_keys = {}
            for _ in range(ch.requests):
                cid, key, expect = next(keys, ("", b"", None))
                if not full:
                    chunk_keys[cid] = (key, expect)
            output = os.path.join(job_dir, "results", f"{ch.batch_id}.output.jsonl")
            if ch.index in ready and ch.batch_id and os.path.isfile(output):
                answers_in = () if full else _good_answers(output, chunk_keys)
                added += store.add_batch(ch.batch_id, name, rec.job_id, answers_in)
                left_out += 1 if full else 0
                known.add(ch.batch_id)
    if left_out:
        events.warning(
            f"the answer store reached its size limit: the answers of {left_out} more batch(es) of {name} are "
            "not kept for later jobs (list_batches.py --answers-limit MB raises the limit)"
        )
    return added


def sync(store: AnswerStore, own: Optional[Tuple[str, JobRecord]] = None) -> int:
    """Read in the answers of every job directory beside the store not read in yet (``own``:
    (job dir, record) of the job whose lock the caller holds). Returns the answers added."""
    known = store.known_batches()
    added = read_in_job(store, own[0], own[1], known, own=True) if own else 0
    for job_dir in job_dirs(store.folder, depth=1):
        if own is None or os.path.abspath(job_dir) != os.path.abspath(own[0]):
            try:
                rec = Job(job_dir).load()
            except (DWError, OSError):
                continue
            added += read_in_job(store, job_dir, rec, known, own=False)
    return added


def read_in(job_dir: str, rec: JobRecord) -> Optional[int]:
    """After a fetch: add the job's good answers of final, verified batches to its folder's store
    (every job's, when the store was missing). None when the store cannot be used."""
    import sqlite3

    store = AnswerStore.open(answerstore.store_folder(job_dir))
    if store is None:
        return None
    with store:
        try:
            if store.created:
                events.step(f"the answer store {store.path} is new: reading in the answers of the jobs beside it")
                return sync(store, (job_dir, rec))
            return read_in_job(store, job_dir, rec, store.known_batches(), own=True)
        except (sqlite3.Error, OSError) as exc:
            events.warning(f"the answers of this job could not be added to the answer store ({exc})")
            return None


__all__ = ["Planned", "ReusePolicy", "copy_ids", "doc", "job_index", "planner", "read_in", "sync"]
