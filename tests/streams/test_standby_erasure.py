"""An erasure reaches the standby copies: with two workers, the one that owned a user's partition
before the other joined keeps that partition as a standby (its RocksDB database, with the user's
profile). Faust applies the changelog records a standby receives only once 1,000 of them are
buffered (`standby_buffer_size`), so in a quiet shop the standby kept an erased user's profile
indefinitely, and answered it whenever it answered locally: the owner unreachable, a rebalance
(ownership unknown), or a signed hop (then a caller's own `X-Persona-Routed` too); its readers
read those files too.
Seen under `persona run` with a second `persona worker`. The worker now applies its standby
buffers every 0.2 s (streams/app.py `_apply_held_changelogs`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from engine.events import validate
from streams.broker import EmbeddedBroker
from streams.produce import ALL_INPUTS, Producer, ensure_topics
from tests.conftest import Worker, hop_headers, http, start_worker, wait_until

pytestmark = pytest.mark.integration

USERS = [f"standby-{i}" for i in range(16)]
T0 = 1_291_190_000_000


def _local(worker: Worker, user: str) -> int:
    """The status of the user's profile from this worker's own tables (a signed hop: no
    forward)."""
    path = f"/v1/users/{user}/profile"
    local = hop_headers("GET", path)
    return http("GET", worker.base + path, key=None, headers=local, timeout=5)[0]


def _routed(worker: Worker, user: str) -> bool:
    status, headers, _ = http("GET", f"{worker.base}/v1/users/{user}/profile", timeout=5)
    return status == 200 and bool(headers.get("X-Persona-Routed"))


def test_an_erased_users_standby_copy_goes_within_seconds(tmp_path: Path) -> None:
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        a = start_worker(broker.url, tmp_path / "a")
        b: Worker | None = None
        try:

            async def produce() -> None:
                await ensure_topics(broker.url, 4, ALL_INPUTS)
                async with Producer(broker.url) as producer:
                    await producer.send_events(
                        validate(
                            {
                                "event_id": f"e{n}",
                                "type": "add_to_cart",
                                "user_id": u,
                                "ts": T0 + n,
                                "item_id": "i1",
                            }
                        )
                        for n, u in enumerate(USERS)
                    )

            asyncio.run(produce())
            wait_until(
                lambda: all(_local(a, u) == 200 for u in USERS),
                timeout=60,
                what="every user folded by worker a alone",
            )
            b = start_worker(broker.url, tmp_path / "b")
            second = b

            def split() -> list[str]:
                return [u for u in USERS if _routed(a, u)]

            moved = wait_until(split, timeout=90, interval=0.5, what="worker b owning some users")
            user = moved[0]
            # worker a keeps b's partitions as a standby, with the user's profile
            assert _local(a, user) == 200
            status, _, body = http("DELETE", f"{a.base}/v1/users/{user}", timeout=30)
            assert status == 200 and json.loads(body)["erased"] is True
            assert http("GET", f"{second.base}/v1/users/{user}/profile")[0] == 404
            wait_until(
                lambda: _local(a, user) == 404,
                timeout=30,
                interval=0.5,
                what="the erased user gone from worker a's standby copy",
            )
            others = [u for u in moved if u != user]
            assert all(_local(a, u) == 200 for u in others)  # the rest of the copy stays
        finally:
            if b is not None:
                b.stop()
            a.stop()
