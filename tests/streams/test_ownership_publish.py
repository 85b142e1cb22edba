"""The ownership file a worker publishes for its readers (engine/ownership.py), written by the
worker's own hooks (no broker: the group's assignment is set as Faust's assignor keeps it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest
from faust.types import TP

from engine import ownership
from engine.events import INPUT_TOPICS
from engine.settings import Settings
from streams.app import PersonaStreams

OTHER = "http://10.0.0.2:8080"


def assigned(
    streams: PersonaStreams, monkeypatch: pytest.MonkeyPatch, actives: set[int], standbys: set[int]
) -> None:
    """The group's assignment as Faust's assignor holds it after `on_assignment`: this worker
    owns `actives`, stands by for `standbys`, OTHER owns the rest."""
    assignor = cast(Any, streams.app.assignor)
    changelog = streams.profiles.changelog_topic.get_topic_name()
    own = streams.settings.own_url
    rest = [p for p in range(4) if p not in actives]
    assignor.changelog_distribution = {own: {changelog: sorted(actives)}, OTHER: {changelog: rest}}
    monkeypatch.setattr(
        assignor, "assigned_actives", lambda: {TP(INPUT_TOPICS[0], p) for p in actives}
    )
    monkeypatch.setattr(assignor, "assigned_standbys", lambda: {TP(changelog, p) for p in standbys})


def test_the_file_names_the_owners_as_soon_as_a_rebalance_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The readers of a worker answered a DELETE 202 "erased": false (ownership unknown) for up
    to a second after its rebalance ended, though the assignment named every owner: the file,
    written all-unknown when the rebalance began, was rewritten only at the publishing timer's
    next tick (`OWNERSHIP_EVERY`), Faust having no signal once `rebalancing` drops (its
    `on_rebalance_complete` is sent before). Now the end of the rebalance writes it at once, with
    the partitions the worker holds."""
    streams = PersonaStreams(Settings(data_dir=tmp_path, partitions=4), "kafka://127.0.0.1:9")
    path = tmp_path / ownership.FILE_NAME
    own = streams.settings.own_url
    app = cast(Any, streams.app)
    app.rebalancing = True
    asyncio.run(streams._ownership_revoked(set()))  # the rebalance began
    assert ownership.read(path, 4).owners == (None,) * 4
    assigned(streams, monkeypatch, actives={0, 2}, standbys={1})
    asyncio.run(streams._assigned(set()))  # the assignment arrives; recovery follows
    assert ownership.read(path, 4).owners == (None,) * 4
    app.on_rebalance_end()  # recovery done: Faust drops `rebalancing`
    view = ownership.read(path, 4)
    assert view.owners == (own, OTHER, own, OTHER)
    assert view.held == frozenset({0, 1, 2})
    assert streams.owner_known("anyone") and streams.scaled_out()


def test_before_its_first_assignment_the_worker_publishes_every_partition_as_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted lone worker's readers answered every user with the fallback until the first
    assignment (the file said `held: []`), where they had answered what the worker stored. Until
    an assignment arrives the worker cannot tell what it holds: the file says every partition (as
    a version-1 file did); once assigned, only what the assignment names, an empty one included."""
    streams = PersonaStreams(Settings(data_dir=tmp_path, partitions=4), "kafka://127.0.0.1:9")
    path = tmp_path / ownership.FILE_NAME
    asyncio.run(streams._publish_ownership())
    assert ownership.read(path, 4).held == frozenset(range(4))
    asyncio.run(streams._ownership_revoked(set()))  # the first rebalance begins
    assert ownership.read(path, 4).held == frozenset(range(4))
    assigned(streams, monkeypatch, actives=set(), standbys=set())
    asyncio.run(streams._assigned(set()))
    assert ownership.read(path, 4).held == frozenset()


def test_a_failing_assignment_lookup_keeps_the_last_held_partitions_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Once an assignment had arrived, any exception looking up the held partitions (Faust's
    assignor, the table's changelog topic) published an empty held set, silently: the readers
    then answered nobody from the tables and no log line said why. Now the worker keeps the held
    set it last took and logs a warning, once per kind of failure (the publishing timer asks
    every `OWNERSHIP_EVERY` s)."""
    streams = PersonaStreams(Settings(data_dir=tmp_path, partitions=4), "kafka://127.0.0.1:9")
    path = tmp_path / ownership.FILE_NAME
    assigned(streams, monkeypatch, actives={0, 2}, standbys={1})
    asyncio.run(streams._assigned(set()))
    assert ownership.read(path, 4).held == frozenset({0, 1, 2})

    def broken() -> set[TP]:
        raise RuntimeError("assignor in a state it should not be in")

    monkeypatch.setattr(cast(Any, streams.app.assignor), "assigned_actives", broken)
    caplog.set_level("WARNING", logger="persona.streams")
    for _ in range(3):
        assert streams.held_partitions() == frozenset({0, 1, 2})
        streams._rebalance_ended()
        assert ownership.read(path, 4).held == frozenset({0, 1, 2})
    warnings = [r for r in caplog.records if "held partitions" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "RuntimeError" in warnings[0].getMessage()
    assert "assignor in a state" in warnings[0].getMessage()

    def other() -> set[TP]:
        raise KeyError("profiles")

    monkeypatch.setattr(cast(Any, streams.app.assignor), "assigned_actives", other)
    streams._rebalance_ended()
    streams._rebalance_ended()
    warnings = [r for r in caplog.records if "held partitions" in r.getMessage()]
    assert len(warnings) == 2  # a new kind of failure is said once too
    assert "KeyError" in warnings[1].getMessage()


def test_a_failed_write_is_retried_with_the_held_set_last_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the worker keeps two held sets (streams/app.py `_held`, `_last_held`): a write of the
    ownership file that failed (a full disk) leaves the last published set behind the last
    taken one. The next tick rewrites the file because the held set differs from the one
    published (the view and the heartbeat alone would wait), and should the assignment lookup
    fail meanwhile, what it rewrites is the set last taken, not the stale one published."""
    streams = PersonaStreams(Settings(data_dir=tmp_path, partitions=4), "kafka://127.0.0.1:9")
    path = tmp_path / ownership.FILE_NAME
    assigned(streams, monkeypatch, actives={0, 2}, standbys={1})
    asyncio.run(streams._assigned(set()))
    assert ownership.read(path, 4).held == frozenset({0, 1, 2})

    path.unlink()
    path.mkdir()  # the write's rename onto it fails: an OSError, as of a full disk
    assigned(streams, monkeypatch, actives={0, 2}, standbys={1, 3})  # the same owners
    asyncio.run(streams._assigned(set()))
    assert path.is_dir()

    def broken() -> set[TP]:
        raise RuntimeError("assignor in a state it should not be in")

    monkeypatch.setattr(cast(Any, streams.app.assignor), "assigned_actives", broken)
    path.rmdir()
    asyncio.run(streams._publish_ownership())  # the next tick, within the heartbeat
    assert ownership.read(path, 4).held == frozenset({0, 1, 2, 3})
