"""One source of request rules: the validator's fast path (``piececheck.check_piece``, which
inlines the checks of ``requestrules.check_request`` for the usual lines) and ``check_request``
itself give every line the same verdict and the same message.

The lines: every line of the bad-input corpus (tests/data/bad), and a few thousand made by a
seeded random generator: valid requests of each endpoint, written in several ways (compact,
spaced, keys in another order, escaped or raw non-ASCII, whitespace around the line, CRLF),
and mutations of them: a key missing or added, a value of another type, control and other
unprintable characters, ids around the byte limit, answer limits out of range or of the wrong
type (one or several of them), bodies around the size limit, each field of the body changed.
All of a kind go into one file, shuffled, so that the fast path meets them in every order (it
remembers the last model it checked).

The reference verdict of a line: invalid JSON when the strict parser (``loads_strict``, the
server's rules: no NaN, no lone surrogates) refuses it, else ``check_request``'s error or None.
The validator's own rules on the raw bytes (invalid UTF-8, a byte-order mark, a line longer
than any request) are checked against the corpus's expectations instead.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from _dwbatches.api.reasoning import LIMIT_FIELDS
from _dwbatches.api.requestrules import MAX_OUTPUT_LIMIT, REQUIRED_BODY_FIELD, check_request, loads_strict
from _dwbatches.core.apifacts import ALLOWED_URLS, MAX_CUSTOM_ID_BYTES
from _dwbatches.validation import piececheck
from helpers import run_script
from sandbox_helper import CHAT_MODEL, EMBEDDING_MODEL

BAD = Path(__file__).parent / "data" / "bad"
MAX_BODY = 3000  # a small body limit, so that bodies over it are cheap to make
INVALID_JSON = "invalid JSON"


def reference(raw: bytes) -> Optional[str]:
    """check_request's verdict on one line (INVALID_JSON when the strict parser refuses it)."""
    text = raw.decode("utf-8").strip()
    try:
        obj = loads_strict(text)
    except (ValueError, RecursionError):
        return INVALID_JSON
    return check_request(obj, MAX_BODY, len(raw) + 1)[0]


def fast_path(tmp_path: Path, lines: List[bytes], monkeypatch: Any) -> Dict[int, str]:
    """The validator's errors for ``lines`` (one file, one piece, every error kept), by line."""
    monkeypatch.setattr(piececheck, "ERRORS_KEPT", len(lines) + 1)
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    size = path.stat().st_size
    res = piececheck.check_piece(str(path), 0, size, size + 1, MAX_BODY, digests=False)
    errors = {n: message for n, _, message, _ in res["errors"]}
    assert res["nerr"] == len(errors)
    return errors


def disagreements(lines: List[bytes], errors: Dict[int, str]) -> List[tuple]:
    out = []
    for n, raw in enumerate(lines, 1):
        want, got = reference(raw), errors.get(n)
        same = got is not None and got.startswith(INVALID_JSON) if want == INVALID_JSON else got == want
        if not same:
            out.append((n, raw[:300], want, got))
    return out


# -- the corpus --------------------------------------------------------------------------------


def test_every_line_of_the_bad_input_corpus(tmp_path, monkeypatch):
    checked = rejected = 0
    for path in sorted(BAD.glob("*.jsonl")):
        data = path.read_bytes()
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        errors = fast_path(tmp_path, lines, monkeypatch)
        for n, raw in enumerate(lines, 1):
            got = errors.get(n)
            if not raw.strip():
                assert got is None, (path.name, n)
                continue
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                assert got is not None and got.startswith("invalid UTF-8"), (path.name, n, got)
                continue
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                assert got is not None and "byte-order mark" in got, (path.name, n, got)
                continue
            if len(raw) + 1 > 2 * MAX_BODY + (1 << 16):
                assert got is not None and got.startswith("the line is"), (path.name, n, got)
                continue
            assert disagreements([raw], {1: got} if got is not None else {}) == [], (path.name, n)
            checked += 1
            rejected += got is not None
    assert checked > 60 and rejected > 40  # (the corpus is mostly bad lines, a few good ones)


# -- generated lines ---------------------------------------------------------------------------

BODIES = {
    "/v1/chat/completions": {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 50},
    "/v1/completions": {"model": CHAT_MODEL, "prompt": "Once upon a time", "max_tokens": 20},
    "/v1/embeddings": {"model": EMBEDDING_MODEL, "input": "a sentence"},
    "/v1/responses": {"model": CHAT_MODEL, "input": "Hello", "max_output_tokens": 64},
    "/v1/messages": {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100},
}
assert set(BODIES) == set(ALLOWED_URLS)

ODD_STRINGS = [
    "",
    " ",
    "\t",
    "  \n ",
    "a\nb",
    "a\tb",
    "x\x00y",
    "x\x1fy",
    "x\x7fy",
    "x\x85y",  # NEL: a control character outside ASCII
    "x\u00a0y",  # no-break space
    "x\u200by",  # zero-width space (a format character)
    "x\u2028y",  # line separator
    "\u00e9t\u00e9",
    "\U0001f600",
    "x\ud800y",  # a lone surrogate (only as a \u escape in JSON)
    "\udc00",
    "POST",
    "post",
    "/v1/chat/completions",
]
ODD_VALUES: List[Any] = [None, True, False, 0, 1, -1, 2.5, 1e30, 10**30, [], {}, [1], {"a": 1}, *ODD_STRINGS]
LIMITS: List[Any] = [None, 0, 1, -5, 50, MAX_OUTPUT_LIMIT, MAX_OUTPUT_LIMIT + 1, "500", 1.0, 2.5, True, 1e30, 10**30]


