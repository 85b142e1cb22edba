"""What wrote a data dir: `<data dir>/state-format.json`, checked and written at start-up.

The file records the state format of the data dir (`FORMAT`), the Persona version that wrote it,
the key layout of the profiles table (`streams.keys.LAYOUT`) and the profile pack format
(`engine.profile.PACK_FORMAT`):

    {"format": 1, "written_by": "0.1.0", "layout": 2, "profile_pack": 3}

- format 0 (no file): releases before state formats were recorded. Their profiles may still be
  under plain user ids (layout 1): the worker moves them under the `u:` key space, partition by
  partition, before it folds anything there (`streams.keys.layout_moves`); profiles packed in
  format 2 are read as they are. Such a data dir is read and the file written.
- format 1: the `u:` layout, the model registry's local copy under `registry/` (issue 16).

A data dir whose format (or layout, or pack format) is newer than this release knows was written
by a newer Persona: start-up refuses it with a message naming both versions and what to do, and
changes nothing in it.

Before that, start-up checks that this user can read and write every piece of the data dir that
Persona writes (`check_access`): a file or directory under it left read-only, owned by another
user (a `sudo` run, a restore as root) or `chmod 000` is refused with its path, its mode and owner
and the command that fixes it. Found later, it was a reader or the worker dying at each start on
a RocksDB "Permission denied (os error 13)" that names no file, until `persona run` gave up.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from engine.profile import PACK_FORMAT
from engine.settings import SettingsError
from streams.keys import LAYOUT

FORMAT_FILE = "state-format.json"
FORMAT = 1
_FIELDS = ("format", "layout", "profile_pack")


class StateFormatError(SettingsError):
    """A data dir this release cannot read (a SettingsError: the command line prints it and
    exits 2)."""


# free bytes a data dir needs for a worker to start: RocksDB refuses to open a table (it writes its
# OPTIONS and MANIFEST files) on a full disk, and the worker would be restarted until `persona run`
# gave up; `persona run` also waits for this much room before it restarts a worker that died on a
# full disk (persona/children.py)
MIN_FREE = 16 << 20


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged user may still write on the file system of `path`."""
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def check_room(data_dir: Path) -> None:
    """StateFormatError when the data dir's file system has less than MIN_FREE bytes free."""
    free = free_bytes(data_dir)
    if free < MIN_FREE:
        raise StateFormatError(
            f"the data dir {data_dir} has {free // 1024} KiB free; the tables, the model cache and "
            f"the logs need at least {MIN_FREE >> 20} MiB to start: free some space or give "
            "another --data-dir (PERSONA_DATA_DIR)"
        )


# what Persona writes in a data dir, each checked with everything under it (the local key and the
# cluster secret are checked as secrets where they are read: engine/files.py)
WRITTEN = (
    "faust", "registry", "models", "readers",
    "audit.log", "audit.log.lock", "broker.log", "restarts.json", FORMAT_FILE,
)  # fmt: skip


def check_access(data_dir: Path) -> None:
    """StateFormatError naming the first piece of the data dir (of WRITTEN, and everything under
    them) this user cannot read and write (and enter, for a directory)."""
    for name in WRITTEN:
        denied = _denied(data_dir / name)
        if denied is None:
            continue
        path, info = denied
        kind = "directory" if os.path.isdir(path) else "file"
        uid = os.geteuid()
        raise StateFormatError(
            f"the data dir {data_dir} cannot be used: this user (uid {uid}) cannot "
            f"{'read, write and enter' if kind == 'directory' else 'read and write'} the {kind} "
            f"{path} (mode {info.st_mode & 0o7777:04o}, owner uid {info.st_uid}); give the data "
            f"dir back to this user (`chown -R {uid} {data_dir}; chmod -R u+rwX {data_dir}`) "
            "or run Persona as its owner; nothing was changed"
        )


def _denied(path: Path) -> tuple[Path, os.stat_result] | None:
    """The first of `path` and everything under it this user cannot use, with its stat; None
    when every one can be used or is gone (a reader's secondary changes as this looks)."""
    try:
        info = path.lstat()
    except OSError:
        return None
    is_dir = os.path.isdir(path)
    need = os.R_OK | os.W_OK | (os.X_OK if is_dir else 0)
    if not os.access(path, need):
        return (path, info) if os.path.lexists(path) else None
    if is_dir and not path.is_symlink():
        try:
            children = sorted(path.iterdir())
        except FileNotFoundError:
            return None
        for child in children:
            denied = _denied(child)
            if denied is not None:
                return denied
    return None


