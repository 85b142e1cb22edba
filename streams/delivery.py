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
- `paced` hands a batch's records to the fold giving the event loop a turn every few of them,
  so HTTP and Faust's own tasks run while a backlog is folded.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from typing import Any, Protocol, TypeVar, cast

import faust
from faust.types import Message
from mode.services import WaitResults

T = TypeVar("T")


class Carrier(Protocol):
    """Anything carrying a Kafka record: a Faust event or a `Delivered`."""

    @property
    def message(self) -> Message: ...


class Delivered:
    """One record as the fold sees it. Shaped like a Faust event (`.message`), so a table write
    made in its `event_context` lands in the record's partition."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, message: Message) -> None:
        self.message = message


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
    get = queue.get_nowait
    deadline = time.monotonic() + within
    while True:
        try:
            while len(batch) < max_n:
                batch.append(get())
        except asyncio.QueueEmpty:
            pass
        if len(batch) >= max_n or time.monotonic() >= deadline:
            return batch
        await asyncio.sleep(0.002)
        if queue.empty():
            return batch


async def paced(
    items: Sequence[T],
    every: int,
    seconds: float = 0.02,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[T]:
    """`items`, giving the event loop a turn after every `every` of them, or sooner once
    `seconds` have passed since the last turn (issue 21 item 2). Folded in one stretch, a batch
    of 1,000 records held the loop for 1.5-2 s on a loaded 2-core machine (records dead-lettered
    as late cost ~1 ms each): `/healthz` waited that long during a catch-up, and every step of a
    request's answer waited for another batch. The time bound keeps a slice of costly records
    short, and shorter still when other processes take the CPU."""
    turn = clock() + seconds
    for n, item in enumerate(items, 1):
        yield item
        if n % every == 0 or clock() >= turn:
            await asyncio.sleep(0)
            turn = clock() + seconds


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

    def accept(self, batch: list[Delivered]) -> list[Delivered]:
        """The records of `batch` that belong to the current assignment, marked pending (a
        graceful stop or a rebalance waits for them to be acked)."""
        app = self.app
        if not app.flow_control.is_active():
            return []
        generation = app.consumer_generation_id
        consumer = app.consumer
        track = consumer.track_message
        kept = []
        for record in batch:
            message = record.message
            if message.generation_id != generation:
                continue  # fetched before a rebalance: the new owner reads it again
            if not message.tracked:
                message.tracked = True
                track(message)
            kept.append(record)
        return kept

    def ack(self, batch: list[Delivered]) -> None:
        ack = self.app.consumer.ack
        for record in batch:
            ack(record.message)


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
