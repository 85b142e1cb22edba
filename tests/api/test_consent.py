"""Consent everywhere (engine.consent): a user who withdrew personalization (or never gave it,
under PERSONA_CONSENT_DEFAULT=required) gets nothing derived from their profile from any route:
render's `user.*`, `/profile` scores and recommendations, `/explain`, exposures, the A/B variant."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.models_routes import ADMIN
from api.observability import TELEMETRY
from api.privacy import export_view
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.catalog import Product
from engine.events import validate
from models.experiments import Experiment
from models.registry import ModelSet
from streams.registry import RegistryService
from tests.api.test_models_routes import FakeAdmin

T0 = 1_700_000_000_000
READER = {"Authorization": "Bearer ro-kkkkkkkkkkkkkkkkkkkkk"}
ADMIN_KEY = {"Authorization": "Bearer adm-kkkkkkkkkkkkkkkkkkkk"}
TEMPLATE = (
    "{{ user.user_id }}|{{ user.known }}|{{ user.orders }}|{{ user.monetary }}|"
    "{{ user.cart_items }}|{{ user.first_seen }}|{{ user.first_name }}"
)


def product(item: str) -> Product:
    return Product(
        item, item, f"https://s.example/{item}", f"https://s.example/{item}.jpg", 12.5, "GBP"
    )


def shop(user: str, state: MemoryState, consent: dict[str, bool] | None = None) -> None:
    """A user with two orders and a cart (and a consent event when `consent` is given)."""
    events: list[dict[str, Any]] = [
        {"type": "purchase", "item_id": "a", "price": 12.5, "props": {"order_id": "o1"}},
        {"type": "purchase", "item_id": "b", "price": 7.5, "props": {"order_id": "o2"}},
        {"type": "add_to_cart", "item_id": "c"},
        {"type": "product_view", "item_id": "d"},
    ]
    if consent is not None:
        events.append({"type": "consent", "props": consent})
    for n, extra in enumerate(events):
        state.apply(validate({"event_id": f"{user}-{n}", "user_id": user, "ts": T0 + n, **extra}))


async def _client(policy: BlockPolicy) -> tuple[TestClient, FakeAdmin, MemoryState]:
    state = MemoryState()
    models = ModelSet.default()
    for item in [*models.recs.popular[:30], "a", "b", "c", "d"]:
        state.put_product(product(item))
    keys = KeyRing.from_settings(
        "ro:ro-kkkkkkkkkkkkkkkkkkkkk:content:read;"
        "admin:adm-kkkkkkkkkkkkkkkkkkkk:models:admin,content:read,privacy:admin",
        None,
    )
    content = ContentService(state, models, Renderer(), policy)
    app = create_app(content, keys)
    admin = FakeAdmin(content)
    app[ADMIN] = admin
    client = TestClient(TestServer(app))
    await client.start_server()
    return client, admin, state


@pytest.fixture
async def granted() -> AsyncIterator[tuple[TestClient, FakeAdmin, MemoryState]]:
    client, admin, state = await _client(BlockPolicy())
    yield client, admin, state
    await client.close()


@pytest.fixture
async def required() -> AsyncIterator[tuple[TestClient, FakeAdmin, MemoryState]]:
    client, admin, state = await _client(BlockPolicy(consent_default=False))
    yield client, admin, state
    await client.close()


async def _render(client: TestClient, users: list[str], template: str = TEMPLATE) -> dict[str, str]:
    body = {
        "template": template,
        "user_ids": users,
        "data": {u: {"first_name": "Ada"} for u in users},
    }
    r = await client.post("/v1/render", json=body, headers=READER)
    assert r.status == 200
    results = (await r.json())["results"]
    assert all(results[u]["error"] is None for u in users)
    return {u: results[u]["content"] for u in users}


async def test_render_shows_no_profile_fields_after_a_withdrawal(granted: Any) -> None:
    client, _, state = granted
    shop("keeps", state)
    shop("left", state, {"personalization": False})
    got = await _render(client, ["keeps", "left", "stranger"])
    assert got["keeps"] == f"keeps|True|2|20.0|1|{T0}|Ada"
    # the withdrawn user renders exactly as a user never seen (their own id and the sender's data)
    assert got["left"] == "left|False|0|0.0|0|None|Ada"
    assert got["stranger"] == "stranger|False|0|0.0|0|None|Ada"
    blocks = await _render(client, ["keeps", "left"], "{{ blocks.cart_reminder }}")
    assert (
        "Still in your cart" in blocks["keeps"] and 'href="https://s.example/c"' in blocks["keeps"]
    )
    assert (
        "Our best-sellers" in blocks["left"] and 'href="https://s.example/c"' not in blocks["left"]
    )


async def test_profile_shows_no_scores_or_recommendations_after_a_withdrawal(
    granted: Any,
) -> None:
    client, _, state = granted
    shop("keeps", state)
    shop("left", state, {"personalization": False})
    keeps = await (await client.get("/v1/users/keeps/profile", headers=READER)).json()
    assert keeps["personalized"] is True and keeps["recommendations"]
    assert 0 <= keeps["scores"]["churn"] <= 1 and keeps["models"]
    r = await client.get("/v1/users/left/profile", headers=READER)
    left = await r.json()
    assert r.status == 200 and left["personalized"] is False
    assert left["scores"] == {"churn": None} and left["recommendations"] == []
    assert left["models"] == {} and r.headers["X-Persona-Model"] == ""
    assert left["affinities"] == {"categories": {}, "brands": {}}
    assert left["consent"] == {"personalization": False, "email": True, "ads": True}
    assert left["cart"] == {"c": 1}  # what was stored is still shown: it is not derived


async def test_explain_refuses_a_withdrawn_user(granted: Any) -> None:
    client, _, state = granted
    shop("keeps", state)
    shop("left", state, {"personalization": False})
    assert (await client.get("/v1/users/keeps/explain", headers=READER)).status == 200
    r = await client.get("/v1/users/left/explain", headers=READER)
    assert r.status == 403 and r.headers["Content-Type"].startswith("application/problem+json")
    body = await r.json(content_type=None)
    assert body["title"] == "No consent" and "personalization" in body["detail"]
    assert "recent_items" not in body and "churn" not in body


async def test_no_exposure_and_the_default_variant_without_consent(granted: Any) -> None:
    client, admin, state = granted
    users = [f"u{i}" for i in range(12)]
    for user in users:
        shop(user, state, None if user in ("u0", "u1", "u2") else {"personalization": False})
    body = {"name": "t1", "model": "recs", "candidate": admin.candidate.version}
    assert (await client.put("/v1/models/experiment", json=body, headers=ADMIN_KEY)).status == 200
    default = ModelSet.default().recs.version
    for user in users:
        await client.get(f"/v1/users/{user}/profile", headers=READER)
        await client.get(f"/v1/users/{user}/blocks/recommendations", headers=READER)
    batch = {"block": "recommendations", "format": "html", "user_ids": users}
    assert (await client.post("/v1/blocks:batch", json=batch, headers=READER)).status == 200
    await _render(client, users)
    assert {e["user_id"] for e in admin.exposures} == {"u0", "u1", "u2"}
    content = admin.content
    arm = {u: content.models.variant(u) for u in users}
    assert "B" in {arm[u] for u in users[3:]}  # withdrawn users the candidate's arm would get...
    for user in users:
        profile = state.profile(user)
        assert profile is not None
        personal = user in ("u0", "u1", "u2")
        expected = admin.candidate.version if personal and arm[user] == "B" else default
        assert content.scores(profile).models["recs"] == expected  # ...get the default set


async def test_required_default_treats_the_silent_as_withdrawn(required: Any) -> None:
    client, _, state = required
    shop("silent", state)
    shop("agreed", state, {"personalization": True})
    got = await _render(client, ["silent", "agreed"])
    assert got["silent"] == "silent|False|0|0.0|0|None|Ada"
    assert got["agreed"] == f"agreed|True|2|20.0|1|{T0}|Ada"
    silent = await (await client.get("/v1/users/silent/profile", headers=READER)).json()
    assert silent["personalized"] is False and silent["recommendations"] == []
    assert silent["consent"] == {"personalization": False, "email": False, "ads": False}
    agreed = await (await client.get("/v1/users/agreed/profile", headers=READER)).json()
    assert agreed["personalized"] is True and agreed["recommendations"]
    assert (await client.get("/v1/users/silent/explain", headers=READER)).status == 403
    r = await client.get("/v1/users/agreed/blocks/cart_reminder", headers=READER)
    assert "X-Persona-Fallback" not in r.headers
    r = await client.get("/v1/users/agreed/blocks/cart_reminder?format=json", headers=READER)
    assert r.headers["X-Persona-Fallback"] == "1"  # ads were never granted


async def test_the_export_shows_each_purposes_records(granted: Any) -> None:
    client, admin, state = granted
    shop("u", state)
    for n, (ts, value, source, text) in enumerate(
        [(T0 + 50, False, "app", "v2"), (T0 + 10, True, "web", None), (T0 + 30, True, None, "v1")]
    ):
        props: dict[str, Any] = {"email": value}
        if text:
            props["text_version"] = text
        event = {"event_id": f"c{n}", "type": "consent", "user_id": "u", "ts": ts, "props": props}
        if source:
            event["source"] = source
        state.apply(validate(event))
    view = export_view(admin.content, "u")
    assert view is not None
    assert view["stored"]["consent"] == {"email": False}  # the newest by event time
    assert view["stored"]["consent_records"] == {
        "email": [
            {"value": False, "ts": T0 + 50, "source": "app", "text_version": "v2"},
            {"value": True, "ts": T0 + 30, "source": None, "text_version": "v1"},
            {"value": True, "ts": T0 + 10, "source": "web", "text_version": None},
        ]
    }
    r = await client.get("/v1/users/u/export", headers=ADMIN_KEY)
    assert r.status == 200
    assert json.loads(await r.text())["stored"]["consent_records"]["email"][0]["ts"] == T0 + 50


async def test_the_churn_histogram_leaves_withdrawn_users_out(granted: Any) -> None:
    client, _, state = granted
    for user in ("a", "b", "c"):
        shop(user, state, {"personalization": False} if user == "b" else None)
    telemetry = client.server.app[TELEMETRY]
    telemetry.refresh_churn()
    assert telemetry.churn_sampled == 2 and sum(telemetry.churn_counts) == 2


async def test_the_preview_user_list_leaves_withdrawn_users_out(granted: Any) -> None:
    client, _, state = granted
    shop("kept", state)
    shop("withdrew", state, {"personalization": False})
    shop("no-ads", state, {"ads": False})  # still personalized by e-mail: listed
    r = await client.get("/v1/users?limit=200", headers=READER)
    assert r.status == 200
    assert sorted(u["user_id"] for u in (await r.json())["users"]) == ["kept", "no-ads"]
    again = {"event_id": "again", "type": "consent", "user_id": "withdrew", "ts": T0 + 9}
    state.apply(validate({**again, "props": {"personalization": True}}))  # given again: listed
    r = await client.get("/v1/users?limit=200", headers=READER)
    assert "withdrew" in [u["user_id"] for u in (await r.json())["users"]]


async def test_the_preview_user_list_needs_consent_when_it_is_required(required: Any) -> None:
    client, _, state = required
    shop("silent", state)
    shop("agreed", state, {"personalization": True})
    r = await client.get("/v1/users", headers=READER)
    assert [u["user_id"] for u in (await r.json())["users"]] == ["agreed"]


async def test_no_exposure_nor_arm_for_a_json_block_without_ads_consent(granted: Any) -> None:
    """A json block (ads) of a user who withdrew ads consent is the fallback: no model was shown
    to them, so no exposure is logged and the variant is `default` (GET, batch)."""
    client, admin, state = granted
    users = [f"ads{i}" for i in range(12)]
    for user in users:
        shop(user, state, {"ads": False})
    body = {"name": "t1", "model": "recs", "candidate": admin.candidate.version}
    assert (await client.put("/v1/models/experiment", json=body, headers=ADMIN_KEY)).status == 200
    arm = {u: admin.content.models.variant(u) for u in users}
    assert "B" in arm.values()  # some of them would be in the candidate's arm
    for user in users:
        r = await client.get(f"/v1/users/{user}/blocks/cart_reminder?format=json", headers=READER)
        assert r.status == 200 and r.headers["X-Persona-Fallback"] == "1"
        assert r.headers["X-Persona-Variant"] == "default"
        assert (await r.json())["variant"] == "default"
    batch = {"block": "cart_reminder", "format": "json", "user_ids": users}
    r = await client.post("/v1/blocks:batch", json=batch, headers=READER)
    assert r.status == 200
    results = (await r.json())["results"]
    assert all(results[u]["fallback"] for u in users)
    assert admin.exposures == []
    # their html blocks (personalization only) are personalized: exposed and in their arm
    for user in users:
        r = await client.get(f"/v1/users/{user}/blocks/cart_reminder", headers=READER)
        assert "X-Persona-Fallback" not in r.headers, r.headers.get("X-Persona-Fallback-Reason")
        assert r.headers["X-Persona-Variant"] == arm[user]
    assert sorted(e["user_id"] for e in admin.exposures) == sorted(users)


async def test_an_export_or_explanation_logs_no_exposure(granted: Any) -> None:
    """Only what the user is shown (blocks, and the profile reads as documented) is an exposure:
    a privacy officer's export or the preview's explanation is not."""
    client, admin, state = granted
    shop("u", state)
    body = {"name": "t1", "model": "recs", "candidate": admin.candidate.version}
    assert (await client.put("/v1/models/experiment", json=body, headers=ADMIN_KEY)).status == 200
    assert (await client.get("/v1/users/u/export", headers=ADMIN_KEY)).status == 200
    assert (await client.get("/v1/users/u/explain", headers=READER)).status == 200
    assert admin.exposures == []
    assert (await client.get("/v1/users/u/profile", headers=READER)).status == 200
    assert [e["block"] for e in admin.exposures] == ["profile"]


async def test_an_erasure_drops_the_users_exposures_not_yet_written(tmp_path: Path) -> None:
    """A process writes its exposures to the `exposures` topic every half second: one logged
    just before an erasure was written after the erasure's tombstone, so the export and the
    experiment report showed it afterwards. The process answering the DELETE (the owner of the
    user's partition, where reads during an experiment are answered) drops the user's queued
    exposures, and those of the ids merged into the user; other users' stay queued."""
    state = MemoryState()
    models = ModelSet.default()
    for item in [*models.recs.popular[:30], "a", "b", "c", "d"]:
        state.put_product(product(item))
    keys = KeyRing.from_settings(
        "ro:ro-kkkkkkkkkkkkkkkkkkkkk:content:read;"
        "admin:adm-kkkkkkkkkkkkkkkkkkkk:models:admin,content:read,privacy:admin",
        None,
    )
    content = ContentService(state, models, Renderer(), BlockPolicy())
    app = create_app(content, keys)
    # the worker's own registry service, not started: its exposures stay queued
    registry = RegistryService("kafka://127.0.0.1:9", tmp_path / "models", lambda _: None)
    app[ADMIN] = registry
    candidate = FakeAdmin(content).candidate
    content.models = ModelSet(
        models.churn, models.recs,
        experiment=Experiment("t1", "recs", models.recs.version, candidate.version),
        candidate=candidate,
    )  # fmt: skip
    for user in ("gone", "kept", "anon"):
        shop(user, state)
    state.merged["gone"] = ["anon"]
    async with TestClient(TestServer(app)) as client:
        for user in ("gone", "kept", "anon"):
            r = await client.get(f"/v1/users/{user}/blocks/cart_reminder", headers=READER)
            assert r.status == 200
        queued = [e["user_id"] for e in registry._exposures]
        assert sorted(queued) == ["anon", "gone", "kept"]
        r = await client.delete("/v1/users/gone", headers=ADMIN_KEY)
        assert r.status == 200 and (await r.json())["erased"] is True
        assert [e["user_id"] for e in registry._exposures] == ["kept"]
