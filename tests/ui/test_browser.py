"""The preview and the dashboard in headless Chromium against a real worker (embedded broker):
the rendered DOM holds the user's recommended products and charts with data; screenshots go to
test-output/ for people to look at."""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
import uuid

import pytest

from engine.events import validate
from engine.sources import read_catalog
from persona.supervisor import DEMO_DIR
from streams.produce import ALL_INPUTS, Producer, ensure_topics
from tests.conftest import SECRET, Worker, http, wait_until
from tests.ui import browser

pytestmark = pytest.mark.integration

T0 = 1_291_190_000_000  # Dec 2010, inside the demo data's era
VIEWED = ("85123A", "71053", "84406B", "22423")


def _metric(worker: Worker, name: str) -> float:
    _, _, body = http("GET", worker.base + "/metrics", key=None)
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


@pytest.fixture(scope="module")
def shopper(worker: Worker) -> str:
    """The demo catalog loaded (once per session's worker) and one user who viewed and carted."""
    browser.chromium()  # skip early, before loading anything, where there is no browser
    user = f"ui-{uuid.uuid4().hex[:8]}"
    events = [
        {"event_id": f"{user}-{i}", "type": "product_view", "user_id": user, "ts": T0 + i * 1000}
        | {"item_id": item}
        for i, item in enumerate(VIEWED)
    ]
    events.append(
        {"event_id": f"{user}-cart", "type": "add_to_cart", "user_id": user, "ts": T0 + 9000}
        | {"item_id": VIEWED[0], "quantity": 1}
    )

    async def go() -> int:
        await ensure_topics(worker.broker_url, 4, ALL_INPUTS)
        async with Producer(worker.broker_url) as producer:
            sent = 0
            if _metric(worker, "persona_catalog_updates_total") < 1000:
                sent = await producer.send_products(read_catalog(DEMO_DIR / "catalog.jsonl.gz"))
            await producer.send_events([validate(e) for e in events], fmt="json")
            return sent

    sent = asyncio.run(go())
    wait_until(
        lambda: _metric(worker, "persona_catalog_updates_total") >= max(sent, 1000),
        timeout=90,
        what="catalog applied",
    )

    def carted() -> bool:
        status, _, body = http("GET", f"{worker.base}/v1/users/{user}/profile")
        return status == 200 and bool(json.loads(body)["cart"])

    wait_until(carted, timeout=60, what="the shopper's profile")
    return user


