"""Limits of the HTTP API: per-key rate limits, request timeouts, the audit log of admin actions.

- Rate limits (`PERSONA_RATE_LIMITS` = `name:requests_per_second;...`): a token bucket per key name
  per process, holding at most one second of requests (burst = the rate, at least 1). A request
  costs one token, except `POST /v1/blocks:batch` and `POST /v1/render`, which cost one per distinct
  recipient (`user_ids`, at most `MAX_USERS`). A body the handler refuses for its shape (the route's
  `parse`, registered with `shape_check`: too many ids, a bad id, a bad `format`, parameter or
  `deadline_ms`, not a JSON object) is left to the handler's 400 and costs nothing: a key in debt
  learns what is wrong with its request, not to wait 100 s. A request costing more than the burst
  passes when the bucket is full and leaves it in debt (a 1,000-recipient batch at 100/s passes,
  then the key waits 10 s), so every key's average stays its rate and a max-size request can always
  pass eventually. Over the limit: 429 with `Retry-After` (whole seconds until enough tokens are
  there). Keys without an entry are not limited. A request let in by a signed hop (api/hops.py) is
  not charged: the process the sender called charged it. Limits are per process: with N API
  processes behind one port a key can get up to N times its rate.
- Failed authentication (`AuthThrottle`): every 401 (no key or an unknown key; on the UI pages
  only a key that was sent and is wrong) takes a token from a bucket per client address (the
  connection's peer address, never `X-Forwarded-For`; IPv6 per /64): `auth_failures_per_minute`
  (30) are allowed, refilling at that rate, then such requests are answered 429 with
  `Retry-After` until a token is back. A valid key is always served, throttled address or not (a
  shop sharing a NAT or a proxy with an attacker is never locked out; guessing a key is made
  infeasible by the 24-character minimum, not by the throttle). At most `MAX_ADDRESSES` addresses
  are tracked, the least recently failing evicted first.
- Timeouts: a request that takes longer than `request_timeout` seconds answers 503 with
  `Retry-After: 1`; the time counts its body's arrival (a rate-limited key's batch body is read
  to count recipients). Streamed feeds are exempt: api/feeds.py bounds them itself.
- Feed streams (`FeedStreams`): a key streams at most `feed_streams_per_key` feed responses at
  once (per process, whatever its rate limit); one more is answered 429 with
  `Retry-After: FEED_RETRY_AFTER`, counted with the rate-limit refusals. api/feeds.py takes a
  slot before it starts a response and gives it back however the response ends, and stops a
  response (closing its connection) after `feed_timeout` seconds.
- Body sizes: `client_max_size` of the application (`MAX_BODY`, 10 MiB) bounds every body; routes
  bound their own item counts (events, user ids, template size).
- Audit: admin handlers record what they do with `api.audit.audit` (one JSON line per action on the
  `persona.audit` logger, which the process wiring sends to `<data_dir>/audit.log`); this module
  counts every request refused with 401, 403 or 429 on any route that needs a key
  (`api.audit.Refusals`: `denied` and `denied_repeats` lines, bounded per address and minute)
  and writes a record for every model change (POST/PUT/DELETE under /v1/models) with its
  outcome and status.
- Request logging on the hot content routes is at debug level only (metrics count every request).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from api.audit import DETAILS, REFUSED_STATUSES, audit, refused
from api.audit import register as register_audit
from api.bodies import BadRequest, read_body, recipient_ids
from api.shared import HOPPED, STARTED
from engine.audit import FAILED, OK
from engine.clicks import logged_path
from engine.settings import parse_rate_limits

log = logging.getLogger("persona.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNTIMED_PREFIXES = ("/v1/feeds/",)
MAX_USERS = 1000  # user ids per batch or render request
MAX_TEMPLATE = 256 * 1024  # characters of a sender template (POST /v1/render)
PER_RECIPIENT = frozenset({"/v1/blocks:batch", "/v1/render"})  # cost one token per user id
# path -> the route's body check: its recipients, or BadRequest when its handler answers 400
SHAPES: dict[str, Callable[[Any], list[str]]] = {}
MAX_ADDRESSES = 10_000  # client addresses the failed-authentication throttle tracks
# Retry-After of a key over its feed streams: a feed takes about a minute per million products
# to make (benchmarks/feed_rate.py), and the ad platforms that fetch feeds retry on their own
FEED_RETRY_AFTER = 10


@dataclass(frozen=True)
class ServingOptions:
    rate_limits: dict[str, float] = field(default_factory=dict)  # key name -> requests/s
    request_timeout: float = 10.0  # seconds
    feed_timeout: float = 300.0  # seconds of one feed response (api/feeds.py)
    feed_streams_per_key: int = 2  # feed responses one key streams at once
    feed_title: str = "Persona product feed"  # the ad feeds' channel (api/feeds.py)
    feed_link: str | None = None  # PERSONA_FEED_LINK (None: the first product's origin)
    max_clock_skew_ms: int = 300_000  # POST /v1/events refuses events further ahead as future
    auth_failures_per_minute: float = 30.0  # failed authentications per client address
    cluster_secret: str | None = field(default=None, repr=False)  # signs hops (api/hops.py)
    # POST /v1/collect (api/collect.py): the origins allowed, requests per minute per address
    collect_origins: tuple[str, ...] = ()
    collect_per_minute: float = 600.0
    identify_secret: str | None = field(default=None, repr=False)  # PERSONA_IDENTIFY_SECRET
    utm: str = ""  # PERSONA_UTM: campaign parameters on the click redirect's target

    @classmethod
    def from_settings(cls, rate_limits: str | None, request_timeout: float) -> ServingOptions:
        return cls(parse_rate_limits(rate_limits or ""), request_timeout)


class TokenBucket:
    """`rate` tokens per second, at most `burst` banked. Not thread-safe (one event loop)."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self, now: float | None = None, cost: float = 1.0) -> float:
        """0.0 when a request costing `cost` tokens may pass (and takes them), else seconds
        until it could. A cost over `burst` passes on a full bucket and leaves it in debt."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        needed = min(cost, self.burst)
        if self.tokens >= needed:
            self.tokens -= cost
            return 0.0
        return (needed - self.tokens) / self.rate


class RateLimiter:
    def __init__(self, limits: dict[str, float]) -> None:
        self.buckets = {name: TokenBucket(rate) for name, rate in limits.items()}
        self.limited = 0  # requests answered 429

    def check(self, key_name: str | None, cost: int = 1) -> float:
        bucket = self.buckets.get(key_name) if key_name else None
        if bucket is None:
            return 0.0
        wait = bucket.take(cost=cost)
        if wait:
            self.limited += 1
        return wait


class FeedStreams:
    """The feed responses each key is streaming in this process: at most `per_key` at once."""

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self.streams: dict[str, int] = {}  # key name -> responses under way (none: absent)
        self.timeouts = 0  # responses stopped at the deadline

    def __len__(self) -> int:
        return sum(self.streams.values())

    def enter(self, key_name: str) -> bool:
        """Take a slot for `key_name`; False when it has `per_key` streams already."""
        count = self.streams.get(key_name, 0)
        if count >= self.per_key:
            return False
        self.streams[key_name] = count + 1
        return True

    def leave(self, key_name: str) -> None:
        """Give back a slot `enter` gave."""
        count = self.streams.get(key_name, 0) - 1
        if count > 0:
            self.streams[key_name] = count
        else:
            self.streams.pop(key_name, None)


def client_of(remote: str | None) -> str:
    """The throttle's key for a peer address: the address itself, an IPv6 one by its /64 (one
    host usually holds a whole /64), "" when the transport has none (a Unix socket)."""
    if not remote:
        return ""
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class AuthThrottle:
    """Failed authentications per client address (module doc): a `TokenBucket` of
    `per_minute` tokens per address, refilled at `per_minute` a minute; at most
    `max_addresses` buckets, the least recently failing evicted first."""

    def __init__(self, per_minute: float = 30.0, max_addresses: int = MAX_ADDRESSES) -> None:
        self.per_minute = per_minute
        self.max_addresses = max_addresses
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.throttled = 0  # failed authentications answered 429

    def __len__(self) -> int:
        return len(self.buckets)

    def fail(self, remote: str | None, now: float | None = None) -> float:
        """Count one failed authentication from `remote`: 0.0 while it is within the allowance
        (answer 401), else the seconds until the next one is (answer 429)."""
        client = client_of(remote)
        bucket = self.buckets.get(client)
        if bucket is None:
            while len(self.buckets) >= self.max_addresses:
                self.buckets.popitem(last=False)
            bucket = self.buckets[client] = TokenBucket(self.per_minute / 60, self.per_minute)
        else:
            self.buckets.move_to_end(client)
        wait = bucket.take(now)
        if wait:
            self.throttled += 1
        return wait

    def refusal(self, remote: str | None, refused: web.Response) -> web.Response:
        """`refused` (the 401 of a failed authentication from `remote`), or the 429 that
        replaces it when the address is over its allowance."""
        wait = self.fail(remote)
        if not wait:
            return refused
        return _problem(
            429,
            "Too Many Requests",
            "too many failed authentications from this address; send a valid API key",
            max(1, math.ceil(wait)),
        )


LIMITER = web.AppKey("limiter", RateLimiter)
THROTTLE = web.AppKey("auth_throttle", AuthThrottle)
OPTIONS = web.AppKey("serving_options", ServingOptions)
FEED_STREAMS = web.AppKey("feed_streams", FeedStreams)


def _problem(status: int, title: str, detail: str, retry_after: int) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/problem+json",
        headers={"Retry-After": str(retry_after)},
    )


def over_limit(app: web.Application, key_name: str | None, cost: int = 1) -> web.Response | None:
    """The 429 problem when this key is over its rate limit (taking `cost` tokens otherwise)."""
    return limited(app[LIMITER], key_name, cost)


def limited(limiter: RateLimiter, key_name: str | None, cost: int = 1) -> web.Response | None:
    """`over_limit` with the application's limiter at hand."""
    wait = limiter.check(key_name, cost)
    if not wait:
        return None
    return _problem(
        429,
        "Too Many Requests",
        "this key is over its rate limit (PERSONA_RATE_LIMITS; batch and render cost one token "
        "per recipient)",
        max(1, math.ceil(wait)),
    )


