"""The model routes over a fake registry: scope, formats, errors, and A/B exposures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.models_routes import ADMIN
from api.testing import MemoryRegistry, MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.erasure import unerased_exposures
from engine.events import validate
from models.bundle import read_bundle, save_model
from models.experiments import Experiment, report
from models.recs import fit_recommender
from models.registry import ModelSet
from tests.models.synthetic import basket_events

ADMIN_KEY = {"Authorization": "Bearer adm-kkkkkkkkkkkkkkkkkkkk"}
READER = {"Authorization": "Bearer ro-kkkkkkkkkkkkkkkkkkkkk"}


class FakeAdmin:
    def __init__(self, content: ContentService) -> None:
        self.content = content
        self.candidate = fit_recommender(basket_events(), k=5)
        self.exposures: list[dict[str, Any]] = []

    def listing(self) -> list[dict[str, Any]]:
        models = self.content.models
        return [
            {"name": n, "version": v, "active": True, "created": "2026-01-01T00:00:00Z",
             "metrics": {}}
            for n, v in models.versions().items()
        ] + [{"name": "recs", "version": self.candidate.version, "active": False,
              "created": "2026-01-02T00:00:00Z", "metrics": {}}]  # fmt: skip

    def experiment(self) -> dict[str, Any] | None:
        exp = self.content.models.experiment
        return exp.to_dict() if exp else None

    async def activate(self, name: str, version: str | None) -> dict[str, Any]:
        if version != self.candidate.version:
            raise LookupError(f"no {name} version {version!r}")
        models = self.content.models
        self.content.models = ModelSet(models.churn, self.candidate)
        return {"name": name, "version": version, "active": True, "serving": True}

    async def set_experiment(self, experiment: Experiment | None) -> dict[str, Any] | None:
        models = self.content.models
        self.content.models = ModelSet(
            models.churn,
            models.recs,
            experiment=experiment,
            candidate=self.candidate if experiment else None,
        )
        return self.experiment()

    async def report(self, name: str) -> dict[str, Any]:
        return report(name, self.exposures, [])

    def experiment_names(self) -> list[str]:
        return []  # the running one only (the routes add it)

    def log_exposure(self, exposure: dict[str, Any]) -> None:
        self.exposures.append(exposure)

    def forget_exposures(
        self, user_ids: list[str], also: Callable[[str], bool] | None = None
    ) -> None:
        self.exposures = unerased_exposures(self.exposures, user_ids, also)


@pytest.fixture
async def setup() -> AsyncIterator[tuple[TestClient, FakeAdmin, MemoryState]]:
    state = MemoryState()
    keys = KeyRing.from_settings(
        "ro:ro-kkkkkkkkkkkkkkkkkkkkk:content:read;admin:adm-kkkkkkkkkkkkkkkkkkkk:models:admin,content:read",
        None,
    )
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, keys)
    admin = FakeAdmin(content)
    app[ADMIN] = admin
    async with TestClient(TestServer(app)) as client:
        yield client, admin, state


async def test_models_routes_need_models_admin(setup: Any) -> None:
    client, _, _ = setup
    assert (await client.get("/v1/models")).status == 401
    assert (await client.get("/v1/models", headers=READER)).status == 403
    r = await client.get("/v1/models", headers=ADMIN_KEY)
    assert r.status == 200
    body = await r.json()
    assert {"name", "version", "active", "created", "metrics"} <= set(body["models"][0])


async def test_activate_switches_what_profiles_say(setup: Any) -> None:
    client, admin, state = setup
    state.apply(validate({"event_id": "e1", "type": "product_view", "user_id": "u1",
                          "item_id": "a", "ts": 1_700_000_000_000}))  # fmt: skip
    url = "/v1/models/recs/activate"
    assert (await client.post(url, json={"version": "recs-nope"}, headers=ADMIN_KEY)).status == 404
    assert (await client.post(url, json={}, headers=ADMIN_KEY)).status == 400
    assert (await client.post("/v1/models/x/activate", json={"version": "v"},
                              headers=ADMIN_KEY)).status == 404  # fmt: skip
    r = await client.post(url, json={"version": admin.candidate.version}, headers=ADMIN_KEY)
    assert r.status == 200 and (await r.json())["version"] == admin.candidate.version
    r = await client.get("/v1/users/u1/profile", headers=READER)
    assert (await r.json())["models"]["recs"] == admin.candidate.version
    assert f"recs={admin.candidate.version}" in r.headers["X-Persona-Model"]


async def test_experiment_exposures_are_logged_per_variant(setup: Any) -> None:
    client, admin, state = setup
    users = [f"u{i}" for i in range(20)]
    for i, user in enumerate(users):
        state.apply(validate({"event_id": f"e{i}", "type": "product_view", "user_id": user,
                              "item_id": "a", "ts": 1_700_000_000_000}))  # fmt: skip
    body = {"name": "t1", "model": "recs", "candidate": admin.candidate.version}
    r = await client.put("/v1/models/experiment", json=body, headers=ADMIN_KEY)
    assert r.status == 200 and (await r.json())["experiment"]["name"] == "t1"
    for user in users:
        r = await client.get(f"/v1/users/{user}/profile", headers=READER)
        variant = Experiment("t1", "recs", "", admin.candidate.version).variant(user)
        expected = admin.candidate.version if variant == "B" else ModelSet.default().recs.version
        assert (await r.json())["models"]["recs"] == expected
    assert [e["user_id"] for e in admin.exposures] == users
    assert {e["variant"] for e in admin.exposures} == {"A", "B"}
    r = await client.get("/v1/models/experiments/t1/report", headers=ADMIN_KEY)
    assert sum(arm["exposures"] for arm in (await r.json())["variants"].values()) == len(users)
    assert (await client.delete("/v1/models/experiment", headers=ADMIN_KEY)).status == 200
    await client.get("/v1/users/u0/profile", headers=READER)
    assert len(admin.exposures) == len(users)


async def test_batch_and_render_log_exposures(setup: Any) -> None:
    client, admin, state = setup
    for i in range(4):
        state.apply(validate({"event_id": f"e{i}", "type": "product_view", "user_id": f"u{i}",
                              "item_id": "a", "ts": 1_700_000_000_000}))  # fmt: skip
    users = ["u0", "u1", "u2", "u3", "stranger"]
    batch = {"block": "recommendations", "format": "json", "user_ids": users}
    assert (await client.post("/v1/blocks:batch", json=batch, headers=READER)).status == 200
    assert admin.exposures == []  # no experiment running: nothing logged
    body = {"name": "t2", "model": "recs", "candidate": admin.candidate.version}
    assert (await client.put("/v1/models/experiment", json=body, headers=ADMIN_KEY)).status == 200
    assert (await client.post("/v1/blocks:batch", json=batch, headers=READER)).status == 200
    render = {"template": "{{ blocks.recommendations }}", "user_ids": users}
    assert (await client.post("/v1/render", json=render, headers=READER)).status == 200
    logged = [(e["block"], e["user_id"]) for e in admin.exposures]
    known = users[:4]  # an unknown user sees the fallback: no exposure
    assert logged == [("recommendations", u) for u in known] + [("render", u) for u in known]
    assert all(e["experiment"] == "t2" and e["variant"] in "AB" for e in admin.exposures)


async def test_the_memory_registry_switches_and_rolls_back(tmp_path: Path) -> None:
    state = MemoryState()
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    registry = MemoryRegistry(content, state, tmp_path / "cache")
    new = fit_recommender(basket_events(), k=5)
    registry.publish(read_bundle(save_model(new, tmp_path / "recs")))
    default = content.models.recs.version
    assert {r["version"] for r in registry.listing()} >= {default, new.version}
    assert (await registry.activate("recs", new.version))["version"] == new.version
    assert content.models.recs.version == new.version
    assert (await registry.activate("recs", None))["version"] == default  # a rollback
    assert content.models.recs.version == default
    with pytest.raises(LookupError):
        await registry.activate("recs", "recs-nope")
    exp = Experiment("t", "recs", default, new.version, started="2026-01-01T00:00:00Z")
    assert (await registry.set_experiment(exp)) == exp.to_dict()
    assert content.models.candidate.version == new.version
    assert (await registry.set_experiment(None)) is None and content.models.experiment is None


@pytest.mark.parametrize(
    "change",
    [
        {"name": ""},  # an experiment nobody can ask the report of
        {"name": {"a": 1}},  # was started as "{'a': 1}"
        {"name": "a/b"},  # its report URL /v1/models/experiments/a/b/report does not route
        {"name": "x" * 65},
        {"name": 7},
        {"candidate": None},  # was looked up as the version 'None': a 404
        {"candidate": ["recs-1"]},
        {"share": "0.3"},  # the OpenAPI document says a number
        {"share": True},
        {"mode": 1},
    ],
)
async def test_an_experiment_body_of_the_wrong_shape_is_a_400_problem(
    setup: Any, change: dict[str, Any]
) -> None:
    client, admin, _ = setup
    body = {"name": "t1", "model": "recs", "candidate": admin.candidate.version, **change}
    r = await client.put("/v1/models/experiment", json=body, headers=ADMIN_KEY)
    assert r.status == 400, await r.text()
    assert r.content_type == "application/problem+json"
    assert admin.experiment() is None


async def test_the_report_of_an_unknown_experiment_is_a_404_problem(setup: Any) -> None:
    """A mistyped name answered 200 with every count 0, like an experiment nobody saw yet."""
    client, admin, state = setup
    state.apply(validate({"event_id": "e1", "type": "product_view", "user_id": "u1",
                          "item_id": "a", "ts": 1_700_000_000_000}))  # fmt: skip
    body = {"name": "t1", "model": "recs", "candidate": admin.candidate.version}
    assert (await client.put("/v1/models/experiment", json=body, headers=ADMIN_KEY)).status == 200
    r = await client.get("/v1/models/experiments/t1/report", headers=ADMIN_KEY)
    assert r.status == 200  # running, nobody exposed yet: zeros, not a 404
    r = await client.get("/v1/models/experiments/typo/report", headers=ADMIN_KEY)
    assert r.status == 404 and r.content_type == "application/problem+json"
    assert "typo" in (await r.json())["detail"]
    await client.get("/v1/users/u1/profile", headers=READER)  # one exposure of t1
    assert (await client.delete("/v1/models/experiment", headers=ADMIN_KEY)).status == 200
    r = await client.get("/v1/models/experiments/t1/report", headers=ADMIN_KEY)
    assert r.status == 200  # stopped, with its exposures: still reported
    assert sum(arm["exposures"] for arm in (await r.json())["variants"].values()) == 1


async def test_an_experiment_of_the_active_version_against_itself_is_a_400(tmp_path: Path) -> None:
    """PUT /v1/models/experiment with the active version as the candidate started an A/B test of
    a model against itself (every difference noise); the memory registry checks as a worker's."""
    state = MemoryState()
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    keys = KeyRing.from_settings("admin:adm-kkkkkkkkkkkkkkkkkkkk:models:admin", None)
    app = create_app(content, keys)
    app[ADMIN] = MemoryRegistry(content, state, tmp_path / "cache")
    active = content.models.recs.version
    body = {"name": "self", "model": "recs", "candidate": active}
    async with TestClient(TestServer(app)) as client:
        r = await client.put("/v1/models/experiment", json=body, headers=ADMIN_KEY)
        assert r.status == 400, await r.text()
        assert f"{active} is the active recs version" in (await r.json())["detail"]
        assert content.models.experiment is None


