"""Locales and currencies end to end (issue 19 item 6): a product priced in two currencies goes in
through the catalog topic, a user's `identify` with `props.locale` and their purchases in two
currencies through Kafka, into the worker's stored profile; the block comes out in Polish with the
zloty price, and the export keeps the spend of each currency apart."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from engine.catalog import validate_product
from engine.locales import NBSP
from streams.produce import ALL_INPUTS, Producer, ensure_topics
from tests.conftest import T0, Worker, http, wait_until
from tests.streams.test_new_products import listed
from tests.streams.test_pipeline import ev, produce

pytestmark = pytest.mark.integration


def _send_product(worker: Worker, item: str) -> None:
    product = validate_product(
        {
            "item_id": item,
            "title": "Lamp",
            "url": f"https://shop.example/p/{item}",
            "image_url": f"https://shop.example/i/{item}.jpg",
            "price": 10.0,
            "currency": "GBP",
            "prices": {"PLN": 54.0, "EUR": 12.5},
        }
    )

    async def go() -> None:
        await ensure_topics(worker.broker_url, 4, ALL_INPUTS)
        async with Producer(worker.broker_url) as producer:
            await producer.send_products([product])

    asyncio.run(go())
    # listed in the feed: the session worker's update count is moved by other tests' records too
    wait_until(lambda: listed(worker, {item}), timeout=60, what="product applied")


def _export(worker: Worker, user: str) -> dict[str, Any] | None:
    status, _, body = http("GET", f"{worker.base}/v1/users/{user}/export")
    return json.loads(body)["stored"] if status == 200 else None


def test_a_polish_users_block_and_spend_through_the_worker(worker: Worker) -> None:
    tag = uuid.uuid4().hex[:8]
    item, user = f"loc-{tag}", f"pl-{tag}"
    _send_product(worker, item)
    identify = {"previous_id": f"anon-{tag}", "locale": "pl-pl"}
    produce(
        worker,
        [
            ev(user, "identify", None, T0, props=identify),
            ev(user, "purchase", "x1", T0 + 1, price=100.0, currency="PLN",
               props={"order_id": "o1"}),
            ev(user, "purchase", "x2", T0 + 2, price=7.0, currency="GBP",
               props={"order_id": "o2", "locale": "not a tag"}),
            ev(user, "add_to_cart", item, T0 + 3),
        ],
    )  # fmt: skip
    stored = wait_until(
        lambda: (s := _export(worker, user)) and s["cart"] == {item: 1} and s,
        timeout=60,
        what="the user's profile with the cart",
    )
    assert stored["locale"] == "pl-PL"  # the invalid tag of the later event was ignored
    assert stored["spend"] == {"PLN": [100.0, 1], "GBP": [7.0, 1]}
    assert stored["monetary"] == 100.0  # PLN: the larger amount at one order each, not 107
    status, _, body = http("GET", f"{worker.base}/v1/users/{user}/blocks/cart_reminder")
    page = body.decode()
    assert status == 200 and "Nadal w Twoim koszyku" in page and f"54,00{NBSP}zł" in page
    status, _, body = http("GET", f"{worker.base}/v1/users/{user}/blocks/cart_reminder?format=json")
    (shown,) = json.loads(body)["items"]
    assert status == 200 and (shown["price"], shown["currency"]) == (54.0, "PLN")
    status, _, body = http(
        "GET", f"{worker.base}/v1/users/{user}/blocks/cart_reminder?format=json&locale=en-GB"
    )
    (shown,) = json.loads(body)["items"]
    assert (shown["price"], shown["currency"]) == (10.0, "GBP")  # en-GB: the product's own