def feed_slot(app: web.Application, key_name: str) -> web.Response | None:
    """None when `key_name` may start one more feed response (its slot is taken: give it back
    with `app[FEED_STREAMS].leave`), else the 429 problem (counted as a rate-limit refusal)."""
    streams = app[FEED_STREAMS]
    if streams.enter(key_name):
        return None
    app[LIMITER].limited += 1
    return _problem(
        429,
        "Too Many Requests",
        f"this key is streaming {streams.per_key} feeds already (PERSONA_FEED_STREAMS_PER_KEY); "
        "try again when one has ended",
        FEED_RETRY_AFTER,
    )


def shape_check(path: str, check: Callable[[Any], list[str]]) -> None:
    """Register the body check of a per-recipient route: the body's distinct recipients, by
    the handler's own `parse` (BadRequest for what the handler answers 400)."""
    SHAPES[path] = check


async def request_cost(request: web.Request) -> int | None:
    """The tokens a request costs: its distinct recipients for batch and render (1..MAX_USERS),
    else 1; None for a batch or render body its handler will refuse with a 400 (unreadable, or
    refused by the route's `parse`: the same check), which is not charged (module doc)."""
    if request.method != "POST" or request.path not in PER_RECIPIENT:
        return 1
    try:
        body = await read_body(request)
        check = SHAPES.get(request.path)
        if check is not None:
            return max(1, len(check(body)))
        if not isinstance(body, dict):
            return None
        return max(1, len(recipient_ids(body, MAX_USERS)))
    except BadRequest:
        return None


