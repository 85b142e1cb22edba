"""A webhook URL may carry credentials (`https://user:password@host/...`, a token in its query,
`?token=...`, or in its path, Slack-style `/services/T000/B000/<token>`): the log never shows
them, only `scheme://host[:port]/` and `***` for the rest (issue 15 item 5: no plaintext secret
in logs)."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
import yarl
from multidict import CIMultiDict, CIMultiDictProxy

from streams.broker import free_port
from streams.webhooks import WebhookSender, _scrubbed, shown

PASSWORD = "hook-Password-" + "p" * 20


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"https://user:{PASSWORD}@hooks.example:8443/x?a=1", "https://hooks.example:8443/***"),
        (f"https://hooks.example/x?token={PASSWORD}", "https://hooks.example/***"),
        (f"https://hooks.example/x#{PASSWORD}", "https://hooks.example/***"),
        (f"http://{PASSWORD}@h/x", "http://h/***"),
        (f"http://u:{PASSWORD}@[::1]:9/x", "http://[::1]:9/***"),
        (f"https://hooks.example/services/T000/B000/{PASSWORD}", "https://hooks.example/***"),
        (f"https://hooks.example?token={PASSWORD}", "https://hooks.example/***"),
        (f"HTTPS://u:{PASSWORD}@hooks.example:99999/x", "https://hooks.example:99999/***"),
        (f"http://[::1/{PASSWORD}", "http://[::1/***"),  # malformed: shown all the same
        (f"hooks.example/{PASSWORD}", "***"),  # no scheme://: nothing tells host from path
        ("https://hooks.example/x", "https://hooks.example/***"),
        ("https://hooks.example/", "https://hooks.example/"),
        ("https://hooks.example", "https://hooks.example/"),
    ],
)
def test_a_url_is_shown_without_its_credentials(url: str, expected: str) -> None:
    assert shown(url) == expected


def test_an_error_that_carries_the_url_is_logged_without_its_secrets() -> None:
    """aiohttp's ClientResponseError names the URL as yarl writes it (percent-encoded)."""
    url = f"https://u:{PASSWORD}@hooks.example/services/T000/{PASSWORD} ü?token={PASSWORD}"
    request = aiohttp.RequestInfo(
        yarl.URL(url), "POST", CIMultiDictProxy(CIMultiDict()), yarl.URL(url)
    )
    error = aiohttp.ClientResponseError(request, (), status=500, message="boom")
    for text in (str(error), repr(error)):
        told = _scrubbed(text, url)
        assert PASSWORD not in told and "T000" not in told and "token" not in told, told
        assert "https://hooks.example/***" in told and "500" in told, told


def test_a_failed_delivery_logs_the_url_without_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    url = f"http://hooks:{PASSWORD}@127.0.0.1:{port}/hook?token={PASSWORD}"  # nobody listens

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
    assert f"webhook http://127.0.0.1:{port}/*** failed" in caplog.text
    assert PASSWORD not in caplog.text
