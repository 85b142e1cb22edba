"""The record a refused input record leaves on `dead-letters`. Pure.

The letter carries the original key, a JSON body (the reason, the source topic, partition, offset
and record time, and the original value: as text, or in Base64 when it is not UTF-8) and headers
that name the reason and the source. Every letter must fit in one Kafka record: the worker's
producer refuses a record over its request size (Faust's default, 1,000,000 bytes) before it
reaches the broker, and the worker then stops and stops again at every restart on the same input.
A hostile record can make its wrapped letter several times its own size (each control character
is six bytes as a JSON escape; the key comes on top), so the letter steps down until it fits
within `bound` bytes (key, value and headers together):

1. the JSON body with the original value;
2. the original bytes as the value (header `encoding: original`), the source in the headers;
3. the JSON body without the value (`value_omitted`: its length; header `encoding: omitted`);
4. and without the key too (`key_omitted`: its length; header `key-omitted`).

Nothing is lost on the way: the headers always name the source topic, partition and offset, where
the original record stays for the topic's retention.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from engine.text import cut

REASON_MAX = 1000  # characters of a reason (a longer one is shortened)
RECORD_OVERHEAD = 512  # bytes a record's framing may add beyond key, value and headers


@dataclass(frozen=True, slots=True)
class Source:
    """Where the refused record came from."""

    topic: str
    partition: int
    offset: int
    timestamp: float | None  # the record time, epoch seconds (as the Kafka client gives it)


@dataclass(frozen=True, slots=True)
class Letter:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    def size(self) -> int:
        """An upper bound of the record's size, as a producer counts it."""
        named = sum(len(name.encode()) + len(value) for name, value in self.headers)
        return len(self.key or b"") + len(self.value) + named + RECORD_OVERHEAD


def shorten(reason: str) -> str:
    return cut(reason, REASON_MAX)


def letter(
    key: bytes | None, value: bytes | None, source: Source, reason: str, bound: int
) -> Letter:
    """The dead letter of a record (`value` None: a tombstone) refused for `reason`, within
    `bound` bytes (the steps of the module doc)."""
    reason = shorten(reason)
    raw = value if isinstance(value, bytes) else b""
    body: dict[str, Any] = {
        "reason": reason,
        "topic": source.topic,
        "partition": source.partition,
        "offset": source.offset,
        "timestamp": source.timestamp,
    }
    headers = [
        ("reason", reason.encode()[:1000]),
        ("source-topic", source.topic.encode()),
        ("source-partition", str(source.partition).encode()),
        ("source-offset", str(source.offset).encode()),
    ]
    try:
        shown: dict[str, Any] = {"value": raw.decode("utf-8")}
    except UnicodeDecodeError:
        shown = {"value_base64": base64.b64encode(raw).decode()}
    whole = Letter(key, json.dumps({**body, **shown}).encode(), headers)
    if whole.size() <= bound:
        return whole
    original = Letter(key, raw, [*headers, ("encoding", b"original")])
    if original.size() <= bound:
        return original
    body["value_omitted"] = len(raw)
    omitted = [*headers, ("encoding", b"omitted")]
    keyed = Letter(key, json.dumps(body).encode(), omitted)
    if keyed.size() <= bound:
        return keyed
    body["key_omitted"] = len(key or b"")
    unkeyed = [*omitted, ("key-omitted", str(len(key or b"")).encode())]
    return Letter(None, json.dumps(body).encode(), unkeyed)
