"""`persona backup DIR` and `persona restore DIR`: a consistent copy of a data dir's state.

A backup holds, with the data dir's relative layout:
- every table partition's RocksDB (`faust/v1/tables/<table>-<p>.db`), copied row by row from a
  RocksDB *secondary* (as the readers open them, `streams.readers`): the worker keeps writing
  while it runs, and a secondary sees one point of its primary's history, a write-batch boundary,
  from one catch-up to the next. Every partition database is therefore a state the worker was
  really in: each batch's profile writes are one write batch, and a partition's input positions
  are stored only after the profiles they cover (`streams.positions`), so a copied position never
  reaches beyond the copied profiles (a record folded again is caught by the dedup memory kept in
  each profile).
  Across databases the points differ by the time it takes to catch them all up (they are opened,
  then caught up one after the other, before any row is copied): a few milliseconds of the
  stream, which the restored engine does not notice (no row refers to another database's);
- the model registry's local copy (`registry/`, `streams.registry_copy`), every kept record with
  its headers; the records hold the artifacts' chunks, so the artifact cache (`models/`) is not
  needed: it is rebuilt from them;
- `state-format.json` (what wrote the data dir, `persona.state_dir`), and when there are ones the
  local API key (`local-api-key`, so senders keep working after a restore), the embedded default's
  cluster secret (`cluster-secret`: the registry's records are signed with it, and verified with
  it after a restore) and the demo mark (`demo-loaded`), all 0600;
- `manifest.json`, written last: when, from where, the state format, the row counts, and the size
  and SHA-256 of every other file.
Left out: `audit.log` (the record of what happened on that machine), logs, `restarts.json`, the
readers' secondaries and the artifact cache.

`restore` verifies the manifest (its format and state format, every file's size and digest, no
file missing or added, no path leaving the backup, no file a backup does not hold: only the kept
files, the files of `faust/v1/tables/<table>-<partition>.db/` and of `registry/`; counts that
add up, printable text; the digests only once all else is right, and only when the files
fit in the free space of the data dir's file system) before it writes anything, then copies
into an empty or absent data dir (0700 directories, 0600 files) that it holds locked
(`engine.files.lock_data_dir`) and marks unfinished (`persona.state_dir.UNFINISHED_RESTORE`,
written first, removed once every file is fsynced and checked: a restore killed half way leaves
a data dir that start-up, a backup and another restore refuse), and opens
every restored database to count its rows against the manifest: a backup whose digests match
but whose databases do not open or hold other counts is refused and the copy removed. A backup
of another partition count than PERSONA_PARTITIONS is refused (users would be looked up on other
partitions than theirs). Every file is read only when it is a regular file, never through a
symbolic link (a manifest that is a link out of the backup, a FIFO or /dev/zero is refused
unread). Nothing is merged into a data dir that holds anything.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from rocksdict import AccessType, Options, Rdict, WriteBatch

from engine.files import lock_data_dir
from engine.settings import SettingsError
from models.artifacts import rfc3339, utc_now
from persona.state_dir import (
    FORMAT_FILE,
    UNFINISHED_RESTORE,
    StateFormat,
    StateFormatError,
    check_finished,
    check_readable,
    partitions_of,
    persona_version,
    read_format,
)
from streams.adopt import DEMO_MARK
from streams.readers import _options as secondary_options
from streams.readers import table_dir
from streams.registry_copy import REGISTRY_COPY_DIR, RegistryCopy

MANIFEST = "manifest.json"
BACKUP_FORMAT = 1
LOCAL_KEY = "local-api-key"
# The embedded default's cluster secret (persona/supervisor.py): it signs the registry records, so
# a restored registry is verified with the secret that signed it.
CLUSTER_SECRET = "cluster-secret"
# Small files copied as they are (0600) when present: what wrote the data dir, the secrets the
# state goes with, and the mark that the demo data was loaded.
KEPT_FILES = (FORMAT_FILE, LOCAL_KEY, CLUSTER_SECRET, DEMO_MARK)
TABLES = PurePosixPath("faust/v1/tables")
BATCH_ROWS = 10_000
_HEX = frozenset("0123456789abcdef")
MAX_MANIFEST = 64 << 20  # bytes of manifest.json (a few hundred bytes per file listed)
# The files a backup holds (`_fill`): the kept files, and the files of the table partition
# databases and of the registry copy (RocksDB: no subdirectories).
_FILE_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_LAYOUT = re.compile(
    rf"(?:{'|'.join(map(re.escape, KEPT_FILES))}"
    rf"|{re.escape(str(TABLES))}/[a-z][a-z0-9_]*-[0-9]{{1,5}}\.db/{_FILE_NAME}"
    rf"|{re.escape(REGISTRY_COPY_DIR)}/{_FILE_NAME})"
)


class BackupError(SettingsError):
    """A backup or restore that cannot be done: the message says why and what to do (the command
    line prints it and exits 2)."""


# -- shared ------------------------------------------------------------------------------------


def _claim_empty(path: Path, what: str) -> bool:
    """Create `path` (0700) or accept an empty directory; True when it was created here."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise BackupError(f"the {what} {path} is not a directory")
    if path.exists():
        if any(path.iterdir()):
            raise BackupError(
                f"the {what} {path} is not empty: give an empty or new directory (nothing is "
                "merged into existing files)"
            )
        path.chmod(0o700)
        return False
    path.mkdir(parents=True, mode=0o700)
    path.chmod(0o700)  # whatever the umask
    return True


