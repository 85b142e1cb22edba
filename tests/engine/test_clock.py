from engine.clock import EventTimeClock, ManualClock


def test_event_time_clock_follows_newest_event_never_ahead_of_wall():
    wall = ManualClock(10_000)
    clock = EventTimeClock(wall)
    assert clock.now_ms() == 10_000
    clock.observe(5_000)
    clock.observe(4_000)
    assert clock.now_ms() == 5_000
    clock.observe(50_000)
    assert clock.now_ms() == 10_000
    wall.advance(100_000)
    assert clock.now_ms() == 50_000


def test_nothing_is_behind_before_the_first_event():
    clock = EventTimeClock(ManualClock(10_000_000))
    assert clock.behind(0) == 0
    clock.observe(5_000_000)
    assert clock.behind(1_000_000) == 4_000_000
    assert clock.behind(6_000_000) == 0
