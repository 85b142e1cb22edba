"""API keys: parsing the contract's key entries, constant-time checks, the local key.

Keys are kept only as SHA-256 digests in memory; secrets are never logged. A secret shorter than
`MIN_SECRET` characters is refused at start-up, with a message that names the entry (and the key's
name) but never the secret: guessing a long random secret is infeasible, whatever the rate. A keys
file (and the local key file) that is a symbolic link, owned by another user or readable by group
or others is refused at start-up (engine/files.py). A keys file is read again when it changes or
on SIGHUP (api/key_reload.py), with the same checks; one that fails them leaves the keys as they
were.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from engine.collect import COLLECT_SCOPE, PURCHASE_SCOPE
from engine.files import check_secret_file, private_dir, read_regular
from engine.settings import MIN_SECRET  # characters of every secret

# `events:collect` is the scope of a publishable key, the only kind that may sit in a web page
# (api/collect.py: POST /v1/collect; engine/collect.py: what it may send); `events:collect-purchase`
# lets such a key send `purchase` events too, and needs `events:collect` beside it
COLLECT, COLLECT_PURCHASE = COLLECT_SCOPE, PURCHASE_SCOPE
SCOPES = frozenset(
    {"content:read", "events:write", "feeds:read", "models:admin", "privacy:admin", "rules:admin"}
    | {COLLECT, COLLECT_PURCHASE}
)
LOCAL_KEY_FILE = "local-api-key"
MAX_KEYS_FILE = 16 << 20  # bytes of PERSONA_API_KEYS_FILE (some 100,000 entries)


class InvalidKey(ValueError):
    """A malformed API key entry or keys file."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes
    scopes: frozenset[str]


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _header_digest(secret: str) -> bytes | None:
    """The digest of a secret a request sent, or None when it cannot be one: aiohttp hands a
    header's bytes that are not UTF-8 over as surrogates, which no configured secret holds."""
    try:
        return _digest(secret)
    except UnicodeEncodeError:
        return None


def parse_entry(entry: str, where: str) -> ApiKey:
    parts = entry.split(":", 2)
    if len(parts) != 3:
        raise InvalidKey(f"{where}: an API key entry is name:secret:scope,scope,...")
    name, secret, scope_text = (p.strip() for p in parts)
    if not name or not secret:
        raise InvalidKey(f"{where}: an API key needs a name and a secret")
    if len(secret) < MIN_SECRET:
        raise InvalidKey(
            f"{where}: the secret of key {name!r} has {len(secret)} characters; at least "
            f"{MIN_SECRET} are required (e.g. python -c 'import secrets; "
            f"print(secrets.token_urlsafe(24))')"
        )
    scopes = frozenset(s.strip() for s in scope_text.split(",") if s.strip())
    unknown = scopes - SCOPES
    if unknown or not scopes:
        raise InvalidKey(
            f"{where}: key {name!r} has unknown or no scopes {sorted(unknown)}; "
            f"known: {', '.join(sorted(SCOPES))}"
        )
    if COLLECT_PURCHASE in scopes and COLLECT not in scopes:
        raise InvalidKey(f"{where}: key {name!r} has {COLLECT_PURCHASE} without {COLLECT}")
    return ApiKey(name=name, digest=_digest(secret), scopes=scopes)


# a keys file's (st_mtime_ns, st_size, st_ino, st_ctime_ns): changed or not (the change time
# for a chmod or chown: a file refused for its mode is taken once its mode is fixed)
Signature = tuple[int, int, int, int]


