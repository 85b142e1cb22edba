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
from urllib.parse import parse_qs, urlsplit

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


# The page records each console warning and any error the tag lets out (thrown or rejected).
WATCH = """<script>
var warnings = [], escaped = [];
console.warn = function () {{ warnings.push(Array.prototype.join.call(arguments, " ")); }};
window.addEventListener("error", function (e) {{ escaped.push(String(e.message)); }});
window.addEventListener("unhandledrejection", function (e) {{ escaped.push(String(e.reason)); }});
function report(sent) {{
  document.body.setAttribute("data-sent", JSON.stringify(sent));
  document.body.setAttribute("data-warnings", JSON.stringify(warnings));
  document.body.setAttribute("data-escaped", JSON.stringify(escaped));
}}
</script>"""

REFUSED = (
    """<!doctype html><html><head><title>Shop</title></head><body>"""
    + WATCH
    + """<script src="{persona}/v1/sdk.js"></script>
<script>
persona.init({{key: "{key}", endpoint: "{persona}", pageView: false}});
persona.product("85123A");
persona.track("not_a_type", {{note: "x"}});
persona.purchase("85123A", 1);
persona.flush().then(report, function (e) {{ escaped.push("flush: " + e); report(null); }});
</script></body></html>"""
)

# Answers the tag cannot trust, from this test's own server (the page's origin): each key below
# gets one (_serve); the tag must warn about a readable refusal list only, bounded, never throw.
HOSTILE_KEYS = ("not-json", "errors-not-a-list", "odd-errors", "many-long", "controls", "none")
HOSTILE = (
    """<!doctype html><html><head><title>Shop</title></head><body>"""
    + WATCH
    + """<script src="{persona}/v1/sdk.js"></script>
<script>
var keys = {keys}, sent = [];
function next(i) {{
  if (i >= keys.length) return Promise.resolve(sent);
  persona.init({{key: keys[i], endpoint: location.origin, pageView: false}});
  persona.track("page_view", {{path: "/"}});
  persona.track("product_view", {{item_id: "a"}});
  return persona.flush().then(function (s) {{ sent.push(s[0]); return next(i + 1); }});
}}
next(0).then(report, function (e) {{ escaped.push("flush: " + e); report(null); }});
</script></body></html>"""
)


# Whole batches refused (the tag said nothing): key -> (status, body) from the test's server.
WHOLE = {
    "too-large": (413, {"title": "Payload Too Large", "detail": "the body is over 1 MiB"}),
    "slow-down": (429, {"title": "Too Many Requests", "detail": "d" * 5000}),
    "no-origin": (403, {"title": "Forbidden"}),
    "not-json-400": (400, "<html>bad</html>"),
    "odd-problem": (400, {"title": ["x"], "detail": {"y": 1}}),
}


def _hostile_answer(key: str) -> bytes:
    """The body the test's server answers the tag's POST with, per key (HOSTILE_KEYS)."""
    if key == "not-json":
        return b"{oops"
    if key == "errors-not-a-list":
        return json.dumps({"accepted": 0, "rejected": 2, "errors": "all of them"}).encode()
    if key == "odd-errors":  # indexes and reasons of every wrong kind
        odd = [{"index": 0, "reason": "a real one"}, None, 7, {"index": "0", "reason": {"x": 1}}]
        odd += [{"index": -1}, {"index": 99}, {"index": 1.5, "reason": None}]
        return json.dumps({"errors": odd}).encode()
    if key == "many-long":
        errors = [{"index": n % 2, "reason": "r" * 800} for n in range(1000)]
        return json.dumps({"accepted": 0, "rejected": 1000, "errors": errors}).encode()
    if key == "controls":  # a reason that would write its own console lines, colours, RTL text
        reason = "bad\n\rpersona: all events accepted\x1b[31m\u202eevil\u2066\x00\x7f\x85end"
        return json.dumps({"errors": [{"index": 0, "reason": reason}]}).encode()
    return json.dumps({"accepted": 2, "rejected": 0, "errors": []}).encode()


@dataclass
class Shop:
    persona: Worker
    allowed: str  # the listed origin's page base URL
    other: str  # a page base URL on an origin that is not listed


