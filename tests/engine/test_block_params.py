"""engine.blocks with request parameters: filters on every candidate list (personal, cart, the
fallback's best-sellers), `n`, the `similar_items` block (never its context item), `locale` in the
templates, and template directories made before `similar_items` existed."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from engine.blocks import (
    DEFAULT_TEMPLATE_DIR,
    BlockPolicy,
    Renderer,
    assemble,
    decide,
    decide_similar,
)
from engine.params import build
from tests.engine.test_blocks import inp, lookup, shopper


def ids(items: list) -> list[str]:  # type: ignore[type-arg]
    return [p.item_id for p in items]


def test_filters_and_n_apply_to_personal_items_and_to_the_fallback() -> None:
    params = build({"exclude": "p6,b1", "n": 2})
    personal = replace(inp(profile=shopper()), params=params)
    items, fallback, _ = decide(personal, lookup, BlockPolicy())
    assert (ids(items), fallback) == (["p5", "p7"], False)
    unknown = replace(inp(profile=None), params=params)
    items, fallback, reason = decide(unknown, lookup, BlockPolicy())
    assert (ids(items), fallback, reason) == (["b0", "b2"], True, "unknown_user")


def test_a_filter_nothing_passes_falls_back_to_filtered_best_sellers() -> None:
    params = build({"category": "tea"})  # the p* items are mugs, the b* best-sellers tea
    items, fallback, reason = decide(
        replace(inp(profile=shopper()), params=params), lookup, BlockPolicy()
    )
    assert fallback and reason == "nothing_personal"
    assert ids(items) == ["b0", "b1", "b2", "b3", "b4", "b5"]


def test_the_cart_reminder_is_filtered_too() -> None:
    params = build({"exclude": "p2"})
    cart = replace(inp("cart_reminder", profile=shopper()), params=params)
    items, fallback, _ = decide(cart, lookup, BlockPolicy())
    assert not fallback and "p2" not in ids(items) and "p3" in ids(items)


def test_similar_items_never_show_the_context_item() -> None:
    params = build({"context_item": "p5"})
    block = replace(inp("similar_items", profile=shopper(), recs=["p5", "p6", "p7"]), params=params)
    items, fallback, _ = decide(block, lookup, BlockPolicy())
    assert (ids(items), fallback) == (["p6", "p7"], False)
    alone = replace(block, profile=None, user_id="")
    assert ids(decide_similar(alone, lookup, BlockPolicy())[0]) == ["p6", "p7"]
    nothing = replace(alone, recommendations=["p5", "gone"])
    items, fallback, reason = decide_similar(nothing, lookup, BlockPolicy())
    assert fallback and reason == "nothing_similar" and "p5" not in ids(items)


def test_locale_reaches_the_templates() -> None:
    params = build({"context_item": "p5", "locale": "de-de"})
    block = replace(inp("similar_items", profile=shopper(), recs=["p6"]), params=params)
    out = assemble(block, lookup, BlockPolicy(), Renderer())
    assert 'lang="de-DE"' in out.content and "Mehr davon" in out.content
    # a language without texts is written in English, and says so (engine.locales.lang_of)
    params = build({"context_item": "p5", "locale": "pt-br"})
    block = replace(block, params=params)
    out = assemble(block, lookup, BlockPolicy(), Renderer())
    assert 'lang="en"' in out.content and "More like this" in out.content


def test_a_template_directory_without_similar_items_takes_the_packaged_ones(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "templates"
    shutil.copytree(DEFAULT_TEMPLATE_DIR, directory, ignore=shutil.ignore_patterns("*.py"))
    (directory / "email" / "similar_items.html").unlink()
    (directory / "ads" / "similar_items.json").unlink()
    (directory / "email" / "recommendations.html").write_text("mine")
    renderer = Renderer(template_dir=directory)
    params = build({"context_item": "p5"})
    block = replace(inp("similar_items", profile=shopper(), recs=["p6"]), params=params)
    assert "More like this" in assemble(block, lookup, BlockPolicy(), renderer).content
    mine = assemble(inp(profile=shopper()), lookup, BlockPolicy(), renderer)
    assert mine.content == "mine"
