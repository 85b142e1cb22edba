"""Partition ownership as a worker sees it, published in its data dir for its readers.

A worker forwards a request for a user whose `profiles` partition another worker of the group
owns to that worker (api/routing.py); its readers (streams/readers.py) read the worker's tables
from RocksDB secondaries and know nothing of the group. So the worker writes its view to
`<data_dir>/ownership.json` whenever it changes (and touches it every `HEARTBEAT` seconds), and
a reader's `owner_url` routes by it:

    {"v": 2, "own": "http://10.0.0.1:8080", "owners": ["http://10.0.0.1:8080", null, ...],
     "held": [0, 1]}

`own` is the worker's advertised URL, `owners[p]` the API URL of the owner of profiles partition
`p` (as the group's assignment advertises it), `null` while unknown (no assignment yet, a
rebalance). `held` lists the partitions the worker holds now: owned or stood by for, as its
latest assignment says (kept through a rebalance until the next assignment arrives). Its data
dir keeps the databases of every partition it ever held; with three or more workers those of
the others are left over from an earlier assignment and no longer written, so a reader answers
no user of them from its tables (`Ownership.holds`). A version-1 file (a worker before
2026-12-07) has no `held`: every partition counts as held. The file is written atomically (a
temporary file, then a rename), whenever the view changes (at once when a rebalance begins and
when one ends) and at least every `HEARTBEAT` s; its modification time is its written-at time.
A reader treats a file not rewritten for `STALE` s (six heartbeats: the worker is gone or
stuck, and its group has moved its partitions elsewhere) as no view at all.

The file is input like any other: `parse` refuses one past `MAX_BYTES`, one that is not exactly
this shape, one whose partition count is not the reader's, and one whose `own` is not a plain
http(s) URL with a host (`url_problem`, also what api/hops.py checks a hop's target with). A
peer's URL that is not one costs only its partitions: they are set aside as unknown (answered
locally, no hop goes there), the rest of the view stands, and `Ownership.refused` says why
(without repeating the URL, which may carry credentials).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

FILE_NAME = "ownership.json"
VERSION = 2
VERSIONS = (1, 2)  # read: 1 has no "held" (every partition held)
MAX_BYTES = 256 * 1024  # 4096 partitions of 60-character URLs fit; a reader reads no more
MAX_URL = 2048
HEARTBEAT = 5.0  # seconds: the worker touches the file at least this often while it runs
STALE = 30.0  # seconds without a touch after which a reader no longer routes by the file


class OwnershipError(ValueError):
    """Why an ownership file cannot be used."""


@dataclass(frozen=True)
class Ownership:
    own: str  # the publishing worker's URL
    owners: tuple[str | None, ...]  # per profiles partition: its owner's URL, None unknown
    # why the file's entries set aside as unknown were refused ("partition 3: no host", ...)
    refused: tuple[str, ...] = ()
    # the partitions the publishing worker holds (owned or standby); None: every one (version 1)
    held: frozenset[int] | None = None

    def holds(self, partition: int) -> bool:
        """Whether the publishing worker's copy of `partition` is kept current (it owns the
        partition or stands by for it), so its tables may answer that partition's users."""
        return self.held is None or partition in self.held

    def owner_url(self, partition: int) -> str | None:
        """The URL to forward a request for a user of `partition` to; None: answer locally (the
        publishing worker owns it, or nobody is known to)."""
        if not 0 <= partition < len(self.owners):
            return None
        url = self.owners[partition]
        return None if url is None or url == self.own else url

    @property
    def others(self) -> bool:
        """Whether any partition is owned by another worker (a group of several)."""
        return any(url is not None and url != self.own for url in self.owners)


def url_problem(url: str) -> str | None:
    """Why `url` cannot receive a forwarded request, or None: an http(s) URL with a host and no
    credentials, path, query or fragment."""
    if len(url) > MAX_URL:
        return "longer than 2048 characters"
    if not url.isprintable() or any(c.isspace() for c in url):
        return "control characters or spaces"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a URL"
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme!r} is not http(s)"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "the URL carries credentials"
    if not parts.hostname or (port is not None and not 0 < port < 65536):
        return "no host"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "the URL has a path, query or fragment"
    return None


