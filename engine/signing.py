"""Signatures between Persona processes, keyed by `PERSONA_CLUSTER_SECRET` (pure: no I/O).

Two things are signed with HMAC-SHA256, each with its own key derived from the secret:

- a forwarded request (a *hop*, api/routing.py): header `X-Persona-Hop` =
  `v1;t=<ms>;n=<nonce>;k=<key name, base64url>;s=<scope,scope>;sig=<hex>` over the method, the
  path and query, the time, the nonce, the key's name and scopes, and the SHA-256 of the body.
  The owner accepts it for `HOP_WINDOW_MS` around its own clock, once per nonce (`SeenNonces`).
- a Kafka record of the `models` or commands topic: headers `persona-signer` (who made it: an
  API key's name, `cli:<user>@<host>`, a worker) and `persona-signature` = `v1;t=<ms>;<hex>` over
  the topic, the key, the time, the signer and the SHA-256 of the value (a tombstone has its own
  marker). The value stays as it was: unsigned readers and old records are unchanged.

A third key marks a `catalog` record as *kept* (streams/adopt.py: a row of the worker's own
table republished into a new embedded broker's topic, which the catalog fold passes over): the
mark is `v1;<hex>`, HMAC-SHA256 over the topic, the partition, the key and the value, so no
producer without the secret can make the fold pass over a real update.

A verification answers the signed facts or a short reason (never the secret or a signature).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from engine.settings import MIN_CLUSTER_SECRET  # characters of the secret

HOP_HEADER = "X-Persona-Hop"
HOP_WINDOW_MS = 30_000  # a hop older or newer than this (either side's clock) is refused
SIGNER_HEADER = "persona-signer"
SIGNATURE_HEADER = "persona-signature"
_TOMBSTONE = b"\x00persona-tombstone"
_KEPT_VERSION = b"v1;"
Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Hop:
    """The caller a verified hop speaks for."""

    name: str
    scopes: frozenset[str]
    ts: int
    nonce: str


@dataclass(frozen=True)
class Signed:
    """A verified record: who signed it and when (ms)."""

    signer: str
    ts: int


class ClusterKey:
    """The cluster secret's two derived keys; never shown (no repr of the secret)."""

    __slots__ = ("_hop", "_kept", "_record")

    def __init__(self, secret: str) -> None:
        if len(secret) < MIN_CLUSTER_SECRET:
            raise ValueError(f"a cluster secret has at least {MIN_CLUSTER_SECRET} characters")
        raw = secret.encode()
        self._hop = hmac.new(raw, b"persona hop v1", hashlib.sha256).digest()
        self._record = hmac.new(raw, b"persona record v1", hashlib.sha256).digest()
        self._kept = hmac.new(raw, b"persona kept v1", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "ClusterKey(<hidden>)"

    # -- hops --------------------------------------------------------------------------------
    def hop(
        self, method: str, target: str, name: str, scopes: frozenset[str], body: bytes, now: int
    ) -> str:
        """The `X-Persona-Hop` value for a request to `target` (path and query) at `now` (ms)."""
        nonce = secrets.token_hex(12)
        scope_text = ",".join(sorted(scopes))
        sig = self._hop_sig(method, target, now, nonce, name, scope_text, body)
        name_text = base64.urlsafe_b64encode(name.encode()).decode()
        return f"v1;t={now};n={nonce};k={name_text};s={scope_text};sig={sig}"

    def verify_hop(self, header: str, method: str, target: str, body: bytes, now: int) -> Hop | str:
        """The hop's caller, or why it is refused."""
        parsed = _hop_fields(header, now)
        if isinstance(parsed, str):
            return parsed
        fields, ts, name = parsed
        expected = self._hop_sig(method, target, ts, fields["n"], name, fields["s"], body)
        if not hmac.compare_digest(expected, fields["sig"]):
            return "bad hop signature"
        scopes = frozenset(s for s in fields["s"].split(",") if s)
        return Hop(name, scopes, ts, fields["n"])

    def _hop_sig(
        self, method: str, target: str, ts: int, nonce: str, name: str, scopes: str, body: bytes
    ) -> str:
        parts = (method.upper(), target, str(ts), nonce, name, scopes)
        text = "\n".join(parts).encode() + b"\n" + hashlib.sha256(body).digest()
        return hmac.new(self._hop, text, hashlib.sha256).hexdigest()

    # -- records -----------------------------------------------------------------------------
    def sign_record(
        self, topic: str, key: bytes | None, value: bytes | None, signer: str, now: int
    ) -> Headers:
        """The headers that sign one record of `topic`."""
        sig = self._record_sig(topic, key, value, signer, now)
        return [(SIGNER_HEADER, signer.encode()), (SIGNATURE_HEADER, f"v1;t={now};{sig}".encode())]

    def verify_record(
        self, topic: str, key: bytes | None, value: bytes | None, headers: object
    ) -> Signed | str:
        """Who signed the record and when, or why it is refused ("unsigned", "bad signature")."""
        found = _header_map(headers)
        signer_raw, signature = found.get(SIGNER_HEADER), found.get(SIGNATURE_HEADER)
        if signer_raw is None or signature is None:
            return "unsigned"
        try:
            version, stamp, sig = signature.decode("ascii").split(";")
            ts = int(stamp.removeprefix("t="))
            signer = signer_raw.decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return "bad signature"
        if version != "v1" or not stamp.startswith("t="):
            return "bad signature"
        if not hmac.compare_digest(self._record_sig(topic, key, value, signer, ts), sig):
            return "bad signature"
        return Signed(signer, ts)

    def _record_sig(
        self, topic: str, key: bytes | None, value: bytes | None, signer: str, ts: int
    ) -> str:
        digest = hashlib.sha256(_TOMBSTONE if value is None else b"v" + value).digest()
        text = b"\n".join((topic.encode(), key or b"", str(ts).encode(), signer.encode(), digest))
        return hmac.new(self._record, text, hashlib.sha256).hexdigest()

    # -- kept catalog records ------------------------------------------------------------------
    def kept_mark(self, topic: str, partition: int, key: bytes, value: bytes) -> bytes:
        """The kept header's value for a record of `value` under `key` in topic-partition
        `topic`/`partition` (one HMAC over them: cheap enough for every product of a catalog)."""
        framed = f"{topic}\n{partition}\n{len(key)}\n".encode() + key + value
        return _KEPT_VERSION + hmac.digest(self._kept, framed, "sha256").hex().encode()

    def is_kept(
        self, topic: str, partition: int, key: bytes | None, value: bytes | None, mark: object
    ) -> bool:
        """Whether `mark` is the kept mark of exactly this record (constant-time compare; a
        tombstone, a record without a key or a mark that is not bytes never is)."""
        if key is None or value is None or not isinstance(mark, bytes):
            return False
        return hmac.compare_digest(self.kept_mark(topic, partition, key, value), mark)


def cluster_key(secret: str | None) -> ClusterKey | None:
    """The key of a configured secret (None: not configured; nothing verifies)."""
    return None if secret is None else ClusterKey(secret)


def hop_header_problem(header: str, now: int) -> str | None:
    """Why a hop header is refused before its body is looked at (malformed, or signed outside
    `HOP_WINDOW_MS` of `now`), or None: then only its signature, which covers the body, is left
    to check (`ClusterKey.verify_hop`). Nothing here needs the secret."""
    found = _hop_fields(header, now)
    return found if isinstance(found, str) else None


def _hop_fields(header: str, now: int) -> tuple[dict[str, str], int, str] | str:
    """A hop header's fields, time and key name, or why it is refused (its signature unchecked)."""
    fields = _fields(header)
    if fields is None:
        return "malformed hop header"
    try:
        ts = int(fields["t"])
        name = base64.urlsafe_b64decode(fields["k"].encode()).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return "malformed hop header"
    if abs(now - ts) > HOP_WINDOW_MS:
        return "expired hop signature"
    return fields, ts, name


def _fields(header: str) -> dict[str, str] | None:
    version, _, rest = header.partition(";")
    if version != "v1" or len(header) > 4096:
        return None
    fields: dict[str, str] = {}
    for part in rest.split(";"):
        name, eq, value = part.partition("=")
        if not eq:
            return None
        fields[name] = value
    if set(fields) != {"t", "n", "k", "s", "sig"}:
        return None
    return fields


def _header_map(headers: object) -> dict[str, bytes]:
    """Kafka record headers (a sequence of (name, bytes) pairs, or None) as a dict."""
    found: dict[str, bytes] = {}
    if not isinstance(headers, list | tuple):
        return found
    for pair in headers:
        if isinstance(pair, tuple | list) and len(pair) == 2 and isinstance(pair[1], bytes):
            found[str(pair[0])] = pair[1]
    return found


class SeenNonces:
    """Nonces of hops accepted within the window: a hop replayed inside it is refused. Bounded:
    past `limit` entries the oldest go first (a replay then still needs a fresh time)."""

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._seen: OrderedDict[str, int] = OrderedDict()

    def first(self, hop: Hop, now: int) -> bool:
        """True the first time this hop's nonce is seen (and remembers it)."""
        seen = self._seen
        while seen and (
            len(seen) >= self.limit or next(iter(seen.values())) < now - 2 * HOP_WINDOW_MS
        ):
            seen.popitem(last=False)
        if hop.nonce in seen:
            return False
        seen[hop.nonce] = now
        return True


class RecordClock:
    """The newest signed time accepted per record key: an older signed record of the same key (a
    replayed activation, say) is refused."""

    def __init__(self) -> None:
        self._newest: dict[str, int] = {}

    def fresh(self, key: str, signed: Signed) -> bool:
        newest = self._newest.get(key)
        if newest is not None and signed.ts < newest:
            return False
        self._newest[key] = signed.ts
        return True


def new_secret() -> str:
    """A fresh cluster secret (the embedded default writes one into the data dir)."""
    return secrets.token_urlsafe(36)
