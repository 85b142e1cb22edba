"""A consent withdrawal in the stream (streams/triggers.py, streams/webhooks.py): it cancels the
user's scheduled abandoned-cart check and takes back their queued and retrying webhooks, and no
trigger fires for them afterwards. The whole pipeline is covered in test_triggers.py."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
from aiohttp import web

from engine.catalog import Product
from engine.clock import ManualClock
from engine.events import validate
from engine.profile import Profile, apply
from streams.broker import free_port
from streams.triggers import TriggerPorts, TriggerRunner
from streams.webhooks import WebhookSender

T0 = 1_300_000_000_000
MIN = 60_000


def _event(user: str, n: int, kind: str, ts: int, **extra: Any) -> Any:
    return validate({"event_id": f"{user}-{n}", "type": kind, "user_id": user, "ts": ts, **extra})


def _runner(hooks: WebhookSender | None, default: bool = True) -> tuple[TriggerRunner, ManualClock]:
    clock = ManualClock(T0)
    settings = SimpleNamespace(
        abandoned_cart_minutes=10,
        trigger_max_age_hours=0,  # 2010-11 event times: no bound on their age
        abandoned_cart_pending_max=200_000,
        churn_threshold=0.5,
        consent_granted_by_default=default,
    )
    never: Any = None  # ports these tests do not reach
    ports = TriggerPorts(
        clock=clock,
        settings=cast(Any, settings),
        local_partitions=never,
        local_rows=never,
        send=never,
        send_command=never,
        scorer=lambda: None,
        webhooks=lambda: hooks,
        ready=never,
    )
    return TriggerRunner(ports), clock


def _evaluate(runner: TriggerRunner, profiles: dict[str, Profile]) -> list[str]:
    touched = {u.encode(): (p, cast(Any, None), False) for u, p in profiles.items()}
    fired = runner.evaluate(cast(Any, touched))
    for user, (profile, _, _) in touched.items():
        assert profile is not None
        profiles[user.decode()] = profile
    return sorted(f"{t.trigger}:{t.user_id}" for t in fired)


def test_a_withdrawal_cancels_the_scheduled_check_and_queued_webhooks() -> None:
    async def scenario() -> None:
        hooks = WebhookSender(["http://127.0.0.1:9/never"], "secret-kkkkkkkkkkkkkkkk")
        runner, clock = _runner(hooks)
        profiles = {
            u: apply(None, _event(u, 1, "add_to_cart", T0, item_id="lamp"))
            for u in ("stays", "leaves")
        }
        assert _evaluate(runner, profiles) == []
        assert runner._pending == {"stays": T0 + 10 * MIN, "leaves": T0 + 10 * MIN}
        hooks.submit(b'{"trigger": "price_drop"}', "leaves", "price_drop")
        hooks.submit(b'{"trigger": "price_drop"}', "stays", "price_drop")
        hooks.submit(b'{"trigger": "back_in_stock"}', "leaves", "back_in_stock")
        clock.set(T0 + MIN)
        profiles["leaves"] = apply(
            profiles["leaves"], _event("leaves", 2, "consent", T0 + MIN, props={"email": False})
        )
        assert _evaluate(runner, profiles) == []
        assert runner._pending == {"stays": T0 + 10 * MIN}  # the check is cancelled
        assert hooks.pending("leaves") == 0 and hooks.pending("stays") == 1
        assert hooks.stats.cancelled == 2 and len(hooks._lanes[0].queued) == 1
        clock.set(T0 + 20 * MIN)
        assert _evaluate(runner, profiles) == ["abandoned_cart:stays"]
        # the sweep that rebuilds the schedule after a restart leaves the withdrawn user out
        assert runner._cart_due(profiles["leaves"]) is None

    asyncio.run(scenario())


def test_required_default_schedules_nothing_until_consent() -> None:
    runner, clock = _runner(None, default=False)
    profiles = {"u": apply(None, _event("u", 1, "add_to_cart", T0, item_id="lamp"))}
    clock.set(T0 + 20 * MIN)
    assert _evaluate(runner, profiles) == [] and runner._pending == {}
    profiles["u"] = apply(
        profiles["u"],
        _event("u", 2, "consent", T0 + 21 * MIN, props={"email": True, "personalization": True}),
    )
    clock.set(T0 + 21 * MIN)
    assert _evaluate(runner, profiles) == ["abandoned_cart:u"]


def test_a_withdrawal_stops_a_delivery_being_retried() -> None:
    hits: list[bytes] = []

    async def refuse(request: web.Request) -> web.Response:
        hits.append(await request.read())
        return web.Response(status=503)  # retried with backoff

    async def scenario() -> None:
        app = web.Application()
        app.router.add_post("/hook", refuse)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        hooks = WebhookSender(
            [f"http://127.0.0.1:{port}/hook"], "secret-kkkkkkkkkkkkkkkk", base_delay=0.3
        )
        hooks._session = aiohttp.ClientSession()
        sending = asyncio.create_task(hooks._run())
        try:
            hooks.submit(b'{"trigger": "abandoned_cart"}', "u", "abandoned_cart")
            for _ in range(200):
                if hits:
                    break
                await asyncio.sleep(0.05)
            assert len(hits) == 1 and hooks.pending("u") == 1
            assert hooks.cancel("u") == 1
            await asyncio.sleep(3)  # past the retries it would have made (0.3 + 0.6 + 1.2 s)
            assert len(hits) == 1  # no retry after the withdrawal
            assert hooks.pending("u") == 0 and hooks.stats.failed == 0
            assert hooks.stats.cancelled == 1
        finally:
            sending.cancel()
            await hooks._session.close()
            await runner.cleanup()

    asyncio.run(scenario())


def test_catalog_triggers_skip_users_who_withdrew() -> None:
    runner, _ = _runner(None)
    profiles = [
        apply(None, _event(u, 1, "add_to_cart", T0, item_id="A")) for u in ("keeps", "quiet")
    ]
    profiles[1] = apply(profiles[1], _event("quiet", 2, "consent", T0 + 1, props={"email": False}))
    runner._local_profiles = lambda partition: iter(profiles)  # type: ignore[method-assign]
    lamp = Product("A", "A", "https://s.example/A", "https://s.example/A.jpg", 8.0, "EUR")
    command = {"command": "item_changed", "product": lamp.to_dict(), "kinds": ["price_drop"],
               "old_price": 10.0}  # fmt: skip
    emitted = asyncio.run(runner.items_changed(0, [(command, T0 + 2)], {}, cast(Any, None)))
    assert [(t.trigger, t.user_id) for t in emitted] == [("price_drop", "keeps")]


def test_an_erasure_takes_back_the_users_schedule_and_webhooks() -> None:
    async def scenario() -> None:
        hooks = WebhookSender(["http://127.0.0.1:9/never"], "secret-kkkkkkkkkkkkkkkk")
        runner, _ = _runner(hooks)
        hooks.submit(b'{"trigger": "churn_risk"}', "gone", "churn_risk")
        hooks.submit(b'{"trigger": "churn_risk"}', "other", "churn_risk")
        runner._pending.update(gone=T0, other=T0)
        runner.forget("gone")
        assert runner._pending == {"other": T0}
        assert hooks.pending("gone") == 0 and hooks.pending("other") == 1
        assert len(hooks._lanes[0].queued) == 1 and hooks.stats.cancelled == 1

    asyncio.run(scenario())


def test_an_erasure_queues_a_user_erased_notice_for_every_webhook_url() -> None:
    """Receivers kept the user's triggers: the erasure tells them (signed like every trigger when
    sent), after taking back what was queued; a later withdrawal does not take the notice back."""

    async def scenario() -> None:
        urls = ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]
        hooks = WebhookSender(urls, "secret-kkkkkkkkkkkkkkkk")
        runner, _ = _runner(hooks)
        hooks.submit(b'{"trigger": "churn_risk"}', "gone", "churn_risk")
        runner.erased("gone", T0 + 5)
        queued = [next(iter(lane.queued.values())) for lane in hooks._lanes]
        assert all(len(lane.queued) == 1 for lane in hooks._lanes)
        assert queued[0] is queued[1] and hooks.pending("gone") == 1
        assert json.loads(queued[0].body) == {
            "trigger": "user_erased",
            "user_id": "gone",
            "ts": T0 + 5,
            "trigger_id": f"user_erased:gone:{T0 + 5}",
        }
        withdrawn = apply(None, _event("gone", 1, "consent", T0 + 6, props={"email": False}))
        assert hooks.cancel("gone", lambda t: runner.allowed(withdrawn, t)) == 0

    asyncio.run(scenario())
