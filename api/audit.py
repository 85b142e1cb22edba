"""The audit trail: JSON lines on the `persona.audit` logger, which `persona worker` and
`persona reader` send to `<data_dir>/audit.log` (`attach_file`). It never holds secrets: the
key's name, not the key. The record kinds are listed in docs/security.md.

- `audit`: an action of a handler (export, erase, consent received, ...), with who, what, when
  and the outcome (engine/audit.py).
- `Refusals`: every request refused with 401, 403 or 429, on every route, bounded: the first
  refusal from a client address in a minute is one `denied` line; the further ones of that
  address in the same minute are counted and written as one `denied_repeats` line (count, the
  statuses, the key names presented) when the minute is over. At most `MAX_CLIENTS` addresses
  have a minute of their own; past that, every other address shares one (remote "*"), so a flood
  from any number of addresses writes a bounded number of lines a minute.
- `AuditFile`: the log file, 0600, rotated by size (`MAX_BYTES`, `KEEP` older files) under a lock
  file, so the worker and the readers (several processes on one data dir) append and rotate it
  safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from api.observability import request_id
from api.shared import KEY_NAME
from engine.audit import (
    AUDIT_FILE,
    AUDIT_KEEP,
    OK,
    REFUSED,
    audit_locked,
    entry,
    line,
    lock_of,
    pseudonymized,
    record,
    rotated,
    utc,
)
from engine.files import open_private, tighten

audit_log = logging.getLogger("persona.audit")
log = logging.getLogger("persona.api")

WINDOW = 60.0  # seconds of one address's refusals summed into one `denied_repeats` line
MAX_CLIENTS = 1000  # addresses with a window of their own; the rest share the "*" window
MAX_KEYS = 8  # key names a `denied_repeats` line lists
FLUSH_EVERY = 10.0  # seconds between writes of the windows that ended
MAX_BYTES = 10 * 1024 * 1024  # audit.log rotates when a line would take it past this size
KEEP = AUDIT_KEEP  # rotated files kept: audit.log.1 (newest) .. audit.log.9
DETAILS = web.RequestKey("audit_details", dict)  # what a handler adds to its audit record
REFUSED_STATUSES = frozenset({401, 403, 429})
LOST_WARN_EVERY = 60.0  # seconds between two lines saying audit records cannot be written


def write(line: str) -> None:
    audit_log.info(line)


def audit(
    request: web.Request,
    action: str,
    outcome: str = OK,
    erased: Mapping[str, str] | None = None,
    **details: Any,
) -> None:
    """One audit record of a request: the key name the auth middleware stored, the client's
    address, the method and path, the request's id (its `X-Request-Id` answer; a forwarded
    request's is the one the process called answered: api/routing.py), and `details`; with
    `erased` (user id -> pseudonym), those ids pseudonymized (`engine.audit.pseudonymized`)."""
    rid = request_id.get()
    named: dict[str, Any] = {"request_id": rid} if rid else {}
    fields = entry(
        action,
        request.get(KEY_NAME, ""),
        outcome,
        remote=request.remote or "",
        method=request.method,
        path=request.path,
        **{**named, **details},
    )
    write(line(pseudonymized(fields, erased) if erased else fields))


@dataclass
class _Window:
    """One address's refusals after its first of the current window."""

    started: float  # monotonic
    since: str  # UTC time of the first refusal
    count: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)


