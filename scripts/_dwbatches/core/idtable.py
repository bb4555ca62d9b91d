"""Compact tables keyed by custom_id: fixed-size digests in arrays instead of Python strings.

A million custom_ids in a dict or a set take about 100 MB; an ``IdTable`` takes 16 bytes a
slot (an 8-byte digest and an 8-byte value in open-addressed ``array`` columns, at most three
quarters full): about 21 MB for a million ids. The ids themselves are not stored: a digest
match is confirmed by ``same(value, custom_id)``, which the owner answers from where the id
lives (a line on disk), so a digest collision never merges two ids. Each entry also holds one
flag (``mark``), e.g. "already written". Standard library only.

A table that would take the slots that a process's open tables hold in arrays past
``FILE_SLOTS`` (two million: 32 MB), sized so or grown so, keeps its slots in a scratch file
instead, read and written 16 bytes at a time (``compat.positional_io``): ten million ids
(about 210 MB of table) then cost the process no memory, the table living in the kernel's
page cache (and on disk, under memory pressure), for a few microseconds more an operation.
``close()`` gives a table's memory or file back (a table is empty afterwards).

``FileIds`` is the custom_ids of one JSONL file held that way: the value is the byte offset
of the line, read back to confirm a match.
"""

from __future__ import annotations

import json
import struct
from array import array
from typing import IO, Any, Callable, Iterator, Optional, Tuple

from . import compat

_MASK64 = (1 << 64) - 1
MARK = 1 << 63  # the flag bit of a value; values themselves are below it
NOT_FOUND = -1
# The slots that the tables of a process may hold in arrays, all together (32 MB): a table that
# would take the total past it lives in a file.
FILE_SLOTS = 1 << 21
_IN_ARRAYS = [0]  # slots held in arrays by this process's open tables
_SLOT = struct.Struct("<QQ")  # a slot of a file table: digest, value
_VALUE = struct.Struct("<Q")
_RUN = 4  # slots read at once by a probe (an open-addressed table's probes are short runs)


def digest(custom_id: str) -> int:
    """A 64-bit digest of an id, never 0 (0 marks an empty slot). Python's own string hash:
    stable within a process, which is as long as a table lives."""
    return (hash(custom_id) & _MASK64) or 1


