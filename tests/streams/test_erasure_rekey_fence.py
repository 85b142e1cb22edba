"""The erasure fence on the re-key path (streams/app.py `_ship`, streams/identity.py `forward`):
an event of an erased user produced before the erasure but delivered after it must not re-create
the profile, whether it arrives keyed by the user (tests/streams/test_pipeline.py) or unkeyed /
keyed otherwise, when the worker first re-keys it through `persona-events-rekeyed`. The fence
compares the record's time with the erasure's, so the re-keyed copy must keep the original
record's time: stamped with the time of the re-key, the old event counted as produced after the
erasure and started the erased user's profile again with their pre-erasure history."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from engine.events import encode, validate
from streams.produce import Producer
from tests.conftest import T0, Worker, http, metric, wait_until
from tests.streams.test_pipeline import ev, produce, profile

pytestmark = pytest.mark.integration


def test_a_late_unkeyed_event_produced_before_an_erasure_is_fenced(worker: Worker) -> None:
    user = f"fence-rk-{uuid.uuid4().hex[:6]}"
    produce(worker, [ev(user, "page_view", None, T0 + 1_000), ev(user, "add_to_cart", "A", T0)])
    wait_until(lambda: (profile(worker, user) or {}).get("cart"), what="the profile")
    fenced = metric(worker.base, "persona_events_fenced_total")
    status, _, body = http("DELETE", f"{worker.base}/v1/users/{user}")
    assert status == 200 and json.loads(body)["erased"] is True
    erased_at_ms = int(time.time() * 1000)
    unkeyed = validate(ev(user, "add_to_cart", "85123A", T0 + 2_000))
    keyed_otherwise = validate(ev(user, "add_to_cart", "22423", T0 + 2_001))
    later = validate(ev(user, "page_view", None, T0 + 3_000))

    async def go() -> None:
        async with Producer(worker.broker_url) as producer:
            # produced (record time) a minute before the erasure, delivered only now
            before = erased_at_ms - 60_000
            await producer.send_raw("cart", encode(unkeyed), None, timestamp_ms=before)
            await producer.send_raw(
                "cart", encode(keyed_otherwise), b"not-" + user.encode(), timestamp_ms=before + 1
            )
            await producer.send_raw("clickstream", encode(later), user.encode())

    asyncio.run(go())
    wait_until(lambda: profile(worker, user), what="the profile made after the erasure")
    wait_until(
        lambda: metric(worker.base, "persona_events_fenced_total") >= fenced + 2,
        timeout=60,
        what="both re-keyed events fenced",
    )
    after = profile(worker, user)
    assert after is not None and after["events"] == {"page_view": 1} and after["cart"] == {}
