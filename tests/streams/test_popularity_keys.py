"""The popularity fold (streams/app.py `_fold_popularity`) against contributions keyed by no item
id: the item-activity topic is the fold's own output, but any producer can write it. In-process:
Faust's real RocksDB store, no broker (the changelog sends are recorded, not sent)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from engine.placement import partition as placed
from engine.popularity import Score
from engine.settings import Settings
from streams.app import PersonaStreams
from streams.keys import FAUST_OFFSET_KEY

PARTITIONS = 4


def _streams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[PersonaStreams, list[str]]:
    streams = PersonaStreams(
        Settings(data_dir=tmp_path, partitions=PARTITIONS), "kafka://127.0.0.1:9"
    )
    monkeypatch.setattr(streams._activity_fold, "current", lambda epoch: True)
    letters: list[str] = []

    async def ship() -> None:  # nothing acknowledged: as in the moment before the broker answers
        return None

    async def dead_letter(record: Any, reason: str) -> None:
        letters.append(reason)

    monkeypatch.setattr(streams._popularity_writer, "ship", ship)
    monkeypatch.setattr(streams, "_dead_letter", dead_letter)
    return streams, letters


def _contribution(key: bytes, value: bytes) -> Any:
    message = SimpleNamespace(key=key, value=value, partition=placed(key, PARTITIONS))
    return SimpleNamespace(message=message)


def test_a_contribution_keyed_as_fausts_offset_row_is_dead_lettered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keyed `__faust\\x00offset__` on the partition murmur2 gives that key, a valid score was
    stored over Faust's persisted changelog offset of the popularity partition: until the next
    acknowledgement rewrote it, `persisted_offset` (table recovery, at every restart) raised
    ValueError on it, and the changelog held the record for every replica to apply."""
    streams, letters = _streams(tmp_path, monkeypatch)
    store: Any = streams.popularity.data
    changelog = streams.popularity.changelog_topic.get_topic_name()
    target = TP(changelog, placed(FAUST_OFFSET_KEY, PARTITIONS))
    store.set_persisted_offset(target, 41)
    score = Score(3.0, 1_700_000_000_000).pack()
    hostile = [FAUST_OFFSET_KEY, b"\xff\xfe", b"x" * 129, b"a\x1bb"]
    good = _contribution(b"lamp", score)
    assert asyncio.run(
        streams._fold_popularity([*map(lambda k: _contribution(k, score), hostile), good], 0)
    )
    assert store.persisted_offset(target) == 41
    assert len(letters) == len(hostile)
    assert all("keyed by no item id" in reason for reason in letters), letters
    db = store._db_for_partition(placed(b"lamp", PARTITIONS))
    assert Score.unpack(db.get(b"lamp")) == Score(3.0, 1_700_000_000_000)
