"""streams/profile_cache.py: decoded profiles kept between the fold's batches hold only what the
profiles table holds (what was read, what a batch wrote), and stay within their bounds."""

from __future__ import annotations

from typing import Any

import pytest

from engine.events import validate
from engine.profile import Profile, apply, new_profile
from streams.profile_cache import PROFILE_FACTOR, ProfileCache


def _profile(user: str, *items: str) -> Profile:
    profile = new_profile(user)
    for n, item in enumerate(items):
        event = validate(
            {
                "event_id": f"{user}-{n}",
                "user_id": user,
                "type": "product_view",
                "item_id": item,
                "ts": 1_700_000_000_000 + n,
            }
        )
        profile = apply(profile, event)
    return profile


class _Store:
    """A partition's rows, counting the reads."""

    def __init__(self, rows: dict[bytes, bytes]) -> None:
        self.rows = rows
        self.reads = 0

    def get(self, key: bytes) -> bytes | None:
        self.reads += 1
        return self.rows.get(key)


def test_a_read_keeps_what_it_read_and_the_next_read_is_not_a_store_read() -> None:
    stored = _profile("ann", "p1", "p2")
    store = _Store({b"u:ann": stored.pack()})
    cache = ProfileCache(10, 10**6)
    first = cache.read(b"u:ann", store.get)
    again = cache.read(b"u:ann", store.get)
    assert first is not None and first.pack() == stored.pack()
    assert again is first and store.reads == 1
    assert cache.kept(b"u:ann") is first and cache.kept(b"u:bob") is None  # kept: no read
    assert cache.read(b"u:bob", store.get) is None  # no row: nothing kept
    assert cache.read(b"u:bob", store.get) is None and store.reads == 3
    assert cache.accounted >= PROFILE_FACTOR * len(stored.pack())


def test_an_unreadable_row_raises_and_is_not_kept() -> None:
    store = _Store({b"u:ann": b"\xc1not msgpack"})
    cache = ProfileCache(10, 10**6)
    for _ in range(2):
        with pytest.raises(Exception):  # noqa: B017 - whatever unpack raises; the caller wraps it
            cache.read(b"u:ann", store.get)
    assert store.reads == 2 and len(cache) == 0


def test_written_profiles_replace_what_was_kept_and_only_those_written() -> None:
    store = _Store({})
    cache = ProfileCache(10, 10**6)
    old = _profile("ann", "p1")
    store.rows[b"u:ann"] = old.pack()
    assert cache.read(b"u:ann", store.get) is not None
    new_ann, refused_bob, clean_cid = _profile("ann", "p1", "p2"), _profile("bob"), _profile("cid")
    touched: dict[bytes, tuple[Profile | None, Any, bool]] = {
        b"u:ann": (new_ann, None, True),  # written
        b"u:bob": (refused_bob, None, True),  # dirty, refused: not written
        b"u:cid": (clean_cid, None, False),  # not dirty: nothing written
        b"u:dan": (None, None, True),  # erased: a tombstone
    }
    items = [(b"u:ann", new_ann.pack()), (b"u:dan", None)]
    cache.forget(items)  # as the worker writes: the written keys dropped first
    assert len(cache) == 0
    store.rows[b"u:ann"] = new_ann.pack()
    cache.keep(touched, {b"u:ann": len(new_ann.pack())})
    assert cache.read(b"u:ann", store.get) is new_ann  # the written object, no store read
    reads = store.reads
    assert cache.read(b"u:bob", store.get) is None and store.reads == reads + 1  # not kept
    assert cache.read(b"u:cid", store.get) is None and store.reads == reads + 2
    assert cache.read(b"u:dan", store.get) is None and store.reads == reads + 3


def test_bounded_by_entries_and_accounted_bytes_the_oldest_go_first() -> None:
    profiles = {f"u{i}".encode(): _profile(f"u{i}", "p1") for i in range(5)}
    store = _Store({key: p.pack() for key, p in profiles.items()})
    cache = ProfileCache(3, 10**6)
    for key in profiles:
        cache.read(key, store.get)
    assert len(cache) == 3
    reads = store.reads
    cache.read(b"u4", store.get)  # the newest: kept
    assert store.reads == reads
    cache.read(b"u0", store.get)  # the oldest: gone
    assert store.reads == reads + 1
    size = len(profiles[b"u0"].pack())
    small = ProfileCache(100, PROFILE_FACTOR * size * 2 + 500)  # room for about two
    for key in profiles:
        small.read(key, store.get)
    assert 1 <= len(small) <= 2 and small.accounted <= PROFILE_FACTOR * size * 2 + 500
    small.clear()
    assert len(small) == 0 and small.accounted == 0
