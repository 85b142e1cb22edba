"""History of any era trains and evaluates; live events keep the 2000..2100 bound (issue 17)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from engine.events import InvalidEvent, parse, validate
from engine.sources import read_events
from persona.cli import main
from tests.models.synthetic import T0, churn_events

YEAR_1997 = 852_076_800_000  # 1997-01-01T00:00:00Z


def _events_1997(path: Path) -> Path:
    """The synthetic churn history moved to 1997, as contract JSON lines."""
    shift = T0 - YEAR_1997
    with path.open("w") as fh:
        for event in churn_events(120):
            fh.write(json.dumps(replace(event, ts=event.ts - shift).to_dict()) + "\n")
    return path


def test_a_live_event_of_1997_is_refused_and_the_error_says_why() -> None:
    raw = {"event_id": "e1", "type": "purchase", "user_id": "u1", "item_id": "i", "ts": YEAR_1997}
    with pytest.raises(InvalidEvent) as caught:
        parse(json.dumps(raw).encode())
    assert "outside 2000..2100" in caught.value.reason
    assert "live events" in caught.value.reason
    assert "persona models train" in caught.value.reason
    assert validate(raw, history=True).ts == YEAR_1997


def test_seconds_for_milliseconds_are_still_refused_live() -> None:
    raw = {"event_id": "e1", "type": "product_view", "user_id": "u1", "item_id": "i"}
    with pytest.raises(InvalidEvent, match="seconds sent for milliseconds"):
        validate({**raw, "ts": 1_700_000_000})
    with pytest.raises(InvalidEvent, match=r"years 1\.\.9999"):
        validate({**raw, "ts": 2**62}, history=True)


def test_a_1997_file_reads_as_history_but_not_as_live_events(tmp_path: Path) -> None:
    path = _events_1997(tmp_path / "cdnow-era.jsonl")
    events = list(read_events(path, history=True))
    assert len(events) == sum(1 for _ in path.open())
    assert min(e.ts for e in events) < 946_684_800_000  # before 2000
    with pytest.raises(InvalidEvent, match=r"line 1: .*outside 2000\.\.2100"):
        next(read_events(path))


def test_models_train_and_evaluate_accept_a_1997_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _events_1997(tmp_path / "cdnow-era.jsonl")
    out = tmp_path / "out"
    assert main(["models", "train", "churn", "--events", str(path), "--out", str(out)]) == 0
    assert (out / "churn" / "churn.json").is_file()
    capsys.readouterr()
    assert main(["models", "evaluate", "churn", "--events", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["churn"]["test_users"] > 0
