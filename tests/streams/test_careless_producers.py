"""What a careless or hostile producer can put in a Kafka record besides its value: compressed
batches mixing good and bad records (on every topic the worker reads, not only `clickstream`),
keyed tombstones, record times of -1 or far from now, keys of 1 MiB, 100 headers or one of
1 MiB, an event one byte over its 64 KiB, a well-formed command without a signature. A real
broker of the test's own, a real worker, librdkafka as the producer. Each case: what is refused
is in `dead-letters` with its reason, and the good record produced after it is folded by the
same worker process.

tests/streams/test_hostile_records.py floods values; tests/streams/test_compressed_input.py
folds each codec's good events; this file does not repeat them."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from engine.events import MAX_EVENT_BYTES
from engine.signing import ClusterKey
from streams.admin import COMMANDS_TOPIC, DEAD_LETTERS, REKEYED_TOPIC, bootstrap_servers
from tests.conftest import CLUSTER_SECRET, Worker, metric, wait_until, worker_of_its_own
from tests.streams.test_hostile_records import ev, profile_events

pytestmark = pytest.mark.integration
confluent_kafka = pytest.importorskip("confluent_kafka")

NOW = (int(time.time()) // 60 - 5) * 60_000  # minutes ago: neither late nor future
MIB = 1024 * 1024
Offset = tuple[str, int, int]


@pytest.fixture(scope="module")
def careless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    with worker_of_its_own(tmp_path_factory.mktemp("careless")) as worker:
        yield worker


def producer(worker: Worker, **config: Any) -> Any:
    return confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap_servers(worker.broker_url),
            "partitioner": "murmur2_random",
            "message.max.bytes": 4 * MIB,  # librdkafka's own bound, over the records here
            **config,
        }
    )


def send(prod: Any, records: list[dict[str, Any]]) -> list[Offset]:
    """Produce each record (confluent_kafka `produce` keyword arguments); their offsets."""
    offsets: list[Offset | None] = [None] * len(records)
    errors: list[str] = []

    def report(n: int) -> Any:
        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                offsets[n] = (msg.topic(), msg.partition(), msg.offset())

        return delivered

    for n, record in enumerate(records):
        prod.produce(on_delivery=report(n), **record)
        prod.poll(0)
    assert prod.flush(60) == 0 and not errors, errors
    assert all(o is not None for o in offsets)
    return [o for o in offsets if o is not None]


def letters(worker: Worker, expected: set[Offset], timeout: float = 90) -> dict[Offset, str]:
    """source -> reason of the `dead-letters` records, read until every `expected` one is there."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap_servers(worker.broker_url),
            "group.id": f"careless-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([DEAD_LETTERS])
    found: dict[Offset, str] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not expected <= set(found):
            msg = consumer.poll(0.5)
            if msg is None or msg.error() or msg.value() is None:
                continue
            named = dict(msg.headers() or [])
            source = (
                named["source-topic"].decode(),
                int(named["source-partition"]),
                int(named["source-offset"]),
            )
            found[source] = named["reason"].decode()
    finally:
        consumer.close()
    return found


def alive(worker: Worker) -> None:
    if worker.proc.poll() is not None:
        raise AssertionError(f"the worker exited:\n{worker.log.read_text()[-4000:]}")


def folded(worker: Worker, user: str, events: dict[str, int], timeout: float = 90) -> None:
    def done() -> bool:
        alive(worker)
        return profile_events(worker, user) == events

    wait_until(done, timeout=timeout, what=f"{user}'s events {events} folded")


def good(user: str, topic: str = "clickstream", ts: int = NOW) -> dict[str, Any]:
    return {"topic": topic, "value": ev(user, "page_view", ts), "key": user.encode()}


def uid(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:8]}"


def product(item: str) -> bytes:
    return json.dumps(
        {
            "item_id": item,
            "title": "A lamp",
            "url": "https://shop.example/p",
            "image_url": "https://shop.example/p.jpg",
            "price": 9.5,
            "currency": "EUR",
        }
    ).encode()


