"""An erasure or export forwarded to the owner of the user's partition (api/routing.py), with two
real Persona apps: the process the privacy officer called (the sender) and the owner, joined by a
signed hop over the cluster secret. What the sender is answered and what the owner's audit record
says name the same request; every process that sees the DELETE drops its own queued experiment
exposures of the user and of the ids merged into the user it knows of."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.limits import ServingOptions
from api.models_routes import ADMIN
from api.testing import MemoryRegistry, MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.events import validate
from models.registry import ModelSet

SECRET = "officer-" + "o" * 30
CLUSTER = "cluster-secret-for-the-erase-hop-tests"
AUTH = {"Authorization": f"Bearer {SECRET}"}
T0 = 1_700_000_000_000


class Process:
    """One Persona app over a memory state, with the in-memory model registry as its exposure
    queue (`api.models_routes.ADMIN`)."""

    def __init__(self, owner: str | None = None) -> None:
        self.state = MemoryState()
        self.state.owner_url = lambda user_id: owner  # type: ignore[method-assign]
        self.content = ContentService(self.state, ModelSet.default(), Renderer(), BlockPolicy())
        self.admin = MemoryRegistry(self.content, self.state)
        keys = KeyRing.from_settings(f"officer:{SECRET}:content:read,privacy:admin", None)
        self.app = create_app(self.content, keys, ServingOptions(cluster_secret=CLUSTER))
        self.app[ADMIN] = self.admin

    def hold(self, user_id: str) -> None:
        event = {"event_id": uuid.uuid4().hex, "type": "page_view", "user_id": user_id}
        self.state.apply(validate({**event, "ts": T0}))

    def queue_exposure(self, user_id: str) -> None:
        """An exposure logged here (as a read during an experiment logs one) not yet written."""
        self.admin.log_exposure({"user_id": user_id, "experiment": "e1", "variant": "b"})

    def queued(self) -> set[str]:
        return {str(e["user_id"]) for e in self.admin.exposures}


@asynccontextmanager
async def pair() -> AsyncIterator[tuple[Process, Process, TestClient]]:
    """The owner (serving) and a sender whose state names it as every user's owner, and a
    client of the sender."""
    owner = Process()
    async with TestServer(owner.app) as owner_server:
        sender = Process(str(owner_server.make_url("")).rstrip("/"))
        async with TestClient(TestServer(sender.app)) as client:
            yield owner, sender, client


def _audit(caplog: pytest.LogCaptureFixture, action: str) -> list[dict[str, Any]]:
    lines = [r.getMessage() for r in caplog.records if r.name == "persona.audit"]
    return [r for r in map(json.loads, lines) if r["action"] == action]


@pytest.mark.parametrize("given", [None, "ticket-4711", "not a valid id"])
async def test_the_owners_audit_record_names_the_request_id_the_sender_was_answered(
    given: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """The sender answered `X-Request-Id` A (the caller's valid one, or one it made), while the
    hop carried the caller's header only when there was one (an invalid one too): the owner made
    its own id B, and its `erase` record named a third (a random `request_id`, also in the
    body). Now the hop carries A: the owner's answer, its body's `request_id` and its audit
    records (erase and export) all name A. A caller's invalid id is replaced on the sender as
    anywhere, and never reaches the owner."""
    user = f"u-{uuid.uuid4().hex[:8]}"
    headers = AUTH if given is None else {**AUTH, "X-Request-Id": given}
    async with pair() as (owner, _sender, client):
        owner.hold(user)
        with caplog.at_level(logging.INFO, "persona.audit"):
            exported = await client.get(f"/v1/users/{user}/export", headers=headers)
            assert exported.status == 200, await exported.text()
            erased = await client.delete(f"/v1/users/{user}", headers=headers)
            body = await erased.json()
    assert erased.status == 200 and body["erased"] is True, body
    assert erased.headers["X-Persona-Routed"] == exported.headers["X-Persona-Routed"]
    rid, export_rid = erased.headers["X-Request-Id"], exported.headers["X-Request-Id"]
    if given == "ticket-4711":
        assert rid == export_rid == given
    else:
        assert given not in (rid, export_rid) and rid != export_rid
    assert body["request_id"] == rid
    (erase_record,) = _audit(caplog, "erase")
    (export_record,) = _audit(caplog, "export")
    assert erase_record["request_id"] == rid and export_record["request_id"] == export_rid


async def test_a_process_forwarding_an_erasure_drops_its_own_queued_exposures_of_the_user() -> None:
    """Exposures queued on a process (flushed to `exposures` every 0.5 s) of a user who is then
    erased: the owner answering the DELETE dropped its own, but the process that forwarded the
    DELETE kept its queue, and flushed the user's exposures after the erasure's tombstone (a
    record the erasure never covered). Every process that sees the DELETE drops them now: the
    user's, and those of the ids merged into the user that it knows of; nobody else's."""
    user, anon, other = (f"{k}-{uuid.uuid4().hex[:8]}" for k in ("u", "anon", "other"))
    async with pair() as (owner, sender, client):
        owner.hold(user)
        sender.state.merged[user] = [anon]  # a standby copy here names the merged id
        for process in (owner, sender):
            for who in (user, anon, other):
                process.queue_exposure(who)
        erased = await client.delete(f"/v1/users/{user}", headers=AUTH)
        assert erased.status == 200, await erased.text()
        assert erased.headers["X-Persona-Routed"]  # answered by the owner
        assert sender.queued() == {other}
        assert owner.queued() == {anon, other}  # the owner's copy names no merged id here


async def test_an_erasure_answered_away_from_the_users_partition_drops_the_merged_ids_known(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reader whose worker does not hold the user's partition answers a DELETE while the owner
    is unreachable: it knows no `m:` row of the user, so it dropped the queued exposures of the
    user alone, and kept those of the anonymous ids merged into the user, though the alias rows
    of those ids (on partitions it holds) name the user. Now the ids of the queue whose alias
    names the user go too."""
    user, anon, other = (f"{k}-{uuid.uuid4().hex[:8]}" for k in ("u", "anon", "other"))
    reader = Process("http://127.0.0.1:9")  # an owner nobody answers at
    reader.state.aliases[anon] = user  # the anonymous id's partition, held here
    reader.state.aliases[other] = f"someone-{user}"
    for who in (user, anon, other):
        reader.queue_exposure(who)
    async with TestClient(TestServer(reader.app)) as client:
        with caplog.at_level(logging.INFO, "persona.audit"):
            erased = await client.delete(f"/v1/users/{user}", headers=AUTH)
        body = await erased.json()
    assert erased.status == 202 and body["reason"] == "owner_unreachable", body
    assert reader.queued() == {other}
