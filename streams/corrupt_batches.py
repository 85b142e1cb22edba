"""Record batches whose CRC does not match are passed over and dead-lettered, not fatal.

aiokafka checks each fetched batch's CRC and raises CorruptRecordException out of the fetch, which
stopped the worker's fetcher: the worker exited and every restart stopped on the same batch,
folding nothing on any partition. Kafka refuses such a batch at produce time; the embedded broker
(Tansu) stores it as it was sent, so one producer with a flipped bit stopped the engine. And the
exception left aiokafka's fetch half done: the partitions drained before the corrupt one in the
same round had their positions moved on, their records never handed over.

`install` makes aiokafka's batch reader (`PartitionRecords._unpack_records`) pass over a corrupt
batch the way it passes over an aborted transaction's: the position moves past it, the other
partitions' records and the batches after it are read as usual, and the batch is queued here.
The worker's fetch loop (`streams.delivery.bulk_drain`) takes the queue after each fetch and
dead-letters each batch (`PersonaStreams.dead_letter_batch`): its records cannot be read, so the
letter names the topic, partition and offsets, where the batch stays for the topic's retention.
The commit passes over the batch's offsets as over any gap Faust records.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import CorruptRecordException

log = logging.getLogger("persona.corrupt")

_installed = False
# appended on aiokafka's thread, taken on the worker's (bounded: kept only for the letters)
_passed: deque[CorruptBatch] = deque(maxlen=10_000)
# batches passed over already: a fetch sent before the position moved past one brings it again
_seen: set[tuple[str, int, int]] = set()


@dataclass(frozen=True)
class CorruptBatch:
    topic: str
    partition: int
    first: int  # the batch's base offset
    last: int  # its last offset
    reason: str

    def describe(self) -> str:
        return (
            f"a record batch that cannot be read ({self.reason}): offsets {self.first}..{self.last}"
            " passed over, they stay on the broker for the topic's retention"
        )


def raised_in(exc: BaseException, name: str, accept: Callable[[Any], bool]) -> Any:
    """The local variable `name` of the innermost frame of `exc`'s traceback where `accept`
    takes it, None when none does: what aiokafka was reading when it raised (its errors do not
    name the batch or the partition)."""
    found, tb = None, exc.__traceback__
    while tb is not None:
        value = tb.tb_frame.f_locals.get(name)
        if value is not None and accept(value):
            found = value
        tb = tb.tb_next
    return found


def failing_batch(exc: BaseException) -> Any:
    """The batch aiokafka's reader was reading when `exc` was raised (its frame's `next_batch`),
    None when not found."""
    return raised_in(exc, "next_batch", lambda batch: hasattr(batch, "next_offset"))


def passed_over() -> list[CorruptBatch]:
    """The corrupt batches passed over since the last call."""
    taken: list[CorruptBatch] = []
    while _passed:
        taken.append(_passed.popleft())
    return taken


def install() -> None:
    """Make aiokafka's batch reader pass over corrupt batches (idempotent)."""
    global _installed
    if _installed:
        return
    from aiokafka.consumer.fetcher import PartitionRecords

    original = PartitionRecords._unpack_records

    def _unpack_records(self: Any) -> Generator[Any, None, None]:
        try:
            yield from original(self)
        except CorruptRecordException as exc:
            batch = failing_batch(exc)
            if batch is None:
                raise
            tp = self._tp
            self.next_fetch_offset = max(self.next_fetch_offset, batch.next_offset)
            where = (tp.topic, tp.partition, batch.base_offset)
            if where in _seen:
                return
            if len(_seen) >= 10_000:
                _seen.clear()
            _seen.add(where)
            corrupt = CorruptBatch(
                tp.topic, tp.partition, batch.base_offset, batch.next_offset - 1, str(exc)
            )
            log.error("%s[%d]: %s", tp.topic, tp.partition, corrupt.describe())
            _passed.append(corrupt)

    PartitionRecords._unpack_records = _unpack_records
    _installed = True
