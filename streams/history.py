"""The events the engine has seen, for scheduled retraining (persona/retrain.py): the input topics
read by a plain consumer of its own, bounded, with erased users' history left out.

Each partition of `clickstream`, `cart` and `social` is read from its earliest retained offset,
or from `per_partition` records before its end when it holds more, up to its end at the start of
the read. Records that do not parse as events are skipped (the fold dead-letters them), and so is
every event of a user erased after it was produced: the signed `erase` commands of the commands
topic give each erased user's erasure time (the fold's fence, streams/app.py). On Kafka the
topics' retention bounds the history; the embedded broker keeps its topics in memory, so after a
restart of `persona run` the history starts empty (the folded profiles are not training data).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.events import INPUT_TOPICS, Event, InvalidEvent, parse
from engine.profile import is_reversal
from engine.signing import ClusterKey, Signed
from engine.text import BadJson, outside_json
from models.retrain import MAX_EVENTS, bound, unfenced
from streams.admin import COMMANDS_TOPIC
from streams.kafka_security import Broker
from streams.reading import assign_all, topic_reader
from streams.signed import RecordGate

IDLE_MS = 1000


async def _tail(consumer: AIOKafkaConsumer, parts: list[TopicPartition], limit: int) -> None:
    """Position every partition `limit` records before its end (or at its beginning)."""
    first = await consumer.beginning_offsets(parts)
    end = await consumer.end_offsets(parts)
    for tp in parts:
        consumer.seek(tp, max(first[tp], end[tp] - limit))


async def read_tail(
    broker: Broker, topics: Iterable[str], per_partition: int | None = None
) -> AsyncIterator[Any]:
    """The records of `topics` (aiokafka's ConsumerRecord), at most `per_partition` of each
    partition (None: all), up to the end each partition had when the read started."""
    consumer = topic_reader(broker)
    await consumer.start()
    try:
        parts = assign_all(consumer, topics)
        if not parts:
            return
        end = await consumer.end_offsets(parts)
        if per_partition is None:
            await consumer.seek_to_beginning(*parts)
        else:
            await _tail(consumer, parts, per_partition)
        async for msg in _until(consumer, parts, end):
            yield msg
    finally:
        await consumer.stop()


async def _until(
    consumer: AIOKafkaConsumer, parts: list[TopicPartition], end: dict[TopicPartition, int]
) -> AsyncIterator[Any]:
    """The records up to `end` (and those fetched with them: what arrives meanwhile)."""
    while not all([await consumer.position(tp) >= end[tp] for tp in parts]):
        batch = await consumer.getmany(*parts, timeout_ms=IDLE_MS)
        for messages in batch.values():
            for msg in messages:
                yield msg


async def erasures(broker: Broker, key: ClusterKey | None) -> dict[str, int]:
    """user id -> time (ms) of their newest erasure, from the signed `erase` commands."""
    gate = RecordGate(COMMANDS_TOPIC, key)
    erased: dict[str, int] = {}
    async for msg in read_tail(broker, [COMMANDS_TOPIC]):
        if not isinstance(gate.admit(msg.key, msg.value, msg.headers), Signed):
            continue
        user = _erased_user(msg.value)
        if user is not None:
            erased[user] = max(int(msg.timestamp), erased.get(user, 0))
    return erased


def _erased_user(value: bytes | None) -> str | None:
    try:
        command = outside_json(value or b"")
    except BadJson:
        return None
    if not isinstance(command, dict) or command.get("command") != "erase":
        return None
    user = command.get("user_id")
    return user if isinstance(user, str) else None


async def read_history(
    broker: Broker, key: ClusterKey | None, partitions: int, max_events: int = MAX_EVENTS
) -> list[Event]:
    """The events to retrain on: the input topics' newest `max_events` (split evenly over the
    partitions), erased users' left out, cancellations left out, bounded in age (models.retrain)."""
    erased = await erasures(broker, key)
    per_partition = max(1, max_events // max(1, partitions * len(INPUT_TOPICS)))
    records: list[tuple[int, Event]] = []
    async for msg in read_tail(broker, INPUT_TOPICS, per_partition):
        try:
            event = parse(msg.value or b"")
        except InvalidEvent:
            continue
        if not is_reversal(event):  # models learn from what was bought, as `models train`
            records.append((int(msg.timestamp), event))
    return bound(unfenced(records, erased), max_events)
