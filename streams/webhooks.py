"""Optional webhooks: each trigger POSTed to the configured URLs, signed with HMAC-SHA256, retried
with exponential backoff, never blocking the stream (a bounded queue; when full, the trigger is
dropped for webhooks — it is still in the `triggers` topic — and counted).

Redirects are never followed: a 3xx answer is a failed delivery, not retried. A receiver (or
whoever holds its address) must not steer the signed trigger, and Persona's requests, to another
address: loopback, link-local or private ones (the embedded broker, a cloud metadata service).

`cancel(user_id)` takes a user's deliveries back: those still queued are dropped, those being
sent stop retrying (consent withdrawn, erasure). Each is counted in `stats.cancelled`."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from mode import Service

log = logging.getLogger("persona.webhooks")

SIGNATURE_HEADER = "X-Persona-Signature"


def sign(secret: str, body: bytes) -> str:
    """The signature header value: `sha256=` + hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class WebhookStats:
    delivered: int = 0
    failed: int = 0  # gave up after every retry
    retries: int = 0
    dropped: int = 0  # queue full
    cancelled: int = 0  # taken back by `cancel` (consent withdrawn, erasure)
    by_url: dict[str, int] = field(default_factory=dict)


@dataclass(eq=False)
class Delivery:
    """One trigger to POST to every URL, with the user and trigger it is about."""

    body: bytes
    user_id: str = ""
    trigger: str = ""
    cancelled: bool = False


def shown(url: str) -> str:
    """`url` as the log shows it: without the user and password a webhook URL may carry, its
    query (`?***`: receivers take tokens there too) and its fragment."""
    parts = urlsplit(url)._replace(fragment="")
    if parts.query:
        parts = parts._replace(query="***")
    if parts.username is None and parts.password is None:
        return urlunsplit(parts)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"***@{host}{port}"))


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
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=queue_size)
        self._session: aiohttp.ClientSession | None = None
        self._pending: dict[str, int] = {}  # user -> their deliveries queued or being sent
        self._sending: list[Delivery] = []

    def submit(self, body: bytes, user_id: str = "", trigger: str = "") -> None:
        """Queue a trigger for every URL; never waits."""
        try:
            self._queue.put_nowait(Delivery(body, user_id, trigger))
        except asyncio.QueueFull:
            self.stats.dropped += 1
            return
        self._pending[user_id] = self._pending.get(user_id, 0) + 1

    def cancel(self, user_id: str, keep: Callable[[str], bool] = _refuse_all) -> int:
        """Take back the user's deliveries whose trigger `keep` refuses (all by default): the
        queued ones are dropped, the ones being sent stop retrying. Returns how many; O(1) for
        a user with nothing pending."""
        if not self._pending.get(user_id):
            return 0
        queued: list[Delivery] = []
        while not self._queue.empty():
            queued.append(self._queue.get_nowait())
        taken = 0
        for delivery in queued:
            if delivery.user_id == user_id and not keep(delivery.trigger):
                delivery.cancelled = True
                self._finished(delivery)
                taken += 1
            else:
                self._queue.put_nowait(delivery)
        for delivery in self._sending:
            if (
                delivery.user_id == user_id
                and not delivery.cancelled
                and not keep(delivery.trigger)
            ):
                delivery.cancelled = True
                taken += 1
        self.stats.cancelled += taken
        return taken

    def pending(self, user_id: str) -> int:
        """The user's deliveries queued or being sent."""
        return self._pending.get(user_id, 0)

    def _finished(self, delivery: Delivery) -> None:
        left = self._pending.get(delivery.user_id, 0) - 1
        if left > 0:
            self._pending[delivery.user_id] = left
        else:
            self._pending.pop(delivery.user_id, None)

    async def on_start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        self.add_future(self._run())

    async def on_stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while not self.should_stop:
            delivery = await self._queue.get()
            self._sending.append(delivery)
            try:
                await asyncio.gather(*(self._deliver(url, delivery) for url in self.urls))
            finally:
                self._sending.remove(delivery)
                self._finished(delivery)

    async def _deliver(self, url: str, delivery: Delivery) -> None:
        assert self._session is not None
        body = delivery.body
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self.secret, body)}
        for attempt in range(self.attempts):
            if delivery.cancelled:
                return
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
                reason = repr(exc)
            if attempt + 1 < self.attempts:
                self.stats.retries += 1
                await asyncio.sleep(self.base_delay * 2**attempt)
        self.stats.failed += 1
        log.warning("webhook %s failed after %d attempt(s): %s", shown(url), attempt + 1, reason)
