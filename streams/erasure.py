"""What Persona still holds about a user on its own output topics, for the export.

Persona writes records about a user, keyed by the user id, to `triggers`, `dead-letters` (the
original key: the user id for a keyed event) and `exposures`. An erasure writes a tombstone (the
user id, no value) to each (streams/app.py `_tombstones`); the topics are created
`cleanup.policy=compact,delete` with a 30-day retention (streams/admin.py `ERASABLE_CONFIG`).
`HeldRecords` reads the user's records still there for `GET /v1/users/{id}/export`: only the
partition the user's key is placed on (the producers' default partitioner), at most the newest
`SCAN_MAX` records of it, and shows at most the newest `HELD_MAX` records per topic; records a
tombstone covers (engine.erasure.live) are not shown.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.erasure import live
from engine.placement import partition
from engine.text import BadJson, outside_json
from streams.admin import DEAD_LETTERS, TRIGGERS_TOPIC
from streams.kafka_security import Broker
from streams.reading import topic_reader
from streams.registry import EXPOSURES_TOPIC

ERASABLE_TOPICS = {
    "triggers": TRIGGERS_TOPIC,
    "dead_letters": DEAD_LETTERS,
    "exposures": EXPOSURES_TOPIC,
}
SCAN_MAX = 100_000  # newest records read per topic
HELD_MAX = 200  # newest records of the user shown per topic
READ_WAIT = 15.0  # seconds the export waits for the topics at most


def read_wait(request_timeout: float) -> float:
    """How long the export reads the topics: READ_WAIT, at most half the request timeout, so a
    slow read answers with `complete: false` instead of the timeout's 503 (a dead-letters
    partition holding tens of thousands of records took longer than the default 10 s here)."""
    return min(READ_WAIT, request_timeout / 2)


def shown(value: bytes) -> Any:
    """A record's value as the export shows it: its JSON, else its bytes in Base64."""
    try:
        return outside_json(value)
    except BadJson:
        return {"value_base64": base64.b64encode(value).decode()}


