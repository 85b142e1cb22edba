"""The content service's block caches count at least the memory their blocks take once served
in every form (tracemalloc), and give back exactly what they counted.

Seen on 2026-12-07: a reader's block cache counted each html block 4x its text as the text was
when stored (~26.8 kB for the demo's recommendations block), while the block with its body, its
JSON and msgpack entries and its headers took ~33 kB; and it took the bytes back by the text's
size at removal, which includes the UTF-8 copy CPython keeps once msgpack packed it: each block
removed after a msgpack answer gave back ~24 kB more than it had added, so the accounted bytes
fell below zero and the byte bound stopped holding."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

import api.block_headers as block_headers
from api.content import ContentService
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.catalog import Product
from engine.events import validate
from engine.params import NO_PARAMS, BlockParams, build
from models.registry import ModelSet

T0 = 1_300_000_000_000
USERS = 300
TITLES = {
    "latin": "Cafetière £ {item}",  # latin-1: one byte per character, a UTF-8 copy once packed
    "ascii": "Product {item}",
    "ucs2": "Mug \u20ac {item}",  # the euro sign: two bytes per character
    "ucs4": "Gift \U0001f381 {item}",  # an emoji: four bytes per character
}


def _state(title: str) -> MemoryState:
    state = MemoryState()
    items = ModelSet.default().recs.popular[:80]
    for item in items:
        state.put_product(
            Product(
                item,
                title.format(item=item) + ' "quoted" <b>',
                f"https://shop.example.com/p/{item}",
                f"https://shop.example.com/i/{item}.jpg",
                2.5,
                "GBP",
                "in_stock",
            )
        )
    for user in range(USERS):
        for n in range(4):
            state.apply(
                validate(
                    {
                        "event_id": f"u{user}-{n}",
                        "type": "product_view",
                        "user_id": f"user-{user:05d}",
                        "ts": T0 + n,
                        "item_id": items[(user + 7 * n) % len(items)],
                    }
                )
            )
    return state


def _serve_every_form(content: ContentService, user: str, fmt: str, params: BlockParams) -> None:
    block = content.block(user, "recommendations", fmt, params=params)
    block.body, block.entry_msgpack, block.entry_json, block.models_header  # noqa: B018
    block_headers.header_lines(block, True)
    block_headers.header_lines(block, False)


def _accounted(content: ContentService) -> int:
    return content.cache.bytes + content.param_cache.bytes


@pytest.mark.parametrize("title", sorted(TITLES))
@pytest.mark.parametrize("fmt", ["html", "json"])
@pytest.mark.parametrize("n", [None, 50])
def test_a_cached_block_counts_at_least_what_it_takes_served(
    title: str, fmt: str, n: int | None
) -> None:
    state = _state(TITLES[title])
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    params = NO_PARAMS if n is None else build({"n": n})
    users = [f"user-{user:05d}" for user in range(USERS)]
    for user in users:  # scores (their own memo, accounted on their own) and one-time objects
        profile = state.profile(user)
        assert profile is not None
        content.scores(profile)
    content.fallback_block("warm", "recommendations", fmt, params=params)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        counted = _accounted(content)
        for user in users:
            _serve_every_form(content, user, fmt, params)
        gc.collect()
        taken = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    counted = _accounted(content) - counted
    assert taken <= counted, f"{taken / USERS:.0f} bytes a block, {counted / USERS:.0f} counted"


@pytest.mark.parametrize("title", sorted(TITLES))
def test_served_blocks_dropped_give_back_what_they_counted(title: str) -> None:
    state = _state(TITLES[title])
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    for user in range(USERS):
        for fmt in ("html", "json"):
            _serve_every_form(content, f"user-{user:05d}", fmt, NO_PARAMS)
            _serve_every_form(content, f"user-{user:05d}", fmt, build({"n": 3}))
    assert content.cache.bytes > 0 and content.param_cache.bytes > 0
    for user in range(USERS):
        content.forget(f"user-{user:05d}")
    assert (content.cache.bytes, content.param_cache.bytes) == (0, 0)
