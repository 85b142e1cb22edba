"""Hostile or damaged backups for `persona restore` beyond what test_backup.py covers: a backup
whose manifest lies consistently (files no data dir holds, RocksDB files that are not RocksDB,
fields the command prints), a manifest that is a link out of the backup or never ends, another
partition count; and a data dir whose kept files are links out of it for `persona backup`.
Each is refused with a BackupError, nothing read outside the backup or the data dir, nothing left
in the target."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from persona.backup import (
    CLUSTER_SECRET,
    MANIFEST,
    BackupError,
    _copy_verified,
    _digest_problems,
    backup,
    restore,
)
from persona.state_dir import FORMAT, FORMAT_FILE, StateFormatError, partitions_of, prepare
from streams.broker import free_port
from tests.conftest import ROOT, persona_bare
from tests.persona.test_backup import _sst, _state_dir


@pytest.fixture
def backed_up(tmp_path: Path) -> tuple[Path, Path]:
    data = _state_dir(tmp_path)
    backup(data, tmp_path / "backup")
    return data, tmp_path / "backup"


def _manifest(saved: Path) -> dict[str, Any]:
    return dict(json.loads((saved / MANIFEST).read_text()))


def _plant(saved: Path, rel: str, data: bytes) -> None:
    """Add a file to the backup and list it in the manifest with its true size and digest: a
    backup made by hand to look whole."""
    path = saved / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    manifest = _manifest(saved)
    manifest["files"][rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (saved / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "rel",
    [
        "models/recs/v9/artifact.npz",  # the artifact cache: rebuilt from the registry
        "api-keys",
        "audit.log",
        "faust/v1/tables/evil.db/000001.sst",  # no <table>-<partition>.db
        "faust/v1/tables/profiles-0.db/sub/x",
        "registry/sub/x",
        "templates/recommendations.html",
    ],
)
def test_a_file_no_data_dir_holds_is_refused(
    backed_up: tuple[Path, Path], tmp_path: Path, rel: str
) -> None:
    _, saved = backed_up
    _plant(saved, rel, b"planted")
    listed = "no part of a Persona backup|are not the databases it lists"
    with pytest.raises(BackupError, match=listed):
        restore(saved, tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_a_rocksdb_file_that_is_not_rocksdb_is_refused(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    _, saved = backed_up
    sst = _sst(saved)
    rel = sst.relative_to(saved).as_posix()
    garbage = os.urandom(sst.stat().st_size)
    sst.unlink()
    _plant(saved, rel, garbage)
    with pytest.raises(BackupError, match=r"profiles-1\.db"):
        restore(saved, tmp_path / "target")
    assert not (tmp_path / "target").exists()


@pytest.mark.parametrize(
    "change",
    [
        {"rows": "many"},
        {"registry_records": -1},
        {"tables": {"profiles-0.db": 1}},  # counts that are not the databases'
        {"created": "\x1b]0;owned\x07\x1b[2J"},  # terminal escapes, printed by the command
    ],
)
def test_manifest_fields_the_command_prints_or_counts_are_checked(
    backed_up: tuple[Path, Path], tmp_path: Path, change: dict[str, Any]
) -> None:
    _, saved = backed_up
    manifest = _manifest(saved)
    manifest.update(change)
    (saved / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match="damaged or was changed"):
        restore(saved, tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_a_manifest_missing_its_counts_is_refused(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    _, saved = backed_up
    manifest = _manifest(saved)
    del manifest["rows"]  # `persona restore` printed manifest["rows"]: a KeyError traceback
    (saved / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match="damaged or was changed"):
        restore(saved, tmp_path / "target")


def test_a_manifest_that_links_out_of_the_backup_is_not_read(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    _, saved = backed_up
    outside = tmp_path / "elsewhere.json"
    (saved / MANIFEST).rename(outside)
    (saved / MANIFEST).symlink_to(outside)
    with pytest.raises(BackupError, match=r"manifest\.json is not a regular file"):
        restore(saved, tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_a_huge_manifest_is_refused_unread(backed_up: tuple[Path, Path], tmp_path: Path) -> None:
    _, saved = backed_up
    with (saved / MANIFEST).open("r+b") as out:
        out.truncate(200 << 20)  # sparse
    with pytest.raises(BackupError, match="larger than"):
        restore(saved, tmp_path / "target")


def test_a_manifest_that_is_a_fifo_is_refused_at_once(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    _, saved = backed_up
    (saved / MANIFEST).unlink()
    os.mkfifo(saved / MANIFEST)
    done = threading.Event()

    def unblock() -> None:  # if restore waits on the FIFO, feed it after a while
        deadline = time.monotonic() + 5
        while not done.is_set() and time.monotonic() < deadline:
            time.sleep(0.1)
        while not done.is_set():
            try:
                fd = os.open(saved / MANIFEST, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader yet
                time.sleep(0.05)
                continue
            os.write(fd, b"{}")
            os.close(fd)
            return

    feeder = threading.Thread(target=unblock, daemon=True)
    feeder.start()
    try:
        with pytest.raises(BackupError, match=r"manifest\.json is not a regular file"):
            restore(saved, tmp_path / "target")
    finally:
        done.set()
        feeder.join()


def test_a_backup_of_another_partition_count_is_refused(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    _, saved = backed_up  # tables of partitions 0 and 1
    with pytest.raises(BackupError, match=r"2 partitions.*PERSONA_PARTITIONS=8"):
        restore(saved, tmp_path / "target", partitions=8)
    assert not (tmp_path / "target").exists()
    restore(saved, tmp_path / "target", partitions=2)


def test_backup_reads_no_kept_file_through_a_link_out_of_the_data_dir(tmp_path: Path) -> None:
    data = _state_dir(tmp_path)
    outside = tmp_path / "someone-elses-secret"
    outside.write_text("not the data dir's\n")
    (data / CLUSTER_SECRET).unlink()
    (data / CLUSTER_SECRET).symlink_to(outside)
    with pytest.raises(BackupError, match=f"{CLUSTER_SECRET} is not a regular file"):
        backup(data, tmp_path / "b")
    assert not (tmp_path / "b").exists()


@pytest.mark.integration
def test_run_and_restore_refuse_another_partition_count_before_any_child(tmp_path: Path) -> None:
    data = _state_dir(tmp_path)  # tables of 2 partitions
    backup(data, tmp_path / "b")
    env = {"PERSONA_PARTITIONS": "4"}
    run = persona_bare(
        "run", "--no-demo", "--port", str(free_port()), "--data-dir", str(data), env=env,
        timeout=60,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "2 partitions, but PERSONA_PARTITIONS=4" in run.stderr
    assert "embedded broker" not in run.stdout
    back = persona_bare("restore", str(tmp_path / "b"), "--data-dir", str(tmp_path / "r"), env=env)
    assert back.returncode == 2 and "PERSONA_PARTITIONS=4" in back.stderr, back.stderr
    assert not (tmp_path / "r").exists()


def _dbs(**tables: range) -> list[str]:
    return [f"{name}-{n}.db" for name, numbers in tables.items() for n in numbers]


@pytest.mark.parametrize(
    ("names", "partitions", "told"),
    [
        (_dbs(profiles=range(4), catalog=range(4), popularity=range(4)), 4, None),
        (_dbs(profiles=range(4), catalog=range(4), popularity=range(4)), 2, 4),  # more before
        (_dbs(profiles=range(2), catalog=range(2), popularity=range(2)), 4, 2),  # fewer before
        (_dbs(profiles=range(1)), 2, None),  # a partial or damaged data dir tells nothing
        (_dbs(profiles=range(2), catalog=range(1), popularity=range(2)), 4, None),
        (_dbs(profiles=range(3)), 2, 3),  # a database past the count tells
        ([], 4, None),
    ],
)
def test_the_partition_count_is_told_only_by_what_proves_it(
    names: list[str], partitions: int, told: int | None
) -> None:
    """A data dir with only some databases (an engine stopped early, a damaged one) was refused
    as made with fewer partitions; only a database past the count, or both global tables whole
    for another count, tell (the missing ones are found when they open)."""
    assert partitions_of(names, partitions) == told


def _list_sparse(saved: Path, size: int) -> str:
    """A sparse file of `size` bytes in the backup, listed with its true size and a made-up
    digest (a lie that only reading all of it can find)."""
    rel = "faust/v1/tables/profiles-0.db/000777.log"
    with open(saved / rel, "wb") as out:
        out.truncate(size)
    manifest = _manifest(saved)
    manifest["files"][rel] = {"size": size, "sha256": "0" * 64}
    (saved / MANIFEST).write_text(json.dumps(manifest))
    return rel


def test_a_cheap_problem_is_told_before_any_file_is_digested(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    """A backup with a file of the wrong size is refused on that alone: its other files (here a
    sparse 256 MiB one whose digest is a lie) are not read first."""
    _, saved = backed_up
    _list_sparse(saved, 256 << 20)
    manifest = _manifest(saved)
    wrong = next(rel for rel in manifest["files"] if rel.endswith(".sst"))
    manifest["files"][wrong]["size"] += 1
    (saved / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match="has another size") as refused:
        restore(saved, tmp_path / "target")
    assert "SHA-256" not in str(refused.value)
    assert not (tmp_path / "target").exists()


@pytest.mark.timeout(120)
def test_a_backup_larger_than_the_free_space_is_refused_unread(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    """A backup whose files add up to more than the target's file system has free (here a sparse
    file 1 TiB beyond it) is refused before any file is digested or copied: reading it would
    take hours, copying it would fill the disk under a running engine."""
    _, saved = backed_up
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    _list_sparse(saved, free + (1 << 40))
    with pytest.raises(BackupError, match="free") as refused:
        restore(saved, tmp_path / "target")
    assert "needs" in str(refused.value)
    assert not (tmp_path / "target").exists()


# `persona restore` in a child whose file-size limit is far below a table file's: the kernel kills
# it (SIGXFSZ) in the middle of the copy, as a kill -9, an OOM kill or a power cut would
_KILLED_MID_COPY = (
    "import resource, signal, sys\n"
    "from persona.cli import main\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_DFL)\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def test_a_restore_killed_mid_copy_leaves_a_data_dir_nothing_starts_on(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    """A restore killed half way (no `except` runs) leaves part of the tables: `persona run` on
    it would start with some partitions missing or cut short and fold new events over them. The
    data dir is marked unfinished from before the first file to after the last; start-up, a
    backup and another restore into it refuse it, saying to remove it and restore again."""
    _, saved = backed_up
    target = tmp_path / "target"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_")}
    killed = subprocess.run(
        [sys.executable, "-B", "-c", _KILLED_MID_COPY, "restore", str(saved), "--data-dir",
         str(target)],
        cwd=ROOT, env={**clean, "PERSONA_PARTITIONS": "2"}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGXFSZ, killed.stderr
    assert any(target.rglob("*.sst"))  # part of the tables is there
    with pytest.raises(StateFormatError, match="unfinished restore") as refused:
        prepare(target)  # `persona run` and `persona worker`, under the data dir's lock
    assert f"rm -r {target}" in str(refused.value)
    with pytest.raises(BackupError, match="unfinished restore"):
        restore(saved, target)
    with pytest.raises(BackupError, match="unfinished restore"):
        backup(target, tmp_path / "again")
    assert not (tmp_path / "again").exists()


def _read_bytes() -> int:
    """Bytes this process has read through read(2) so far (/proc/self/io rchar)."""
    io = Path("/proc/self/io").read_text()
    return int(next(line for line in io.splitlines() if line.startswith("rchar:")).split()[1])


def _grown(saved: Path) -> tuple[str, dict[str, Any]]:
    """A listed file that now holds far more than its listed size: as a file still written to
    (a copy in progress, a writer appending) that grew after restore checked its size. Its
    listed digest is that of its first listed bytes."""
    manifest = _manifest(saved)
    rel = next(rel for rel in manifest["files"] if rel.endswith(".sst"))
    path = saved / rel
    listed = path.stat().st_size
    manifest["files"][rel]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    with path.open("r+b") as grow:
        grow.truncate(listed + (64 << 20))  # sparse: nothing written, 64 MiB more to read
    return rel, {**manifest, "files": {rel: manifest["files"][rel]}}


def test_a_file_that_grew_past_its_size_is_not_digested_to_its_end(
    backed_up: tuple[Path, Path],
) -> None:
    """After the sizes are checked, a file that grows (here by 64 MiB at once) is read only to
    one byte past its listed size: a file that never stops growing would be read forever."""
    _, saved = backed_up
    rel, manifest = _grown(saved)
    before = _read_bytes()
    problems = _digest_problems(saved, manifest)
    assert problems == [f"{rel} grew past its listed size while it was read"]
    assert _read_bytes() - before < 16 << 20  # not the 64 MiB it grew by


def test_a_file_that_grew_past_its_size_is_not_copied_to_its_end(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    """The copy into the data dir stops at the listed size too: a file growing as it is copied
    would fill the data dir's disk (the free space was checked against the listed sizes)."""
    _, saved = backed_up
    rel, manifest = _grown(saved)
    with pytest.raises(BackupError, match="changed while it was restored"):
        _copy_verified(saved, tmp_path, rel, manifest["files"][rel])
    assert (tmp_path / rel).stat().st_size <= manifest["files"][rel]["size"]