def _pages(persona: str) -> dict[str, bytes]:
    fields = {"persona": persona, "key": TAG_KEY, "shopper": SHOPPER}
    pages = {"/": SHOP, "/consent": CONSENT, "/auto": AUTO, "/refused": REFUSED}
    found = {path: page.format(**fields).encode() for path, page in pages.items()}
    found["/hostile"] = HOSTILE.format(persona=persona, keys=json.dumps(HOSTILE_KEYS)).encode()
    found["/whole"] = HOSTILE.format(persona=persona, keys=json.dumps(list(WHOLE))).encode()
    return found


def _serve(port: int, pages: dict[str, bytes]) -> ThreadingHTTPServer:
    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path.split("?")[0])
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body or b"")

        def do_POST(self) -> None:  # the hostile page's /v1/collect (same origin)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            key = parse_qs(urlsplit(self.path).query).get("key", [""])[0]
            status, body = 202, _hostile_answer(key)
            if key in WHOLE:
                status, problem = WHOLE[key]
                text = problem if isinstance(problem, str) else json.dumps(problem)
                body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

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


def test_the_tag_warns_once_per_answer_naming_the_refused_events(shop: Shop) -> None:
    """The tag ignored /v1/collect's per-event refusals: a shop whose events were refused (an
    unknown type, a purchase its key may not send) saw nothing in the console. One warning per
    answer now names them (type, index, reason); the accepted view still arrives."""
    dom = browser.dom(shop.allowed + "/refused", budget_ms=8000)
    assert _attribute(dom, "sent") == "[202]"
    assert json.loads(_attribute(dom, "escaped")) == []
    (warning,) = json.loads(_attribute(dom, "warnings"))
    assert "refused 2 of 3 events" in warning, warning
    assert "not_a_type (#1)" in warning and "purchase (#2)" in warning, warning
    assert "product_view (#0)" not in warning


def test_the_tag_reads_hostile_answers_without_throwing_and_warns_within_bounds(
    shop: Shop,
) -> None:
    """Answers that are not JSON, whose errors are no list, whose entries are of every wrong
    kind, or a thousand refusals of 800 characters each: the tag never throws, warns only
    where there is a refusal list, once per answer, and its warning stays short (5 refusals
    named, each reason cut, then how many more)."""
    dom = browser.dom(shop.allowed + "/hostile", budget_ms=8000)
    assert _attribute(dom, "sent") == "[202,202,202,202,202,202]"
    assert json.loads(_attribute(dom, "escaped")) == []
    odd, many, controls = json.loads(_attribute(dom, "warnings"))
    # no line breaks, escapes, bidi controls or NULs from the answer reach the console
    cleaned = "page_view (#0): bad??persona: all events accepted?[31m?evil????end"
    assert cleaned in controls, controls
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]", controls)
    assert "refused 7 of 2 events" in odd and odd.endswith("and 2 more"), odd
    assert "page_view (#0): a real one" in odd  # the one entry whose index names an event
    assert odd.count("(#") == 1
    assert "refused 1000 of 2 events" in many and many.endswith("and 995 more"), many[-200:]
    assert len(many) < 1_500


def test_the_tag_warns_once_when_the_whole_batch_is_refused(shop: Shop) -> None:
    """A 413, 429, 403 or 400 refusing the whole batch said nothing in the console (only a
    202's per-event refusals were warned about): one warning per answer now gives the status
    and the problem's title and detail, bounded, whatever the body; the tag never throws."""
    dom = browser.dom(shop.allowed + "/whole", budget_ms=8000)
    assert _attribute(dom, "sent") == "[413,429,403,400,400]"
    assert json.loads(_attribute(dom, "escaped")) == []
    large, slow, forbidden, not_json, odd = json.loads(_attribute(dom, "warnings"))
    assert "refused all 2 events" in large and "413" in large, large
    assert "Payload Too Large" in large and "the body is over 1 MiB" in large, large
    assert "429" in slow and "Too Many Requests" in slow and len(slow) < 500, slow
    assert "403" in forbidden and "Forbidden" in forbidden, forbidden
    assert "400" in not_json and "<html>" not in not_json, not_json
    assert "400" in odd and "[object" not in odd, odd
