"""The keys file read again while the process runs: a key revoked or added without a restart.

Every application whose keys come (partly) from `PERSONA_API_KEYS_FILE` looks at the file's
(st_mtime_ns, st_size, st_ino, st_ctime_ns) every `POLL_EVERY` seconds (one `lstat` on a timer,
never per request) and reads it again when they changed; SIGHUP reads it at once
(`reload_on_hangup`, installed by the worker and the readers; `persona run` passes its SIGHUP on
to them). The file read again goes through the checks of the start (`api.auth.file_keys`: 0600,
owned by this user, no symbolic link, size, UTF-8, every entry valid, 24+ character secrets):

- taken: the ring's keys are replaced in one assignment (`KeyRing.reload`): the next request is
  checked against the new keys (a removed key is a 401, a narrowed one a 403), wherever the ring
  is held (the middleware chain, api/hot.py's `Gate`, the UI's key check); rate limits, the
  failed-authentication throttle and the audit go by key name and need nothing rebuilt. An info
  line gives the number of keys; `persona_api_keys_reloads_total` counts it.
- refused (a bad entry, a short secret, a mode or owner the start refuses, a symbolic link, the
  file gone): the keys stay as they were; an error line names the file and the problem (never a
  secret), `persona_api_keys_reload_failures_total` counts it, and the next change is tried again.

`PERSONA_API_KEYS` (the environment) cannot change in a running process: its keys stay until a
restart, ahead of the file's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web

from api.auth import InvalidKey, KeyRing, signature
from api.observability import TELEMETRY
from engine.settings import SettingsError

log = logging.getLogger("persona.api")

POLL_EVERY = 1.0  # seconds between two looks at the keys file


class KeyWatch:
    """Reads a ring's keys file again when it changed (`check`) or when told (`reload`)."""

    def __init__(self, ring: KeyRing, every: float = POLL_EVERY) -> None:
        assert ring.keys_file is not None
        self.ring = ring
        self.path = ring.keys_file
        self.every = every
        self.reloads = 0  # reads taken
        self.failures = 0  # reads refused (the keys kept)

    def check(self) -> bool:
        """Read the file again when its signature changed since it was last read; whether it
        was read (taken or not)."""
        if signature(self.path) == self.ring.seen:
            return False
        self.reload()
        return True

    def reload(self) -> bool:
        """Read the file again now; whether its keys were taken."""
        try:
            count = self.ring.reload()
        except (InvalidKey, SettingsError) as exc:  # UnsafeFile is a SettingsError
            self.failures += 1
            log.error(
                "PERSONA_API_KEYS_FILE=%s was not taken (%s); the %d keys in use are kept",
                self.path,
                exc,
                len(self.ring),
            )
            return False
        self.reloads += 1
        log.info("PERSONA_API_KEYS_FILE=%s read again: %d API keys", self.path, count)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                self.check()
            except Exception:  # the poll goes on whatever one look raised
                log.exception("looking at PERSONA_API_KEYS_FILE=%s failed", self.path)

    def metric_lines(self) -> list[str]:
        return [
            "# HELP persona_api_keys_reloads_total Reads of PERSONA_API_KEYS_FILE taken after "
            "the start (the file changed, or SIGHUP).",
            "# TYPE persona_api_keys_reloads_total counter",
            f"persona_api_keys_reloads_total {self.reloads}",
            "# HELP persona_api_keys_reload_failures_total Reads of PERSONA_API_KEYS_FILE "
            "refused after the start (the keys in use kept; the log says why).",
            "# TYPE persona_api_keys_reload_failures_total counter",
            f"persona_api_keys_reload_failures_total {self.failures}",
            "# HELP persona_api_keys API keys this process takes.",
            "# TYPE persona_api_keys gauge",
            f"persona_api_keys {len(self.ring)}",
        ]


KEY_WATCH = web.AppKey("key_watch", KeyWatch)


def register(app: web.Application, ring: KeyRing, every: float = POLL_EVERY) -> None:
    """Watch `ring`'s keys file while `app` runs (nothing when its keys are all from the
    environment)."""
    if ring.keys_file is None:
        return
    watch = KeyWatch(ring, every)
    app[KEY_WATCH] = watch
    app[TELEMETRY].text_sources.append(watch.metric_lines)

    async def poll(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(watch.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(poll)


def reload_on_hangup(app: web.Application) -> bool:
    """Read the keys file again on SIGHUP (the running loop's handler; call it from the main
    thread of a process that serves `app`); whether a handler was installed."""
    watch = app.get(KEY_WATCH)
    if watch is None:
        return False
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, watch.reload)
    except (ValueError, RuntimeError, NotImplementedError) as exc:  # not the main thread
        log.warning("no SIGHUP reload of PERSONA_API_KEYS_FILE (%s): it is polled", exc)
        return False
    return True
