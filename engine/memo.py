"""`SizedMemo`: a memo bounded by entries and by accounted bytes, whatever keys it is fed.

The API's memos are keyed by what callers send (user ids, item ids): a flood of distinct keys
must cost at most the bound, never memory without end. Each `put` says what its entry costs (an
estimate the caller documents: the sizes of the bytes and strings it holds plus a fixed overhead);
when the entries or the bytes pass their bound, the oldest entries are dropped (insertion order:
a hit does not move an entry, so a lookup stays one dict read). Not thread-safe (one event loop).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
ENTRY_OVERHEAD = 160  # bytes of one entry besides what it holds: dict slot, tuple, small objects


class SizedMemo(Generic[K, V]):
    """A dict of at most `max_entries` entries and `max_bytes` accounted bytes (module doc)."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a memo holds at least one entry and one byte")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0  # accounted bytes of the entries held
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: K) -> V | None:
        """The value held under `key`, None if none is (store a wrapper where None is a value)."""
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: K, value: V, size: int) -> None:
        """Hold `value` under `key`, accounted as `size` bytes (plus ENTRY_OVERHEAD), as the
        newest entry. A kept key is replaced in place and moved to the newest end (the profile
        cache's steady state: a batch's users were kept by the batch before), where a pop and
        an insert cost ~30 % more per call (issue 21 item 5)."""
        cost = size + ENTRY_OVERHEAD
        entries = self._entries
        if cost > self.max_bytes:
            self.pop(key)  # larger than the whole memo: not kept, nor what it replaces
            return
        old = entries.get(key)
        entries[key] = (value, cost)
        if old is None:
            self.bytes += cost
        else:
            entries.move_to_end(key)
            self.bytes += cost - old[1]
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped

    def pop(self, key: K) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[1]

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0
