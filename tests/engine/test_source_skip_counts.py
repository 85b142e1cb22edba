"""The counts of rows skipped for an unknown event type stay bounded however many distinct types a
file holds: each distinct type (up to a line long) was a key of `ReadStats.skipped`, so a file of
distinct types held them all in memory while it was read (a 10 GB file of them, more than the
machine has)."""

from __future__ import annotations

from pathlib import Path

from engine.sources import MAX_SKIP_REASONS, ReadStats, read_events

REES = (
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
)
ROW = "2019-10-01 00:00:00 UTC,{kind},44600062,21,,shiseido,35.79,541312140,72d76fde\n"
OTTO = '{{"session": 1, "events": [{{"aid": 5, "ts": 1659304800000, "type": "{kind}"}}]}}\n'


def _stats(path: Path) -> ReadStats:
    stats = ReadStats()
    list(read_events(path, errors=[], stats=stats, history=True))
    return stats


def test_rees46_unknown_types_are_counted_under_a_bounded_number_of_keys(tmp_path: Path) -> None:
    path = tmp_path / "rees.csv"
    kinds = [f"kind{n}-" + "x" * 1000 for n in range(5 * MAX_SKIP_REASONS)]
    path.write_text(REES + ROW.format(kind="view") + "".join(ROW.format(kind=k) for k in kinds))
    stats = _stats(path)
    assert stats.events == 1
    assert sum(stats.skipped.values()) == len(kinds)
    assert len(stats.skipped) <= MAX_SKIP_REASONS + 1
    assert max(map(len, stats.skipped)) <= 100


def test_otto_unknown_types_are_counted_under_a_bounded_number_of_keys(tmp_path: Path) -> None:
    path = tmp_path / "otto.jsonl"
    kinds = [f"kind{n}-" + "x" * 1000 for n in range(5 * MAX_SKIP_REASONS)]
    path.write_text(OTTO.format(kind="clicks") + "".join(OTTO.format(kind=k) for k in kinds))
    stats = _stats(path)
    assert stats.events == 1
    assert sum(stats.skipped.values()) == len(kinds)
    assert len(stats.skipped) <= MAX_SKIP_REASONS + 1
    assert max(map(len, stats.skipped)) <= 100


def test_a_few_unknown_types_keep_their_own_counts(tmp_path: Path) -> None:
    path = tmp_path / "rees.csv"
    path.write_text(REES + ROW.format(kind="wish") * 3 + ROW.format(kind="share"))
    assert _stats(path).skipped == {"event_type:wish": 3, "event_type:share": 1}
