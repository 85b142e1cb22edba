"""Who may read Persona's files: the data dir (0700) and files that hold secrets (0600).

- `private_dir` creates the data dir with mode 0700. A data dir that exists with looser bits (one
  made by an earlier version, or by hand with the usual umask) is tightened to 0700, and the
  returned note says so (the caller logs it); one owned by another user is refused: Persona could
  not tighten it, and whoever owns it can read everything in it.
- `check_secret_file` refuses a file that holds secrets (`PERSONA_API_KEYS_FILE`, the local key
  `<data_dir>/local-api-key`, `PERSONA_KAFKA_PASSWORD_FILE`) when it is a symbolic link, not a
  regular file, owned by another user, or readable or writable by group or others: the message
  names the file and what to do (`chmod 600 <file>`). Such a file is never read or fixed silently:
  its secrets may already have been read by others, so the operator decides.
- `open_private` opens a file for appending, created 0600 (the audit log).
- `read_regular` reads a small file named by a setting or a flag (a secret, a certificate, a map
  file): a FIFO or a device such as /dev/zero is refused before it is read (one would block
  forever, the other never end), a file larger than its bound unread.
- `require_regular` checks a file named on the command line (an events file, a feed) before
  it is opened: a FIFO, a directory or a device is refused, a symbolic link loop said to be
  one (it was "file not found").
- `lock_data_dir` takes the data dir for one `persona run`, standalone `persona worker` (or
  `persona restore`): two engines on one data dir would corrupt it (the second's start-up
  rewrites the tables' bookkeeping rows, `--fresh` removes the tables under the running worker,
  both write restarts.json, the keys, the secrets). The lock is an exclusive `flock` on the
  directory itself, so no lock file is left behind and a lock dies with the processes that hold
  its descriptor (the worker of `persona run` inherits it: a SIGKILLed `persona run` keeps its
  data dir locked until its worker has gone too).
- `hold_data_dir` is the worker's side: the lock `persona run` passed down (its descriptor's
  number in `LOCK_FD_ENV`), checked to be a lock on that very directory, else its own.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Callable
from pathlib import Path

from engine.errors import SettingsError

DIR_MODE = 0o700
FILE_MODE = 0o600


class UnsafeFile(SettingsError):
    """A data dir or secret file whose owner, type or permissions let others read it (a
    SettingsError: the command line prints it and exits 2)."""


def private_dir(path: Path) -> str | None:
    """Create `path` (and its parents) with mode 0700, or tighten an existing one to 0700; the
    note to log when an existing one was looser, else None. UnsafeFile when another user owns it
    or it is not a directory."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True)
        return None
    except FileExistsError:
        pass
    info = path.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeFile(f"the data dir {path} is not a directory")
    _check_owner(path, info, "the data dir")
    loose = stat.S_IMODE(info.st_mode) & 0o077
    if not loose:
        return None
    path.chmod(stat.S_IMODE(info.st_mode) & ~0o077)
    return (
        f"the data dir {path} was accessible to group or others (mode "
        f"{stat.S_IMODE(info.st_mode):04o}); tightened to "
        f"{stat.S_IMODE(info.st_mode) & ~0o077:04o}"
    )


def check_secret_file(path: Path, setting: str) -> None:
    """Refuse (UnsafeFile) a secret file others could read or replace (module doc). A missing
    file passes: reading it reports that."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    where = f"{setting}={path}" if setting.startswith("PERSONA_") else f"{setting} {path}"
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeFile(
            f"{where} is a symbolic link; secret files are read only when they are regular "
            f"files: use the file itself ({os.path.realpath(path)})"
        )
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFile(f"{where} is not a regular file")
    _check_owner(path, info, where)
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise UnsafeFile(
            f"{where} can be read or written by group or others (mode {mode:04o}); it holds "
            f"secrets: run `chmod 600 {path}` (and replace its secrets if others may have "
            "read them)"
        )


def ensure_secret_file(path: Path, make: Callable[[], str], setting: str) -> Path:
    """`path`, created once (0600, exclusively) holding `make()` when it does not exist; an
    existing one is checked like every secret file (`check_secret_file`)."""
    check_secret_file(path, setting)
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:  # made meanwhile by another process: check it as it is
            check_secret_file(path, setting)
            return path
        with os.fdopen(fd, "w") as fh:
            fh.write(make() + "\n")
    return path


def _check_owner(path: Path, info: os.stat_result, where: str) -> None:
    uid = os.geteuid()
    if info.st_uid != uid:
        raise UnsafeFile(
            f"{where} is owned by uid {info.st_uid}, not by the user running Persona (uid "
            f"{uid}): run `chown {uid} {path}` or run Persona as its owner"
        )


def open_private(path: Path) -> int:
    """A descriptor appending to `path`, created 0600 (an existing file keeps its mode: callers
    tighten it first with `tighten`)."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)


