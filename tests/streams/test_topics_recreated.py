"""An input topic re-created with more partitions while a worker runs (a careless admin): start-up
refuses such a topic (streams.admin.TopicMismatch), but a running worker never read the records on
the partitions past its tables' and said nothing. It says so at /readyz, in /metrics and the log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.admin import bootstrap_servers
from streams.broker import EmbeddedBroker
from tests.conftest import http, start_worker, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as own:
        yield own


async def _recreate(url: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(url))
    await admin.start()
    try:
        await admin.delete_topics([topic])
        for _ in range(100):  # the deletion is seen before the topic is made again
            if topic not in await admin.list_topics():
                break
            await asyncio.sleep(0.1)
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


def _said(worker_base: str) -> tuple[str, str] | None:
    status, _, body = http("GET", worker_base + "/readyz", key=None)
    detail = json.loads(body).get("detail", "") if status == 200 else ""
    _, _, metrics = http("GET", worker_base + "/metrics", key=None)
    gauge = 'persona_topic_partitions_mismatched{topic="clickstream"} 6.0'
    return (detail, gauge) if "clickstream has 6" in detail and gauge in metrics.decode() else None


def test_a_topic_recreated_with_more_partitions_is_said_not_silently_half_read(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    worker = start_worker(broker.url, tmp_path / "w")  # PERSONA_PARTITIONS=4
    try:
        before = http("GET", worker.base + "/metrics", key=None)[2].decode()
        assert "persona_topic_partitions_mismatched{" not in before
        asyncio.run(_recreate(broker.url, "clickstream", 6))
        detail, _ = wait_until(lambda: _said(worker.base), timeout=90, what="the mismatch said")
        assert detail.startswith("ok; PERSONA_PARTITIONS is 4 but clickstream has 6 partitions")
        assert "not read" in detail
        log = (tmp_path / "w" / "worker.log").read_text()
        assert "PERSONA_PARTITIONS is 4 but clickstream has 6 partitions" in log
    finally:
        worker.stop()
