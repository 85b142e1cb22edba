"""The click redirect `GET /c/{token}` (issue 18 item 5; tokens: engine/clicks.py).

No API key: a mail client or an ad's landing follows the link. A good token answers 302 to the
item's URL in the catalog (never a URL from the request: no open redirect) and records a `click`
event for the token's user (props `block`, `variant`), produced like `POST /v1/events`' events;
a link followed again within its minute is one click (the fold ignores the repeated event id, and
the dashboard's A/B panel counts it once: engine.clicks.RecentClicks); a link older than
engine.clicks.MAX_AGE_DAYS still redirects but records nothing, and so does a
HEAD (a link checker's or mail scanner's probe, not a click). `Location` is ASCII: the URL's
spaces and non-ASCII characters are percent-encoded. A token that does not verify is a 404
problem and counts as a failed authentication of the client address (api/limits.py: repeated
ones are answered 429), so tokens cannot be guessed at speed. An item gone from the catalog
redirects to PERSONA_FEED_LINK (the shop) when set, else 404; so does an item whose stored URL has
userinfo (`https://shop@evil.example/p` goes to evil.example; the catalog refuses such URLs, one
stored before it did is not followed), and no click is recorded for either.
"""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass, field

from aiohttp import web

from api.limits import THROTTLE, ServingOptions
from api.observability import TELEMETRY
from api.shared import CONTENT, problem
from engine.catalog import userinfo_problem
from engine.clicks import (
    MINUTE_MS,
    InvalidToken,
    RecentClicks,
    click_event,
    click_key,
    is_fresh,
    read_token,
)
from engine.events import validate
from engine.utm import with_utm

CLICK_PATH = "/c/{token}"
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@dataclass
class Clicks:
    key: bytes | None = field(repr=False)  # None: no cluster secret, no click links
    shop_url: str | None  # where a click on an item gone from the catalog lands
    utm: str = ""  # PERSONA_UTM on the target (engine/utm.py)
    counts: dict[str, int] = field(default_factory=dict)
    recent: RecentClicks = field(default_factory=RecentClicks)  # the A/B panel's repeats

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


CLICKS = web.AppKey("clicks", Clicks)


async def get_click(request: web.Request) -> web.StreamResponse:
    clicks = request.app[CLICKS]
    if clicks.key is None:
        return problem(404, "Not Found", "click links need PERSONA_CLUSTER_SECRET")
    now = int(time.time() * 1000)
    try:
        click = read_token(clicks.key, request.match_info["token"])
    except InvalidToken as exc:
        clicks.count("invalid")
        unknown = problem(404, "Unknown link", str(exc))
        return request.app[THROTTLE].refusal(request.remote, unknown)
    product = request.app[CONTENT].state.product(click.item_id)
    unsafe = userinfo_problem(product.url) if product is not None else None
    if unsafe:  # stored before the catalog refused such URLs, or by another producer
        clicks.count("refused")
        if clicks.shop_url is None:
            return problem(404, "Link refused", f"the item's URL {unsafe}: not followed")
        return web.Response(status=302, headers={"Location": _ascii(clicks.shop_url), **NO_STORE})
    target = product.url if product is not None else clicks.shop_url
    if product is not None:
        target = with_utm(product.url, clicks.utm, click.block, click.variant)
    if target is None:
        clicks.count("gone")
        return problem(404, "Item not found", "the item is no longer in the catalog")
    if request.method == "HEAD":  # a mail scanner checking the link, not a person clicking
        return web.Response(status=302, headers={"Location": _ascii(target), **NO_STORE})
    if is_fresh(click, now):
        event = validate(click_event(click, now))
        await request.app[CONTENT].state.produce([event])
        clicks.count("recorded")
        if clicks.recent.first(event.event_id, now // MINUTE_MS):  # the fold keeps one too
            request.app[TELEMETRY].count_click(click.block, click.variant)  # the dashboard's A/B
    else:
        clicks.count("expired")
    return web.Response(status=302, headers={"Location": _ascii(target), **NO_STORE})


# every printable ASCII character but the space: `_ascii` leaves the URL's structure alone
_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))


def _ascii(url: str) -> str:
    """`url` with its spaces and non-ASCII characters percent-encoded (UTF-8), for `Location`,
    where HTTP allows ASCII only; every other character stays as the catalog wrote it (encoding
    a backslash, say, would change which host a browser reads)."""
    return urllib.parse.quote(url, safe=_PRINTABLE)


def metrics_lines(clicks: Clicks) -> list[str]:
    lines = [
        "# HELP persona_clicks_total Click redirects: recorded, expired, invalid, gone, "
        "refused (the item's URL has a user name: not followed).",
        "# TYPE persona_clicks_total counter",
    ]
    for outcome in ("recorded", "expired", "invalid", "gone", "refused"):
        lines.append(f'persona_clicks_total{{outcome="{outcome}"}} {clicks.counts.get(outcome, 0)}')
    return lines


def register(app: web.Application, options: ServingOptions) -> None:
    key = click_key(options.cluster_secret) if options.cluster_secret else None
    app[CLICKS] = Clicks(key, options.feed_link, options.utm)
    app.router.add_get(CLICK_PATH, get_click)
    app[TELEMETRY].text_sources.append(lambda: metrics_lines(app[CLICKS]))
