"""`persona models train ... --out DIR`: what it writes over, and when a bad DIR is said.

A data scientist points `--out` at a folder of their own work: `train recs --out work` writes
`work/recs/`, and only the artifact's files there may be replaced (it used to remove the whole
folder, notes and all). A `--out` that cannot be written is said before minutes of training,
not after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.bundle import load_model
from persona.cli import main

DAY = 86_400_000


def events_file(tmp_path: Path) -> Path:
    """60 users buying pairs of 9 items, a third of them once only (churned at a 30-day
    horizon), the rest every 30 days for four months: both models train in about a second."""
    path = tmp_path / "events.jsonl"
    lines = []
    for u in range(60):
        for k in range(4 if u % 3 else 1):
            ts = 1_600_000_000_000 + (u % 7) * DAY + k * 30 * DAY
            for item in (f"i{(u + k) % 9}", f"i{(u + k + 1) % 9}"):
                event = {"type": "purchase", "user_id": f"u{u}", "ts": ts, "item_id": item}
                lines.append({**event, "event_id": f"{u}-{k}-{item}", "price": 3.0})
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def train(*args: str) -> int:
    return main(["models", "train", *args])


def test_a_folder_with_other_files_is_not_wiped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "work" / "recs" / "notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("a week of notes\n")
    events = events_file(tmp_path)
    assert train("recs", "--events", str(events), "--out", str(tmp_path / "work")) == 2
    err = capsys.readouterr().err
    assert notes.read_text() == "a week of notes\n"
    assert "notes.txt" in err and "Traceback" not in err
    assert "training recs" not in err  # refused before training


def test_training_again_into_the_same_folder_replaces_the_artifact(tmp_path: Path) -> None:
    events = events_file(tmp_path)
    out = tmp_path / "work"
    assert train("recs", "--events", str(events), "--out", str(out), "--lambda", "100") == 0
    first = load_model(out / "recs").version
    assert train("recs", "--events", str(events), "--out", str(out), "--lambda", "300") == 0
    assert sorted(p.name for p in (out / "recs").iterdir()) == ["recs.json", "recs.npz"]
    assert load_model(out / "recs").version != first


def test_a_churn_folder_loses_the_stale_skops_of_an_earlier_kind(tmp_path: Path) -> None:
    """gbm writes churn.json + churn.skops; logistic then writes churn.json alone: the old
    churn.skops must not stay beside it (`publish` would take the folder for a broken gbm)."""
    events = events_file(tmp_path)
    out = tmp_path / "work"
    common = ("churn", "--events", str(events), "--out", str(out), "--horizon-days", "30")
    assert train(*common, "--kind", "gbm") == 0
    assert (out / "churn" / "churn.skops").is_file()
    assert train(*common) == 0
    assert sorted(p.name for p in (out / "churn").iterdir()) == ["churn.json"]
    assert load_model(out / "churn").name == "churn"


@pytest.mark.parametrize("form", [("recs",), ()])
def test_an_out_through_a_file_is_said_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], form: tuple[str, ...]
) -> None:
    events = events_file(tmp_path)
    a_file = tmp_path / "afile"
    a_file.write_text("")
    horizon = ("--horizon-days", "30")
    code = train(*form, "--events", str(events), "--out", str(a_file / "models"), *horizon)
    err = capsys.readouterr().err
    assert code != 0
    assert "Not a directory" in err and str(a_file) in err and "Traceback" not in err
    assert "training recs" not in err and "[models.train] read" not in err


@pytest.mark.parametrize("form", [("recs",), ("all",)])
def test_an_out_where_no_folder_can_be_made_says_so_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], form: tuple[str, ...]
) -> None:
    """`--out /proc/x`: /proc takes no new folder, whoever asks (root's os.access says yes).
    It was found after training, as "file not found: /proc/x"."""
    events = events_file(tmp_path)
    code = train(*form, "--events", str(events), "--out", "/proc/x", "--horizon-days", "30")
    err = capsys.readouterr().err
    assert code == 2, err
    assert "/proc/x" in err and "no folder can be made in /proc" in err, err
    assert "file not found" not in err and "Traceback" not in err
    assert "training recs" not in err and "[models.train] read" not in err


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("empty.csv", ""),
        (
            "header.csv",
            "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n",
        ),
        (
            "guests.csv",
            "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,"
            "CustomerID,Country\n536365,85123A,HEART,6,2010-12-01 08:26:00,2.55,,United Kingdom\n",
        ),
    ],
)
@pytest.mark.parametrize("model", ["recs", "churn", "all"])
def test_a_file_without_events_is_named_with_what_was_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, model: str
) -> None:
    """An empty file, a header alone or rows that are no events (UCI guest orders) said
    `no item signals to train on` (recs) or `no events to train on` (churn), naming neither
    the file nor what was in it."""
    path = tmp_path / name
    path.write_text(text)
    assert train(model, "--events", str(path), "--out", str(tmp_path / "m")) == 2
    err = capsys.readouterr().err
    assert f"{path}: no events" in err, err
    assert "Traceback" not in err
    if name == "guests.csv":
        assert "1 data row" in err and "customer" in err.lower(), err
    assert not (tmp_path / "m" / model).exists()
