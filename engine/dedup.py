"""A user's dedup memory: the event-id digests already folded, with O(1) membership and O(1) copies.

The memory was one array of digests, scanned per event (`key in array`) and copied whole with
every new profile version: a user with 20,000 remembered ids cost ~660 us per event against ~40 us
for a new user. Here the ids live in frozen blocks of `BLOCK` ids, shared by every version of the
profile that holds them (a block never changes once full), plus a small tail that each version
copies. Membership asks the tail (a dict) and each block's set (built the first time it is asked:
after a profile is loaded from storage). Forgetting drops whole blocks from the oldest end, so
the memory keeps at least what the rules in `engine.profile` promise, and at most one block more.

The stored form is unchanged: the digests and their times (seconds) as two flat arrays, oldest
first (`keys_bytes`, `ats_bytes`, `from_bytes`).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

BLOCK = 512  # ids per frozen block: the tail copied per event holds fewer


class _Block:
    """BLOCK ids and their times, never changed once made; shared between profile versions."""

    __slots__ = ("ats", "keys", "members", "newest")

    def __init__(self, keys: array[int], ats: array[int]) -> None:
        self.keys = keys
        self.ats = ats
        self.newest = max(ats) if ats else 0
        self.members: frozenset[int] | None = None  # built when first asked

    def build(self) -> frozenset[int]:
        self.members = frozenset(self.keys)
        return self.members

    def __len__(self) -> int:
        return len(self.keys)


class SeenIds:
    """Event-id digests (64-bit ints) with the event time (s) of each, oldest first."""

    __slots__ = ("_blocks", "_frozen", "_tail")

    def __init__(self) -> None:
        self._blocks: tuple[_Block, ...] = ()
        self._tail: dict[int, int] = {}  # digest -> time (s), insertion order = arrival order
        self._frozen = 0  # ids in blocks

    @classmethod
    def from_arrays(cls, keys: array[int], ats: array[int]) -> SeenIds:
        """From the flat stored arrays (equal lengths: the shorter one bounds them)."""
        seen = cls()
        n = min(len(keys), len(ats))
        full = n - n % BLOCK
        seen._blocks = tuple(
            _Block(keys[i : i + BLOCK], ats[i : i + BLOCK]) for i in range(0, full, BLOCK)
        )
        seen._frozen = full
        seen._tail = dict(zip(keys[full:n], ats[full:n], strict=True))
        return seen

    @classmethod
    def from_bytes(cls, keys: bytes, ats: bytes) -> SeenIds:
        return cls.from_arrays(_array("Q", keys), _array("I", ats))

    def copy(self) -> SeenIds:
        """A copy sharing only the frozen blocks (which never change)."""
        new = object.__new__(SeenIds)
        new._blocks = self._blocks
        new._tail = dict(self._tail)
        new._frozen = self._frozen
        return new

    def __contains__(self, key: object) -> bool:
        if key in self._tail:
            return True
        for block in self._blocks:  # a plain loop: ~40 blocks at the hard cap, per event
            members = block.members
            if members is None:
                members = block.build()
            if key in members:
                return True
        return False

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
            yield from block.keys
        yield from self._tail

    def add(self, key: int, at: int) -> None:
        """Remember one id (in place: call it on a copy). A repeat is the caller's to refuse."""
        self._tail[key] = at
        if len(self._tail) >= BLOCK:
            keys, ats = array("Q", self._tail), array("I", self._tail.values())
            self._blocks += (_Block(keys, ats),)
            self._frozen += len(keys)
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
            self._frozen = size - len(self._tail)

    def keys_bytes(self) -> bytes:
        return b"".join(
            [b.keys.tobytes() for b in self._blocks] + [array("Q", self._tail).tobytes()]
        )

    def ats_bytes(self) -> bytes:
        tail = array("I", self._tail.values()).tobytes()
        return b"".join([b.ats.tobytes() for b in self._blocks] + [tail])


def _array(code: str, raw: bytes) -> array[int]:
    values = array(code)
    values.frombytes(raw[: len(raw) - len(raw) % values.itemsize])
    return values