class Refusals:
    """Refused requests, one `denied` line per address and window plus one `denied_repeats`
    line for the rest (module doc). Not thread-safe (one event loop)."""

    def __init__(
        self,
        out: Callable[[str], None] = write,
        window: float = WINDOW,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.out = out
        self.window = window
        self.max_clients = max_clients
        self.windows: dict[str, _Window] = {}

    def refused(
        self,
        remote: str,
        status: int,
        key: str,
        method: str,
        path: str,
        now: float | None = None,
        rid: str = "",
    ) -> None:
        """Count a refusal of `remote`; the first of a window is a `denied` record (with the
        request's id `rid`, when there is one), the others are summed in `denied_repeats`."""
        now = time.monotonic() if now is None else now
        self.flush(now)
        client = remote if remote in self.windows or len(self.windows) < self.max_clients else "*"
        current = self.windows.get(client)
        if current is not None:
            current.count += 1
            current.statuses[str(status)] = current.statuses.get(str(status), 0) + 1
            if key and len(current.keys) < MAX_KEYS:
                current.keys.add(key)
            return
        self.windows[client] = _Window(now, utc())
        named: dict[str, Any] = {"request_id": rid} if rid else {}
        self.out(
            record(
                "denied",
                key,
                REFUSED,
                remote=remote,
                method=method,
                path=path,
                status=status,
                **named,
            )
        )

    def flush(self, now: float | None = None, everything: bool = False) -> None:
        """Write the `denied_repeats` line of every window that ended (of every window). The
        windows are kept in the order they opened, so the ended ones come first."""
        now = time.monotonic() if now is None else now
        while self.windows:
            client, oldest = next(iter(self.windows.items()))
            if not everything and now - oldest.started < self.window:
                return
            self._close(client)

    def _close(self, client: str) -> None:
        ended = self.windows.pop(client)
        if not ended.count:
            return
        self.out(
            record(
                "denied_repeats",
                "",
                REFUSED,
                remote=client,
                since=ended.since,
                count=ended.count,
                statuses=ended.statuses,
                keys=sorted(ended.keys),
            )
        )


REFUSALS = web.AppKey("audit_refusals", Refusals)


def refused(
    app: web.Application, remote: str | None, status: int, key: str, method: str, path: str
) -> None:
    """Count a refused request (401/403/429) of `app` (see `Refusals`)."""
    app[REFUSALS].refused(remote or "", status, key, method, path, rid=request_id.get() or "")


async def _flusher(app: web.Application) -> AsyncIterator[None]:
    refusals = app[REFUSALS]

    async def loop() -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            refusals.flush()

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    refusals.flush(everything=True)


def register(app: web.Application) -> None:
    app[REFUSALS] = Refusals()
    app.cleanup_ctx.append(_flusher)


class AuditFile(logging.Handler):
    """Appends each record as a line to `path` (created 0600), rotating it when the line would
    take it past `max_bytes`: `path` becomes `path.1`, `path.1` becomes `path.2`, ... and the
    oldest beyond `keep` is dropped. Every write takes an exclusive lock on `path.lock` and opens
    the file by name, so processes sharing the file never write into a rotated one.

    A record is written whole or not at all: a write the disk cannot take (full, a file size
    limit) is cut back to the line before, so the file stays whole JSON lines; the record is
    lost, counted in `lost`, and said in one line (the path and the reason, never the record:
    its user id stays out of the process's output) at most every LOST_WARN_EVERY seconds.
    Before, a full disk left half a line, the next record glued to it once there was room, and
    logging's error dump printed each lost record with its user id on stderr."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        super().__init__(logging.INFO)
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.lost = 0  # records that could not be written
        self._warned = -LOST_WARN_EVERY  # monotonic seconds of the last line saying so
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, entry: logging.LogRecord) -> None:
        try:
            data = (self.format(entry) + "\n").encode()
            with audit_locked(self.path):
                self._rotate(len(data))
                fd = open_private(self.path)
                try:
                    _append_whole(fd, data)
                finally:
                    os.close(fd)
        except Exception as exc:
            self._lose(exc)

    def _lose(self, exc: Exception) -> None:
        self.lost += 1
        now = time.monotonic()
        if now - self._warned < LOST_WARN_EVERY:
            return
        self._warned = now
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        log.error(
            "cannot write the audit log %s (%s): %d audit record(s) lost so far by this process",
            self.path, reason, self.lost,
        )  # fmt: skip

    def _rotate(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if not size or size + incoming <= self.max_bytes:
            return
        for n in range(self.keep - 1, 0, -1):
            older = rotated(self.path, n)
            if older.exists():
                older.replace(rotated(self.path, n + 1))
        if self.keep:
            self.path.replace(rotated(self.path, 1))
        else:
            self.path.unlink()


def _append_whole(fd: int, data: bytes) -> None:
    """Append all of `data` to `fd` (O_APPEND, under the file's lock), or nothing: a short or
    failed write is cut back to the file's size before it, and the OSError raised (a short write
    that wrote nothing more is ENOSPC)."""
    size = os.fstat(fd).st_size
    done = 0
    try:
        while done < len(data):
            written = os.write(fd, data[done:])
            if written <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done += written
    except OSError:
        if done:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
        raise


def attach_file(data_dir: Path) -> AuditFile:
    """Send the `persona.audit` logger to `<data_dir>/audit.log` (tightened to 0600 if an earlier
    version left it readable by others, with a warning), and only there."""
    path = data_dir / AUDIT_FILE
    for name in (path.name, lock_of(path).name):
        note = tighten(data_dir / name)
        if note:
            log.warning("%s", note)
    handler = AuditFile(path)
    audit_log.addHandler(handler)
    audit_log.setLevel(logging.INFO)
    audit_log.propagate = False  # user ids of audit records stay out of the process's output
    return handler