def _limited_key(app: web.Application, key_name: str | None) -> bool:
    return key_name is not None and key_name in app[LIMITER].buckets


def _middleware(key_of: Callable[[web.Request], str | None]) -> Middleware:
    @web.middleware
    async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        app = request.app
        request[STARTED] = time.monotonic()
        # a forwarded request (a signed hop) was charged by the process the sender called
        key = None if request.get(HOPPED) else key_of(request)
        timeout = app[OPTIONS].request_timeout
        untimed = request.path.startswith(UNTIMED_PREFIXES)
        try:
            # the body a rate limit reads to count recipients is read within the timeout too: a
            # body trickled in cannot hold the request open
            async with asyncio.timeout(None if untimed else timeout):
                cost = await request_cost(request) if _limited_key(app, key) else 1
                # a body refused for its shape is answered its 400 by the handler, uncharged
                limit = None if cost is None else over_limit(app, key, cost)
                if limit is not None:
                    refused(
                        app, request.remote, limit.status, key or "", request.method, request.path
                    )
                    return limit
                if log.isEnabledFor(logging.DEBUG):
                    path = logged_path(request.path)
                    log.debug("%s %s key=%s", request.method, path, key_of(request))
                return await handler(request)
        except TimeoutError:
            path = logged_path(request.path)
            log.warning("%s %s timed out after %.1f s", request.method, path, timeout)
            return _problem(503, "Timeout", f"the request took longer than {timeout:g} s", 1)

    return limits_middleware


