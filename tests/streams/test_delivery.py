"""The fold's delivery path (streams/delivery.py): batching, the inline fast path of the fetch
loop's wait_first, and which records a batch keeps and acknowledges."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from mode.services import WaitResults

from streams.delivery import Delivered, Fold, Turns, fast_wait_first, take


def test_take_returns_what_is_queued_up_to_the_maximum() -> None:
    async def go() -> tuple[list[Any], list[Any]]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for i in range(5):
            queue.put_nowait(i)
        first = await take(queue, 3, within=1.0)
        rest = await take(queue, 3, within=1.0)
        return first, rest

    first, rest = asyncio.run(go())
    assert first == [0, 1, 2]
    assert rest == [3, 4]


def test_take_keeps_collecting_while_records_arrive_and_stops_when_quiet() -> None:
    async def go() -> list[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def trickle() -> None:
            for i in range(5):
                queue.put_nowait(i)
                await asyncio.sleep(0.0005)

        feeder = asyncio.create_task(trickle())
        batch = await take(queue, 100, within=1.0)
        await feeder
        return batch

    assert asyncio.run(go()) == [0, 1, 2, 3, 4]


def test_take_waits_for_the_first_record() -> None:
    async def go() -> list[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        asyncio.get_running_loop().call_later(0.05, queue.put_nowait, "late")
        return await take(queue, 10, within=0.01)

    assert asyncio.run(go()) == ["late"]


class _Consumer:
    """The parts of a mode Service that fast_wait_first uses, with the original recorded."""

    def __init__(self) -> None:
        self._stopped = asyncio.Event()
        self._crashed = asyncio.Event()
        self.original_calls = 0

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        self.original_calls += 1
        tasks = [asyncio.ensure_future(c) for c in coros]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        won = [t for t in tasks if t in done]
        return WaitResults([coros[tasks.index(t)] for t in won], [t.result() for t in won], False)


def test_turns_give_the_event_loop_a_turn_after_every_slice() -> None:
    """A batch folded synchronously item by item still lets other tasks (HTTP) run every
    `every` items: here a task that notes how far the fold got each time it runs."""

    async def go() -> tuple[list[int], list[int]]:
        folded: list[int] = []
        seen: list[int] = []

        async def other() -> None:
            while len(folded) < 1000:
                seen.append(len(folded))
                await asyncio.sleep(0)

        task = asyncio.create_task(other())
        await asyncio.sleep(0)
        turns = Turns(100, clock=lambda: 0.0)  # time stands still
        for item in range(1000):
            folded.append(item)  # synchronous work between turns, as the fold's
            if turns.due():
                await asyncio.sleep(0)
        await task
        return folded, seen

    folded, seen = asyncio.run(go())
    assert folded == list(range(1000))
    assert seen == list(range(0, 1000, 100))  # a turn after each slice of 100, none within


def test_turns_come_sooner_when_the_time_slice_is_spent() -> None:
    """Costly items (a clock that moves 1 s per look) get a turn every 2 s of them."""

    async def go() -> list[int]:
        folded: list[int] = []
        seen: list[int] = []
        now = [0.0]

        def clock() -> float:
            now[0] += 1.0
            return now[0]

        async def other() -> None:
            while len(folded) < 10:
                seen.append(len(folded))
                await asyncio.sleep(0)

        task = asyncio.create_task(other())
        await asyncio.sleep(0)
        turns = Turns(100, seconds=2.0, clock=clock)
        for item in range(10):
            folded.append(item)
            if turns.due():
                await asyncio.sleep(0)
        await task
        return seen

    assert asyncio.run(go()) == [0, 2, 4, 6, 8]  # every second item: 2 s of clock


def test_fast_wait_first_runs_a_delivery_that_does_not_wait_inline() -> None:
    async def go() -> tuple[WaitResults, int, bool]:
        consumer = _Consumer()
        fast_wait_first(consumer)
        suspend = asyncio.Event()

        async def deliver() -> str:
            return "delivered"

        result = await consumer.wait_first(deliver(), suspend.wait())
        return result, consumer.original_calls, suspend.is_set()

    result, calls, _ = asyncio.run(go())
    assert calls == 0
    assert result.results == ["delivered"]
    assert not result.stopped


def test_an_inline_delivery_leaves_no_cyclic_garbage() -> None:
    """Each record goes through here: garbage that only the cycle collector frees made its
    young-generation collections take up to ~100 ms in the worker."""
    import gc

    async def go() -> int:
        consumer = _Consumer()
        fast_wait_first(consumer)
        suspend = asyncio.Event()

        async def deliver() -> str:
            return "delivered"

        for _ in range(100):
            await consumer.wait_first(deliver(), suspend.wait())
        gc.disable()
        try:
            gc.collect()
            for _ in range(100):
                await consumer.wait_first(deliver(), suspend.wait())
            return gc.collect()  # what only the collector could free
        finally:
            gc.enable()

    assert asyncio.run(go()) == 0


def test_fast_wait_first_hands_a_waiting_delivery_to_the_original() -> None:
    async def go() -> tuple[WaitResults, int, list[str]]:
        consumer = _Consumer()
        fast_wait_first(consumer)
        suspend = asyncio.Event()
        gate = asyncio.get_running_loop().create_future()
        steps: list[str] = []

        async def deliver() -> str:
            steps.append("start")
            value = await gate
            steps.append("resumed")
            await asyncio.sleep(0)
            return f"delivered {value}"

        asyncio.get_running_loop().call_later(0.01, gate.set_result, 42)
        result = await consumer.wait_first(deliver(), suspend.wait())
        return result, consumer.original_calls, steps

    result, calls, steps = asyncio.run(go())
    assert calls == 1
    assert result.results == ["delivered 42"]
    assert steps == ["start", "resumed"]


def test_fast_wait_first_lets_a_suspended_flow_interrupt_a_waiting_delivery() -> None:
    async def go() -> tuple[WaitResults, bool]:
        consumer = _Consumer()
        fast_wait_first(consumer)
        suspend = asyncio.Event()
        cancelled = False

        async def deliver() -> None:
            nonlocal cancelled
            try:
                await asyncio.Event().wait()  # blocked, as on stopped flow control
            except asyncio.CancelledError:
                cancelled = True
                raise

        asyncio.get_running_loop().call_later(0.01, suspend.set)
        result = await consumer.wait_first(deliver(), suspend.wait())
        await asyncio.sleep(0)
        return result, cancelled

    result, cancelled = asyncio.run(go())
    assert result.results == [True]  # suspend_flow.wait() won
    assert cancelled


def test_fast_wait_first_raises_what_the_delivery_raises() -> None:
    async def go() -> None:
        consumer = _Consumer()
        fast_wait_first(consumer)

        async def deliver() -> None:
            raise ValueError("bad record")

        await consumer.wait_first(deliver(), asyncio.Event().wait())

    try:
        asyncio.run(go())
    except ValueError as exc:
        assert str(exc) == "bad record"
    else:
        raise AssertionError("the delivery's error was swallowed")


def _message(offset: int, generation: int) -> Any:
    return SimpleNamespace(offset=offset, generation_id=generation, tracked=False)


class _App:
    def __init__(self, generation: int, active: bool = True) -> None:
        self.consumer_generation_id = generation
        self.flow_control = SimpleNamespace(is_active=lambda: active)
        self.tracked: list[int] = []
        self.acked: list[int] = []
        self.consumer = SimpleNamespace(
            track_message=lambda m: self.tracked.append(m.offset),
            ack=lambda m: self.acked.append(m.offset),
        )
        self.revoked: list[Any] = []
        self.on_partitions_revoked = SimpleNamespace(connect=self.revoked.append)


def test_fold_keeps_records_of_the_current_generation_and_tracks_them_once() -> None:
    """A Faust without a set of unacknowledged messages: each kept record is tracked, once."""
    app = _App(generation=2)
    fold = Fold(app)  # type: ignore[arg-type]
    batch = [Delivered(_message(i, 2 if i != 1 else 1)) for i in range(4)]
    kept = fold.accept(batch)
    assert [r.message.offset for r in kept] == [0, 2, 3]
    assert app.tracked == [0, 2, 3] and kept.pending is None
    fold.accept(kept)
    assert app.tracked == [0, 2, 3]  # already tracked
    fold.ack(kept)
    assert app.acked == [0, 2, 3]


def test_an_accepted_batch_is_pending_in_faust_s_set_until_acked() -> None:
    """With Faust's set of unacknowledged messages, a batch is one mark there: what a graceful
    stop and a rebalance wait for (`wait_empty`) until the batch is acked; records of an older
    generation are not kept; a batch never acked (not written) leaves with its records."""
    import gc

    async def go() -> None:
        app = _faust_consumer("pending")
        consumer = app.consumer
        messages = _real_messages()
        for message in messages:
            message.generation_id = app.consumer_generation_id
        messages[2].generation_id = app.consumer_generation_id - 1  # fetched before a rebalance
        fold = Fold(app)
        app.flow_control.resume()
        kept = fold.accept([Delivered(m) for m in messages])
        assert len(kept) == len(messages) - 1 and messages[2] not in [r.message for r in kept]
        assert list(consumer._unacked_messages) == [kept.pending]
        assert kept.pending is not None and not kept.pending.acked
        consumer._clean_unacked_messages()  # wait_empty's sweep keeps what is not acked
        assert len(consumer._unacked_messages) == 1
        fold.ack(kept)
        assert kept.pending.acked and len(consumer._unacked_messages) == 0
        dropped = fold.accept([Delivered(m) for m in messages[:3]])
        assert len(consumer._unacked_messages) == 1
        del dropped  # a batch not written is read again: nothing waits for it
        gc.collect()
        assert len(consumer._unacked_messages) == 0

    asyncio.run(go())


def test_fold_drops_everything_while_flow_control_is_stopped() -> None:
    app = _App(generation=1, active=False)
    fold = Fold(app)  # type: ignore[arg-type]
    assert fold.accept([Delivered(_message(0, 1))]) == []
    assert app.tracked == []


def test_a_batch_is_current_until_a_rebalance_begins() -> None:
    app = _App(generation=1)
    fold = Fold(app)  # type: ignore[arg-type]
    epoch = fold.epoch
    assert fold.current(epoch)
    (on_revoked,) = app.revoked
    asyncio.run(on_revoked(app, set()))  # partitions revoked, even under the same generation
    assert not fold.current(epoch)
    assert fold.current(fold.epoch)
    app.flow_control = SimpleNamespace(is_active=lambda: False)
    assert not fold.current(fold.epoch)


def _faust_consumer(name: str) -> Any:
    """A real (unstarted) Faust consumer whose conductor acks `clickstream` and `cart` only."""
    import faust

    app = faust.App(name, broker="kafka://127.0.0.1:1", web_enabled=False)
    app.topics._acking_topics.update({"clickstream", "cart"})
    return app


def _real_messages() -> list[Any]:
    from faust.types import TP
    from faust.types.tuples import ConsumerMessage

    def m(topic: str, partition: int, offset: int) -> Any:
        tp = TP(topic, partition)
        return ConsumerMessage(topic, partition, offset, 0.0, 0, [], b"k", b"v", None, 1, 1, tp)

    return [
        *(m("clickstream", 0, o) for o in range(0, 6)),  # 0 and 1 lie below the committed 2
        *(m("cart", 1, o) for o in (7, 8, 8, 9)),  # offset 8 twice (a redelivered record)
        m("social", 0, 3),  # a topic the conductor does not ack
        *(m("clickstream", 1, o) for o in (4, 5)),
    ]


def test_a_batch_ack_leaves_faust_s_bookkeeping_as_acking_each_record_does() -> None:
    from faust.types import TP

    def run(bulk: bool) -> tuple[Any, ...]:
        async def go() -> tuple[Any, ...]:
            app = _faust_consumer(f"ack-{bulk}")
            consumer = app.consumer
            messages = _real_messages()
            for message in messages:
                consumer.track_message(message)
            consumer._committed_offset[TP("clickstream", 0)] = 2
            messages[3].acked = True  # acked already (by a path other than the fold's)
            waiter = consumer._waiting_for_ack = asyncio.get_running_loop().create_future()
            batch = [Delivered(m) for m in messages]
            if bulk:

                def per_record(message: Any) -> None:
                    raise AssertionError("the batch path acks without Consumer.ack")

                consumer.ack = per_record
                Fold(app).ack(batch)
            else:
                for record in batch:
                    consumer.ack(record.message)
            return (
                {tp: list(v) for tp, v in consumer._acked.items()},
                {tp: set(v) for tp, v in consumer._acked_index.items()},
                consumer._n_acked,
                # records tracked one by one (a Faust without the set's Pending mark)
                sorted((m.topic, m.partition, m.offset) for m in consumer._unacked_messages),
                [m.acked for m in messages],
                waiter.done(),
            )

        return asyncio.run(go())

    bulk, each = run(bulk=True), run(bulk=False)
    assert bulk == each
    acked, _, n, unacked, flags, woken = bulk
    assert acked[TP("cart", 1)] == [7, 8, 9] and n == 8 and woken and all(flags)
    # below the committed offset, acked before, a second copy of an offset and the unacked
    # topic's stay tracked (as Faust leaves them)
    assert unacked == [
        ("cart", 1, 8),
        ("clickstream", 0, 0),
        ("clickstream", 0, 1),
        ("clickstream", 0, 3),
        ("social", 0, 3),
    ]


# -- bulk queue moves (_put_room, _get_queued) against mode's per-item calls -----------------


def _queue(maxsize: int) -> Any:
    from mode.utils.queues import FlowControlEvent, ThrowableQueue

    flow = FlowControlEvent()
    flow.resume()
    return ThrowableQueue(maxsize=maxsize, flow_control=flow)


class _Calls:
    """A partition's pressure callbacks, counting their calls (one object per partition, as the
    queue tells pending drops apart by identity)."""

    def __init__(self, log: list[str], name: str) -> None:
        self.high = lambda: log.append(f"high {name}")
        self.drop = lambda: log.append(f"drop {name}")


def _state(queue: Any) -> tuple[Any, ...]:
    return (
        list(queue._queue),
        queue._unfinished_tasks,
        len(queue._pending_pressure_drop_callbacks),
    )


def test_a_bulk_put_leaves_the_queue_as_a_put_per_item_does() -> None:
    """Across the high-water size (maxsize 20: high at 16): the same items queued, the same
    pressure callback registered and the partition's `high` called once, at the same item."""
    from streams.delivery import _put_room

    for queued_first, count in ((0, 10), (0, 16), (0, 17), (10, 10), (15, 3), (16, 2), (5, 30)):
        logs: tuple[list[str], list[str]] = ([], [])
        queues = (_queue(20), _queue(20))
        calls = (_Calls(logs[0], "p"), _Calls(logs[1], "p"))
        for q, c in zip(queues, calls, strict=True):
            for i in range(queued_first):
                q.put_nowait_enhanced(-i, on_pressure_high=c.high, on_pressure_drop=c.drop)
        items = list(range(count))
        # per item: as far as there is room, as the fetch loop does before waiting for room
        room = 20 - queued_first
        for item in items[:room]:
            queues[0].put_nowait_enhanced(
                item, on_pressure_high=calls[0].high, on_pressure_drop=calls[0].drop
            )
        put = _put_room(queues[1], items, calls[1].high, calls[1].drop)
        assert put == min(room, count)
        assert _state(queues[1]) == _state(queues[0]), (queued_first, count)
        assert logs[1] == logs[0], (queued_first, count)


