"""The demo load's parts (persona/demo_load.py): its segments stay within the event-time span a
resumed load may replay, its progress file, and the positions it reads from a real RocksDB."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

from rocksdict import Options, Rdict

from engine.events import Event
from persona.demo_load import (
    AHEAD,
    Flight,
    FoldedPositions,
    Segment,
    may_fly,
    read_progress,
    segments,
    write_progress,
)
from streams.adopt import DEMO_PROGRESS, start_fresh
from streams.positions import position_key
from streams.readers import table_dir

HOUR = 3_600_000


def _events(times: list[int]) -> list[Event]:
    return [Event(f"e{n}", "product_view", f"u{n % 7}", ts, "i1") for n, ts in enumerate(times)]


def _wobbly_times(n: int, seed: int) -> list[int]:
    """Mostly increasing event times with jitter, gaps of days and a few far-out stragglers."""
    rng = random.Random(seed)
    now, out = 1_000 * HOUR, []
    for _ in range(n):
        now += rng.choice((0, 1, 5, 60)) * 60_000 + (rng.random() < 0.002) * 72 * HOUR
        out.append(now - rng.randrange(6 * HOUR) - (rng.random() < 0.001) * 400 * HOUR)
    return out


def test_segments_cover_every_event_once_in_file_order_from_the_start() -> None:
    events = _events(_wobbly_times(5_000, 1))
    for start in (0, 1, 1_234, 4_999, 5_000):
        parts = list(segments(events, start, 300, 24 * HOUR))
        assert [e for s in parts for e in s.events] == events[start:]
        assert all(s.first == prev.end for prev, s in itertools.pairwise(parts))
        assert not parts or parts[0].first == start


def test_a_segment_holds_at_most_the_count_and_spans_at_most_the_bound() -> None:
    times = _wobbly_times(5_000, 2)
    span = 24 * HOUR
    for start in (0, 777):
        for s in segments(_events(times), start, 300, span):
            newest = max(times[: s.end])
            assert s.newest == newest and s.oldest == min(e.ts for e in s.events)
            assert len(s.events) <= 300
            assert newest - s.oldest <= span or len(s.events) == 1  # a straggler alone


def test_segments_in_flight_together_never_span_more_than_the_bound() -> None:
    """What a resumed load replays (every segment in flight at a stop) lies within `span` of the
    newest event time produced: no replayed event can be late by more than that."""
    times = _wobbly_times(8_000, 3)
    span = 48 * HOUR
    flights: list[Flight] = []
    flown = 0
    for s in segments(_events(times), 0, 400, span // AHEAD):
        while flights and not may_fly(flights, s, span):
            flights.pop(0)  # the oldest is folded first
        flown += bool(flights)
        flights.append(Flight(s.end, {}, s.oldest))
        assert len(flights) <= AHEAD
        if len(flights) > 1 or s.newest - s.oldest <= span:
            assert s.newest - min(f.oldest for f in flights) <= span
    assert flown > 10  # segments do fly together: the load is pipelined


def test_may_fly_refuses_more_than_ahead_segments_and_a_wider_span() -> None:
    seg = Segment(10, _events([100 * HOUR]), 100 * HOUR, 100 * HOUR)
    near, far = Flight(5, {}, 90 * HOUR), Flight(5, {}, 10 * HOUR)
    assert may_fly([], seg, 1)
    assert may_fly([near], seg, 10 * HOUR)
    assert not may_fly([near], seg, 10 * HOUR - 1)
    assert not may_fly([far], seg, 10 * HOUR)
    assert not may_fly([near] * AHEAD, seg, 100 * HOUR)


def _kept_tables(data: Path) -> None:
    (table_dir(data) / "profiles-0.db").mkdir(parents=True)


def test_progress_is_read_back_only_for_the_same_demo_file_and_kept_tables(tmp_path: Path) -> None:
    write_progress(tmp_path, 14_303, "abc")
    assert oct((tmp_path / DEMO_PROGRESS).stat().st_mode)[-3:] == "600"
    assert read_progress(tmp_path, "abc") == 0  # no kept tables: the state is not there
    _kept_tables(tmp_path)
    assert read_progress(tmp_path, "abc") == 14_303
    assert read_progress(tmp_path, "another demo file") == 0
    for damaged in ("{", "[]", '{"events": -1, "orders_sha256": "abc"}',
                    '{"events": true, "orders_sha256": "abc"}'):  # fmt: skip
        (tmp_path / DEMO_PROGRESS).write_text(damaged)
        assert read_progress(tmp_path, "abc") == 0, damaged
    write_progress(tmp_path, 20_000, "abc")
    assert json.loads((tmp_path / DEMO_PROGRESS).read_text())["events"] == 20_000
    start_fresh(tmp_path)  # --fresh forgets the progress with the state
    assert not (tmp_path / DEMO_PROGRESS).exists()


def test_folded_positions_reads_the_positions_the_worker_stores(tmp_path: Path) -> None:
    paths = [table_dir(tmp_path) / f"profiles-{p}.db" for p in range(2)]
    paths[0].parent.mkdir(parents=True)
    primaries = [Rdict(str(p), Options(raw_mode=True)) for p in paths]
    positions = FoldedPositions(tmp_path, 2)
    try:
        ends = {("cart", 0): 40, ("clickstream", 1): 7}
        assert not positions.reached(ends)  # nothing folded yet
        primaries[0].put(position_key("cart"), b"40")
        primaries[1].put(position_key("clickstream"), b"6")
        assert not positions.reached(ends)  # one record of clickstream[1] still to fold
        primaries[1].put(position_key("clickstream"), b"9")
        assert positions.reached(ends)
        assert not positions.reached({("cart", 0): 41})
    finally:
        positions.close()
        for db in primaries:
            db.close()
    assert not (tmp_path / "demo-secondary").exists()  # its secondaries are removed
