"""The aiohttp application: which routes and middlewares, in what order (create_app).

The handlers live in their own modules (thin: parse -> core -> respond), and what they share in
api/shared.py, a leaf; this module imports them all and nothing imports it but the entry points
(persona/, tests). The names below from the route modules are re-exported for those callers.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.http import HttpVersion11

from api import (
    batch,
    clicks,
    collect,
    encodings,
    experiments,
    feeds,
    hops,
    hot,
    key_reload,
    limits,
    models_routes,
    observability,
    privacy,
    render,
    routing,
    rules,
    similar,
    ui,
)
from api.auth import KeyRing
from api.block_routes import (
    block_answer,
    block_lookup,
    block_response,
    get_block,
    get_profile,
    not_modified,
)
from api.content import ContentService
from api.event_routes import MAX_EVENTS, accept_events, post_events, read_events, sort_events
from api.gate import (
    BROKER_WARN_EVERY,
    BROKER_WARNED,
    auth_middleware,
    authorize,
    authorize_header,
    authorize_hop,
    authorize_peer,
    caller,
    errors_middleware,
)
from api.limits import ServingOptions
from api.openapi import openapi_document
from api.shared import (
    CONTENT,
    EVENT_SKEW_MS,
    KEY_NAME,
    KEYS,
    MAX_BODY,
    PUBLIC,
    Handler,
    bad_param,
    problem,
    request_scope,
    scope_for,
)

__all__ = [
    "CONTENT",
    "EVENT_SKEW_MS",
    "KEYS",
    "KEY_NAME",
    "MAX_BODY",
    "MAX_EVENTS",
    "PUBLIC",
    "Handler",
    "accept_events",
    "auth_middleware",
    "authorize",
    "authorize_header",
    "authorize_hop",
    "authorize_peer",
    "bad_param",
    "block_answer",
    "block_lookup",
    "block_response",
    "caller",
    "create_app",
    "errors_middleware",
    "get_block",
    "get_profile",
    "not_modified",
    "post_events",
    "problem",
    "read_events",
    "request_scope",
    "scope_for",
    "sort_events",
]


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


# What a worker's state says while a rebalance moves partitions (streams/app.py `_recovered`)
REBALANCE_REASONS = ("rebalancing", "tables recovering")
READY_SEEN = web.AppKey("ready_seen", list)


def served_readiness(ready: bool, reason: str, was_ready: bool) -> tuple[bool, str]:
    """What `/readyz` answers for the state's (ready, reason), once the process has been ready
    (`was_ready`): a rebalance after that does not take it out of service. Every worker of a
    group rebalances at once when one joins or leaves, and each answered 503 for its 5-9 s
    (measured with two workers): a load balancer checking `/readyz` was left with no worker at
    all at every scale-out step, while each went on answering from what it had (a standby copy
    or the fallback). Before the first ready, and for any other reason, the state's answer."""
    if not ready and was_ready and reason.startswith(REBALANCE_REASONS):
        return True, f"ok; {reason}"
    return ready, reason


async def readyz(request: web.Request) -> web.Response:
    ready, reason = request.app[CONTENT].state.ready()
    seen = request.app[READY_SEEN]
    ready, reason = served_readiness(ready, reason, bool(seen))
    if ready and not seen:
        seen.append(True)
    return web.json_response(
        {"status": "ready" if ready else "starting", "detail": reason},
        status=200 if ready else 503,
    )


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def create_app(
    content: ContentService, keys: KeyRing, options: ServingOptions | None = None
) -> web.Application:
    options = options or ServingOptions()
    app = web.Application(client_max_size=MAX_BODY)
    app[CONTENT] = content
    app[KEYS] = keys
    app[READY_SEEN] = []  # one element once /readyz has answered 200 (`served_readiness`)
    app[BROKER_WARNED] = [-BROKER_WARN_EVERY]  # when a 503 for the broker was last logged
    app[EVENT_SKEW_MS] = options.max_clock_skew_ms
    audit_middleware, limits_middleware = limits.register(
        app, options, lambda r: r.get(KEY_NAME), request_scope
    )
    # The whole stack, outermost first: block GETs answered inline (api/hot.py), the request
    # counters and trace, the body's content coding (no inflating of what an answer left
    # unread), problem+json for errors, the audit of admin calls (with their outcome), browser
    # CORS before auth, auth, the 415 for a body coding not read here (after auth: a client
    # without a valid key learns nothing else; before anything reads the body), the per-key
    # rate limit (it needs the key name, and reads a batch's body), the queued exposures an
    # erasure drops whether answered here or forwarded, routing to the user's worker, and the
    # exposure log of model experiments.
    app.middlewares.extend(
        [
            hot.hot_middleware,
            observability.observe_middleware,
            encodings.body_middleware,
            errors_middleware,
            audit_middleware,
            collect.collect_middleware,
            auth_middleware,
            encodings.coding_middleware,
            limits_middleware,
            privacy.erasure_middleware,
            routing.routing_middleware(content.state.owner_url, caller),
            models_routes.exposures_middleware,
        ]
    )
    routing.register(app)
    hops.register(app, options.cluster_secret)
    privacy.register(app, options.cluster_secret)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", get_openapi)
    app.router.add_get("/v1/users/{user_id}/blocks/{block}", get_block)
    app.router.add_get("/v1/users/{user_id}/profile", get_profile)
    app.router.add_post("/v1/events", post_events)
    for module in (batch, render, feeds, similar):
        module.register(app)
    observability.register(app, content)
    key_reload.register(app, keys)  # PERSONA_API_KEYS_FILE read again when it changes
    app[observability.TELEMETRY].text_sources.append(
        lambda: limits.metrics_lines(app) + render.metrics_lines(app) + hops.metrics_lines(app)
    )
    ui.register(app)
    models_routes.register(app)
    collect.register(app, options)
    clicks.register(app, options)
    rules.register(app)
    experiments.register(app)
    for route in app.router.routes():
        route._expect_handler = expect_continue
    return app


async def expect_continue(request: web.Request) -> None:
    """The routes' `Expect` handling: `100-continue` is answered as aiohttp does; any other
    expectation is ignored and the request answered as usual (RFC 9110 10.1.1 allows it). aiohttp
    answered those with a plain-text 417 outside the middlewares: no problem body, and a status
    the API document does not list."""
    if request.version == HttpVersion11 and (
        request.headers.get("Expect", "").lower() == "100-continue"
    ):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the body's size counts from here
