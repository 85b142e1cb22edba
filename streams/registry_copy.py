"""A local copy of the `models` topic's records, kept in the data dir (`<data dir>/registry`).

On the embedded broker the topics live in memory: a new broker starts with an empty `models`
topic. The worker's `RegistryService` puts every record it folds here (the latest per key, as
the compacted topic keeps it), with its Kafka headers (a signed deployment's HMAC signature
travels in them), and the supervisor republishes them into a new broker's `models` topic before
the worker starts (`persona.adopt`).

The store is a RocksDB (rocksdict) database: key = the record key (UTF-8), value = msgpack of
`[value, [[header name, header bytes], ...]]`. Only the worker, which owns the data dir, writes
it; a backup opens it with `read_only=True` (a RocksDB secondary under `<path>.secondary`, which
sees the primary's writes up to the moment it opens, without locking it).

Interface for other modules (backups): `records()` gives (key, value) pairs in an order the
registry fold accepts; `entries()` gives the same with each record's headers, which is what
republishing (or copying into another `RegistryCopy` with `put(key, value, headers)`) needs.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import msgpack
from rocksdict import AccessType, Options, Rdict

REGISTRY_COPY_DIR = "registry"  # <data dir>/registry, a rocksdict DB
Headers = list[tuple[str, bytes]]
# The fold's order: chunks before the manifest that checks them, then activations, experiment.
_KIND_ORDER = {"chunk": 0, "version": 1, "active": 2, "experiment": 3}


@dataclass(frozen=True)
class Entry:
    """One kept record: what republishing it needs."""

    key: str
    value: bytes | None
    headers: Headers


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_max_open_files(-1)  # a secondary must keep every file open
    return options


def _order(key: str) -> tuple[int, str]:
    return _KIND_ORDER.get(key.split("/", 1)[0], len(_KIND_ORDER)), key


def _pack(value: bytes | None, headers: Headers) -> bytes:
    return msgpack.packb([value, [[k, v] for k, v in headers]], use_bin_type=True)


def _unpack(key: bytes, raw: bytes) -> Entry:
    value, headers = msgpack.unpackb(raw, raw=False)
    return Entry(key.decode("utf-8"), value, [(str(k), bytes(v)) for k, v in headers])


class RegistryCopy:
    """The kept `models` records (see the module doc)."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self._secondary: Path | None = None
        if read_only:
            self._secondary = path.with_name(path.name + ".secondary")
            access = AccessType.secondary(str(self._secondary))
            self._db = Rdict(str(path), _options(), access_type=access)
            self._db.try_catch_up_with_primary()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = Rdict(str(path), _options())

    def put(self, key: str, value: bytes | None, headers: Headers | None = None) -> None:
        """Keep `key`'s latest record; None (a tombstone) deletes it."""
        if value is None:
            del self._db[key.encode("utf-8")]
        else:
            self._db[key.encode("utf-8")] = _pack(value, list(headers or []))

    def entries(self) -> list[Entry]:
        """Every kept record with its headers, in the fold's order."""
        kept = [_unpack(cast(bytes, k), cast(bytes, v)) for k, v in self._db.items()]  # raw mode
        return sorted(kept, key=lambda e: _order(e.key))

    def records(self) -> list[tuple[str, bytes | None]]:
        """Every kept record as (key, value), in an order the registry fold accepts (chunk/,
        version/, active/, experiment); `entries()` adds the headers republishing needs."""
        return [(e.key, e.value) for e in self.entries()]

    def __len__(self) -> int:
        return len(self.entries())

    def close(self) -> None:
        self._db.close()
        if self._secondary is not None:
            shutil.rmtree(self._secondary, ignore_errors=True)
