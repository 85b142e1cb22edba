"""What a worker's /readyz says while it starts: it moves on as the start does."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest
from faust.types import TP

from engine.events import INPUT_TOPICS
from engine.settings import Settings
from streams.app import PersonaStreams
from streams.broker import EmbeddedBroker


def test_a_recovering_worker_says_how_much_changelog_is_left(tmp_path: Path) -> None:
    """/readyz during a table recovery names the changelog records still to read: the answer
    moves on while the recovery does (what `persona run` tells a slow start from a stuck one by)."""
    streams = PersonaStreams(Settings(data_dir=tmp_path), "kafka://127.0.0.1:9")
    recovery = cast(Any, streams.app.tables).recovery
    assert not recovery.completed.is_set()
    tp = TP("persona-profiles-changelog", 0)
    recovery.active_highwaters[tp] = 1_234_567
    recovery.active_offsets[tp] = 0
    assert streams.ready() == (False, "tables recovering: 1,234,567 changelog records to read")
    recovery.active_offsets[tp] = 1_233_567
    assert streams.ready() == (False, "tables recovering: 1,000 changelog records to read")


def test_a_worker_is_ready_once_the_fold_checked_every_assigned_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readiness after recovery waits for the layout check of each assigned input partition,
    and no longer than that: when the fold's batches checked them all, /readyz says ready at
    once, not at the position audit's next tick (a restarted worker folded a 40,000-record
    backlog before that tick and never said it was catching up)."""
    streams = PersonaStreams(Settings(data_dir=tmp_path), "kafka://127.0.0.1:9")
    cast(Any, streams.app.tables).recovery.completed.set()
    monkeypatch.setattr(type(streams.app), "rebalancing", False, raising=False)
    topic = INPUT_TOPICS[0]
    actives = {TP(topic, 0), TP(topic, 1), TP("elsewhere", 2)}
    monkeypatch.setattr(streams.app.assignor, "assigned_actives", lambda: actives)
    assert streams.ready() == (False, "checking the layout of stored profiles")
    streams._ensure_layout({0})  # a batch with records of partition 0 only
    assert streams.ready() == (False, "checking the layout of stored profiles")
    streams._ensure_layout({1})  # partition 2 is not an input topic's: nothing to check
    assert streams.ready() == (True, "ok")


def test_the_layout_is_checked_as_soon_as_the_first_recovery_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's start task checks the assigned partitions' layout when recovery completes,
    without waiting for the position audit's tick: /readyz then says ready."""
    streams = PersonaStreams(Settings(data_dir=tmp_path), "kafka://127.0.0.1:9")
    recovery = cast(Any, streams.app.tables).recovery
    monkeypatch.setattr(type(streams.app), "rebalancing", False, raising=False)
    actives = {TP(INPUT_TOPICS[0], 0), TP(INPUT_TOPICS[1], 3)}
    monkeypatch.setattr(streams.app.assignor, "assigned_actives", lambda: actives)

    async def go() -> list[tuple[bool, str]]:
        start = asyncio.create_task(streams._ready_at_start())
        await asyncio.sleep(0.3)
        seen = [streams.ready()]  # still recovering: the task waits
        recovery.completed.set()
        await asyncio.wait_for(start, 5)
        return [*seen, streams.ready()]

    before, after = asyncio.run(go())
    assert before[0] is False and before[1].startswith("tables recovering")
    assert after == (True, "ok")
    assert {0, 3} <= streams._layout_checked


def test_a_recovering_worker_never_says_a_negative_count(tmp_path: Path) -> None:
    """A changelog partition read past the high-water mark Faust took at the start of recovery
    (the embedded broker under-reports it; records written meanwhile) has nothing left to read,
    not a negative count: /readyz said `-772 changelog records to read` at a worker's restart."""
    streams = PersonaStreams(Settings(data_dir=tmp_path), "kafka://127.0.0.1:9")
    recovery = cast(Any, streams.app.tables).recovery
    ahead, behind = TP("persona-profiles-changelog", 0), TP("persona-profiles-changelog", 1)
    recovery.active_highwaters.update({ahead: 100, behind: 50})
    recovery.active_offsets.update({ahead: 900, behind: 10})
    assert streams.ready() == (False, "tables recovering: 40 changelog records to read")


def test_a_worker_waiting_for_its_partitions_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the consumer group assigned it any partition, a worker has no changelog figure:
    /readyz said `0 changelog records to read` for the whole join (8 s on the embedded broker,
    longer on a cluster with a slow member), as if recovery were done and stuck."""
    streams = PersonaStreams(Settings(data_dir=tmp_path), "kafka://127.0.0.1:9")
    monkeypatch.setattr(streams.app.assignor, "assigned_actives", lambda: set())
    assert streams.ready() == (
        False,
        "tables recovering: waiting for the consumer group (persona) to assign partitions",
    )


def test_a_catching_up_worker_writes_its_count_as_the_recovery_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ok; catching up: 7522 input records behind` followed `12,300 changelog records to read`
    at the same start: both counts are written with thousands separators."""
    streams = PersonaStreams(Settings(data_dir=tmp_path), "kafka://127.0.0.1:9")
    cast(Any, streams.app.tables).recovery.completed.set()
    monkeypatch.setattr(type(streams.app), "rebalancing", False, raising=False)
    monkeypatch.setattr(streams.app.assignor, "assigned_actives", lambda: set())
    monkeypatch.setattr(streams, "lag_records", lambda: 12_345)
    assert streams.ready() == (True, "ok; catching up: 12,345 input records behind")


def test_a_ready_worker_says_when_its_broker_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose broker went away stays ready (it answers from the state it has) but its
    /readyz says so, naming PERSONA_BROKER_URL: with the cluster stopped for 20 s every worker's
    /readyz still said `ok`. Once the broker answers again the detail is `ok` again."""
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        port = broker.port
        # describing a topic creates it on the embedded broker, with 4 partitions
        streams = PersonaStreams(Settings(data_dir=tmp_path / "data", partitions=4), broker.url)
        cast(Any, streams.app.tables).recovery.completed.set()
        monkeypatch.setattr(type(streams.app), "rebalancing", False, raising=False)
        monkeypatch.setattr(streams.app.assignor, "assigned_actives", lambda: set())
        asyncio.run(streams._check_topics())
        assert streams.ready() == (True, "ok")
    asyncio.run(streams._check_topics())  # the broker stopped
    ready, detail = streams.ready()
    assert ready is True and detail.startswith("ok; the broker is unreachable"), detail
    assert f"PERSONA_BROKER_URL=kafka://127.0.0.1:{port}" in detail, detail
    with EmbeddedBroker(port=port, log_file=tmp_path / "broker2.log"):
        asyncio.run(streams._check_topics())
        assert streams.ready() == (True, "ok")
