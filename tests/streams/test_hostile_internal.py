"""Records produced straight to Persona's internal topics by someone without the cluster secret
(red team, identity and internal topics): the tables' changelogs are applied as the tables' own
state (docs/security.md), but no record on them may stop a worker from starting."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streams.kafka_security import as_config
from tests.conftest import T0, Worker, http, metric, start_worker, wait_until, worker_of_its_own

pytestmark = pytest.mark.integration

CHANGELOGS = (
    "persona-profiles-changelog",
    "persona-catalog-changelog",
    "persona-popularity-changelog",
    "persona-clock-changelog",
)


def produce(url: str, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    async def run() -> None:
        producer = AIOKafkaProducer(**as_config(url).aiokafka())
        await producer.start()
        try:
            for partition in range(4):  # start_worker's PERSONA_PARTITIONS
                for key, value in records:
                    await producer.send_and_wait(topic, value, key=key, partition=partition)
        finally:
            await producer.stop()

    asyncio.run(run())


def folded(worker: Worker, user: str) -> bool:
    return http("GET", f"{worker.base}/v1/users/{user}/profile")[0] == 200


def view(worker: Worker, user: str, ts: int) -> None:
    event = {"event_id": uuid.uuid4().hex, "type": "product_view", "user_id": user, "ts": ts}
    status, _, body = http("POST", worker.base + "/v1/events", [{**event, "item_id": "i-1"}])
    assert status == 202, body


def test_keyless_changelog_records_do_not_stop_a_restart(tmp_path: Path) -> None:
    """A changelog record without a key (Kafka allows one on any topic) stopped each table
    recovery ("Error in recovery 'raw mode only support bytes'" every 5 s): a worker restarted
    after one was produced never became ready. It is passed over, counted and logged."""
    with worker_of_its_own(tmp_path) as worker:
        user = f"u-{uuid.uuid4().hex[:8]}"
        view(worker, user, T0)
        wait_until(lambda: folded(worker, user), timeout=60, what="the event folded")
        for topic in CHANGELOGS:
            produce(worker.broker_url, topic, [(None, b"x"), (None, b"\xc1")])
        worker.stop()
        again = start_worker(worker.broker_url, worker.data_dir)
        try:
            assert folded(again, user)
            later = f"u-{uuid.uuid4().hex[:8]}"
            view(again, later, T0 + 1_000)
            wait_until(lambda: folded(again, later), timeout=60, what="an event after the restart")
            assert metric(again.base, "persona_changelog_unkeyed_total") >= 2
        finally:
            again.stop()


def test_an_unreadable_profile_row_leaves_the_user_list_answering(tmp_path: Path) -> None:
    """A profiles-changelog row under `u:` that is no profile (anyone who can produce to the
    topic can write one) reaches RocksDB at the next recovery. The preview's user list and the
    dashboard's churn sample unpacked every sampled row: one such row made `GET /v1/users` a
    500 (and the churn sampler fail every 10 s). Unreadable rows are left out of the sample."""
    with worker_of_its_own(tmp_path) as worker:
        user = f"u-{uuid.uuid4().hex[:8]}"
        view(worker, user, T0)
        wait_until(lambda: folded(worker, user), timeout=60, what="the event folded")
        produce(worker.broker_url, "persona-profiles-changelog", [(b"u:!", b"\xc1")])
        worker.stop()
        again = start_worker(worker.broker_url, worker.data_dir)
        try:
            status, _, body = http("GET", again.base + "/v1/users")
            assert status == 200, body
            assert user in body.decode()
        finally:
            again.stop()
