"""The fold's input positions: records that Faust's committed offsets skip are still folded.

The consumer group's committed offsets are moved past events no worker has folded (what a commit
running ahead of the state would do). A worker restarted on the same data dir must still fold
them: its stored positions say where its state ends, and the missing records are read from the
broker. Without positions these events would be lost for good.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from streams.admin import bootstrap_servers
from streams.app import (
    IN_HAND_IDLE,
    PersonaStreams,
    StreamStats,
    _delivery_pending,
    _handed_offset,
    _newest_queued,
)
from streams.broker import EmbeddedBroker
from streams.positions import (
    POSITION_PREFIX,
    GapEvent,
    GapMessage,
    is_position_key,
    parse_position,
    position_key,
)
from tests.conftest import metric, start_worker, wait_until
from tests.streams.carts import CartStream

pytestmark = pytest.mark.integration

STREAM = CartStream("gap", tuple(f"g{i}" for i in range(8)), items=3)
send, expected, carts = STREAM.send, STREAM.expected, STREAM.carts
PARTITIONS = STREAM.partitions


class AsFaust(RoundRobinPartitionAssignor):
    """The group's protocol is Faust's: a member must name the same one to join it."""

    name = "faust"


def commit_to_end(broker_url: str, topic: str) -> dict[int, int]:
    """Join the (idle) worker group alone and commit its offsets of every partition of `topic` at
    the partition's end. (The broker refuses commits from outside the group.)"""

    async def go() -> dict[int, int]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap_servers(broker_url),
            group_id="persona",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            partition_assignment_strategy=(AsFaust,),
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            for _ in range(100):  # read everything: the fetch high watermark is exact on Tansu
                await consumer.getmany(timeout_ms=300)
                if set(consumer.assignment()) != set(tps):
                    continue
                done = True
                for tp in tps:
                    hw = consumer.highwater(tp)
                    done = done and hw is not None and await consumer.position(tp) >= hw
                if done:
                    break
            ends = {tp.partition: int(consumer.highwater(tp)) for tp in tps}
            await consumer.commit({TopicPartition(topic, p): end for p, end in ends.items()})
            return ends
        finally:
            await consumer.stop()

    return asyncio.run(go())


def test_position_keys_cannot_be_user_ids() -> None:
    key = position_key("cart")
    assert is_position_key(key) and key.startswith(b"__faust")
    with pytest.raises(UnicodeDecodeError):
        key.decode("utf-8")  # user ids are UTF-8: none can equal a position key
    assert not is_position_key(b"__faust-user")
    assert parse_position(b"42") == 42 and parse_position(None) is None
    assert parse_position(b"x") is None
    assert POSITION_PREFIX in key


def test_records_behind_a_committed_offset_are_still_folded(tmp_path: Path) -> None:
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        first = start_worker(broker.url, tmp_path / "w")
        try:
            send(broker.url, 0, 240)
            wait_until(lambda: carts(first) == expected(240), timeout=60, what="240 events")
            # the worker stores its positions once their changelog writes are acknowledged
            wait_until(
                lambda: metric(first.base, "persona_events_processed_total") >= 240,
                what="counters",
            )
        finally:
            first.stop()

        send(broker.url, 240, 160)  # produced while no worker runs ...
        ends = commit_to_end(broker.url, "cart")  # ... and skipped by the group's offsets
        assert sum(ends.values()) == 400

        again = start_worker(broker.url, tmp_path / "w")
        try:
            wait_until(
                lambda: carts(again) == expected(400), timeout=60, what="the 160 skipped events"
            )
            assert metric(again.base, "persona_events_gap_read_total") == 160
            assert metric(again.base, "persona_events_duplicate_total") == 0
            send(broker.url, 400, 40)  # and the stream goes on from there
            wait_until(lambda: carts(again) == expected(440), timeout=60, what="40 more events")
        finally:
            again.stop()


def test_records_behind_a_committed_offset_are_folded_when_no_position_was_stored(
    tmp_path: Path,
) -> None:
    """A worker killed before its first position write was acknowledged leaves committed
    offsets but no position: its successor takes the state as reaching offset 0 and reads the
    skipped records. It trusted the first record delivered before and lost every one before it
    (the kill test of tests/persona/test_keep_state.py lost 52 of 100 events that way)."""
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        send(broker.url, 0, 200)
        ends = commit_to_end(broker.url, "cart")  # offsets committed, nothing folded or stored
        assert sum(ends.values()) == 200
        worker = start_worker(broker.url, tmp_path / "w")
        try:
            wait_until(lambda: carts(worker) == expected(200), timeout=60, what="200 events")
            assert metric(worker.base, "persona_events_gap_read_total") == 200
            send(broker.url, 200, 40)
            wait_until(lambda: carts(worker) == expected(240), timeout=60, what="40 more events")
        finally:
            worker.stop()