def an_id(rng: random.Random) -> Any:
    kind = rng.randrange(8)
    if kind == 0:
        return rng.choice(ODD_VALUES)
    if kind == 1:  # around the byte limit, in ASCII or in two-byte characters
        n = MAX_CUSTOM_ID_BYTES + rng.choice([-1, 0, 1])
        return "i" * n if rng.random() < 0.5 else "\u00e9" * (n // 2) + "i" * (n % 2)
    if kind == 2:
        return "id-" + rng.choice(ODD_STRINGS)
    return f"req-{rng.randrange(10**9)}"


def a_model(rng: random.Random, url: str) -> Any:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(ODD_VALUES)
    if kind == 1:
        return "Qwen/" + rng.choice(ODD_STRINGS)
    return EMBEDDING_MODEL if url == "/v1/embeddings" else CHAT_MODEL


def a_body(rng: random.Random, url: str) -> Any:
    body = json.loads(json.dumps(BODIES[url]))
    body["model"] = a_model(rng, url)
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        change = rng.randrange(7)
        if change == 0:  # a field removed
            if body:
                body.pop(rng.choice(sorted(body)))
        elif change == 1:  # an answer limit (or another), of any value
            body[rng.choice(LIMIT_FIELDS)] = rng.choice(LIMITS)
        elif change == 2:
            body["stream"] = rng.choice([True, False, None, "true", 1])
        elif change == 3:  # the required field, of another shape
            body[REQUIRED_BODY_FIELD[url]] = rng.choice([[], {}, "text", None, [1], [{"role": "user", "content": "x"}]])
        elif change == 4:  # any field of the body changed
            body[rng.choice(sorted(body) or ["model"])] = rng.choice(ODD_VALUES)
        elif change == 5:  # a body around the size limit
            text = rng.choice(["a", "\u00e9", "\\", '"', "\u4e2d", "\U0001f600"]) * rng.randrange(
                MAX_BODY // 3, MAX_BODY
            )
            body["metadata_text"] = text
        else:  # reasoning and format fields (read by the answer-budget check)
            body[rng.choice(["reasoning_effort", "response_format", "temperature", "max_tokens"])] = rng.choice(
                [*ODD_VALUES, "low", "none", {"type": "json_object"}, 5, 200]
            )
    if rng.random() < 0.05:
        return rng.choice(ODD_VALUES)
    return body


def a_request(rng: random.Random) -> Any:
    url = rng.choice(ALLOWED_URLS)
    obj: Dict[str, Any] = {"custom_id": an_id(rng), "method": "POST", "url": url, "body": a_body(rng, url)}
    kind = rng.randrange(10)
    if kind == 0:
        obj.pop(rng.choice(sorted(obj)))
    elif kind == 1:
        obj[rng.choice(["extra", "metadata", "id"])] = rng.choice(ODD_VALUES)
    elif kind == 2:
        obj["method"] = rng.choice(["post", "Post", "GET", 1, None, " POST"])
    elif kind == 3:
        obj["url"] = rng.choice([url + "/", url.upper(), url[1:], None, 5, "/v1/models"])
    elif kind == 4:
        obj[rng.choice(sorted(obj))] = rng.choice(ODD_VALUES)
    if rng.random() < 0.02:
        return rng.choice(ODD_VALUES)
    return obj


def write_line(rng: random.Random, obj: Any) -> bytes:
    if isinstance(obj, dict) and rng.random() < 0.3:  # keys in another order
        keys = list(obj)
        rng.shuffle(keys)
        obj = {k: obj[k] for k in keys}
    compact = rng.random() < 0.5
    separators = (",", ":") if compact else None
    text = json.dumps(obj, separators=separators, ensure_ascii=rng.random() < 0.5)
    if rng.random() < 0.1:
        text = rng.choice([" ", "\t", "  "]) + text + rng.choice(["", " ", "\r"])
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8: only its \u escape can carry it
        return json.dumps(obj, separators=separators).encode("utf-8")


@pytest.mark.parametrize("seed", range(4))
def test_generated_lines_get_the_same_verdict_and_message(tmp_path, monkeypatch, seed):
    rng = random.Random(seed)
    lines = [write_line(rng, a_request(rng)) for _ in range(1500)]
    errors = fast_path(tmp_path, lines, monkeypatch)
    assert disagreements(lines, errors) == []
    verdicts = [reference(raw) for raw in lines]
    valid = sum(v is None for v in verdicts)
    assert 150 < valid < 1350, valid  # both valid and invalid lines, in numbers
    assert sum(v == INVALID_JSON for v in verdicts) > 0


# -- the answer limit --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "limits,short",
    [
        ({"max_tokens": 4000, "max_completion_tokens": 10}, True),
        ({"max_tokens": 10, "max_completion_tokens": 8000}, False),
    ],
)
def test_the_validator_reads_the_answer_limit_the_server_reads(tmp_path, limits, short):
    """Of several limits, max_completion_tokens is the one the server applies
    (``reasoning.LIMIT_FIELDS``): the answer-budget warning goes by it."""
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], **limits}
    path = tmp_path / "in.jsonl"
    path.write_text(
        json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n"
    )
    code, doc, err = run_script("validate_batch_file.py", path)
    assert code == 0 and doc["valid"], err
    warned = any("for at most 10 tokens" in w for w in doc["warnings"])
    assert warned is short, doc["warnings"]
