"""`persona models train --lambda` (issue 17 item 2): the lambda is searched for unless pinned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persona.cli import main


def events_file(tmp_path: Path) -> Path:
    """60 users buying pairs of 9 items over four months (trains in about a second)."""
    path = tmp_path / "events.jsonl"
    day, lines = 86_400_000, []
    for u in range(60):
        for k in range(4):
            ts = 1_600_000_000_000 + (u % 7) * day + k * 30 * day
            for item in (f"i{(u + k) % 9}", f"i{(u + k + 1) % 9}"):
                event = {"type": "purchase", "user_id": f"u{u}", "ts": ts, "item_id": item}
                lines.append({**event, "event_id": f"{u}-{k}-{item}", "price": 3.0})
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("value", "says"),
    [("0", "above 0"), ("-100", "above 0"), ("nan", "above 0"), ("lots", "'auto' or a number")],
)
def test_a_bad_lambda_is_refused_with_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, says: str
) -> None:
    out = tmp_path / "m"
    events = events_file(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(
            [
                "models",
                "train",
                "recs",
                "--events",
                str(events),
                "--out",
                str(out),
                "--lambda",
                value,
            ]
        )
    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert "argument --lambda: the EASE lambda must be" in stderr and says in stderr
    assert not out.exists()


def test_lambda_is_refused_where_nothing_uses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--events", str(events_file(tmp_path)), "--out", str(tmp_path / "m"), "--lambda", "300"]
    assert main(["models", "train", "churn", *args]) == 2
    assert main(["models", "train", "recs", "--kind", "als", *args]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("--lambda sets the EASE neighbour table of recs") == 2
    assert not (tmp_path / "m").exists()


def test_a_pinned_lambda_is_what_the_artifact_is_trained_with(tmp_path: Path) -> None:
    events, out = events_file(tmp_path), tmp_path / "m"
    assert (
        main(
            [
                "models",
                "train",
                "recs",
                "--events",
                str(events),
                "--out",
                str(out),
                "--lambda",
                "300",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "recs" / "recs.json").read_text())["metrics"]
    assert (metrics["ease_lambda"], metrics["ease_lambda_by"]) == (300.0, "pinned")
    assert metrics["eval_ease_lambda"] == 300.0  # the evaluation's model is pinned too


def test_without_lambda_the_training_searches_for_it(tmp_path: Path) -> None:
    events, out = events_file(tmp_path), tmp_path / "m"
    assert main(["models", "train", "recs", "--events", str(events), "--out", str(out)]) == 0
    metrics = json.loads((out / "recs" / "recs.json").read_text())["metrics"]
    # 60 users: fewer than AUTO_MIN_USERS with more than 5 distinct items to hold out
    assert (metrics["ease_lambda"], metrics["ease_lambda_by"]) == (100.0, "too few users to search")
    assert metrics["ease_lambda_search"]["hr@10"] == {}