def tighten(path: Path) -> str | None:
    """Make an existing file of ours 0600 when group or others had bits on it; the note to log
    then, else None (a missing file: None)."""
    try:
        mode = stat.S_IMODE(path.lstat().st_mode)
    except FileNotFoundError:
        return None
    if not mode & 0o077:
        return None
    path.chmod(mode & ~0o077)
    return f"{path} was accessible to group or others (mode {mode:04o}); tightened to 0600"


# `persona run` names the descriptor of its data dir's lock, which its worker inherits, here
LOCK_FD_ENV = "PERSONA_RUN_DATA_DIR_LOCK"


class DataDirInUse(SettingsError):
    """The data dir is held by another `persona run`, `persona worker` or `persona restore`."""


def lock_data_dir(path: Path) -> int:
    """A descriptor of the directory `path` holding an exclusive lock on it, until it is closed
    (by every process that inherited it); DataDirInUse when another holds it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirInUse(
            f"the data dir {path} is in use by another `persona run` or `persona worker` (or a "
            "restore, or the children of a `persona run` that was killed): two engines on one "
            "data dir would corrupt it; stop the other one first, or give this one another "
            "--data-dir (PERSONA_DATA_DIR)"
        ) from None
    return fd


def hold_data_dir(path: Path, inherited: str | None) -> int:
    """The descriptor holding the lock on the directory `path` for this process: the one named
    by `inherited` (the value of LOCK_FD_ENV) when it is open here on that same directory and
    its lock is this one's (flock on it succeeds: it holds the lock, or nobody did and now it
    does), else a new lock (`lock_data_dir`). The variable alone proves nothing: a descriptor
    that is not open here, or is open on something else, is ignored; one opened apart from the
    holder's on this directory is refused like any other (DataDirInUse)."""
    fd = _inherited_fd(path, inherited)
    if fd is None:
        return lock_data_dir(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another open of the directory: its holder is another process
        return lock_data_dir(path)  # DataDirInUse (or the lock, when freed meanwhile)
    os.set_inheritable(fd, False)  # held by this process only: not by what it starts
    return fd


def _inherited_fd(path: Path, inherited: str | None) -> int | None:
    """The descriptor number `inherited` names when it is open here on the directory `path`."""
    if not inherited or not inherited.isdecimal():
        return None
    fd = int(inherited)
    try:
        held, here = os.fstat(fd), os.stat(path)
    except (OSError, OverflowError):  # not open here (closed, or never passed)
        return None
    if not stat.S_ISDIR(held.st_mode) or (held.st_dev, held.st_ino) != (here.st_dev, here.st_ino):
        return None
    return fd


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of `path` (through symbolic links), a regular file of at most `limit` bytes;
    ValueError saying why not (the caller names the setting). OSError when it cannot be
    opened."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO opens at once
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # before fdopen: a directory's raised IsADirectoryError
        os.close(fd)
        raise ValueError("is not a regular file (a directory, FIFO or device?)")
    with os.fdopen(fd, "rb") as fh:
        if info.st_size > limit:
            raise ValueError(f"is larger than {limit} bytes")
        data = fh.read(limit + 1)
    if len(data) > limit:  # it grew meanwhile
        raise ValueError(f"is larger than {limit} bytes")
    return data


def require_regular(path: str) -> None:
    """`path` is a regular file (through symbolic links): FileNotFoundError when nothing is
    there; SettingsError (the command line prints it and exits 2) naming it when it is a
    symbolic link loop, or a directory, FIFO or device (one blocks its reader, another never
    ends). Nothing is opened."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(2, "No such file", path) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SettingsError(
                f"{path} is a symbolic link loop (it leads back to itself)"
            ) from None
        raise
    if not stat.S_ISREG(info.st_mode):
        raise SettingsError(f"{path} is not a regular file (a directory, FIFO or device?)")
