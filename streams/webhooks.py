"""Optional webhooks: each trigger POSTed to the configured URLs, signed with HMAC-SHA256, retried
with exponential backoff, never blocking the stream (a bounded queue; when full, the trigger is
dropped for webhooks — it is still in the `triggers` topic — and counted)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from dataclasses import dataclass, field

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
    by_url: dict[str, int] = field(default_factory=dict)


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
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_size)
        self._session: aiohttp.ClientSession | None = None

    def submit(self, body: bytes) -> None:
        """Queue a trigger for every URL; never waits."""
        try:
            self._queue.put_nowait(body)
        except asyncio.QueueFull:
            self.stats.dropped += 1

    async def on_start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        self.add_future(self._run())

    async def on_stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while not self.should_stop:
            body = await self._queue.get()
            await asyncio.gather(*(self._deliver(url, body) for url in self.urls))

    async def _deliver(self, url: str, body: bytes) -> None:
        assert self._session is not None
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self.secret, body)}
        for attempt in range(self.attempts):
            try:
                async with self._session.post(url, data=body, headers=headers) as response:
                    if response.status < 300:
                        self.stats.delivered += 1
                        self.stats.by_url[url] = self.stats.by_url.get(url, 0) + 1
                        return
                    reason = f"HTTP {response.status}"
                    if 400 <= response.status < 500 and response.status not in (408, 429):
                        break  # the receiver refuses it: retrying will not help
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = repr(exc)
            if attempt + 1 < self.attempts:
                self.stats.retries += 1
                await asyncio.sleep(self.base_delay * 2**attempt)
        self.stats.failed += 1
        log.warning("webhook %s failed after %d attempt(s): %s", url, attempt + 1, reason)
