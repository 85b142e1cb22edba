"""A product first seen in the catalog after the model's training is recommended at once, through
the real embedded broker and a real worker with the default (trained) model: to a user who viewed
a product like it, whether the model knows that product or not (issue 17 item 4)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from engine.catalog import Product
from engine.events import validate
from engine.sources import read_catalog
from models.registry import ModelSet
from models.similar import FRESH_AFTER
from persona.supervisor import DEMO_DIR
from streams.produce import ALL_INPUTS, Producer, ensure_topics
from tests.conftest import T0, Worker, http, wait_until

pytestmark = pytest.mark.integration


def new_product(
    item_id: str, title: str, category: str, price: float, brand: str = "Atlas"
) -> Product:
    return Product(
        item_id=item_id,
        title=title,
        url=f"https://shop.example.com/products/{item_id}",
        image_url=f"https://shop.example.com/images/{item_id}.jpg",
        price=price,
        currency="GBP",
        category=category,
        brand=brand,
    )


def send(worker: Worker, products: list[Product], events: list[dict]) -> None:
    async def go() -> None:
        await ensure_topics(worker.broker_url, 4, ALL_INPUTS)
        async with Producer(worker.broker_url) as producer:
            if products:
                await producer.send_products(products)
            if events:
                await producer.send_events([validate(e) for e in events], fmt="json")

    asyncio.run(go())


def load_products(worker: Worker, products: list[Product]) -> None:
    """Send `products` and wait until the feed lists each (the session worker's update count is
    no witness: other tests' catalog records move it too)."""
    send(worker, products, [])
    wait_until(
        lambda: listed(worker, {p.item_id for p in products}),
        timeout=90,
        what="the new products in the catalog",
    )


def listed(worker: Worker, items: set[str]) -> bool:
    """Whether the worker's product feed lists every one of `items`."""
    status, _, body = http("GET", worker.base + "/v1/feeds/google.tsv")
    rows = (
        {row.split(b"\t", 1)[0].decode() for row in body.split(b"\n")} if status == 200 else set()
    )
    return items <= rows


def view(user: str, item: str, ts: int) -> dict:
    return {"event_id": str(uuid.uuid4()), "type": "product_view", "user_id": user, "ts": ts,
            "item_id": item}  # fmt: skip


def recommendations_after(worker: Worker, user: str, item: str) -> list[str]:
    def seen() -> list[str] | None:
        status, _, body = http("GET", f"{worker.base}/v1/users/{user}/profile")
        if status != 200:
            return None
        profile = json.loads(body)
        return profile["recommendations"] if item in profile["recent_items"] else None

    found: list[str] = wait_until(seen, timeout=90, what=f"{user}'s view of {item}")
    return found


def test_a_new_product_is_recommended_to_a_user_who_viewed_one_like_it(worker: Worker) -> None:
    tag = uuid.uuid4().hex[:8]
    large = new_product(f"new-{tag}-l", "Moroccan brass lantern large", "Lantern", 24.0)
    small = new_product(f"new-{tag}-s", "Moroccan brass lantern small", "Lantern", 19.0)
    press = new_product(f"new-{tag}-p", "Stainless garlic press", "Press", 9.0, "Chef")
    known = ModelSet.default().recs.items
    assert not {large.item_id, small.item_id} & set(known)  # new since the training
    load_products(worker, [large, small, press])

    user = f"newcomer-{tag}"
    send(worker, [], [view(user, large.item_id, T0 + 5_000)])
    recs = recommendations_after(worker, user, large.item_id)
    assert recs[0] == small.item_id  # the model knows nothing of them; the content does
    assert large.item_id not in recs and press.item_id not in recs


def test_a_new_product_stands_beside_a_known_one_like_it(worker: Worker) -> None:
    tag = uuid.uuid4().hex[:8]
    recs_model = ModelSet.default().recs
    neighbours = {i for i, _ in recs_model.neighbours_of("85123A")}
    assert neighbours  # the model knows 85123A (a white hanging heart T-light holder)
    demo = [  # the demo catalog's own products, as other tests load them
        p
        for p in read_catalog(DEMO_DIR / "catalog.jsonl.gz")
        if p.item_id in {"85123A", *neighbours}
    ]
    heart = next(p for p in demo if p.item_id == "85123A")
    fresh = new_product(f"new-{tag}-h", "White Hanging Heart T-Light Holder Large", "Holder", 3.5)
    load_products(worker, [*demo, fresh])

    user = f"hearts-{tag}"
    send(worker, [], [view(user, heart.item_id, T0 + 6_000)])
    recs = recommendations_after(worker, user, heart.item_id)
    assert fresh.item_id in recs
    assert recs.index(fresh.item_id) >= FRESH_AFTER  # the model's neighbours keep the lead
    assert set(recs[:FRESH_AFTER]) <= neighbours
