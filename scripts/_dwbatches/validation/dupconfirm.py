"""Confirming duplicate candidates: custom_ids whose 4-byte digests match are read again
from their lines and compared as ids, so a digest collision never makes a false duplicate.
"""

from __future__ import annotations

import os
from array import array
from typing import Dict, Optional, Sequence, Tuple

from ..api.requestrules import loads_strict


def _parse_id(raw: bytes) -> Optional[str]:
    """The custom_id of a raw line (None if it no longer parses as a request: changed on disk)."""
    try:
        cid = loads_strict(raw.decode("utf-8").strip())["custom_id"]
    except (ValueError, TypeError, KeyError):
        return None
    return cid if isinstance(cid, str) else None


class _LineReader:
    """Lines read by offset: one pread each where there is one (else seek and readline)."""

    def __init__(self, path: str):
        self.fh = open(path, "rb")
        self.pread = getattr(os, "pread", None)

    def line(self, offset: int) -> bytes:
        if self.pread is None:
            self.fh.seek(offset)
            return self.fh.readline()
        fd = self.fh.fileno()
        data = self.pread(fd, 1024, offset)
        cut = data.find(b"\n") + 1
        if cut:
            return data[:cut]
        parts = [data]
        size = 1024
        while data:
            size *= 2
            offset += len(data)
            data = self.pread(fd, size, offset)
            cut = data.find(b"\n") + 1
            if cut:
                parts.append(data[:cut])
                break
            parts.append(data)
        return b"".join(parts)

    def close(self) -> None:
        self.fh.close()


def _confirm(reader: _LineReader, offsets: Sequence[int], later: array, firsts: array) -> None:
    """Lines whose ids have the same digest, in file order: add each line whose custom_id an
    earlier one of them uses to later, and the offset of that id's first line to firsts."""
    first_off = offsets[0]
    first_raw = reader.line(first_off)
    by_raw: Optional[Dict[bytes, int]] = None  # line -> the first offset of its id
    by_id: Dict[str, int] = {}
    for offset in offsets[1:]:
        raw = reader.line(offset)
        if by_raw is None:
            if raw == first_raw:  # the same line again (the same id): no need to parse either
                later.append(offset)
                firsts.append(first_off)
                continue
            first_id = _parse_id(first_raw)
            by_raw = {}
            if first_id is not None:
                by_raw[first_raw] = by_id[first_id] = first_off
        first = by_raw.get(raw)
        if first is None:
            cid = _parse_id(raw)
            if cid is None:
                continue
            first = by_raw[raw] = by_id.setdefault(cid, offset)
        if first != offset:
            later.append(offset)
            firsts.append(first)


def confirm_groups(path: str, offsets: Sequence[int], bounds: Sequence[int]) -> Tuple[array, array]:
    """_confirm each group offsets[bounds[g]:bounds[g + 1]]; return (later, firsts)."""
    later, firsts = array("q"), array("q")
    reader = _LineReader(path)
    try:
        for g in range(len(bounds) - 1):
            _confirm(reader, offsets[bounds[g] : bounds[g + 1]], later, firsts)
    finally:
        reader.close()
    return later, firsts


CONFIRM_TASK = 1 << 16  # line offsets in a task of confirm_groups
