"""A batch split by owner whose other owner is away: two workers in one group, worker b stopped
(SIGSTOP: its port still accepts connections, nothing answers, as a hung process or a full
machine), and `POST /v1/blocks:batch` sent to worker a for users of both. Every user gets an
entry: a's from a's tables, b's from a's standby copy or the fallback once b's share of the
deadline has run out, counted in `persona_http_batch_owner_fallbacks_total`. The answer comes
well within the client's timeout (a batch must never hang on an owner that does not answer).

The batch goes out right after b is stopped: the group notices b gone only after the session
timeout (10 s), and until then a still names b the owner of its partitions."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from pathlib import Path

import pytest

from engine.events import validate
from streams.produce import Producer
from tests.conftest import T0, Worker, http, metric, owners_via, two_workers

pytestmark = pytest.mark.integration

OWNER_FALLBACKS = 'persona_http_batch_owner_fallbacks_total{route="/v1/blocks:batch"}'
DEADLINE_MS = 3000


def routed_to(worker: Worker, user: str) -> tuple[int, str | None]:
    status, headers, _ = http("GET", f"{worker.base}/v1/users/{user}/profile", timeout=5)
    return status, headers.get("X-Persona-Routed")


def test_a_batch_whose_other_owner_is_stopped_answers_every_user(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    users = [f"away-{tag}-{i}" for i in range(16)]
    with two_workers(tmp_path) as (broker, a, b):

        async def produce() -> None:
            async with Producer(broker.url) as producer:
                await producer.send_events(
                    validate(
                        {
                            "event_id": f"{tag}-{u}",
                            "type": "product_view",
                            "user_id": u,
                            "ts": T0,
                            "item_id": "i1",
                        }
                    )
                    for u in users
                )

        asyncio.run(produce())

        def folded(user: str) -> tuple[bool, str | None]:
            status, routed = routed_to(a, user)
            return status == 200, routed

        owned = owners_via(a, users, folded, "every user folded, seen via worker a")
        of_b = [u for u, owner in owned.items() if owner == b.base]
        assert of_b and len(of_b) < len(users), owned
        before = metric(a.base, OWNER_FALLBACKS)

        os.kill(b.proc.pid, signal.SIGSTOP)
        try:
            body = {"block": "recommendations", "user_ids": users, "deadline_ms": DEADLINE_MS}
            status, headers, raw = http("POST", f"{a.base}/v1/blocks:batch", body, timeout=60)
        finally:
            os.kill(b.proc.pid, signal.SIGCONT)
        assert status == 200, (status, raw[:300])
        results = json.loads(raw)["results"]
        assert list(results) == users  # every user, in the request's order
        for user in users:
            entry = results[user]
            assert isinstance(entry["content"], str) and entry["content"], (user, entry)
            assert isinstance(entry["fallback"], bool)
        assert metric(a.base, OWNER_FALLBACKS) == before + len(of_b)
        assert "X-Persona-Deadline-Fallbacks" in headers