class FakeGaps:
    """Stands in for the broker read in the ordering test (the integration test above reads
    from the real broker)."""

    def __init__(self, records: dict[tuple[str, int], list[int]]) -> None:
        self.records = records
        self.asked: list[dict[tuple[str, int], tuple[int, int | None]]] = []

    async def read(
        self, ranges: dict[tuple[str, int], tuple[int, int | None]]
    ) -> dict[tuple[str, int], list[GapEvent]]:
        self.asked.append(dict(ranges))
        out = {}
        for key, (start, end) in ranges.items():
            offsets = [
                o for o in self.records.get(key, []) if o >= start and (end is None or o < end)
            ]
            out[key] = [rec(key[0], key[1], o) for o in offsets]
        return out


def rec(topic: str, partition: int, offset: int) -> GapEvent:
    return GapEvent(GapMessage(topic, partition, offset, b"u", b"{}", 0.0))


def test_in_order_skips_what_is_folded_and_fills_gaps_in_place() -> None:
    stored: dict[tuple[str, int], int | None] = {("cart", 0): 10, ("clickstream", 1): None}
    gaps = FakeGaps({("cart", 0): [12, 13, 14], ("clickstream", 1): [0, 1, 2]})
    fake = _fake_worker(stored, gaps, 1_000)
    batch = [
        rec("cart", 0, 8),  # below the stored position: already folded
        rec("cart", 0, 9),
        rec("clickstream", 1, 3),  # nothing stored: the state reaches offset 0, 0..2 skipped
        rec("cart", 0, 10),
        rec("cart", 0, 11),
        rec("cart", 0, 15),  # 12..14 were skipped on the way
        rec("clickstream", 1, 4),
    ]
    out = asyncio.run(PersonaStreams._in_order(cast(Any, fake), cast(Any, batch))).records
    got = [(e.message.topic, e.message.offset) for e in out]
    assert got == [
        ("clickstream", 0),
        ("clickstream", 1),
        ("clickstream", 2),
        ("clickstream", 3),
        ("cart", 10),
        ("cart", 11),
        ("cart", 12),
        ("cart", 13),
        ("cart", 14),
        ("cart", 15),
        ("clickstream", 4),
    ]
    assert fake.gaps.asked == [{("cart", 0): (12, 15)}, {("clickstream", 1): (0, 3)}]
    assert fake._positions == {("cart", 0): 16, ("clickstream", 1): 5}
    assert fake.stats.redelivered == 2 and fake.stats.gap_records == 6


def _fake_worker(stored: dict[tuple[str, int], int | None], gaps: FakeGaps, chunk: int) -> Any:
    """The parts of PersonaStreams that ordering and gap folding use; writes are recorded."""
    fake = SimpleNamespace(
        _positions={},
        stats=StreamStats(),
        _last_delivery={},
        gaps=gaps,
        settings=SimpleNamespace(catch_up_chunk=chunk),
        profile_db=lambda partition: {
            position_key(topic): b"%d" % at
            for (topic, p), at in stored.items()
            if p == partition and at is not None
        },
        written=[],
    )

    async def write(batch: list[GapEvent], fold_epoch: int) -> bool:
        fake.written.append([(e.message.topic, e.message.offset) for e in batch])
        return True

    fake._write_ordered = write
    fake._stored_position = lambda topic, partition: PersonaStreams._stored_position(
        cast(Any, fake), topic, partition
    )
    fake._fill_gaps = lambda out, found: PersonaStreams._fill_gaps(cast(Any, fake), out, found)
    fake._in_order = lambda batch, limit=None: PersonaStreams._in_order(
        cast(Any, fake), batch, limit
    )
    fake._fold_gap = lambda *args: PersonaStreams._fold_gap(cast(Any, fake), *args)
    return fake


def test_in_order_stops_at_a_gap_longer_than_its_limit() -> None:
    """Issue 21 item 2: a skipped range past the limit is not read into the batch."""
    fake = _fake_worker({("cart", 0): 10}, FakeGaps({("cart", 0): list(range(11, 500))}), 100)
    batch = [rec("cart", 0, 10), rec("cart", 0, 500), rec("cart", 0, 501)]
    ordered = asyncio.run(PersonaStreams._in_order(fake, cast(Any, batch), 100))
    assert [e.message.offset for e in ordered.records] == [10]
    assert ordered.gap == (("cart", 0), 11, 500)
    assert [e.message.offset for e in ordered.rest] == [500, 501]
    assert fake.gaps.asked == []  # nothing of the long range was read
    assert fake._positions == {("cart", 0): 11}  # the rest's positions have not moved