def _text(dom: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", dom))


def test_preview_shows_the_users_blocks_profile_and_why(worker: Worker, shopper: str) -> None:
    status, _, body = http(
        "GET", f"{worker.base}/v1/users/{shopper}/blocks/recommendations?format=json"
    )
    block = json.loads(body)
    assert status == 200 and block["fallback"] is False
    titles = [item["title"] for item in block["items"]]
    url = f"{worker.base}/ui/preview?user={shopper}#key={SECRET}"
    dom = browser.dom(url)
    assert f'data-user="{shopper}"' in dom, dom[-2000:]
    text = _text(dom)
    for title in titles:  # in the e-mail iframe's srcdoc, the ad JSON and the "why" list
        assert html.unescape(title) in text, title
    assert len(re.findall(r'<iframe[^>]*sandbox="allow-same-origin"', dom)) == 3
    assert 'id="why-recs"' in dom and "also chose it" in text
    assert 'id="churn-score"' in dom and "cart_reminder" in text and "personalized" in text
    assert "log-odds" not in text and "similarity" not in text  # shop language
    assert "£" in text and "1 \u00d7 " in text  # money with its currency; the cart line
    wide = _frame_sizes(dom)
    assert {w for w, _ in wide.values()} == {600}
    assert wide["recommendations"][1] > 400  # as tall as the e-mail: two rows of three
    assert SECRET not in dom  # the key never lands in the page
    shot = browser.screenshot(url, "preview.png")
    assert shot.stat().st_size > 50_000
    phone = _frame_sizes(browser.dom(url.replace("#", "&width=375#")))
    assert {w for w, _ in phone.values()} == {375}
    assert phone["recommendations"][1] > wide["recommendations"][1] * 1.5  # stacked


def _frame_sizes(dom: str) -> dict[str, tuple[int, int]]:
    """block -> (width, height) in px of the preview's e-mail iframes, as the page set them."""
    sizes = {}
    for tag in re.findall(r"<iframe[^>]*>", dom):
        block = re.search(r'data-block="([a-z_]+)"', tag)
        style = re.search(r'style="([^"]*)"', tag)
        if block and style:
            props = dict(p.split(":", 1) for p in style.group(1).split(";") if ":" in p)
            px = {k.strip(): int(float(v.strip().removesuffix("px"))) for k, v in props.items()}
            sizes[block.group(1)] = (px["width"], px["height"])
    return sizes


def test_preview_of_an_unknown_user_says_why_every_block_is_the_fallback(worker: Worker) -> None:
    browser.chromium()
    user = f"never-seen-{uuid.uuid4().hex[:6]}"
    dom = browser.dom(f"{worker.base}/ui/preview?user={user}#key={SECRET}")
    assert f'data-user="{user}"' in dom, dom[-2000:]
    assert len(re.findall(r'data-badge="fallback"', dom)) == 3
    assert 'data-badge="personalized"' not in dom
    reasons = re.findall(r'<p class="reason" data-reason="[a-z_]+">([^<]+)</p>', dom)
    assert len(reasons) == 3 and all("every block is the fallback" in r for r in reasons)


def _sign_out_shown(dom: str) -> bool:
    button = re.search(r'<button id="sign-out"[^>]*>', dom)
    assert button, "no sign-out button"
    return not re.search(r'class="[^"]*\bhidden\b', button.group(0))


@pytest.mark.parametrize("page", ["preview", "dashboard"])
def test_without_a_key_the_page_shows_sign_in_and_no_sign_out(worker: Worker, page: str) -> None:
    """The "Sign out" button showed beside the sign-in form (nothing to sign out of): it shows
    only while the tab holds a key."""
    dom = browser.dom(f"{worker.base}/ui/{page}", budget_ms=2000)
    assert re.search(r'<section id="login" class="card">', dom), "the sign-in form is visible"
    assert re.search(r'<section id="app" class="hidden">', dom)
    assert not _sign_out_shown(dom), "Sign out shows while signed out"
    signed_in = browser.dom(f"{worker.base}/ui/{page}#key={SECRET}", budget_ms=2000)
    assert re.search(r'<section id="app" class="">', signed_in) or re.search(
        r'<section id="app">', signed_in
    ), signed_in[-2000:]
    assert _sign_out_shown(signed_in), "no Sign out while signed in"
    refused = browser.dom(f"{worker.base}/ui/{page}#key=not-a-key-{uuid.uuid4().hex}", 3000)
    assert re.search(r'<section id="login" class="card">', refused), "refused: sign in again"
    assert not _sign_out_shown(refused), "Sign out shows after the key was refused"


def test_dashboard_draws_live_charts(worker: Worker, shopper: str) -> None:
    for _ in range(20):  # some API traffic to draw
        http("GET", f"{worker.base}/v1/users/{shopper}/blocks/recommendations")
        http("GET", f"{worker.base}/v1/users/nobody-{uuid.uuid4().hex[:4]}/blocks/winback")
    time.sleep(2.5)  # the sampler takes a point a second; the churn sample every 5 s

    def churn_sampled() -> bool:
        _, _, body = http("GET", f"{worker.base}/v1/stats")
        return json.loads(body)["churn"]["sampled"] > 0

    # every 5 s on an idle worker; a loaded machine can stretch that many times over
    wait_until(churn_sampled, timeout=60, what="the churn sample")
    url = f"{worker.base}/ui/dashboard#key={SECRET}"
    dom = browser.dom(url, budget_ms=4000)

    def points(chart: str) -> int:
        found = re.search(
            rf'<svg[^>]*id="chart-{chart}"[^>]*data-points="(\d+)"', dom
        ) or re.search(rf'<svg[^>]*data-points="(\d+)"[^>]*id="chart-{chart}"', dom)
        assert found, f"chart {chart} was not drawn"
        return int(found.group(1))

    for chart in ("events", "lag", "dead", "cache", "requests", "latency", "triggers"):
        assert points(chart) > 0, chart
    assert points("churn") > 0  # the histogram's bars hold the sampled profiles
    assert "<path" in dom and "<rect" in dom
    assert 'id="process-table"' in dom and 'data-kind="worker"' in dom  # whose figures
    # beside the triggers chart: those not sent for their age (`triggers_stale` of /v1/stats)
    stale = re.search(r'<p class="legend" id="triggers-stale">not sent, too old: .+?</p>', dom)
    assert stale, "the stale triggers are not shown"
    polls = re.search(r'data-polls="(\d+)"', dom)
    assert polls and int(polls.group(1)) >= 2, "the page refreshes itself"
    browser.screenshot(url, "dashboard.png", size="1400,1100", budget_ms=4000)
