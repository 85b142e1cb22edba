"""`persona backup DIR` / `persona restore DIR`: every table row and registry record comes back,
a backup taken while the tables are written is consistent per partition database, and a damaged
or changed backup, or a data dir that holds anything, is refused without writing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from pathlib import Path
from typing import cast

import pytest
from rocksdict import AccessType, Options, Rdict, WriteBatch

from persona.backup import CLUSTER_SECRET, LOCAL_KEY, MANIFEST, BackupError, backup, restore
from persona.state_dir import FORMAT, FORMAT_FILE, StateFormatError, prepare
from streams.keys import FAUST_OFFSET_KEY
from streams.readers import table_dir
from streams.registry_copy import REGISTRY_COPY_DIR, RegistryCopy
from tests.conftest import persona_bare
from tests.persona.test_keep_state import _cli, _fill, _secret, _settled, _tables
from tests.persona.test_run import _running

# a stopped data dir of 2 partitions: the global tables (catalog, popularity) hold both
DBS = (
    "profiles-0.db",
    "profiles-1.db",
    "catalog-0.db",
    "catalog-1.db",
    "popularity-0.db",
    "popularity-1.db",
    "clock-1.db",
)
ENTRIES = [
    ("chunk/v1/recs.npz/0/1", b"\x00chunk", [("persona-sig", b"s1")]),
    ("version/v1", b'{"name": "recs"}', [("persona-sig", b"s2")]),
    ("active/recs", b'{"version": "v1"}', []),
]


def rows_of(data_dir: Path) -> dict[str, dict[bytes, bytes]]:
    """Every row of every table partition database of a data dir (opened read-only)."""
    out: dict[str, dict[bytes, bytes]] = {}
    for path in sorted(table_dir(data_dir).glob("*.db")):
        db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
        out[path.name] = {cast(bytes, k): cast(bytes, v) for k, v in db.items()}  # raw mode
        db.close()
    return out


def registry_of(data_dir: Path) -> list[tuple[str, bytes | None, list[tuple[str, bytes]]]]:
    copy = RegistryCopy(data_dir / REGISTRY_COPY_DIR, read_only=True)
    try:
        return [(e.key, e.value, e.headers) for e in copy.entries()]
    finally:
        copy.close()


def _state_dir(root: Path) -> Path:
    """A stopped data dir with real RocksDB tables, a registry copy, secrets and its format."""
    data = root / "data"
    data.mkdir(mode=0o700)
    prepare(data)
    table_dir(data).mkdir(parents=True)
    for n, name in enumerate(DBS):
        db = Rdict(str(table_dir(data) / name), Options(raw_mode=True))
        for i in range(300 * (n + 1)):
            db[b"u:user-%d" % i] = os.urandom(40)
        db[FAUST_OFFSET_KEY] = b"1234"
        db.close()
    registry = RegistryCopy(data / REGISTRY_COPY_DIR)
    for key, value, headers in ENTRIES:
        registry.put(key, value, headers)
    registry.close()
    for name in (LOCAL_KEY, CLUSTER_SECRET):
        (data / name).write_text(f"{name}-secret\n")
        (data / name).chmod(0o600)
    return data


@pytest.fixture
def backed_up(tmp_path: Path) -> tuple[Path, Path]:
    data = _state_dir(tmp_path)
    backup(data, tmp_path / "backup")
    return data, tmp_path / "backup"


def _modes(root: Path) -> set[tuple[str, int]]:
    found = {("dir", root.stat().st_mode & 0o777)}
    for where, dirs, files in os.walk(root):
        found |= {("dir", (Path(where) / d).stat().st_mode & 0o777) for d in dirs}
        found |= {("file", (Path(where) / f).stat().st_mode & 0o777) for f in files}
    return found


def test_restore_brings_back_every_row_record_and_secret(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    data, saved = backed_up
    manifest = json.loads((saved / MANIFEST).read_text())
    assert manifest["tables"] == {name: 300 * (n + 1) + 1 for n, name in enumerate(DBS)}
    assert manifest["registry_records"] == len(ENTRIES)
    assert manifest["kept_files"] == [FORMAT_FILE, LOCAL_KEY, CLUSTER_SECRET]
    assert manifest["state_format"]["format"] == FORMAT
    assert _modes(saved) == {("dir", 0o700), ("file", 0o600)}
    restored = tmp_path / "new" / "data"
    restore(saved, restored)
    assert rows_of(restored) == rows_of(data)
    assert registry_of(restored) == registry_of(data) != []
    for name in (FORMAT_FILE, LOCAL_KEY, CLUSTER_SECRET):
        assert (restored / name).read_bytes() == (data / name).read_bytes()
    assert _modes(restored) == {("dir", 0o700), ("file", 0o600)}


def test_backup_while_the_tables_are_written_is_consistent_per_database(tmp_path: Path) -> None:
    """A writer rewrites every row of a database in one write batch, round after round, as the
    fold writes profiles with their input positions: the copy must hold one round, never rows
    of two."""
    data = _state_dir(tmp_path)
    primary = Rdict(str(table_dir(data) / "profiles-0.db"), Options(raw_mode=True))
    stop = threading.Event()
    rounds = [0]

    def write() -> None:
        while not stop.is_set():
            rounds[0] += 1
            batch = WriteBatch(raw_mode=True)
            for i in range(500):
                batch.put(b"u:user-%d" % i, b"round-%d" % rounds[0])
            primary.write(batch)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        done = 0  # a round written before each backup starts and after the previous one ended
        for n in range(3):
            while rounds[0] <= done + 5 and writer.is_alive():
                stop.wait(0.01)
            backup(data, tmp_path / f"b{n}")
            done = rounds[0]
    finally:
        stop.set()
        writer.join()
        primary.close()
    seen = set()
    for n in range(3):
        restore(tmp_path / f"b{n}", tmp_path / f"r{n}")
        profiles = rows_of(tmp_path / f"r{n}")["profiles-0.db"]
        values = {v for k, v in profiles.items() if k.startswith(b"u:")}
        assert len(values) == 1 and values != {b""}, values
        seen |= values
    assert len(seen) == 3  # three different moments, each one whole


def test_backup_refuses_a_non_empty_directory_and_a_dir_without_state(tmp_path: Path) -> None:
    data = _state_dir(tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("mine")
    with pytest.raises(BackupError, match="is not empty"):
        backup(data, tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep"]
    (tmp_path / "nothing").mkdir()
    with pytest.raises(BackupError, match="no Persona state"):
        backup(tmp_path / "nothing", tmp_path / "b")
    assert not (tmp_path / "b").exists()  # a failed backup leaves no half directory


def test_a_file_system_error_is_a_message_not_a_traceback(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    _, saved = backed_up
    (tmp_path / "a-file").write_text("")
    with pytest.raises(BackupError, match=r"cannot restore .* Not a directory"):
        restore(saved, tmp_path / "a-file" / "data")
    with pytest.raises(BackupError, match=r"cannot back up .* Not a directory"):
        backup(backed_up[0], tmp_path / "a-file" / "backup")


def test_restore_refuses_a_non_empty_data_dir(backed_up: tuple[Path, Path], tmp_path: Path) -> None:
    _, saved = backed_up
    target = tmp_path / "other"
    target.mkdir()
    (target / "local-api-key").write_text("theirs")
    with pytest.raises(BackupError, match="is not empty"):
        restore(saved, target)
    assert [p.name for p in target.iterdir()] == ["local-api-key"]
    assert (target / "local-api-key").read_text() == "theirs"


def _sst(saved: Path) -> Path:
    return next((saved / "faust" / "v1" / "tables" / "profiles-1.db").glob("*.sst"))


def _flip_a_byte(saved: Path) -> None:
    path = _sst(saved)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def _truncate(saved: Path) -> None:
    path = _sst(saved)
    path.write_bytes(path.read_bytes()[:-10])


def _remove_a_file(saved: Path) -> None:
    (saved / CLUSTER_SECRET).unlink()


def _add_a_file(saved: Path) -> None:
    (saved / "faust" / "v1" / "tables" / "profiles-0.db" / "000099.sst").write_bytes(b"x")


def _add_a_symlink(saved: Path) -> None:
    (saved / "faust" / "passwd").symlink_to("/etc/passwd")


def _rewrite_manifest(saved: Path, change: dict[str, object]) -> None:
    manifest = json.loads((saved / MANIFEST).read_text())
    manifest.update(change)
    (saved / MANIFEST).write_text(json.dumps(manifest))


def _list_a_path_outside(saved: Path) -> None:
    manifest = json.loads((saved / MANIFEST).read_text())
    entry = manifest["files"].pop(LOCAL_KEY)
    manifest["files"]["../" + LOCAL_KEY] = entry
    (saved / MANIFEST).write_text(json.dumps(manifest))


def _remove_the_manifest(saved: Path) -> None:
    (saved / MANIFEST).unlink()


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        (_flip_a_byte, "has another SHA-256"),
        (_truncate, "has another size"),
        (_remove_a_file, f"{CLUSTER_SECRET} is missing"),
        (_add_a_file, "000099.sst is not in the manifest"),
        (_add_a_symlink, "faust/passwd is a symbolic link"),
        (_list_a_path_outside, "lists '../local-api-key' wrongly"),
        (lambda s: _rewrite_manifest(s, {"files": []}), "has no file list"),
        (lambda s: (s / MANIFEST).write_text("{"), "cannot be read"),
        (_remove_the_manifest, "not a Persona backup"),
        (lambda s: _rewrite_manifest(s, {"backup_format": 99}), "backup format 99"),
    ],
)
def test_a_damaged_or_changed_backup_is_refused_and_nothing_written(
    backed_up: tuple[Path, Path], tmp_path: Path, attack: object, message: str
) -> None:
    _, saved = backed_up
    assert callable(attack)
    attack(saved)
    with pytest.raises(BackupError, match=re.escape(message)):
        restore(saved, tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_a_backup_of_a_newer_state_format_is_refused(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    _, saved = backed_up
    newer = {"format": FORMAT + 1, "written_by": "99.0.0", "layout": 2, "profile_pack": 3}
    _rewrite_manifest(saved, {"state_format": newer})
    with pytest.raises(StateFormatError, match=re.escape("written by persona 99.0.0")):
        restore(saved, tmp_path / "target")
    assert not (tmp_path / "target").exists()


def _persona(*args: str) -> subprocess.CompletedProcess[str]:
    # the partition count of _state_dir's tables (a restore checks it against the setting)
    return persona_bare(*args, env={"PERSONA_PARTITIONS": "2"}, timeout=300)


def test_the_commands_say_what_they_did_and_refuse_with_exit_2(tmp_path: Path) -> None:
    data = _state_dir(tmp_path)
    done = _persona("backup", str(tmp_path / "b"), "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    assert f"{len(ENTRIES)} model registry records" in done.stdout
    assert "personal data and secrets" in done.stdout
    again = _persona("backup", str(tmp_path / "b"), "--data-dir", str(data))
    assert again.returncode == 2 and "is not empty" in again.stderr
    done = _persona("restore", str(tmp_path / "b"), "--data-dir", str(tmp_path / "r"))
    assert done.returncode == 0, done.stderr
    assert "persona run --data-dir" in done.stdout
    _flip_a_byte(tmp_path / "b")
    bad = _persona("restore", str(tmp_path / "b"), "--data-dir", str(tmp_path / "r2"))
    assert bad.returncode == 2 and "damaged or was changed" in bad.stderr


@pytest.mark.integration
def test_a_backup_of_a_running_engine_restores_into_another_data_dir(tmp_path: Path) -> None:
    """Under `persona run`: events folded, two model versions, one active, an experiment; a
    backup while it runs; restored into another data dir, every table row and registry record
    is there, and `persona run` on it answers the same profiles and models."""
    data, env = tmp_path / "data", {"PERSONA_PARTITIONS": "2"}
    with _running(data, tmp_path / "first.log", env) as run:
        _fill(run, data, tmp_path / "first.log", tmp_path)
        before = _settled(run, _secret(data))
        said = _cli(data, "backup", str(tmp_path / "backup"), "--data-dir", str(data))
        assert "model registry records" in said
    restored = tmp_path / "elsewhere" / "data"
    _cli(data, "restore", str(tmp_path / "backup"), "--data-dir", str(restored))
    assert _tables(restored) == _tables(data)  # every row but the old broker's bookkeeping
    assert registry_of(restored) == registry_of(data) != []
    assert _secret(restored) == _secret(data)
    with _running(restored, tmp_path / "restored.log", env) as run:
        assert _settled(run, _secret(restored)) == before  # profiles, models, experiment
