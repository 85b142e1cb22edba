"""Content blocks: decisions, rendering (escaping, e-mail safety, JSON shape), failures, cache."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from engine.blocks import (
    BLOCKS,
    DEFAULT_TEMPLATE_DIR,
    FORMATS,
    Block,
    BlockCache,
    BlockInput,
    BlockPolicy,
    Renderer,
    TemplateSetupError,
    UnknownBlock,
    assemble,
    decide,
    etag_of,
    format_price,
    item_view,
)
from engine.catalog import Product
from engine.events import validate
from engine.profile import Profile, apply

CONTRACT_KEYS = {"block", "user_id", "items", "variant", "models", "fallback"}
ITEM_KEYS = {"item_id", "title", "url", "image_url", "price", "currency"}
_ids = count()


def product(item_id: str, **kw: Any) -> Product:
    data: dict[str, Any] = {
        "item_id": item_id,
        "title": f"Product {item_id}",
        "url": f"https://shop.example/p/{item_id}",
        "image_url": f"https://cdn.example/img/{item_id}.jpg",
        "price": 2.55,
        "currency": "GBP",
        "category": "mugs",
    }
    data.update(kw)
    return Product(**data)


CATALOG: dict[str, Product] = {
    **{f"p{i}": product(f"p{i}") for i in range(10)},
    **{f"b{i}": product(f"b{i}", title=f"Best-seller {i}", category="tea") for i in range(10)},
    "gone": product("gone", availability="out_of_stock"),
    "pre": product("pre", availability="preorder", price=3.0, currency="EUR"),
    "evil": product("evil", title='<script>alert("x")</script> & "quotes"'),
}
POPULAR = ["gone", "b0", "b1", "nope", "b2", "b3", "b4", "b5", "b6", "b7"]


def lookup(item_id: str) -> Product | None:
    return CATALOG.get(item_id)


def event(user: str, etype: str, **kw: Any) -> dict[str, Any]:
    return {
        "event_id": f"e{next(_ids)}",
        "type": etype,
        "user_id": user,
        "ts": 1_700_000_000_000,
        **kw,
    }


def build(user: str, *events: dict[str, Any]) -> Profile:
    profile: Profile | None = None
    for data in events:
        ev = validate(data)
        profile = apply(profile, ev, CATALOG.get(ev.item_id or ""))
    assert profile is not None
    return profile


def shopper(user: str = "u1", **consent: bool) -> Profile:
    evs = [
        event(user, "product_view", item_id="p1"),
        event(user, "add_to_cart", item_id="p2", quantity=2),
        event(user, "add_to_cart", item_id="gone"),
        event(user, "add_to_cart", item_id="unknown"),
        event(user, "add_to_cart", item_id="p3"),
    ]
    if consent:
        evs.append(event(user, "consent", props=consent))
    return build(user, *evs)


def inp(
    block: str = "recommendations",
    fmt: str = "html",
    profile: Profile | None = None,
    *,
    user_id: str = "u1",
    churn: float | None = 0.9,
    recs: list[str] | None = None,
    popular: list[str] | None = None,
    variant: str = "default",
) -> BlockInput:
    return BlockInput(
        block=block,
        fmt=fmt,
        user_id=user_id,
        profile=profile,
        churn=churn,
        recommendations=["p5", "gone", "unknown", "p6", "p5", "p7"] if recs is None else recs,
        models={"recs": "v3", "churn": "v2"},
        popular=POPULAR if popular is None else popular,
        variant=variant,
    )


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


FALLBACK_IDS = ["b0", "b1", "b2", "b3", "b4", "b5"]  # purchasable best-sellers, first 6


# -- decide ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_recommendations_personalized_skip_unknown_out_of_stock_and_duplicates(fmt: str) -> None:
    items, fallback, reason = decide(inp("recommendations", fmt, shopper()), lookup, BlockPolicy())
    assert (fallback, reason) == (False, "")
    assert [p.item_id for p in items] == ["p5", "p6", "p7"]


def test_recommendations_limit_from_policy() -> None:
    recs = [f"p{i}" for i in range(10)]
    items, _, _ = decide(inp(profile=shopper(), recs=recs), lookup, BlockPolicy(items=4))
    assert [p.item_id for p in items] == ["p0", "p1", "p2", "p3"]


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_user_gets_best_sellers(block: str, fmt: str) -> None:
    items, fallback, reason = decide(inp(block, fmt, None), lookup, BlockPolicy())
    assert (fallback, reason) == (True, "unknown_user")
    assert [p.item_id for p in items] == FALLBACK_IDS  # out-of-stock and unknown skipped


def test_nothing_personal_when_no_usable_recommendation() -> None:
    items, fallback, reason = decide(
        inp(profile=shopper(), recs=["gone", "unknown"]), lookup, BlockPolicy()
    )
    assert (fallback, reason) == (True, "nothing_personal")
    assert [p.item_id for p in items] == FALLBACK_IDS


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_personalization_withdrawn_falls_back(block: str, fmt: str) -> None:
    profile = shopper(personalization=False)
    _, fallback, reason = decide(inp(block, fmt, profile), lookup, BlockPolicy())
    assert (fallback, reason) == (True, "no_consent")


@pytest.mark.parametrize("block", BLOCKS)
def test_ads_consent_only_affects_json(block: str) -> None:
    profile = shopper(ads=False)
    _, html_fallback, _ = decide(inp(block, "html", profile), lookup, BlockPolicy())
    _, json_fallback, reason = decide(inp(block, "json", profile), lookup, BlockPolicy())
    assert html_fallback is False
    assert (json_fallback, reason) == (True, "no_consent")


def test_consent_default_required() -> None:
    required = BlockPolicy(consent_default=False)
    _, fallback, reason = decide(inp(profile=shopper()), lookup, required)
    assert (fallback, reason) == (True, "no_consent")
    granted = shopper(personalization=True)
    _, fallback, _ = decide(inp("recommendations", "html", granted), lookup, required)
    assert fallback is False
    _, fallback, reason = decide(inp("recommendations", "json", granted), lookup, required)
    assert (fallback, reason) == (True, "no_consent")  # ads never granted


def test_cart_reminder_html_keeps_out_of_stock_in_cart_order() -> None:
    items, fallback, _ = decide(inp("cart_reminder", "html", shopper()), lookup, BlockPolicy())
    assert fallback is False
    assert [p.item_id for p in items] == ["p2", "gone", "p3"]  # unknown item skipped


def test_cart_reminder_json_skips_out_of_stock() -> None:
    items, fallback, _ = decide(inp("cart_reminder", "json", shopper()), lookup, BlockPolicy())
    assert fallback is False
    assert [p.item_id for p in items] == ["p2", "p3"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_cart_reminder_empty_cart(fmt: str) -> None:
    profile = build(
        "u2",
        event("u2", "add_to_cart", item_id="p1"),
        event("u2", "remove_from_cart", item_id="p1"),
    )
    assert profile.cart == {}
    items, fallback, reason = decide(inp("cart_reminder", fmt, profile), lookup, BlockPolicy())
    assert (fallback, reason) == (True, "empty_cart")
    assert [p.item_id for p in items] == FALLBACK_IDS


def test_cart_reminder_only_unknown_items_is_nothing_personal() -> None:
    profile = build("u3", event("u3", "add_to_cart", item_id="unknown"))
    _, fallback, reason = decide(inp("cart_reminder", "html", profile), lookup, BlockPolicy())
    assert (fallback, reason) == (True, "nothing_personal")


@pytest.mark.parametrize("churn", [None, 0.0, 0.49])
def test_winback_low_churn_risk(churn: float | None) -> None:
    _, fallback, reason = decide(
        inp("winback", "html", shopper(), churn=churn), lookup, BlockPolicy()
    )
    assert (fallback, reason) == (True, "low_churn_risk")


def test_winback_at_threshold_uses_recommendations() -> None:
    items, fallback, _ = decide(inp("winback", "json", shopper(), churn=0.5), lookup, BlockPolicy())
    assert fallback is False
    assert [p.item_id for p in items] == ["p5", "p6", "p7"]


def test_winback_without_recommendations_uses_favourite_categories() -> None:
    profile = build(
        "u4",
        event("u4", "product_view", item_id="b9", props={"category": "tea"}),
        event("u4", "product_view", item_id="p9", props={"category": "mugs"}),
        event("u4", "add_to_cart", item_id="b8", props={"category": "tea"}),
    )
    popular = ["p0", "b0", "gone", "p1", "b1"]
    items, fallback, _ = decide(
        inp("winback", "html", profile, recs=[], popular=popular), lookup, BlockPolicy()
    )
    assert fallback is False
    assert [p.item_id for p in items] == ["b0", "b1", "p0", "p1"]  # tea first, then mugs


def test_unknown_block_or_format() -> None:
    with pytest.raises(UnknownBlock):
        decide(inp("banner"), lookup, BlockPolicy())
    with pytest.raises(UnknownBlock):
        decide(inp(fmt="xml"), lookup, BlockPolicy())


# -- render ----------------------------------------------------------------------------------------


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


def check_email_safe(html: str) -> None:
    found = tags(html)
    names = {name for name, _ in found}
    assert not names & {"style", "script", "link", "iframe", "form"}
    assert "<style" not in html.lower() and "<script" not in html.lower()
    tables = [attrs for name, attrs in found if name == "table"]
    assert len(tables) >= 2 and all(t.get("role") == "presentation" for t in tables)
    for name, attrs in found:
        if name == "img":
            assert str(attrs.get("src")).startswith("https://")
            assert attrs.get("width") and attrs.get("height") and attrs.get("alt")


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("personal", [True, False])
def test_html_blocks(renderer: Renderer, block: str, personal: bool) -> None:
    profile = shopper() if personal else None
    out = assemble(inp(block, "html", profile), lookup, BlockPolicy(), renderer)
    assert out.fallback is not personal
    assert out.content_type == "text/html; charset=utf-8"
    assert out.items and out.etag == etag_of(out.content)
    assert re.fullmatch(r'"[0-9a-f]{32}"', out.etag)
    check_email_safe(out.content)
    imgs = [attrs["src"] for name, attrs in tags(out.content) if name == "img"]
    assert imgs == [CATALOG[i].image_url for i in out.items]
    heading = {
        "recommendations": "Recommended for you",
        "cart_reminder": "Still in your cart",
        "winback": "We miss you",
    }[block]
    if personal:
        assert heading in out.content and "Our best-sellers" not in out.content
        assert out.models == {"recs": "v3", "churn": "v2"}
    else:
        assert "Our best-sellers" in out.content and heading not in out.content
        assert out.reason == "unknown_user" and out.models == {}
    assert "£2.55" in out.content


def test_cart_reminder_html_quantities_and_availability(renderer: Renderer) -> None:
    out = assemble(inp("cart_reminder", "html", shopper()), lookup, BlockPolicy(), renderer)
    assert out.items == ("p2", "gone", "p3")
    assert "Quantity: 2" in out.content and "Quantity: 1" in out.content
    assert out.content.count("out of stock") == 1


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("personal", [True, False])
def test_json_blocks_have_exactly_the_contract_shape(
    renderer: Renderer, block: str, personal: bool
) -> None:
    profile = shopper() if personal else None
    out = assemble(inp(block, "json", profile, variant="b"), lookup, BlockPolicy(), renderer)
    assert out.content_type == "application/json"
    data = json.loads(out.content)
    assert set(data) == CONTRACT_KEYS
    assert data["block"] == block and data["user_id"] == "u1" and data["variant"] == "b"
    assert data["fallback"] is (not personal) is out.fallback
    assert data["models"] == out.models
    assert [i["item_id"] for i in data["items"]] == list(out.items)
    for item in data["items"]:
        assert set(item) == ITEM_KEYS
        expected = CATALOG[item["item_id"]]
        assert item["price"] == expected.price and item["currency"] == expected.currency
        assert item["url"] == expected.url and item["image_url"] == expected.image_url


def test_malicious_title_is_escaped(renderer: Renderer) -> None:
    evil = CATALOG["evil"].title
    html = assemble(inp(profile=shopper(), recs=["evil"]), lookup, BlockPolicy(), renderer)
    assert html.items == ("evil",) and not html.fallback
    assert "<script" not in html.content
    assert "&lt;script&gt;" in html.content
    check_email_safe(html.content)
    js = assemble(
        inp(fmt="json", profile=shopper(), recs=["evil"]), lookup, BlockPolicy(), renderer
    )
    assert "<script" not in js.content
    assert json.loads(js.content)["items"][0]["title"] == evil


def test_a_title_with_a_direction_override_cannot_reorder_what_follows(renderer: Renderer) -> None:
    """A right-to-left override in a title (or brand, or category) reversed the rest of its line
    in a mail client (the price beside it included): such text is isolated, FSI...PDI."""
    bent = product("bent", title="Mug \u202eeulb", brand="\u202eACME", category="mugs")
    find = {"bent": bent}.get
    for fmt in FORMATS:
        out = assemble(
            inp(fmt=fmt, profile=shopper(), recs=["bent"]), find, BlockPolicy(), renderer
        )
        assert out.items == ("bent",) and not out.fallback, out
        assert "\u2068Mug \u202eeulb\u2069" in (
            json.loads(out.content)["items"][0]["title"] if fmt == "json" else out.content
        )
    view = item_view(bent, None, "en-GB", None)
    assert view["brand"] == "\u2068\u202eACME\u2069" and view["category"] == "mugs"


def test_weird_user_id_and_variant_stay_valid_json(renderer: Renderer) -> None:
    odd = 'u"\\</script>\n\u2028'
    out = assemble(
        inp(fmt="json", profile=None, user_id=odd, variant='v"1'), lookup, BlockPolicy(), renderer
    )
    data = json.loads(out.content)
    assert data["user_id"] == odd and data["variant"] == 'v"1'


def test_empty_fallback_still_renders(renderer: Renderer) -> None:
    for fmt in FORMATS:
        out = assemble(inp(fmt=fmt, popular=[]), lookup, BlockPolicy(), renderer)
        assert out.fallback and out.items == ()
        if fmt == "json":
            assert json.loads(out.content)["items"] == []


@pytest.mark.parametrize(
    ("price", "currency", "text"),
    [(2.55, "GBP", "£2.55"), (3, "EUR", "€3.00"), (4.0, "USD", "$4.00"), (12, "XYZ", "12.00 XYZ")],
)
def test_format_price(price: float, currency: str, text: str) -> None:
    assert format_price(price, currency) == text


def test_preorder_euro_item(renderer: Renderer) -> None:
    out = assemble(inp(profile=shopper(), recs=["pre"]), lookup, BlockPolicy(), renderer)
    assert out.items == ("pre",) and "€3.00" in out.content


def test_etag_is_stable_and_content_dependent(renderer: Renderer) -> None:
    a = assemble(inp(profile=shopper()), lookup, BlockPolicy(), renderer)
    b = assemble(inp(profile=shopper()), lookup, BlockPolicy(), renderer)
    c = assemble(inp(profile=shopper(), recs=["p1"]), lookup, BlockPolicy(), renderer)
    assert a.etag == b.etag != c.etag


# -- template failures -----------------------------------------------------------------------------


def copy_templates(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(
        DEFAULT_TEMPLATE_DIR, target, ignore=shutil.ignore_patterns("*.py", "__pycache__")
    )
    return target


def test_personalized_template_error_serves_fallback(tmp_path: Path) -> None:
    directory = copy_templates(tmp_path)
    for name in ("email/recommendations.html", "ads/recommendations.json"):
        path = directory / name
        # Fails only when personalized: the fallback render still works.
        path.write_text(
            "{% if not fallback %}{{ items[0].no_such_field.boom }}{% endif %}" + path.read_text()
        )
    renderer = Renderer(template_dir=directory)
    for n, fmt in enumerate(FORMATS, start=1):
        out = assemble(inp(fmt=fmt, profile=shopper()), lookup, BlockPolicy(), renderer)
        assert out.fallback and out.reason == "template_error"
        assert list(out.items) == FALLBACK_IDS
        assert renderer.errors == n
        if fmt == "json":
            assert json.loads(out.content)["fallback"] is True
        else:
            assert "Our best-sellers" in out.content


def test_invalid_json_output_is_a_template_error(tmp_path: Path) -> None:
    directory = copy_templates(tmp_path)
    path = directory / "ads" / "winback.json"
    path.write_text("{% if not fallback %}{oops{% endif %}" + path.read_text())
    renderer = Renderer(template_dir=directory)
    out = assemble(inp("winback", "json", shopper()), lookup, BlockPolicy(), renderer)
    assert out.reason == "template_error" and json.loads(out.content)["fallback"] is True
    assert renderer.errors == 1


def test_failing_fallback_serves_hard_coded_block(tmp_path: Path) -> None:
    directory = copy_templates(tmp_path)
    for name in ("email/winback.html", "ads/winback.json"):
        (directory / name).write_text("{{ 1 / 0 }}")
    renderer = Renderer(template_dir=directory)
    for fmt in FORMATS:
        for profile in (shopper(), None):
            out = assemble(inp("winback", fmt, profile), lookup, BlockPolicy(), renderer)
            assert out.fallback and out.reason == "template_error" and out.items == ()
            assert out.etag == etag_of(out.content)
            if fmt == "json":
                data = json.loads(out.content)
                assert set(data) == CONTRACT_KEYS and data["items"] == []
            else:
                assert out.content.startswith('<table role="presentation"')
    assert renderer.errors == 2 + 2 + 1 + 1  # personalized: render + fallback; unknown: fallback


# Output budgets between a render of 3 and of 6 items with titles of `&`: 500 characters in an
# ad, 180 in an e-mail (900 octets escaped: the longest an e-mail line takes, `fits_email`).
CAPS = {"html": 12_000, "json": 14_000}
TITLES = {"html": 180, "json": 500}


def bulky(count: int, fmt: str = "json") -> list[Product]:
    return [product(f"p{i}", title="&" * TITLES[fmt]) for i in range(count)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_render_past_the_output_budget_serves_the_fallback_that_fits(fmt: str) -> None:
    """A block whose items render past the sandbox's output budget was the empty hard-coded
    block when its fallback did too: a personalized one is the fallback (the best-sellers),
    and a fallback keeps half its items at a time until it fits; counted in `oversized`."""
    from engine.sandbox import Limits

    renderer = Renderer()
    whole = renderer.render(inp(fmt=fmt), bulky(6, fmt), True, "unknown_user", lookup)
    assert len(whole.content.encode()) > CAPS[fmt]  # past the budget set below
    renderer.env.limits = Limits(output_bytes=CAPS[fmt])
    out = renderer.render(inp(fmt=fmt, profile=shopper()), bulky(6, fmt), False, "", lookup)
    assert (out.fallback, out.reason, list(out.items)) == (True, "template_error", FALLBACK_IDS)
    assert (renderer.oversized, renderer.errors) == (1, 0)
    out = renderer.render(inp(fmt=fmt), bulky(6, fmt), True, "unknown_user", lookup)
    assert (out.fallback, out.reason, out.items) == (True, "unknown_user", ("p0", "p1", "p2"))
    assert (renderer.oversized, renderer.errors) == (2, 0)
    if fmt == "json":
        assert [i["item_id"] for i in json.loads(out.content)["items"]] == ["p0", "p1", "p2"]


def test_missing_template_names_the_file(tmp_path: Path) -> None:
    directory = copy_templates(tmp_path)
    (directory / "ads" / "cart_reminder.json").unlink()
    with pytest.raises(TemplateSetupError, match=r"ads/cart_reminder\.json"):
        Renderer(template_dir=directory)


def test_template_syntax_error_names_the_file(tmp_path: Path) -> None:
    directory = copy_templates(tmp_path)
    (directory / "email" / "winback.html").write_text("{% for x in %}")
    with pytest.raises(TemplateSetupError, match=r"email/winback\.html.*line 1"):
        Renderer(template_dir=directory)


def test_sandbox_blocks_unsafe_attribute_access(tmp_path: Path) -> None:
    directory = copy_templates(tmp_path)
    path = directory / "email" / "recommendations.html"
    path.write_text(
        "{% if not fallback %}{{ items.__class__.__mro__ }}{% endif %}" + path.read_text()
    )
    renderer = Renderer(template_dir=directory)
    out = assemble(inp(profile=shopper()), lookup, BlockPolicy(), renderer)
    assert out.reason == "template_error" and "mro" not in out.content


# -- cache -----------------------------------------------------------------------------------------


def fake_block(user: str, content: str = "x") -> Block:
    return Block(
        block="recommendations",
        fmt="html",
        user_id=user,
        content=content,
        fallback=False,
        reason="",
        items=(),
        variant="default",
        models={},
        etag=etag_of(content),
        content_type="text/html; charset=utf-8",
    )


def key(user: str, block: str = "recommendations", fmt: str = "html") -> tuple[str, str, str, str]:
    return (user, block, fmt, "default")


def test_cache_hit_miss_and_stamp_mismatch() -> None:
    cache = BlockCache()
    assert cache.get(key("u1"), (1, 1)) is None
    block = fake_block("u1")
    cache.put(key("u1"), (1, 1), block)
    assert cache.get(key("u1"), (1, 1)) is block
    assert cache.get(key("u1", fmt="json"), (1, 1)) is None
    assert cache.get(key("u1"), (2, 1)) is None  # profile changed: stale
    assert cache.get(key("u1"), (1, 1)) is None  # and the stale entry is gone
    assert (cache.hits, cache.misses) == (1, 4)
    assert len(cache) == 0


def test_cache_get_or_stale_hands_back_the_stale_entry_once() -> None:
    cache = BlockCache()
    assert cache.get_or_stale(key("u1"), (1, 1)) == (None, None)
    block = fake_block("u1")
    cache.put(key("u1"), (1, 1), block)
    assert cache.get_or_stale(key("u1"), (1, 1)) == (block, None)
    found, stale = cache.get_or_stale(key("u1"), (1, 2))
    assert found is None and stale is not None and stale[0] == (1, 1) and stale[1] is block
    assert cache.get_or_stale(key("u1"), (1, 2)) == (None, None)  # removed, as get removes it
    assert (cache.hits, cache.misses) == (1, 3) and len(cache) == 0


def test_cache_lru_eviction() -> None:
    cache = BlockCache(max_entries=2)
    cache.put(key("a"), 1, fake_block("a"))
    cache.put(key("b"), 1, fake_block("b"))
    assert cache.get(key("a"), 1) is not None  # a is now most recently used
    cache.put(key("c"), 1, fake_block("c"))
    assert len(cache) == 2 and cache.evictions == 1
    assert cache.get(key("b"), 1) is None
    assert cache.get(key("a"), 1) is not None and cache.get(key("c"), 1) is not None
    cache.put(key("a"), 2, fake_block("a", "y"))  # replacing does not evict
    assert len(cache) == 2 and cache.get(key("a"), 2) is not None


def test_cache_invalidate_user_and_clear() -> None:
    cache = BlockCache()
    for block in BLOCKS:
        for fmt in FORMATS:
            cache.put(key("u1", block, fmt), 1, fake_block("u1"))
    cache.put(key("u2"), 1, fake_block("u2"))
    assert cache.invalidate_user("u1") == 6
    assert cache.invalidate_user("u1") == 0
    assert len(cache) == 1 and cache.get(key("u2"), 1) is not None
    cache.clear()
    assert len(cache) == 0 and cache.get(key("u2"), 1) is None


def test_cache_with_real_blocks(renderer: Renderer) -> None:
    cache = BlockCache()
    profile = shopper()
    request = inp(profile=profile)
    stamp = (profile.version, "catalog-1", tuple(sorted(request.models.items())))
    block = assemble(request, lookup, BlockPolicy(), renderer)
    cache.put(("u1", "recommendations", "html", "default"), stamp, block)
    assert cache.get(("u1", "recommendations", "html", "default"), stamp) == block


def test_squeeze_html_drops_indentation_but_not_preformatted_text() -> None:
    from engine.blocks import squeeze_html

    assert squeeze_html("<table>\n  <tr>\n\t<td>a  b</td>\n  </tr>\n</table>\n") == (
        "<table>\n<tr>\n<td>a  b</td>\n</tr>\n</table>"
    )
    pre = "<div>\n  <pre>\n  x\n</pre></div>"
    assert squeeze_html(pre) == pre


def test_the_template_reference_lists_every_reason_a_template_sees() -> None:
    """templates/README.md tells shops which `reason`s their fallback templates get; a reason
    added to the engine (`holdout` was) must be listed there. `deadline` and `error` are the
    API's (a block never rendered), so templates never see them."""
    readme = (Path(__file__).resolve().parents[2] / "templates" / "README.md").read_text()
    line = next(row for row in readme.splitlines() if row.startswith("| `reason` |"))
    from engine.blocks import REASONS

    missing = [r for r in REASONS if r not in ("deadline", "error") and f"`{r}`" not in line]
    assert not missing, missing
