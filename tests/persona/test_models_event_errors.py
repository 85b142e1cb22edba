"""`persona models train/evaluate` name the events file in front of an InvalidEvent from
reading it ("events.jsonl: line 2: ..."); any other InvalidEvent (not from that file) was given
the file's name too, sending the reader to a file that holds nothing wrong."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from engine.events import InvalidEvent
from engine.sources import read_events
from persona.models_cli import _guarded

EVENT = {"event_id": "e1", "type": "page_view", "user_id": "u1", "ts": "2024-01-01T00:00:00Z"}


def test_only_errors_from_reading_the_events_file_name_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(EVENT) + "\nnot json\n", encoding="utf-8")
    args = argparse.Namespace(events=str(path))

    def reads(args: argparse.Namespace) -> int:
        return len(list(read_events(args.events, history=True)))

    assert _guarded(reads)(args) == 2
    said = capsys.readouterr().err
    assert said.startswith(f"persona: {path}: line 2: "), said

    def elsewhere(args: argparse.Namespace) -> int:
        raise InvalidEvent("a template's event is not one")  # not from reading the file

    assert _guarded(elsewhere)(args) == 2
    assert capsys.readouterr().err == "persona: a template's event is not one\n"

    path.write_bytes(b"\xff\x00binary")
    assert _guarded(reads)(args) == 2  # format detection reads the file too
    assert capsys.readouterr().err.startswith(f"persona: {path}: line 1: not UTF-8 text")
    path.write_bytes(b"binary\x00")
    assert _guarded(reads)(args) == 2  # its message names the file itself: once
    said = capsys.readouterr().err
    assert (
        said.startswith(f"persona: {path}: unknown event file format")
        and said.count(str(path)) == 1
    ), said
