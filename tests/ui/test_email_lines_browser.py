"""The line breaks that keep e-mail blocks within SMTP's 998 octets a line (engine/email_lines.py)
change nothing a reader sees: each block with hostile titles is rendered without the breaks and
with them, and headless Chromium lays both out at 600 px. The screenshots are identical pixel for
pixel, and so are the page's laid-out text (`innerText`) and every element's attributes. The
screenshots are kept in test-output/ for people to look at."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from engine import blocks
from engine.blocks import BlockInput, BlockPolicy, Renderer, assemble
from engine.catalog import Product
from engine.email_lines import SMTP_LINE_MAX, longest_line
from engine.params import build
from tests.ui.browser import dom, screenshot
from tests.ui.png import read_png

TITLES = [
    ('Tom & Jerry "XL" <set> ' * 30)[:500],
    ("Superkalifragilistisch" * 23)[:500],
    ("👍🏽 candle " * 60)[:500],
    "日本製の陶器 " * 50,
    ("A scented candle of soy wax " * 20)[:500],
    "Short",
]
QUERY = "?" + "&".join(f"k{k}=v" for k in range(60))  # '&' is written '&amp;'
CATALOG = {
    f"P{n}": Product(
        f"P{n}", title, f"https://shop.example.com/p/P{n}{QUERY}",
        f"https://shop.example.com/i/P{n}.jpg", 4.5 + n, "GBP",
    )
    for n, title in enumerate(TITLES)
}  # fmt: skip
PROBE = """<script>
addEventListener("load", () => {
  const attrs = [...document.body.querySelectorAll("*")].map(
    (e) => [e.tagName, ...[...e.attributes].map((a) => a.name + "=" + a.value)]);
  document.getElementById("probe").textContent =
    JSON.stringify({text: document.getElementById("block").innerText, attrs});
});
</script>"""


def block_html(block: str, locale: str, wrapped: bool, monkeypatch: pytest.MonkeyPatch) -> str:
    inp = BlockInput(
        block=block, fmt="html", user_id="u", profile=None, churn=None, recommendations=[],
        models={}, popular=list(CATALOG), params=build({"n": len(CATALOG), "locale": locale}),
    )  # fmt: skip
    renderer = Renderer()
    renderer.shop_url = "https://shop.example.com/"
    with monkeypatch.context() as m:
        if not wrapped:  # the block as it was rendered before lines were broken
            m.setattr(blocks, "wrap_html", lambda html: html)
        out = assemble(inp, CATALOG.get, BlockPolicy(), renderer)
    assert out.items == tuple(CATALOG)
    return out.content


def page(tmp_path: Path, name: str, html: str) -> str:
    doc = (
        '<!doctype html><html><head><meta charset="utf-8"></head><body style="margin:0">'
        f'<div id="block" style="width:600px">{html}</div>'
        f'<pre id="probe" style="display:none"></pre>{PROBE}</body></html>'
    )
    path = tmp_path / f"{name}.html"
    path.write_text(doc, encoding="utf-8")
    return path.as_uri()


def probed(url: str) -> object:
    found = re.search(r'<pre id="probe"[^>]*>(.*?)</pre>', dom(url, budget_ms=3000), re.S)
    assert found and found.group(1), "the probe did not run"
    text = found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
    return json.loads(text.replace("&amp;", "&"))


@pytest.mark.parametrize(("block", "locale"), [("recommendations", "en-GB"), ("winback", "ar")])
def test_broken_lines_render_the_same_at_600_px(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: str, locale: str
) -> None:
    before = block_html(block, locale, False, monkeypatch)
    after = block_html(block, locale, True, monkeypatch)
    assert longest_line(before) > SMTP_LINE_MAX >= longest_line(after)
    assert after != before
    shots = []
    for name, html in (("before", before), ("after", after)):
        url = page(tmp_path, f"{block}-{name}", html)
        shot = screenshot(url, f"email-lines-{block}-{name}.png", size="600,3000", budget_ms=3000)
        shots.append(read_png(shot))
        if name == "before":
            expected = probed(url)
        else:
            assert probed(url) == expected  # the same text as laid out, the same attributes
    (w1, h1, rows1), (w2, h2, rows2) = shots
    assert (w1, h1) == (w2, h2) == (600, 3000)
    differing = sum(1 for r1, r2 in zip(rows1, rows2, strict=True) if r1 != r2)
    assert differing == 0, f"{differing} rows of pixels differ"
    ink = sum(1 for row in rows2 for p in row if max(p) < 128)
    assert ink > 5000  # the screenshot shows the block's text, not an empty page


def test_the_cart_reminder_with_long_titles_renders_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cart reminder's own layout (a row per line), for a user with the items in the cart."""
    from engine.events import validate
    from engine.profile import apply

    profile = None
    for n, item in enumerate(CATALOG):
        event = {"event_id": f"c{n}", "type": "add_to_cart", "user_id": "u", "item_id": item}
        profile = apply(profile, validate({**event, "ts": 1_790_000_000_000, "quantity": 2}))
    pages = []
    for wrapped in (False, True):
        inp = BlockInput(
            block="cart_reminder", fmt="html", user_id="u", profile=profile, churn=None,
            recommendations=[], models={}, popular=[], params=build({"locale": "he"}),
        )  # fmt: skip
        with monkeypatch.context() as m:
            if not wrapped:
                m.setattr(blocks, "wrap_html", lambda html: html)
            out = assemble(inp, CATALOG.get, BlockPolicy(items=10), Renderer())
        assert not out.fallback and len(out.items) == len(CATALOG)
        pages.append(out.content)
    assert longest_line(pages[0]) > SMTP_LINE_MAX >= longest_line(pages[1])
    shots = [
        read_png(screenshot(page(tmp_path, f"cart-{n}", html), f"email-lines-cart-{n}.png",
                            size="600,3000", budget_ms=3000))
        for n, html in enumerate(pages)
    ]  # fmt: skip
    assert shots[0] == shots[1]
    assert probed(page(tmp_path, "cart-0", pages[0])) == probed(page(tmp_path, "cart-1", pages[1]))


def test_the_fixture_is_hostile() -> None:
    assert all(dataclasses.asdict(p)["url"].count("&") == 59 for p in CATALOG.values())