# -- compressed batches mixing good and bad records ----------------------------------------------
@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_a_compressed_batch_mixing_bad_records_on_every_topic(careless: Worker, codec: str) -> None:
    """One batch per topic and codec (linger), its bad records among good ones: the bad ones
    dead-lettered, the good ones folded (events, products, a signed erase)."""
    worker = careless
    prod = producer(worker, **{"compression.type": codec, "linger.ms": 200})
    users = [uid(codec) for _ in range(3)]
    erased = uid(f"{codec}-erased")
    send(prod, [good(erased)])
    folded(worker, erased, {"page_view": 1})
    items = [uid(f"{codec}-item") for _ in range(3)]
    erase = json.dumps({"command": "erase", "user_id": erased}).encode()
    signed = ClusterKey(CLUSTER_SECRET).sign_record(
        COMMANDS_TOPIC, erased.encode(), erase, "test", int(time.time() * 1000)
    )
    updates = metric(worker.base, "persona_catalog_updates_total")
    bad: list[dict[str, Any]] = []
    fine: list[dict[str, Any]] = []
    for topic in ["clickstream", "cart", "social", REKEYED_TOPIC]:
        bad += [{"topic": topic, "value": b"\x00not an event", "key": u.encode()} for u in users]
    fine += [good(u) for u in users]
    bad += [{"topic": "catalog", "value": b"{not a product", "key": i.encode()} for i in items]
    fine += [{"topic": "catalog", "value": product(i), "key": i.encode()} for i in items]
    bad += [
        {"topic": COMMANDS_TOPIC, "value": b'{"command": "nuke"}', "key": u.encode()} for u in users
    ]
    fine += [{"topic": COMMANDS_TOPIC, "value": erase, "key": erased.encode(), "headers": signed}]
    records = [*bad, *fine]  # in the same batches (linger): the good after the bad
    offsets = send(prod, records)
    bad_offsets = set(offsets[: len(bad)])
    for u in users:
        folded(worker, u, {"page_view": 1})
    wait_until(lambda: profile_events(worker, erased) is None, timeout=60, what="the erasure")
    wait_until(
        lambda: metric(worker.base, "persona_catalog_updates_total") - updates >= len(items),
        timeout=60,
        what="the products applied",
    )
    found = letters(worker, bad_offsets)
    assert bad_offsets <= set(found), sorted(bad_offsets - set(found))
    assert not set(offsets[len(bad) :]) & set(found), "a good record was dead-lettered"
    assert all(found[o] for o in bad_offsets)


# -- tombstones ---------------------------------------------------------------------------------
def test_keyed_tombstones_are_dead_lettered_but_on_the_catalog(careless: Worker) -> None:
    """A keyed record without a value on an event topic or the commands topic is no event and
    no command: dead-lettered with a reason. On `catalog` it deletes the product (documented)."""
    worker = careless
    prod = producer(worker)
    user, item = uid("tomb"), uid("tomb-item")
    send(prod, [{"topic": "catalog", "value": product(item), "key": item.encode()}])
    updates = metric(worker.base, "persona_catalog_updates_total")
    topics = ["clickstream", "cart", "social", REKEYED_TOPIC, COMMANDS_TOPIC]
    tombs = send(prod, [{"topic": t, "value": None, "key": user.encode()} for t in topics])
    send(prod, [{"topic": "catalog", "value": None, "key": item.encode()}, good(user)])
    folded(worker, user, {"page_view": 1})
    found = letters(worker, set(tombs))
    assert set(tombs) <= set(found)
    assert all(found[o] for o in tombs), found
    wait_until(
        lambda: metric(worker.base, "persona_catalog_updates_total") - updates >= 1,
        what="the catalog tombstone applied",
    )


# -- record times -------------------------------------------------------------------------------
@pytest.mark.parametrize("create_time", [-1, 1, 4_070_908_800_000])  # none, 1970, 2099
def test_the_record_time_does_not_stand_for_the_event_time(
    careless: Worker, create_time: int
) -> None:
    worker = careless
    prod = producer(worker)
    user = uid("ctime")
    send(prod, [{**good(user), "timestamp": create_time}, good(user, ts=NOW + 1000)])
    folded(worker, user, {"page_view": 2})


