"""Each delivery attempt carries a signature of its sending time and the body
(`X-Persona-Signature-256: t=...,v1=...`): a receiver that checks it refuses a captured request
replayed later, which the body-only `X-Persona-Signature` (kept for older receivers) cannot
(found by the webhooks red team, 2026-12-08). A real receiver on a loopback port."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from streams.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMPED_HEADER,
    WebhookSender,
    sign,
    sign_at,
    verify,
)
from tests.streams.test_webhook_isolation import _receiver, _sending, _until

SECRET = "hook-secret-kkkkkkkkkkkkkkkk"
BODY = b'{"trigger": "abandoned_cart", "trigger_id": "abandoned_cart:u:1"}'


def test_each_attempt_is_signed_with_its_time_and_a_replay_later_is_refused() -> None:
    seen: list[tuple[bytes, dict[str, str]]] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append((await request.read(), dict(request.headers)))
        return web.Response(status=500 if len(seen) == 1 else 204)  # the first is retried

    async def scenario() -> None:
        async with _receiver(hook) as url:
            hooks = WebhookSender([url], SECRET, timeout=5.0)
            async with _sending(hooks):
                hooks.submit(BODY, "u", "abandoned_cart")
                assert await _until(lambda: hooks.stats.delivered, 20.0)
        assert hooks.stats.delivered == 1 and len(seen) == 2

    before = int(time.time())
    asyncio.run(scenario())
    after = time.time()
    for body, headers in seen:
        assert body == BODY
        assert headers[SIGNATURE_HEADER] == sign(SECRET, BODY)  # the first signature, kept
        stamped = headers[TIMESTAMPED_HEADER]
        assert verify(SECRET, body, stamped, after)
        assert before <= int(stamped.split(",")[0].removeprefix("t=")) <= after
        assert not verify(SECRET, body, stamped, after + 600)  # replayed ten minutes later
        assert not verify(SECRET, body + b" ", stamped, after)  # another body
        assert not verify("another-secret-kkkkkkkkkkkk", body, stamped, after)


def test_verify_refuses_what_is_not_a_signature_of_its_form() -> None:
    now = 1_700_000_000
    good = sign_at(SECRET, BODY, now)
    assert verify(SECRET, BODY, good, now)
    mac = good.partition(",v1=")[2]
    for header in (
        "",
        f"v1={mac}",  # no time
        f"t=,v1={mac}",
        f"t={now}",  # no signature
        f"t=-{now},v1={mac}",
        f"t=\u0661\u0667{now},v1={mac}",  # digits, but not ASCII ones
        f"t={'9' * 40},v1={mac}",
        f"t={now + 1},v1={mac}",  # another time than the one signed
        good.upper(),
    ):
        assert not verify(SECRET, BODY, header, now), header
