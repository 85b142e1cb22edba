"""The audit record: one JSON object per line of `<data_dir>/audit.log` (docs/security.md lists
every kind). Building the line is pure; `audit_consents` writes the worker's consent records.

Every record has `ts` (UTC, when it was written), `action` (what), `key` (who: the API key's name,
never its secret; "" when no key was presented or known) and `outcome`; the rest depends on the
action. No record ever holds a secret. Records go to the `persona.audit` logger, which the
processes send to the audit file (api/audit.py) and nowhere else.

Erasure (docs/security.md "Audit records"): the records of an erased user keep no user id in
clear. `AuditPseudonyms.of` is the user's pseudonym, a keyed hash under the cluster secret
(HMAC-SHA256 of the id's UTF-8 bytes, keyed with HMAC-SHA256(secret, "persona audit user v1")):
whoever knows the id and the secret can still find the user's consent and erasure records, no one
else can read the id back. `pseudonymized` rewrites one record; `erase_from_audit` rewrites the
audit file and its rotations when the worker folds an erasure, and the `erase` record itself is
written pseudonymized.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from engine.events import CONSENT_PURPOSES, Event
from engine.files import open_private

OK = "ok"  # the action was carried out (or accepted and queued: see the record's fields)
REFUSED = "refused"  # 401, 403 or 429
FAILED = "failed"  # the action was asked for and not carried out (a 4xx or 5xx)
NOT_FOUND = "not_found"

audit_log = logging.getLogger("persona.audit")


def utc(now: float | None = None) -> str:
    """`now` (epoch seconds; None: the wall clock) as an RFC 3339 UTC time to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))


def entry(
    action: str, key: str, outcome: str, now: float | None = None, **fields: Any
) -> dict[str, Any]:
    """One audit record: the common fields, then `fields`."""
    return {"ts": utc(now), "action": action, "key": key, "outcome": outcome, **fields}


def line(record: dict[str, Any]) -> str:
    """An audit record as its line (without the newline), keys sorted."""
    return json.dumps(record, sort_keys=True, default=str)


def record(action: str, key: str, outcome: str, now: float | None = None, **fields: Any) -> str:
    """One audit line (without the newline): the common fields, then `fields`, keys sorted."""
    return line(entry(action, key, outcome, now, **fields))


def consent_fields(event: Event) -> dict[str, Any]:
    """What a consent record says of a consent event: whose, which purposes (granted or
    withdrawn), from where (`source`, the `props.text_version` shown), when (event time, ms)."""
    props = event.props
    return {
        "user_id": event.user_id,
        "event_id": event.event_id,
        "event_ts": event.ts,
        "purposes": {p: props[p] for p in CONSENT_PURPOSES if isinstance(props.get(p), bool)},
        "source": event.source,
        "text_version": props.get("text_version"),
    }


def audit_consents(events: Iterable[Event]) -> None:
    """A `consent_applied` record for each consent event the worker folded and wrote: at least
    once (a batch read again after a crash or a rebalance writes it again; `event_id` tells)."""
    for event in events:
        audit_log.info(record("consent_applied", "", OK, **consent_fields(event)))


AUDIT_FILE = "audit.log"  # in the data directory (api/audit.py `attach_file`)
AUDIT_KEEP = 9  # rotated files kept beside it: audit.log.1 (newest) .. audit.log.9


def rotated(path: Path, n: int) -> Path:
    """The audit log `path`'s `n`th rotated file (`path.n`; 0: `path` itself)."""
    return path if n == 0 else path.with_name(f"{path.name}.{n}")


def lock_of(path: Path) -> Path:
    """The file every writer of the audit log `path` (and its rewrite) locks: `path.lock`."""
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def audit_locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of the audit log `path` (`lock_of`): writers, rotation and the
    erasure's rewrite take turns under it."""
    fd = open_private(lock_of(path))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


PSEUDONYM_FIELD = "user_id_hmac"  # what stands in for `user_id` in an erased user's records
PATH_STAND_IN = "{user_id}"  # what stands in for the erased id in a record's `path`


class AuditPseudonyms:
    """The audit pseudonyms of user ids under one cluster secret; never shows the key."""

    __slots__ = ("_key",)

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), b"persona audit user v1", hashlib.sha256).digest()

    def of(self, user_id: str) -> str:
        raw = user_id.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, raw, hashlib.sha256).hexdigest()


