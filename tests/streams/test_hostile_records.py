"""Issue 14, item 8: 10,000 hostile raw records through a real Kafka client (librdkafka) into every
input topic of a running worker, then good records. Every hostile record is found in `dead-letters`
at the exact topic/partition/offset its delivery report gave, every good event is folded, and the
worker is the same process throughout, answering `/healthz` all along.

Late events are deterministic: before the flood, one event per partition of every event topic sets
every topic-partition's stream time (`BASE`; lateness is measured per topic-partition), and the
late records are stamped 9 days before it (the bound is 7).
The item-activity topic (the fold's own output, not an input producers write) is attacked in
tests/streams/test_pipeline.py: a record that is not a score, and a score off its item's
partition, each dead-lettered."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
from aiokafka.partitioner import DefaultPartitioner

from engine.events import INPUT_TOPICS
from engine.signing import ClusterKey
from streams.admin import COMMANDS_TOPIC, DEAD_LETTERS, REKEYED_TOPIC, bootstrap_servers
from tests.conftest import CLUSTER_SECRET, Worker, http, metric, wait_until, worker_of_its_own

pytestmark = pytest.mark.integration
confluent_kafka = pytest.importorskip("confluent_kafka")

HOSTILE = 10_000
PARTITIONS = 4
DAY_MS = 86_400_000
BASE = (int(time.time()) // 60 - 60) * 60_000  # an hour ago: neither late nor future
FUTURE_TS = 4_070_908_800_000  # 2099-01-01
LATE_TS = BASE - 9 * DAY_MS  # the lateness bound is 7 days
OVERSIZE = 200 * 1024  # far over the 64 KiB an event may have, under the broker's 1 MB
# Where the hostile records go: the three input topics, the re-keyed topic, commands, catalog.
SHARES = {**dict.fromkeys(INPUT_TOPICS, 2000), REKEYED_TOPIC: 1500, COMMANDS_TOPIC: 1000}
SHARES["catalog"] = HOSTILE - sum(SHARES.values())

Payload = Callable[[random.Random, int], bytes | None]  # (rng, n) -> a record's value
Offset = tuple[str, int, int]  # topic, partition, offset
NOT_UTF8 = b"\xff\xfe\xc3(\x80\x80\xed\xa0\x80ab"


# -- hostile events (input topics and the re-keyed topic) -----------------------------------------
def _event(n: int, **fields: Any) -> dict[str, Any]:
    event = {"event_id": f"h-{n}", "type": "page_view", "user_id": f"hu-{n % 50}", "ts": BASE}
    event.update(fields)
    return {k: v for k, v in event.items() if v is not None}


def _js(data: Any) -> bytes:
    return json.dumps(data, allow_nan=True).encode()


def _mp(data: Any) -> bytes:
    return bytes(msgpack.packb(data, use_bin_type=True))


def _bad_utf8(data: dict[str, Any], name: str, pack: Callable[[Any], bytes]) -> bytes:
    """`data` packed with the text of `name` replaced by 11 bytes that are not UTF-8 (an encoded
    surrogate among them): the same length, so a msgpack string header still fits."""
    return pack({**data, name: "PLACEHOLDER"}).replace(b"PLACEHOLDER", NOT_UTF8)


def _deep_json(depth: int) -> bytes:
    return b'{"props": {"a": ' + b"[" * depth + b"]" * depth + b"}}"


def _deep_msgpack(depth: int) -> bytes:
    """An event whose props are maps nested `depth` deep."""
    nested = b"\x81\xa1a" * depth + b"\xc0"
    return _mp(_event(0, props="PLACEHOLDER")).replace(b"\xabPLACEHOLDER", nested)


EVENT_PAYLOADS: list[Payload] = [
    lambda r, n: r.randbytes(r.randint(1, 300)),
    lambda r, n: r.choice([b"", None, b"   ", b"\x00"]),
    lambda r, n: r.choice([b"[1, 2]", b"[]", b'[{"type": "page_view"}]', b"[null]"]),
    lambda r, n: _mp(r.choice([[1, 2], "event", 5, None, b"bytes", 1.5, True, [_event(n)]])),
    lambda r, n: _js(_event(n, **{r.choice(["event_id", "type", "user_id", "ts"]): None})),
    lambda r, n: _mp(_event(n, type="product_view")),  # no item_id
    lambda r, n: _js(_event(n, type=r.choice(["teleport", "", 5, ["page_view"], {"a": 1}]))),
    lambda r, n: _js(_event(n, user_id="__faust\u0000offset__")),
    lambda r, n: _mp(_event(n, user_id=r.choice(["a\x01b", "x\x7f", "\x85", "tab\tid"]))),
    lambda r, n: _js(_event(n, event_id="e\x00", item_id="i\x1b", type="product_view")),
    lambda r, n: _js(_event(n, user_id="\udc80")),  # a lone surrogate, as the JSON escape
    lambda r, n: _js(_event(n, props={"q": "\ud800x"})),
    lambda r, n: _bad_utf8(_event(n), "user_id", r.choice([_js, _mp])),
    lambda r, n: (
        b'{"event_id": "h", "type": "page_view", "user_id": "u", "ts": ' + b"9" * 5000 + b"}"
    ),
    lambda r, n: _js(_event(n, type="add_to_cart", item_id="i", quantity=10**30)),
    lambda r, n: _mp(_event(n, type="add_to_cart", item_id="i", quantity=2**64 - 1)),
    lambda r, n: _mp(_event(n, ts=r.choice([2**64 - 1, -(2**63), 1_291_190_000]))),
    lambda r, n: _js(_event(n, type="purchase", item_id="i", price=r.choice([10**30, -1]))),
    lambda r, n: (
        b'{"event_id": "h", "type": "purchase", "user_id": "u", "item_id": "i", '
        + b'"ts": %d, "price": NaN}' % BASE
    ),
    lambda r, n: _deep_json(r.choice([5, 200, 20_000])),
    lambda r, n: _deep_msgpack(r.choice([5, 2000])),
    lambda r, n: _mp(_event(n, props={"b": b"\x00\x01"})),
    lambda r, n: _mp(_event(n, props={"e": msgpack.ExtType(42, b"x")})),
    lambda r, n: _mp(_event(n, props={"t": msgpack.Timestamp(1, 0)})),
    lambda r, n: _mp(_event(n, props={1: "x", "y": 2})),
    lambda r, n: _js(_event(n, props=r.choice([[1], "x", {str(k): k for k in range(65)}]))),
    lambda r, n: _js(_event(n, props={"q": "x" * 2001}, user_id="@" + "u" * 200)),
    lambda r, n: _js(_event(n, user_id="mail@example.com")),
    lambda r, n: _js(_event(n, type="consent", props=r.choice([{}, {"email": "yes"}]))),
    lambda r, n: _js(_event(n, ts=r.choice(["yesterday", "2010-12-01T10:00:00", True]))),
    lambda r, n: _js(_event(n, type="add_to_cart", item_id="i", quantity=r.choice([0, 1.5]))),
    lambda r, n: _js(_event(n, ts=FUTURE_TS)),
    lambda r, n: _mp(_event(n, ts=FUTURE_TS - r.randint(0, DAY_MS))),
    lambda r, n: _js(_event(n, ts=LATE_TS - r.randint(0, DAY_MS))),
    lambda r, n: _mp(_event(n, ts=LATE_TS)),
    # a key given twice (a gateway reading the first value saw another user)
    lambda r, n: _js(_event(n)).replace(b'"user_id"', b'"user_id": "hu-twice", "user_id"', 1),
]
OVERSIZED: list[Payload] = [
    lambda r, n: r.randbytes(OVERSIZE),
    lambda r, n: _js(_event(n, props={"blob": "x" * OVERSIZE})),
    lambda r, n: b"{" + b" " * OVERSIZE + b"}",
]


# -- hostile catalog records and commands ---------------------------------------------------------
def _product(n: int, **fields: Any) -> dict[str, Any]:
    product = {
        "item_id": f"hp-{n}",
        "title": "A lamp",
        "url": "https://shop.example/p",
        "image_url": "https://shop.example/p.jpg",
        "price": 9.5,
        "currency": "EUR",
    }
    product.update(fields)
    return {k: v for k, v in product.items() if v is not None}


CATALOG_PAYLOADS: list[Payload] = [
    lambda r, n: r.randbytes(r.randint(1, 300)),
    lambda r, n: r.choice([b"", b"[1]", b"null"]),
    lambda r, n: None,  # a tombstone without a key (the hostile key choice is overridden)
    lambda r, n: _mp(r.choice([[1], "x", 5, None])),
    lambda r, n: _js(_product(n, **{r.choice(["item_id", "title", "price", "url"]): None})),
    lambda r, n: _js(_product(n, item_id=r.choice(["a\x00b", "__faust\u0000offset__"]))),
    lambda r, n: _js(_product(n, title="\udc80")),
    lambda r, n: _bad_utf8(_product(n), "title", r.choice([_js, _mp])),
    lambda r, n: b'{"item_id": "x", "price": ' + b"1" * 5000 + b"}",
    lambda r, n: _js(_product(n, price=r.choice([10**400, float("nan"), -1, "cheap"]))),
    lambda r, n: b'{"item_id": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
    lambda r, n: _mp(_product(n, title=r.choice([b"bytes", msgpack.ExtType(1, b"x")]))),
    lambda r, n: _mp({1: "x", **_product(n)}),
    lambda r, n: _js(_product(n, url="javascript:alert(1)", currency="EURO")),
]
COMMAND_PAYLOADS: list[Payload] = [
    lambda r, n: r.randbytes(r.randint(1, 300)),
    lambda r, n: r.choice([b"", None, b"[]", b'"erase"', b"5"]),
    lambda r, n: _mp({"command": "erase", "user_id": f"hu-{n}"}),  # msgpack: commands are JSON
    lambda r, n: _js({"command": r.choice(["nuke", "", None, ["erase"], {"a": 1}])}),
    lambda r, n: _js({"command": "erase", "user_id": r.choice([None, 5, ["u"], {"u": 1}])}),
    lambda r, n: _js({"command": "check"}),
    lambda r, n: b'{"command": "erase", "user_id": ' + b"7" * 5000 + b"}",
    lambda r, n: (
        b'{"command": "erase", "user_id": "u", "x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    ),
    lambda r, n: b'{"command": "\xff\xfe", "user_id": "u"}',
    lambda r, n: _js({"command": "item_changed"}),
    lambda r, n: _js({"command": "item_changed", "product": r.choice([None, [1], "p"])}),
    lambda r, n: _js(
        {
            "command": "item_changed",
            "product": _product(n, item_id=r.choice([[1], {"a": 1}])),
            "kinds": ["price_drop"],
            "old_price": 20.0,
        }
    ),
    lambda r, n: _js(
        {
            "command": "item_changed",
            "product": _product(n),
            "kinds": r.choice([5, None, ["teleport"]]),
            "old_price": r.choice(["x", None, 20.0]),
        }
    ),
]
EVENT_TOPICS = frozenset([*INPUT_TOPICS, REKEYED_TOPIC])
PAYLOADS = {
    **dict.fromkeys(EVENT_TOPICS, EVENT_PAYLOADS),
    COMMANDS_TOPIC: COMMAND_PAYLOADS,
    "catalog": CATALOG_PAYLOADS,
}


def hostile_key(rng: random.Random, n: int) -> bytes | None:
    """Keyed as producers key: by a user id, not at all, or with bytes that mean nothing."""
    return [f"hu-{n % 50}".encode(), None, rng.randbytes(rng.randint(1, 40))][n % 3]


def hostile_records(rng: random.Random) -> Iterator[tuple[str, bytes | None, bytes | None]]:
    """(topic, value, key) for HOSTILE records, 18 of them over 200 KB."""
    n = 0
    for topic, count in SHARES.items():
        payloads = PAYLOADS[topic]
        for i in range(count):
            n += 1
            oversized = topic in EVENT_TOPICS and i % 400 == 399
            build = OVERSIZED[i % len(OVERSIZED)] if oversized else payloads[i % len(payloads)]
            value = build(rng, n)
            key = None if value is None and topic == "catalog" else hostile_key(rng, n)
            yield topic, value, key


# -- producing through librdkafka -----------------------------------------------------------------
@dataclass
class Delivered:
    """The offsets librdkafka's delivery reports gave, and any delivery errors."""

    offsets: list[Offset] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def report(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))
        else:
            self.offsets.append((msg.topic(), msg.partition(), msg.offset()))


