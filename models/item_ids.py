"""A recs model's item ids, held compactly: one UTF-8 buffer, its offsets and a sorted hash index.

A model at 1M items held its ids as a list of Python strings and a dict from id to row: ~90 MB
per process beside ~35 MB of arrays (issue 21 item 3: "at most ~1.5x the artifact's array bytes
per process"). `ItemIds` keeps ~20 bytes per id plus the id's own bytes: the buffer, 8-byte end
offsets (`array('q')`: a row's id is two C-level reads and a slice away), and the ids' 64-bit
hashes sorted with their rows (numpy), so a lookup is a binary search checked against the id's
bytes. The hashes are Python's `hash` of the UTF-8 bytes: salted per process, which is fine, as
the index is built in the process that uses it.

It is a `Sequence[str]` in row order (`ids[row]`, `len`, iteration, `in`, `index`) and compares
equal to any sequence of the same ids, so code written for a list of ids reads it unchanged.
Pure: numpy and the standard library only.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np


class ItemIds(Sequence[str]):
    """Item ids in row order (see the module's docstring)."""

    __slots__ = ("_blob", "_ends", "_hashes", "_rows")

    def __init__(self, ids: Iterable[str]) -> None:
        encoded = [item.encode("utf-8") for item in ids]
        n = len(encoded)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
        ends = np.cumsum(lengths, dtype=np.int64)
        self._ends = array("q", ends.tobytes())
        self._blob = b"".join(encoded)
        hashes = np.fromiter(map(hash, encoded), dtype=np.int64, count=n)
        del encoded
        order = np.argsort(hashes)  # equal hashes are told apart by their bytes: any order
        self._hashes: np.ndarray = hashes[order]
        self._rows: np.ndarray = order.astype(np.int32 if n < 2**31 else np.int64)

    @classmethod
    def of(cls, ids: Iterable[str]) -> ItemIds:
        """`ids` as ItemIds (itself when it is one already)."""
        return ids if isinstance(ids, ItemIds) else cls(ids)

    def _bytes(self, row: int) -> bytes:
        ends = self._ends
        return self._blob[ends[row - 1] if row else 0 : ends[row]]

    def __len__(self) -> int:
        return len(self._ends)

    @overload
    def __getitem__(self, row: int) -> str: ...

    @overload
    def __getitem__(self, row: slice) -> list[str]: ...

    def __getitem__(self, row: int | slice) -> str | list[str]:
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        n = len(self._ends)
        i = int(row)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("item row out of range")
        return self._bytes(i).decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        blob, start = self._blob, 0
        for end in self._ends:
            yield blob[start:end].decode("utf-8")
            start = end

    def get(self, item: str) -> int | None:
        """The row of `item`, or None when the model does not know it."""
        key = item.encode("utf-8")
        h = hash(key)
        hashes = self._hashes
        at = int(np.searchsorted(hashes, h))
        while at < len(hashes) and int(hashes[at]) == h:
            row = int(self._rows[at])
            if self._bytes(row) == key:
                return row
            at += 1
        return None

    def rows_of(self, items: Sequence[str]) -> list[int | None]:
        """The rows of many ids at once (one binary search over all of them); None where
        unknown."""
        if not items:
            return []
        keys = [item.encode("utf-8") for item in items]
        wanted = np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys))
        hashes, rows = self._hashes, self._rows
        n = len(hashes)
        out: list[int | None] = []
        starts = np.searchsorted(hashes, wanted).tolist()
        for key, h, at in zip(keys, wanted.tolist(), starts, strict=True):
            found = None
            while at < n and int(hashes[at]) == h:
                row = int(rows[at])
                if self._bytes(row) == key:
                    found = row
                    break
                at += 1
            out.append(found)
        return out

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str) and self.get(item) is not None

    def index(self, item: Any, start: int = 0, stop: int | None = None) -> int:
        row = self.get(item) if isinstance(item, str) else None
        if row is None or row < start or (stop is not None and row >= stop):
            raise ValueError(f"{item!r} is not a known item")
        return row

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ItemIds):
            return self._blob == other._blob and self._ends == other._ends
        if isinstance(other, (list, tuple)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    # By identity: a model's ids are one object for its life, and serve as a memo key (the
    # content index's `skip`); lists are unhashable, so no equal list shares a dict with it.
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        shown = ", ".join(repr(item) for item in self[:3])
        return f"ItemIds([{shown}{', ...' if len(self) > 3 else ''}], n={len(self)})"

    def nbytes(self) -> int:
        """Bytes held: the buffer, the offsets and the hash index."""
        return (
            len(self._blob)
            + self._ends.itemsize * len(self._ends)
            + int(self._hashes.nbytes)
            + int(self._rows.nbytes)
        )
