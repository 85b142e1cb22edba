"""`persona models experiment start`: a missing or unusable name or candidate is said at once,
before any broker is asked, with exit status 2 and no traceback."""

from __future__ import annotations

import pytest

from persona.cli import main


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["start", "--candidate", "recs-x"], "the name is 1..64 letters"),
        (["start", "a/b", "--candidate", "recs-x"], "the name is 1..64 letters"),
        (["start", "t1"], "--candidate names the version"),
    ],
)
def test_experiment_start_says_what_is_missing_before_asking_a_broker(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    """No name started an experiment named "" (its report cannot be asked for by name); no
    --candidate said `no recs version None in the registry`."""
    monkeypatch.delenv("PERSONA_BROKER_URL", raising=False)
    assert main(["models", "experiment", *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and "no broker" not in err and "Traceback" not in err


@pytest.mark.parametrize("share", ["150%", "1.5", "0", "100%", "-5%", "nan", "half", "%"])
def test_experiment_start_refuses_a_share_out_of_range_saying_the_forms(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], share: str
) -> None:
    """`--share 150%` got argparse's "invalid float value: '150%'", which says neither the
    range nor that a percentage is not taken; 1.5 was only refused after the broker was asked."""
    monkeypatch.delenv("PERSONA_BROKER_URL", raising=False)
    with pytest.raises(SystemExit) as exit:
        main(["models", "experiment", "start", "t1", "--candidate", "recs-x", f"--share={share}"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert f"--share: {share!r}" in err, err
    assert "between 0 and 1" in err and "between 0 and 100 %" in err, err
    assert "invalid float value" not in err and "Traceback" not in err


@pytest.mark.parametrize(("share", "taken"), [("0.3", 0.3), ("30%", 0.3), ("12.5 %", 0.125)])
def test_a_share_is_a_fraction_or_a_percentage(share: str, taken: float) -> None:
    from persona.models_cli import variant_share

    assert variant_share(share) == pytest.approx(taken)