def produce(
    worker: Worker,
    records: Iterator[tuple[str, bytes | None, bytes | None]],
    signed: frozenset[str] = frozenset(),
) -> Delivered:
    """Produce `records`; those of the `signed` topics with the cluster secret's signature."""
    cluster = ClusterKey(CLUSTER_SECRET)
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap_servers(worker.broker_url),
            "partitioner": "murmur2_random",  # Java's (and Faust's) placement of keyed records
        }
    )
    delivered = Delivered()
    for topic, value, key in records:
        headers = None
        if topic in signed:
            headers = cluster.sign_record(topic, key, value, "test", int(time.time() * 1000))
        producer.produce(topic, value, key=key, headers=headers, on_delivery=delivered.report)
        producer.poll(0)
    assert producer.flush(120) == 0, "librdkafka did not deliver everything"
    assert not delivered.errors, delivered.errors[:5]
    return delivered


def ev(user: str, type_: str, ts: int, item: str | None = None) -> bytes:
    event = {"event_id": str(uuid.uuid4()), "type": type_, "user_id": user, "ts": ts}
    if item:
        event["item_id"] = item
    return _js(event)


# What sets each event topic's stream time (`clock_records`): a type the topic takes, an item.
CLOCK_EVENTS = {
    "clickstream": ("page_view", None),
    "cart": ("add_to_cart", "item0"),
    "social": ("like", "item0"),
    REKEYED_TOPIC: ("page_view", None),
}


