"""Identity through a real worker (issue 19 item 2): an anonymous id's history merges into the
user who logs in, once, on the user's partition, with the two ids on different partitions."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from engine.signing import ClusterKey
from streams.admin import COMMANDS_TOPIC, DEAD_LETTERS
from streams.kafka_security import as_config
from tests.conftest import CLUSTER_SECRET, T0, Worker, http, metric, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = [0, 1, 2, 3]  # the test worker's PERSONA_PARTITIONS


def partition(user_id: str) -> int:
    return int(DefaultPartitioner()(user_id.encode(), PARTITIONS, PARTITIONS))


def apart() -> tuple[str, str]:
    """An anonymous id and a user id placed on different partitions."""
    anon = f"anon-{uuid.uuid4().hex[:8]}"
    for n in range(100):
        user = f"user-{uuid.uuid4().hex[:6]}-{n}"
        if partition(user) != partition(anon):
            return anon, user
    raise AssertionError("no user id on another partition")


def ev(user: str, type_: str, ts: int, item: str | None = None, **kw: object) -> dict:
    data = {"event_id": str(uuid.uuid4()), "type": type_, "user_id": user, "ts": ts, **kw}
    if item:
        data["item_id"] = item
    return data


def post(worker: Worker, events: list[dict]) -> None:
    status, _, body = http("POST", worker.base + "/v1/events", events)
    assert status == 202 and json.loads(body)["rejected"] == 0, body


def profile(worker: Worker, user: str) -> dict | None:
    status, _, body = http("GET", f"{worker.base}/v1/users/{user}/profile")
    return json.loads(body) if status == 200 else None


def counted(worker: Worker, user: str, n: int) -> dict | None:
    p = profile(worker, user)
    return p if p and sum(p["events"].values()) == n else None


def merged_identity(worker: Worker) -> tuple[str, str]:
    """An anonymous id with views and a cart, identified as a user (the identify sent twice)."""
    anon, user = apart()
    post(worker, [ev(user, "product_view", T0, "u-own")])
    anon_events = [
        ev(anon, "product_view", T0 + 1_000, "a-1"),
        ev(anon, "product_view", T0 + 2_000, "a-2"),
        ev(anon, "add_to_cart", T0 + 3_000, "a-2", quantity=2),
    ]
    post(worker, anon_events)
    wait_until(lambda: counted(worker, anon, 3), timeout=60, what="the anonymous history")
    wait_until(lambda: counted(worker, user, 1), timeout=60, what="the user's own view")
    identify = ev(user, "identify", T0 + 4_000, props={"previous_id": anon})
    post(worker, [identify])
    wait_until(lambda: counted(worker, user, 5), timeout=60, what="the merged history")
    duplicates = metric(worker.base, "persona_events_duplicate_total")
    post(worker, [identify])  # delivered again: a repeat, and the id is merged: asks nothing
    grown(worker, "persona_events_duplicate_total", duplicates, "the repeated identify")
    # A redelivered merge request: the anonymous id's partition sends its merge record again,
    # and the user's partition knows it (its m: row) and merges nothing more.
    repeated = metric(worker.base, "persona_identity_repeated_total")
    send_command(worker, anon, {"command": "merge_request", "user_id": anon, "into": user})
    grown(worker, "persona_identity_repeated_total", repeated, "the repeated merge record")
    return anon, user


def grown(worker: Worker, name: str, before: float, what: str) -> None:
    wait_until(lambda: metric(worker.base, name) > before, timeout=60, what=what)


def test_anonymous_history_merges_into_the_user_exactly_once(worker: Worker) -> None:
    anon, user = merged_identity(worker)
    p = profile(worker, user)
    assert p is not None
    assert p["events"] == {"product_view": 3, "add_to_cart": 1, "identify": 1}
    assert p["cart"] == {"a-2": 2}
    assert p["recent_items"][:3] == ["a-2", "a-1", "u-own"]
    assert profile(worker, anon) is None  # the anonymous profile went into the user's
    # A later event of the anonymous id lands in the user's profile.
    post(worker, [ev(anon, "add_to_cart", T0 + 5_000, "a-3")])
    later = wait_until(lambda: counted(worker, user, 6), timeout=60, what="the forwarded event")
    assert later["cart"] == {"a-2": 2, "a-3": 1}
    assert profile(worker, anon) is None


def test_erasing_the_user_erases_the_merged_anonymous_state_and_alias(worker: Worker) -> None:
    anon, user = merged_identity(worker)
    erased = metric(worker.base, "persona_users_erased_total")
    status, _, body = http("DELETE", f"{worker.base}/v1/users/{user}")
    assert status == 200 and json.loads(body)["erased"] is True
    assert profile(worker, user) is None and profile(worker, anon) is None
    # The anonymous id's erasure (sent by the user's) runs on its own partition.
    wait_until(
        lambda: metric(worker.base, "persona_users_erased_total") >= erased + 2,
        timeout=60,
        what="the anonymous id's erasure",
    )
    # Without its alias, a new event of the anonymous id starts a history of its own again, and
    # the erased user stays erased.
    post(worker, [ev(anon, "product_view", T0 + 10**7, "a-new")])
    fresh = wait_until(lambda: counted(worker, anon, 1), timeout=60, what="a fresh history")
    assert fresh["recent_items"] == ["a-new"] and fresh["cart"] == {}
    assert profile(worker, user) is None


def export(worker: Worker, user: str) -> dict | None:
    status, _, body = http("GET", f"{worker.base}/v1/users/{user}/export", timeout=30)
    return json.loads(body) if status == 200 else None


def test_the_export_lists_the_merged_ids_and_their_held_records(worker: Worker) -> None:
    """A data subject's access request covers what came from their merged anonymous ids: the
    anonymous id's consent_withdrawn notice is keyed by that id on `triggers`, so the user's own
    `records` never showed it (and nothing named the merged id)."""
    anon, user = apart()
    post(worker, [ev(user, "product_view", T0, "u-own")])
    withdrawn = ev(anon, "consent", T0 + 2_000, props={"email": False})
    post(worker, [ev(anon, "product_view", T0 + 1_000, "a-1"), withdrawn])
    wait_until(lambda: counted(worker, anon, 2), timeout=60, what="the anonymous history")
    wait_until(lambda: counted(worker, user, 1), timeout=60, what="the user's own view")
    post(worker, [ev(user, "identify", T0 + 4_000, props={"previous_id": anon})])
    wait_until(lambda: counted(worker, user, 4), timeout=60, what="the merged history")

    def merged_notice() -> dict | None:
        view = export(worker, user)
        merged = (view or {}).get("merged_ids") or []
        held = merged[0]["records"] if merged else None
        return view if held and held["complete"] and held["triggers"] else None

    view = wait_until(merged_notice, timeout=60, interval=1.0, what="the merged id's records")
    (entry,) = view["merged_ids"]
    assert entry["user_id"] == anon
    (notice,) = entry["records"]["triggers"]
    assert notice["trigger"] == "consent_withdrawn" and notice["user_id"] == anon
    assert entry["records"]["dead_letters"] == [] and entry["records"]["exposures"] == []
    # the existing fields stay as they were: the user's own records, the merged history
    assert view["records"]["complete"] is True and view["records"]["triggers"] == []
    assert view["stored"]["counts"] == {"product_view": 2, "consent": 1, "identify": 1}
    # an id that nothing was merged into lists none
    assert export(worker, anon) is None or export(worker, anon)["merged_ids"] == []


# -- hostile and conflicting input ---------------------------------------------------------------
def send_command(worker: Worker, key: str, command: dict, signed: bool = True) -> None:
    async def go() -> None:
        producer = AIOKafkaProducer(**as_config(worker.broker_url).aiokafka())
        await producer.start()
        try:
            value = json.dumps(command).encode()
            now = int(time.time() * 1000)
            sign = ClusterKey(CLUSTER_SECRET).sign_record
            headers = sign(COMMANDS_TOPIC, key.encode(), value, "test", now) if signed else None
            await producer.send_and_wait(COMMANDS_TOPIC, value, key=key.encode(), headers=headers)
        finally:
            await producer.stop()

    asyncio.run(go())


def reasons(worker: Worker, key: str) -> list[str]:
    """The reasons of the dead letters keyed `key` (read from the start of the topic)."""

    async def go() -> list[str]:
        consumer = AIOKafkaConsumer(
            DEAD_LETTERS, **as_config(worker.broker_url).aiokafka(), auto_offset_reset="earliest"
        )
        await consumer.start()
        found: list[str] = []
        try:
            while batch := await consumer.getmany(timeout_ms=1500):
                for messages in batch.values():
                    found += [
                        dict(m.headers).get("reason", b"").decode()
                        for m in messages
                        if m.key == key.encode() and m.value is not None
                    ]
        finally:
            await consumer.stop()
        return found

    return asyncio.run(go())


def dead_lettered(worker: Worker, key: str, words: str) -> list[str]:
    return wait_until(
        lambda: [r for r in reasons(worker, key) if words in r],
        timeout=90,
        interval=1.0,
        what=f"a dead letter keyed {key} saying {words!r}",
    )


def test_an_anonymous_id_merges_into_the_first_user_only(worker: Worker) -> None:
    anon, user = merged_identity(worker)
    other = f"other-{uuid.uuid4().hex[:6]}"
    post(worker, [ev(other, "identify", T0 + 6_000, props={"previous_id": anon})])
    dead_lettered(worker, anon, "merged into another user")
    assert counted(worker, other, 1)["events"] == {"identify": 1}  # its own event, no history
    assert counted(worker, user, 5)["cart"] == {"a-2": 2}


def test_merging_a_user_back_into_its_anonymous_id_is_refused(worker: Worker) -> None:
    anon, user = merged_identity(worker)
    # Sent as the anonymous id, the event goes to the user, where it names the user twice.
    post(worker, [ev(anon, "identify", T0 + 6_000, props={"previous_id": user})])
    dead_lettered(worker, user, "must differ from its user_id")
    third = f"third-{uuid.uuid4().hex[:6]}"  # the user merged into a third id ...
    post(worker, [ev(third, "identify", T0 + 6_000, props={"previous_id": user})])
    wait_until(lambda: counted(worker, third, 6), timeout=60, what="the user merged on")
    # ... whose own history may not go back into the anonymous id that is part of it
    send_command(worker, third, {"command": "merge_request", "user_id": third, "into": anon})
    dead_lettered(worker, third, "makes a cycle")
    assert counted(worker, third, 6) and profile(worker, anon) is None


def test_malformed_and_unsigned_merge_records_are_dead_lettered(worker: Worker) -> None:
    _, user = merged_identity(worker)
    base = {"command": "merge", "user_id": user, "from": "x-1", "merged": [], "hops": 0}
    send_command(worker, user, {**base, "profile": "not base64!"})
    dead_lettered(worker, user, "the merged profile cannot be read")
    send_command(worker, user, {**base, "hops": 99, "profile": None})
    send_command(worker, user, {**base, "from": user, "profile": None})
    assert len(dead_lettered(worker, user, "malformed command")) >= 1
    wait_until(lambda: len(reasons(worker, user)) >= 3, timeout=90, what="both malformed")
    forged = {**base, "profile": None, "from": "forged"}
    send_command(worker, user, forged, signed=False)
    dead_lettered(worker, user, "unsigned command")
    assert counted(worker, user, 5)["cart"] == {"a-2": 2}


def test_a_withdrawal_of_the_anonymous_id_survives_the_merge(worker: Worker) -> None:
    anon, user = apart()
    post(worker, [ev(user, "consent", T0, props={"personalization": True, "email": True})])
    post(worker, [ev(anon, "consent", T0 - 1_000, props={"personalization": False})])
    post(worker, [ev(anon, "product_view", T0 + 1_000, "w-1")])
    wait_until(lambda: counted(worker, anon, 2), timeout=60, what="the anonymous history")
    wait_until(lambda: counted(worker, user, 1), timeout=60, what="the user's consent")
    post(worker, [ev(user, "identify", T0 + 2_000, props={"previous_id": anon})])
    p = wait_until(lambda: counted(worker, user, 4), timeout=60, what="the merged history")
    # the user's grant is newer, yet the anonymous withdrawal wins
    assert p["consent"]["personalization"] is False and p["consent"]["email"] is True
