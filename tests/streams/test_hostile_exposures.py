"""Hostile records on the `exposures` topic (what blocks showed to whom, read back by the
experiment reports; any producer can write it): one record of the wrong shape must not fail the
reports, which read every record of the topic. A real broker, the reports as the API runs them."""

from __future__ import annotations

import asyncio
import json
import uuid

import confluent_kafka
import pytest

from engine.content_experiments import Arm, ContentExperiment
from streams.admin import bootstrap_servers
from streams.broker import EmbeddedBroker
from streams.produce import ALL_INPUTS, ensure_topics
from streams.registry import (
    EXPOSURES_TOPIC,
    content_experiment_report,
    ensure_registry_topics,
    experiment_report,
)

pytestmark = pytest.mark.integration
T0 = 1_900_000_000_000


def test_exposures_of_the_wrong_shape_are_passed_over_by_the_reports(
    broker: EmbeddedBroker,
) -> None:
    name = f"exp-{uuid.uuid4().hex[:8]}"
    good = {"experiment": name, "variant": "A", "user_id": "u1", "ts": T0, "items": ["i1"]}
    shown = {"experiment": name, "variant": "default", "user_id": "u2", "ts": T0, "kind": "content"}
    hostile = [
        {"experiment": name},  # no user, variant, time
        {**good, "ts": "yesterday"},
        {**good, "ts": [T0]},
        {**good, "items": 5},
        {**good, "user_id": {"id": 1}},
        {**shown, "ts": "x"},
        {**shown, "ts": {"t": 1}},
    ]
    asyncio.run(ensure_topics(broker.url, 4, ALL_INPUTS))
    asyncio.run(ensure_registry_topics(broker.url))
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap_servers(broker.url)})
    for record in [good, shown, *hostile]:
        producer.produce(EXPOSURES_TOPIC, json.dumps(record).encode(), key=b"u")
    producer.produce(EXPOSURES_TOPIC, b'{"experiment": "%s", "ts": Infinity}' % name.encode())
    assert producer.flush(30) == 0

    models = asyncio.run(experiment_report(broker.url, name))
    assert models["variants"]["A"]["exposures"] == 1
    experiment = ContentExperiment(name, "recommendations", (Arm("default"), Arm("compact")))
    content = asyncio.run(content_experiment_report(broker.url, experiment, 24))
    exposed = {arm["variant"]: arm["exposures"] for arm in content["arms"]}
    assert exposed["default"] == 1