class IdTable:
    """custom_id → a value below 2**63, plus one flag."""

    def __init__(self, same: Optional[Callable[[int, str], bool]] = None, capacity: int = 0):
        self._same = same
        self.count = 0
        self.marked = 0
        self._file: Optional[_FileSlots] = None
        self._in_arrays = 0  # this table's share of _IN_ARRAYS
        self._alloc(max(1024, capacity * 4 // 3 + 1))

    def _alloc(self, size: int) -> None:
        self._release()
        self._size = size
        if size + _IN_ARRAYS[0] > FILE_SLOTS:
            self._keys = self._vals = array("Q")
            self._file = _FileSlots(size)
            for name in ("find", "value", "set_value", "mark", "insert", "values"):  # the file's ways
                setattr(self, name, getattr(self, "_file_" + name))
            return
        self._keys = array("Q", bytes(8 * size))
        self._vals = array("Q", bytes(8 * size))
        self._in_arrays = size
        _IN_ARRAYS[0] += size

    def _release(self) -> None:
        _IN_ARRAYS[0] -= self._in_arrays
        self._in_arrays = 0

    def close(self) -> None:
        """Give back the table's memory or file: it is empty afterwards (its counts stay readable)."""
        self._release()
        self._size, self._keys, self._vals = 1, array("Q", [0]), array("Q", [0])  # one empty slot
        if self._file is not None:
            self._file.close()
            self._file = None
            for name in ("find", "value", "set_value", "mark", "insert", "values"):
                self.__dict__.pop(name, None)

    def __del__(self) -> None:
        try:
            self._release()
        except Exception:  # (at interpreter exit the module's globals may be gone)
            pass

    def find(self, custom_id: str) -> int:
        """The slot of ``custom_id``, or NOT_FOUND."""
        key = digest(custom_id)
        keys, size = self._keys, self._size
        i = key % size
        while True:
            k = keys[i]
            if k == 0:
                return NOT_FOUND
            if k == key and (self._same is None or self._same(self._vals[i] & ~MARK, custom_id)):
                return i
            i = i + 1 if i + 1 < size else 0

    def __contains__(self, custom_id: str) -> bool:
        return self.find(custom_id) != NOT_FOUND

    def value(self, slot: int) -> int:
        return self._vals[slot] & ~MARK

    def set_value(self, slot: int, value: int) -> None:
        self._vals[slot] = value | (self._vals[slot] & MARK)

    def mark(self, slot: int) -> bool:
        """Set the flag of the entry in ``slot``; True when it was not set yet."""
        v = self._vals[slot]
        if v & MARK:
            return False
        self._vals[slot] = v | MARK
        self.marked += 1
        return True

    def insert(self, custom_id: str, value: int, marked: bool = False) -> int:
        """Add ``custom_id`` (not in the table: see ``find``); returns its slot."""
        if (self.count + 1) * 4 > self._size * 3:
            self._grow()
            if self._file is not None:  # grown into a file
                return self._file_insert(custom_id, value, marked)
        key = digest(custom_id)
        keys, size = self._keys, self._size
        i = key % size
        while keys[i] != 0:
            i = i + 1 if i + 1 < size else 0
        keys[i] = key
        self._vals[i] = value | (MARK if marked else 0)
        self.count += 1
        self.marked += bool(marked)
        return i

    def values(self) -> Iterator[int]:
        """The values (flag included) of every entry."""
        keys, vals = self._keys, self._vals
        for i in range(self._size):
            if keys[i] != 0:
                yield vals[i]

    def __len__(self) -> int:
        return self.count

    def _grow(self) -> None:
        if self._file is not None:
            return self._file_grow()
        keys, vals = self._keys, self._vals
        self._alloc(self._size * 2)
        if self._file is not None:  # grown past FILE_SLOTS: into a file (size the table when the count is known)
            for j in range(len(keys)):
                if keys[j]:
                    self._file_put(keys[j], vals[j])
            return None
        size, nk, nv = self._size, self._keys, self._vals
        for j in range(len(keys)):
            k = keys[j]
            if k == 0:
                continue
            i = k % size
            while nk[i] != 0:  # entries are distinct: only an empty slot is needed
                i = i + 1 if i + 1 < size else 0
            nk[i], nv[i] = k, vals[j]
        return None

    # -- a table in a file: the same operations, a slot read or written at a time ----------------
    def _file_find(self, custom_id: str) -> int:
        key = digest(custom_id)
        f, size, same = self._file, self._size, self._same
        assert f is not None
        i = key % size
        while True:
            run = f.run(i)
            for j, (k, v) in enumerate(run):
                if k == 0:
                    return NOT_FOUND
                if k == key and (same is None or same(v & ~MARK, custom_id)):
                    f.keep(i + j, k, v)
                    return i + j
            i = (i + len(run)) % size

    def _file_value(self, slot: int) -> int:
        assert self._file is not None
        return self._file.slot(slot)[1] & ~MARK

    def _file_set_value(self, slot: int, value: int) -> None:
        f = self._file
        assert f is not None
        f.set_value(slot, value | (f.slot(slot)[1] & MARK))

    def _file_mark(self, slot: int) -> bool:
        f = self._file
        assert f is not None
        v = f.slot(slot)[1]
        if v & MARK:
            return False
        f.set_value(slot, v | MARK)
        self.marked += 1
        return True

    def _file_insert(self, custom_id: str, value: int, marked: bool = False) -> int:
        if (self.count + 1) * 4 > self._size * 3:
            self._grow()
        i = self._file_put(digest(custom_id), value | (MARK if marked else 0))
        self.count += 1
        self.marked += bool(marked)
        return i

    def _file_put(self, key: int, value: int) -> int:
        f, size = self._file, self._size
        assert f is not None
        i = key % size
        while True:
            run = f.run(i)
            for j, (k, _) in enumerate(run):
                if k == 0:
                    f.put(i + j, key, value)
                    return i + j
            i = (i + len(run)) % size

    def _file_values(self) -> Iterator[int]:
        assert self._file is not None
        for key, value in self._file.scan():
            if key:
                yield value

    def _file_grow(self) -> None:
        old = self._file
        assert old is not None
        self._file = _FileSlots(self._size * 2)
        self._size *= 2
        for key, value in old.scan():
            if key:
                self._file_put(key, value)
        old.close()


class _FileSlots:
    """The slots of a table in a temporary file: (digest, value) at 16 bytes a slot, zeros (empty)
    until written. The last slot read is kept (a find is usually followed by a look at the value)."""

    def __init__(self, size: int):
        self._fh = compat.scratch_file("dwb-ids-", buffering=0)
        self._fh.truncate(16 * size)  # a sparse file: no disk used for empty slots
        self._read, self._write = compat.positional_io(self._fh)
        self._size = size
        self._at, self._last = -1, (0, 0)

    def slot(self, i: int) -> Tuple[int, int]:
        if i != self._at:
            self._last = _SLOT.unpack(self._read(16, 16 * i))
            self._at = i
        return self._last

    def run(self, i: int) -> list:
        """The slots from ``i`` on, up to RUN of them (not past the end): one read for a probe."""
        n = min(_RUN, self._size - i)
        return list(_SLOT.iter_unpack(self._read(16 * n, 16 * i)))

    def keep(self, i: int, key: int, value: int) -> None:
        """Slot ``i`` holds (key, value) (just read): kept for the look at its value that follows."""
        self._at, self._last = i, (key, value)

    def put(self, i: int, key: int, value: int) -> None:
        self._write(_SLOT.pack(key, value), 16 * i)
        self._at, self._last = i, (key, value)

    def set_value(self, i: int, value: int) -> None:
        key = self.slot(i)[0]
        self._write(_VALUE.pack(value), 16 * i + 8)
        self._last = (key, value)

    def scan(self) -> Iterator[Tuple[int, int]]:
        """Every slot in order, read 1 MB at a time."""
        block = 1 << 16  # slots
        for start in range(0, self._size, block):
            yield from _SLOT.iter_unpack(self._read(16 * min(block, self._size - start), 16 * start))

    def close(self) -> None:
        self._fh.close()


class FileIds:
    """The custom_ids of one JSONL file, each once, by the byte offset of its line."""

    def __init__(self, path: str, capacity: int = 0):
        self.path = path
        self._fh: Optional[IO[bytes]] = None
        self._last: Tuple[int, Any] = (-1, None)
        self.table = IdTable(same=self._holds, capacity=capacity)

    def _read(self, offset: int) -> Any:
        """The parsed line at ``offset`` (the last one read is kept), or None."""
        if self._last[0] == offset:
            return self._last[1]
        if self._fh is None:
            self._fh = open(self.path, "rb")
        self._fh.seek(offset)
        try:
            obj = json.loads(self._fh.readline())
        except (ValueError, RecursionError):  # not JSON, or nested past any real answer
            obj = None
        self._last = (offset, obj)
        return obj

    def _holds(self, offset: int, custom_id: str) -> bool:
        obj = self._read(offset)
        return isinstance(obj, dict) and obj.get("custom_id") == custom_id

    def line(self, custom_id: str) -> Any:
        """The parsed line of a held id, or None."""
        slot = self.table.find(custom_id)
        return None if slot == NOT_FOUND else self._read(self.table.value(slot))

    def first(self, custom_id: str, offset: int) -> bool:
        """Mark ``custom_id`` (its line at ``offset``) as seen; True the first time."""
        slot = self.table.find(custom_id)
        if slot == NOT_FOUND:
            self.table.insert(custom_id, offset, marked=True)
            return True
        return self.table.mark(slot)

    def add(self, custom_id: str, offset: int) -> None:
        """Hold ``custom_id`` (unmarked) unless it is in already."""
        if self.table.find(custom_id) == NOT_FOUND:
            self.table.insert(custom_id, offset)

    def __contains__(self, custom_id: str) -> bool:
        return custom_id in self.table

    def mark(self, custom_id: str) -> bool:
        """Mark a held id; True the first time (False also when it is not held)."""
        slot = self.table.find(custom_id)
        return slot != NOT_FOUND and self.table.mark(slot)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._last = (-1, None)
        self.table.close()


__all__ = ["FileIds", "IdTable", "MARK", "NOT_FOUND", "digest"]
