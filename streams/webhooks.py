"""Optional webhooks: each trigger POSTed to the configured URLs, signed with HMAC-SHA256, retried
with exponential backoff, never blocking the stream.

Each attempt carries `X-Persona-Signature-256: t=<unix seconds>,v1=<HMAC of "<t>." + body>`
(`sign_at`; a receiver checks it with `verify`, refusing a time more than 5 minutes from its
clock: a captured request replayed later is refused) and `X-Persona-Signature: sha256=<HMAC of
the body>` (`sign`, the first signature, kept for receivers that check it; it verifies a copy for
ever: receivers should move to the timestamped one and drop repeats by `trigger_id`).

Each URL has its own bounded queue (`queue_size` copies) and its own sender loop: a receiver that
is slow, down or retried with backoff delays only its own deliveries, never another URL's. When a
URL's queue is full, the trigger's copy for that URL is dropped (it is still in the `triggers`
topic) and counted in `stats.dropped`; the other URLs still get it. Memory stays bounded: at most
`queue_size` queued copies per URL, the URLs' copies sharing one body.

The counters of `WebhookStats` count URL copies (one trigger to three URLs is three; `retries`
counts attempts): each copy ends delivered, failed, dropped or cancelled (one taken back while its
POST was under way may arrive all the same, and count as delivered too). An unexpected exception
(neither aiohttp's nor a timeout) fails that copy only: each URL's loop goes on.

Logs show a URL as `shown(url)`, `scheme://host[:port]/***`: never its path, query, fragment or
user info, where receivers take secrets (Slack-style `/services/T…/B…/<token>`, `?token=`); an
error's message naming the URL is scrubbed likewise. `stats.by_url` keeps the URL as written,
for the process only (it is exported nowhere).

Redirects are never followed: a 3xx answer is a failed delivery, not retried. A receiver (or
whoever holds its address) must not steer the signed trigger, and Persona's requests, to another
address: loopback, link-local or private ones (the embedded broker, a cloud metadata service).

`cancel(user_id)` takes a user's deliveries back on every URL: the copies still queued are
dropped, those being sent stop retrying (consent withdrawn, erasure). Each copy is counted in
`stats.cancelled`. It costs the user's own pending deliveries, never a scan of the queues (a
withdrawn user's kept notice makes each of their events ask again, while a receiver that is
down holds 10,000 copies queued)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

import aiohttp
from mode import Service

from engine.text import cut, urls_shown

log = logging.getLogger("persona.webhooks")

SIGNATURE_HEADER = "X-Persona-Signature"


# The signature of the sending time and the body (each attempt signs its own time): a receiver
# that checks it refuses a captured request sent again later (SIGNATURE_HEADER signs the body
# alone, so a copy verifies for ever; it stays for receivers written before this one).
TIMESTAMPED_HEADER = "X-Persona-Signature-256"
TOLERANCE_SECONDS = 300  # what `verify` accepts between the signed time and the receiver's clock


def sign(secret: str, body: bytes) -> str:
    """The signature header value: `sha256=` + hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign_at(secret: str, body: bytes, seconds: int) -> str:
    """TIMESTAMPED_HEADER's value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`."""
    mac = hmac.new(secret.encode(), b"%d." % seconds + body, hashlib.sha256).hexdigest()
    return f"t={seconds},v1={mac}"


def verify(
    secret: str, body: bytes, header: str, now: float, tolerance: int = TOLERANCE_SECONDS
) -> bool:
    """What a receiver checks (docs/streams.md shows it in a few lines): TIMESTAMPED_HEADER's
    value `header` signs `body` with `secret`, at a time within `tolerance` seconds of `now`."""
    fields = dict(part.partition("=")[::2] for part in header.split(",") if "=" in part)
    stamp, mac = fields.get("t", ""), fields.get("v1", "")
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        return False
    if abs(now - int(stamp)) > tolerance:
        return False
    return hmac.compare_digest(sign_at(secret, body, int(stamp)), f"t={stamp},v1={mac}")


@dataclass
class WebhookStats:
    """Counts of URL copies (one trigger to three URLs is three)."""

    delivered: int = 0
    failed: int = 0  # gave up after every retry
    retries: int = 0
    dropped: int = 0  # the URL's queue full
    cancelled: int = 0  # taken back by `cancel` (consent withdrawn, erasure)
    by_url: dict[str, int] = field(default_factory=dict)  # delivered, by URL (never exported)


@dataclass(eq=False)
class Delivery:
    """One trigger to POST to every URL, with the user and trigger it is about; its copies, one
    per URL queue, share it."""

    body: bytes
    user_id: str = ""
    trigger: str = ""
    cancelled: bool = False
    copies: int = 0  # the URL copies queued or being sent
    number: int = 0  # its key in every URL's queue and among its user's deliveries


