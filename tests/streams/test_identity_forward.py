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
from streams.identity import HOPS_HEADER, Identity
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


def test_a_forged_hop_count_cannot_make_a_record_forward_for_ever() -> None:
    """The hop count is a header of the re-key topic, which anyone who can produce to Kafka can
    write: `int()` took "-1000000" (and " 3 ", "1_0"), and a record given a negative count was
    forwarded a million times around an alias cycle instead of MAX_HOPS. Only the decimal
    digits Persona writes count; anything else is a count past the bound (dead-lettered)."""
    anon = user_key("anon-fwd")
    letters: list[str] = []

    class Lettered(FakeStreams):
        async def _dead_letter(self, fevent: Any, reason: str) -> None:
            letters.append(reason)

    event = validate({"event_id": "e1", "type": "page_view", "user_id": "anon-fwd", "ts": T0})
    for forged in (b"-1000000", b"-1", b" 1", b"1_0", b"\xd9\xa1", b"+1", b"1" * 5000):
        streams = Lettered({alias_of(anon): msgpack.packb(["user-fwd", None, []])})
        message = SimpleNamespace(partition=0, headers=[(HOPS_HEADER, forged)], timestamp=1.0)
        letters.clear()
        assert asyncio.run(Identity(streams).forward(event, SimpleNamespace(message=message), anon))  # type: ignore[arg-type]
        assert streams.sent == [] and len(letters) == 1, forged
    streams = Lettered({alias_of(anon): msgpack.packb(["user-fwd", None, []])})
    message = SimpleNamespace(partition=0, headers=[(HOPS_HEADER, b"2")], timestamp=1.0)
    letters.clear()
    assert asyncio.run(Identity(streams).forward(event, SimpleNamespace(message=message), anon))  # type: ignore[arg-type]
    (sent,) = streams.sent
    assert sent["headers"] == [(HOPS_HEADER, b"3")] and letters == []