async def test_the_report_of_a_mistyped_name_names_the_experiments_there_are(
    tmp_path: Path,
) -> None:
    """A 404 for a typo said only that the name was unknown (and which one ran), not which
    experiments there are nor the one meant; an experiment started and stopped before anyone was
    exposed was "unknown" too, though the registry holds it (its report: zeros)."""
    state = MemoryState()
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    keys = KeyRing.from_settings("admin:adm-kkkkkkkkkkkkkkkkkkkk:models:admin", None)
    app = create_app(content, keys)
    registry = MemoryRegistry(content, state, tmp_path / "cache")
    app[ADMIN] = registry
    new = fit_recommender(basket_events(), k=5)
    registry.publish(read_bundle(save_model(new, tmp_path / "recs")))
    async with TestClient(TestServer(app)) as client:
        for name in ("spring-sale", "homepage-v2"):
            body = {"name": name, "model": "recs", "candidate": new.version}
            r = await client.put("/v1/models/experiment", json=body, headers=ADMIN_KEY)
            assert r.status == 200, await r.text()
        assert (await client.delete("/v1/models/experiment", headers=ADMIN_KEY)).status == 200
        r = await client.get("/v1/models/experiments/spring-sale/report", headers=ADMIN_KEY)
        assert r.status == 200, await r.text()  # started, stopped, never exposed: zeros
        r = await client.get("/v1/models/experiments/spring-sal/report", headers=ADMIN_KEY)
        assert r.status == 404 and r.content_type == "application/problem+json"
        detail = (await r.json())["detail"]
        assert "'spring-sal'" in detail and "did you mean 'spring-sale'?" in detail, detail
        assert "'homepage-v2'" in detail, detail
        r = await client.get("/v1/models/experiments/zzz/report", headers=ADMIN_KEY)
        assert r.status == 404 and "did you mean" not in (await r.json())["detail"]
