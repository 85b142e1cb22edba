"""State format versions: a data dir records what wrote it; an earlier release's data dir is taken
over, a newer one is refused at start-up with both versions named and nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persona.state_dir import (
    FORMAT,
    FORMAT_FILE,
    StateFormatError,
    current,
    persona_version,
    prepare,
    read_format,
)
from tests.conftest import CLUSTER_SECRET, persona_bare

NEWER = {"format": FORMAT + 1, "written_by": "99.0.0", "layout": 2, "profile_pack": 3}


_persona = persona_bare


def test_a_new_data_dir_gets_this_releases_format_0600(tmp_path: Path) -> None:
    assert prepare(tmp_path) is None
    path = tmp_path / FORMAT_FILE
    assert json.loads(path.read_text()) == current().to_dict()
    assert current().written_by == persona_version() and current().format == FORMAT
    assert path.stat().st_mode & 0o777 == 0o600
    assert prepare(tmp_path) is None and read_format(tmp_path) == current()


def test_an_earlier_releases_data_dir_is_read_and_recorded(tmp_path: Path) -> None:
    (tmp_path / "faust").mkdir()  # state, no state-format.json: what releases before wrote
    note = prepare(tmp_path)
    assert note is not None and f"no {FORMAT_FILE}" in note and "format 0" in note
    assert read_format(tmp_path) == current()


def test_an_earlier_format_is_rewritten(tmp_path: Path) -> None:
    older = {**current().to_dict(), "format": FORMAT - 1, "written_by": "0.0.1"}
    (tmp_path / FORMAT_FILE).write_text(json.dumps(older))
    assert prepare(tmp_path) == f"the data dir {tmp_path}: state format {FORMAT - 1} -> {FORMAT}"
    assert read_format(tmp_path) == current()


@pytest.mark.parametrize("part", ["format", "layout", "profile_pack"])
def test_a_newer_format_is_refused_and_left_alone(tmp_path: Path, part: str) -> None:
    newer = {**current().to_dict(), "written_by": "99.0.0", part: current().to_dict()[part] + 1}
    text = json.dumps(newer)
    (tmp_path / FORMAT_FILE).write_text(text)
    with pytest.raises(StateFormatError) as refused:
        prepare(tmp_path)
    message = str(refused.value)
    assert "persona 99.0.0" in message and f"this persona {persona_version()}" in message
    assert f"{part} {newer[part]} > {newer[part] - 1}" in message
    assert "--data-dir" in message  # what to do
    assert (tmp_path / FORMAT_FILE).read_text() == text


@pytest.mark.parametrize(
    "content", ["{", "[]", '{"format": "1"}', json.dumps({**NEWER, "written_by": ""})]
)
def test_a_damaged_format_file_is_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / FORMAT_FILE).write_text(content)
    with pytest.raises(StateFormatError, match="damaged"):
        prepare(tmp_path)


def test_persona_run_refuses_a_newer_data_dir_before_starting_anything(tmp_path: Path) -> None:
    (tmp_path / FORMAT_FILE).write_text(json.dumps(NEWER))
    done = _persona("run", "--no-demo", "--data-dir", str(tmp_path), "--port", "1")
    assert done.returncode == 2
    assert "written by persona 99.0.0" in done.stderr and persona_version() in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [FORMAT_FILE]  # no broker, no key


def test_persona_worker_refuses_a_newer_data_dir(tmp_path: Path) -> None:
    (tmp_path / FORMAT_FILE).write_text(json.dumps(NEWER))
    done = _persona(
        "worker", "--broker", "kafka://127.0.0.1:1", "--data-dir", str(tmp_path),
        env={"PERSONA_CLUSTER_SECRET": CLUSTER_SECRET},  # checked first: see test_cluster_secret
    )  # fmt: skip
    assert done.returncode == 2
    assert "written by persona 99.0.0" in done.stderr and f"format {FORMAT}" in done.stderr
