"""streams/identity.py `forward`: an event of an id merged into a user goes on to the user through
the re-key topic with its original record time. The user's erasure fence compares that time with
the erasure's: an anonymous id's event produced before the user's erasure, folded on the
anonymous id's partition after it (before the anonymous id's own erase command got there), was
forwarded stamped with the time of the forward and re-created the erased user's profile."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import msgpack

from engine.events import validate
from streams.identity import Identity
from streams.keys import alias_of, user_key
from tests.conftest import T0


@dataclass
class FakeStreams:
    rows: dict[bytes, bytes]
    sent: list[dict[str, Any]] = field(default_factory=list)
    rekeyed_topic: str = "persona-events-rekeyed"
    stats: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(identity_forwarded=0))

    def profile_db(self, partition: int) -> dict[bytes, bytes]:
        return self.rows

    async def send_raw(self, topic: str, key: bytes, value: bytes, **kw: Any) -> None:
        self.sent.append({"topic": topic, "key": key, **kw})

    def track(self, sent: Any) -> None:
        pass


def test_a_forwarded_event_keeps_its_record_time() -> None:
    anon = user_key("anon-fwd")
    streams = FakeStreams({alias_of(anon): msgpack.packb(["user-fwd", None, []])})
    identity = Identity(streams)  # type: ignore[arg-type]
    event = validate({"event_id": "e1", "type": "page_view", "user_id": "anon-fwd", "ts": T0})
    produced_ms = 1_796_598_214_453
    message = SimpleNamespace(partition=0, headers=(), timestamp=produced_ms / 1000.0)
    assert asyncio.run(identity.forward(event, SimpleNamespace(message=message), anon))
    (sent,) = streams.sent
    assert sent["key"] == b"user-fwd"
    assert sent["timestamp_ms"] == produced_ms
