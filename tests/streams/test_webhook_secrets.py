"""A webhook URL may carry credentials (`https://user:password@host/...`, or a token in its
query, `?token=...`): the log never shows them (issue 15 item 5: no plaintext secret in logs)."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from streams.broker import free_port
from streams.webhooks import WebhookSender, shown

PASSWORD = "hook-Password-" + "p" * 20


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"https://user:{PASSWORD}@hooks.example:8443/x?a=1",
            "https://***@hooks.example:8443/x?***",
        ),
        (f"https://hooks.example/x?token={PASSWORD}", "https://hooks.example/x?***"),
        (f"https://hooks.example/x#{PASSWORD}", "https://hooks.example/x"),
        (f"http://{PASSWORD}@h/x", "http://***@h/x"),
        (f"http://u:{PASSWORD}@[::1]:9/x", "http://***@[::1]:9/x"),
        ("https://hooks.example/x", "https://hooks.example/x"),
    ],
)
def test_a_url_is_shown_without_its_credentials(url: str, expected: str) -> None:
    assert shown(url) == expected


def test_a_failed_delivery_logs_the_url_without_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://hooks:{PASSWORD}@127.0.0.1:{free_port()}/hook"  # nobody listens

    async def scenario() -> None:
        hooks = WebhookSender([url], "secret-kkkkkkkkkkkkkkkk", attempts=1, timeout=2.0)
        hooks._session = aiohttp.ClientSession()
        sending = asyncio.create_task(hooks._run())
        try:
            hooks.submit(b'{"trigger": "abandoned_cart"}', "u", "abandoned_cart")
            for _ in range(200):
                if hooks.stats.failed:
                    break
                await asyncio.sleep(0.05)
            assert hooks.stats.failed == 1
        finally:
            sending.cancel()
            await hooks._session.close()

    with caplog.at_level(logging.WARNING, "persona"):
        asyncio.run(scenario())
    assert "webhook http://***@127.0.0.1:" in caplog.text
    assert PASSWORD not in caplog.text
