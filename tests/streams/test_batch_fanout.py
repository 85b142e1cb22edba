"""A batch split by owner: with two workers in one group, `POST /v1/blocks:batch` sent to worker a
answers a's users from a's tables and asks worker b once (a signed hop) for b's users, so b's
users get the blocks their owner makes, not a's standby copy. Before 2026-12-07 a batch (and a
render) answered every user from the tables of whichever process received it."""

from __future__ import annotations

import asyncio
import json
import uuid
from itertools import islice
from pathlib import Path

import msgpack
import pytest

from engine.events import validate
from engine.sources import read_catalog
from persona.supervisor import DEMO_DIR
from streams.broker import EmbeddedBroker
from streams.produce import ALL_INPUTS, Producer, ensure_topics
from tests.conftest import T0, Worker, http, metric, start_worker, wait_until

pytestmark = pytest.mark.integration

HOPS = "persona_hops_accepted_total"


def cart_of(worker: Worker, user: str) -> tuple[dict[str, int] | None, str | None]:
    status, headers, body = http("GET", f"{worker.base}/v1/users/{user}/profile", timeout=5)
    cart = json.loads(body)["cart"] if status == 200 else None
    return cart, headers.get("X-Persona-Routed")


def own_block(worker: Worker, user: str) -> tuple[str, dict]:
    """The cart_reminder `worker` itself answers for `user` (its ETag and JSON document)."""
    status, headers, body = http(
        "GET", f"{worker.base}/v1/users/{user}/blocks/cart_reminder?format=json", timeout=5
    )
    assert status == 200 and "X-Persona-Routed" not in headers, (status, headers)
    return headers["ETag"], json.loads(body)


def test_a_batch_asks_the_owner_of_the_other_workers_users(tmp_path: Path) -> None:
    products = [p for p in islice(read_catalog(DEMO_DIR / "catalog.jsonl.gz"), 60)]
    items = [p.item_id for p in products if p.availability == "in_stock"][:2]
    assert len(items) == 2
    tag = uuid.uuid4().hex[:6]
    users = [f"fan-{tag}-{i}" for i in range(16)]
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        asyncio.run(ensure_topics(broker.url, 4, ALL_INPUTS))
        a = start_worker(broker.url, tmp_path / "a")
        b = start_worker(broker.url, tmp_path / "b")
        try:
            wait_until(
                lambda: all(http("GET", w.base + "/readyz", key=None)[0] == 200 for w in (a, b)),
                timeout=90,
                what="both workers ready after the rebalance",
            )

            def carts(item: str, n: int) -> None:
                async def go() -> None:
                    async with Producer(broker.url) as producer:
                        if n == 0:
                            await producer.send_products(products)
                        await producer.send_events(
                            validate(
                                {
                                    "event_id": f"{tag}-{n}-{u}",
                                    "type": "add_to_cart",
                                    "user_id": u,
                                    "ts": T0 + n * 1000,
                                    "item_id": item,
                                }
                            )
                            for u in users
                        )

                asyncio.run(go())

            carts(items[0], 0)

            def owners() -> dict[str, str] | None:
                out = {}
                for user in users:
                    cart, routed = cart_of(a, user)
                    if cart != {items[0]: 1}:
                        return None
                    out[user] = routed or a.base
                return out

            owned = wait_until(owners, timeout=90, what="every cart folded, seen via worker a")
            of_b = [u for u, owner in owned.items() if owner == b.base]
            of_a = [u for u, owner in owned.items() if owner == a.base]
            assert of_a and of_b, owned

            carts(items[1], 1)  # folded by each user's owner; b's users' copy on a may lag
            fresh = {items[0]: 1, items[1]: 1}
            wait_until(
                lambda: all(cart_of(b, u) == (fresh, None) for u in of_b),
                timeout=60,
                what="b folding its users' second item",
            )
            asked = [*reversed(users), users[0], of_b[0]]  # duplicates are answered once
            hops = metric(b.base, HOPS)
            body = {"block": "cart_reminder", "format": "json", "user_ids": asked}
            status, headers, raw = http("POST", f"{a.base}/v1/blocks:batch", body, timeout=30)
            assert status == 200, raw[:300]
            results = json.loads(raw)["results"]
            assert list(results) == list(dict.fromkeys(asked))  # the request's order
            for user in of_b:  # exactly what their owner answers, from the fresh cart
                etag, document = own_block(b, user)
                entry = results[user]
                assert entry["etag"] == etag and json.loads(entry["content"]) == document
            for user in of_a:
                assert results[user]["etag"] == own_block(a, user)[0]
            assert metric(b.base, HOPS) == hops + 1  # one sub-request for all of b's users

            # msgpack answers the same entries
            status, headers, raw = http(
                "POST",
                f"{a.base}/v1/blocks:batch",
                body,
                headers={"Accept": "application/msgpack"},
                timeout=30,
            )
            assert status == 200 and headers["Content-Type"].startswith("application/msgpack")
            assert msgpack.unpackb(raw, raw=False)["results"] == results
        finally:
            a.stop()
            b.stop()
