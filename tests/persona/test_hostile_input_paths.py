"""The files the tools read, named wrongly by a careless user or a hostile one: a symbolic link
loop, a FIFO without a writer, a directory, /dev/zero, and a UTF-16 file. `persona replay`,
`persona catalog import`, `persona models train` and `persona models evaluate` each refuse
them in one line naming the file, what it is, and no traceback; before any broker is asked
(the URL here answers nothing), and without opening what would block or never end.

They said "file not found" of a symbolic link loop (all four) and of a FIFO, a directory or
/dev/zero (`models train` and `evaluate`); a bad line was "line 1: ..." without the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from persona.cli import main

NO_BROKER = "kafka://127.0.0.1:1"
EVENT = '{"event_id":"e1","type":"page_view","user_id":"u1","ts":"2024-01-01T00:00:00Z"}\n'


def _run(command: str, path: Path | str, tmp_path: Path) -> list[str]:
    return {
        "replay": ["replay", str(path), "--broker", NO_BROKER],
        "catalog import": ["catalog", "import", str(path), "--broker", NO_BROKER],
        "models train": ["models", "train", "recs", "--events", str(path), "--out", str(tmp_path)],
        "models evaluate": ["models", "evaluate", "--events", str(path)],
    }[command]


COMMANDS = ("replay", "catalog import", "models train", "models evaluate")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_symbolic_link_loop_is_said_to_be_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    loop = tmp_path / "events.jsonl"
    loop.symlink_to(tmp_path / "other.jsonl")
    (tmp_path / "other.jsonl").symlink_to(loop)
    assert main(_run(command, loop, tmp_path)) == 2
    said = capsys.readouterr().err
    assert f"{loop} is a symbolic link loop" in said and "not found" not in said, said
    assert "Traceback" not in said


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", ["models train", "models evaluate"])
def test_the_models_commands_say_what_is_no_regular_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    fifo = tmp_path / "events.jsonl"
    os.mkfifo(fifo)  # no writer: opening it would wait for ever
    for path in (fifo, tmp_path, Path("/dev/zero")):
        assert main(_run(command, path, tmp_path)) == 2, path
        said = capsys.readouterr().err
        assert f"{path} is not a regular file" in said and "not found" not in said, said


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", ["replay", "models train", "models evaluate"])
def test_a_bad_line_is_said_with_its_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    utf16 = tmp_path / "events.jsonl"
    utf16.write_bytes(EVENT.encode("utf-16"))  # what a Windows editor saves as "Unicode"
    assert main(_run(command, utf16, tmp_path)) in (1, 2)
    said = capsys.readouterr().err
    assert f"persona: {utf16}: line 1: the file is UTF-16 text" in said, said
