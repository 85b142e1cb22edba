"""`persona replay` of a file with no event in it (empty, an empty gzip, blank lines only, a CSV
header alone, only rows a format skips) sent 0 events and exited 0 without a word. It is refused
naming the file and what was read (as `persona models train` does), exit 2, before any broker is
asked (the URL here answers nothing: asking it would be a broker error, exit 1)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from engine.sources import UCI_HEADER
from persona.cli import main

NO_BROKER = "kafka://127.0.0.1:9"


def _files(tmp: Path) -> dict[Path, str]:
    header = ",".join(UCI_HEADER) + "\n"
    guest = "536365,85123A,LAMP,6,2010-12-01 08:26,2.55,,United Kingdom\n"
    files = {
        tmp / "empty.jsonl": "",
        tmp / "blank.jsonl": "\n  \n\r\n\n",
        tmp / "header.csv": header,
        tmp / "guests.csv": header + guest * 3,
    }
    for path, text in files.items():
        path.write_text(text)
    (tmp / "empty.jsonl.gz").write_bytes(gzip.compress(b""))
    (tmp / "blank.jsonl.gz").write_bytes(gzip.compress(b"\n" * 1000))
    return {
        tmp / "empty.jsonl": "an empty file",
        tmp / "blank.jsonl": "jsonl, 0 data rows",
        tmp / "header.csv": "uci, 0 data rows",
        tmp / "guests.csv": "uci, 3 data rows, skipped: 3 guest orders (no CustomerID)",
        tmp / "empty.jsonl.gz": "jsonl, 0 data rows",
        tmp / "blank.jsonl.gz": "jsonl, 0 data rows",
    }


def test_replay_of_a_file_without_events_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path, said in _files(tmp_path).items():
        assert main(["replay", str(path), "--broker", NO_BROKER]) == 2, path
        err = capsys.readouterr().err
        assert f"persona: {path}: no events to replay ({said})" in err, err
        assert "broker" not in err, err


def test_replay_of_a_file_with_events_still_reaches_for_the_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The check reads up to the first event and hands it on: the broker is asked (a broker
    error here, exit 1), not a refusal of the file."""
    path = tmp_path / "events.jsonl"
    event = {"event_id": "e1", "type": "page_view", "user_id": "u1", "ts": 1_700_000_000_000}
    path.write_text("\n\n" + json.dumps(event) + "\n")
    assert main(["replay", str(path), "--broker", NO_BROKER]) == 1
    err = capsys.readouterr().err
    assert "broker error" in err and "no events" not in err, err