@dataclass(eq=False)
class _Lane:
    """One URL's queue (at most `size` copies, oldest first, by delivery number: `cancel`
    takes one out in O(1)) and what its sender loop is sending."""

    url: str
    label: str  # as logs show it
    size: int
    queued: OrderedDict[int, Delivery] = field(default_factory=OrderedDict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # set: something is queued
    sending: Delivery | None = None
    unexpected: set[type[BaseException]] = field(default_factory=set)  # logged with a traceback


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_PIECES = re.compile(r"[/?&=#;:@]")
_SHORTEST_HIDDEN = 4  # pieces of the URL shorter than this are not looked for in a message


def _split(url: str) -> tuple[str, str, str, str] | None:
    """`url` as (scheme, user info, host[:port], the rest: path, query and fragment), split as
    written (never raises: a malformed URL is what a failure may be about); None without
    `scheme://`."""
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return None
    ends = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
    end = min(ends, default=len(rest))
    userinfo, _, host = rest[:end].rpartition("@")
    return scheme, userinfo, host, rest[end:]


def shown(url: str) -> str:
    """`url` as logs show it: `scheme://host[:port]/`, with `***` after the slash when the URL
    has a path, a query or a fragment. Receivers take secrets in all of them (Slack-style
    `/services/T…/B…/<token>`, `?token=`) and in the user and password, none of which is ever
    shown; `***` alone for what is no `scheme://` URL."""
    split = _split(url)
    if split is None:
        return "***"
    scheme, _, host, rest = split
    host = "".join(c for c in host if c.isprintable() and not c.isspace())
    return f"{scheme.lower()}://{host}/{'***' if rest.strip('/') else ''}"


def _scrubbed(text: str, url: str) -> str:
    """`text` (an exception's message or traceback) without what `shown(url)` hides: aiohttp's
    InvalidURL and ClientResponseError carry the whole URL. The URL as written, then any URL
    in the text, is replaced by its shown form; then any piece of its user info, path, query
    or fragment (split at `/?&=#;:@`, as written and decoded) of 4 or more characters."""
    if url:
        text = text.replace(url, shown(url))
    text = urls_shown(text, shown)
    split = _split(url)
    hidden = [url] if split is None else [split[1], split[3]]
    pieces = {*hidden, *(piece for part in hidden for piece in _PIECES.split(part))}
    pieces |= {unquote(piece) for piece in pieces}
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece) >= _SHORTEST_HIDDEN:
            text = text.replace(piece, "***")
    return text


REASON_MOST = 300  # characters of a failed attempt's reason in the log line


def _reason(exc: BaseException, url: str) -> str:
    """A failed attempt's reason for its log line: the error's type and message (for aiohttp's
    ClientResponseError, a receiver's answer it could not read, its message only:
    its repr holds the request's headers, the body's signature among them), scrubbed of what
    `shown(url)` hides, on one line (control characters escaped: aiohttp quotes what the
    receiver sent) and cut to REASON_MOST characters (it quotes up to ~128 KB of it)."""
    if isinstance(exc, aiohttp.ClientResponseError):
        told = f"{type(exc).__name__} (an answer aiohttp could not read): {exc.message}"
    else:
        told = repr(exc)
    told = _scrubbed(told, url)
    told = "".join(c if c.isprintable() else repr(c)[1:-1] for c in told[: REASON_MOST * 8])
    return cut(told, REASON_MOST)


def _label(url: str, position: int, count: int) -> str:
    """A URL as its logs show it: `shown(url)`, and its position among several (two URLs of
    one host look alike)."""
    return shown(url) if count == 1 else f"{shown(url)} (URL {position} of {count})"


def _refuse_all(trigger: str) -> bool:
    return False