def _abandon(path: Path, created: bool) -> None:
    """Remove what a failed backup or restore wrote into `path` (and `path` when it was created
    here). A restore's unfinished mark goes last, and only once all else is gone: what could not
    be removed stays marked."""
    marker = path / UNFINISHED_RESTORE
    with contextlib.suppress(OSError):
        for child in list(path.iterdir()):
            if child == marker:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        if any(child != marker for child in path.iterdir()):
            return
        marker.unlink(missing_ok=True)
        if created:
            path.rmdir()


def _refuse_unfinished(data_dir: Path) -> None:
    """BackupError when `data_dir` holds the part of a restore that was killed."""
    try:
        check_finished(data_dir)
    except StateFormatError as exc:
        raise BackupError(str(exc)) from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading when it is a regular file, never through a symbolic link (one
    could lead out of the backup or the data dir); a FIFO or a device is refused before it could
    block or never end. FileNotFoundError when it is absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise BackupError(f"{path} is not a regular file (a symbolic link)") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BackupError(f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


class _Grew(BackupError):
    """A file held more than its size (`_blocks`)."""


def _blocks(path: Path, size: int) -> Iterator[bytes]:
    """The bytes of the regular file `path` (`_open_regular`) in blocks, read at most to one
    byte past `size`: _Grew when it holds more (a file still written to, growing as it is read,
    is not read without end). One that holds fewer ends early: its digest tells."""
    left = size
    with _open_regular(path) as data:
        while block := data.read(min(1 << 20, left + 1)):
            if len(block) > left:
                raise _Grew(f"{path} grew past {size} bytes while it was read")
            left -= len(block)
            yield block


def _digest(path: Path, size: int) -> str:
    """The SHA-256 of `path`, which holds `size` bytes (_Grew when it holds more)."""
    sha = hashlib.sha256()
    for block in _blocks(path, size):
        sha.update(block)
    return sha.hexdigest()


def _private_tree(root: Path) -> None:
    """Directories 0700, files 0600 under `root`."""
    for where, dirs, files in os.walk(root):
        for name in dirs:
            (Path(where) / name).chmod(0o700)
        for name in files:
            (Path(where) / name).chmod(0o600)


# -- backup ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _secondaries(tables: Path) -> Iterator[dict[str, Rdict]]:
    """Every table partition database under `tables`, opened as a RocksDB secondary and caught
    up with its primary (all of them before any row is read), closed on exit. The secondaries'
    own directories (their info logs) are temporary."""
    dbs: dict[str, Rdict] = {}
    scratch = tempfile.mkdtemp(prefix="persona-backup-")
    try:
        for path in sorted(tables.glob("*.db")):
            if (path / "CURRENT").exists():
                access = AccessType.secondary(os.path.join(scratch, path.name))
                dbs[path.name] = Rdict(str(path), secondary_options(), access_type=access)
        for db in dbs.values():
            db.try_catch_up_with_primary()
        yield dbs
    finally:
        for db in dbs.values():
            db.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _copy_rows(source: Rdict, target: Path) -> int:
    """Every row of `source` into a new RocksDB at `target`, flushed; the number of rows."""
    db = Rdict(str(target), Options(raw_mode=True))
    rows = 0
    try:
        batch = WriteBatch(raw_mode=True)
        for key, value in source.items():
            batch.put(key, value)
            rows += 1
            if len(batch) >= BATCH_ROWS:
                db.write(batch)
                batch = WriteBatch(raw_mode=True)
        db.write(batch)
        db.flush()
    finally:
        db.close()
    return rows


def _copy_tables(data_dir: Path, dest: Path) -> dict[str, int]:
    tables = table_dir(data_dir)
    if not tables.is_dir():
        raise BackupError(
            f"no Persona state in {data_dir} (no {TABLES}): is --data-dir (PERSONA_DATA_DIR) the "
            "data dir of `persona run`?"
        )
    (dest / TABLES).mkdir(parents=True)
    with _secondaries(tables) as dbs:
        return {name: _copy_rows(db, dest / TABLES / name) for name, db in dbs.items()}


def _copy_registry(data_dir: Path, dest: Path) -> int:
    """The registry's kept records, with their headers; 0 when the data dir has none yet."""
    source_path = data_dir / REGISTRY_COPY_DIR
    if not (source_path / "CURRENT").exists():
        return 0
    source = RegistryCopy(source_path, read_only=True)
    try:
        entries = source.entries()
    finally:
        source.close()
    target = RegistryCopy(dest / REGISTRY_COPY_DIR)
    try:
        for entry in entries:
            target.put(entry.key, entry.value, entry.headers)
    finally:
        target.close()
    return len(entries)


def _copy_private(source: Path, target: Path) -> bool:
    """Copy a small file (the state format, the local key) as 0600; False when it is absent."""
    try:
        with _open_regular(source) as kept:
            data = kept.read(MAX_MANIFEST + 1)
    except FileNotFoundError:
        return False
    if len(data) > MAX_MANIFEST:
        raise BackupError(f"{source} is larger than {MAX_MANIFEST} bytes: not a Persona file")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return True


def _file_digests(root: Path) -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = {}
    for where, _, names in os.walk(root):
        for name in names:
            path = Path(where) / name
            rel = path.relative_to(root).as_posix()
            if rel != MANIFEST:  # written here, by this backup: its size holds
                size = path.stat().st_size
                files[rel] = {"size": size, "sha256": _digest(path, size)}
    return dict(sorted(files.items()))


def _write_manifest(dest: Path, manifest: dict[str, Any]) -> None:
    tmp = dest / f".{MANIFEST}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, dest / MANIFEST)


@contextlib.contextmanager
def _plainly(doing: str) -> Iterator[None]:
    """A file-system error (no space, a path through a file, permissions) as a BackupError."""
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise BackupError(f"{doing}: {exc.strerror or exc}{where}") from None


def backup(data_dir: Path, dest: Path) -> dict[str, Any]:
    """Copy the state of `data_dir` (running or stopped) into the new or empty `dest`; the
    manifest. BackupError when that cannot be done; `dest` is left as it was found."""
    with _plainly(f"cannot back up {data_dir} into {dest}"):
        return _backup(data_dir, dest)


def _backup(data_dir: Path, dest: Path) -> dict[str, Any]:
    _refuse_unfinished(data_dir)
    found = read_format(data_dir)
    check_readable(found, f"the data dir {data_dir}")
    created = _claim_empty(dest, "backup directory")
    try:
        manifest = _fill(data_dir, dest, found)
    except BaseException:
        _abandon(dest, created)
        raise
    return manifest


def _fill(data_dir: Path, dest: Path, found: StateFormat | None) -> dict[str, Any]:
    try:
        tables = _copy_tables(data_dir, dest)
        registry = _copy_registry(data_dir, dest)
    except BackupError:
        raise
    except Exception as exc:  # rocksdict raises plain exceptions: a damaged or foreign database,
        # or a backup directory without room (RocksDB says "No space" or "Writer has previous
        # error" then): both sides are named
        free = shutil.disk_usage(dest).free
        raise BackupError(
            f"cannot copy the state of {data_dir} into {dest} ({exc}); {dest} has "
            f"{free // 1024} KiB free: a full disk there, or a damaged database in the data dir"
        ) from None
    kept = [name for name in KEPT_FILES if _copy_private(data_dir / name, dest / name)]
    _private_tree(dest)
    manifest = {
        "backup_format": BACKUP_FORMAT,
        "created": rfc3339(utc_now()),
        "written_by": persona_version(),
        "source": str(data_dir.resolve()),
        "state_format": None if found is None else found.to_dict(),
        "tables": tables,
        "rows": sum(tables.values()),
        "registry_records": registry,
        "kept_files": kept,
        "files": _file_digests(dest),
    }
    _write_manifest(dest, manifest)
    return manifest


# -- restore -----------------------------------------------------------------------------------


def _corrupt(source: Path, problems: list[str]) -> BackupError:
    more = len(problems) - 5
    shown = "; ".join(problems[:5]) + (f"; and {more} more" if more > 0 else "")
    return BackupError(
        f"the backup {source} is damaged or was changed after it was made ({shown}): nothing was "
        "restored; use another backup"
    )


def _safe_relative(rel: Any) -> bool:
    """A manifest path that stays inside the backup: relative, no `..`, not the manifest."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        return False
    path = PurePosixPath(rel)
    return not path.is_absolute() and ".." not in path.parts and rel not in (MANIFEST, ".")


def _valid_entry(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    size, sha = entry.get("size"), entry.get("sha256")
    return (
        isinstance(size, int)
        and not isinstance(size, bool)
        and size >= 0
        and isinstance(sha, str)
        and len(sha) == 64
        and set(sha) <= _HEX
    )


def read_manifest(source: Path) -> dict[str, Any]:
    """The backup's manifest, checked for shape and versions (BackupError otherwise)."""
    path = source / MANIFEST
    try:
        with _open_regular(path) as data:
            raw = data.read(MAX_MANIFEST + 1)
        if len(raw) > MAX_MANIFEST:
            raise _corrupt(source, [f"{MANIFEST} is larger than {MAX_MANIFEST} bytes"])
        manifest = json.loads(raw)
    except FileNotFoundError:
        raise BackupError(
            f"{source} is not a Persona backup (no {MANIFEST}; `persona backup DIR` writes it "
            "last, so a backup without it did not finish)"
        ) from None
    except (OSError, ValueError, RecursionError) as exc:
        raise _corrupt(source, [f"{MANIFEST} cannot be read: {exc}"]) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise _corrupt(source, [f"{MANIFEST} has no file list"])
    version = manifest.get("backup_format")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _corrupt(source, [f"{MANIFEST} has no backup format"])
    if version > BACKUP_FORMAT:
        by = _text(manifest.get("written_by")) or "a newer version"
        raise BackupError(
            f"the backup {source} was made by persona {by} (backup format {version}); this "
            f"persona {persona_version()} reads backup format {BACKUP_FORMAT}: restore it with "
            f"persona {by} or newer"
        )
    _check_state_format(source, manifest.get("state_format"))
    problems = _count_problems(manifest)
    if problems:
        raise _corrupt(source, problems)
    return manifest


def _text(value: Any) -> str | None:
    """A manifest string fit to print: at most 64 printable characters (no terminal escapes)."""
    if isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable():
        return value
    return None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _count_problems(manifest: dict[str, Any]) -> list[str]:
    """What is wrong with the fields the command prints and the restore checks its databases
    against: `created`, `tables` (database -> rows), `rows` (their sum), `registry_records`."""
    problems = []
    if _text(manifest.get("created")) is None:
        problems.append(f"{MANIFEST} has no readable creation time")
    tables = manifest.get("tables")
    if not isinstance(tables, dict) or not all(
        isinstance(name, str) and _count(rows) for name, rows in tables.items()
    ):
        problems.append(f"{MANIFEST} has no table list")
    elif not _count(manifest.get("rows")) or manifest["rows"] != sum(tables.values()):
        problems.append(f"{MANIFEST}'s row count is not its tables' sum")
    else:
        listed = {rel.split("/")[3] for rel in manifest["files"] if rel.startswith(f"{TABLES}/")}
        if set(tables) != listed:
            problems.append(f"{MANIFEST}'s tables are not the databases it lists")
    if not _count(manifest.get("registry_records")):
        problems.append(f"{MANIFEST} has no registry record count")
    return problems


def _check_state_format(source: Path, raw: Any) -> None:
    if raw is None:
        return
    try:
        found = StateFormat.from_dict(raw)
    except ValueError as exc:
        raise _corrupt(source, [f"its state format: {exc}"]) from None
    check_readable(found, f"the backup {source}")


def _shown(rel: str) -> str:
    """A name found in the backup, fit to print: as it is when printable, else escaped (a name
    made of terminal control sequences is not sent to the operator's terminal)."""
    return rel if rel.isprintable() else ascii(rel)


def _present_files(source: Path) -> tuple[set[str], list[str]]:
    """The regular files under `source` (relative, POSIX) and what else is there."""
    files: set[str] = set()
    odd: list[str] = []
    for where, dirs, names in os.walk(source):
        for name in dirs + names:
            path = Path(where) / name
            rel = path.relative_to(source).as_posix()
            if path.is_symlink():
                odd.append(f"{_shown(rel)} is a symbolic link")
            elif name in names and not path.is_file():
                odd.append(f"{_shown(rel)} is not a regular file")
            elif name in names and rel != MANIFEST:
                files.add(rel)
    return files, odd


def verify(source: Path, manifest: dict[str, Any]) -> list[str]:
    """Every difference between the backup's files and its manifest (empty: intact): first what
    costs no reading (paths, layout, missing or added files, sizes), and only when that is all
    right the digests (which read every byte)."""
    return _layout_problems(source, manifest) or _digest_problems(source, manifest)


def _layout_problems(source: Path, manifest: dict[str, Any]) -> list[str]:
    """What is wrong with the backup's files short of their contents: paths, layout, files
    missing or not listed, sizes."""
    listed: dict[str, Any] = manifest["files"]
    present, problems = _present_files(source)
    for rel, entry in sorted(listed.items()):
        if not _safe_relative(rel) or not _valid_entry(entry):
            problems.append(f"the manifest lists {rel!r} wrongly")
        elif not _LAYOUT.fullmatch(rel):
            problems.append(f"it lists {rel!r}, no part of a Persona backup")
        elif rel not in present:
            problems.append(f"{rel} is missing")
        elif (source / rel).stat().st_size != entry["size"]:
            problems.append(f"{rel} has another size")
    problems += [f"{_shown(rel)} is not in the manifest" for rel in sorted(present - listed.keys())]
    return problems


def _digest_problems(source: Path, manifest: dict[str, Any]) -> list[str]:
    """The listed files whose SHA-256 is not the manifest's (after `_layout_problems`), or that
    grew past their listed size since (read no further)."""
    problems = []
    for rel, entry in sorted(manifest["files"].items()):
        try:
            if _digest(source / rel, entry["size"]) != entry["sha256"]:
                problems.append(f"{rel} has another SHA-256")
        except _Grew:
            problems.append(f"{rel} grew past its listed size while it was read")
    return problems


def _format_problems(source: Path, manifest: dict[str, Any]) -> list[str]:
    """The backup's state-format.json, which `persona run` reads, must hold the state format
    the manifest records (the one `read_manifest` checked): not another, newer or damaged."""
    entry = manifest["files"].get(FORMAT_FILE)
    recorded = manifest.get("state_format")
    held: Any = None
    if entry is not None:
        if entry["size"] > 4096:  # a few dozen bytes
            return [f"{FORMAT_FILE} is too large"]
        try:
            held = json.loads(b"".join(_blocks(source / FORMAT_FILE, entry["size"])))
        except (ValueError, RecursionError):
            held = "not JSON"
    if held == recorded:
        return []
    return [f"its {FORMAT_FILE} is not the state format its manifest records"]


def _check_room(source: Path, data_dir: Path, manifest: dict[str, Any]) -> None:
    """Refuse a backup whose files (sizes checked by `_layout_problems`) add up to more than the
    data dir's file system has free, before any is read: a hostile backup of a huge sparse file
    would take hours to digest and, copied, fill the disk under whatever else runs there."""
    needed = sum(entry["size"] for entry in manifest["files"].values())
    where = data_dir.absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    info = os.statvfs(where)
    free = info.f_bavail * info.f_frsize
    if needed > free:
        raise BackupError(
            f"the backup {source} needs {needed // (1 << 20)} MiB, but the file system of "
            f"{data_dir} has {free // (1 << 20)} MiB free: make room there or restore into "
            "another --data-dir (PERSONA_DATA_DIR); nothing was restored"
        )


def _copy_verified(source: Path, target: Path, rel: str, entry: dict[str, Any]) -> None:
    """Copy one file (created 0600, parents 0700) of its listed size, checking its digest on the
    way (never copying more than the size: the free space was checked against the sizes)."""
    out_path = target / rel
    out_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    sha = hashlib.sha256()
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            for block in _blocks(source / rel, entry["size"]):
                sha.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())  # on disk before the unfinished mark is removed
    except _Grew:
        raise _corrupt(source, [f"{rel} changed while it was restored (it grew)"]) from None
    if sha.hexdigest() != entry["sha256"]:
        raise _corrupt(source, [f"{rel} changed while it was restored"])


