"""Content experiments over HTTP (api/experiments.py; issue 18 items 4 and 5): the models:admin
scope, 400 problems naming the place (and an unknown variant by name), the arm's variant in the
block (`variant`, `X-Persona-Variant`, the click links' tokens), the holdout's fallback, no
assignment without consent, exposures per variant, no stale variant after a change, and the
report's arm counting a click and the purchase after it."""

from __future__ import annotations

import gc
import json
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.limits import ServingOptions
from api.models_routes import ADMIN
from api.testing import MemoryRegistry, MemoryState
from engine.blocks import DEFAULT_TEMPLATE_DIR, BlockPolicy, Renderer
from engine.catalog import Product
from engine.clicks import click_key, link_maker
from engine.clock import ManualClock
from engine.content_experiments import EXPERIMENT_BLOCKS, MAX_PAST, ContentExperiment, share
from engine.events import validate
from models.experiments import Experiment
from models.registry import ModelSet

ADMIN_KEY = "models-admin-kkkkkkkkkkkkkk"
READ_KEY = "content-read-kkkkkkkkkkkkkk"
RULES_KEY = "rules-admin-kkkkkkkkkkkkkkk"
KEYS = f"ds:{ADMIN_KEY}:models:admin;send:{READ_KEY}:content:read;merch:{RULES_KEY}:rules:admin"
SECRET = "cluster-secret-of-this-test-eeeeeeeeee"
BASE = "https://persona.shop.example"
LINK = re.compile(re.escape(BASE) + r"(/c/[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)")
MARK = "<!-- compact design -->"
USERS = [f"shopper-{n}" for n in range(40)]
# holdout 0.25, then default and compact half each of the rest
DESIGN = {
    "name": "design-1",
    "block": "recommendations",
    "arms": [{"variant": "default", "weight": 1}, {"variant": "compact", "weight": 1}],
    "holdout": 0.25,
}


def arm_of(user: str) -> str:
    u = share("design-1", user)
    return "holdout" if u < 0.25 else "default" if u < 0.625 else "compact"


