"""A lean delivery path from Faust's consumer to the events fold.

Faust hands every record to an agent through its stream machinery: an Event object, a pass through
the event loop (`sleep(0)`), processors, sensors and one `ack` coroutine per record; its fetch
loop also wraps each delivery in `wait_first`, which starts four tasks and cancels three of them.
Profiled at full speed, that hand-off cost the worker more than the fold itself.

The fold keeps everything Faust is there for (the consumer group, partition assignment, the
tables with their changelogs, standbys and recovery, offset commits) and takes the records
straight from the conductor instead:

- `FoldTopic` is a topic whose "event" is a `Delivered` (the record, nothing decoded), put on
  the channel's flow-controlled queue as before (full queues still pause fetching, rebalances
  still clear it);
- `take` waits for the first record, then collects up to a maximum while records keep
  arriving, for at most a short window;
- `Fold.accept` drops records fetched before the current rebalance (Faust's generation check)
  and marks the rest as pending, `Fold.ack` acknowledges them once their batch is written, so
  commits and a graceful stop behave as with an agent;
- `fast_wait_first` lets the fetch loop run a delivery that completes without waiting (nearly
  all of them) inline, and falls back to `wait_first` for one that has to wait;
- `Turns` gives the event loop a turn every few records of a batch, so HTTP and Faust's own
  tasks run while a backlog is folded;
- `bulk_drain` replaces the consumer's fetch loop: the records of a topic-partition whose only
  subscriber is a `FoldTopic` go onto its queue a fetched chunk at a time (one flow-control,
  producer-buffer and high-water check per chunk instead of per record, no coroutine per
  record), in offset order, a partition's chunk after another's; every other topic-partition
  goes through Faust's own per-record delivery, as before (issue 21 item 5).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import types
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Protocol, TypeVar, cast

import faust
import faust.types.tuples as faust_tuples
from aiokafka.errors import UnsupportedCodecError
from faust.types import TP, Message
from faust.types.tuples import ConsumerMessage
from mode.services import WaitResults
from mode.utils.futures import notify
from mode.utils.queues import FlowControlQueue

from streams.corrupt_batches import CorruptBatch, passed_over, raised_in

# Faust's lock around the ack bookkeeping (faust-streaming 0.15.3); without it, per-record acks
_ACK_LOCK: Any = getattr(faust_tuples, "ack_lock", None)

T = TypeVar("T")
log = logging.getLogger("persona.delivery")
FETCHING = "FETCHING"  # the consumer's diagnostic flag while its fetch loop reads (Faust's name)


class Carrier(Protocol):
    """Anything carrying a Kafka record: a Faust event or a `Delivered`."""

    @property
    def message(self) -> Message: ...


def record_ms(msg: Message) -> int | None:
    """The record time (epoch ms) of a consumed record, for a copy the worker produces of it
    (re-keyed, forwarded to a merged id's user): the erasure fence compares a record's time with
    the erasure's, so a copy stamped when it was made counted an event produced before an
    erasure as produced after it, and re-created the erased profile. None without a time."""
    seconds = msg.timestamp
    return round(seconds * 1000) if seconds else None


class Delivered:
    """One record as the fold sees it. Shaped like a Faust event (`.message`), so a table write
    made in its `event_context` lands in the record's partition."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, message: Message) -> None:
        self.message = message


class FoldRecord(ConsumerMessage):
    """One fetched record of a fold topic, as everything after the fetch takes it: Faust's
    consumer message (its ack bookkeeping, the tables' current event, dead letters), the event
    carrying it (`.message` is the record itself, so a table write in its `event_context` lands
    in its partition) and the pure fold's record (`engine.fold.Incoming`: `timestamp_ms`). One
    object a record instead of three (a Faust message, a `Delivered` around it and an
    `engine.fold.Record` made for the fold): ~0.35 us against ~1.2-1.7 us a record, timed
    alone (issue 21 item 5). Every slot of Faust's `Message` is set as its consumer's
    `_to_message` sets them, so code reading any of them finds the same."""

    __slots__ = ("timestamp_ms",)
    timestamp_ms: int  # the record time, epoch ms (0 without one)

    @classmethod
    def fetched(cls, tp: Any, record: Any, generation: int | None) -> FoldRecord:
        """The record `record` (aiokafka's `ConsumerRecord`) of `tp` fetched in consumer
        generation `generation`: what Faust's `Consumer._to_message` makes of it."""
        self = cls.__new__(cls)
        ts = record.timestamp
        self.topic = record.topic
        self.partition = record.partition
        self.offset = record.offset
        self.timestamp = cast(float, None) if ts is None else ts / 1000.0
        self.timestamp_ms = ts or 0
        self.timestamp_type = record.timestamp_type
        self.headers = record.headers
        self.key = record.key
        self.value = record.value
        self.checksum = record.checksum
        self.serialized_key_size = record.serialized_key_size
        self.serialized_value_size = record.serialized_value_size
        self.acked = False
        self.refcount = 0
        self.tp = tp
        self.tracked = not self.use_tracking
        self.time_in = self.time_out = self.time_total = None
        self.generation_id = generation
        return self

    @property
    def message(self) -> FoldRecord:
        return self


async def _deliver_raw(message: Message, *, propagate: bool = False) -> Delivered:
    return Delivered(message)


class FoldTopic(faust.Topic):
    """A topic delivering `Delivered` records instead of decoded Faust events (keys and values
    stay bytes: the fold parses them itself)."""

    def _compile_decode(self) -> None:
        # Faust compiles the schema's decoder into the instance's `decode`.
        self.decode = _deliver_raw  # type: ignore[assignment]


def subscribe(app: faust.App, topics: list[str], partitions: int) -> FoldTopic:
    """A `FoldTopic` over `topics`, registered with the app: that subscribes the worker to them,
    as iterating a topic in an agent would; its `queue` is what `take` reads."""
    topic = FoldTopic(
        app,
        topics=topics,
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        is_iterator=True,
    )
    app.topics.add(topic)
    return topic


async def take(queue: Any, max_n: int, within: float) -> list[Delivered]:
    """Wait for the first record, then collect up to `max_n` while records keep arriving, for at
    most `within` seconds: under load batches fill (one state write per user per batch), and a
    record arriving at a quiet stream is processed after a 2 ms look for company."""
    batch: list[Delivered] = [await queue.get()]
    deadline = time.monotonic() + within
    while True:
        _get_queued(queue, batch, max_n)
        if len(batch) >= max_n or time.monotonic() >= deadline:
            return batch
        await asyncio.sleep(0.002)
        if queue.empty():
            return batch


# What `_get_queued` and `_put_room` read and write of a Faust channel's queue (mode's
# FlowControlQueue over asyncio.Queue); a queue without them is read and fed item by item.
_QUEUE_STATE = (
    "_queue",
    "_getters",
    "_putters",
    "_wakeup_next",
    "_unfinished_tasks",
    "_finished",
    "_pending_pressure_drop_callbacks",
    "maybe_endorse_pressure_drop",
    "pressure_high_size",
    "on_pressure_high",
)


def _bulk(queue: Any) -> bool:
    """Whether `queue` is a flow-controlled asyncio queue `_get_queued` and `_put_room` know."""
    return isinstance(queue, FlowControlQueue) and all(hasattr(queue, n) for n in _QUEUE_STATE)


def _get_queued(queue: Any, batch: list[Any], max_n: int) -> None:
    """Move queued items onto `batch` until it holds `max_n` or the queue is empty: what calling
    `get_nowait` for each does (its errors raised first; before each item, the pressure-drop
    check; after it, a waiting putter woken), without its three method calls per item (issue 21
    item 5: ~0.65 us a record, measured)."""
    if not _bulk(queue) or getattr(queue, "_errors", None):
        get = queue.get_nowait  # raises a thrown error, as it would
        try:
            while len(batch) < max_n:
                batch.append(get())
        except asyncio.QueueEmpty:
            pass
        return
    items = queue._queue
    n = min(max_n - len(batch), len(items))
    if n <= 0:
        return
    pending, putters = queue._pending_pressure_drop_callbacks, queue._putters
    if not pending and not putters:
        batch.extend(items.popleft() for _ in range(n))
        return
    wakeup, endorse, take_one = queue._wakeup_next, queue.maybe_endorse_pressure_drop, items.popleft
    for _ in range(n):
        if pending:
            endorse()
        batch.append(take_one())
        if putters:
            wakeup(putters)


def _put_room(queue: Any, items: list[Any], high: Callable[[], None], drop: Any) -> int:
    """Put as many of `items` as the queue has room for at once (none where `queue` is not one
    `_bulk` knows); how many were put. What `put_nowait_enhanced(item, high, drop)` does for
    each: the pressure-high check before each put (`drop` registered and `high` called once,
    when the queue reaches its high-water size), each put waking a waiting getter."""
    if not _bulk(queue):
        return 0
    items_q = queue._queue
    room = queue.maxsize - len(items_q) if queue.maxsize > 0 else len(items)
    n = min(room, len(items))
    if n <= 0:
        return 0
    pending = queue._pending_pressure_drop_callbacks
    if drop not in pending and len(items_q) + n - 1 >= queue.pressure_high_size:
        # an item of these meets the high-water size (nothing runs between the puts, so when
        # among them the callbacks run changes nothing)
        pending.add(drop)
        queue.on_pressure_high()
        high()
    items_q.extend(items[:n])
    queue._unfinished_tasks += n
    queue._finished.clear()
    getters, wakeup = queue._getters, queue._wakeup_next
    for _ in range(n):
        if not getters:
            break
        wakeup(getters)
    return n


FETCH_WAIT = 1.0  # seconds a fetch loop's call waits for records (Faust's own loop: 1 s)
PAUSED_WAIT = 0.05  # ... while a fold partition is paused for a full queue (fetch_wait)
FLOW_POLL = 0.05  # seconds between looks at a suspended flow control (_flow_open)


class Turns:
    """When a synchronous loop should give the event loop a turn: after every `every` items, or
    sooner once `seconds` have passed since the last turn (issue 21 item 2). Folded in one
    stretch, a batch of 1,000 records held the loop for 1.5-2 s on a loaded 2-core machine
    (records dead-lettered as late cost ~1 ms each): `/healthz` waited that long during a
    catch-up, and every step of a request's answer waited for another batch. The time bound
    keeps a slice of costly records short, and shorter still when other processes take the CPU.
    A loop asks `due()` once per item and awaits `asyncio.sleep(0)` when it says so: no
    coroutine or generator step per item (the fold's loop, issue 21 item 5)."""

    __slots__ = ("_clock", "_every", "_n", "_seconds", "_turn")

    def __init__(
        self, every: int, seconds: float = 0.02, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._every, self._seconds, self._clock = every, seconds, clock
        self._n = 0
        self._turn = clock() + seconds

    def due(self) -> bool:
        """Count one item; True when a turn is due after it (the time counts again from now)."""
        self._n += 1
        now = self._clock()
        if self._n % self._every == 0 or now >= self._turn:
            self._turn = now + self._seconds
            return True
        return False


# What Faust's Consumer.ack reads and writes (Fold.ack does the same for a batch).
_ACK_STATE = ("_committed_offset", "_acked_index", "_acked", "_unacked_messages", "_n_acked")


class Pending:
    """An accepted batch as Faust's consumer tracks work in progress: in its weak set of
    unacknowledged messages, where a graceful stop or a rebalance (`Consumer.wait_empty`) waits
    while one is there and not `acked`. One per batch instead of one per record: per record,
    tracking cost the set's add and discard and a call of the sensors (~0.45 us a record, issue
    21 item 5); the app's only sensor, the monitor, counts nothing per message (QuietMonitor)."""

    __slots__ = ("__weakref__", "acked", "records")
    refcount = 1  # what wait_empty's warning shows of each pending message

    def __init__(self, records: int) -> None:
        self.acked = False
        self.records = records

    def __repr__(self) -> str:
        return f"<fold batch of {self.records} records{' (acked)' if self.acked else ''}>"


class Batch(list[Delivered]):
    """The records `Fold.accept` kept, with the `Pending` mark Faust's consumer holds for them
    (None where this Faust tracks each record)."""

    __slots__ = ("pending",)

    def __init__(self, records: Any = ()) -> None:
        super().__init__(records)
        self.pending: Pending | None = None


class Fold:
    """Record bookkeeping shared with Faust's consumer: which records count, and acks."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        # Rebalances seen: Tansu can revoke and re-assign partitions under the same generation
        # id, so the generation alone does not tell that a batch outlived its assignment.
        self.epoch = 0

        async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
            self.epoch += 1

        app.on_partitions_revoked.connect(cast(Any, on_revoked))

    def current(self, epoch: int) -> bool:
        """Whether a batch accepted at `epoch` may still write and be acknowledged: no rebalance
        started since. (During one, table recovery rewrites the partitions' RocksDB from their
        changelogs; a batch writing then could be overwritten by older values, and acking it
        would commit offsets past events whose state was lost. A dropped batch is read again
        from the committed offsets.)"""
        return epoch == self.epoch and self.app.flow_control.is_active()

    def accept(self, batch: list[Delivered]) -> Batch:
        """The records of `batch` that belong to the current assignment (a record fetched before
        a rebalance is the new owner's to read again), marked pending: a graceful stop or a
        rebalance waits for them to be acked. One `Pending` mark for the batch in Faust's set of
        unacknowledged messages; where this Faust has no such set, each record is tracked."""
        app = self.app
        if not app.flow_control.is_active():
            return Batch()
        generation = app.consumer_generation_id
        kept = Batch(record for record in batch if record.message.generation_id == generation)
        if not kept:
            return kept
        consumer: Any = app.consumer
        unacked = getattr(consumer, "_unacked_messages", None)
        if unacked is not None:
            kept.pending = Pending(len(kept))
            unacked.add(kept.pending)
            return kept
        track = consumer.track_message
        for record in kept:
            message = record.message
            if not message.tracked:
                message.tracked = True
                track(message)
        return kept

    def ack(self, batch: list[Delivered]) -> None:
        """Acknowledge a written batch: what Faust's `Consumer.ack` does per record, done for the
        batch under one hold of Faust's ack lock with one wake of a waiter (issue 21 item 5:
        acking was ~2 us a record), and the batch's `Pending` mark taken out of the consumer's
        unacknowledged set. Where this Faust lacks the bookkeeping it relies on, each record goes
        through `Consumer.ack`."""
        consumer: Any = self.app.consumer
        pending = getattr(batch, "pending", None)
        if pending is not None:
            pending.acked = True
            consumer._unacked_messages.discard(pending)
        if _ACK_LOCK is None or not all(hasattr(consumer, name) for name in _ACK_STATE):
            ack = consumer.ack
            for record in batch:
                ack(record.message)
            return
        enabled_for = self.app.topics.acks_enabled_for
        committed_offset, acked_index, acked = (
            consumer._committed_offset,
            consumer._acked_index,
            consumer._acked,
        )
        unacked = consumer._unacked_messages
        tracked = pending is None
        enabled: dict[str, bool] = {}
        last_tp: Any = None
        committed: int | None = None
        index: set[int] = set()
        offsets: list[int] = []
        n = 0
        with _ACK_LOCK:
            for record in batch:
                message = record.message
                if message.acked:
                    continue
                message.acked = True
                topic = message.topic
                on = enabled.get(topic)
                if on is None:
                    on = enabled[topic] = enabled_for(topic)
                if not on:
                    continue
                tp, offset = message.tp, message.offset
                if tp != last_tp:  # a batch holds runs of one topic-partition's records
                    last_tp = tp
                    committed, index, offsets = committed_offset[tp], acked_index[tp], acked[tp]
                if (committed is None or offset >= committed) and offset not in index:
                    if tracked:  # tracked one by one (not by accept's Pending)
                        unacked.discard(message)
                    index.add(offset)
                    offsets.append(offset)
                    n += 1
            consumer._n_acked += n
        if enabled and any(enabled.values()):
            notify(consumer._waiting_for_ack)


class _Resume:
    """Awaitable that drives a coroutine already started by hand, from the future it yielded."""

    __slots__ = ("coro", "pending")

    def __init__(self, coro: Any, pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Generator[Any, None, Any]:
        coro, pending = self.coro, self.pending
        while True:
            try:
                yield pending
            except BaseException as exc:  # e.g. cancellation: pass it into the coroutine
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                pending = coro.send(None)
            except StopIteration as stop:
                return stop.value


async def _resumed(coro: Any, pending: Any) -> Any:
    return await _Resume(coro, pending)


def _close_unstarted(coros: tuple[Any, ...]) -> None:
    for coro in coros:
        if isinstance(coro, types.CoroutineType):
            coro.close()  # never started


def fast_wait_first(consumer: Any) -> None:
    """Make `consumer.wait_first(coro, event.wait())` run `coro` inline while it does not wait.

    Faust's fetch loop delivers every record through `wait_first(callback(message),
    suspend_flow.wait())` so a rebalance can interrupt a delivery blocked on flow control. The
    answer is the same when the delivery finishes at once; only one that suspends goes through
    the original `wait_first`, with the same arguments."""
    original = consumer.wait_first

    async def wait_first(*coros: Any, timeout: Any = None) -> Any:
        first = coros[0] if coros else None
        if timeout is not None or not isinstance(first, types.CoroutineType):
            return await original(*coros, timeout=timeout)
        # The exception is never kept in a local past its `except` block: the traceback holds
        # this frame, so a kept StopIteration made a reference cycle (with both coroutines) per
        # record, six objects of cyclic garbage each (~400,000 over a run of ~67,000 records),
        # and the young-generation collections that freed them took 40-100 ms each (measured).
        try:
            pending = first.send(None)
        except StopIteration as stop:
            _close_unstarted(coros[1:])
            if consumer._stopped.is_set() or consumer._crashed.is_set():
                return WaitResults([], [], True)
            return WaitResults([first], [stop.value], False)
        except BaseException:
            _close_unstarted(coros[1:])
            raise
        return await original(_resumed(first, pending), *coros[1:], timeout=timeout)

    consumer.wait_first = wait_first


class _Pressure:
    """A fold topic-partition's flow-control callbacks, as Faust's conductor makes them: the
    queue under high pressure pauses the partition's fetching, and resumes it once drained to
    half. One object per topic-partition: the queue tells pending callbacks apart by identity."""

    __slots__ = ("drop", "high")

    def __init__(self, consumer: Any, tp: Any) -> None:
        sensors = consumer.app.sensors

        def high() -> None:
            sensors.on_topic_buffer_full(tp)
            consumer.on_buffer_full(tp)

        def drop() -> None:
            consumer.on_buffer_drop(tp)

        self.high, self.drop = high, drop


def fetch_wait(consumer: Any) -> float:
    """How long the fetch loop's next call waits for records: FETCH_WAIT, Faust's second, or
    PAUSED_WAIT while a fold partition is paused for a full queue. A resumed partition's records
    are usually fetched already, but a call waiting for records of the partitions that were
    active when it began does not look at them until another fetch answers or it times out: at
    a full second the fold stood idle ~0.4 s at each such pause while a backlog waited
    (measured: 15 waits, 6.6 s of 22.9 s; the drain's calls came back empty after the full
    second 11 times in 25 s)."""
    return PAUSED_WAIT if consumer._buffered_partitions else FETCH_WAIT


def _fold_channel(conductor: Any, topic: str) -> FoldTopic | None:
    """The `FoldTopic` that is the only subscriber of `topic`, if one is."""
    channels = conductor._topic_name_index.get(topic)
    if channels is None or len(channels) != 1:
        return None
    (channel,) = channels
    return channel if isinstance(channel, FoldTopic) else None


async def _flow_open(flow: Any, stopping: Callable[[], bool]) -> bool:
    """Wait while the app's flow control is suspended (a rebalance), unless the fetch loop is
    stopping (False). Faust's own `acquire` waits for the resume alone: a worker told to stop
    while its fetch loop waited there never stopped (seen in benchmarks.ingest, about once in
    10 stops: mode's cancel of the fetch task had been absorbed lower down, and the stopping
    app's flow stays suspended; a task dump showed the loop in `flow_control.acquire`)."""
    while not flow.is_active():
        if stopping():
            return False
        await asyncio.sleep(FLOW_POLL)
    return not stopping()


async def _put_unless_suspended(queue: Any, item: Any, suspend: asyncio.Event) -> bool:
    """Wait for room in a full queue, unless a rebalance suspends the flow first (False: the
    item was not put)."""
    put = asyncio.ensure_future(queue.put(item))
    suspended = asyncio.ensure_future(suspend.wait())
    try:
        await asyncio.wait({put, suspended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (put, suspended):
            if not task.done():
                task.cancel()
    return put.done() and not put.cancelled()


def _unread(
    records: list[Any], last: int | None, acks: bool
) -> tuple[list[Any], list[tuple[int, int]]]:
    """The fetched `records` not read yet (below the read offset `last`, Faust's loop drops
    them; the same offset again it keeps) and, where acks are on, the offset ranges skipped
    before each (gaps the commit may pass over), as Faust's fetch loop decides them.

    A fetched chunk is nearly always consecutive offsets from the read offset on: that case is
    answered by comparing its offsets with that range, without the loop's step per record
    (issue 21 item 5: the loop was ~0.4 us a record, profiled)."""
    if records:
        first = records[0].offset
        if (last is None or first >= last) and [r.offset for r in records] == list(
            range(first, first + len(records))
        ):
            if acks and last and first - last > 1:
                return records, [(last + 1, first)]
            return records, []
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


async def _commit_logged(consumer: Any) -> None:
    try:
        await consumer.commit()
    except asyncio.CancelledError:
        raise
    except Exception:  # the timer's next commit (broker_commit_interval) tries again
        log.warning("committing offsets failed; the next commit retries", exc_info=True)


_CODEC = re.compile(r"for (\w+) compression codec")


def codec_refusal(exc: UnsupportedCodecError) -> str:
    """What the worker says when the consumer cannot decompress a fetched batch: the codec and
    the topic-partition (aiokafka's error names neither the partition nor what to do). The
    partition is found in the traceback, in the frame of aiokafka's batch reader (`tp`)."""
    found = _CODEC.search(str(exc))
    codec = found.group(1) if found else "an unknown codec"
    tp = raised_in(exc, "tp", lambda tp: hasattr(tp, "topic") and hasattr(tp, "partition"))
    where = "a fetched partition" if tp is None else f"{tp.topic}[{tp.partition}]"
    return (
        f"cannot read {where}: its records are compressed with {codec}, which this worker has "
        "no library for (aiokafka decompresses snappy, lz4 and zstd with cramjam, a dependency "
        "of Persona: reinstall it with its dependencies); the worker stops rather than skip them"
    )


def bulk_drain(
    consumer: Any, on_corrupt: Callable[[CorruptBatch], Awaitable[None]] | None = None
) -> bool:
    """Replace `consumer`'s fetch loop (`_drain_messages`, run by Faust's fetcher service) with
    one that hands fold topics' records over a chunk at a time; False (nothing replaced) where
    this Faust lacks what the loop relies on. Per record, Faust's loop runs an async generator
    step, a high-water lookup, `wait_first` (two coroutines), the conductor's handler (a lock,
    flow control, a wait on the producer buffer, the channel's decode coroutine) and a queue
    put: ~15 % of a worker's samples while folding a backlog (profiled). What it decides is
    kept: records below the partition's read offset are dropped, skipped offsets are recorded
    as gaps for the commit, `broker_commit_every` is honoured (the commit runs beside delivery),
    a rebalance (new generation, flow stopped or suspended) stops the delivery, and a full queue
    pauses the partition."""
    if getattr(consumer._drain_messages, "bulk", False):
        return True  # installed already
    needed = ("_wait_next_records", "_read_offset", "suspend_flow", "_to_message", "_add_gap")
    if not all(hasattr(consumer, name) for name in needed):
        log.warning("this Faust's consumer lacks the fetch loop's internals: per-record delivery")
        return False
    app = consumer.app
    pressure: dict[Any, _Pressure] = {}
    commits: set[asyncio.Task[Any]] = set()

    async def corrupt_ones() -> None:
        """Dead-letter the corrupt batches the fetch passed over (streams/corrupt_batches.py)."""
        for batch in passed_over():
            if on_corrupt is not None:
                await on_corrupt(batch)

    def commit_behind() -> None:
        """Commit the acknowledged offsets (`broker_commit_every`) without holding up delivery:
        Faust's loop awaited the commit here, and each took 0.14-0.29 s on the embedded broker
        every ~1-1.5 s of a backlog, while the fold's queue ran down (issue 21 item 5). A
        commit covers only acknowledged (written) records, so delivering meanwhile changes
        nothing it commits; Faust runs one commit at a time (a second waits for the first)."""
        task = asyncio.ensure_future(_commit_logged(consumer))
        commits.add(task)
        task.add_done_callback(commits.discard)

    async def deliver_chunk(
        tp: Any,
        records: list[Any],
        channel: FoldTopic,
        generation: int,
        stopping: Callable[[], bool],
    ) -> bool:
        """Put one topic-partition's fetched records on the fold's queue; False when a
        rebalance interrupted it (the rest is read again after it)."""
        read_offset = consumer._read_offset
        unread, gaps = _unread(records, read_offset[tp], app.topics.acks_enabled_for(tp.topic))
        for start, end in gaps:
            await consumer._add_gap(tp, start, end)
        if not unread:
            return True
        fetched, current = FoldRecord.fetched, app.consumer_generation_id
        kept = [fetched(tp, record, current) for record in unread]
        commit_every = consumer._commit_every
        if commit_every is not None and consumer._n_acked >= commit_every:
            consumer._n_acked = 0
            commit_behind()
        if not await _flow_open(app.flow_control, stopping):
            return False  # stopping: nothing delivered, nothing marked read
        await app.producer.buffer.wait_until_ebb()
        if app.consumer_generation_id != generation or not consumer.flow_active:
            return False
        flow = pressure.get(tp)
        if flow is None:  # Faust's own TP: the consumer asserts the type of what it pauses
            flow = pressure[tp] = _Pressure(consumer, TP(tp.topic, tp.partition))
        queue = channel.queue
        put = _put_room(queue, kept, flow.high, flow.drop)
        if put:
            read_offset[tp] = kept[put - 1].offset
        for item in kept[put:]:
            if queue.full():
                if not await _put_unless_suspended(queue, item, consumer.suspend_flow):
                    return False  # suspended for a rebalance: not delivered
            else:
                queue.put_nowait_enhanced(
                    item, on_pressure_high=flow.high, on_pressure_drop=flow.drop
                )
            read_offset[tp] = item.offset
        return True

    async def one_by_one(tp: Any, records: list[Any], generation: int) -> None:
        """Faust's own per-record delivery, for topic-partitions other than the fold's."""
        callback = consumer.callback
        read_offset = consumer._read_offset
        unread, gaps = _unread(records, read_offset[tp], app.topics.acks_enabled_for(tp.topic))
        for start, end in gaps:
            await consumer._add_gap(tp, start, end)
        for record in unread:
            if app.consumer_generation_id != generation or not consumer.flow_active:
                return
            message = consumer._to_message(tp, record)
            await consumer.wait_first(callback(message), consumer.suspend_flow.wait())
            read_offset[tp] = message.offset

    async def _drain_messages(fetcher: Any) -> None:
        stopped, fetcher_stopped = consumer._stopped.is_set, fetcher._stopped.is_set

        def stopping() -> bool:
            return stopped() or fetcher_stopped()

        diag = consumer.diag
        try:
            while not stopping():
                diag.set_flag(FETCHING)
                records, active = await consumer._wait_next_records(fetch_wait(consumer))
                await corrupt_ones()
                await asyncio.sleep(0)
                if records is None or consumer.should_stop or fetcher_stopped():
                    continue
                if not consumer.flow_active:
                    try:
                        await consumer.perform_seek()
                    except Exception as exc:
                        log.warning("seek while the flow was stopped failed: %r", exc)
                    continue
                generation = app.consumer_generation_id
                for tp, chunk in records.items():
                    if app.consumer_generation_id != generation or not consumer.flow_active:
                        break
                    paused = active is not None and tp not in active
                    if paused and tp not in consumer._buffered_partitions:
                        continue
                    app.monitor.track_tp_end_offset(tp, consumer.highwater(tp))
                    channel = _fold_channel(app.topics, tp.topic)
                    if channel is None:
                        await one_by_one(tp, chunk, generation)
                    elif not await deliver_chunk(tp, chunk, channel, generation, stopping):
                        break
                    await asyncio.sleep(0)
                diag.unset_flag(FETCHING)
        except UnsupportedCodecError as exc:
            log.critical("%s", codec_refusal(exc))
            raise
        except consumer.consumer_stopped_errors:
            if app.should_stop:
                log.info("the broker stopped the consumer; shutting down")
                return
            raise
        except asyncio.CancelledError:
            if app.should_stop:
                return
            raise
        finally:
            diag.unset_flag(FETCHING)

    _drain_messages.bulk = True  # type: ignore[attr-defined]
    consumer._drain_messages = _drain_messages
    return True