def persona_version() -> str:
    try:
        return metadata.version("persona-engine")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class StateFormat:
    format: int
    written_by: str
    layout: int
    profile_pack: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> StateFormat:
        """ValueError unless `data` is a JSON object with the four fields, typed."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        numbers: dict[str, int] = {}
        for name in _FIELDS:
            value = data.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name!r} is not a non-negative integer")
            numbers[name] = value
        written_by = data.get("written_by")
        if not isinstance(written_by, str) or not 0 < len(written_by) <= 64:
            raise ValueError("'written_by' is not a version string")
        return cls(written_by=written_by, **numbers)


def current() -> StateFormat:
    """The state format this release writes."""
    return StateFormat(FORMAT, persona_version(), int(LAYOUT), PACK_FORMAT)


def read_format(data_dir: Path) -> StateFormat | None:
    """The data dir's recorded format; None when it has no file (a new data dir, or one of a
    release before format 1). StateFormatError when the file cannot be read."""
    path = data_dir / FORMAT_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StateFormatError(f"cannot read {path}: {exc}") from None
    try:
        return StateFormat.from_dict(json.loads(text))
    except ValueError as exc:
        raise StateFormatError(
            f"{path} is damaged ({exc}); it records which Persona wrote the data dir: restore "
            f"the data dir from a backup (`persona restore`), or if this version wrote it, "
            f"remove the file and start again"
        ) from None


def newer_parts(found: StateFormat) -> list[str]:
    """The parts of `found` newer than this release reads: empty when it can read it."""
    ours = current().to_dict()
    theirs = found.to_dict()
    return [f"{n} {theirs[n]} > {ours[n]}" for n in _FIELDS if theirs[n] > ours[n]]


def check_readable(found: StateFormat | None, where: str) -> None:
    """StateFormatError when `found` (of the data dir or backup `where`) is newer than this
    release: the message names both versions and what to do."""
    if found is None:
        return
    newer = newer_parts(found)
    if newer:
        raise StateFormatError(
            f"{where} was written by persona {found.written_by} (state format {found.format}; "
            f"{', '.join(newer)}), newer than this persona {persona_version()} reads (state "
            f"format {FORMAT}): run persona {found.written_by} or newer on it, or give this "
            "version another data dir (--data-dir); nothing was changed"
        )


def write_format(data_dir: Path, state: StateFormat) -> None:
    """Write the file atomically, mode 0600 (a reader never sees half of it). An OSError names
    the file; the temporary file is gone then (a full disk left an empty one behind)."""
    path = data_dir / FORMAT_FILE
    tmp = data_dir / f".{FORMAT_FILE}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(state.to_dict(), sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None


# written first and removed last by `persona restore` (persona/backup.py): a data dir holding it is
# the part of a restore that was killed (kill -9, an OOM kill, a power cut) before it had copied
# and checked every file
UNFINISHED_RESTORE = "restore-unfinished"


def check_finished(data_dir: Path) -> None:
    """StateFormatError when `data_dir` holds an unfinished restore (UNFINISHED_RESTORE)."""
    if os.path.lexists(data_dir / UNFINISHED_RESTORE):
        raise StateFormatError(
            f"the data dir {data_dir} holds an unfinished restore (its {UNFINISHED_RESTORE} "
            "file: `persona restore` was stopped before it had copied and checked every file, "
            f"so tables may lack partitions or rows): remove it (`rm -r {data_dir}`) and restore "
            "the backup again; nothing was changed"
        )


def prepare(data_dir: Path) -> str | None:
    """At start-up, in an existing data dir: refuse a newer format, record this release's; the
    note to log when an earlier release's data dir was taken over, else None. Refuses an
    unfinished restore (`check_finished`), a data dir with pieces this user cannot read or write
    (`check_access`), or without room (`check_room`)."""
    check_finished(data_dir)
    check_access(data_dir)
    check_room(data_dir)
    found = read_format(data_dir)
    check_readable(found, f"the data dir {data_dir}")
    ours = current()
    if found == ours:
        return None
    write_format(data_dir, ours)
    if found is None and (data_dir / "faust").exists():
        return (
            f"the data dir {data_dir} has no {FORMAT_FILE} (written by a release before state "
            f"formats): read as format 0, stored profiles move to layout {ours.layout} as their "
            f"partitions are assigned; recorded state format {FORMAT}"
        )
    if found is not None and found.format < FORMAT:
        return f"the data dir {data_dir}: state format {found.format} -> {FORMAT}"
    return None


_PARTITION_DB = re.compile(r"([a-z][a-z0-9_]*)-([0-9]{1,5})\.db")


GLOBAL_TABLES = ("catalog", "popularity")  # Faust opens one database per partition for each


def partitions_of(names: Iterable[str], partitions: int) -> int | None:
    """The partition count table databases named `<table>-<partition>.db` show they were made
    with, where it is not `partitions`; None when they agree or do not tell. They tell when a
    database lies on a partition at or past `partitions` (more partitions before), or when both
    global tables hold exactly the databases of partitions 0..k-1 for another k (Faust opens every
    partition's database of a global table). Fewer databases alone tell nothing: a data dir
    whose engine stopped early, or a damaged one, may lack some (that is found when they open)."""
    by_table: dict[str, set[int]] = {}
    for match in map(_PARTITION_DB.fullmatch, names):
        if match:
            by_table.setdefault(match.group(1), set()).add(int(match.group(2)))
    if not by_table:
        return None
    top = max(max(found) for found in by_table.values()) + 1
    if top > partitions:
        return top
    counts = {len(by_table.get(name, ())) for name in GLOBAL_TABLES}
    if len(counts) != 1:
        return None
    (count,) = counts
    whole = all(by_table.get(name) == set(range(count)) for name in GLOBAL_TABLES)
    return count if whole and 0 < count != partitions else None


def check_partitions(names: Iterable[str], partitions: int, where: str) -> None:
    """StateFormatError when the table databases `names` of `where` were made with another
    partition count than `partitions` (PERSONA_PARTITIONS)."""
    found = partitions_of(names, partitions)
    if found is not None:
        raise StateFormatError(
            f"{where} holds tables of {found} partitions, but PERSONA_PARTITIONS={partitions}: "
            "a user's profile lives on the partition of its id's hash modulo the partition "
            f"count, so profiles would not be found; set PERSONA_PARTITIONS={found} (or start "
            "from empty state with `persona run --fresh`); nothing was changed"
        )