class WebhookSender(Service):
    def __init__(
        self,
        urls: list[str],
        secret: str,
        queue_size: int = 10_000,
        attempts: int = 5,
        base_delay: float = 0.5,
        timeout: float = 5.0,
    ) -> None:
        super().__init__()
        self.urls = urls
        self.secret = secret
        self.attempts = attempts
        self.base_delay = base_delay
        self.timeout = timeout
        self.stats = WebhookStats()
        # one queue of `queue_size` copies per URL (a URL listed twice is sent to twice)
        self._lanes = [
            _Lane(url, _label(url, i, len(urls)), max(1, queue_size))
            for i, url in enumerate(urls, 1)
        ]
        self._session: aiohttp.ClientSession | None = None
        # user -> their deliveries queued or being sent, by number (at most every URL's queue)
        self._pending: dict[str, dict[int, Delivery]] = {}
        self._numbered = 0

    def submit(self, body: bytes, user_id: str = "", trigger: str = "") -> None:
        """Queue a trigger for every URL; never waits. A URL whose queue is full drops its copy
        (counted in `stats.dropped`); the other URLs still get theirs."""
        self._numbered += 1
        delivery = Delivery(body, user_id, trigger, number=self._numbered)
        for lane in self._lanes:
            if len(lane.queued) >= lane.size:
                self.stats.dropped += 1
            else:
                lane.queued[delivery.number] = delivery
                lane.ready.set()
                delivery.copies += 1
        if delivery.copies:
            self._pending.setdefault(user_id, {})[delivery.number] = delivery

    def cancel(self, user_id: str, keep: Callable[[str], bool] = _refuse_all) -> int:
        """Take back the user's deliveries whose trigger `keep` refuses (all by default), on
        every URL: the queued copies are dropped, the ones being sent stop retrying (a POST
        under way may still arrive). Returns how many URL copies were taken back (a delivery
        queued for two URLs is two; one already finished for a URL counts only for the others),
        as `stats.cancelled` counts them. O(the user's own deliveries pending x the URLs),
        whatever the other users have queued: a withdrawn user's kept notice makes each of
        their later events ask again (streams/triggers.py `evaluate`)."""
        mine = self._pending.get(user_id)
        if not mine:
            return 0
        count = 0
        for delivery in list(mine.values()):
            if delivery.cancelled or keep(delivery.trigger):
                continue
            delivery.cancelled = True
            for lane in self._lanes:
                if lane.queued.pop(delivery.number, None) is not None:
                    count += 1
                    self._copy_finished(delivery)
                elif lane.sending is delivery:
                    count += 1  # its loop stops retrying it and finishes it
        self.stats.cancelled += count
        return count

    def pending(self, user_id: str) -> int:
        """The user's deliveries queued or being sent: one counts until every URL's copy of it
        is finished (delivered, failed or cancelled)."""
        return len(self._pending.get(user_id, ()))

    def _copy_finished(self, delivery: Delivery) -> None:
        delivery.copies -= 1
        if delivery.copies <= 0:
            self._finished(delivery)

    def _finished(self, delivery: Delivery) -> None:
        mine = self._pending.get(delivery.user_id)
        if mine is not None:
            mine.pop(delivery.number, None)
            if not mine:
                del self._pending[delivery.user_id]

    async def on_start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        self.add_future(self._run())

    async def on_stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        """Every URL's sender loop."""
        await asyncio.gather(*(self._send(lane) for lane in self._lanes))

    async def _send(self, lane: _Lane) -> None:
        """One URL's loop: its copies one after the other, whatever the other URLs do. Any
        exception of a delivery fails that copy only (cancelling the loop stops it)."""
        while not self.should_stop:
            if not lane.queued:
                lane.ready.clear()
                await lane.ready.wait()
                continue
            _, delivery = lane.queued.popitem(last=False)
            lane.sending = delivery
            try:
                await self._deliver(lane, delivery)
            except Exception as exc:  # e.g. aiohttp's UnicodeError on a malformed host
                self._unexpected(lane, delivery, exc)
            finally:
                lane.sending = None
                self._copy_finished(delivery)

    def _unexpected(self, lane: _Lane, delivery: Delivery, exc: Exception) -> None:
        """A copy failed with an exception `_deliver` does not expect: counted failed (unless
        taken back), logged once; with its traceback the first time its type occurs for the
        URL, not at each trigger."""
        if not delivery.cancelled:
            self.stats.failed += 1
        first = type(exc) not in lane.unexpected
        lane.unexpected.add(type(exc))
        told = repr(exc)
        if first:
            told += "\n" + "".join(traceback.format_exception(exc)).rstrip()
        log.error("webhook %s failed: unexpected %s", lane.label, _scrubbed(told, lane.url))

    async def _deliver(self, lane: _Lane, delivery: Delivery) -> None:
        assert self._session is not None
        url = lane.url
        body = delivery.body
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self.secret, body)}
        for attempt in range(self.attempts):
            if delivery.cancelled:
                return  # counted by `cancel`
            headers[TIMESTAMPED_HEADER] = sign_at(self.secret, body, int(time.time()))
            try:
                async with self._session.post(
                    url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    if response.status < 300:
                        self.stats.delivered += 1
                        self.stats.by_url[url] = self.stats.by_url.get(url, 0) + 1
                        return
                    reason = f"HTTP {response.status}"
                    if response.status < 400:  # never followed: see the module docstring
                        reason += " (a redirect: set the URL it names, redirects are not followed)"
                        break
                    if 400 <= response.status < 500 and response.status not in (408, 429):
                        break  # the receiver refuses it: retrying will not help
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = _reason(exc, url)  # InvalidURL's message is the whole URL
            if delivery.cancelled:
                return  # taken back while this attempt was under way: counted by `cancel`
            if attempt + 1 < self.attempts:
                self.stats.retries += 1
                await asyncio.sleep(self.base_delay * 2**attempt)
        if delivery.cancelled:
            return  # taken back while refused: counted by `cancel`
        self.stats.failed += 1
        log.warning("webhook %s failed after %d attempt(s): %s", lane.label, attempt + 1, reason)
