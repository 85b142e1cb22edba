"""The fetch loop that hands fold topics' records over a chunk at a time (streams/delivery.py
`bulk_drain`), against a scripted consumer: what it delivers, drops, records as gaps, leaves to
Faust's per-record path, and where a rebalance or a full queue stops it. A real worker folds
through it in every integration test (tests/streams/test_pipeline.py checks it is installed)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import faust
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.types import TP

from streams.delivery import (
    FETCH_WAIT,
    PAUSED_WAIT,
    FoldRecord,
    _flow_open,
    bulk_drain,
    fetch_wait,
    subscribe,
)

FOLD, OTHER = "clickstream", "catalog"


class _Consumer:
    """The consumer internals the loop uses, with the fetches it is to see scripted."""

    consumer_stopped_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, app: faust.App, fetches: list[dict[Any, list[Any]]]) -> None:
        self.fetches = fetches
        self.flowing: bool = True  # the app's flow control (False: suspended, as at a stop)
        self.generation = 1
        self.app = SimpleNamespace(
            topics=SimpleNamespace(
                _topic_name_index=app.topics._topic_name_index,  # type: ignore[attr-defined]
                acks_enabled_for=lambda topic: True,
            ),
            flow_control=SimpleNamespace(is_active=lambda: self.flowing),
            producer=SimpleNamespace(buffer=SimpleNamespace(wait_until_ebb=self._nothing)),
            monitor=SimpleNamespace(track_tp_end_offset=lambda tp, offset: None),
            sensors=SimpleNamespace(on_topic_buffer_full=lambda tp: None),
            should_stop=False,
        )
        self.app.consumer_generation_id = 1
        self._read_offset: dict[Any, int | None] = defaultdict(lambda: None)
        self.suspend_flow = asyncio.Event()
        self._stopped = asyncio.Event()
        self._commit_every = None
        self._n_acked = 0
        self._buffered_partitions: set[Any] = set()
        self.flow_active = True
        self.should_stop = False
        self.diag = SimpleNamespace(set_flag=lambda f: None, unset_flag=lambda f: None)
        self.gaps: list[tuple[Any, int, int]] = []
        self.one_by_one: list[tuple[str, int]] = []
        self.paused: list[Any] = []
        self.after_fetch: list[Any] = []  # called after each fetch is returned
        self.waits: list[float] = []  # the timeout of each call for records

    async def _nothing(self) -> None:
        return None

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        self.waits.append(timeout)
        if not self.fetches:
            self._stopped.set()
            return None, None
        records = self.fetches.pop(0)
        for hook in self.after_fetch:
            hook()
        return records, None

    def _to_message(self, tp: Any, record: Any) -> Any:
        return SimpleNamespace(
            topic=tp.topic,
            partition=tp.partition,
            offset=record.offset,
            tp=tp,
            generation_id=self.app.consumer_generation_id,
        )

    async def _add_gap(self, tp: Any, start: int, end: int) -> None:
        self.gaps.append((tp, start, end))

    async def commit(self) -> None:
        return None

    async def perform_seek(self) -> None:
        return None

    def highwater(self, tp: Any) -> int:
        return 0

    def on_buffer_full(self, tp: Any) -> None:
        assert isinstance(tp, TP)  # Faust's consumer asserts it too
        self.paused.append(tp)

    def on_buffer_drop(self, tp: Any) -> None:
        pass

    async def callback(self, message: Any) -> None:
        self.one_by_one.append((message.topic, message.offset))

    async def wait_first(self, *coros: Any) -> None:
        await coros[0]
        for coro in coros[1:]:
            coro.close()

    async def _drain_messages(self, fetcher: Any) -> None:
        raise AssertionError("Faust's own loop ran")


def _records(topic: str, partition: int, offsets: list[int]) -> tuple[Any, list[Any]]:
    """aiokafka's records as its fetch returns them."""
    records = [
        ConsumerRecord(topic, partition, o, 1_700_000_000_000 + o, 0, b"k", b"v", None, 1, 1, [])
        for o in offsets
    ]
    return TopicPartition(topic, partition), records


