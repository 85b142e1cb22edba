"""A webhook receiver's redirect is never followed: a receiver (or whoever took over its
address) answering 307 to a loopback, link-local or private address (the embedded broker, a
cloud metadata service, the shop's own admin) made Persona POST the signed trigger there."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from aiohttp import web

from streams.webhooks import SIGNATURE_HEADER, WebhookSender

SECRET = "secret-kkkkkkkkkkkkkkkkkkkk"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirecting_receiver_is_a_failed_delivery_and_nothing_else_is_called(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    reached: list[web.Request] = []

    async def internal(request: web.Request) -> web.Response:
        reached.append(request)
        return web.Response(text="metadata")

    async def scenario() -> WebhookSender:
        inner = web.Application()
        inner.router.add_route("*", "/latest/meta-data", internal)
        inner_runner = web.AppRunner(inner)
        await inner_runner.setup()
        inner_site = web.TCPSite(inner_runner, "127.0.0.1", 0)
        await inner_site.start()
        inner_port = inner_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        async def hook(request: web.Request) -> web.Response:
            target = f"http://127.0.0.1:{inner_port}/latest/meta-data"
            return web.Response(status=status, headers={"Location": target})

        outer = web.Application()
        outer.router.add_post("/hook", hook)
        outer_runner = web.AppRunner(outer)
        await outer_runner.setup()
        outer_site = web.TCPSite(outer_runner, "127.0.0.1", 0)
        await outer_site.start()
        outer_port = outer_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        hooks = WebhookSender(
            [f"http://127.0.0.1:{outer_port}/hook"], SECRET, attempts=2, base_delay=0.01
        )
        hooks._session = aiohttp.ClientSession()
        sending = asyncio.create_task(hooks._run())
        try:
            hooks.submit(b'{"trigger": "abandoned_cart"}', "u", "abandoned_cart")
            for _ in range(200):
                if hooks.stats.failed or hooks.stats.delivered:
                    break
                await asyncio.sleep(0.02)
        finally:
            sending.cancel()
            await hooks._session.close()
            await outer_runner.cleanup()
            await inner_runner.cleanup()
        return hooks

    with caplog.at_level(logging.WARNING, "persona"):
        hooks = asyncio.run(scenario())
    assert not reached, [dict(r.headers).get(SIGNATURE_HEADER) for r in reached]
    assert hooks.stats.delivered == 0 and hooks.stats.failed == 1
    assert hooks.stats.retries == 0  # a redirect is the receiver's answer: no retry helps
    assert f"HTTP {status}" in caplog.text and "redirect" in caplog.text