def bearer(secret: str = ADMIN_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@dataclass
class Shop:
    client: TestClient
    state: MemoryState
    content: ContentService
    registry: MemoryRegistry


def templates(tmp_path: Path) -> Path:
    target = tmp_path / "templates"
    shutil.copytree(DEFAULT_TEMPLATE_DIR, target, ignore=shutil.ignore_patterns("*.py"))
    html = (target / "email" / "recommendations.html").read_text()
    (target / "email" / "recommendations.compact.html").write_text(MARK + html)
    return target


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    # the event-time clock an hour behind the wall clock the click redirect stamps clicks with
    state = MemoryState(ManualClock(int(time.time() * 1000) - 3_600_000))
    for n in range(12):
        url = f"https://shop.example.com/p/P{n}"
        state.put_product(Product(f"P{n}", f"Item {n}", url, url + ".jpg", 4.0, "GBP"))
    state.popular_items = [f"P{n}" for n in range(12)]
    renderer = Renderer(template_dir=templates(tmp_path))
    renderer.links = link_maker(click_key(SECRET), BASE + "/", lambda: int(time.time() * 1000))
    content = ContentService(state, ModelSet.default(), renderer, BlockPolicy())
    options = ServingOptions(cluster_secret=SECRET)
    app = create_app(content, KeyRing.from_settings(KEYS, None), options)
    registry = MemoryRegistry(content, state)
    app[ADMIN] = registry
    for user in [*USERS, "refuser"]:
        view = {"event_id": f"v-{user}", "type": "product_view", "user_id": user}
        state.apply(validate({**view, "item_id": "P1", "ts": state.wall.now_ms() - 60_000}))
    refuse = {"event_id": "no", "type": "consent", "user_id": "refuser"}
    props = {"personalization": False}
    state.apply(validate({**refuse, "ts": state.wall.now_ms() - 30_000, "props": props}))
    async with TestClient(TestServer(app)) as client:
        yield Shop(client, state, content, registry)


async def put(shop: Shop, document: Any, key: str = ADMIN_KEY) -> tuple[int, dict[str, Any]]:
    r = await shop.client.put("/v1/experiments", json=document, headers=bearer(key))
    return r.status, await r.json()


async def block(shop: Shop, user: str, fmt: str = "json") -> tuple[str, str, str]:
    """(X-Persona-Variant, X-Persona-Fallback or "", body)"""
    r = await shop.client.get(
        f"/v1/users/{user}/blocks/recommendations?format={fmt}", headers=bearer(READ_KEY)
    )
    assert r.status == 200
    return r.headers["X-Persona-Variant"], r.headers.get("X-Persona-Fallback", ""), await r.text()


async def test_only_models_admin_may_read_or_change_experiments(shop: Shop) -> None:
    for key in (READ_KEY, RULES_KEY):
        status, _ = await put(shop, {"experiments": [DESIGN]}, key)
        assert status == 403
        r = await shop.client.get("/v1/experiments", headers=bearer(key))
        assert r.status == 403
    r = await shop.client.put("/v1/experiments", json={"experiments": [DESIGN]})
    assert r.status == 401
    assert shop.content.models.content_experiments.experiments == ()


async def test_a_huge_body_is_413_however_its_length_is_declared(shop: Shop) -> None:
    huge = b'{"experiments": [' + b" " * (600 * 1024) + b"]}"
    r = await shop.client.put("/v1/experiments", data=huge, headers=bearer())
    assert r.status == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read up to the bound
        yield huge

    r = await shop.client.put("/v1/experiments", data=chunks(), headers=bearer())
    assert r.status == 413, await r.text()


async def test_a_document_sent_in_chunks_is_read_whole(shop: Shop) -> None:
    whole = json.dumps({"experiments": [DESIGN]}).encode()
    padded = whole[:-1] + b" " * (300 * 1024) + whole[-1:]  # under the bound, many chunks

    async def chunks() -> AsyncIterator[bytes]:
        for at in range(0, len(padded), 4096):
            yield padded[at : at + 4096]

    r = await shop.client.put("/v1/experiments", data=chunks(), headers=bearer())
    assert r.status == 200, await r.text()
    assert [e["name"] for e in (await r.json())["experiments"]] == [DESIGN["name"]]


async def test_bad_documents_are_400_problems_naming_the_place(shop: Shop) -> None:
    unknown = {**DESIGN, "arms": [{"variant": "default"}, {"variant": "glossy"}]}
    status, body = await put(shop, {"experiments": [unknown]})
    assert status == 400 and "experiments[0].arms[1].variant" in body["detail"]
    assert "'glossy'" in body["detail"]
    status, body = await put(shop, {"experiments": [{**DESIGN, "holdout": 2}]})
    assert status == 400 and "experiments[0].holdout" in body["detail"]
    r = await shop.client.put("/v1/experiments", data=b"{nope", headers=bearer())
    assert r.status == 400 and (await r.json())["title"] == "Bad body"
    r = await shop.client.get("/v1/experiments/design-1/report?window_hours=0", headers=bearer())
    assert r.status == 400 and (await r.json())["parameter"] == "window_hours"
    twice = "/v1/experiments/design-1/report?window_hours=1&window_hours=0"  # the first was taken
    r = await shop.client.get(twice, headers=bearer())
    assert r.status == 400 and (await r.json())["parameter"] == "window_hours"
    r = await shop.client.get("/v1/experiments/nobody/report", headers=bearer())
    assert r.status == 404
    assert shop.content.models.content_experiments.experiments == ()


async def test_the_experiments_kept_for_their_reports_are_bounded(shop: Shop) -> None:
    """Every experiment ever put was kept, by name, in every process, for its report: an
    admin putting 50 new names an edit grew every worker and reader without end. The newest
    MAX_PAST are kept (the document's own always); an older one's report is a 404."""
    start = shop.state.wall.now_ms() + 86_400_000

    def document(edit: int) -> dict[str, Any]:
        experiments = []
        for n in range(50):  # one block each, one after another in time: none overlap
            starts = start + 60_000 * n
            experiments.append(
                {
                    "name": f"past-{edit}-{n}",
                    "block": EXPERIMENT_BLOCKS[n % len(EXPERIMENT_BLOCKS)],
                    "arms": [{"variant": "default"}],
                    "holdout": 0.5,
                    "starts": starts,
                    "ends": starts + 60_000,
                }
            )
        return {"experiments": experiments}

    edits = MAX_PAST // 50 + 3
    for edit in range(edits):
        status, body = await put(shop, document(edit))
        assert status == 200, body
    gc.collect()
    kept = [o for o in gc.get_objects() if isinstance(o, ContentExperiment)]
    assert len([e for e in kept if e.name.startswith("past-")]) <= MAX_PAST + 50
    for name, status in ((f"past-{edits - 1}-0", 200), ("past-0-0", 404)):
        r = await shop.client.get(f"/v1/experiments/{name}/report", headers=bearer())
        assert r.status == status, name
    oldest = edits - MAX_PAST // 50  # the first edit whose names are among the newest MAX_PAST
    for name, status in ((f"past-{oldest}-0", 200), (f"past-{oldest - 1}-49", 404)):
        r = await shop.client.get(f"/v1/experiments/{name}/report", headers=bearer())
        assert r.status == status, name


async def test_versions_and_a_stale_edit(shop: Shop) -> None:
    r = await shop.client.get("/v1/experiments", headers=bearer())
    assert await r.json() == {"version": "0", "experiments": []} and r.headers["ETag"] == '"0"'
    status, body = await put(shop, {"version": "7", "experiments": [DESIGN]})
    assert status == 200 and body["version"] == "1"
    assert body["experiments"][0]["arms"][1] == {"variant": "compact", "weight": 1.0}
    stale = {**bearer(), "If-Match": '"0"'}
    r = await shop.client.put("/v1/experiments", json={"experiments": []}, headers=stale)
    assert r.status == 412
    assert shop.content.models.content_experiments.version == "1"


async def test_each_user_sees_their_arm_and_the_holdout_the_fallback(shop: Shop) -> None:
    before = {user: await block(shop, user) for user in USERS[:8]}
    assert {variant for variant, _, _ in before.values()} == {"default"}
    assert (await put(shop, {"experiments": [DESIGN]}))[0] == 200
    arms = {arm_of(user) for user in USERS}
    assert arms == {"holdout", "default", "compact"}  # the 40 users reach every arm
    for user in USERS:
        variant, fallback, body = await block(shop, user)
        assert variant == arm_of(user)
        assert f'"variant": "{variant}"' in body
        reason = shop.content.block(user, "recommendations", "json").reason
        assert (reason == "holdout") == (variant == "holdout")
        assert fallback == "1" or variant != "holdout"  # the holdout gets the fallback
        _, _, html = await block(shop, user, "html")
        assert (MARK in html) == (variant == "compact")
    logged = {(e["user_id"], e["variant"]) for e in shop.registry.exposures}
    assert logged == {(user, arm_of(user)) for user in USERS}
    assert all(e["experiment"] == "design-1" for e in shop.registry.exposures)


async def test_without_consent_no_assignment_and_no_exposure(shop: Shop) -> None:
    assert (await put(shop, {"experiments": [DESIGN]}))[0] == 200
    assert arm_of("refuser") != "default"  # the refuser would be in another arm
    variant, fallback, _ = await block(shop, "refuser")
    assert variant == "default" and fallback == "1"
    variant, _, _ = await block(shop, "a-stranger")
    assert variant == "default"
    assert shop.registry.exposures == []


async def test_a_change_serves_no_stale_variant(shop: Shop) -> None:
    user = next(u for u in USERS if arm_of(u) == "compact")
    await block(shop, user, "html")  # cached before
    assert (await put(shop, {"experiments": [DESIGN]}))[0] == 200
    variant, _, html = await block(shop, user, "html")
    assert variant == "compact" and MARK in html
    assert (await put(shop, {"experiments": []}))[0] == 200
    variant, _, html = await block(shop, user, "html")
    assert variant == "default" and MARK not in html
    ended = {**DESIGN, "ends": shop.state.now_ms() + 60_000}
    assert (await put(shop, {"experiments": [ended]}))[0] == 200
    assert (await block(shop, user))[0] == "compact"
    shop.state.wall.advance(120_000)  # the experiment ends on the event-time clock
    shop.state.apply(
        validate(
            {
                "event_id": "late",
                "type": "page_view",
                "user_id": "x",
                "ts": shop.state.wall.now_ms(),
            }
        )
    )
    assert (await block(shop, user))[0] == "default"


async def test_a_click_and_the_purchase_after_it_count_in_the_arm(shop: Shop) -> None:
    assert (await put(shop, {"experiments": [DESIGN]}))[0] == 200
    user = next(u for u in USERS if arm_of(u) == "compact")
    other = next(u for u in USERS if arm_of(u) == "default")
    await block(shop, other, "html")
    _, _, html = await block(shop, user, "html")
    link = LINK.findall(html)[0]
    r = await shop.client.get(link, allow_redirects=False)
    assert r.status == 302
    (click,) = [e for e in shop.state.produced if e.type == "click"]
    link_ms = click.props.pop("link_ms")  # when the link was made (the erasure fence's time)
    assert isinstance(link_ms, int) and link_ms % 60_000 == 0
    assert click.props == {"block": "recommendations", "variant": "compact"}
    profile = shop.state.profile(user)
    assert profile is not None and profile.counts.get("click") == 1
    buy = {"event_id": "buy-1", "type": "purchase", "user_id": user, "item_id": click.item_id}
    paid = {**buy, "price": 4.0, "quantity": 2, "currency": "GBP", "ts": click.ts + 60_000}
    await shop.state.produce([validate(paid)])
    r = await shop.client.get("/v1/experiments/design-1/report", headers=bearer())
    assert r.status == 200
    report = await r.json()
    arms = {arm["variant"]: arm for arm in report["arms"]}
    assert report["control"] == "default" and list(arms) == ["default", "compact", "holdout"]
    compact = arms["compact"]
    assert (compact["users"], compact["clicks"], compact["ctr"]) == (1, 1, 1.0)
    assert (compact["purchases"], compact["revenue"]) == (1, 8.0)
    assert arms["default"]["users"] == 1 and arms["default"]["clicks"] == 0
    assert compact["vs_control"]["ctr"]["difference"] == 1.0
    # the dashboard's A/B panel counts the click beside the blocks served, live
    r = await shop.client.get("/v1/stats", headers=bearer(READ_KEY))
    (panel,) = [x for x in (await r.json())["experiments"] if x["block"] == "recommendations"]
    served = {v["variant"]: v for v in panel["variants"]}
    assert served["compact"]["clicks"] == 1 and served["default"]["clicks"] == 0
    assert served["compact"]["click_rate"] == 1 / served["compact"]["served"]


async def test_a_batch_logs_one_exposure_per_consenting_user_in_their_arm(shop: Shop) -> None:
    assert (await put(shop, {"experiments": [DESIGN]}))[0] == 200
    ids = [*USERS[:10], "refuser", "a-stranger"]
    body = {"block": "recommendations", "format": "html", "user_ids": ids}
    r = await shop.client.post("/v1/blocks:batch", json=body, headers=bearer(READ_KEY))
    assert r.status == 200
    results = (await r.json())["results"]
    for user in USERS[:10]:
        assert (MARK in results[user]["content"]) == (arm_of(user) == "compact")
    logged = [(e["user_id"], e["variant"]) for e in shop.registry.exposures]
    assert logged == [(user, arm_of(user)) for user in USERS[:10]]


async def test_a_batch_in_slices_logs_the_same_exposures_in_the_same_order(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """api/batch.py logs exposures per chunk of users: 3 users a chunk, a yield after each."""
    import api.batch

    monkeypatch.setattr(api.batch, "CHUNK_USERS", 3)
    monkeypatch.setattr(api.batch, "SLICE_SECONDS", 0.0)
    assert (await put(shop, {"experiments": [DESIGN]}))[0] == 200
    ids = [*USERS[:4], "refuser", *USERS[4:10], "a-stranger", USERS[0]]
    body = {"block": "recommendations", "format": "html", "user_ids": ids}
    r = await shop.client.post("/v1/blocks:batch", json=body, headers=bearer(READ_KEY))
    assert r.status == 200 and len((await r.json())["results"]) == 12
    logged = [(e["user_id"], e["variant"]) for e in shop.registry.exposures]
    assert logged == [(user, arm_of(user)) for user in USERS[:10]]


async def test_a_model_ab_test_names_its_arm_where_no_content_experiment_runs() -> None:
    """CONTRACT: `variant` names the arm of a running content or model experiment."""
    from tests.api.test_models_routes import FakeAdmin

    state = MemoryState()
    content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, KeyRing.from_settings(KEYS, None))
    admin = FakeAdmin(content)
    app[ADMIN] = admin
    for user in [*USERS, "refuser"]:
        view = {"event_id": f"v-{user}", "type": "page_view", "user_id": user}
        state.apply(validate({**view, "ts": state.wall.now_ms() - 60_000}))
    refuse = {"event_id": "no", "type": "consent", "user_id": "refuser"}
    props = {"personalization": False}
    state.apply(validate({**refuse, "ts": state.wall.now_ms() - 30_000, "props": props}))
    experiment = Experiment("m1", "recs", "", admin.candidate.version)
    await admin.set_experiment(experiment)
    assert {experiment.variant(user) for user in USERS} == {"A", "B"}
    async with TestClient(TestServer(app)) as client:
        for user in USERS:
            r = await client.get(
                f"/v1/users/{user}/blocks/winback?format=json", headers=bearer(READ_KEY)
            )
            assert r.headers["X-Persona-Variant"] == experiment.variant(user)
            assert (await r.json())["variant"] == experiment.variant(user)
        r = await client.get("/v1/users/refuser/blocks/winback", headers=bearer(READ_KEY))
        assert r.headers["X-Persona-Variant"] == "default"
        await admin.set_experiment(None)
        r = await client.get(f"/v1/users/{USERS[0]}/blocks/winback", headers=bearer(READ_KEY))
        assert r.headers["X-Persona-Variant"] == "default"


async def test_render_logs_the_blocks_a_message_shows(shop: Shop) -> None:
    assert (await put(shop, {"experiments": [DESIGN]}))[0] == 200
    ids = [*USERS[:6], "refuser", "a-stranger"]
    without = {"template": "<p>{{ blocks.winback }}</p>", "user_ids": ids}
    r = await shop.client.post("/v1/render", json=without, headers=bearer(READ_KEY))
    assert r.status == 200 and shop.registry.exposures == []  # no experiment on winback
    body = {"template": "<p>{{ blocks.recommendations }}{{ blocks.recommendations }}</p>"}
    r = await shop.client.post(
        "/v1/render", json={**body, "user_ids": ids}, headers=bearer(READ_KEY)
    )
    assert r.status == 200
    results = (await r.json())["results"]
    for user in USERS[:6]:
        assert (MARK in results[user]["content"]) == (arm_of(user) == "compact")
    logged = [(e["user_id"], e["variant"], e["block"]) for e in shop.registry.exposures]
    assert logged == [(user, arm_of(user), "recommendations") for user in USERS[:6]]


def test_every_fallback_reason_has_words_in_the_preview() -> None:
    """The holdout's reason too (api/shop_words.py: the preview's badge)."""
    from api.shop_words import REASON_TEXT
    from engine.blocks import REASONS

    assert set(REASON_TEXT) == set(REASONS)
