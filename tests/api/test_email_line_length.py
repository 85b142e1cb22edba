"""E-mail blocks keep every line within SMTP's limit (RFC 5321 4.5.3.1.6, RFC 5322 2.1.1: 998
octets a line without its CRLF): a sender that injects a block into a message sent 8bit, without
re-encoding, must not have it refused or broken mid-URL by a mail server. Checked through the real
routes (a user's block, the item route, the batch) with hostile catalog data the catalog accepts:
titles of its longest (500 characters) in one word, with spaces, with characters the HTML escapes
to five bytes, in CJK, in emoji; URLs of 2,000 characters with query strings; 50 items; every
e-mail template; left to right and right to left."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.limits import ServingOptions
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.catalog import InvalidProduct, validate_product
from engine.events import validate
from engine.locales import Messages
from models.registry import ModelSet
from tests.engine.test_email_lines import assert_same_meaning

AUTH = {"Authorization": "Bearer reader-key-0123456789abcdef"}
KEYS = "reader:reader-key-0123456789abcdef:content:read"
SMTP_LINE = 998  # octets, without the CRLF
T0 = 1_790_000_000_000

ONE_WORD = ("Superkalifragilistisch" * 23)[:500]
ESCAPED = ('Tom & Jerry "XL" <set> ' * 30)[:500]  # & " < > are 4 or 5 bytes in the HTML
CJK = ("日本製の手作り陶器" * 60)[:500]  # 1,500 bytes, no space: one unbreakable run
EMOJI_WORDS = ("👍🏽 candle " * 60)[:500]
SPACED = ("A scented candle of soy wax " * 20)[:500]
LONG_QUERY = "?" + "&".join(f"utm_k{n}=v{n}" for n in range(200))  # '&' is '&amp;' in href


def url(item: str, size: int, query: bool = True) -> str:
    base = f"https://shop.example.com/p/{item}/"
    tail = LONG_QUERY if query else "x" * size
    return (base + tail)[:size] if size else base


# kind -> (title, url length, image url length, whether its link fits an e-mail line)
KINDS = [
    (ONE_WORD, 0, 0, True),
    (ESCAPED, 0, 0, True),
    (SPACED, 600, 0, True),  # a long link that still fits its line
    (EMOJI_WORDS, 0, 0, True),
    ("Plain candle", 2000, 0, False),  # 2,000 characters, '&' escaped: no line holds it
    ("Plain candle", 0, 2000, False),
    (CJK, 0, 0, False),  # 1,500 bytes in alt="...": no line holds it
    ("Plain candle", 2000, 2000, False),
]
ITEMS = ModelSet.default().recs.popular[:160]
KIND = {item: n % len(KINDS) for n, item in enumerate(ITEMS)}


def product_data(item: str) -> dict[str, object]:
    title, url_size, image_size, _fits = KINDS[KIND[item]]
    image = f"https://shop.example.com/i/{item}.jpg"
    if image_size:
        image = (image + "?" + "x" * image_size)[:image_size]
    return {
        "item_id": item,
        "title": title,
        "url": url(item, url_size),
        "image_url": image,
        "price": 12.5,
        "currency": "GBP",
    }


@pytest.fixture
def state() -> MemoryState:
    s = MemoryState()
    for item in ITEMS:
        s.put_product(validate_product(product_data(item)))  # every one valid in the catalog
    s.popular_items = list(ITEMS)
    for n, item in enumerate(ITEMS[:60]):
        kind = "add_to_cart" if n % 2 else "product_view"
        event = {"event_id": f"e{n}", "type": kind, "user_id": "u1", "item_id": item}
        s.apply(validate({**event, "ts": T0 + n, **({"quantity": 2} if n % 2 else {})}))
    return s


@pytest.fixture
async def client(state: MemoryState) -> AsyncIterator[TestClient]:
    renderer = Renderer()
    renderer.shop_url = "https://shop.example.com/"
    # Arabic texts (a shop's i18n/ar.json): an `ar` block is then written right to left (one
    # without texts is English, left to right)
    arabic = {"heading_recommendations": "مقترح لك", "heading_cart_reminder": "في سلتك"}
    renderer.messages = Messages({**renderer.messages.catalogs, "ar": arabic})
    content = ContentService(state, ModelSet.default(), renderer, BlockPolicy())
    app = create_app(content, KeyRing.from_settings(KEYS, None), ServingOptions({}, 3.0))
    async with TestClient(TestServer(app)) as c:
        yield c


def long_lines(html: str) -> list[tuple[int, int]]:
    """(line number, octets) of each line over SMTP's limit, lines split on CRLF and LF."""
    lines = re.split(r"\r\n|\n", html)
    sizes = [(n, len(line.encode())) for n, line in enumerate(lines, 1)]
    return [(n, size) for n, size in sizes if size > SMTP_LINE]


def shown(html: str) -> set[str]:
    return set(re.findall(r'href="https://shop\.example\.com/p/([^/"]+)/', html))