def render(own: str, owners: Sequence[str | None], held: Iterable[int] | None = None) -> bytes:
    """The file's bytes for worker `own`, its per-partition view `owners` and the partitions it
    holds (`held`; None: every one)."""
    body = {
        "v": VERSION,
        "own": own.rstrip("/"),
        "owners": [_strip(u) for u in owners],
        "held": sorted(set(range(len(owners)) if held is None else held)),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _strip(url: str | None) -> str | None:
    return None if url is None else url.rstrip("/")


def _url(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise OwnershipError(f"{where} is not a URL string")
    problem = url_problem(value)
    if problem is not None:
        raise OwnershipError(f"{where}: {problem}")
    return value.rstrip("/")


def parse(raw: bytes, partitions: int) -> Ownership:
    """The ownership `raw` (a file's bytes) states for `partitions` partitions; OwnershipError
    says why it is refused."""
    if len(raw) > MAX_BYTES:
        raise OwnershipError(f"larger than {MAX_BYTES} bytes")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise OwnershipError(f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(body, dict) or "v" not in body:
        raise OwnershipError('not an object of exactly "v", "own", "owners" and "held"')
    if type(body["v"]) is not int or body["v"] not in VERSIONS:  # not 1.0, nor true
        read = ", ".join(map(str, VERSIONS))
        raise OwnershipError(f"version {_shown(body['v'])} is not one read here ({read})")
    fields = {"v", "own", "owners"} | ({"held"} if body["v"] >= 2 else set())
    if set(body) != fields:
        raise OwnershipError(f"not an object of exactly {', '.join(sorted(fields))}")
    own = _url(body["own"], '"own"')
    owners = body["owners"]
    if not isinstance(owners, list):
        raise OwnershipError('"owners" is not a list')
    if len(owners) != partitions:
        raise OwnershipError(f"{len(owners)} partitions where this process has {partitions}")
    urls: list[str | None] = []
    refused: list[str] = []
    for p, value in enumerate(owners):
        try:
            urls.append(None if value is None else _url(value, f"partition {p}"))
        except OwnershipError as exc:  # this peer's partitions alone: answered locally
            urls.append(None)
            refused.append(str(exc))
    held = None if body["v"] < 2 else _held(body["held"], partitions)
    return Ownership(own, tuple(urls), tuple(refused), held)


def _shown(value: object) -> str:
    """A JSON scalar as the file holds it (cut short), or what kind of value it is."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return json.dumps(value)[:20]


def _held(value: object, partitions: int) -> frozenset[int]:
    if not isinstance(value, list):
        raise OwnershipError('"held" is not a list')
    held: set[int] = set()
    for p in value:
        if type(p) is not int:
            raise OwnershipError(f'"held": {str(p)[:20]!r} is not a partition number')
        if not 0 <= p < partitions:
            raise OwnershipError(f'"held": partition {p} out of range')
        if p in held:
            raise OwnershipError(f'"held": partition {p} named twice')
        held.add(p)
    return frozenset(held)


def write(
    path: Path, own: str, owners: Sequence[str | None], held: Iterable[int] | None = None
) -> None:
    """Write the file atomically (readers never see half of it), owner-only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(render(own, owners, held))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read(path: Path, partitions: int) -> Ownership:
    """The file at `path`, read no further than its bound, parsed; OwnershipError (or OSError:
    missing, unreadable) otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)  # a FIFO never blocks
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OwnershipError("not a regular file")
        raw = src.read(MAX_BYTES + 1)
    return parse(raw, partitions)


def describe(owners: Sequence[str | None]) -> str:
    """`owners` for a log line: each URL with its partitions ("unknown" for None)."""
    by: dict[str, list[int]] = {}
    for p, url in enumerate(owners):
        by.setdefault(url or "unknown", []).append(p)
    return "; ".join(f"{url}: {','.join(map(str, ps))}" for url, ps in by.items())