def test_a_bulk_put_wakes_a_waiting_taker() -> None:
    from streams.delivery import _put_room

    async def main() -> list[Any]:
        queue = _queue(100)
        waiting = asyncio.ensure_future(take(queue, 10, within=0.0))
        await asyncio.sleep(0)
        calls = _Calls([], "p")
        assert _put_room(queue, [1, 2, 3], calls.high, calls.drop) == 3
        return await asyncio.wait_for(waiting, 1.0)

    assert asyncio.run(main()) == [1, 2, 3]


def test_a_bulk_take_ends_pressure_as_a_get_per_item_does() -> None:
    """Two partitions paused at the high-water size (maxsize 20: drop at 8 or fewer queued):
    taking in bulk calls their drop callbacks where taking item by item would, and leaves the
    same items queued."""
    for take_n in (1, 5, 12, 13, 14, 16, 20):
        logs: tuple[list[str], list[str]] = ([], [])
        queues = (_queue(20), _queue(20))
        for q, log in zip(queues, logs, strict=True):
            a, b = _Calls(log, "a"), _Calls(log, "b")
            for i in range(10):
                q.put_nowait_enhanced(i, on_pressure_high=a.high, on_pressure_drop=a.drop)
            for i in range(10, 20):
                q.put_nowait_enhanced(i, on_pressure_high=b.high, on_pressure_drop=b.drop)
        one_by_one = [queues[0].get_nowait() for _ in range(take_n)]
        bulk: list[Any] = []
        from streams.delivery import _get_queued

        _get_queued(queues[1], bulk, take_n)
        assert bulk == one_by_one
        assert _state(queues[1]) == _state(queues[0]), take_n
        assert sorted(logs[1]) == sorted(logs[0]), take_n  # the set pops in its own order