def test_the_catalog_takes_these_products_and_no_longer_title() -> None:
    with pytest.raises(InvalidProduct, match="title is longer than 500"):
        validate_product(product_data(ITEMS[0]) | {"title": "x" * 5000})
    with pytest.raises(InvalidProduct, match="url is longer than 2048"):
        validate_product(product_data(ITEMS[0]) | {"url": "https://a.example/" + "x" * 5000})


BLOCKS = ["recommendations", "cart_reminder", "winback", "similar_items"]


@pytest.mark.parametrize("locale", ["en-GB", "ar"])
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("user", ["u1", "stranger"])
async def test_no_line_of_an_email_block_exceeds_998_octets(
    client: TestClient, block: str, locale: str, user: str
) -> None:
    query = {"format": "html", "n": "50", "locale": locale}
    if block == "similar_items":
        query["context_item"] = ITEMS[0]
    r = await client.get(f"/v1/users/{user}/blocks/{block}", params=query, headers=AUTH)
    assert r.status == 200, await r.text()
    html = await r.text()
    assert long_lines(html) == [], block
    items = shown(html)
    assert items, "the block shows items"
    assert all(KINDS[KIND[i]][3] for i in items), "only items whose links fit a line"
    if block != "cart_reminder" or user == "stranger":
        assert {KIND[i] for i in items} == {0, 1, 2, 3}, "every item that fits can be shown"
    assert ('dir="rtl"' in html) == (locale == "ar")


async def test_the_item_route_and_the_batch_keep_lines_within_998(client: TestClient) -> None:
    r = await client.get(
        f"/v1/items/{ITEMS[0]}/similar", params={"n": "50", "locale": "he"}, headers=AUTH
    )
    assert r.status == 200
    assert long_lines(await r.text()) == []
    body = {"block": "recommendations", "user_ids": ["u1", "u2"], "format": "html", "n": 50}
    r = await client.post("/v1/blocks:batch", json=body, headers=AUTH)
    assert r.status == 200, await r.text()
    for entry in (await r.json())["results"].values():
        assert long_lines(entry["content"]) == []
        assert shown(entry["content"])


# one line of the sender's own markup, the block inserted in the middle of it
SENDER_TEMPLATE = (
    '<html><body><table role="presentation"><tr><td style="' + "padding:1px;" * 40 + '" '
    'class="a b c">Hello {{ user.first_name }}, ' + "here are some picks for you " * 30
    + "{{ blocks.recommendations }}" + " and more words after the block" * 20 + "</td></tr>"
    "</table><p>{{ user.note }}</p><p>" + "我们的新品" * 40 + " and " + "我们的新品" * 40
    + "</p></body></html>"
)  # fmt: skip


async def test_a_rendered_message_keeps_lines_within_998_and_its_meaning(
    client: TestClient,
) -> None:
    """POST /v1/render wrapped its blocks' lines but not the sender's template around them: a
    line of the sender's markup and text (a block inserted mid-line, a merge field) went out as
    it was, thousands of octets long. Now the message's lines are broken as a block's are
    (engine/email_lines.py: only where a line break means what is there)."""
    note = "a note the sender merges in, & spaces " * 60
    data = {"u1": {"first_name": "Ada", "note": note}}
    body = {"template": SENDER_TEMPLATE, "user_ids": ["u1"], "data": data}
    r = await client.post("/v1/render", json=body, headers=AUTH)
    assert r.status == 200, await r.text()
    result = (await r.json())["results"]["u1"]
    assert result["error"] is None and result["content"]
    block = await client.get("/v1/users/u1/blocks/recommendations", headers=AUTH)
    as_written = (
        SENDER_TEMPLATE.replace("{{ user.first_name }}", "Ada")
        .replace("{{ user.note }}", note.replace("&", "&amp;"))
        .replace("{{ blocks.recommendations }}", await block.text())
    )
    assert long_lines(as_written), "the template makes lines past the limit"
    assert long_lines(result["content"]) == []
    assert_same_meaning(as_written, result["content"])
    assert result["content"].count("我们的新品" * 40) == 2  # wide characters kept together


async def test_a_message_line_nothing_can_break_is_the_recipients_error(
    client: TestClient,
) -> None:
    """A line with nowhere to break (a run of wide characters, a long URL) would be refused or
    cut mid-character by a mail server: the message is not given, as a block's template error
    is not, and the error says why; a recipient whose merge field made it gets the template
    rendered without their data."""
    template = "<p>" + "我们的新品" * 70 + "</p>"
    body = {"template": template, "user_ids": ["u1"]}
    r = await client.post("/v1/render", json=body, headers=AUTH)
    result = (await r.json())["results"]["u1"]
    assert result["content"] is None and "LineTooLong" in result["error"]
    assert "octets has nowhere to break (at most 998)" in result["error"]
    data = {"u1": {"code": "X" * 2000}}
    body = {"template": "<p>{{ user.code }}</p>", "user_ids": ["u1"], "data": data}
    result = (await (await client.post("/v1/render", json=body, headers=AUTH)).json())["results"]
    assert result["u1"]["content"] == "<p></p>" and result["u1"]["fallback"]
    assert "nowhere to break" in result["u1"]["error"]
    metrics = await (await client.get("/metrics")).text()
    assert "persona_render_errors_total 2" in metrics
