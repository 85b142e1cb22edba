"""One contract for every `engine.state_view.StateView` (as quix-streams runs its store tests over
`SUPPORTED_STORES`): the in-memory state, a worker's live Faust tables, and a reader's RocksDB
secondaries over those same tables.

Each store is written the way its rows really arrive: the memory state directly; the live tables
through Faust's own `apply_changelog_batch` (how a worker's tables take what other workers wrote,
and how they recover), its timers' work done by calling them; the reader opens the RocksDB files
that Faust store wrote and catches up with them. No broker is needed for reading; producing and
erasing go to a real embedded broker (`test_produce_and_erase_reach_the_topics`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

import msgpack
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition
from faust.types import TP

from api.testing import MemoryState
from engine import ownership
from engine.catalog import Product
from engine.clock import ManualClock
from engine.events import Event, parse, validate
from engine.pacing import Pacer
from engine.popularity import Score, rank_key
from engine.profile import Profile, apply
from engine.settings import Settings
from engine.signing import cluster_key
from engine.state_view import StateView
from models.registry import ModelSet
from persona.worker import StreamState
from streams.admin import COMMANDS_TOPIC, prepare_broker
from streams.app import PersonaStreams
from streams.broker import EmbeddedBroker
from streams.keys import alias_of, merged_of, user_key
from streams.readers import SecondaryState
from streams.signed import RecordGate, RecordSigner

SUPPORTED_STATES = ("memory", "live", "secondary")
PARTITIONS = 4
T0 = 1_300_000_000_000  # event time far behind the wall clock
DAY = 86_400_000
SECRET = "contract-cluster-secret-of-the-state-view"


def partition_of(user_id: str) -> int:
    everyone = list(range(PARTITIONS))
    return int(DefaultPartitioner()(user_id.encode(), everyone, everyone))


def profile_of(user_id: str, *items: str) -> Profile:
    profile = None
    for n, item in enumerate(items):
        event = {"event_id": f"{user_id}-{n}", "type": "product_view", "user_id": user_id}
        profile = apply(profile, validate({**event, "ts": T0 + n, "item_id": item}), None)
    assert profile is not None
    return profile


def product(item_id: str, price: float = 1.0) -> Product:
    url = f"https://s.test/{item_id}"
    return Product(item_id, item_id, url, "https://s.test/i.jpg", price, "EUR")


class Store(Protocol):
    """A StateView and how rows reach it (the contract's writer side)."""

    state: StateView

    def put_profile(self, profile: Profile) -> None: ...

    def put_product(self, item_id: str, product: Product | None) -> None: ...

    def put_merged(self, user_id: str, ids: list[str]) -> None: ...  # the user's `m:` row

    def put_alias(self, merged: str, into: str) -> None: ...  # the merged id's `a:` row

    def put_score(self, item_id: str, partition: int, score: Score) -> None: ...

    def put_event_time(self, partition: int, ts: int) -> None: ...

    def settle(self) -> None: ...  # what runs between two reads: timers, catch-ups


class MemoryStore:
    def __init__(self) -> None:
        self.memory = MemoryState(ManualClock(int(time.time() * 1000)))
        self.state: StateView = self.memory
        self.scores: dict[str, Score] = {}

    def put_profile(self, profile: Profile) -> None:
        self.memory.profiles[profile.user_id] = profile

    def put_merged(self, user_id: str, ids: list[str]) -> None:
        self.memory.merged[user_id] = ids

    def put_alias(self, merged: str, into: str) -> None:
        self.memory.aliases[merged] = into

    def put_product(self, item_id: str, product: Product | None) -> None:
        if product is None:
            self.memory.catalog.pop(item_id, None)
            self.memory.catalog_generation += 1
        else:
            self.memory.put_product(product)

    def put_score(self, item_id: str, partition: int, score: Score) -> None:
        self.scores[item_id] = score

    def put_event_time(self, partition: int, ts: int) -> None:
        self.memory.clock.observe(ts)

    def settle(self) -> None:
        ranked = sorted(self.scores, key=lambda i: rank_key(self.scores[i].pack()), reverse=True)
        self.memory.popular_items = ranked


def changelog(name: str, partition: int, key: bytes, value: bytes | None, offset: int) -> Any:
    """A changelog record as Faust's recovery hands it to `apply_changelog_batch`."""
    tp = TP(f"persona-{name}-changelog", partition)
    message = SimpleNamespace(tp=tp, offset=offset, partition=partition, key=key, value=value)
    return SimpleNamespace(message=message)


class LiveStore:
    def __init__(self, data_dir: Path) -> None:
        settings = Settings(data_dir=data_dir, partitions=PARTITIONS, cluster_secret=SECRET)
        self.streams = PersonaStreams(settings, "kafka://127.0.0.1:9")
        self.state: StateView = StreamState(self.streams, ModelSet.default())
        self.offset = 0
        # one worker alone in its group: every partition is its own (what Faust's table
        # iteration, the sample of profiles, covers)
        owned = {TP("persona-profiles-changelog", p) for p in range(PARTITIONS)}
        self.streams.app.assignor.assigned_actives = lambda: owned  # type: ignore[method-assign]
        for name in ("profiles", "catalog", "popularity", "clock"):  # every partition exists
            for p in range(PARTITIONS):
                self._write(name, p, b"contract-nothing", None)

    def _write(self, name: str, partition: int, key: bytes, value: bytes | None) -> None:
        tables = {"profiles": self.streams.profiles, "catalog": self.streams.catalog}
        tables |= {"popularity": self.streams.popularity, "clock": self.streams.clock_table}
        self.offset += 1
        record = changelog(name, partition, key, value, self.offset)
        tables[name].apply_changelog_batch([record])

    def put_profile(self, profile: Profile) -> None:
        key = user_key(profile.user_id)
        self._write("profiles", partition_of(profile.user_id), key, profile.pack())

    def put_merged(self, user_id: str, ids: list[str]) -> None:
        """The `m:` row as streams.identity writes it: the ids and their merge keys."""
        row = msgpack.packb([ids, list(range(len(ids)))])
        self._write("profiles", partition_of(user_id), merged_of(user_key(user_id)), row)

    def put_alias(self, merged: str, into: str) -> None:
        """The `a:` row as streams.identity writes it: the user, the profile sent, ids before."""
        row = msgpack.packb([into, None, []])
        self._write("profiles", partition_of(merged), alias_of(user_key(merged)), row)

    def put_product(self, item_id: str, product: Product | None) -> None:
        value = None if product is None else product.pack()
        self._write("catalog", partition_of(item_id), item_id.encode(), value)

    def put_score(self, item_id: str, partition: int, score: Score) -> None:
        self._write("popularity", partition, item_id.encode(), score.pack())

    def put_event_time(self, partition: int, ts: int) -> None:
        """What the fold does with an event of time `ts` folded in `partition`."""
        self._write("clock", partition, b"%d" % partition, b"%d" % ts)
        self.streams.clock.observe(ts)

    def settle(self) -> None:
        # the best-seller timer, due at each settle (its pacing: tests/engine/test_pacing.py)
        self.streams._popular_pacer = Pacer(0.0)
        asyncio.run(self.streams._refresh_popular())


class SecondaryStore(LiveStore):
    """A reader over the RocksDB files the live store's Faust tables wrote."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.reader = SecondaryState(data_dir, PARTITIONS, data_dir / "secondary")
        self.state = self.reader

    def settle(self) -> None:
        self.reader.refresh(popular=True)


@pytest.fixture(params=SUPPORTED_STATES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    kinds = {"memory": lambda: MemoryStore(), "live": lambda: LiveStore(tmp_path)}
    kinds["secondary"] = lambda: SecondaryStore(tmp_path)
    made = kinds[request.param]()
    yield made
    if isinstance(made, SecondaryStore):
        asyncio.run(made.reader.stop())


def test_unknown_users_and_items_read_as_none(store: Store) -> None:
    store.settle()
    assert store.state.profile("nobody") is None
    assert store.state.product("nothing") is None
    assert store.state.popular() == []


def test_a_stored_profile_reads_back_and_follows_its_changes(store: Store) -> None:
    first = profile_of("ann", "A")
    store.put_profile(first)
    store.put_profile(profile_of("bob", "B"))
    store.settle()
    assert store.state.profile("ann") == first
    assert store.state.profile("ann") == first  # a second read (memoized where there is a memo)
    later = profile_of("ann", "A", "C")
    store.put_profile(later)
    store.settle()
    assert store.state.profile("ann") == later
    assert store.state.profile("bob") == profile_of("bob", "B")


def test_the_ids_merged_into_a_user_read_back(store: Store) -> None:
    """The export lists them (api/privacy.py): an `m:` row of the user's partition."""
    store.put_profile(profile_of("ann", "A"))
    store.put_merged("ann", ["anon-1", "anon-2"])
    store.settle()
    assert store.state.merged_ids("ann") == ["anon-1", "anon-2"]
    assert store.state.merged_ids("anon-1") == [] and store.state.merged_ids("nobody") == []
    assert store.state.profile("ann") == profile_of("ann", "A")


def test_the_user_an_id_was_merged_into_reads_back(store: Store) -> None:
    """An erasure answered where only the merged id's partition is held finds it so (its queued
    exposures go: api/privacy.py): the `a:` row of the anonymous id's partition."""
    store.put_profile(profile_of("ann", "A"))
    store.put_alias("anon-1", "ann")
    store.settle()
    assert store.state.merged_into("anon-1") == "ann"
    assert store.state.merged_into("ann") is None and store.state.merged_into("nobody") is None


def test_the_sample_of_profiles_holds_the_stored_users_and_nothing_else(store: Store) -> None:
    """The preview's user picker and the churn histogram read it, in a reader too."""
    store.put_profile(profile_of("ann", "A"))
    store.put_profile(profile_of("bob", "B", "C"))
    store.put_product("A", product("A"))
    store.settle()
    sample = store.state.sample_profiles(10)
    assert sorted(p.user_id for p in sample) == ["ann", "bob"]
    assert {p.user_id: p for p in sample}["bob"] == profile_of("bob", "B", "C")
    assert len(store.state.sample_profiles(1)) == 1


def test_a_changed_product_is_read_anew_and_moves_the_generation(store: Store) -> None:
    store.put_product("A", product("A", 10.0))
    store.settle()
    assert store.state.product("A") == product("A", 10.0)
    assert store.state.product("Z") is None  # remembered as unknown where there is a memo
    generation = store.state.catalog_generation
    store.put_product("A", product("A", 8.0))
    store.put_product("Z", product("Z"))
    store.settle()
    assert store.state.catalog_generation > generation
    assert store.state.product("A") == product("A", 8.0)
    assert store.state.product("Z") == product("Z")
    generation = store.state.catalog_generation
    store.put_product("A", None)  # a tombstone: the product left the catalog
    store.settle()
    assert store.state.catalog_generation > generation
    assert store.state.product("A") is None
    assert store.state.product("Z") == product("Z")


def test_best_sellers_rank_by_score_over_every_partition(store: Store) -> None:
    store.put_score("A", 0, Score(3.0, T0))
    store.put_score("B", 3, Score(7.0, T0))
    store.put_score("C", 1, Score(5.0, T0))
    store.settle()
    assert store.state.popular() == ["B", "C", "A"]
    store.put_score("A", 0, Score(9.0, T0 + DAY))  # more, and later: A leads
    store.settle()
    assert store.state.popular() == ["A", "B", "C"]


def test_now_is_the_newest_event_time_and_never_past_the_wall_clock(store: Store) -> None:
    store.put_event_time(2, T0)
    store.settle()
    assert store.state.now_ms() == T0
    store.put_event_time(1, T0 + 5)
    store.settle()
    assert store.state.now_ms() == T0 + 5
    wall = int(time.time() * 1000)
    store.put_event_time(3, wall + DAY)  # a producer's clock ahead of ours
    store.settle()
    assert T0 + 5 <= store.state.now_ms() <= int(time.time() * 1000)


# -- produce and erase: what the Kafka-backed states send (the memory state folds at once) -------
def test_an_owner_is_known_only_once_an_assignment_names_one(store: Store) -> None:
    """`owner_url` is None both for "mine" and for "nobody is known to own it" (before the
    first assignment, a rebalance): `owner_known` tells them apart, so that a DELETE answered
    here claims no erasure from a process that holds nothing (api/privacy.py)."""
    store.settle()
    assert store.state.owner_url("ann") is None
    if isinstance(store, MemoryStore):
        assert store.state.owner_known("ann")  # a lone process: every partition its own
        return
    assert not store.state.owner_known("ann")  # no assignment yet (the worker's, or its view)
    if isinstance(store, SecondaryStore):
        own = "http://127.0.0.1:8081"
        ownership.write(store.reader.data_dir / ownership.FILE_NAME, own, [own] * PARTITIONS)
        store.reader.check_ownership()
        assert store.state.owner_known("ann") and store.state.owner_url("ann") is None


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A broker of its own: the session worker would fold what these tests produce."""
    with EmbeddedBroker(log_file=tmp_path_factory.mktemp("contract") / "broker.log") as broker:
        asyncio.run(prepare_broker(broker.url, PARTITIONS))
        yield broker


def events_of(user_id: str) -> list[Event]:
    view = {"event_id": f"{user_id}-v", "type": "product_view", "item_id": "A"}
    cart = {"event_id": f"{user_id}-c", "type": "add_to_cart", "item_id": "B"}
    return [validate({**e, "user_id": user_id, "ts": T0}) for e in (view, cart)]


async def produce_and_erase(kind: str, broker_url: str, data_dir: Path, user_id: str) -> None:
    if kind == "live":
        settings = Settings(data_dir=data_dir, partitions=PARTITIONS, cluster_secret=SECRET)
        streams = PersonaStreams(settings, broker_url)
        await streams.app.producer.start()
        state: StateView = StreamState(streams, ModelSet.default())
    else:
        key = cluster_key(SECRET)
        assert key is not None
        signer = RecordSigner(key, "reader:contract")
        reader = SecondaryState(data_dir, PARTITIONS, data_dir / "s", broker_url, signer=signer)
        state = reader
    try:
        await state.produce(events_of(user_id))
        await state.erase(user_id)
    finally:
        await (streams.app.producer.stop() if kind == "live" else reader.stop())


async def records_of(broker_url: str, user_id: str, want: int) -> list[Any]:
    """The records keyed by `user_id` on the input and command topics (up to 60 s for them)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker_url.removeprefix("kafka://"))
    await consumer.start()
    found: list[Any] = []
    try:
        topics = ("clickstream", "cart", COMMANDS_TOPIC)
        consumer.assign([TopicPartition(t, p) for t in topics for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + 60
        while len(found) < want and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            found += [r for rs in batches.values() for r in rs if r.key == user_id.encode()]
    finally:
        await consumer.stop()
    return found


@pytest.mark.parametrize("kind", ["live", "secondary"])
def test_produce_and_erase_reach_the_topics(
    kind: str, own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Events go to their input topic keyed by user id, in the user's partition (the fold's
    direct path); the erase command to the command topic, keyed the same and signed with the
    cluster secret (the fold refuses unsigned ones); both acknowledged before they return."""
    user_id = f"carl-{kind}"
    asyncio.run(produce_and_erase(kind, own_broker.url, tmp_path, user_id))
    records = asyncio.run(records_of(own_broker.url, user_id, 3))
    assert {r.partition for r in records} == {partition_of(user_id)}
    by_topic = {r.topic: r for r in records}
    assert sorted(by_topic) == sorted(["clickstream", "cart", COMMANDS_TOPIC])
    for event in events_of(user_id):
        assert parse(by_topic[event.topic()].value) == event
    command = by_topic[COMMANDS_TOPIC]
    assert json.loads(command.value) == {"command": "erase", "user_id": user_id}
    gate = RecordGate(COMMANDS_TOPIC, cluster_key(SECRET))
    assert not isinstance(gate.admit(command.key, command.value, command.headers), str)


def test_the_memory_state_folds_what_it_produces_and_forgets_what_it_erases() -> None:
    store = MemoryStore()
    events = events_of("dora")
    asyncio.run(store.state.produce(events))
    profile = store.state.profile("dora")
    assert profile is not None and profile.cart == {"B": 1} and profile.version == 2
    asyncio.run(store.state.erase("dora"))
    assert store.state.profile("dora") is None
