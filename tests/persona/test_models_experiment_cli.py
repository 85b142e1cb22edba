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