class HeldRecords:
    """`api.privacy.HeldRecords` over Kafka."""

    def __init__(self, broker: Broker, wait: float = READ_WAIT, scan_max: int = SCAN_MAX) -> None:
        self.broker = broker
        self.wait = wait
        self.scan_max = scan_max

    async def of_user(self, user_id: str) -> dict[str, Any]:
        """Per topic (triggers, dead_letters, exposures) the user's records still held, oldest
        first; `complete`: False when the topics could not be read in time or a scan stopped at
        its bound, `truncated`: the topics it stopped on, `reason`: why (None when complete)."""
        return (await self.of_users([user_id]))[user_id]

    async def of_users(self, user_ids: list[str]) -> dict[str, dict[str, Any]]:
        """`of_user` for several ids (a user and the ids merged into it) in one read: each
        partition any of their keys is placed on is scanned once, within the one wait."""
        empty: dict[str, list[Any]] = {name: [] for name in ERASABLE_TOPICS}
        keys: dict[str, bytes] = {}
        for user_id in dict.fromkeys(user_ids):
            with contextlib.suppress(UnicodeEncodeError):  # no record can carry such a key
                keys[user_id] = user_id.encode()
        answer: dict[str, dict[str, Any]] = {u: {**empty, **self._whole([])} for u in user_ids}
        if not keys:
            return answer
        try:
            found, cut = await asyncio.wait_for(self._read(set(keys.values())), self.wait)
        except (TimeoutError, OSError, RuntimeError):
            late = {
                "complete": False,
                "truncated": [],
                "reason": f"the topics could not be read within {self.wait:g} s",
            }
            return {u: {**empty, **(late if u in keys else self._whole([]))} for u in user_ids}
        for user_id, key in keys.items():
            answer[user_id] = {**found.get(key, empty), **self._whole(cut.get(key, []))}
        return answer

    def _whole(self, truncated: list[str]) -> dict[str, Any]:
        """`complete`, `truncated` (the topics whose scan stopped at `scan_max` records before
        the partition's first) and `reason` (None when complete)."""
        if not truncated:
            return {"complete": True, "truncated": [], "reason": None}
        reason = (
            f"only the newest {self.scan_max} records of the user's partition of "
            f"{', '.join(truncated)} were read: older records were not searched"
        )
        return {"complete": False, "truncated": truncated, "reason": reason}

    async def _read(
        self, keys: set[bytes]
    ) -> tuple[dict[bytes, dict[str, list[Any]]], dict[bytes, list[str]]]:
        """Per key, its records per topic, and the topics (export names) whose scan of the
        key's partition stopped at `scan_max` before the partition's first record."""
        consumer = topic_reader(self.broker)  # every partition is sought explicitly
        try:  # stopped also when its start is cut short (the wait, an unresponsive broker)
            await consumer.start()
            placed = {key: self._placed(consumer, key) for key in keys}
            parts = sorted({tp for tps in placed.values() for tp in tps})
            records, cut = (
                await _scan(consumer, parts, keys, self.scan_max) if parts else ({}, set())
            )
        finally:
            await consumer.stop()
        names = {topic: name for name, topic in ERASABLE_TOPICS.items()}
        found = {
            key: {
                name: [shown(v) for _, v in live(records.get((topic, key), []))][-HELD_MAX:]
                for name, topic in ERASABLE_TOPICS.items()
            }
            for key in keys
        }
        truncated = {
            key: sorted(
                {names[tp.topic] for tp in tps if tp in cut}, key=list(names.values()).index
            )
            for key, tps in placed.items()
        }
        return found, truncated

    def _placed(self, consumer: AIOKafkaConsumer, key: bytes) -> list[TopicPartition]:
        """The partition of each topic that `key` is produced to (none for a missing topic)."""
        parts = []
        for topic in ERASABLE_TOPICS.values():
            ids = sorted(consumer.partitions_for_topic(topic) or ())
            if ids:
                parts.append(TopicPartition(topic, ids[partition(key, len(ids))]))
        return parts


async def _scan(
    consumer: AIOKafkaConsumer, parts: list[TopicPartition], keys: set[bytes], scan_max: int
) -> tuple[dict[tuple[str, bytes], list[tuple[bytes, bytes | None]]], set[TopicPartition]]:
    """Per topic and key, the records with one of `keys` among the newest `scan_max` of each
    partition, in log order, and the partitions whose older records were left unread (the scan
    began after their first offset); up to each partition's end as the scan found it: records
    produced meanwhile are not waited for, so a partition that keeps receiving records still
    exports completely. ListOffsets may report the end short on Tansu (streams/tansu.py); the first
    fetch answer's high watermark is exact, and the larger of the two is the end."""
    consumer.assign(parts)
    start = await consumer.beginning_offsets(parts)
    reported = await consumer.end_offsets(parts)
    cut = {tp for tp in parts if reported[tp] - scan_max > start[tp]}
    for tp in parts:
        consumer.seek(tp, max(start[tp], reported[tp] - scan_max))
    end: dict[TopicPartition, int] = {}
    found: dict[tuple[str, bytes], list[tuple[bytes, bytes | None]]] = {}
    while True:
        batch = await consumer.getmany(*parts, timeout_ms=500)
        for tp in parts:
            highwater = consumer.highwater(tp)
            if tp not in end and highwater is not None:
                end[tp] = max(reported[tp], highwater)
        for tp, messages in batch.items():
            for msg in messages:
                key = msg.key
                if key in keys and msg.offset < end.get(tp, reported[tp]):
                    found.setdefault((tp.topic, key), []).append((key, msg.value))
        if len(end) == len(parts) and all([await consumer.position(tp) >= end[tp] for tp in parts]):
            return found, cut
