"""A user's dedup memory: the event-id digests already folded, with O(1) membership and O(1) copies.

The memory was one array of digests, scanned per event (`key in array`) and copied whole with
every new profile version: a user with 20,000 remembered ids cost ~660 us per event against ~40 us
for a new user. Here the ids live in frozen blocks of `BLOCK` ids, shared by every version of the
profile that holds them (a block never changes once full), plus a small tail that each version
copies. Membership asks the tail (a dict) and one set of all the blocks' ids (built the first time
it is asked after a profile is loaded from storage, and cached by content: a heavy user's next
batch finds it), so a lookup costs the same at 20,000 ids as at 10. Forgetting drops whole blocks
from the oldest end, so the memory keeps at least what the rules in `engine.profile` promise, and
at most one block more.

The stored form is unchanged: the digests and their times (seconds) as two flat arrays, oldest
first (`keys_bytes`, `ats_bytes`, `from_bytes`).
"""

from __future__ import annotations

import functools
from array import array
from collections.abc import Iterator

BLOCK = 512  # ids per frozen block: the tail copied per event holds fewer
MEMBER_SETS = 256  # block sets cached per process (~36 KiB each): a dozen users at the hard cap
FROZEN_SETS = 16  # whole-memory sets cached per process (up to ~1.3 MiB each at the hard cap)


class _Block:
    """BLOCK ids and their times as stored (uint64 / uint32 native bytes), never changed once
    made; shared between profile versions. Derived views are computed when first needed."""

    __slots__ = ("_newest", "ats", "keys")

    def __init__(self, keys: bytes, ats: bytes) -> None:
        self.keys = keys
        self.ats = ats
        self._newest: int | None = None

    @property
    def newest(self) -> int:
        if self._newest is None:
            self._newest = max(_array("I", self.ats), default=0)
        return self._newest

    def __len__(self) -> int:
        return len(self.keys) // 8


@functools.lru_cache(maxsize=MEMBER_SETS)
def _members(keys: bytes) -> frozenset[int]:
    """The ids of one block as a set. Cached by content: a heavy user's profile is loaded from
    storage once per batch, and rebuilding ~40 sets of 512 ids each time cost ~1 ms; a hit costs
    hashing 4 KiB. Blocks are content, not identity: two users' equal blocks share one set."""
    return frozenset(_array("Q", keys))


@functools.lru_cache(maxsize=FROZEN_SETS)
def _frozen_members(region: bytes) -> frozenset[int]:
    """The ids of a user's frozen blocks (their keys joined) as one set: one probe per lookup
    instead of one per block (~40 at the hard cap). Cached by content; a miss unions the blocks'
    cached sets."""
    size = BLOCK * 8
    return frozenset().union(*(_members(region[i : i + size]) for i in range(0, len(region), size)))


class SeenIds:
    """Event-id digests (64-bit ints) with the event time (s) of each, oldest first."""

    __slots__ = ("_all", "_blocks", "_frozen", "_tail")

    def __init__(self) -> None:
        self._blocks: tuple[_Block, ...] = ()
        self._all: frozenset[int] | None = None  # the blocks' ids, once asked
        self._tail: dict[int, int] = {}  # digest -> time (s), insertion order = arrival order
        self._frozen = 0  # ids in blocks

    @classmethod
    def from_arrays(cls, keys: array[int], ats: array[int]) -> SeenIds:
        """From flat arrays (equal lengths: the shorter one bounds them)."""
        n = min(len(keys), len(ats))
        return cls.from_bytes(keys[:n].tobytes(), ats[:n].tobytes())

    @classmethod
    def from_bytes(cls, keys: bytes, ats: bytes) -> SeenIds:
        """From the stored form: blocks stay bytes (no per-id work until an id is asked for)."""
        seen = cls()
        n = min(len(keys) // 8, len(ats) // 4)
        full = n - n % BLOCK
        seen._blocks = tuple(
            _Block(keys[i * 8 : (i + BLOCK) * 8], ats[i * 4 : (i + BLOCK) * 4])
            for i in range(0, full, BLOCK)
        )
        seen._frozen = full
        tail_keys = _array("Q", keys[full * 8 : n * 8])
        seen._tail = dict(zip(tail_keys, _array("I", ats[full * 4 : n * 4]), strict=True))
        return seen

    def copy(self) -> SeenIds:
        """A copy sharing only the frozen blocks (which never change)."""
        new = object.__new__(SeenIds)
        new._blocks = self._blocks
        new._all = self._all
        new._tail = dict(self._tail)
        new._frozen = self._frozen
        return new

    def __contains__(self, key: object) -> bool:
        if key in self._tail:
            return True
        members = self._all
        if members is None:
            members = self._all = _frozen_members(b"".join([b.keys for b in self._blocks]))
        return key in members

    def __len__(self) -> int:
        return self._frozen + len(self._tail)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SeenIds):
            return NotImplemented
        return self.keys_bytes() == other.keys_bytes() and self.ats_bytes() == other.ats_bytes()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"SeenIds({len(self)} ids)"

    def __iter__(self) -> Iterator[int]:
        for block in self._blocks:
            yield from _array("Q", block.keys)
        yield from self._tail

    def add(self, key: int, at: int) -> None:
        """Remember one id (in place: call it on a copy). A repeat is the caller's to refuse."""
        self._tail[key] = at
        if len(self._tail) >= BLOCK:
            keys = array("Q", self._tail).tobytes()
            self._blocks += (_Block(keys, array("I", self._tail.values()).tobytes()),)
            self._all = None
            self._frozen += len(self._tail)
            self._tail = {}

    def forget(self, horizon: int, keep: int, cap: int) -> None:
        """Drop the oldest blocks while at least `keep` ids stay and the block is wholly older
        than `horizon` (s), or more than `cap` ids would stay anyway (in place)."""
        blocks = self._blocks
        drop, size = 0, len(self)
        while drop < len(blocks):
            rest = size - len(blocks[drop])
            if rest < keep or (blocks[drop].newest >= horizon and rest < cap):
                break
            size = rest
            drop += 1
        if drop:
            self._blocks = blocks[drop:]
            self._all = None
            self._frozen = size - len(self._tail)

    def keys_bytes(self) -> bytes:
        return b"".join([b.keys for b in self._blocks] + [array("Q", self._tail).tobytes()])

    def ats_bytes(self) -> bytes:
        tail = array("I", self._tail.values()).tobytes()
        return b"".join([b.ats for b in self._blocks] + [tail])


def _array(code: str, raw: bytes) -> array[int]:
    values = array(code)
    values.frombytes(raw[: len(raw) - len(raw) % values.itemsize])
    return values
