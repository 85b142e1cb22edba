"""Cluster administration for Persona's topics: creation, partition checks, broker detection."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from engine.events import INPUT_TOPICS
from streams.kafka_security import Broker, as_config
from streams.kafka_security import bootstrap_servers as bootstrap_servers  # its first home

ALL_INPUTS = (*INPUT_TOPICS, "catalog")
# On a `catalog` record: a row of the worker's catalog table, republished into a new embedded
# broker's empty topic for the topic's readers (streams/adopt.py); the catalog fold passes it over.
KEPT_HEADER = "persona-kept"
REKEYED_TOPIC = "persona-events-rekeyed"
ITEM_ACTIVITY_TOPIC = "persona-item-activity"
DEAD_LETTERS = "dead-letters"
TRIGGERS_TOPIC = "triggers"
COMMANDS_TOPIC = "persona-commands"  # erasures etc., keyed by user, in order with the events
# Topics where Persona writes records about a user, keyed by the user id: an erasure writes a
# tombstone to each (streams/erasure.py), so a compacting cluster drops the user's older records;
# everything goes after the retention in any case.
ERASABLE_RETENTION_MS = 30 * 86_400_000
ERASABLE_CONFIG = {
    "cleanup.policy": "compact,delete",
    "retention.ms": str(ERASABLE_RETENTION_MS),
}
# Topics whose partitions must match the tables' (they feed tables keyed like them).
COPARTITIONED = (*ALL_INPUTS, REKEYED_TOPIC, ITEM_ACTIVITY_TOPIC, COMMANDS_TOPIC)


class TopicMismatch(RuntimeError):
    pass


def _admin(broker: Broker, timeout: float = 10.0) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        **as_config(broker).aiokafka(), request_timeout_ms=int(timeout * 1000)
    )


async def ensure_topics(
    broker_url: Broker,
    partitions: int,
    names: Iterable[str],
    configs: dict[str, str] | None = None,
) -> None:
    """Create the named topics with `partitions` partitions (and the topic `configs`) where they
    do not exist yet; existing topics are left as they are."""
    admin = _admin(broker_url)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won
                await admin.create_topics(
                    [NewTopic(n, partitions, 1, topic_configs=configs or {}) for n in missing]
                )
    finally:
        await admin.close()


async def partition_counts(broker_url: Broker, names: Iterable[str]) -> dict[str, int]:
    admin = _admin(broker_url)
    await admin.start()
    try:
        described = await admin.describe_topics(list(names))
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if not t.get("error_code")}


async def prepare_topics(broker_url: Broker, partitions: int, names: Iterable[str]) -> None:
    """Create missing topics; refuse to start on existing ones whose partition count differs
    from the tables' (co-partitioning is what keeps a user's events and state together)."""
    names = list(names)
    await ensure_topics(broker_url, partitions, names)
    counts = await partition_counts(broker_url, names)
    wrong = {name: n for name, n in counts.items() if n != partitions}
    if wrong:
        found = ", ".join(f"{name} has {n}" for name, n in sorted(wrong.items()))
        raise TopicMismatch(
            f"PERSONA_PARTITIONS is {partitions} but {found} partitions: set PERSONA_PARTITIONS "
            "to the input topics' partition count"
        )


async def prepare_broker(broker_url: Broker, partitions: int) -> bool:
    """Everything a worker checks before it starts: topics ready; returns whether it is Tansu."""
    await prepare_topics(broker_url, partitions, COPARTITIONED)
    await ensure_topics(broker_url, partitions, [DEAD_LETTERS, TRIGGERS_TOPIC], ERASABLE_CONFIG)
    return await is_tansu(broker_url)


async def is_tansu(broker_url: Broker, timeout: float = 10.0) -> bool:
    """Whether the cluster is Tansu (the embedded broker), whose end offsets need care."""
    admin = _admin(broker_url, timeout)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    return "tansu" in str(cluster.get("cluster_id") or "").lower()
