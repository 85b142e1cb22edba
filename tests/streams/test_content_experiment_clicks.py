"""A content experiment end to end on the real broker (issue 18 items 4, 5 and 8): a worker with
a template variant starts an experiment (PUT /v1/experiments: a signed record on the `models`
topic the worker folds), serves a user their arm's block, the user follows its click link through
GET /c/{token} and buys; the click shows in the profile, and the experiment report (read from the
`exposures`, `clickstream` and `cart` topics) counts the exposure, the click and the purchase in
the user's arm. The broker is this module's own: the experiment would change other tests'
blocks on the session broker."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.blocks import DEFAULT_TEMPLATE_DIR
from engine.content_experiments import share
from tests.conftest import ROOT, Worker, http, wait_until, worker_of_its_own

pytestmark = pytest.mark.integration

MARK = "<!-- compact design -->"
CLICK_BASE = "https://persona.shop.example"
LINK = re.compile(re.escape(CLICK_BASE) + r"(/c/[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)")
USERS = [f"ab-user-{n}" for n in range(12)]
DESIGN = {
    "name": "design-e2e",
    "block": "recommendations",
    "arms": [{"variant": "default"}, {"variant": "compact"}],
    "holdout": 0.2,
}
CATALOG = "item_id,title,url,image_url,price,currency,availability,category,brand\n" + "".join(
    f"ab-{n},Lamp {n},https://s.example.com/{n},https://s.example.com/{n}.jpg,5,EUR,in_stock,Light,Acme\n"
    for n in range(10)
)


def arm_of(user: str) -> str:
    u = share("design-e2e", user)
    return "holdout" if u < 0.2 else "default" if u < 0.6 else "compact"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    tmp = tmp_path_factory.mktemp("content-ab")
    templates = tmp / "templates"
    shutil.copytree(DEFAULT_TEMPLATE_DIR, templates, ignore=shutil.ignore_patterns("*.py"))
    html = (templates / "email" / "recommendations.html").read_text()
    (templates / "email" / "recommendations.compact.html").write_text(MARK + html)
    extra = {"PERSONA_TEMPLATE_DIR": str(templates), "PERSONA_CLICK_URL": CLICK_BASE}
    with worker_of_its_own(tmp, extra) as worker:
        _catalog(tmp / "catalog.csv", worker.broker_url)
        yield worker


def _catalog(path: Path, broker_url: str) -> None:
    path.write_text(CATALOG)
    result = subprocess.run(
        [sys.executable, "-m", "persona", "catalog", "import", str(path), "--broker", broker_url],
        cwd=ROOT, env=dict(os.environ, PERSONA_PARTITIONS="4"), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def send(worker: Worker, *events: dict[str, Any]) -> None:
    status, _, body = http("POST", worker.base + "/v1/events", list(events))
    assert status == 202 and json.loads(body)["rejected"] == 0, body


def profile(worker: Worker, user: str) -> dict[str, Any] | None:
    status, _, body = http("GET", f"{worker.base}/v1/users/{user}/profile")
    return json.loads(body) if status == 200 else None


def test_a_click_on_an_arms_block_reaches_the_profile_and_the_report(shop: Worker) -> None:
    now = int(time.time() * 1000)
    user = next(u for u in USERS if arm_of(u) == "compact")
    views = [
        {"event_id": f"ab-view-{u}", "type": "product_view", "user_id": u, "item_id": "ab-1"}
        for u in USERS
    ]
    send(shop, *({**v, "ts": now - 60_000} for v in views))
    wait_until(lambda: all(profile(shop, u) for u in USERS), 60, what="the users' profiles")
    # a product must be in the catalog for the redirect's target
    wait_until(lambda: _block(shop, user)[0] == 200, 60, what="a block")

    status, _, body = http("PUT", shop.base + "/v1/experiments", {"experiments": [DESIGN]})
    assert status == 200, body
    for other in USERS:
        wait_until(  # the PUT answers once served here, or after 12 s on a slow machine
            lambda other=other: _block(shop, other)[1].get("X-Persona-Variant") == arm_of(other),
            60,
            what=f"{other}'s arm",
        )
    _, headers, html = _block(shop, user)
    assert headers["X-Persona-Variant"] == "compact" and MARK in html
    link = LINK.findall(html)[0]

    status, headers, _ = _no_redirect(shop.base + link)
    assert status == 302 and headers["Location"].startswith("https://s.example.com/")
    item = "ab-" + headers["Location"].rsplit("/", 1)[1]
    wait_until(
        lambda: (profile(shop, user) or {}).get("events", {}).get("click") == 1,
        60,
        what="the click in the profile",
    )
    bought = {"event_id": "ab-buy", "type": "purchase", "user_id": user, "item_id": item}
    send(
        shop,
        {**bought, "price": 5.0, "quantity": 3, "currency": "EUR", "ts": int(time.time() * 1000)},
    )
    arm = wait_until(lambda: _arm(shop, "compact"), 90, what="the report's compact arm")
    exposed = sum(arm_of(u) == "compact" for u in USERS)  # each read their block
    assert (arm["users"], arm["clicks"], arm["clickers"]) == (exposed, 1, 1)
    assert arm["ctr"] == round(1 / exposed, 6)
    assert (arm["buyers"], arm["purchases"], arm["revenue"]) == (1, 1, 15.0)


def _block(worker: Worker, user: str) -> tuple[int, dict[str, str], str]:
    status, headers, body = http("GET", f"{worker.base}/v1/users/{user}/blocks/recommendations")
    return status, headers, body.decode()


def _arm(worker: Worker, variant: str) -> dict[str, Any] | None:
    status, _, body = http(
        "GET", worker.base + "/v1/experiments/design-e2e/report?window_hours=1", timeout=60
    )
    if status != 200:
        return None
    found = {arm["variant"]: arm for arm in json.loads(body)["arms"]}[variant]
    return found if found["purchases"] else None


def _no_redirect(url: str) -> tuple[int, dict[str, str], bytes]:
    import urllib.error
    import urllib.request

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    try:
        with urllib.request.build_opener(Stay).open(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
