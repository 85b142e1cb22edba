"""Figures about the running stream for the API's metrics and dashboard: consumer lag and a sample
of the local profiles. Read-only, cheap, never raising (a figure it cannot read is left out)."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import faust

from streams.keys import is_profile_key

log = logging.getLogger("persona.streams")


def consumer_lag(app: faust.App, topics: set[str]) -> dict[str, int]:
    """Messages between the last one this worker read and the end of each partition it consumes,
    summed per topic (only `topics`, only partitions assigned to this worker)."""
    try:
        consumer: Any = app.consumer
        read = consumer._read_offset  # faust's last read offset per partition
        lag: dict[str, int] = {}
        for tp in consumer.assignment():
            if tp.topic not in topics:
                continue
            end = consumer.highwater(tp)
            if end is None:
                continue
            last = read.get(tp)
            behind = int(end) - (int(last) + 1 if last is not None else 0)
            lag[tp.topic] = lag.get(tp.topic, 0) + max(behind, 0)
        return lag
    except Exception:  # consumer not started, rebalancing: no figure this time
        log.debug("consumer lag unavailable", exc_info=True)
        return {}


def sample_profile_values(table: Any, n: int) -> list[bytes]:
    """Up to `n` packed profiles of the profiles table's local store (active and standby
    partitions): rows of the profiles key space only, not Faust's offsets or input positions."""
    try:
        rows = ((k, v) for k, v in table.items() if is_profile_key(k))
        return [v for _, v in itertools.islice(rows, n) if v]
    except Exception:
        log.debug("table sample unavailable", exc_info=True)
        return []
