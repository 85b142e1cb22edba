"""benchmarks/ingest.py: the rounds of `--repeat` are each printed with their ratios, and the
medians are of the rounds' own ratios."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from benchmarks.ingest import main, rounds_summary


def _round(worker: float, worker_cores: float, raw: float, raw_cores: float) -> dict[str, Any]:
    return {
        "worker": {"events_per_s": worker, "cpu_cores": {"worker": worker_cores}},
        "raw_baseline": {"events_per_s": raw, "cpu_cores": raw_cores},
    }


def test_each_round_and_the_medians_of_their_ratios() -> None:
    lines = rounds_summary(
        [
            _round(10_000, 1.0, 20_000, 1.0),  # 0.50, per core 0.50
            _round(12_000, 0.8, 20_000, 1.0),  # 0.60, per core 0.75
            _round(14_000, 1.0, 20_000, 0.5),  # 0.70, per core 0.35
        ]
    )
    assert len(lines) == 4
    assert "round 2: worker 12,000 events/s (0.80 cores)" in lines[1]
    assert lines[1].endswith("ratio 0.60, per busy core 0.75")
    assert lines[3] == "median of 3 rounds: ratio 0.60, per busy core 0.50 (range 0.35-0.75)"


@pytest.mark.parametrize("repeat", ["0", "-3"])
def test_fewer_than_one_round_is_refused_with_a_clear_error(
    repeat: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["ingest", "--repeat", repeat])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    assert f"--repeat must be at least 1 (got {repeat})" in capsys.readouterr().err