def test_a_bulk_take_wakes_a_waiting_putter_and_raises_a_thrown_error() -> None:
    async def main() -> None:
        queue = _queue(3)
        for item in (1, 2, 3):
            queue.put_nowait(item)
        putters = [asyncio.ensure_future(queue.put(item)) for item in (4, 5)]
        await asyncio.sleep(0)
        assert not any(p.done() for p in putters)  # full
        # the first item is got as ever (waking one putter), the next two in bulk
        assert await take(queue, 3, within=0.0) == [1, 2, 3]
        await asyncio.wait_for(asyncio.gather(*putters), 1.0)  # both woken
        assert list(queue._queue) == [4, 5]
        await queue.throw(RuntimeError("broken"))
        try:
            await take(queue, 5, within=0.0)
        except RuntimeError as exc:
            assert str(exc) == "broken"
        else:
            raise AssertionError("the thrown error was not raised")

    asyncio.run(main())


def _unread_reference(
    records: list[Any], last: int | None, acks: bool
) -> tuple[list[Any], list[tuple[int, int]]]:
    """Faust's fetch loop's decisions, record by record (what `_unread` must answer)."""
    kept: list[Any] = []
    gaps: list[tuple[int, int]] = []
    for record in records:
        offset = record.offset
        if last is not None and offset < last:
            continue
        if acks and last and offset - last > 1:
            gaps.append((last + 1, offset))
        kept.append(record)
        last = offset
    return kept, gaps


