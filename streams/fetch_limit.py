"""A bound on the records a worker's consumer fetches at once (issue 21 item 2).

Faust's consumer asks the broker for up to aiokafka's default `fetch_max_bytes`, 50 MiB per fetch
(1 MiB per partition, over the ~50 partitions a worker reads), and its round-robin takes every
record buffered at once: all of them decoded into Python objects (~700 bytes each for the events
of the synthetic load), held until the round is done. The embedded broker (Tansu) ignores the
per-partition limit: it answers a fetch of a deep backlog with several MiB per partition.
Measured with `benchmarks.worker_memory` (8 partitions, 2026-12-04): a worker folding 300,000
users' 900,000 events held ~246,000 fetched records at once, 226 MB of Python objects, and
CPython keeps the memory of such a peak (its arenas go back only when empty): most of why the
worker's RSS grew with the number of users (the deeper the backlog, the fuller each fetch).

`install` caps one fetch at `FETCH_MAX_BYTES`, 256 KiB. Kafka applies it to the whole fetch
(returning at least one record batch in any case); Tansu applies it to each partition of the
fetch. With 1 MiB (Tansu: 1 MiB per partition, what Faust's per-partition limit means) a
300,000-user worker still held ~185,000 records (~24 partitions with data x ~8,800); with
256 KiB a partition brings ~2,000 events at a time, a fraction of a second of the fold. Faust's
round-robin over the fetched partitions is kept, and aiokafka asks for more of a partition as
soon as its records are handed on.
"""

from __future__ import annotations

from typing import Any

FETCH_MAX_BYTES = 256 * 1024

_settings: dict[str, Any] = {}  # attribute of aiokafka's consumer -> value (set_on_worker_consumer)


def install() -> None:
    """Make Faust's consumer fetch at most FETCH_MAX_BYTES at a time (idempotent)."""
    set_on_worker_consumer("_fetch_max_bytes", FETCH_MAX_BYTES)  # read when the consumer starts


def set_on_worker_consumer(attribute: str, value: Any) -> None:
    """Set `attribute` of the aiokafka consumer Faust creates for the worker, right after it is
    created and before it starts (Faust passes no such option through): one wrapper of
    `_create_worker_consumer` however many settings (streams/read_committed.py sets another)."""
    if not _settings:
        from faust.transport.drivers import aiokafka as faust_aiokafka

        thread_cls: Any = faust_aiokafka.AIOKafkaConsumerThread
        create = thread_cls._create_worker_consumer

        def _create_worker_consumer(self: Any, *args: Any, **kwargs: Any) -> Any:
            consumer = create(self, *args, **kwargs)
            for name, setting in _settings.items():
                setattr(consumer, name, setting)
            return consumer

        thread_cls._create_worker_consumer = _create_worker_consumer
    _settings[attribute] = value
