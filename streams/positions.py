"""Input positions stored with the state they describe, and the reader that fills gaps.

Kafka's committed offsets are not what makes the fold exact. For every input partition the fold
keeps the offset of the next record it has not folded yet ("position") in the profiles table, in
the RocksDB of the partition and in the table's changelog, under a key no user id can take
(`position_key`). A batch's position record goes to the changelog after the batch's profile
records and after every message the batch produced (re-keyed events, dead letters, triggers,
item activity) has been acknowledged, and it is stored in the local RocksDB only once its own
changelog write is acknowledged. So whatever state a worker restores (its own RocksDB plus the
changelog after a crash, or the changelog alone on another host), the position it finds says how
far that state reaches, never further.

On every delivered record the fold compares the record's offset with the position of its
partition:
- below: the record is already in the state (a redelivery after a crash): skipped;
- equal: folded, and the position moves on;
- above: records were skipped on the way (Faust committed an offset past records the state does
  not hold): the missing range is read straight from the broker (`GapReader`) and folded first.
A periodic audit does the same for partitions that receive nothing, so a gap at the very end of a
partition is found too. Folding a record twice is harmless (event ids are deduplicated), so a
gap read never needs to be exact about what Faust delivers concurrently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from streams.kafka_security import Broker, as_config

log = logging.getLogger("persona.positions")

# Bookkeeping rows (Faust's own offsets, the input positions) share this prefix; whatever
# iterates the profiles skips them (`is_bookkeeping`). 0xff never occurs in UTF-8, so no user id
# (UTF-8 bytes) can be equal to a position key.
BOOKKEEPING_PREFIX = b"__faust"
POSITION_PREFIX = BOOKKEEPING_PREFIX + b"\x00persona-position\xff"


def position_key(topic: str) -> bytes:
    """The profiles-table key of an input topic's position (one per partition's RocksDB)."""
    return POSITION_PREFIX + topic.encode()


def is_position_key(key: bytes) -> bool:
    return key.startswith(POSITION_PREFIX)


def is_bookkeeping(key: bytes) -> bool:
    """A row of a Faust table that is not a value of the table (an offset, a position)."""
    return key.startswith(BOOKKEEPING_PREFIX)


def parse_position(raw: bytes | None) -> int | None:
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


@dataclass(frozen=True)
class GapMessage:
    """A record read by the gap reader, shaped like the Faust messages the fold takes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float
    headers: tuple[tuple[str, bytes], ...] = ()  # signed commands carry their signature here


class GapEvent:
    """The event around a `GapMessage`: the fold uses it as the table-write context too (Faust
    reads the current event's topic and partition)."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, message: GapMessage) -> None:
        self.message = message


class GapError(RuntimeError):
    pass


class GapReader:
    """Reads ranges of input partitions straight from the broker, outside Faust's consumer and
    consumer group (no group id: nothing is committed, no rebalance is triggered)."""

    def __init__(self, broker: Broker, timeout: float = 15.0) -> None:
        self._kafka = as_config(broker)
        self._timeout = timeout
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self.records_read = 0

    async def _start(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                **self._kafka.aiokafka(),
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=20,
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def read(
        self,
        ranges: Mapping[tuple[str, int], tuple[int, int | None]],
        limit: int | None = None,
    ) -> dict[tuple[str, int], list[GapEvent]]:
        """The records of each `(topic, partition)` from `start` up to `end` (exclusive), or up to
        the partition's high watermark when `end` is None. Raises GapError when a bounded range
        cannot be read completely within the timeout (the caller must not move past it).

        With `limit`, the ranges without an end stop once `limit` records were read in all, each
        with the records from its start on (what a catch-up folds before it reads on from the
        positions that moved); bounded ranges are always read whole."""
        if not ranges:
            return {}
        async with self._lock:
            consumer = await self._start()
            try:
                return await self._read(consumer, ranges, limit)
            finally:
                # nothing stays assigned between reads: aiokafka's fetcher would otherwise go on
                # fetching the last read's partitions (every 20 ms at their end) on this loop
                consumer.unsubscribe()

    async def _read(
        self,
        consumer: AIOKafkaConsumer,
        ranges: Mapping[tuple[str, int], tuple[int, int | None]],
        limit: int | None,
    ) -> dict[tuple[str, int], list[GapEvent]]:
        tps = {TopicPartition(t, p): (start, end) for (t, p), (start, end) in ranges.items()}
        consumer.assign(list(tps))
        for tp, (start, _) in tps.items():
            consumer.seek(tp, start)
        out: dict[tuple[str, int], list[GapEvent]] = {(tp.topic, tp.partition): [] for tp in tps}
        pending = set(tps)
        room = _Room(limit)
        deadline = time.monotonic() + self._timeout
        while pending and time.monotonic() < deadline:
            got = await consumer.getmany(*pending, timeout_ms=200, max_records=room.fetch())
            for tp, records in got.items():
                start, end = tps[tp]
                _take(out[(tp.topic, tp.partition)], records, start, end, room)
            for tp in list(pending):
                if await _complete(consumer, tp, tps[tp][1], room):
                    pending.discard(tp)
        bounded = [tp for tp in pending if tps[tp][1] is not None]
        if bounded:
            raise GapError(f"could not read the records of {bounded} within {self._timeout}s")
        if pending:
            log.warning("gap audit: no complete answer for %s; retried later", pending)
            for tp in pending:
                out.pop((tp.topic, tp.partition), None)
        self.records_read += sum(len(v) for v in out.values())
        return out

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()


class _Room:
    """How many more records the ranges without an end may take (None: no bound)."""

    FETCH = 10_000  # records one fetch returns at most

    def __init__(self, limit: int | None) -> None:
        self.left = limit

    def fetch(self) -> int:
        return self.FETCH if self.left is None else max(1, min(self.FETCH, self.left))

    @property
    def full(self) -> bool:
        return self.left is not None and self.left <= 0


def _take(
    bucket: list[GapEvent],
    records: list[ConsumerRecord[bytes, bytes]],
    start: int,
    end: int | None,
    room: _Room,
) -> None:
    """Append the records of `[start, end)` in order; a range without an end stops when the
    room is full (its bucket stays a run of records from its start)."""
    for record in records:
        if end is not None and record.offset >= end:
            break
        if end is None and room.full:
            break
        if record.offset >= start:
            bucket.append(_event(record))
            if end is None and room.left is not None:
                room.left -= 1


async def _complete(
    consumer: AIOKafkaConsumer, tp: TopicPartition, end: int | None, room: _Room
) -> bool:
    """Whether the range of `tp` is read: up to its end, or (without one) up to the high
    watermark or as far as the room allowed."""
    position = await consumer.position(tp)
    if end is not None:
        return bool(position >= end)
    if room.full:
        return True
    highwater = consumer.highwater(tp)
    return highwater is not None and position >= highwater


def _event(record: ConsumerRecord[bytes, bytes]) -> GapEvent:
    return GapEvent(
        GapMessage(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            timestamp=record.timestamp / 1000.0,
            headers=tuple(record.headers or ()),
        )
    )
