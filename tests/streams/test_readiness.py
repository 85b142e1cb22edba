"""What a worker's /readyz says while it starts: it moves on as the start does."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from engine.settings import Settings
from streams.app import PersonaStreams


def test_a_recovering_worker_says_how_much_changelog_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/readyz during a table recovery names the changelog records still to read: the answer
    moves on while the recovery does (what `persona run` tells a slow start from a stuck one by)."""
    streams = PersonaStreams(Settings(data_dir=tmp_path), "kafka://127.0.0.1:9")
    recovery = cast(Any, streams.app.tables).recovery
    assert not recovery.completed.is_set()
    monkeypatch.setattr(recovery, "active_remaining_total", lambda: 1_234_567)
    assert streams.ready() == (False, "tables recovering: 1,234,567 changelog records to read")
    monkeypatch.setattr(recovery, "active_remaining_total", lambda: 1_000)
    assert streams.ready() == (False, "tables recovering: 1,000 changelog records to read")