# -- big keys and headers -----------------------------------------------------------------------
def test_a_key_of_a_mebibyte(careless: Worker) -> None:
    """An event keyed by 1 MiB is re-keyed by its user id and folded; a product is stored under
    its item id whatever its key (engine.catalog.catalog_record); a catalog tombstone and a
    command so keyed are dead-lettered with their reasons."""
    worker = careless
    prod = producer(worker)
    user, item = uid("bigkey"), uid("bigkey-item")
    updates = metric(worker.base, "persona_catalog_updates_total")
    big = send(
        prod,
        [
            {"topic": "clickstream", "value": ev(user, "page_view", NOW), "key": b"k" * MIB},
            {"topic": "catalog", "value": product(item), "key": b"k" * MIB},
            {"topic": "catalog", "value": None, "key": b"k" * MIB},
            {"topic": COMMANDS_TOPIC, "value": b'{"command": "check"}', "key": b"k" * MIB},
        ],
    )
    after = uid("bigkey-after")
    send(prod, [good(after)])
    folded(worker, after, {"page_view": 1})
    folded(worker, user, {"page_view": 1})
    wait_until(
        lambda: metric(worker.base, "persona_catalog_updates_total") - updates >= 1,
        what="the product applied",
    )
    found = letters(worker, set(big[2:]))
    assert set(big[2:]) <= set(found), found
    assert "is not 1..128 characters" in found[big[2]]
    assert found[big[3]].startswith("unsigned command")
    assert not set(big[:2]) & set(found)


def test_a_hundred_headers_or_one_of_a_mebibyte(careless: Worker) -> None:
    worker = careless
    prod = producer(worker)
    user = uid("headers")
    many = [(f"h{n}", f"v{n}".encode()) for n in range(100)]
    huge = [("big", b"h" * MIB)]
    send(
        prod,
        [
            {**good(user), "headers": many},
            {**good(user, ts=NOW + 1), "headers": huge},
            {"topic": COMMANDS_TOPIC, "value": b"{}", "key": user.encode(), "headers": huge},
            {"topic": "catalog", "value": b"{}", "key": b"x", "headers": huge},
        ],
    )
    after = uid("headers-after")
    send(prod, [good(after)])
    folded(worker, user, {"page_view": 2})
    folded(worker, after, {"page_view": 1})


def test_a_signed_command_among_a_hundred_headers_is_applied(careless: Worker) -> None:
    worker = careless
    prod = producer(worker)
    user = uid("signed-many")
    send(prod, [good(user)])
    folded(worker, user, {"page_view": 1})
    erase = json.dumps({"command": "erase", "user_id": user}).encode()
    signed = ClusterKey(CLUSTER_SECRET).sign_record(
        COMMANDS_TOPIC, user.encode(), erase, "test", int(time.time() * 1000)
    )
    noise = [(f"h{n}", b"x" * 100) for n in range(100)]
    send(
        prod,
        [
            {
                "topic": COMMANDS_TOPIC,
                "value": erase,
                "key": user.encode(),
                "headers": noise + signed,
            }
        ],
    )
    wait_until(lambda: profile_events(worker, user) is None, timeout=60, what="the erasure")


# -- the size bound -----------------------------------------------------------------------------
def test_an_event_of_64_kib_is_folded_and_one_byte_more_dead_lettered(careless: Worker) -> None:
    worker = careless
    prod = producer(worker)
    user = uid("size")

    def padded(ts: int, size: int) -> bytes:
        body = ev(user, "page_view", ts)
        return body + b" " * (size - len(body))  # whitespace after the object: valid JSON

    at, over = padded(NOW, MAX_EVENT_BYTES), padded(NOW + 1, MAX_EVENT_BYTES + 1)
    json.loads(over)
    offsets = send(
        prod,
        [
            {"topic": "clickstream", "value": at, "key": user.encode()},
            {"topic": "clickstream", "value": over, "key": user.encode()},
            good(user, ts=NOW + 2),
        ],
    )
    folded(worker, user, {"page_view": 2})
    found = letters(worker, {offsets[1]})
    assert "larger than 65536 bytes" in found[offsets[1]]
    assert offsets[0] not in found and offsets[2] not in found


# -- unsigned commands --------------------------------------------------------------------------
def test_an_unsigned_erase_is_refused_dead_lettered_and_counted(careless: Worker) -> None:
    worker = careless
    prod = producer(worker)
    user = uid("unsigned")
    send(prod, [good(user)])
    folded(worker, user, {"page_view": 1})
    unsigned = metric(worker.base, "persona_commands_unsigned_total")
    erase = json.dumps({"command": "erase", "user_id": user}).encode()
    [refused] = send(prod, [{"topic": COMMANDS_TOPIC, "value": erase, "key": user.encode()}])
    send(prod, [good(user, ts=NOW + 1000)])
    folded(worker, user, {"page_view": 2})
    assert letters(worker, {refused})[refused].startswith("unsigned command")
    wait_until(
        lambda: metric(worker.base, "persona_commands_unsigned_total") == unsigned + 1,
        what="the unsigned command counted",
    )
