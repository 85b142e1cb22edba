"""streams/profile_cache.py: decoded profiles kept between the fold's batches hold only what the
profiles table holds (what was read, what a batch wrote), and stay within their bounds."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from engine.events import validate
from engine.memo import ENTRY_OVERHEAD
from engine.profile import Profile, apply, new_profile
from streams.profile_cache import PROFILE_BASE, ProfileCache, profile_cost
from tests.streams.grown import grown


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
    assert cache.accounted >= profile_cost(len(stored.pack()))


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
    small = ProfileCache(100, profile_cost(size) * 2 + 500)  # room for about two
    for key in profiles:
        small.read(key, store.get)
    assert 1 <= len(small) <= 2 and small.accounted <= profile_cost(size) * 2 + 500
    small.clear()
    assert len(small) == 0 and small.accounted == 0


@pytest.mark.parametrize("events", [1, 3, 10, 30, 100, 300])
def test_a_kept_profile_counts_at_least_what_its_objects_take(events: int) -> None:
    """The cache's byte bound is real memory: a decoded profile's objects (measured with
    tracemalloc) never take more than it is accounted for, small profiles (a fixed part
    dominates) and large ones alike."""
    packed = [grown(f"user{i}", events).pack() for i in range(200)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        decoded = [Profile.unpack(value) for value in packed]
        taken = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(decoded) == len(packed)
    assert taken <= sum(profile_cost(len(value)) for value in packed)


def test_a_budget_of_zero_keeps_nothing() -> None:
    """PERSONA_PROFILE_CACHE_MB=0: every read is a store read."""
    stored = _profile("ann", "p1")
    store = _Store({b"u:ann": stored.pack()})
    cache = ProfileCache.within(0)
    assert cache.read(b"u:ann", store.get) is not None
    assert cache.read(b"u:ann", store.get) is not None
    assert store.reads == 2 and len(cache) == 0 and cache.accounted == 0


@pytest.mark.parametrize(("mb", "bound"), [(0, 1), (3, 3 * 1024 * 1024), (64, 64 * 1024 * 1024)])
def test_the_worker_bounds_its_cache_by_the_setting(tmp_path: Path, mb: int, bound: int) -> None:
    from engine.settings import Settings
    from streams.app import PersonaStreams

    streams = PersonaStreams(
        Settings(data_dir=tmp_path, profile_cache_mb=mb), "kafka://127.0.0.1:9"
    )
    assert streams._profile_cache._memo.max_bytes == bound
    assert streams._profile_cache._memo.max_entries == max(1, bound // PROFILE_BASE)


def test_the_byte_budget_alone_bounds_how_many_profiles_are_kept() -> None:
    """A budget that holds more than 100,000 small profiles keeps them all (the worker's cache
    stopped at 100,000 entries whatever `PERSONA_PROFILE_CACHE_MB` said), and one that holds
    fewer keeps what its bytes allow."""
    profile = _profile("ann", "p1")
    size = len(profile.pack())
    n = 120_000
    touched: dict[bytes, tuple[Any, Any, bool]] = {
        b"u:%d" % i: (profile, None, True) for i in range(n)
    }
    written = dict.fromkeys(touched, size)
    roomy = ProfileCache.within(n * (profile_cost(size) + ENTRY_OVERHEAD))
    roomy.keep(touched, written)
    assert len(roomy) == n and roomy.kept(b"u:0") is profile
    tight = ProfileCache.within(1000 * (profile_cost(size) + ENTRY_OVERHEAD))
    tight.keep(touched, written)
    assert len(tight) == 1000 and tight.kept(b"u:%d" % (n - 1)) is profile
    assert tight.kept(b"u:0") is None  # the oldest went first


def test_a_read_that_does_not_keep_leaves_the_cache_as_it_was() -> None:
    """The fold reads with keep=False (it writes the profile back and keeps it then): a miss is
    a store read each time and nothing is kept."""
    store = _Store({b"u:ann": _profile("ann", "p1").pack()})
    cache = ProfileCache(10, 10_000_000)
    assert cache.read(b"u:ann", store.get, keep=False) is not None
    assert len(cache) == 0 and cache.accounted == 0 and cache.kept(b"u:ann") is None
    assert cache.read(b"u:ann", store.get, keep=False) is not None and store.reads == 2
    kept = cache.read(b"u:ann", store.get)  # the default keeps
    assert cache.read(b"u:ann", store.get, keep=False) is kept and store.reads == 3


def test_forget_leaves_the_keys_the_writer_keeps_after_and_drops_the_rest() -> None:
    old_ann, old_bob = _profile("ann", "p1"), _profile("bob", "p1")
    cache = ProfileCache(10, 10_000_000)
    touched: dict[bytes, tuple[Profile | None, Any, bool]] = {
        b"u:ann": (old_ann, None, True),
        b"u:bob": (old_bob, None, True),
    }
    cache.keep(touched, {b"u:ann": 10, b"u:bob": 10})
    new_ann = _profile("ann", "p1", "p2")
    cache.forget([(b"u:ann", new_ann.pack()), (b"u:bob", None)], kept={b"u:ann": 1})
    assert cache.kept(b"u:ann") is old_ann  # replaced by the keep that follows the write
    assert cache.kept(b"u:bob") is None  # a tombstone: dropped before the write
    cache.keep({b"u:ann": (new_ann, None, True)}, {b"u:ann": len(new_ann.pack())})
    assert cache.kept(b"u:ann") is new_ann and len(cache) == 1


class _FailingWriter:
    """The worker's table writer, failing at its second partition (a changelog send failed)."""

    def __init__(self) -> None:
        self.written: list[int] = []

    def write(self, partition: int, items: list[tuple[bytes, bytes | None]]) -> None:
        if self.written:
            raise RuntimeError("changelog send failed")
        self.written.append(partition)