def restore(source: Path, data_dir: Path, partitions: int | None = None) -> dict[str, Any]:
    """Bring the backup `source` into the empty or absent `data_dir`; the backup's manifest.
    BackupError (nothing written) when the backup is damaged, was made with another partition
    count than `partitions` (PERSONA_PARTITIONS; None: not checked) or the data dir holds
    anything."""
    with _plainly(f"cannot restore {source} into {data_dir}"):
        return _restore(source, data_dir, partitions)


def _restore(source: Path, data_dir: Path, partitions: int | None) -> dict[str, Any]:
    _refuse_unfinished(data_dir)
    manifest = read_manifest(source)
    problems = _layout_problems(source, manifest)
    if problems:
        raise _corrupt(source, problems)
    _check_room(source, data_dir, manifest)
    problems = _digest_problems(source, manifest) or _format_problems(source, manifest)
    if problems:
        raise _corrupt(source, problems)
    found = None if partitions is None else partitions_of(manifest["tables"], partitions)
    if found is not None:
        raise BackupError(
            f"the backup {source} holds tables of {found} partitions, but PERSONA_PARTITIONS="
            f"{partitions}: a user's profile lives on the partition of its id's hash modulo the "
            f"partition count, so it would not be found; restore with PERSONA_PARTITIONS={found} "
            "and run with it; nothing was restored"
        )
    created = _claim_empty(data_dir, "data dir")
    lock = lock_data_dir(data_dir)  # no `persona run` starts on it while it is filled
    marker = data_dir / UNFINISHED_RESTORE
    try:
        # marked before the first file and unmarked after the last is on disk and checked: a
        # restore killed in between (no `except` runs) leaves a data dir nothing starts on
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"persona restore {source}: unfinished; remove this data dir\n")
            out.flush()
            os.fsync(out.fileno())
        _fsync_dir(data_dir)
        for rel, entry in manifest["files"].items():
            _copy_verified(source, data_dir, rel, entry)
        _private_tree(data_dir)
        _check_databases(source, data_dir, manifest)
        for where, _, _ in os.walk(data_dir):
            _fsync_dir(Path(where))
        marker.unlink()
        _fsync_dir(data_dir)
    except BaseException:
        _abandon(data_dir, created)
        raise
    finally:
        os.close(lock)
    return manifest


