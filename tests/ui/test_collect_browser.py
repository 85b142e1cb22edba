"""The browser tag (GET /v1/sdk.js, POST /v1/collect) in headless Chromium: shop pages served by
this test on other origins load the tag from a real worker (its own embedded broker, whose
event-time clock the pages' current times may move) and send views and cart changes with a
publishable key; the events arrive in the anonymous user's profile. A page from an origin not in
PERSONA_COLLECT_ORIGINS is refused, and its events never arrive."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from streams.broker import free_port
from tests.conftest import SCOPES, SECRET, Worker, http, wait_until, worker_of_its_own
from tests.ui import browser

pytestmark = pytest.mark.integration

TAG_KEY = "pk-browser-tag-kkkkkkkkkkkk"  # events:collect only
SHOPPER = "shopper-tag-1"

SHOP = """<!doctype html><html><head><title>Shop</title></head><body>
<script src="{persona}/v1/sdk.js"></script>
<script>
persona.init({{key: "{key}", endpoint: "{persona}"}});
persona.product("85123A", {{price: 2.55, currency: "GBP"}});
persona.addToCart("85123A", 2);
document.body.setAttribute("data-anon", persona.anonymousId());
persona.flush().then(function (sent) {{
  document.body.setAttribute("data-sent", JSON.stringify(sent));
  persona.identify("{shopper}");
  return persona.flush();
}}).then(function (sent) {{
  document.body.setAttribute("data-identified", JSON.stringify(sent));
}});
</script></body></html>"""

CONSENT = """<!doctype html><html><head><title>Shop</title></head><body>
<script src="{persona}/v1/sdk.js"></script>
<script>
persona.init({{key: "{key}", endpoint: "{persona}", consentRequired: true}});
persona.search("tea lights");
persona.flush().then(function (sent) {{
  var stored = localStorage.getItem("persona_aid") + "|" + document.cookie;
  document.body.setAttribute("data-before", JSON.stringify([sent, stored]));
  return persona.consent(true);
}}).then(function (sent) {{
  document.body.setAttribute("data-anon", localStorage.getItem("persona_aid"));
  document.body.setAttribute("data-sent", JSON.stringify(sent));
}});
</script></body></html>"""


AUTO = """<!doctype html><html><head><title>Shop</title></head><body>
<script src="{persona}/v1/sdk.js" data-key="{key}"></script>
<script>
persona.category("Candles");
document.body.setAttribute("data-anon", persona.anonymousId());
persona.flush().then(function (sent) {{
  document.body.setAttribute("data-sent", JSON.stringify(sent));
}});
</script></body></html>"""


@dataclass
class Shop:
    persona: Worker
    allowed: str  # the listed origin's page base URL
    other: str  # a page base URL on an origin that is not listed


def _pages(persona: str) -> dict[str, bytes]:
    fields = {"persona": persona, "key": TAG_KEY, "shopper": SHOPPER}
    pages = {"/": SHOP, "/consent": CONSENT, "/auto": AUTO}
    return {path: page.format(**fields).encode() for path, page in pages.items()}


def _serve(port: int, pages: dict[str, bytes]) -> ThreadingHTTPServer:
    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path.split("?")[0])
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    browser.chromium()  # skip before starting anything where there is no browser
    root: Path = tmp_path_factory.mktemp("collect")
    allowed_port, other_port = free_port(), free_port()
    env = {
        "PERSONA_API_KEYS": f"test:{SECRET}:{SCOPES};tag:{TAG_KEY}:events:collect",
        "PERSONA_COLLECT_ORIGINS": f"http://127.0.0.1:{allowed_port}",
    }
    with worker_of_its_own(root, env) as worker:  # stopped also when the warm-up fails
        _warm_up(worker)
        servers = [_serve(port, _pages(worker.base)) for port in (allowed_port, other_port)]
        try:
            yield Shop(worker, f"http://127.0.0.1:{allowed_port}", f"http://127.0.0.1:{other_port}")
        finally:
            for server in servers:
                server.shutdown()


def _warm_up(worker: Worker) -> None:
    """Events through /v1/collect folded before any page runs: the first produce and the first
    record of a fresh partition may be slow on a busy machine, a page's request should not be."""

    def sent() -> bool:
        event = {"event_id": f"warm-{time.monotonic_ns()}", "type": "page_view"}
        event |= {"user_id": "warm-up", "ts": int(time.time() * 1000)}
        status, _, _ = http("POST", worker.base + "/v1/collect", [event], key=TAG_KEY, timeout=30)
        return status == 202

    wait_until(sent, timeout=90, interval=1.0, what="a first POST /v1/collect answered 202")

    def folded() -> bool:
        return http("GET", worker.base + "/v1/users/warm-up/profile")[0] == 200

    wait_until(folded, timeout=90, what="the warm-up event folded")


