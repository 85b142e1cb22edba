"""Caches and memos stay within their byte bounds under a flood of distinct keys (issue 14)."""

from __future__ import annotations

import sys

import pytest

from engine.blocks import BLOCK_OVERHEAD, Block, BlockCache, block_bytes, etag_of
from engine.memo import ENTRY_OVERHEAD, SizedMemo


def _block(user_id: str, content: str) -> Block:
    return Block(
        "recommendations", "html", user_id, content, True, "unknown_user", (), "default", {},
        etag_of(content), "text/html; charset=utf-8",
    )  # fmt: skip


def test_a_flood_of_distinct_keys_stays_within_the_memo_bytes() -> None:
    memo: SizedMemo[str, bytes] = SizedMemo(max_entries=1_000_000, max_bytes=1 << 20)
    for n in range(50_000):
        memo.put(f"user-{n:0120d}", b"x" * (n % 300), size=n % 300)
        assert memo.bytes <= 1 << 20
    assert 0 < len(memo) <= (1 << 20) // ENTRY_OVERHEAD
    assert memo.get(f"user-{49_999:0120d}") is not None  # the newest are kept
    assert memo.get(f"user-{0:0120d}") is None  # the oldest went first


def test_the_memo_accounts_replacements_and_removals() -> None:
    memo: SizedMemo[str, int] = SizedMemo(max_entries=10, max_bytes=10_000)
    memo.put("a", 1, size=100)
    memo.put("a", 2, size=300)
    assert memo.get("a") == 2 and memo.bytes == 300 + ENTRY_OVERHEAD
    for n in range(20):
        memo.put(str(n), n, size=0)
    assert len(memo) == 10
    memo.pop("19")
    memo.put("huge", 0, size=20_000)  # larger than the whole memo: not kept
    assert "huge" not in memo and memo.bytes == 9 * ENTRY_OVERHEAD
    memo.clear()
    assert memo.bytes == 0 and len(memo) == 0


def test_the_block_cache_is_bounded_in_bytes_under_a_flood() -> None:
    bound = 4 << 20
    cache = BlockCache(max_entries=1_000_000, max_bytes=bound)
    for n in range(20_000):
        cache.put((f"user-{n}", "recommendations", "html", "default"), 1, _block(
            f"user-{n}", "<p>" + "é" * (n % 2000) + "</p>"
        ))  # fmt: skip
        assert cache.bytes <= bound
    assert len(cache) < 20_000 and cache.evictions == 20_000 - len(cache)
    held = sum(block_bytes(b) for _, b, _ in cache._entries.values())
    assert held == cache.bytes  # the accounting matches what is held


def test_block_bytes_counts_the_text_twice_and_its_utf8_four_times() -> None:
    block = _block("u", "x" * 5_000 + "\u20ac" * 5_000)
    assert block_bytes(block) == (
        2 * sys.getsizeof(block.content) + 4 * len(block.content.encode()) + BLOCK_OVERHEAD
    )


def test_a_block_served_as_msgpack_gives_back_what_it_counted() -> None:
    """Packing a non-ASCII text makes CPython keep its UTF-8 copy, which `sys.getsizeof`
    counts from then on: the cache gives back the bytes it counted at `put`, not the text's
    size at removal (which drove `bytes` below zero and let the cache outgrow its bound)."""
    cache = BlockCache(max_entries=1_000_000, max_bytes=1 << 20)
    for n in range(2_000):
        key = (f"user-{n}", "recommendations", "html", "default")
        cache.put(key, 1, _block(f"user-{n}", "<p>" + "é" * 3000 + "</p>"))
        held = cache.get(key, 1)
        assert held is not None
        held.entry_msgpack  # noqa: B018
        assert 0 <= cache.bytes <= 1 << 20
    cache.get(("user-1999", "recommendations", "html", "default"), 2)  # stale: dropped
    for n in range(2_000):
        cache.invalidate_user(f"user-{n}")
    assert (len(cache), cache.bytes) == (0, 0)


@pytest.mark.parametrize("how", ["invalidate", "stale", "clear", "replace"])
def test_the_block_cache_gives_back_the_bytes_it_drops(how: str) -> None:
    cache = BlockCache()
    key = ("u", "recommendations", "html", "default")
    cache.put(key, 1, _block("u", "a" * 1000))
    cache.put(("v", "winback", "html", "default"), 1, _block("v", "b"))
    if how == "invalidate":
        assert cache.invalidate_user("u") == 1
    elif how == "stale":
        assert cache.get(key, 2) is None
    elif how == "replace":
        cache.put(key, 2, _block("u", "c"))
        cache.invalidate_user("u")
    else:
        cache.clear()
        assert cache.bytes == 0
        return
    assert cache.bytes == block_bytes(_block("v", "b"))


def test_a_replaced_entry_counts_as_the_newest_and_an_oversized_one_drops_it() -> None:
    """`put` over a kept key (the profile cache's steady state) replaces it in place: it moves
    to the newest end (the oldest other entry goes first), its bytes are the new size, and a
    replacement larger than the whole memo leaves the key out altogether."""
    memo: SizedMemo[str, int] = SizedMemo(max_entries=3, max_bytes=10_000)
    for key in ("a", "b", "c"):
        memo.put(key, 0, size=100)
    memo.put("a", 1, size=200)  # replaced: now the newest
    assert memo.bytes == 100 + 100 + 200 + 3 * ENTRY_OVERHEAD
    memo.put("d", 0, size=100)  # over the entries: "b" (the oldest) goes, not "a"
    assert "b" not in memo and memo.get("a") == 1 and "c" in memo and "d" in memo
    memo.put("c", 2, size=20_000)  # larger than the whole memo: the old "c" is dropped too
    assert "c" not in memo and memo.bytes == 200 + 100 + 2 * ENTRY_OVERHEAD
    memo.put("e", 0, size=100)
    memo.put("f", 0, size=100)  # "a" (replaced before "d") is the oldest now
    assert "a" not in memo and [k for k in ("d", "e", "f") if k in memo] == ["d", "e", "f"]