def _check_databases(source: Path, data_dir: Path, manifest: dict[str, Any]) -> None:
    """Open every restored database (read-only) and count its rows against the manifest: digests
    that match prove only that the files are the ones listed, not that they are RocksDB."""
    problems = []
    for name, rows in sorted(manifest["tables"].items()):
        try:
            db = Rdict(
                str(data_dir / TABLES / name),
                Options(raw_mode=True),
                access_type=AccessType.read_only(),
            )
            try:
                found = sum(1 for _ in db.keys())  # noqa: SIM118 (not a dict)
            finally:
                db.close()
        except Exception as exc:  # rocksdict raises plain exceptions on a damaged database
            problems.append(f"{name} does not open as a database ({exc})")
            continue
        if found != rows:
            problems.append(f"{name} holds {found} rows, not the {rows} listed")
    if (data_dir / REGISTRY_COPY_DIR).exists() or manifest["registry_records"]:
        try:
            copy = RegistryCopy(data_dir / REGISTRY_COPY_DIR, read_only=True)
            try:
                records = len(copy.entries())
            finally:
                copy.close()
        except Exception as exc:
            problems.append(f"{REGISTRY_COPY_DIR} does not open as a database ({exc})")
        else:
            if records != manifest["registry_records"]:
                problems.append(f"{REGISTRY_COPY_DIR} holds {records} records, not those listed")
    if problems:
        raise _corrupt(source, problems)
