"""Triggers end to end: abandoned carts (and their cancellation), churn risk as event time passes,
price drops and back-in-stock from catalog changes — to the `triggers` topic and to a signed
webhook — and none of them for a user who withdrew `email` consent while their cart's check was
pending, who gets a `consent_withdrawn` notice instead."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from engine.catalog import Product
from engine.events import validate
from streams.admin import bootstrap_servers
from streams.broker import EmbeddedBroker, free_port
from streams.produce import ALL_INPUTS, Producer, ensure_topics
from tests.conftest import http, start_worker, wait_until

pytestmark = pytest.mark.integration

T0 = 1_291_190_000_000
MIN = 60_000
DAY = 86_400_000
SECRET = "hook-secret-kkkkkkkkkkkk"


class Hooks(BaseHTTPRequestHandler):
    received: list[tuple[bytes, str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hooks.received.append((body, self.headers.get("X-Persona-Signature", "")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def product(item: str, price: float, availability: str = "in_stock") -> Product:
    return Product(
        item,
        item.title(),
        f"https://s.example.com/{item}",
        f"https://s.example.com/{item}.jpg",
        price,
        "GBP",
        availability,
    )


def test_triggers_reach_the_topic_and_a_signed_webhook(tmp_path: Path) -> None:
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        "PERSONA_ABANDONED_CART_MINUTES": "10",
        # the events are of 2010: no bound on a trigger's age against the wall clock (the bound
        # itself: test_trigger_age.py)
        "PERSONA_TRIGGER_MAX_AGE_HOURS": "0",
        # the default model scores a loyal buyer ~0.11 today and ~0.26 after 200 quiet days
        "PERSONA_CHURN_THRESHOLD": "0.2",
        "PERSONA_WEBHOOK_URLS": f"http://127.0.0.1:{port}/hook",
        "PERSONA_WEBHOOK_SECRET": SECRET,
    }
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        worker = start_worker(broker.url, tmp_path / "w", extra_env=env)
        try:

            def ev(n: int, user: str, kind: str, ts: int, item: str | None = None) -> Any:
                data = {"event_id": f"tr{n}", "type": kind, "user_id": user, "ts": ts}
                if item:
                    data["item_id"] = item
                return validate(data)

            async def send(products: list[Product], events: list[Any]) -> None:
                await ensure_topics(broker.url, 4, ALL_INPUTS)
                async with Producer(broker.url) as producer:
                    await producer.send_products(products)
                    await producer.send_events(events)

            asyncio.run(
                send(
                    [product("lamp", 10.0), product("vase", 5.0, "out_of_stock")],
                    [
                        ev(1, "abandoner", "add_to_cart", T0, "lamp"),
                        ev(2, "buyer", "add_to_cart", T0, "lamp"),
                        ev(3, "buyer", "purchase", T0 + MIN, "lamp"),
                        ev(4, "watcher", "product_view", T0, "lamp"),
                        ev(5, "waiter", "add_to_cart", T0, "vase"),
                        ev(6, "waiter", "checkout", T0 + MIN),  # checked out: no abandoned cart
                        ev(7, "withdrawer", "add_to_cart", T0, "lamp"),
                    ]
                    + [  # a loyal buyer, an order a day for a week: low risk, the baseline
                        validate(
                            {
                                "event_id": f"loyal{d}-{k}",
                                "type": "purchase",
                                "user_id": "sleeper",
                                "ts": T0 - (6 - d) * DAY + k,
                                "item_id": f"i{k}",
                                "price": 20.0,
                                "props": {"order_id": f"o{d}"},
                            }
                        )
                        for d in range(7)
                        for k in range(3)
                    ],
                )
            )
            time.sleep(3)
            # The withdrawer's abandoned-cart check is pending (due at T0 + 10 min): withdrawn.
            withdraw = validate(
                {
                    "event_id": "tr-withdraw",
                    "type": "consent",
                    "user_id": "withdrawer",
                    "ts": T0 + MIN,
                    "source": "web",
                    "props": {"email": False, "text_version": "2026-12"},
                }
            )
            asyncio.run(send([], [withdraw]))
            time.sleep(3)
            # Event time moves on: 20 minutes, then 200 days (the sleeper's churn risk rises).
            asyncio.run(
                send(
                    [product("lamp", 8.0), product("vase", 5.0)],
                    [
                        ev(8, "clock", "page_view", T0 + 20 * MIN),
                    ],
                )
            )
            time.sleep(3)
            asyncio.run(send([], [ev(9, "clock", "page_view", T0 + 200 * DAY)]))

            triggers: list[dict[str, Any]] = []

            async def collect() -> None:
                consumer = AIOKafkaConsumer(
                    "triggers",
                    bootstrap_servers=bootstrap_servers(broker.url),
                    auto_offset_reset="earliest",
                    group_id=None,
                )
                await consumer.start()
                try:
                    batches = await consumer.getmany(timeout_ms=1000)
                    for messages in batches.values():
                        triggers.extend(json.loads(m.value) for m in messages)
                finally:
                    await consumer.stop()

            def kinds() -> set[tuple[str, str]]:
                triggers.clear()
                asyncio.run(collect())
                return {(t["trigger"], t["user_id"]) for t in triggers}

            wanted = {
                ("abandoned_cart", "abandoner"),
                ("price_drop", "watcher"),
                ("price_drop", "abandoner"),
                ("churn_risk", "sleeper"),
                ("consent_withdrawn", "withdrawer"),
            }
            wait_until(lambda: wanted <= kinds(), timeout=90, interval=2, what="the triggers")
            got = kinds()
            assert ("abandoned_cart", "buyer") not in got  # cancelled by the purchase
            assert ("abandoned_cart", "waiter") not in got  # cancelled by the checkout
            assert ("back_in_stock", "waiter") in got  # the vase came back
            # for the withdrawer only the notice of the withdrawal: neither the abandoned cart
            # nor the lamp's price drop
            assert [kind for kind, user in got if user == "withdrawer"] == ["consent_withdrawn"]
            (notice,) = [t for t in triggers if t["trigger"] == "consent_withdrawn"]
            assert notice == {
                "trigger": "consent_withdrawn",
                "user_id": "withdrawer",
                "ts": T0 + MIN,
                "trigger_id": "consent_withdrawn:withdrawer:tr-withdraw",
                "purposes": ["email"],
            }
            abandoned = [t for t in triggers if t["trigger"] == "abandoned_cart"]
            assert len(abandoned) == 1 and abandoned[0]["cart"] == {"lamp": 1}

            wait_until(lambda: len(Hooks.received) >= len(triggers), timeout=30, what="webhooks")
            for body, signature in Hooks.received:
                expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                assert signature == f"sha256={expected}"
            assert {json.loads(b)["trigger_id"] for b, _ in Hooks.received} == {
                t["trigger_id"] for t in triggers
            }
            to_withdrawer = [json.loads(b) for b, _ in Hooks.received]
            to_withdrawer = [t["trigger"] for t in to_withdrawer if t["user_id"] == "withdrawer"]
            assert to_withdrawer == ["consent_withdrawn"]  # automations cancel their sends

            # An erasure reaches the receivers: a signed `user_erased` notice, so they delete
            # the user's triggers they keep (the abandoner's abandoned_cart above).
            status, _, body = http("DELETE", f"{worker.base}/v1/users/abandoner", timeout=30)
            assert status == 200 and json.loads(body)["erased"] is True
            erased = wait_until(
                lambda: [
                    (json.loads(b), s)
                    for b, s in Hooks.received
                    if json.loads(b)["trigger"] == "user_erased"
                ],
                timeout=30,
                what="the erasure's webhook notice",
            )
            ((notice, signature),) = erased
            assert set(notice) == {"trigger", "user_id", "ts", "trigger_id"}
            assert notice["user_id"] == "abandoner"
            assert notice["trigger_id"] == f"user_erased:abandoner:{notice['ts']}"
            assert abs(notice["ts"] - time.time() * 1000) < 120_000  # the erasure's time
            body_sent = next(b for b, _ in Hooks.received if b"user_erased" in b)
            expected = hmac.new(SECRET.encode(), body_sent, hashlib.sha256).hexdigest()
            assert signature == f"sha256={expected}"
        finally:
            worker.stop()
            server.shutdown()
