"""Locales and currencies over HTTP (issue 19 item 6): a user's locale (from `identify` or any
event's `props.locale`) picks the headings and the price format of their blocks, the request's
`locale` overrides it, an unknown language is English, a product priced in the user's currency
shows that price (in HTML and in the ads JSON), any other its own, and the export holds the
locale and the spend per currency. Through the real app on the in-memory state."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.catalog import Product, validate_product
from engine.events import validate
from engine.locales import NBSP
from models.registry import ModelSet

T0 = 1_300_000_000_000
AUTH = {"Authorization": "Bearer s3cret-kkkkkkkkkkkkkkkkk"}
ADMIN = {"Authorization": "Bearer adm-kkkkkkkkkkkkkkkkkkkk"}
MODELS = ModelSet.default()
SEEN = "20725"  # an item of the default model with neighbours: a view of it gets recommendations
LOCALES = {"pl": "pl-PL", "de": "de-DE", "fr": "fr-FR", "plain": None}


def _product(item: str, price: float, prices: dict[str, float] | None = None) -> Product:
    return validate_product(
        {
            "item_id": item,
            "title": f"Product {item}",
            "url": f"https://shop.example/p/{item}",
            "image_url": f"https://shop.example/i/{item}.jpg",
            "price": price,
            "currency": "GBP",
            "prices": prices or {},
        }
    )


def _events(user: str, locale: str | None) -> list[dict[str, Any]]:
    first: dict[str, Any] = {"type": "page_view"}
    if user == "pl":  # identify carries it
        first = {"type": "identify", "props": {"previous_id": "anon-pl", "locale": locale}}
    elif locale:  # any event's props.locale
        first = {"type": "page_view", "props": {"locale": locale.lower()}}
    return [
        first,
        {"type": "product_view", "item_id": SEEN},
        {"type": "add_to_cart", "item_id": "MULTI"},
        {"type": "add_to_cart", "item_id": "GBONLY"},
    ]


@pytest.fixture
def state() -> MemoryState:
    s = MemoryState()
    s.put_product(_product("MULTI", 10.0, {"PLN": 54.0, "EUR": 12.5}))
    s.put_product(_product("GBONLY", 3.5))
    neighbours = [i for i, _w in MODELS.recs.neighbours_of(SEEN)]
    for n, item in enumerate(dict.fromkeys([*MODELS.recs.popular[:30], *neighbours])):
        s.put_product(_product(item, 1.0 + n))
    n = 0
    for user, locale in LOCALES.items():
        for event in _events(user, locale):
            n += 1
            s.apply(validate({"event_id": f"e{n}", "user_id": user, "ts": T0 + n, **event}))
    return s


@pytest.fixture
async def client(state: MemoryState) -> AsyncIterator[TestClient]:
    content = ContentService(state, MODELS, Renderer(), BlockPolicy())
    keys = KeyRing.from_settings(
        "all:s3cret-kkkkkkkkkkkkkkkkk:content:read;admin:adm-kkkkkkkkkkkkkkkkkkkk:privacy:admin",
        None,
    )
    async with TestClient(TestServer(create_app(content, keys))) as c:
        yield c


async def html(client: TestClient, user: str, block: str = "cart_reminder", query: str = "") -> str:
    r = await client.get(f"/v1/users/{user}/blocks/{block}?format=html{query}", headers=AUTH)
    assert r.status == 200, await r.text()
    return await r.text()


async def ads(client: TestClient, user: str, query: str = "") -> dict[str, Any]:
    r = await client.get(f"/v1/users/{user}/blocks/cart_reminder?format=json{query}", headers=AUTH)
    assert r.status == 200, await r.text()
    body: dict[str, Any] = json.loads(await r.text())
    return body


def prices(body: dict[str, Any]) -> dict[str, tuple[float, str]]:
    return {i["item_id"]: (i["price"], i["currency"]) for i in body["items"]}


async def test_the_locale_of_identify_writes_the_block_in_polish_with_zloty(
    client: TestClient,
) -> None:
    page = await html(client, "pl")
    assert "Nadal w Twoim koszyku" in page and "Still in your cart" not in page
    assert f"54,00{NBSP}zł" in page  # MULTI has a PLN price
    assert f"3,50{NBSP}£" in page  # GBONLY has only its own, in the Polish format
    assert "Ilość: 1" in page and 'lang="pl-PL"' in page
    assert "Polecane dla Ciebie" in await html(client, "pl", "recommendations")
    assert prices(await ads(client, "pl")) == {"MULTI": (54.0, "PLN"), "GBONLY": (3.5, "GBP")}


async def test_the_locale_of_any_event_writes_the_block_in_german_with_euros(
    client: TestClient,
) -> None:
    page = await html(client, "de")
    assert "Noch in Ihrem Warenkorb" in page and "Menge: 1" in page
    assert f"12,50{NBSP}€" in page and f"3,50{NBSP}£" in page
    assert "Für Sie empfohlen" in await html(client, "de", "recommendations")
    assert prices(await ads(client, "de")) == {"MULTI": (12.5, "EUR"), "GBONLY": (3.5, "GBP")}


async def test_the_locale_parameter_overrides_the_users(client: TestClient) -> None:
    page = await html(client, "pl", query="&locale=de-DE")
    assert "Noch in Ihrem Warenkorb" in page and f"12,50{NBSP}€" in page
    assert 'lang="de-DE"' in page and "zł" not in page
    english = await html(client, "pl", query="&locale=en-GB")
    assert "Still in your cart" in english and "£10.00" in english
    assert prices(await ads(client, "de", "&locale=pl-PL"))["MULTI"] == (54.0, "PLN")


async def test_an_unknown_language_is_english_with_its_regions_currency(
    client: TestClient,
) -> None:
    page = await html(client, "fr")
    assert "Still in your cart" in page and "Quantity: 1" in page
    assert "€12.50" in page and "£3.50" in page  # fr-FR: euros, written as English writes them
    assert "Recommended for you" in await html(client, "fr", "recommendations")


async def test_a_user_without_a_locale_gets_the_english_block_in_the_products_currency(
    client: TestClient,
) -> None:
    page = await html(client, "plain")
    assert "Still in your cart" in page and "£10.00" in page and "£3.50" in page
    assert "lang=" not in page
    assert prices(await ads(client, "plain")) == {"MULTI": (10.0, "GBP"), "GBONLY": (3.5, "GBP")}


async def test_the_fallback_is_written_in_the_requested_language(client: TestClient) -> None:
    assert "Nasze bestsellery" in await html(client, "nobody", "recommendations", "&locale=pl")
    assert "Unsere Bestseller" in await html(client, "nobody", "winback", "&locale=de-CH")
    assert "Our best-sellers" in await html(client, "nobody", "recommendations", "&locale=fr")


async def test_without_personalization_consent_the_profiles_locale_is_not_used(
    client: TestClient, state: MemoryState
) -> None:
    state.apply(
        validate({"event_id": "c1", "type": "consent", "user_id": "pl", "ts": T0 + 100,
                  "props": {"personalization": False}})
    )  # fmt: skip
    page = await html(client, "pl")
    assert "Our best-sellers" in page and "zł" not in page
    assert "Nasze bestsellery" in await html(client, "pl", query="&locale=pl-PL")


async def test_an_invalid_locale_is_a_400_and_the_export_holds_locale_and_spend(
    client: TestClient, state: MemoryState
) -> None:
    r = await client.get("/v1/users/pl/blocks/cart_reminder?locale=pl_PL", headers=AUTH)
    assert r.status == 400 and "locale" in (await r.json(content_type=None))["detail"]
    state.apply(
        validate({"event_id": "b1", "type": "purchase", "user_id": "pl", "ts": T0 + 200,
                  "item_id": "MULTI", "price": 54.0, "currency": "PLN"})
    )  # fmt: skip
    r = await client.get("/v1/users/pl/export", headers=ADMIN)
    stored = (await r.json())["stored"]
    assert stored["locale"] == "pl-PL" and stored["spend"] == {"PLN": [54.0, 1]}
