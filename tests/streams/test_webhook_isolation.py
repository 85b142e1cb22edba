"""Each webhook URL is sent to on its own (streams/webhooks.py): a receiver that never answers,
or a URL that makes aiohttp raise something unexpected, neither delays nor stops the deliveries
to the other URLs (one bounded queue and one sender loop per URL, surviving any exception), and
`cancel` and `pending` see every URL's copy; and a failure's log never shows a URL's path,
query or credentials. Real aiohttp receivers on loopback ports, no mocks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from streams.broker import free_port
from streams.webhooks import WebhookSender

SECRET = "secret-kkkkkkkkkkkkkkkkkkkk"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def _receiver(handler: Handler) -> AsyncIterator[str]:
    """A receiver on a loopback port: yields its URL."""
    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def _sending(hooks: WebhookSender) -> AsyncIterator[asyncio.Task[None]]:
    """The sender's loops running (as its `on_start` would) until the block ends."""
    hooks._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=hooks.timeout))
    task = asyncio.create_task(hooks._run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await hooks._session.close()


async def _until(predicate: Callable[[], object], within: float) -> bool:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def _body(n: int) -> bytes:
    return b'{"trigger": "price_drop", "n": %d}' % n


def test_a_receiver_that_never_answers_does_not_delay_the_others() -> None:
    """The slow receiver's cycle for one delivery is 3 attempts of a 1 s timeout plus 0.5 + 1 s
    of backoff (4.5 s): the healthy one must have all 6 deliveries within 1 s of the first.
    Each URL's queue holds 2: the slow one's copies past them are dropped, counted, and still
    delivered to the healthy one."""
    healthy: list[bytes] = []
    slow_hits: list[bytes] = []
    release = asyncio.Event()

    async def answer(request: web.Request) -> web.Response:
        healthy.append(await request.read())
        return web.Response(status=204)

    async def never(request: web.Request) -> web.Response:
        slow_hits.append(await request.read())
        await release.wait()  # past the sender's timeout, until the test ends
        return web.Response(status=204)

    async def scenario() -> None:
        async with _receiver(never) as slow_url, _receiver(answer) as healthy_url:
            hooks = WebhookSender(
                [slow_url, healthy_url], SECRET, queue_size=2, attempts=3, base_delay=0.5,
                timeout=1.0,
            )  # fmt: skip
            async with _sending(hooks) as task:
                started = time.monotonic()
                for n in range(6):
                    hooks.submit(_body(n), "u", "price_drop")
                    await asyncio.sleep(0.05)
                assert await _until(lambda: len(healthy) == 6, within=1.0), (
                    f"{len(healthy)} of 6 delivered to the healthy receiver after "
                    f"{time.monotonic() - started:.1f} s"
                )
                assert healthy == [_body(n) for n in range(6)]
                assert hooks.stats.delivered == 6 and hooks.stats.by_url == {healthy_url: 6}
                # the slow URL holds the first in flight and 2 queued; its other 3 copies dropped
                assert hooks.stats.dropped == 3 and slow_hits == [_body(0)]
                assert hooks.pending("u") == 3  # until the slow URL's copies are finished
                assert not task.done()
                release.set()

    asyncio.run(scenario())


def test_an_unexpected_exception_for_one_url_stops_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`http://a..b/` makes aiohttp raise a UnicodeError (a ValueError, not an
    aiohttp.ClientError) from the IDNA codec, for real: each delivery to it fails and is logged,
    and every delivery still reaches the other URL."""
    received: list[bytes] = []

    async def answer(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=200)

    async def scenario() -> None:
        async with _receiver(answer) as url:
            hooks = WebhookSender(["http://a..b/hook", url], SECRET, attempts=2, base_delay=0.01)
            async with _sending(hooks) as task:
                for n in range(3):
                    hooks.submit(_body(n), "u", "price_drop")
                    await asyncio.sleep(0.05)
                await _until(lambda: len(received) == 3 and hooks.stats.failed == 3, within=5.0)
                assert received == [_body(n) for n in range(3)]
                assert hooks.stats.delivered == 3 and hooks.stats.failed == 3
                assert hooks.pending("u") == 0 and not task.done()
            assert task.cancelled()  # cancelling still stops the loops

    with caplog.at_level(logging.WARNING, "persona"):
        asyncio.run(scenario())
    failures = [r for r in caplog.records if "http://a..b/" in r.getMessage()]
    assert len(failures) == 3, caplog.text  # once per delivery
    assert all("UnicodeError" in r.getMessage() for r in failures), caplog.text
    # its traceback the first time only, not at each trigger
    assert ["Traceback" in r.getMessage() for r in failures] == [True, False, False]


def test_a_failure_never_logs_the_path_query_or_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three failures: a closed port (a connection error), a port out of range (aiohttp's
    InvalidURL, whose message is the whole URL) and a malformed host (an unexpected UnicodeError,
    logged with its traceback); each URL with a Slack-style secret path, a token in its query and
    a password."""
    path_secret = "XXXX" + "p" * 20
    query_secret = "tok-" + "q" * 20
    password = "pw-" + "w" * 20
    tail = f"/services/T000/B000/{path_secret}?token={query_secret}#frag"
    closed = free_port()
    urls = [
        f"http://hooks:{password}@127.0.0.1:{closed}{tail}",
        f"http://hooks:{password}@127.0.0.1:99999{tail}",
        f"http://hooks:{password}@a..b{tail}",
    ]

    async def scenario() -> WebhookSender:
        hooks = WebhookSender(urls, SECRET, attempts=1, timeout=2.0)
        async with _sending(hooks):
            hooks.submit(_body(0), "u", "price_drop")
            await _until(lambda: hooks.stats.failed == 3, within=5.0)
        return hooks

    with caplog.at_level(logging.DEBUG, "persona"):
        hooks = asyncio.run(scenario())
    for secret in (path_secret, query_secret, password, "/services", "T000", "frag"):
        assert secret not in caplog.text, caplog.text
    assert hooks.stats.failed == 3
    for port in (closed, 99999):
        assert f"webhook http://127.0.0.1:{port}/***" in caplog.text, caplog.text
    assert "webhook http://a..b/***" in caplog.text, caplog.text


def test_cancel_and_pending_see_every_urls_copies() -> None:
    """Two receivers refusing (503: retried with backoff) hold their copy of the first delivery
    in flight and the next ones queued: `cancel` takes back each URL's copies (it counts copies:
    one delivery to two URLs is two), `keep` spares the triggers it allows, and a delivery is
    pending until every URL's copy is finished."""
    hits: dict[str, list[bytes]] = {"a": [], "b": []}

    def refusing(name: str) -> Handler:
        async def refuse(request: web.Request) -> web.Response:
            hits[name].append(await request.read())
            return web.Response(status=503)

        return refuse

    first, second, other = b'{"n": 1}', b'{"n": 2}', b'{"n": 3}'

    async def scenario() -> None:
        async with _receiver(refusing("a")) as a, _receiver(refusing("b")) as b:
            hooks = WebhookSender([a, b], SECRET, attempts=3, base_delay=0.3, timeout=2.0)
            async with _sending(hooks):
                hooks.submit(first, "u", "price_drop")
                hooks.submit(second, "u", "back_in_stock")
                hooks.submit(other, "v", "price_drop")
                assert await _until(lambda: hits["a"] and hits["b"], within=2.0)
                assert hooks.pending("u") == 2 and hooks.pending("v") == 1
                # the first delivery's copies, in flight on both URLs; the second one is kept
                assert hooks.cancel("u", keep=lambda trigger: trigger == "back_in_stock") == 2
                assert hooks.pending("u") == 2  # in flight until each loop sees the cancel
                assert hooks.cancel("u") == 2  # the second delivery, queued for both URLs
                assert hooks.pending("u") == 1
                assert await _until(lambda: hooks.pending("u") == 0, within=1.0)
                assert hooks.cancel("u") == 0 and hooks.stats.cancelled == 4
                # the other user's delivery goes on to both URLs, and is still pending
                assert await _until(lambda: other in hits["a"] and other in hits["b"], 1.0)
                assert hooks.pending("v") == 1
                for name in ("a", "b"):
                    assert hits[name][0] == first and first not in hits[name][1:], hits
                    assert second not in hits[name], hits
                assert hooks.stats.failed == 0

    asyncio.run(scenario())
