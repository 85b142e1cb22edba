"""RFC 3339 `ts` strings read exactly: the same instant as a string and as epoch milliseconds is
the same event time, whatever the offset, and a leap second is a time, not a refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from engine.events import InvalidEvent, parse_ts


def _rfc3339(ms: int, offset_minutes: int = 0) -> str:
    tz = timezone(timedelta(minutes=offset_minutes))
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.astimezone(tz).isoformat(timespec="milliseconds")


@pytest.mark.parametrize(
    "ms",
    [
        2170763056581,  # read as ...580 when the float product was truncated
        1704067200001,
        1700000000999,
        946684800001,
        4102444799999,
    ],
)
@pytest.mark.parametrize("offset", [0, 14 * 60, -12 * 60, 5 * 60 + 45])
def test_a_string_reads_as_the_same_milliseconds_as_the_integer(ms: int, offset: int) -> None:
    assert parse_ts(_rfc3339(ms, offset)) == parse_ts(ms) == ms


def test_every_millisecond_of_a_second_reads_exactly() -> None:
    base = 2170763056000
    wrong = [ms for ms in range(base, base + 1000) if parse_ts(_rfc3339(ms)) != ms]
    assert wrong == []


def test_sub_millisecond_fractions_are_dropped_not_rounded_up() -> None:
    assert parse_ts("2024-01-01T00:00:00.999999Z") == 1704067200999
    assert parse_ts("2024-01-01T00:00:00.123456789Z") == 1704067200123


def test_history_before_1970_floors_to_the_millisecond() -> None:
    assert parse_ts("1969-12-31T23:59:59.9995Z", history=True) == -1


@pytest.mark.parametrize(
    ("text", "same_as"),
    [
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59Z"),
        ("2016-12-31T23:59:60.5Z", "2016-12-31T23:59:59.5Z"),
        ("2017-01-01T05:29:60+05:30", "2016-12-31T23:59:59Z"),
    ],
)
def test_a_leap_second_is_read_as_the_second_before_it(text: str, same_as: str) -> None:
    """RFC 3339 allows second 60 (a leap second); epoch time has no such second, so it is read
    like POSIX time reads it: as the last second of the minute repeated."""
    assert parse_ts(text) == parse_ts(same_as)


@pytest.mark.parametrize("text", ["2016-12-31T23:59:61Z", "2016-12-31T23:60:00Z"])
def test_other_out_of_range_times_are_still_refused(text: str) -> None:
    with pytest.raises(InvalidEvent, match="not RFC 3339"):
        parse_ts(text)
