"""Browser collection: `POST /v1/collect` for publishable keys and `GET /v1/sdk.js`, the tag.

- Keys: the request needs the `events:collect` scope, sent as `Authorization: Bearer` or as
  `?key=` (`navigator.sendBeacon` cannot set headers); what such a key may send is
  engine/collect.py's rule (clickstream and cart events, `identify`, consent withdrawals;
  `purchase` only with `events:collect-purchase`). Bodies are those of `POST /v1/events` (a JSON
  array or NDJSON, also as `text/plain`, which is what a beacon sends), at most `MAX_BODY` bytes and
  `MAX_EVENTS` events, validated and answered exactly like `/v1/events` (202 with per-event errors).
  Each event id is stored marked (`collect:<id>`, engine/collect.py): a page cannot spend an id
  the shop's server gives its own events.
- Origins: a request whose `Origin` is not in `PERSONA_COLLECT_ORIGINS` is answered 403 with no
  CORS headers and nothing is produced; a listed origin gets `Access-Control-Allow-Origin` on every
  answer (errors too: a body that does not inflate, a broker that takes nothing, a 500) and its
  preflight (`OPTIONS`) is answered 204. Every answer carries `Vary: Origin` (each depends on
  it), so a shared cache keeps one origin's answers from another's. A request without
  `Origin` (not from a browser) passes to the key check: the origin list keeps other sites' pages
  out, the key's scope is what bounds a script that forges headers.
- Rate: every request to /v1/collect (preflights and refusals included) takes a token from a
  bucket per client address (`PERSONA_COLLECT_PER_MINUTE`, refilling at that rate; at most
  `api.limits.MAX_ADDRESSES` addresses tracked, the least recent evicted): over it, 429 with
  `Retry-After`. Per-key limits (`PERSONA_RATE_LIMITS`) apply on top, as on every route.
- The tag (`api/sdk/persona.js`, beside the UI's assets but not among them: it is served to shops'
  pages, with its own caching, not to Persona's) is answered with an ETag (its SHA-256) and
  `Cache-Control` for a day; `?v=<version>` (the ETag's value, also in `X-Persona-Sdk-Version`)
  pins it and is cached for a year as immutable.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import hdrs, web
from multidict import CIMultiDict

from api.audit import refused
from api.event_routes import accept_events, read_events, refuse_when_full
from api.gate import caller, error_answer
from api.limits import AuthThrottle, ServingOptions
from api.observability import TELEMETRY
from api.shared import Handler, bad_param, problem, single
from engine.collect import (
    COLLECT_SCOPE,
    MAX_EVENTS,
    PURCHASE_SCOPE,
    collect_refusal,
    collected,
)
from engine.collect import MAX_BYTES as MAX_BODY
from engine.events import Event
from engine.params import InvalidParam

COLLECT_PATH = "/v1/collect"
SDK_PATH = "/v1/sdk.js"
SDK_FILE = Path(__file__).parent / "sdk" / "persona.js"
PREFLIGHT = {
    "Access-Control-Allow-Methods": "POST",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}
REVALIDATE = "public, max-age=86400"  # GET /v1/sdk.js
IMMUTABLE = "public, max-age=31536000, immutable"  # GET /v1/sdk.js?v=<its version>


@dataclass(frozen=True)
class Sdk:
    body: bytes
    version: str  # the first 16 hex digits of the body's SHA-256

    @classmethod
    def load(cls, path: Path = SDK_FILE) -> Sdk:
        body = path.read_bytes()
        return cls(body, hashlib.sha256(body).hexdigest()[:16])

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


@dataclass
class Collect:
    origins: frozenset[str]
    addresses: AuthThrottle  # a token bucket per client address (one token per request)
    sdk: Sdk
    identify_secret: str | None = field(default=None, repr=False)  # PERSONA_IDENTIFY_SECRET
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n


COLLECT = web.AppKey("collect", Collect)


@web.middleware
async def collect_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Origin check, per-address limit, preflight and CORS headers of /v1/collect (module doc);
    before the auth middleware, which it hands a `?key=` as a bearer."""
    if request.path != COLLECT_PATH:
        return await handler(request)
    collect = request.app[COLLECT]
    origin = request.headers.get("Origin")
    refusal = _refusal(request, collect, origin)
    if refusal is not None:
        refused(request.app, request.remote, refusal.status, "", request.method, request.path)
        return _vary(refusal) if refusal.status == 403 else _cors(refusal, origin)
    if request.method == "OPTIONS":
        return _cors(web.Response(status=204, headers=PREFLIGHT), origin)
    try:
        keyed = _with_query_key(request)
    except InvalidParam as exc:  # `?key=` twice
        return _cors(bad_param(exc), origin)
    try:
        response = await handler(keyed)
    except Exception as exc:  # a 405, an unreadable body, a broker away: as api.gate answers
        response = error_answer(keyed, exc)  # them, with CORS (the page reads the problem)
    return _cors(response, origin)


