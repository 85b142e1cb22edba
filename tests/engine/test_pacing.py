"""engine.pacing.Pacer on a controllable clock."""

from __future__ import annotations

from engine.pacing import Pacer


def test_a_run_rests_in_proportion_to_its_length() -> None:
    wall = [100.0]
    pacer = Pacer(19.0, lambda: wall[0])
    assert pacer.due()  # nothing ran yet
    pacer.start()
    wall[0] += 2.0  # the run took 2 s
    pacer.done()
    assert not pacer.due()
    wall[0] += 37.9
    assert not pacer.due()
    wall[0] += 0.1  # 19 x 2 s after it ended
    assert pacer.due()


def test_done_without_start_changes_nothing() -> None:
    wall = [0.0]
    pacer = Pacer(19.0, lambda: wall[0])
    pacer.done()
    assert pacer.due()
    pacer.start()
    pacer.done()  # an instant run: due again at once
    assert pacer.due()