def clock_records() -> list[tuple[str, bytes | None, bytes | None]]:
    """One good event per partition of every event topic, so every topic-partition's stream
    time is BASE."""
    place, parts = DefaultPartitioner(), list(range(PARTITIONS))
    users: dict[int, str] = {}
    for n in range(1000):
        users.setdefault(place(f"clock-{n}".encode(), parts, parts), f"clock-{n}")
    assert len(users) == PARTITIONS and set(CLOCK_EVENTS) == EVENT_TOPICS
    return [
        (topic, ev(u, type_, BASE, item), u.encode())
        for topic, (type_, item) in CLOCK_EVENTS.items()
        for u in users.values()
    ]


GOOD_TYPES = [("clickstream", "page_view"), ("cart", "add_to_cart"), ("social", "like")]
GOOD_PRODUCTS = 5
GOOD_ERASURES = 3


def good_catalog_and_commands() -> list[tuple[str, bytes | None, bytes | None]]:
    """Products and erasures (of users never seen) that the catalog fold and the commands path
    must still take after the flood."""
    products = [_product(n, item_id=f"good-item-{n}") for n in range(GOOD_PRODUCTS)]
    erasures = [{"command": "erase", "user_id": f"gone-{n}"} for n in range(GOOD_ERASURES)]
    return [("catalog", _js(p), p["item_id"].encode()) for p in products] + [
        (COMMANDS_TOPIC, _js(c), c["user_id"].encode()) for c in erasures
    ]


