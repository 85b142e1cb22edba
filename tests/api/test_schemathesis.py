"""Property-based API test: schemathesis generates requests for every route of /openapi.json (the
pages, the privacy and the models admin routes included) against a running server (the API over
the in-memory state and registry, api/testing.py, served by the worker's and readers' runner) with
a key holding every scope, and checks there is no 5xx and that every response conforms to the
document (status codes, content types, bodies)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.auth import SCOPES, KeyRing
from api.content import ContentService
from api.hot import HotRunner
from api.models_routes import ADMIN
from api.openapi import openapi_document
from api.testing import MemoryRegistry, MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.catalog import Product
from engine.events import Event, validate
from models.bundle import read_bundle, save_model
from models.recs import fit_recommender
from models.registry import ModelSet
from streams.broker import free_port
from tests.models.synthetic import basket_events

SECRET = "schemathesis-secret-kkkk"
KEYS = f"st:{SECRET}:{','.join(sorted(SCOPES))}"
HEADERS = {"Authorization": f"Bearer {SECRET}"}
USERS = [f"u{n}" for n in range(5)]  # the users _state() folds events for


def _event(user: str, n: int) -> Event:
    item = ModelSet.default().recs.popular[0]
    return validate(
        {"event_id": f"e{n}", "type": "add_to_cart", "user_id": user, "ts": 1_700_000_000_000 + n,
         "item_id": item}
    )  # fmt: skip


def _state() -> MemoryState:
    state = MemoryState()
    for n, item in enumerate(ModelSet.default().recs.popular[:30]):
        state.put_product(
            Product(
                item, f"P{n}", f"https://s.example/{n}", f"https://s.example/{n}.jpg", 1.5, "EUR"
            )
        )
    for n, user in enumerate(USERS):
        state.apply(_event(user, n))
    return state


class Server:
    """The API over the in-memory state and registry, served on its own event loop's thread."""

    def __init__(self, registry_dir: Path, keys: str = KEYS) -> None:
        self.state = _state()
        content = ContentService(self.state, ModelSet.default(), Renderer(), BlockPolicy())
        self.app = create_app(content, KeyRing.from_settings(keys, None))
        self.registry = MemoryRegistry(content, self.state, registry_dir / "cache")
        new_recs = fit_recommender(basket_events(), k=5)  # a second recs version to switch to
        self.registry.publish(read_bundle(save_model(new_recs, registry_dir / "recs")))
        self.app[ADMIN] = self.registry
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.runner = HotRunner(self.app, access_log=None)  # as the worker and readers serve

    def start(self) -> None:
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.runner.setup())
            self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        ready.wait(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def versions(self) -> dict[str, list[str]]:
        rows = self.registry.listing()
        return {n: [r["version"] for r in rows if r["name"] == n] for n in ("churn", "recs")}

    def refold(self) -> None:
        """Fold the known users' events again (DELETE /v1/users/{id} erases them), on the loop."""

        async def refold() -> None:
            for user in USERS:
                if self.state.profile(user) is None:
                    self.state.apply(_event(user, len(self.state.produced)))

        asyncio.run_coroutine_threadsafe(refold(), self.loop).result(10)


def _pick(value: Any, choices: list[str]) -> str | None:
    """One of `choices` for half of the generated values (by their text), else None: random
    ids and versions are almost never known, and the 200 answers must be checked too."""
    text = str(value)
    return choices[len(text) // 2 % len(choices)] if len(text) % 2 == 0 and choices else None


def _aim(case: Any, versions: dict[str, list[str]]) -> None:
    """Point half of the cases at a known user, model version or experiment candidate."""
    params = case.path_parameters or {}
    if "user_id" in params and (user := _pick(params["user_id"], USERS)):
        params["user_id"] = user
    body = case.body
    if not isinstance(body, dict):
        return
    if case.path.endswith("/activate") and params.get("name") in versions:
        body["version"] = _pick(body.get("version"), versions[params["name"]]) or body["version"]
    if case.path == "/v1/models/experiment" and case.method == "PUT":
        candidate = _pick(body.get("candidate"), versions["recs"])
        if candidate is not None:
            body.update(model="recs", candidate=candidate)


schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.mark.filterwarnings("ignore:Skipped test cases with unsupported payload media types")
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_document(case: Any, api_server: Server) -> None:
    api_server.refold()
    _aim(case, api_server.versions())
    base_url = f"http://127.0.0.1:{api_server.port}"
    response = case.call(base_url=base_url, headers=HEADERS, timeout=10)
    assert response.status_code < 500, response.text[:500]
    case.validate_response(
        response,
        checks=[status_code_conformance, content_type_conformance, response_schema_conformance],
    )