def _attribute(dom: str, name: str) -> str:
    found = re.search(rf'data-{name}="([^"]*)"', dom)
    assert found, f"the page set no data-{name}: {dom[-1500:]}"
    return found.group(1).replace("&quot;", '"')


def _profile(shop: Shop, user: str) -> tuple[int, dict[str, object]]:
    status, _, body = http("GET", f"{shop.persona.base}/v1/users/{user}/profile")
    return status, json.loads(body) if status == 200 else {}


def _events(shop: Shop, user: str) -> dict[str, int]:
    status, profile = _profile(shop, user)
    return dict(profile["events"]) if status == 200 else {}  # type: ignore[call-overload]


def _refused_origins(shop: Shop) -> float:
    _, _, body = http("GET", shop.persona.base + "/metrics", key=None)
    found = re.search(r'persona_collect_refused_total\{reason="origin"\} (\S+)', body.decode())
    return float(found.group(1)) if found else 0.0


def test_a_listed_origin_sends_a_view_and_a_cart_change_to_the_profile(shop: Shop) -> None:
    """The page's views and cart change, then persona.identify: the anonymous history merges
    into the shopper (issue 19 item 2), so the shopper's profile holds it and the anonymous
    profile is gone."""
    before = _events(shop, SHOPPER)
    dom = browser.dom(shop.allowed + "/", budget_ms=8000)
    anon = _attribute(dom, "anon")
    assert anon.startswith("anon-") and _attribute(dom, "sent") == "[202]"
    assert _attribute(dom, "identified") == "[202]"

    def merged() -> dict[str, int]:
        events = _events(shop, SHOPPER)
        return events if events.get("add_to_cart", 0) > before.get("add_to_cart", 0) else {}

    events = wait_until(merged, timeout=90, what="the tag's events in the shopper's profile")
    for kind in ("page_view", "product_view", "add_to_cart", "identify"):
        assert events.get(kind, 0) == before.get(kind, 0) + 1, kind
    assert _profile(shop, SHOPPER)[1]["cart"] == {"85123A": 2 * (1 + before.get("add_to_cart", 0))}
    wait_until(lambda: _profile(shop, anon)[0] == 404, 90, what="the anonymous profile merged away")


def test_a_page_from_another_origin_is_refused(shop: Shop) -> None:
    refused_before = _refused_origins(shop)
    dom = browser.dom(shop.other + "/", budget_ms=8000)
    anon = _attribute(dom, "anon")
    assert _attribute(dom, "sent") == '["error"]'  # no CORS headers: the page cannot read it
    assert _refused_origins(shop) >= refused_before + 1  # refused at Persona, not only hidden
    # a later page from the listed origin arrives (merged into the shopper it identifies as),
    # the refused one never was produced
    carts = _events(shop, SHOPPER).get("add_to_cart", 0)
    browser.dom(shop.allowed + "/", budget_ms=8000)
    wait_until(
        lambda: _events(shop, SHOPPER).get("add_to_cart", 0) > carts, 90, what="the allowed events"
    )
    assert _profile(shop, anon)[0] == 404


def test_nothing_is_stored_or_sent_before_consent(shop: Shop) -> None:
    dom = browser.dom(shop.allowed + "/consent", budget_ms=8000)
    assert _attribute(dom, "before") == '[[],"null|"]'  # nothing sent, no id stored
    anon = _attribute(dom, "anon")
    assert anon.startswith("anon-") and _attribute(dom, "sent") == "[202]"

    def arrived() -> dict[str, int]:
        events = _events(shop, anon)
        return events if events.get("search") else {}

    events = wait_until(arrived, timeout=90, what="the events held until consent")
    assert events == {"page_view": 1, "search": 1}


def test_the_script_tag_alone_sets_the_tag_up(shop: Shop) -> None:
    """`data-key` on the script tag: the endpoint is the script's own origin (Persona's, not the
    page's), and init sends the page view."""
    dom = browser.dom(shop.allowed + "/auto", budget_ms=8000)
    anon = _attribute(dom, "anon")
    assert _attribute(dom, "sent") == "[202]"

    def arrived() -> dict[str, int]:
        events = _events(shop, anon)
        return events if events.get("category_view") else {}

    events = wait_until(arrived, timeout=90, what="the auto-initialized tag's events")
    assert events == {"page_view": 1, "category_view": 1}
