"""`Producer.send_events` when the events' iterator fails (`persona replay` at a bad line) after
the broker went away: the events handed to the producer before it are not "sent" until the
broker acknowledged them (persona/cli.py says how many were)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError

from engine.events import Event, InvalidEvent, validate
from streams.broker import EmbeddedBroker
from streams.produce import ALL_INPUTS, Producer, ensure_topics

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


def _event(n: int) -> Event:
    return validate({"event_id": f"loss-{n}", "type": "page_view", "user_id": "u1", "ts": T0 + n})


async def test_events_handed_before_a_bad_line_are_acknowledged_or_the_broker_error_raised(
    tmp_path: Path,
) -> None:
    """The iterator's error left `send_events` at once, with up to 5,000 events handed to the
    producer and not acknowledged; `Producer`'s exit (aiokafka's `stop()`) then waited for them
    and dropped their delivery errors, so `persona replay` said "the 3 events before it were
    sent" of events the broker never took. Now the handed events are awaited first: a broker
    that is gone is a broker error, not a bad line after events "sent"."""
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        await ensure_topics(broker.url, 4, ALL_INPUTS)

        def events() -> Iterator[Event]:
            yield _event(0)
            broker.stop()  # gone: nothing handed from here on can be acknowledged
            yield _event(1)
            yield _event(2)
            raise InvalidEvent("line 4: a bad line")

        started = time.monotonic()
        async with Producer(broker.url) as producer:
            with pytest.raises(KafkaError):
                await producer.send_events(events())
        assert time.monotonic() - started < 300  # a bound on the test, not a timing claim
