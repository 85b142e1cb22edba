"""Click tokens for the redirect `GET /c/{token}` (api/clicks.py; issue 18 item 5). Pure.

A link in a block names who clicked what: the user, the block, its variant and the item, and when
the token was made. It is signed with HMAC-SHA256 under a key derived from the cluster secret, so
nobody can make a token for another user or item, and the redirect needs no API key (a mail
client follows it). The redirect's target is the item's URL from the catalog, never a URL in the
token: a token cannot send anybody elsewhere (no open redirect).

Format: `<payload>.<signature>`, both base64url without padding; the payload is the compact JSON
`[version, user_id, block, variant, item_id, minute made]` and the signature the first 16 bytes
of the HMAC. At most MAX_TOKEN characters; a click on a link older than MAX_AGE_DAYS still opens
the shop (api/clicks.py) but records nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

VERSION = 1
MAX_TOKEN = 1024  # characters: ids are at most 128 each
MAX_AGE_DAYS = 400  # a mail opened a year later still counts its click
MINUTE_MS = 60_000
_SIGNATURE_BYTES = 16
_KEY_LABEL = b"persona click token v1"
CLICK_PREFIX = "/c/"  # the redirect's path: `/c/<token>` (api/clicks.py)
LOGGED_DIGITS = 12  # hex digits of a token's SHA-256 that log lines show instead of it


@dataclass(frozen=True)
class Click:
    user_id: str
    block: str
    variant: str
    item_id: str
    minute: int  # epoch minutes when the link was made


class InvalidToken(ValueError):
    """A token that was not made by this shop's Persona, or is unreadable or too old."""


def click_key(cluster_secret: str) -> bytes:
    """The key click tokens are signed with: its own, derived from the cluster secret."""
    return hmac.new(cluster_secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def make_token(key: bytes, click: Click) -> str:
    fields = [VERSION, click.user_id, click.block, click.variant, click.item_id, click.minute]
    payload = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
    return f"{_b64(payload)}.{_b64(_sign(key, payload))}"


def read_token(key: bytes, token: str) -> Click:
    """The click a token names, or InvalidToken with a short reason (never the expected
    signature)."""
    if len(token) > MAX_TOKEN or token.count(".") != 1:
        raise InvalidToken("not a click token")
    encoded, signature = token.split(".")
    payload, given = _unb64(encoded), _unb64(signature)
    if not hmac.compare_digest(given, _sign(key, payload)):
        raise InvalidToken("the token's signature does not match")
    return _fields(payload)


def is_fresh(click: Click, now_ms: int) -> bool:
    """Whether the click still counts: its link was made at most MAX_AGE_DAYS ago."""
    return now_ms // MINUTE_MS - click.minute <= MAX_AGE_DAYS * 24 * 60


def click_event(click: Click, now_ms: int) -> dict[str, Any]:
    """The `click` event the redirect records (engine/events.py validates it as any other).
    One per link and minute: a double click (or a mail scanner's second fetch) in the same
    minute is one click, since the fold ignores a repeated event_id."""
    fields = [click.user_id, click.block, click.variant, click.item_id, click.minute]
    digest = hashlib.sha256(json.dumps([fields, now_ms // MINUTE_MS]).encode()).hexdigest()
    return {
        "event_id": f"click-{digest[:32]}",
        "type": "click",
        "user_id": click.user_id,
        "ts": now_ms,
        "item_id": click.item_id,
        # when the link was made: the fold fences a click on a link made before the user's
        # erasure (engine.erasure.produced_ms)
        "props": {
            "block": click.block,
            "variant": click.variant,
            "link_ms": click.minute * MINUTE_MS,
        },
    }


MAX_RECENT_CLICKS = 50_000  # click ids of the current minute `RecentClicks` remembers


class RecentClicks:
    """The click ids (`click_event`'s `event_id`) recorded in the current minute, so a link
    followed again within it counts once on the dashboard's A/B panel, as it does in the fold
    (which ignores the repeated event_id). An id names its minute, so only the current
    minute's can repeat: a new minute starts the memory over. At most `limit` ids: past it a
    click is counted without being remembered (a repeat of it may count again), so hostile
    links cannot grow the process."""

    def __init__(self, limit: int = MAX_RECENT_CLICKS) -> None:
        self.limit = limit
        self.minute = -1
        self._ids: set[str] = set()

    def __len__(self) -> int:
        return len(self._ids)

    def first(self, event_id: str, minute: int) -> bool:
        """True unless `event_id` was recorded already in `minute` (and remembers it)."""
        if minute != self.minute:
            self.minute, self._ids = minute, set()
        if event_id in self._ids:
            return False
        if len(self._ids) < self.limit:
            self._ids.add(event_id)
        return True


def logged_path(path: str) -> str:
    """`path` as log lines write it: a click redirect's token replaced by `~` and the first
    LOGGED_DIGITS hex digits of its SHA-256. Anybody can decode a token into who clicked what
    (the payload is plain base64), so a log holding tokens would be a store of clicks readable by
    whoever reads logs and kept past an erasure; the digest names one link (its lines correlate,
    and a support case holding the link can find them) and reveals nothing else: it cannot be
    recomputed without the token, whose signature needs the click key. Everything after `/c/`
    counts, so a link the router misses (a trailing slash) is hidden as well; every other path
    is returned as it is."""
    stripped = path.lstrip("/")
    if not stripped.startswith("c/") or stripped == "c/":
        return path
    tail = stripped[2:].encode("utf-8", "surrogatepass")
    return f"{CLICK_PREFIX}~{hashlib.sha256(tail).hexdigest()[:LOGGED_DIGITS]}"


def _sign(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]


def _fields(payload: bytes) -> Click:
    try:
        fields = json.loads(payload)
    except ValueError:
        raise InvalidToken("unreadable payload") from None
    if not (isinstance(fields, list) and len(fields) == 6 and fields[0] == VERSION):
        raise InvalidToken("unknown token version")
    _, user, block, variant, item, minute = fields
    if not all(isinstance(v, str) and 0 < len(v) <= 128 for v in (user, block, variant, item)):
        raise InvalidToken("unreadable payload")
    if not isinstance(minute, int) or isinstance(minute, bool) or minute < 0:
        raise InvalidToken("unreadable payload")
    return Click(user, block, variant, item, minute)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """The bytes `_b64` wrote as `text`; InvalidToken for any other spelling (base64 decoding
    ignores unused low bits and characters outside its alphabet: a token with its last
    character changed still read as the same signed link)."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("not a click token") from None
    if _b64(raw) != text:
        raise InvalidToken("not a click token")
    return raw


Links = Callable[[str, str, str, str], str]  # (user, block, variant, item) -> the link's URL


def link_maker(key: bytes, base_url: str, wall_ms: Callable[[], int]) -> Links:
    """Links through `<base_url>/c/<token>` (PERSONA_CLICK_URL), each token made at the wall
    clock's minute (its age counts from there: `is_fresh`)."""
    base = base_url.rstrip("/")

    def link(user_id: str, block: str, variant: str, item_id: str) -> str:
        click = Click(user_id, block, variant, item_id, wall_ms() // MINUTE_MS)
        return f"{base}/c/{make_token(key, click)}"

    return link
