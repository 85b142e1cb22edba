"""The future and lateness rules of engine.admission (issue 14, item 4)."""

from engine.admission import admit

WALL = 1_800_000_000_000
SKEW = 300_000
LATE = 7 * 86_400_000


def test_events_within_the_skew_are_taken_and_further_ahead_are_future():
    assert admit(WALL + SKEW, None, WALL, LATE, SKEW) is None
    reason = admit(WALL + SKEW + 1000, None, WALL, LATE, SKEW)
    assert reason is not None and reason.startswith("future:") and "300 s" in reason


def test_an_event_stamped_in_2099_is_future_whatever_the_stream_time():
    in_2099 = 4_070_908_800_000
    assert str(admit(in_2099, WALL, WALL, LATE, SKEW)).startswith("future:")


def test_lateness_is_measured_from_the_stream_time():
    assert admit(WALL - LATE, WALL, WALL, LATE, SKEW) is None
    reason = admit(WALL - LATE - 1, WALL, WALL, LATE, SKEW)
    assert reason is not None and reason.startswith("late:")


def test_a_stream_time_ahead_of_the_wall_clock_counts_as_now():
    # what earlier versions stored after an event from 2099: normal events are not late
    poisoned = 4_070_908_800_000
    assert admit(WALL - 3_600_000, poisoned, WALL, LATE, SKEW) is None
    assert str(admit(WALL - LATE - 1, poisoned, WALL, LATE, SKEW)).startswith("late:")


def test_a_replay_of_old_data_is_judged_by_its_own_stream_time():
    last_year = WALL - 365 * 86_400_000
    assert admit(last_year, last_year + 3_600_000, WALL, LATE, SKEW) is None


def test_a_time_a_whole_time_zone_ahead_names_the_offset():
    """A shop writing local time as UTC (`+01:00` meant, `Z` written; or a local clock's epoch)
    is ahead by a whole number of quarter hours: the reason says to check the offset."""
    for hours in (1, 2, 5.5, 9, 14):
        ahead = int(hours * 3_600_000) + 2_000  # and the seconds the event took to arrive
        reason = str(admit(WALL + ahead, None, WALL, LATE, SKEW))
        assert reason.startswith("future:") and "time zone" in reason, reason
        assert f"{hours:g} h" in reason, reason
    odd = str(admit(WALL + 3 * 86_400_000, None, WALL, LATE, SKEW))  # days ahead: no offset
    assert "time zone" not in odd, odd