def test_unread_answers_as_the_per_record_loop_for_every_chunk_shape() -> None:
    import random

    from streams.delivery import _unread

    rng = random.Random(21)
    shapes = {"consecutive": 0, "other": 0}
    for _ in range(3000):
        start = rng.randrange(0, 40)
        n = rng.randrange(0, 12)
        kind = rng.random()
        if kind < 0.5:  # consecutive, the common case
            offsets = list(range(start, start + n))
        elif kind < 0.8:  # gaps (compaction) or a repeat
            offsets = sorted(rng.sample(range(start, start + 3 * n + 1), n))
        else:  # anything, out of order included (a consecutive span with a swap among them)
            offsets = [rng.randrange(0, 50) for _ in range(n)]
        records = [SimpleNamespace(offset=o) for o in offsets]
        last = rng.choice([None, 0, 1, start - 1, start, start + 1, rng.randrange(0, 60)])
        acks = rng.random() < 0.7
        if offsets == list(range(start, start + n)):
            shapes["consecutive"] += 1
        else:
            shapes["other"] += 1
        got = _unread(records, last, acks)
        assert (list(got[0]), got[1]) == _unread_reference(records, last, acks), (
            offsets,
            last,
            acks,
        )
    assert min(shapes.values()) > 500


def test_unread_keeps_a_consecutive_chunk_and_names_the_gap_before_it() -> None:
    from streams.delivery import _unread

    records = [SimpleNamespace(offset=o) for o in (10, 11, 12)]
    assert _unread(records, 5, True) == (records, [(6, 10)])
    assert _unread(records, 5, False) == (records, [])
    assert _unread(records, 10, True) == (records, [])  # the same offset again is kept
    assert _unread(records, 11, True) == (records[1:], [])
    swapped = [SimpleNamespace(offset=o) for o in (5, 7, 6, 8)]  # its ends span 4 offsets
    assert _unread(swapped, None, True) == ([swapped[0], swapped[1], swapped[3]], [(6, 7)])


