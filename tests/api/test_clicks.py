"""The click redirect GET /c/{token} (api/clicks.py): no key, a 302 to the catalog's URL for the
item and a click event in the user's profile; forged links are 404s that count as failed
authentications; nothing in a token can redirect elsewhere."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.limits import ServingOptions
from api.observability import TELEMETRY
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.catalog import Product
from engine.clicks import MAX_AGE_DAYS, MINUTE_MS, Click, RecentClicks, click_key, make_token
from models.registry import ModelSet

SECRET = "cluster-secret-of-this-test-cccccccccc"
READ = "content-read-kkkkkkkkkkkkk"
KEY = click_key(SECRET)


def link(item: str = "A", user: str = "u-1", minutes_ago: int = 0) -> str:
    made = int(time.time() * 1000) // MINUTE_MS - minutes_ago
    return "/c/" + make_token(KEY, Click(user, "recommendations", "default", item, made))


async def _client(state: MemoryState, **options: object) -> TestClient:
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    serving = ServingOptions(cluster_secret=SECRET, **options)  # type: ignore[arg-type]
    app = create_app(content, KeyRing.from_settings(f"read:{READ}:content:read", None), serving)
    return TestClient(TestServer(app))


@pytest.fixture
def state() -> MemoryState:
    s = MemoryState()
    s.put_product(
        Product(
            "A",
            "Tea lights",
            "https://shop.example.com/p/A",
            "https://shop.example.com/A.jpg",
            2.5,
            "GBP",
            "in_stock",
        )
    )
    return s


@pytest.fixture
async def client(state: MemoryState) -> AsyncIterator[TestClient]:
    async with await _client(state) as c:
        yield c


async def profile_events(client: TestClient, user: str) -> dict[str, int]:
    r = await client.get(f"/v1/users/{user}/profile", headers={"Authorization": f"Bearer {READ}"})
    events: dict[str, int] = (await r.json())["events"]
    return events


async def test_a_click_redirects_to_the_item_and_lands_in_the_profile(
    client: TestClient, state: MemoryState
) -> None:
    r = await client.get(link(), allow_redirects=False)
    assert r.status == 302
    assert r.headers["Location"] == "https://shop.example.com/p/A"
    assert r.headers["Cache-Control"] == "no-store"
    (event,) = state.produced
    assert (event.type, event.user_id, event.item_id) == ("click", "u-1", "A")
    assert event.props["link_ms"] % 60_000 == 0  # the minute the link was made
    assert event.props == {"block": "recommendations", "variant": "default"} | {
        "link_ms": event.props["link_ms"]
    }
    assert (await profile_events(client, "u-1")) == {"click": 1}
    metrics = await (await client.get("/metrics")).text()
    assert 'persona_clicks_total{outcome="recorded"} 1' in metrics


async def test_a_double_click_in_the_same_minute_is_one_click(
    client: TestClient, state: MemoryState
) -> None:
    url = link()
    for _ in range(2):
        assert (await client.get(url, allow_redirects=False)).status == 302
    assert len({e.event_id for e in state.produced}) == 1
    assert (await profile_events(client, "u-1")) == {"click": 1}


async def test_forged_links_are_404_problems_then_429(
    state: MemoryState,
) -> None:
    async with await _client(state, auth_failures_per_minute=3.0) as client:
        forged = "/c/" + make_token(click_key("another-secret" * 3), Click("u-1", "b", "v", "A", 1))
        statuses = []
        for _ in range(5):
            r = await client.get(forged, allow_redirects=False)
            statuses.append(r.status)
            assert "Location" not in r.headers
        body = await (await client.get("/c/garbage", allow_redirects=False)).json(content_type=None)
    assert statuses[:3] == [404, 404, 404] and statuses[3:] == [429, 429]
    assert body["status"] == 429
    assert not state.produced


async def test_an_old_link_still_opens_the_shop_but_records_nothing(
    client: TestClient, state: MemoryState
) -> None:
    r = await client.get(link(minutes_ago=(MAX_AGE_DAYS + 1) * 1440), allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "https://shop.example.com/p/A"
    assert not state.produced


async def test_an_item_gone_from_the_catalog(state: MemoryState) -> None:
    async with await _client(state) as client:
        r = await client.get(link("GONE"), allow_redirects=False)
        assert (
            r.status == 404
            and "no longer in the catalog" in (await r.json(content_type=None))["detail"]
        )
    async with await _client(state, feed_link="https://shop.example.com/") as client:
        r = await client.get(link("GONE"), allow_redirects=False)
        assert r.status == 302 and r.headers["Location"] == "https://shop.example.com/"
    assert [e.item_id for e in state.produced] == ["GONE"]


async def test_without_a_cluster_secret_there_are_no_click_links(state: MemoryState) -> None:
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, KeyRing.from_settings(f"read:{READ}:content:read", None))
    async with TestClient(TestServer(app)) as client:
        r = await client.get(link(), allow_redirects=False)
        assert (
            r.status == 404
            and "PERSONA_CLUSTER_SECRET" in (await r.json(content_type=None))["detail"]
        )
    assert not state.produced


async def test_a_publishable_key_cannot_send_clicks() -> None:
    from engine.collect import collect_refusal
    from engine.events import validate

    event = validate({"event_id": "e", "type": "click", "user_id": "u", "ts": 1_790_000_000_000})
    assert collect_refusal(event, purchases=True) is not None


async def test_a_head_request_opens_nothing_and_records_no_click(
    client: TestClient, state: MemoryState
) -> None:
    """Mail security scanners check links with HEAD before (or instead of) a person clicking:
    aiohttp answers HEAD with the GET handler, so each check was recorded as the user's click
    (in the profile and the dashboard's A/B counts)."""
    r = await client.head(link(), allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "https://shop.example.com/p/A"
    assert not state.produced
    metrics = await (await client.get("/metrics")).text()
    assert 'persona_clicks_total{outcome="recorded"} 0' in metrics


async def test_the_location_is_ascii_whatever_the_catalog_url_holds(
    state: MemoryState,
) -> None:
    """A catalog URL may hold spaces and non-ASCII (the feeds percent-encode them): the redirect
    sent them raw in `Location`, where HTTP allows ASCII only (a client reading the header as
    ISO-8859-1 went to another URL). They are percent-encoded; every ASCII character stays as
    the catalog wrote it, so the URL's parts (a backslash, an '@') are read as before."""
    for item, url in [
        ("U", "https://shop.example.com/p/thé lamp?c=ä"),
        ("S", "https://shop.example.com\\@x.example/p/\u2028"),
    ]:
        state.put_product(Product(item, "T", url, url, 1.0, "EUR", "in_stock"))
    async with await _client(state) as client:
        r = await client.get(link("U"), allow_redirects=False)
        assert r.headers["Location"] == "https://shop.example.com/p/th%C3%A9%20lamp?c=%C3%A4"
        r = await client.get(link("S"), allow_redirects=False)
        assert r.headers["Location"] == "https://shop.example.com\\@x.example/p/%E2%80%A8"


async def test_no_link_can_be_bent_to_another_target_or_user(
    client: TestClient, state: MemoryState
) -> None:
    """The target is the catalog's URL of the signed item, never anything in the request: a
    payload changed under its signature (another user, another item), a path or query naming a
    host, an over-long link are 404s and nothing is recorded."""
    good = link()[3:]
    payload, signature = good.split(".")
    other = make_token(KEY, Click("u-2", "recommendations", "default", "A", 1))
    bent = [
        f"{other.split('.')[0]}.{signature}",  # another user's payload, this link's signature
        f"{payload}.{other.split('.')[1]}",
        good + "A",
        "x" * 2000 + "." + signature,
        "%2F%2Fevil.example",
        "javascript:alert(1)",
        "data:text%2Fhtml,x",
    ]
    for token in bent:
        r = await client.get(f"/c/{token}", allow_redirects=False)
        assert r.status == 404 and "Location" not in r.headers, token
    for query in ("?next=//evil.example", "?url=/%5Cevil.example", "?to=https://shop@evil"):
        r = await client.get(link() + query, allow_redirects=False)
        assert r.headers["Location"] == "https://shop.example.com/p/A", query
    assert {e.user_id for e in state.produced} == {"u-1"}


def test_the_catalog_takes_no_url_a_redirect_could_abuse() -> None:
    from engine.catalog import InvalidProduct, validate_product

    base = {"item_id": "I", "title": "T", "price": 1, "currency": "EUR", "image_url": "https://s/i"}
    for url in ("javascript:alert(1)", "data:text/html,x", "//evil.example", "/\\evil.example"):
        with pytest.raises(InvalidProduct, match="absolute http"):
            validate_product({**base, "url": url})


async def test_a_stored_url_with_userinfo_is_not_followed(state: MemoryState) -> None:
    """A product stored before the catalog refused URLs with userinfo (or written to the topic
    by another producer) redirected to `https://shop.example.com@evil.example/p`: evil.example.
    The redirect refuses it as it would a gone item (to the shop when PERSONA_FEED_LINK is set,
    else a 404), records no click and counts it."""
    url = "https://shop.example.com@evil.example/p"
    state.put_product(Product("E", "T", url, "https://shop.example.com/E.jpg", 1.0, "EUR", "x"))
    async with await _client(state) as client:
        r = await client.get(link("E"), allow_redirects=False)
        assert r.status == 404 and "Location" not in r.headers
        assert "user name" in (await r.json(content_type=None))["detail"]
        r = await client.head(link("E"), allow_redirects=False)
        assert r.status == 404 and "Location" not in r.headers
        metrics = await (await client.get("/metrics")).text()
        assert 'persona_clicks_total{outcome="refused"} 2' in metrics
    async with await _client(state, feed_link="https://shop.example.com/") as client:
        r = await client.get(link("E"), allow_redirects=False)
        assert r.status == 302 and r.headers["Location"] == "https://shop.example.com/"
    assert not state.produced


async def test_a_link_followed_again_in_its_minute_counts_once_on_the_ab_panel(
    client: TestClient, state: MemoryState
) -> None:
    """The dashboard's A/B clicks (api/observability.py `count_click`) counted every GET of a
    link, while the fold keeps one click per link and minute (the event ids repeat): anybody
    holding one mailed link could reload it to give its variant any click rate (over 100%).
    A repeat within the minute is one click there too; another link is another click."""
    url = link()
    for _ in range(5):
        assert (await client.get(url, allow_redirects=False)).status == 302
    assert (await client.get(link(user="u-2"), allow_redirects=False)).status == 302
    clicks = len({e.event_id for e in state.produced})  # 2, or 3 if a minute began meanwhile
    assert clicks <= 3
    assert client.server.app[TELEMETRY].clicks == {"recommendations:default": clicks}
    assert (await profile_events(client, "u-1")) == {"click": clicks - 1}


def test_the_memory_of_repeated_clicks_is_bounded() -> None:
    """`RecentClicks` remembers the click ids of the current minute only, and at most `limit`
    of them: past it a click is counted without being remembered (a repeat may count again),
    so hostile links cannot grow the process."""
    recent = RecentClicks(limit=3)
    assert [recent.first(f"c-{n}", 7) for n in range(5)] == [True] * 5
    assert len(recent) == 3
    assert not recent.first("c-0", 7)
    assert recent.first("c-0", 8) and len(recent) == 1  # a new minute starts over
