"""Readers route like their worker: with two workers in one group, a reader on worker a's data dir
forwards a request for a user whose profiles partition worker b owns to b (signed hop, answered
there locally), and answers a's own users from a's tables. Before 2026-12-07 a reader answered
every user from its worker's tables: for b's users a standby copy, which may be far behind (an
operator saw 1,357 of a user's 2,864 events from the reader, 2,864 from the owner)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from engine.events import validate
from engine.ownership import FILE_NAME, parse
from streams.broker import free_port
from streams.produce import Producer
from tests.conftest import http, owners_via, two_workers, wait_until
from tests.streams.test_reader_process import start_reader

pytestmark = pytest.mark.integration

USERS = [f"route-{i}" for i in range(16)]
T0 = 1_291_190_000_000
PER_USER = 3


def test_a_reader_forwards_the_other_workers_users_to_their_owner(tmp_path: Path) -> None:
    with two_workers(tmp_path) as (broker, a, b):
        port = free_port()
        reader = start_reader(a, port, 0)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: http("GET", base + "/readyz")[0] == 200, timeout=90, what="reader")

            async def go() -> None:
                async with Producer(broker.url) as producer:
                    await producer.send_events(
                        validate(
                            {
                                "event_id": f"r{n}-{u}",
                                "type": "product_view",
                                "user_id": u,
                                "ts": T0 + n,
                                "item_id": f"i{n}",
                            }
                        )
                        for u in USERS
                        for n in range(PER_USER)
                    )

            asyncio.run(go())

            def views(url: str, user: str) -> tuple[int, str | None]:
                status, headers, body = http("GET", f"{url}/v1/users/{user}/profile", timeout=5)
                got = json.loads(body)["events"].get("product_view", 0) if status == 200 else -1
                return got, headers.get("X-Persona-Routed")

            # who owns whom: a worker's answer for the other's user says where it was forwarded
            def folded(user: str) -> tuple[bool, str | None]:
                got, routed = views(a.base, user)
                return got == PER_USER, routed

            owned = owners_via(a, USERS, folded, "every user folded, seen via worker a")
            of_b = [u for u, owner in owned.items() if owner == b.base]
            of_a = [u for u, owner in owned.items() if owner == a.base]
            assert of_a and of_b, owned
            # the worker published its view for its readers
            view = parse((a.data_dir / FILE_NAME).read_bytes(), 4)
            assert view.own == a.base and set(view.owners) == {a.base, b.base}

            def reader_routes() -> bool:
                return all(views(base, u) == (PER_USER, b.base) for u in of_b)

            wait_until(reader_routes, timeout=30, what="the reader forwarding b's users to b")
            for user in of_a:  # its own worker's users: answered here, from a's tables
                assert views(base, user) == (PER_USER, None)
            # the block GET's fast path follows the same routing
            user = of_b[0]
            status, headers, _ = http(
                "GET", f"{base}/v1/users/{user}/blocks/recommendations?format=json"
            )
            assert status == 200 and headers.get("X-Persona-Routed") == b.base
            status, headers, _ = http(
                "GET", f"{base}/v1/users/{of_a[0]}/blocks/recommendations?format=json"
            )
            assert status == 200 and "X-Persona-Routed" not in headers
        finally:
            reader.terminate()
            reader.wait(15)
