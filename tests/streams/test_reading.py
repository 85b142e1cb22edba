"""streams/reading.py: the plain whole-topic reader the registry, the reports and retraining use."""

from __future__ import annotations

import uuid

from streams.broker import EmbeddedBroker
from streams.registry import read_topic


async def test_reading_a_topic_that_does_not_exist_yet_ends_empty(broker: EmbeddedBroker) -> None:
    """`persona models report NAME` before any exposure was logged read the exposures topic that
    did not exist yet: the reader was stopped right after it started, and aiokafka's stop raised
    CancelledError (its no-group routine cancelled before its first step), so the report died
    with a traceback on every fresh broker."""
    for _ in range(3):
        missing = f"no-such-topic-{uuid.uuid4().hex}"
        assert [r async for r in read_topic(broker.url, [missing], idle=0.2)] == []