def _run(fetches: list[dict[Any, list[Any]]], **setup: Any) -> tuple[_Consumer, list[Any]]:
    async def go() -> tuple[_Consumer, list[Any]]:
        app = faust.App("bulk-drain-test", broker="kafka://127.0.0.1:1")
        topic = subscribe(app, [FOLD], 2)
        await app.topics._update_indices()  # type: ignore[attr-defined]  # as at a subscription
        consumer = _Consumer(app, fetches)
        for name, value in setup.items():
            setattr(consumer, name, value(consumer, topic) if callable(value) else value)
        assert bulk_drain(consumer)
        fetcher = SimpleNamespace(_stopped=asyncio.Event())
        await asyncio.wait_for(consumer._drain_messages(fetcher), 5)
        queued = []
        while not topic.queue.empty():
            queued.append(topic.queue.get_nowait())
        return consumer, queued

    return asyncio.run(go())


def test_fold_records_are_queued_in_offset_order_a_partition_at_a_time() -> None:
    p0, r0 = _records(FOLD, 0, [5, 6, 7])
    p1, r1 = _records(FOLD, 1, [2, 3])
    consumer, queued = _run([{p0: r0, p1: r1}])
    assert all(isinstance(d, FoldRecord) and d.message is d for d in queued)
    assert all(d.generation_id == consumer.app.consumer_generation_id for d in queued)
    assert [(d.message.partition, d.message.offset) for d in queued] == [
        (0, 5),
        (0, 6),
        (0, 7),
        (1, 2),
        (1, 3),
    ]
    assert consumer._read_offset[p0] == 7 and consumer._read_offset[p1] == 3
    assert consumer.one_by_one == [] and consumer.gaps == []


def test_records_below_the_read_offset_are_dropped_and_skipped_offsets_are_gaps() -> None:
    p0, r0 = _records(FOLD, 0, [3, 4, 5, 9, 10])
    read = defaultdict(lambda: None, {p0: 5})
    consumer, queued = _run([{p0: r0}], _read_offset=read)
    assert [d.message.offset for d in queued] == [5, 9, 10]  # 5 again, as Faust's loop keeps it
    assert consumer.gaps == [(p0, 6, 9)]  # the commit may pass over 6..8
    assert consumer._read_offset[p0] == 10


def test_other_topics_keep_fausts_per_record_delivery() -> None:
    fold_tp, fold_records = _records(FOLD, 0, [1])
    other_tp, other_records = _records(OTHER, 0, [7, 8])
    consumer, queued = _run([{other_tp: other_records, fold_tp: fold_records}])
    assert consumer.one_by_one == [(OTHER, 7), (OTHER, 8)]
    assert [d.message.offset for d in queued] == [1]
    assert consumer._read_offset[other_tp] == 8


def test_a_new_generation_stops_the_fetch_delivering() -> None:
    p0, r0 = _records(FOLD, 0, [1, 2])
    p1, r1 = _records(FOLD, 1, [1, 2])

    def rebalance_midway(consumer: _Consumer, topic: Any) -> Any:
        original = consumer.app.monitor.track_tp_end_offset

        def track(tp: Any, offset: int) -> None:
            if tp.partition == 1:  # a rebalance began after the first partition's chunk
                consumer.app.consumer_generation_id = 2
            original(tp, offset)

        return SimpleNamespace(track_tp_end_offset=track)

    consumer, queued = _run([{p0: r0, p1: r1}])
    assert len(queued) == 4  # undisturbed, both partitions
    consumer, queued = _run(
        [{p0: r0, p1: r1}],
        app=lambda c, t: _with(c.app, monitor=rebalance_midway(c, t)),
    )
    assert [(d.message.partition, d.message.offset) for d in queued] == [(0, 1), (0, 2)]
    assert consumer._read_offset[p1] is None  # read again after the rebalance


def test_a_full_queue_pauses_the_partition_and_a_suspended_flow_stops_the_wait() -> None:
    p0, r0 = _records(FOLD, 0, list(range(10)))

    def small_queue(consumer: _Consumer, topic: Any) -> Any:
        queue = topic.queue
        queue._maxsize = 4  # full after four records; high pressure before that
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, consumer.suspend_flow.set)  # the rebalance, while it waits
        return consumer.flow_active

    consumer, queued = _run([{p0: r0}], flow_active=small_queue)
    assert [d.message.offset for d in queued] == [0, 1, 2, 3]
    assert consumer._read_offset[p0] == 3  # the rest is read again
    assert consumer.paused and all(isinstance(tp, TP) for tp in consumer.paused)


