"""Through a real worker (issue 18): a user's block with `context_item` leans toward that item's
neighbours, the `similar_items` block and route show them, and block parameters filter and
count on the worker's own catalog and models."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.conftest import T0, Worker, http, wait_until
from tests.streams.test_pipeline import catalog_loaded, ev, produce

pytestmark = pytest.mark.integration
__all__ = ["catalog_loaded"]  # the module fixture this test shares with test_pipeline

CONTEXT = "22138"  # Baking Set 9 Piece Retrospot: strong neighbours in the default model
SEEN = "20725"  # Lunch Bag Red Retrospot: what the user looked at


def get(worker: Worker, path: str) -> dict[str, Any]:
    status, _, body = http("GET", worker.base + path)
    assert status == 200, body[:300]
    data: dict[str, Any] = json.loads(body)
    return data


def items(worker: Worker, path: str) -> list[str]:
    return [i["item_id"] for i in get(worker, path)["items"]]


def test_context_item_leans_a_users_block_toward_its_neighbours(catalog_loaded: Worker) -> None:
    worker = catalog_loaded
    user = f"ctx-{uuid.uuid4().hex[:8]}"
    produce(worker, [ev(user, "product_view", SEEN, T0)])
    wait_until(
        lambda: http("GET", f"{worker.base}/v1/users/{user}/profile")[0] == 200,
        timeout=60,
        what="the user's profile",
    )
    near = set(items(worker, f"/v1/items/{CONTEXT}/similar?format=json&n=20"))
    assert len(near) == 20 and CONTEXT not in near
    blocks = f"/v1/users/{user}/blocks"
    plain = items(worker, f"{blocks}/recommendations?format=json&n=10")
    leaning = items(worker, f"{blocks}/recommendations?format=json&n=10&context_item={CONTEXT}")
    assert len(plain) == len(leaning) == 10 and CONTEXT not in leaning
    assert len(near & set(leaning)) > len(near & set(plain))
    similar = get(worker, f"{blocks}/similar_items?format=json&n=5&context_item={CONTEXT}")
    assert similar["fallback"] is False and len(similar["items"]) == 5
    assert {i["item_id"] for i in similar["items"]} <= near


def test_bad_parameters_are_400_on_the_worker(catalog_loaded: Worker) -> None:
    base = f"{catalog_loaded.base}/v1/users/anyone/blocks/recommendations"
    for query, name in (("n=0", "n"), ("sort=price", "sort"), ("locale=x_y", "locale")):
        status, headers, body = http("GET", f"{base}?{query}")
        assert status == 400 and headers["Content-Type"].startswith("application/problem+json")
        assert json.loads(body)["parameter"] == name
    status, _, _ = http("GET", f"{catalog_loaded.base}/v1/items/no-such-item/similar")
    assert status == 404