def pseudonymized(
    entry: dict[str, Any], ids: Mapping[str, str], longest: int | None = None
) -> dict[str, Any]:
    """`entry` (one parsed audit record) without the ids of `ids` (user id -> pseudonym): a
    `user_id` among them becomes `user_id_hmac`, a run of `path` segments equal to one becomes
    `{user_id}` (with `user_id_hmac` added), any other field whose value is one of the ids gets
    the pseudonym. Ids merely contained in a longer value (an event id the shop made of the user
    id) are left as they are: no rule can tell them apart. `longest`: the most segments an id of
    `ids` has, when the caller rewrites many records with the same ids."""
    out: dict[str, Any] = {}
    pseudonym: str | None = None
    for name, value in entry.items():
        if not isinstance(value, str):
            out[name] = value
        elif name == "user_id" and value in ids:
            pseudonym = ids[value]
        elif name == "path":
            out[name], found = _path_without(value, ids, longest)
            pseudonym = pseudonym or found
        else:
            out[name] = ids.get(value, value)
    if pseudonym is not None:
        out[PSEUDONYM_FIELD] = pseudonym
    return out


def _path_without(
    path: str, ids: Mapping[str, str], longest: int | None = None
) -> tuple[str, str | None]:
    """`path` with each run of whole segments equal to one of `ids` (an id may hold '/', and the
    path is the decoded one: `a%2Fb` is `a/b`) as `{user_id}`, longest runs first; and the
    pseudonym of the first id found (None: none was). Runs are looked up, never searched for: the
    cost is the path's segments times the most segments an id has, whatever the number of ids."""
    segments = path.split("/")
    longest = _segments(ids) if longest is None else longest
    out: list[str] = []
    found: str | None = None
    n = 0
    while n < len(segments):
        for end in range(min(len(segments), n + longest), n, -1):
            run = "/".join(segments[n:end])
            if run and run in ids:
                found = found or ids[run]
                out.append(PATH_STAND_IN)
                n = end
                break
        else:
            out.append(segments[n])
            n += 1
    return ("/".join(out), found) if found is not None else (path, None)


def _segments(ids: Iterable[str]) -> int:
    """The most path segments one of `ids` takes."""
    return max((i.count("/") + 1 for i in ids), default=0)


FEW_IDS = 16  # up to this many ids, lines are searched for them before being read as JSON


def _rewritten(data: bytes, ids: Mapping[str, str]) -> bytes | None:
    """The audit file's bytes with every record naming one of `ids` pseudonymized, or None when
    that changes nothing (the file is left as it is). A line that is not a JSON object stays.
    A few ids are searched for in each line; more (a batch folding many erasures) and every line
    is read as JSON once instead: searching cost the lines times the ids, under the lock."""
    needles = [json.dumps(i)[1:-1].encode() for i in ids]
    few = len(needles) <= FEW_IDS
    longest = _segments(ids)
    if few and not any(n in data for n in needles):
        return None
    lines = data.split(b"\n")
    changed = False
    for n, raw in enumerate(lines):
        if not raw or (few and not any(needle in raw for needle in needles)):
            continue
        try:
            parsed = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if not isinstance(parsed, dict):
            continue
        new = pseudonymized(parsed, ids, longest)
        if new != parsed:
            lines[n] = line(new).encode()
            changed = True
    return b"\n".join(lines) if changed else None


def erase_from_audit(path: Path, ids: Mapping[str, str], keep: int = AUDIT_KEEP) -> int:
    """Pseudonymize the records naming one of `ids` (user id -> pseudonym) in the audit log
    `path` and its rotations `path.1` .. `path.<keep>`; the number of files rewritten. Under the
    lock every writer takes (`path.lock`, api/audit.py `AuditFile`); each file is replaced whole
    (written beside it 0600, then renamed), so a crash leaves the old file or the new one."""
    if not ids:
        return 0
    rewritten = 0
    with audit_locked(path):
        for n in range(keep + 1):
            name = rotated(path, n)
            try:
                data = name.read_bytes()
            except FileNotFoundError:
                continue
            new = _rewritten(data, ids)
            if new is None:
                continue
            # a linked log (to a log volume) is rewritten where it points, the link kept
            _replace(Path(os.path.realpath(name)) if name.is_symlink() else name, new)
            rewritten += 1
    return rewritten


def _replace(path: Path, data: bytes) -> None:
    fresh = path.with_name(path.name + ".erasing")
    with contextlib.suppress(FileNotFoundError):
        fresh.unlink()  # left by a crash during an earlier rewrite
    fd = open_private(fresh)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    fresh.replace(path)