def test_installing_twice_keeps_one_loop_and_a_consumer_without_the_internals_is_left() -> None:
    async def go() -> None:
        app = faust.App("bulk-drain-install", broker="kafka://127.0.0.1:1")
        consumer = _Consumer(app, [])
        assert bulk_drain(consumer)
        installed = consumer._drain_messages
        assert bulk_drain(consumer) and consumer._drain_messages is installed
        bare = SimpleNamespace(_drain_messages=lambda fetcher: None, app=None)
        original = bare._drain_messages
        assert not bulk_drain(bare) and bare._drain_messages is original

    asyncio.run(go())


def test_the_fetch_loop_waits_briefly_while_a_fold_partition_is_paused() -> None:
    """A call for records waits Faust's second normally; while a fold partition is paused for a
    full queue, only PAUSED_WAIT, so the partition's records are taken soon after the fold
    drains the queue and resumes it (a waiting call does not look at a resumed partition)."""
    p0, r0 = _records(FOLD, 0, [0, 1])
    p1, r1 = _records(FOLD, 1, [0])

    def pause_after_first(consumer: _Consumer, topic: Any) -> list[Any]:
        def pause() -> None:
            consumer._buffered_partitions.add(TP(FOLD, 0))  # what on_buffer_full does

        return [pause]

    consumer, queued = _run([{p0: r0}, {p1: r1}], after_fetch=pause_after_first)
    assert consumer.waits[:2] == [FETCH_WAIT, PAUSED_WAIT]
    assert [(d.message.partition, d.message.offset) for d in queued] == [(0, 0), (0, 1), (1, 0)]
    assert fetch_wait(SimpleNamespace(_buffered_partitions=set())) == FETCH_WAIT
    assert PAUSED_WAIT < FETCH_WAIT


def test_a_stopping_fetch_loop_does_not_wait_for_a_suspended_flow() -> None:
    """A stopping app's flow control stays suspended: the loop, told to stop while it waited
    there, ends without delivering (it used to wait for a resume that never came)."""
    p0, r0 = _records(FOLD, 0, [0, 1])

    def stop_after_fetch(consumer: _Consumer, topic: Any) -> list[Any]:
        consumer.flowing = False
        return [consumer._stopped.set]  # the stop, as the fetch returns

    consumer, queued = _run([{p0: r0}], after_fetch=stop_after_fetch)
    assert queued == [] and consumer._read_offset[p0] is None

    async def resumed() -> bool:
        flow = SimpleNamespace(active=False)
        flow.is_active = lambda: flow.active
        asyncio.get_running_loop().call_later(0.1, lambda: setattr(flow, "active", True))
        return await asyncio.wait_for(_flow_open(flow, lambda: False), 30)

    assert asyncio.run(resumed())  # not stopping: the resume ends the wait


def _with(namespace: Any, **changes: Any) -> Any:
    values = dict(vars(namespace))
    values.update(changes)
    return SimpleNamespace(**values)


def test_a_commit_every_n_acks_runs_beside_delivery_instead_of_holding_it_up() -> None:
    """`broker_commit_every` reached: the commit starts, and the fetched records reach the
    fold's queue while it is still running (the loop awaited it: with a commit that does not
    finish, the loop would never end and the run would fail after 5 s)."""
    p0, r0 = _records(FOLD, 0, [0, 1])
    p1, r1 = _records(FOLD, 1, [4])
    started: list[int] = []

    def hanging_commit(consumer: _Consumer, topic: Any) -> Any:
        async def commit() -> None:
            started.append(len(topic.queue._queue))
            await asyncio.Event().wait()  # never done within the run

        return commit

    consumer, queued = _run(
        [{p0: r0}, {p1: r1}], _commit_every=2, _n_acked=2, commit=hanging_commit
    )
    assert [(d.message.partition, d.message.offset) for d in queued] == [(0, 0), (0, 1), (1, 4)]
    assert len(started) == 1 and consumer._n_acked == 0  # one commit, the count restarted
