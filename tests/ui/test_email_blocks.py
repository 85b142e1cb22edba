"""The e-mail blocks where mail is read (issue 18 item 6), in headless Chromium: each block in a
host page at 600 px and at 375 px, on a light and on a dark host background. Checked from the
laid-out page (three items a row at 600 px, one at 375 px, nothing wider than the screen, one
link per item with its title as the image's alt text, a button, a real heading) and from the
screenshot's pixels (the block's white panel shows on the dark host). The screenshots are kept
in test-output/ for people to look at."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from engine.blocks import BlockInput, BlockPolicy, Renderer, assemble
from engine.catalog import Product
from engine.events import validate
from engine.profile import apply
from tests.ui.browser import dom, screenshot
from tests.ui.png import read_png

CATALOG = {
    f"P{n}": Product(
        f"P{n}", f"Scented candle no. {n}", f"https://shop.example.com/p/P{n}",
        f"https://shop.example.com/i/P{n}.jpg", 4.5 + n, "GBP",
    )
    for n in range(6)
}  # fmt: skip
PROBE = """<script>
addEventListener("load", () => {
  const out = {width: innerWidth, scroll: document.documentElement.scrollWidth, items: []};
  for (const a of document.querySelectorAll("a[data-item]")) {
    const r = a.getBoundingClientRect();
    out.items.push({top: Math.round(r.top), left: Math.round(r.left), right: Math.round(r.right)});
  }
  const panel = document.querySelector("table[bgcolor]");
  out.panel = getComputedStyle(panel).backgroundColor;
  out.heading = getComputedStyle(document.querySelector("h2")).color;
  document.getElementById("probe").textContent = JSON.stringify(out);
});
</script>"""


def block_html(block: str, items: int = 6, catalog: dict[str, Product] | None = None) -> str:
    catalog = CATALOG if catalog is None else catalog
    profile = None
    for n, item in enumerate(("P0", "P1", "P2")):
        event = {"event_id": f"c{n}", "type": "add_to_cart", "user_id": "u", "item_id": item}
        profile = apply(profile, validate({**event, "ts": 1_790_000_000_000, "quantity": n + 1}))
    inp = BlockInput(
        block=block, fmt="html", user_id="u", profile=profile, churn=0.9,
        recommendations=list(catalog), models={"recs": "v"}, popular=list(catalog),
    )  # fmt: skip
    renderer = Renderer()
    renderer.shop_url = "https://shop.example.com/"
    out = assemble(inp, catalog.get, BlockPolicy(items=items), renderer).content
    assert not out.startswith("<!--") and "fallback" not in out
    # mark each item's one link for the probe (the block itself carries no test hooks)
    return re.sub(r'<a href="(https://shop.example.com/p/[^"]+)"', r'<a data-item href="\1"', out)


def page(tmp_path: Path, block: str, background: str) -> str:
    html = (
        f'<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width"></head><body style="margin:0;background:{background}">'
        f'{block_html(block)}<pre id="probe" style="display:none"></pre>{PROBE}</body></html>'
    )
    path = tmp_path / f"{block}-{background.strip('#')}.html"
    path.write_text(html, encoding="utf-8")
    return path.as_uri()


def layout(url: str, width: int) -> dict[str, object]:
    found = re.search(r'<pre id="probe"[^>]*>(.*?)</pre>', dom(url + f"#w{width}", budget_ms=3000))
    assert found and found.group(1), "the probe did not run"
    data: dict[str, object] = json.loads(found.group(1).replace("&quot;", '"'))
    return data


@pytest.mark.parametrize("block", ["recommendations", "winback", "similar_items"])
def test_grid_blocks_three_a_row_at_600_and_stacked_at_375(tmp_path: Path, block: str) -> None:
    url = page(tmp_path, block, "#ffffff")
    for width in (600, 375):
        shot = screenshot(url, f"email-{block}-{width}.png", size=f"{width},1400", budget_ms=3000)
        assert read_png(shot)[0] == width
    # --dump-dom has no window size flag of its own: the layout is probed in a page that
    # says its width (the block is the same fragment)
    wide = layout(_framed(tmp_path, block, 600), 600)
    narrow = layout(_framed(tmp_path, block, 375), 375)
    for data, per_row in ((wide, 3), (narrow, 1)):
        items = data["items"]
        assert isinstance(items, list) and len(items) == 6
        rows = sorted({i["top"] for i in items})
        assert len(rows) == 6 // per_row, (data["width"], items)
        assert all(i["right"] <= data["width"] for i in items)
        assert data["scroll"] <= data["width"]


def _framed(
    tmp_path: Path, block: str, width: int, catalog: dict[str, Product] | None = None
) -> str:
    html = (
        f'<!doctype html><html><head><meta charset="utf-8"></head><body style="margin:0">'
        f'<div style="width:{width}px">{block_html(block, catalog=catalog)}</div>'
        '<pre id="probe" style="display:none"></pre>'
        + PROBE.replace("innerWidth", str(width)).replace(
            "document.documentElement.scrollWidth", "document.querySelector('div').scrollWidth"
        )
        + "</body></html>"
    )
    path = tmp_path / f"{block}-{width}.html"
    path.write_text(html, encoding="utf-8")
    return path.as_uri()


@pytest.mark.parametrize("block", ["recommendations", "cart_reminder"])
def test_blocks_keep_their_light_panel_on_a_dark_host(tmp_path: Path, block: str) -> None:
    url = page(tmp_path, block, "#111111")
    data = layout(url, 600)
    assert data["panel"] == "rgb(255, 255, 255)" and data["heading"] == "rgb(34, 34, 34)"
    shot = screenshot(url, f"email-{block}-dark.png", size="600,900", budget_ms=3000)
    _w, _h, rows = read_png(shot)
    top = rows[5]  # the first rows: the panel's top edge, inside the heading cell
    white = sum(1 for p in top if min(p) > 240)
    dark = sum(1 for p in top if max(p) < 40)
    assert white > 500 and dark < 100  # the panel spans the 600 px; the host shows around it


def test_every_item_one_link_with_alt_text_a_heading_and_a_button() -> None:
    for block in ("recommendations", "winback", "similar_items", "cart_reminder"):
        html = block_html(block)
        links = re.findall(r'<a data-item href="([^"]+)"', html)
        assert len(links) == len(set(links)), f"{block}: one link per item"
        assert re.search(r"<h2[ >]", html), block
        alts = re.findall(r'alt="([^"]*)"', html)
        assert alts and all(a.startswith("Scented candle no. ") for a in alts), block
        assert 'bgcolor="#1a56db"' in html and "https://shop.example.com/" in html


MSO_OPEN, MSO_CLOSE = "<!--[if mso]>", "<![endif]-->"


def as_outlook_reads_it(html: str) -> str:
    """The markup Outlook on Windows lays out: its conditional comments opened."""
    return html.replace(MSO_OPEN, "").replace(MSO_CLOSE, "")


def as_others_read_it(html: str) -> str:
    """The markup every other client lays out: the conditional comments are comments."""
    return re.sub(r"<!--\[if mso\]>.*?<!\[endif\]-->", "", html, flags=re.S)


@pytest.mark.parametrize(("block", "shown"), [("recommendations", 6), ("winback", 6)])
def test_outlook_gets_a_ghost_table_of_three_columns(block: str, shown: int) -> None:
    html = block_html(block)
    outlook = as_outlook_reads_it(html)
    start = outlook.index('<table role="presentation" width="588"')
    ghost = outlook[start : outlook.index("</table>", start)]
    rows = ghost.split("<tr>")[1:]
    cells = [re.findall(r'<td width="196"', row) for row in rows]
    assert [len(c) for c in cells] == [3] * (shown // 3), ghost
    assert [len(re.findall(r"<a data-item ", row)) for row in rows] == [3] * (shown // 3)
    assert ghost.count("<td") == ghost.count("</td>") == shown
    # the others see the fluid grid alone: no table, row or cell of the ghost
    others = as_others_read_it(html)
    assert 'width="588"' not in others and 'width="196"' not in others
    assert others.count("<table") == html.count("<table") - html.count(MSO_OPEN + "<table")


def test_a_ghost_row_holds_what_is_left() -> None:
    """Four items: a row of three cells and a row of one (no empty cell Outlook would pad)."""
    html = as_outlook_reads_it(block_html("recommendations", items=4))
    start = html.index('<table role="presentation" width="588"')
    ghost = html[start : html.index("</table>", start)]
    per_row = [row.count('<td width="196"') for row in ghost.split("<tr>")[1:]]
    assert per_row == [3, 1]
    assert len(re.findall(r"<a data-item ", ghost)) == 4


LONG_WORD = "Superkalifragilistisch" * 23  # 506 letters: the catalog's longest title, one word


@pytest.mark.parametrize("block", ["recommendations", "cart_reminder"])
def test_a_title_of_one_long_word_wraps_inside_its_item(tmp_path: Path, block: str) -> None:
    """A title with no break opportunity (500 characters, a long compound word, a run of
    emoji) must not widen its item: three items a row still fit 600 px and the block is no
    wider than a 375 px screen."""
    catalog = dict(CATALOG)
    catalog["P1"] = dataclasses.replace(CATALOG["P1"], title=LONG_WORD[:500])
    catalog["P2"] = dataclasses.replace(CATALOG["P2"], title="👍🏽" * 120)
    for width in (600, 375):
        data = layout(_framed(tmp_path, block, width, catalog), width)
        items = data["items"]
        assert isinstance(items, list) and items
        assert all(i["right"] <= width for i in items), (width, items)
        assert isinstance(data["scroll"], int) and data["scroll"] <= width, width
        if block != "cart_reminder" and width == 600:
            assert len({i["top"] for i in items}) == 2, items  # still three a row
