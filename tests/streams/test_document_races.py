"""Two processes, one `models` topic: PUTs of the rules (and of the content experiments) with the
same `If-Match` sent to two processes at once. `edit_lock` holds within one process only; before,
both PUTs answered 200 with version "1" and every process ended on whichever record came last,
overwriting the other edit unseen. Now the fold decides (models/registry_log.py): one 200, one
412, and every process, a fresh one too, serves the winner's document. Two registry services and
two API apps in this test process over a real embedded broker of their own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.models_routes import ADMIN
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.signing import ClusterKey
from models.registry import ModelSet
from streams.broker import EmbeddedBroker
from streams.registry import RegistryService
from streams.signed import RecordSigner

pytestmark = pytest.mark.integration
SIGNER = RecordSigner(ClusterKey("d" * 40), "test:races")
KEY = "races-admin-kkkkkkkkkkkkkkkkk"
KEYS = f"admin:{KEY}:rules:admin,models:admin,content:read"
AUTH = {"Authorization": f"Bearer {KEY}"}


@dataclass
class Process:
    registry: RegistryService
    content: ContentService
    client: TestClient


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as own:
        yield own


async def process(stack: AsyncExitStack, broker: EmbeddedBroker, cache: Path) -> Process:
    """A worker's or reader's registry service and API over the broker, once it has loaded."""
    content = ContentService(MemoryState(), ModelSet.default(), Renderer(), BlockPolicy())

    def swap(models: ModelSet) -> None:
        content.models = models

    registry = RegistryService(broker.url, cache, swap, signer=SIGNER)
    await registry.start()
    stack.push_async_callback(registry.stop)
    await asyncio.wait_for(registry.loaded.wait(), 60)
    app = create_app(content, KeyRing.from_settings(KEYS, None))
    app[ADMIN] = registry
    client = await stack.enter_async_context(TestClient(TestServer(app)))
    return Process(registry, content, client)


@pytest.fixture
async def two(broker: EmbeddedBroker, tmp_path: Path) -> AsyncIterator[list[Process]]:
    async with AsyncExitStack() as stack:
        yield [await process(stack, broker, tmp_path / name) for name in ("a", "b")]


def rules(name: str) -> dict[str, Any]:
    return {"rules": [{"id": name, "action": "exclude", "match": {"brand": name}}]}


async def put(p: Process, path: str, body: dict[str, Any], etag: str) -> tuple[int, Any, str]:
    r = await p.client.put(path, json=body, headers={**AUTH, "If-Match": etag})
    return r.status, await r.json(content_type=None), r.headers.get("ETag", "")


async def settled(processes: list[Process], wanted: Any, read: Any) -> None:
    """Every process serves `wanted` (as `read` reads it) within 15 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while any(read(p) != wanted for p in processes) and loop.time() < deadline:
        await asyncio.sleep(0.1)
    assert [read(p) for p in processes] == [wanted] * len(processes)


async def test_two_processes_one_if_match_one_wins(
    two: list[Process], broker: EmbeddedBroker, tmp_path: Path
) -> None:
    a, b = two
    answers = await asyncio.gather(
        put(a, "/v1/rules", rules("from-a"), '"0"'), put(b, "/v1/rules", rules("from-b"), '"0"')
    )
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200, 412], answers
    (_, won, etag), (_, lost, _) = sorted(answers, key=lambda x: x[0])
    assert won["version"] == "1" and etag == '"1"'
    assert lost["detail"] == "the rules are at version '1' now"
    await settled(two, won, _doc)
    for p in two:  # GET answers the winner's document in each process
        r = await p.client.get("/v1/rules", headers=AUTH)
        assert await r.json() == won and r.headers["ETag"] == '"1"'
    assert sum(p.registry.registry.lost for p in two) == 2  # each folded the loser and skipped it

    # the next edit (from the process that lost) wins and tombstones version 1's two records
    status, second, _ = await put(b, "/v1/rules", rules("second"), '"1"')
    assert status == 200 and second["version"] == "2"
    await settled(two, second, _doc)
    async with AsyncExitStack() as stack:  # a process started now folds the topic from the start
        fresh = await process(stack, broker, tmp_path / "fresh")
        await settled([fresh], second, _doc)
        # all three tombstoned: the tombstones follow version 2's record in the log, so they
        # may be folded a moment after the document is served
        await settled([fresh], {}, lambda p: dict(p.registry.registry.held["rules"].superseded))


def _doc(p: Process) -> dict[str, Any]:
    from engine.rules import to_document

    return to_document(p.content.models.rules)


async def test_content_experiments_too(two: list[Process]) -> None:
    a, b = two
    answers = await asyncio.gather(
        put(a, "/v1/experiments", {"experiments": []}, '"0"'),
        put(b, "/v1/experiments", {"experiments": []}, '"0"'),
    )
    assert sorted(status for status, _, _ in answers) == [200, 412], answers
    await settled(two, "1", lambda p: p.content.models.content_experiments.version)
    keys = {p.registry.registry.held["content_experiments"].key for p in two}
    assert len(keys) == 1 and None not in keys  # the same record won in both


async def test_without_if_match_both_edits_are_applied_one_after_the_other(
    two: list[Process],
) -> None:
    """No `If-Match`: no precondition to fail. The edit that lost is put again on the version
    that won, so both answer 200, with versions 1 and 2."""
    a, b = two
    answers = await asyncio.gather(
        a.client.put("/v1/rules", json=rules("a"), headers=AUTH),
        b.client.put("/v1/rules", json=rules("b"), headers=AUTH),
    )
    bodies = [await r.json() for r in answers]
    assert [r.status for r in answers] == [200, 200], bodies
    assert sorted(body["version"] for body in bodies) == ["1", "2"]
    last = max(bodies, key=lambda body: body["version"])
    await settled(two, last, _doc)