def good_records(
    rng: random.Random, users: list[str]
) -> tuple[list[tuple[str, bytes | None, bytes | None]], dict[str, Counter[str]]]:
    """15 events per user over the three topics, most keyed by user, some not keyed or keyed
    with nonsense (re-keyed by the worker), and the counts each profile must show."""
    records: list[tuple[str, bytes | None, bytes | None]] = []
    expected: dict[str, Counter[str]] = {u: Counter() for u in users}
    for n in range(15 * len(users)):
        user = users[n % len(users)]
        topic, type_ = GOOD_TYPES[rng.randrange(3)]
        value = ev(user, type_, BASE + 1000 + n, None if type_ == "page_view" else f"item{n % 9}")
        key = [user.encode(), user.encode(), None, rng.randbytes(8)][n % 4]
        records.append((topic, value, key))
        expected[user][type_] += 1
    return records, expected


# -- watching the worker and reading dead letters -------------------------------------------------
class HealthWatch(threading.Thread):
    """Polls /healthz until stopped; keeps every status (0: no answer) and the process's exit."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(daemon=True)
        self.worker = worker
        self.statuses: list[int] = []
        self.exited: int | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.statuses.append(http("GET", self.worker.base + "/healthz", key=None)[0])
            self.exited = self.worker.proc.poll()
            self.halt.wait(0.1)


def dead_letters(worker: Worker, expected: set[Offset], timeout: float) -> list[Offset]:
    """The source of every record in `dead-letters`, read until all `expected` are there and the
    topic's end is reached (so an extra one would be seen too)."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap_servers(worker.broker_url),
            "group.id": f"hostile-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.subscribe([DEAD_LETTERS])
    found: list[Offset] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == confluent_kafka.KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    if len(at_end) == PARTITIONS and expected <= set(found):
                        break
                continue
            at_end.discard(msg.partition())
            if msg.value() is not None:  # not an erasure's tombstone (streams/erasure.py)
                found.append(_source(msg.headers() or []))
    finally:
        consumer.close()
    return found


