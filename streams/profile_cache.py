"""Decoded profiles of recently folded users, kept between the fold's batches (issue 21 item 5).

A batch loads each of its users' profiles once, a RocksDB read and an unpack (~32 us a user,
timed in a worker folding REES46), and writes the changed ones. A shop's users come in sessions:
the users of one batch fold again in the next ones. `ProfileCache` keeps the profiles a batch
wrote, as objects, so the next batch's load of the same user is a dict read; Kafka Streams puts
a record cache in front of its state stores for the same reason. A profile is never changed in
place (`engine.profile.apply` returns a new one), so an object kept here stays what was written.

The cache holds only what the profiles table holds:
- every write to the table drops the keys it writes (`forget`, before the write);
- once a batch is written, `keep` puts back the profiles it wrote, from the values written;
- a rebalance clears it (table recovery rewrites partitions), and so does a batch dropped for a
  rebalance (its loads may have read a partition during recovery);
- a read that misses keeps what it read, unless the caller writes (and so keeps) what it read
  anyway: the fold (`read(..., keep=False)`), whose loaded profiles are written back at the
  end of the batch in the common case, one memo entry instead of two;
- the fold's own writes of profiles it keeps right after are not dropped first (`forget`'s
  `kept`): `keep` replaces them, and a failed write clears the whole cache instead.
Bounded by accounted bytes alone (`PERSONA_PROFILE_CACHE_MB`, `ProfileCache.within`): a decoded
profile counts PROFILE_BASE + PROFILE_FACTOR times its stored size, at or above what tracemalloc
measured for decoded profiles (2026-12-05): 10.6-13.4x the stored bytes for profiles of 1 to 300
views, carts and purchases (148 to 5,650 bytes stored; tests/streams/test_profile_cache.py checks
it), 13.0x for the synthetic users of `benchmarks.scale` (236 bytes), 8.4-10.4x for REES46 users. It
counted 10x before, below what small and mid-sized profiles take.

It also remembers which users have no stored erasure fence (`unfenced`): the fold asks for a
user's fence once per batch (~1.5 us a RocksDB miss: ~0.7 us an event folding REES46, issue 21
item 5), and a fence is written only through the same writes (`forget` sees its key and drops the
user) or by a table recovery (a rebalance clears the cache). At most as many users as profiles
can be kept, oldest dropped first (~100 bytes each).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any

from engine.memo import SizedMemo
from engine.profile import Profile
from streams.keys import FENCE_PREFIX, USER_PREFIX

PROFILE_BASE = 1_000  # bytes of a decoded profile's objects besides what grows with its size
PROFILE_FACTOR = 14  # ... and per stored byte
_FENCED = len(FENCE_PREFIX)


def profile_cost(stored: int) -> int:
    """The bytes a decoded profile of `stored` packed bytes counts for in the cache."""
    return PROFILE_BASE + PROFILE_FACTOR * stored


class ProfileCache:
    """Decoded profiles by profiles-table key, as stored (module doc)."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._memo: SizedMemo[bytes, Profile] = SizedMemo(max_entries, max_bytes)
        self._unfenced: OrderedDict[bytes, None] = OrderedDict()
        self._unfenced_max = max_entries

    @classmethod
    def within(cls, max_bytes: int) -> ProfileCache:
        """A cache bounded by `max_bytes` of accounted profiles alone: every profile counts at
        least PROFILE_BASE, so it never holds more than `max_bytes // PROFILE_BASE` of them.
        The worker's fixed bound of 100,000 entries before kept a larger
        `PERSONA_PROFILE_CACHE_MB` from holding more small profiles than that (~440 MB of
        them: a setting above it changed nothing)."""
        return cls(max(1, max_bytes // PROFILE_BASE), max(1, max_bytes))

    def __len__(self) -> int:
        return len(self._memo)

    @property
    def accounted(self) -> int:
        """The accounted bytes of the profiles kept."""
        return self._memo.bytes

    def kept(self, user: bytes) -> Profile | None:
        """The user's profile if kept, else None (not kept, or no profile: ask `read`)."""
        return self._memo.get(user)

    def read(
        self, user: bytes, stored: Callable[[bytes], bytes | None], keep: bool = True
    ) -> Profile | None:
        """The user's profile: kept, else read with `stored` and unpacked (and kept, unless
        `keep` is False). An unreadable stored value raises what `Profile.unpack` raises, and is
        not kept."""
        kept = self._memo.get(user)
        if kept is not None:
            return kept
        raw = stored(user)
        if raw is None:
            return None
        profile = Profile.unpack(raw)
        if keep:
            self._memo.put(user, profile, profile_cost(len(raw)))
        return profile

    def unfenced(self, user: bytes) -> bool:
        """Whether the user (profiles-table key) is known to have no stored fence."""
        return user in self._unfenced

    def note_unfenced(self, user: bytes) -> None:
        """The user's fence was just read from the table and there is none (no write between:
        the caller reads and notes without giving the event loop a turn)."""
        unfenced = self._unfenced
        unfenced[user] = None
        if len(unfenced) > self._unfenced_max:
            unfenced.popitem(last=False)

    def forget(self, items: Iterable[tuple[bytes, Any]], kept: Container[bytes] = ()) -> None:
        """Drop the keys about to be written (values: anything; tombstones included), but those
        in `kept`: the caller `keep`s them once written (which replaces what is kept) and
        `clear`s the cache if the write fails. A fence key written (or deleted) drops its
        user from the unfenced ones."""
        pop = self._memo.pop
        unfenced = self._unfenced
        for key, _ in items:
            if key in kept:
                continue
            pop(key)
            if key[:_FENCED] == FENCE_PREFIX:
                unfenced.pop(USER_PREFIX + key[_FENCED:], None)

    def keep(
        self,
        touched: Mapping[bytes, tuple[Profile | None, Any, bool]],
        written: Mapping[bytes, int],
    ) -> None:
        """After a batch's writes: keep the profiles it wrote. `touched` is the batch's users
        (profile, carrier, dirty); `written` the stored size of each profile written from it
        (users of `touched` only).
        A dirty profile not written (refused, or the batch's writes failed) is not kept."""
        put = self._memo.put
        for user, size in written.items():
            profile = touched[user][0]
            if profile is not None:
                put(user, profile, profile_cost(size))

    def clear(self) -> None:
        self._memo.clear()
        self._unfenced.clear()
