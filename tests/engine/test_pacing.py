"""engine.pacing.Pacer on a controllable clock."""

from __future__ import annotations

from engine.pacing import Pacer


def test_a_run_rests_in_proportion_to_its_length() -> None:
    wall = [100.0]
    pacer = Pacer(19.0, lambda: wall[0])
    assert pacer.due()  # nothing ran yet
    with pacer.running():
        wall[0] += 2.0  # the run took 2 s
    assert not pacer.due()
    wall[0] += 37.9
    assert not pacer.due()
    wall[0] += 0.1  # 19 x 2 s after it ended
    assert pacer.due()


def test_a_failed_run_rests_too_and_an_instant_one_not_at_all() -> None:
    wall = [0.0]
    pacer = Pacer(19.0, lambda: wall[0])
    with pacer.running():
        pass  # an instant run: due again at once
    assert pacer.due()
    try:
        with pacer.running():
            wall[0] += 1.0
            raise RuntimeError("the run failed")
    except RuntimeError:
        pass
    wall[0] += 18.9
    assert not pacer.due()
    wall[0] += 0.1
    assert pacer.due()