def test_small_gaps_are_put_in_while_their_sum_stays_within_the_limit() -> None:
    stored: dict[tuple[str, int], int | None] = {("cart", 0): 0, ("cart", 1): 0}
    gaps = FakeGaps({("cart", 0): [0, 1, 2], ("cart", 1): [0, 1, 2]})
    fake = _fake_worker(stored, gaps, 5)
    batch = [rec("cart", 0, 3), rec("cart", 1, 3)]  # 3 + 3 skipped: more than 5 in all
    ordered = asyncio.run(PersonaStreams._in_order(fake, cast(Any, batch), 5))
    assert [(e.message.partition, e.message.offset) for e in ordered.records] == [
        (0, 0),
        (0, 1),
        (0, 2),
        (0, 3),
    ]
    assert ordered.gap == (("cart", 1), 0, 3)


def test_a_long_gap_is_folded_in_chunks_in_its_place() -> None:
    """The records before the gap, then the gap a chunk at a time (each read bounded), then
    the record that revealed it and the rest: every record once, in offset order."""
    skipped = list(range(11, 2_511))  # 2,500 skipped records, chunks of 1,000
    fake = _fake_worker({("cart", 0): 10}, FakeGaps({("cart", 0): skipped}), 1_000)
    batch = [rec("cart", 0, 10), rec("cart", 0, 2_511), rec("cart", 0, 2_512)]
    assert asyncio.run(PersonaStreams._process_batch(fake, cast(Any, batch), 0))
    assert fake.gaps.asked == [
        {("cart", 0): (11, 1_011)},
        {("cart", 0): (1_011, 2_011)},
        {("cart", 0): (2_011, 2_511)},
    ]
    assert max(len(w) for w in fake.written) <= 1_000
    folded = [offset for written in fake.written for _, offset in written]
    assert folded == list(range(10, 2_513))
    assert fake._positions == {("cart", 0): 2_513}
    assert fake.stats.gap_records == 2_500


def test_the_audit_leaves_partitions_whose_records_are_on_their_way() -> None:
    """Issue 21 item 5: the audit reads a partition from the broker only when Faust has nothing
    of it left to deliver and the fold's queue holds none of it past the stored position; a
    worker folding a backlog had 46,000-75,000 of 150,000 pre-loaded records read twice."""
    # (handed by the Kafka client, delivered by Faust, end, seconds Faust's mark stayed put)
    assert _delivery_pending(6, 6, 10, 0.0)  # the client has 6..9 still to fetch
    assert _delivery_pending(None, 0, 10, 60.0)  # no position yet: it is about to fetch
    assert not _delivery_pending(None, 0, 0, 60.0)  # an empty partition
    assert not _delivery_pending(10, 10, 10, 0.0)  # all delivered: the partition is idle
    assert not _delivery_pending(10, 11, 10, 0.0)  # sought to the end (committed ran ahead)
    assert not _delivery_pending(3, 3, None, 0.0)  # its end unknown: audit
    # handed to Faust, not delivered yet: on their way while Faust's deliveries move ...
    assert _delivery_pending(10, 4, 10, IN_HAND_IDLE - 1)
    # ... dropped once they have stayed put that long (Faust resuming a stream drops fetched
    # records and seeks back only partitions with a committed offset above 0)
    assert not _delivery_pending(10, 4, 10, IN_HAND_IDLE)
    assert not _delivery_pending(500, 0, 500, IN_HAND_IDLE + 1)
    queue: asyncio.Queue[GapEvent] = asyncio.Queue()
    for topic, partition, offset in [
        ("cart", 0, 7),
        ("cart", 0, 9),
        ("cart", 1, 3),
        ("cart", 0, 8),
    ]:
        queue.put_nowait(rec(topic, partition, offset))
    assert _newest_queued(queue) == {("cart", 0): 9, ("cart", 1): 3}
    assert queue.qsize() == 4  # a snapshot: nothing taken
    assert _newest_queued(asyncio.Queue()) == {}


def test_the_handed_offset_is_the_kafka_clients_position(tmp_path: Path) -> None:
    """What the audit reads of Faust's aiokafka client: its position of a partition (the next
    offset it hands Faust), None before it has one, Faust's own figure where it cannot tell."""

    async def go(url: str) -> None:
        client = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(url))
        await client.start()
        try:
            faust_side = SimpleNamespace(_thread=SimpleNamespace(_ensure_consumer=lambda: client))
            tp, other = TopicPartition("cart", 0), TopicPartition("cart", 1)
            client.assign([tp])
            assert _handed_offset(faust_side, tp, 7) is None  # awaiting its first position
            client.seek(tp, 42)
            assert _handed_offset(faust_side, tp, 7) == 42
            assert _handed_offset(faust_side, other, 7) == 7  # not assigned to this client
            assert _handed_offset(SimpleNamespace(), tp, 7) == 7  # no client
        finally:
            # aiokafka 0.14's group-less coordinator lets the cancellation of its own task out
            # of stop() after a manual assignment; the client is stopped all the same
            with contextlib.suppress(asyncio.CancelledError):
                await client.stop()

    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        send(broker.url, 0, 12)  # the topic exists, with records in both partitions
        asyncio.run(go(broker.url))
