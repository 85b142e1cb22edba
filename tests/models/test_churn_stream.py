"""The churn training set read from a file in two streaming passes is the event list's
(issue 21 item 4): the same users, features, labels and model."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from engine.events import Event
from models.churn import ChurnDataset, churn_dataset, train_churn, train_churn_on
from models.churn_stream import _plan, churn_dataset_file, scan
from tests.models.synthetic import DAY, T0, churn_events, view


def write_jsonl(path: Path, events: list[Event]) -> Path:
    with gzip.open(path, "wt") as f:
        for e in events:
            f.write(json.dumps(e.to_dict()) + "\n")
    return path


def with_views_and_a_late_row() -> list[Event]:
    """churn_events, views between the purchases, and one user's early view written last (out of
    time order in the file), plus a cancellation that training leaves out."""
    events = churn_events(120)
    events += [view(f"u{u}", f"i{u % 5}", T0 + (u % 50) * DAY + 7) for u in range(0, 120, 3)]
    events.sort(key=lambda e: e.ts)
    late = view("u4", "i9", T0 + 2 * DAY)
    cancel = Event("c1", "purchase", "u6", T0 + 3 * DAY, "i1", quantity=1, price=5.0,
                   currency="EUR", props={"cancelled": True})  # fmt: skip
    return [*events, late, cancel]


def same(a: ChurnDataset, b: ChurnDataset) -> None:
    assert a.users == b.users and a.cutoff_ms == b.cutoff_ms
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)


def test_the_file_in_two_passes_gives_the_lists_training_set(tmp_path: Path) -> None:
    events = with_views_and_a_late_row()
    path = write_jsonl(tmp_path / "events.jsonl.gz", events)
    listed = churn_dataset([e for e in events if not e.props.get("cancelled")], 90)
    streamed = churn_dataset_file(path, 90)
    same(streamed, listed)
    assert set(streamed.y.tolist()) == {0, 1} and len(streamed.users) == 120
    s = scan(path)
    _last, unordered = _plan(s, s.ts < streamed.cutoff_ms)
    assert [s.users[u] for u in unordered] == ["u4"]  # the late row took the held path


def test_a_given_cut_off_and_the_model_match(tmp_path: Path) -> None:
    events = with_views_and_a_late_row()
    kept = [e for e in events if not e.props.get("cancelled")]
    path = write_jsonl(tmp_path / "events.jsonl.gz", events)
    cut = T0 + 200 * DAY
    same(churn_dataset_file(path, 60, cut), churn_dataset(kept, 60, cut))
    mine, theirs = train_churn_on(churn_dataset_file(path, 90), 90), train_churn(kept, 90)
    assert mine.version.rsplit("-", 1)[1] == theirs.version.rsplit("-", 1)[1]
    assert (mine.coef, mine.intercept) == (theirs.coef, theirs.intercept)


def test_an_empty_file_and_a_cut_off_before_everything_say_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no events"):
        churn_dataset_file(empty)
    path = write_jsonl(tmp_path / "events.jsonl.gz", churn_events(10))
    with pytest.raises(ValueError, match="no user was active"):
        churn_dataset_file(path, 90, cutoff_ms=T0 - DAY)


def test_events_shorter_than_the_horizon_name_it_and_the_way_out(tmp_path: Path) -> None:
    """Six weeks of events against the default 90-day horizon (the demo): the error said only
    "no user was active before the cut-off", neither why nor what to change."""
    events = [view(f"u{n}", "i1", T0 + n * DAY) for n in range(42)]
    path = write_jsonl(tmp_path / "six-weeks.jsonl.gz", events)
    said = r"90-day horizon\); the events span 41 days.*--horizon-days"
    with pytest.raises(ValueError, match=said):
        churn_dataset_file(path, 90)
    with pytest.raises(ValueError, match=said):
        churn_dataset(events, 90)