def test_a_failed_batch_write_clears_what_the_worker_kept(tmp_path: Path) -> None:
    """The fold no longer drops its users' profiles from the cache before writing them (they are
    replaced after the write): a write that fails part-way must not leave the cache holding the
    old profile of a user whose new one a partition written before the failure already stores."""
    from engine.settings import Settings
    from streams.app import PersonaStreams

    streams = PersonaStreams(Settings(data_dir=tmp_path), "kafka://127.0.0.1:9")
    old_ann, old_bob = _profile("ann", "p1"), _profile("bob", "p1")
    cache = streams._profile_cache
    cache.keep(
        {b"u:ann": (old_ann, None, True), b"u:bob": (old_bob, None, True)},
        {b"u:ann": 10, b"u:bob": 10},
    )
    new_ann, new_bob = _profile("ann", "p1", "p2"), _profile("bob", "p1", "p2")
    touched: dict[bytes, tuple[Profile | None, Any, bool]] = {
        b"u:ann": (new_ann, None, True),
        b"u:bob": (new_bob, None, True),
    }
    writes = {0: [(b"u:ann", new_ann.pack())], 1: [(b"u:bob", new_bob.pack())]}
    written = {b"u:ann": len(new_ann.pack()), b"u:bob": len(new_bob.pack())}
    writer = _FailingWriter()
    streams._profile_writer = writer  # type: ignore[assignment]
    with pytest.raises(RuntimeError):
        streams._write_folded(writes, touched, written)  # type: ignore[arg-type]
    assert writer.written == [0]  # ann's new profile is stored ...
    assert cache.kept(b"u:ann") is None and len(cache) == 0  # ... and no old one is kept

    streams._profile_writer = _FailingWriter()  # type: ignore[assignment]
    streams._write_folded({0: writes[0]}, touched, {b"u:ann": written[b"u:ann"]})  # type: ignore[arg-type]
    assert cache.kept(b"u:ann") is new_ann  # a write that succeeds keeps what it wrote


def test_a_user_noted_without_a_fence_is_unfenced_until_a_fence_key_is_written() -> None:
    cache = ProfileCache(10, 10_000_000)
    assert not cache.unfenced(b"u:ann")
    cache.note_unfenced(b"u:ann")
    cache.note_unfenced(b"u:bob")
    assert cache.unfenced(b"u:ann") and cache.unfenced(b"u:bob")
    # the fold's own profile writes (kept) and other rows leave it as it is
    cache.forget([(b"u:ann", b"x"), (b"a:ann", b"y")], kept={b"u:ann": 1})
    assert cache.unfenced(b"u:ann")
    # an erasure writes the fence in the same batch as the profile's tombstone
    cache.forget([(b"u:ann", None), (b"e:ann", b"1700000000000")], kept={})
    assert not cache.unfenced(b"u:ann") and cache.unfenced(b"u:bob")
    cache.forget([(b"e:bob", None)])  # a fence deleted counts as written too
    assert not cache.unfenced(b"u:bob")


def test_unfenced_users_are_bounded_and_cleared_with_the_cache() -> None:
    cache = ProfileCache(3, 10_000_000)
    for user in (b"u:a", b"u:b", b"u:c", b"u:d"):
        cache.note_unfenced(user)
    assert [cache.unfenced(u) for u in (b"u:a", b"u:b", b"u:c", b"u:d")] == [
        False,
        True,
        True,
        True,
    ]
    cache.clear()  # a rebalance: table recovery may bring fences in
    assert not any(cache.unfenced(u) for u in (b"u:b", b"u:c", b"u:d"))


def test_the_worker_reads_a_fence_once_until_one_is_written(tmp_path: Path) -> None:
    """streams.app's fence read: a user without a stored fence is read from the partition once;
    after the worker writes a fence (an erasure), the next ask reads it again and finds it."""
    from engine.settings import Settings
    from streams.app import PersonaStreams

    streams = PersonaStreams(Settings(data_dir=tmp_path), "kafka://127.0.0.1:9")
    store = _Store({})
    streams.profile_db = lambda partition: store  # type: ignore[method-assign]
    assert streams._fence(b"u:ann", 0) is None and store.reads == 1
    assert streams._fence(b"u:ann", 0) is None and store.reads == 1  # remembered
    written: list[tuple[bytes, bytes | None]] = []

    class _Writer:
        def write(self, partition: int, items: list[tuple[bytes, bytes | None]]) -> None:
            written.extend(items)
            store.rows.update({k: v for k, v in items if v is not None})

    streams._profile_writer = _Writer()  # type: ignore[assignment]
    streams._write_profiles(0, [(b"u:ann", None), (b"e:ann", b"1700000000000")])
    assert streams._fence(b"u:ann", 0) == 1_700_000_000_000 and store.reads == 2