QUERY_KEY = web.RequestKey("collect_query_key", bool)  # the request's key came as ?key=
PUBLISHABLE_SCOPES = frozenset({COLLECT_SCOPE, PURCHASE_SCOPE})


def _refusal(request: web.Request, collect: Collect, origin: str | None) -> web.Response | None:
    wait = collect.addresses.fail(request.remote)  # every request, origin refusals too
    if origin is not None and origin.lower() not in collect.origins:
        collect.count("refused_origin")
        return problem(
            403, "Origin not allowed", "this page's origin is not in PERSONA_COLLECT_ORIGINS"
        )
    if not wait:
        return None
    collect.count("limited")
    limited = problem(429, "Too Many Requests", "too many requests from this address")
    limited.headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return limited


def _cors(response: web.StreamResponse, origin: str | None) -> web.StreamResponse:
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
    return _vary(response)


def _vary(response: web.StreamResponse) -> web.StreamResponse:
    """`Vary: Origin` (beside any other Vary) on every answer of /v1/collect: each depends on the
    request's Origin (a 403, the CORS header or its absence), so a shared cache must not give one
    origin's answer to another, nor a request without Origin's to a page."""
    vary = response.headers.get(hdrs.VARY)
    if vary is None:
        response.headers[hdrs.VARY] = "Origin"
    elif not {t.strip().lower() for t in vary.split(",")} & {"origin", "*"}:
        response.headers[hdrs.VARY] = f"{vary}, Origin"
    return response


def _with_query_key(request: web.Request) -> web.Request:
    """`request` with `?key=` as its `Authorization: Bearer` (a header, when sent, wins);
    InvalidParam for a key given twice."""
    key = single(request.query, "key")
    if not key or "Authorization" in request.headers:
        return request
    headers = CIMultiDict(request.headers)
    headers["Authorization"] = f"Bearer {key}"
    cloned = request.clone(headers=headers)
    cloned[QUERY_KEY] = True
    return cloned


def _beyond_collect(request: web.Request) -> web.Response | None:
    """A 403 for a key sent in the URL that holds more than the publishable scopes: a URL ends up
    in pages, browser histories and proxy logs, so a key that can write events for any user,
    read content or administer must never travel there (it is refused even where it would
    work, so the mistake shows at once instead of leaking quietly)."""
    if not request.get(QUERY_KEY):
        return None
    extra = caller(request)[1] - PUBLISHABLE_SCOPES
    if not extra:
        return None
    return problem(
        403,
        "Key not publishable",
        "a key sent as ?key= may hold only events:collect and events:collect-purchase; this "
        f"one also holds {', '.join(sorted(extra))}: keep it on your server and make a "
        "publishable key for pages",
    )


async def post_collect(request: web.Request) -> web.Response:
    refusal = _beyond_collect(request) or refuse_when_full(request)
    if refusal is not None:
        return refusal
    items = await read_events(request, MAX_EVENTS, MAX_BODY)
    if isinstance(items, web.Response):
        return items
    purchases = PURCHASE_SCOPE in caller(request)[1]
    secret = request.app[COLLECT].identify_secret

    def policy(event: Event) -> str | None:
        return collect_refusal(event, purchases, secret)

    return await accept_events(request, items, policy, collected)


async def preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=PREFLIGHT)  # answered by the middleware before


async def get_sdk(request: web.Request) -> web.Response:
    sdk = request.app[COLLECT].sdk
    try:
        pinned = single(request.query, "v") == sdk.version
    except InvalidParam as exc:
        return bad_param(exc)
    headers = {
        "ETag": sdk.etag,
        "Cache-Control": IMMUTABLE if pinned else REVALIDATE,
        "X-Persona-Sdk-Version": sdk.version,
        "X-Content-Type-Options": "nosniff",
    }
    if sdk.etag in _etags(request.headers.get("If-None-Match", "")):
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=sdk.body, headers=headers, content_type="text/javascript", charset="utf-8"
    )


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def register(app: web.Application, options: ServingOptions) -> None:
    """The routes (api/app.py lists `collect_middleware` just before the auth middleware)."""
    limiter = AuthThrottle(options.collect_per_minute)
    app[COLLECT] = Collect(
        frozenset(options.collect_origins), limiter, Sdk.load(), options.identify_secret
    )
    app.router.add_post(COLLECT_PATH, post_collect)
    app.router.add_route("OPTIONS", COLLECT_PATH, preflight)
    app.router.add_get(SDK_PATH, get_sdk)
    app[TELEMETRY].text_sources.append(lambda: metrics_lines(app))


def metrics_lines(app: web.Application) -> list[str]:
    counts = app[COLLECT].counts
    lines = [
        "# HELP persona_collect_refused_total POST /v1/collect requests refused before the key "
        "check: origin (not in PERSONA_COLLECT_ORIGINS) or limited (per client address).",
        "# TYPE persona_collect_refused_total counter",
    ]
    for reason, what in (("origin", "refused_origin"), ("limited", "limited")):
        lines.append(f'persona_collect_refused_total{{reason="{reason}"}} {counts.get(what, 0)}')
    return lines