AUDITED_SCOPES = frozenset({"models:admin", "rules:admin"})  # every change is audited


def _audit_middleware(
    key_of: Callable[[web.Request], str | None], scope_of: Callable[[web.Request], str | None]
) -> Middleware:
    """Audit every model change (`model_activate`, `model_rollback`, `experiment_start`,
    `experiment_stop`) with its outcome. Refusals are audited where they are made (auth, limits,
    the hot path, the UI pages: `api.audit.refused`); privacy handlers audit their own actions."""

    @web.middleware
    async def audit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "GET" or scope_of(request) not in AUDITED_SCOPES:
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # a bad body, no registry here: answered by `errors`
            _audit_change(request, key_of, exc.status)
            raise
        _audit_change(request, key_of, response.status)
        return response

    return audit_middleware


def _audit_change(
    request: web.Request, key_of: Callable[[web.Request], str | None], status: int
) -> None:
    if key_of(request) is not None and status not in REFUSED_STATUSES:  # else: `denied`
        outcome = OK if status < 400 else FAILED
        details = request.get(DETAILS, {})
        audit(request, model_action(request), outcome, status=status, **details)


def model_action(request: web.Request) -> str:
    """The audit action of a model change (`models` for a request no route takes)."""
    path, method = request.path.rstrip("/"), request.method
    if method == "POST" and path.endswith("/activate"):
        return "model_activate"
    if method == "POST" and path.endswith("/rollback"):
        return "model_rollback"
    if path == "/v1/rules":
        return "rules_change"
    if path == "/v1/experiments":
        return "content_experiments_change"
    if path == "/v1/models/experiment":
        return {"PUT": "experiment_start", "DELETE": "experiment_stop"}.get(method, "models")
    return "models"


def register(
    app: web.Application,
    options: ServingOptions,
    key_of: Callable[[web.Request], str | None],
    scope_of: Callable[[web.Request], str | None],
) -> tuple[Middleware, Middleware]:
    """Set up the limits of `app`; returns (audit, limits) middlewares: `audit` goes before the
    auth middleware, `limits` after it (both read the key name auth sets)."""
    app[OPTIONS] = options
    app[LIMITER] = RateLimiter(options.rate_limits)
    app[THROTTLE] = AuthThrottle(options.auth_failures_per_minute)
    app[FEED_STREAMS] = FeedStreams(options.feed_streams_per_key)
    register_audit(app)
    return _audit_middleware(key_of, scope_of), _middleware(key_of)


def metrics_lines(app: web.Application) -> list[str]:
    return [
        "# HELP persona_http_rate_limited_total Requests answered 429 (per-key rate limits and"
        " feed streams per key).",
        "# TYPE persona_http_rate_limited_total counter",
        f"persona_http_rate_limited_total {app[LIMITER].limited}",
        "# HELP persona_http_feed_streams Feed responses being streamed.",
        "# TYPE persona_http_feed_streams gauge",
        f"persona_http_feed_streams {len(app[FEED_STREAMS])}",
        "# HELP persona_http_feed_timeouts_total Feed responses stopped at PERSONA_FEED_TIMEOUT.",
        "# TYPE persona_http_feed_timeouts_total counter",
        f"persona_http_feed_timeouts_total {app[FEED_STREAMS].timeouts}",
        "# HELP persona_http_auth_throttled_total Failed authentications answered 429 (too many"
        " from one client address).",
        "# TYPE persona_http_auth_throttled_total counter",
        f"persona_http_auth_throttled_total {app[THROTTLE].throttled}",
    ]
