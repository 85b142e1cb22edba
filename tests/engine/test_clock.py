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