def signature(path: Path) -> Signature | None:
    """What tells one version of a keys file from the next, without reading it (the link
    itself, not its target: a symbolic link swapped in is a change); None when nothing is
    there or it cannot be looked at."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino, info.st_ctime_ns


def file_keys(keys_file: Path) -> list[ApiKey]:
    """The entries of a keys file, checked as at start-up: 0600, ours, no symbolic link
    (UnsafeFile), at most MAX_KEYS_FILE bytes of UTF-8, every entry valid (InvalidKey)."""
    check_secret_file(keys_file, "PERSONA_API_KEYS_FILE")  # 0600, ours, no symlink
    try:
        lines = read_regular(keys_file, MAX_KEYS_FILE).decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InvalidKey(
            f"PERSONA_API_KEYS_FILE={keys_file}: not UTF-8 text (byte {exc.start})"
        ) from None
    except (OSError, ValueError) as exc:
        raise InvalidKey(f"PERSONA_API_KEYS_FILE={keys_file}: {exc}") from None
    keys: list[ApiKey] = []
    for n, line in enumerate(lines, 1):
        if line.strip() and not line.lstrip().startswith("#"):
            keys.append(parse_entry(line.strip(), f"{keys_file}:{n}"))
    return keys


class KeyRing:
    """The keys of a process: `PERSONA_API_KEYS`' (`fixed`: the environment cannot change until
    a restart) and then `keys_file`'s, which `reload` reads again (api/key_reload.py). `keys` is
    only ever replaced whole, in one assignment: a request sees the old keys or the new ones,
    never a mix; whatever holds the ring (the application, the hot path's `Gate`) sees the new
    keys on its next request."""

    def __init__(
        self,
        keys: list[ApiKey],
        fixed: list[ApiKey] | None = None,
        keys_file: Path | None = None,
        seen: Signature | None = None,
    ) -> None:
        self.keys = keys
        self.fixed = list(keys) if fixed is None else fixed
        self.keys_file = keys_file
        self.seen = seen  # the keys file's signature when it was last read

    @classmethod
    def from_settings(cls, entries: str | None, keys_file: Path | None) -> KeyRing:
        fixed: list[ApiKey] = []
        if entries:
            for i, entry in enumerate(e for e in entries.split(";") if e.strip()):
                fixed.append(parse_entry(entry, f"PERSONA_API_KEYS entry {i + 1}"))
        if not keys_file:
            return cls(fixed, fixed)
        seen = signature(keys_file)  # before the read: a change meanwhile is read again
        return cls([*fixed, *file_keys(keys_file)], fixed, keys_file, seen)

    def reload(self) -> int:
        """Read the keys file again and take its keys (the number of keys now); InvalidKey or
        UnsafeFile (a SettingsError) when it is not taken: the keys stay as they were."""
        assert self.keys_file is not None
        seen = signature(self.keys_file)
        self.seen = seen
        keys = [*self.fixed, *file_keys(self.keys_file)]
        self.keys = keys  # the swap
        return len(keys)

    def authenticate(self, secret: str) -> ApiKey | None:
        """The key whose secret this is, comparing every digest in constant time; None for a
        secret that is no UTF-8 text (a header's undecodable bytes)."""
        digest = _header_digest(secret)
        if digest is None:
            return None
        found: ApiKey | None = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found

    def __len__(self) -> int:
        return len(self.keys)


def secret_from_header(header: str, allow_basic: bool = False) -> str | None:
    """The secret of an `Authorization` header: `Bearer <secret>`, or with `allow_basic` also HTTP
    Basic with the secret as password (ad platforms fetch feeds that way; the user is ignored)."""
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip()
    if scheme == "basic" and allow_basic:
        return basic_password(value)[0]
    return None


def basic_password(value: str) -> tuple[str | None, str]:
    """(the password of HTTP Basic credentials `value`, "") or (None, why there is none to
    take). Only the password is decoded (UTF-8): the user name is ignored whatever its bytes
    (RFC 7617 leaves the charset open; many clients send Latin-1)."""
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except ValueError:  # binascii.Error, and text outside ASCII
        return None, "the credentials are not Base64 of user:password"
    _, colon, password = decoded.partition(b":")
    if not colon or not password:
        return None, (
            "the credentials hold no password: the API key goes in the password (the user name "
            "is ignored)"
        )
    try:
        return password.decode("utf-8"), ""
    except UnicodeDecodeError:
        return None, "the password is not UTF-8 text"


def ensure_local_key(data_dir: Path) -> tuple[Path, str]:
    """The local all-scopes key of `persona run` without configured keys: created once (0600)."""
    path = data_dir / LOCAL_KEY_FILE
    check_secret_file(path, "the local API key file")
    if path.exists():
        line = path.read_text().strip()
    else:
        private_dir(data_dir)
        line = f"local:{secrets.token_urlsafe(24)}:{','.join(sorted(SCOPES))}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(line + "\n")
    return path, line