def _consumer_record(timestamp: int | None) -> Any:
    from aiokafka.structs import ConsumerRecord

    return ConsumerRecord(
        "clickstream", 2, 41, timestamp, 0, b"u-1", b"value", b"crc", 3, 5, [("h", b"v")]
    )


def test_a_fold_record_is_the_message_faust_would_make_of_the_fetched_record() -> None:
    """FoldRecord replaces Faust's Message (and the wrapper and fold record around it): every
    slot Faust's `_to_message` sets must read the same, so Faust's bookkeeping, the tables'
    current event and dead letters see what they saw."""
    from faust.transport.drivers.aiokafka import Consumer
    from faust.types import TP
    from faust.types.tuples import Message

    from engine.fold import Record
    from streams.app import _record
    from streams.delivery import FoldRecord

    tp = TP("clickstream", 2)
    for timestamp in (1_700_000_000_123, None):
        record = _consumer_record(timestamp)
        faust_consumer = SimpleNamespace(app=SimpleNamespace(consumer_generation_id=7))
        expected = Consumer._to_message(cast(Any, faust_consumer), tp, record)
        fold_record = FoldRecord.fetched(tp, record, 7)
        assert isinstance(fold_record, Message)
        slots = [s for s in Message.__slots__ if s != "__weakref__"]
        assert slots, "Faust's Message has no slots to compare"
        unset = object()  # a slot Faust leaves unset (span) must be unset here too
        for slot in slots:
            assert getattr(fold_record, slot, unset) == getattr(expected, slot, unset), slot
        assert fold_record.message is fold_record  # the carrier of itself (event_context)
        # and the pure fold's record, as the adapter made it from a Faust message
        assert _record(expected) == Record(
            fold_record.topic,
            fold_record.partition,
            fold_record.offset,
            fold_record.key,
            fold_record.value,
            fold_record.timestamp_ms,
        )