def _source(headers: list[tuple[str, bytes]]) -> Offset:
    named = dict(headers)
    return (
        named["source-topic"].decode(),
        int(named["source-partition"]),
        int(named["source-offset"]),
    )


def all_folded(worker: Worker, expected: dict[str, Counter[str]]) -> bool:
    """Whether every user's profile shows exactly the expected event counts; fails at once, with
    the end of its log, when the worker process is gone."""
    if worker.proc.poll() is not None:
        raise AssertionError(f"the worker exited:\n{worker.log.read_text()[-6000:]}")
    return all(profile_events(worker, user) == counts for user, counts in expected.items())


def profile_events(worker: Worker, user: str) -> dict[str, int] | None:
    status, _, body = http("GET", f"{worker.base}/v1/users/{user}/profile")
    return json.loads(body)["events"] if status == 200 else None


@pytest.fixture
def own_worker(tmp_path: Path) -> Iterator[Worker]:
    """A broker and worker of the test's own: the flood would disturb the session's."""
    with worker_of_its_own(tmp_path) as worker:
        yield worker


# -- the proof ---------------------------------------------------------------------------------
def test_hostile_records_are_dead_lettered_and_good_ones_folded(own_worker: Worker) -> None:
    worker, rng = own_worker, random.Random(14)
    pid = worker.proc.pid
    clocks = clock_records()
    produce(worker, iter(clocks))
    clock_users = {json.loads(v or b"")["user_id"] for _, v, _ in clocks}
    wait_until(
        lambda: all(
            sum((profile_events(worker, u) or {}).values()) == len(CLOCK_EVENTS)
            for u in clock_users
        ),
        timeout=60,
        what="every topic-partition's stream time set",
    )
    watch = HealthWatch(worker)
    watch.start()
    try:
        hostile = produce(worker, hostile_records(rng))
        users = [f"good-{n}" for n in range(20)]
        good, expected = good_records(rng, users)
        signed = frozenset({COMMANDS_TOPIC})  # the good erasures are signed, the hostile not
        good_offsets = produce(worker, iter(good + good_catalog_and_commands()), signed).offsets
        wait_until(
            lambda: all_folded(worker, expected),
            timeout=240,
            interval=1.0,
            what="every good event folded",
        )
        wait_until(
            lambda: (
                metric(worker.base, "persona_catalog_updates_total") == GOOD_PRODUCTS
                and metric(worker.base, "persona_users_erased_total") == GOOD_ERASURES
            ),
            timeout=60,
            what="the good products and erasures applied",
        )
        letters = dead_letters(worker, set(hostile.offsets), timeout=120)
    finally:
        watch.halt.set()
        watch.join(15)
    assert len(hostile.offsets) == HOSTILE
    assert Counter(t for t, _, _ in hostile.offsets) == Counter(SHARES)
    missing = set(hostile.offsets) - set(letters)
    assert not missing, f"{len(missing)} hostile records not dead-lettered: {sorted(missing)[:10]}"
    assert set(letters) == set(hostile.offsets), "a good record was dead-lettered"
    assert not set(good_offsets) & set(letters)
    assert len(letters) == HOSTILE, "a hostile record was dead-lettered twice"
    assert metric(worker.base, "persona_events_dead_lettered_total") == HOSTILE
    assert watch.statuses and set(watch.statuses) == {200}, Counter(watch.statuses)
    assert watch.exited is None and worker.proc.poll() is None and worker.proc.pid == pid
    assert "stream processing failed" not in worker.log.read_text()