@pytest.mark.parametrize("kind", ["file", "symlink", "fifo"])
def test_a_file_name_with_terminal_escapes_is_shown_escaped(
    backed_up: tuple[Path, Path], tmp_path: Path, kind: str
) -> None:
    """A name in the backup the manifest does not list is told in the refusal: a name made of
    terminal control sequences (retitle the window, clear the screen) is shown escaped, never
    sent to the operator's terminal as it is."""
    _, saved = backed_up
    path = saved / "registry" / "\x1b]0;owned\x07\x1b[2Jx"
    if kind == "file":
        path.write_bytes(b"x")
    elif kind == "symlink":
        path.symlink_to("/etc/passwd")
    else:
        os.mkfifo(path)
    with pytest.raises(BackupError, match="damaged or was changed") as refused:
        restore(saved, tmp_path / "target")
    message = str(refused.value)
    assert "\x1b" not in message and "\x07" not in message
    assert "\\x1b]0;owned\\x07\\x1b[2Jx" in message
    assert not (tmp_path / "target").exists()


@pytest.mark.parametrize(
    "recorded",
    [
        {"format": FORMAT + 1, "written_by": "99.0.0", "layout": 2, "profile_pack": 3},  # newer
        {"format": "one"},  # damaged
    ],
)
def test_a_state_format_file_other_than_the_manifests_is_refused(
    backed_up: tuple[Path, Path], tmp_path: Path, recorded: dict[str, Any]
) -> None:
    """Restore checks the state format the manifest records; the backup's state-format.json,
    which `persona run` reads, must be that one: a newer or damaged one (listed with its true
    digest) was restored, and the restored data dir refused at start."""
    _, saved = backed_up
    (saved / FORMAT_FILE).unlink()
    _plant(saved, FORMAT_FILE, json.dumps(recorded).encode())
    with pytest.raises(BackupError, match=r"state-format\.json is not the state format"):
        restore(saved, tmp_path / "target")
    assert not (tmp_path / "target").exists()
