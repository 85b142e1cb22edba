"""Limits of the HTTP API: per-key rate limits, request timeouts, the audit log of admin actions.

- Rate limits (`PERSONA_RATE_LIMITS` = `name:requests_per_second;...`): a token bucket per key name
  per process, holding at most one second of requests (burst = the rate, at least 1). Over the
  limit: 429 with `Retry-After` (whole seconds). Keys without an entry are not limited. Limits are
  per process: with N API processes behind one port a key can get up to N times its rate.
- Timeouts: a request that takes longer than `request_timeout` seconds answers 503 with
  `Retry-After: 1` (streamed feeds are exempt: they are bounded by the client reading them).
- Body sizes: `client_max_size` of the application (`MAX_BODY`, 10 MiB) bounds every body; routes
  bound their own item counts (events, user ids, template size).
- Audit: admin handlers record what they do with `api.audit.audit` (one JSON line per action on the
  `persona.audit` logger, which the process wiring sends to `<data_dir>/audit.log`); this module
  adds a `denied` record for every admin request refused with 401, 403 or 429, and a `models`
  record for every model change (POST/PUT/DELETE under /v1/models) with its status.
- Request logging on the hot content routes is at debug level only (metrics count every request).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Middleware

from engine.settings import parse_rate_limits

log = logging.getLogger("persona.api")
audit_log = logging.getLogger("persona.audit")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ADMIN_SCOPES = frozenset({"models:admin", "privacy:admin"})
UNTIMED_PREFIXES = ("/v1/feeds/",)
MAX_USERS = 1000  # user ids per batch or render request
MAX_TEMPLATE = 256 * 1024  # characters of a sender template (POST /v1/render)


@dataclass(frozen=True)
class ServingOptions:
    rate_limits: dict[str, float] = field(default_factory=dict)  # key name -> requests/s
    request_timeout: float = 10.0  # seconds

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

    def take(self, now: float | None = None) -> float:
        """0.0 when a request may pass (and takes a token), else seconds until one would."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    def __init__(self, limits: dict[str, float]) -> None:
        self.buckets = {name: TokenBucket(rate) for name, rate in limits.items()}
        self.limited = 0  # requests answered 429

    def check(self, key_name: str | None) -> float:
        bucket = self.buckets.get(key_name) if key_name else None
        if bucket is None:
            return 0.0
        wait = bucket.take()
        if wait:
            self.limited += 1
        return wait


LIMITER = web.AppKey("limiter", RateLimiter)
OPTIONS = web.AppKey("serving_options", ServingOptions)


def _problem(status: int, title: str, detail: str, retry_after: int) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/problem+json",
        headers={"Retry-After": str(retry_after)},
    )


def over_limit(app: web.Application, key_name: str | None) -> web.Response | None:
    """The 429 problem when this key is over its rate limit (taking a token otherwise)."""
    return limited(app[LIMITER], key_name)


def limited(limiter: RateLimiter, key_name: str | None) -> web.Response | None:
    """`over_limit` with the application's limiter at hand."""
    wait = limiter.check(key_name)
    if not wait:
        return None
    return _problem(
        429,
        "Too Many Requests",
        "this key is over its rate limit (PERSONA_RATE_LIMITS)",
        max(1, math.ceil(wait)),
    )


def _middleware(key_of: Callable[[web.Request], str | None]) -> Middleware:
    @web.middleware
    async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        app = request.app
        refused = over_limit(app, key_of(request))
        if refused is not None:
            return refused
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s key=%s", request.method, request.path, key_of(request))
        if request.path.startswith(UNTIMED_PREFIXES):
            return await handler(request)
        timeout = app[OPTIONS].request_timeout
        try:
            async with asyncio.timeout(timeout):
                return await handler(request)
        except TimeoutError:
            log.warning("%s %s timed out after %.1f s", request.method, request.path, timeout)
            return _problem(503, "Timeout", f"the request took longer than {timeout:g} s", 1)

    return limits_middleware


def _audit_middleware(
    key_of: Callable[[web.Request], str | None], scope_of: Callable[[web.Request], str | None]
) -> Middleware:
    """Audit refused admin requests (401/403/429, action `denied`) and every model change
    (`models`: activate, rollback, experiments); privacy handlers audit their own actions."""

    @web.middleware
    async def audit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        scope = scope_of(request)
        if scope not in ADMIN_SCOPES:
            return await handler(request)
        response = await handler(request)
        denied = response.status in (401, 403, 429)
        # privacy handlers audit themselves (api/audit.py); model changes are audited here
        changed = scope == "models:admin" and request.method != "GET"
        if denied or changed:
            audit_log.info(
                json.dumps(
                    {
                        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "action": "denied" if denied else "models",
                        "status": response.status,
                        "key": key_of(request) or "",
                        "remote": request.remote or "",
                        "method": request.method,
                        "path": request.path,
                    },
                    sort_keys=True,
                )
            )
        return response

    return audit_middleware


def register(
    app: web.Application,
    options: ServingOptions,
    key_of: Callable[[web.Request], str | None],
    scope_of: Callable[[web.Request], str | None],
) -> tuple[Middleware, Middleware]:
    """Set up the limits of `app`; returns (audit, limits) middlewares: `audit` goes before the
    auth middleware (so refused admin requests are logged too), `limits` after it (it reads the
    key name auth sets)."""
    app[OPTIONS] = options
    app[LIMITER] = RateLimiter(options.rate_limits)
    return _audit_middleware(key_of, scope_of), _middleware(key_of)


def metrics_lines(app: web.Application) -> list[str]:
    return [
        "# HELP persona_http_rate_limited_total Requests answered 429 (per-key rate limits).",
        "# TYPE persona_http_rate_limited_total counter",
        f"persona_http_rate_limited_total {app[LIMITER].limited}",
    ]
