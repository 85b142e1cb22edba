"""The aiohttp application: thin handlers (parse -> core -> respond), auth, problem+json errors."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from api import hops, privacy, routing
from api.audit import audit, refused
from api.auth import KeyRing, secret_from_header
from api.content import ContentService
from api.limits import THROTTLE, AuthThrottle, ServingOptions
from api.openapi import openapi_document
from engine.admission import admit
from engine.audit import consent_fields
from engine.blocks import ALL_BLOCKS, CONTEXT_BLOCKS, FORMATS, Block, models_header
from engine.events import Event, InvalidEvent, validate
from engine.params import NO_PARAMS, BlockParams, InvalidParam, from_query
from engine.signing import HOP_HEADER

log = logging.getLogger("persona.api")

MAX_BODY = 10 * 1024 * 1024  # bytes of one request body
MAX_EVENTS = 10_000  # events in one POST /v1/events

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONTENT = web.AppKey("content", ContentService)
KEYS = web.AppKey("keys", KeyRing)
METRICS = web.AppKey("metrics", dict)
EVENT_SKEW_MS = web.AppKey("event_skew_ms", int)  # POST /v1/events: how far ahead is `future`
KEY_NAME = web.RequestKey("api_key", str)

PUBLIC = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/v1/sdk.js"})


def problem(status: int, title: str, detail: str = "", **extra: Any) -> web.Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/problem+json"
    )


def _scope_for(request: web.Request) -> str | None:
    return scope_for(request.path, request.method)


def scope_for(path: str, method: str) -> str | None:
    """The scope a request for `path` (decoded) with `method` needs; None for the public ones."""
    if path in PUBLIC or path.startswith("/ui/"):  # the UI pages check the key themselves
        return None
    if path == "/v1/events":
        return "events:write"
    if path == "/v1/collect":  # a browser's preflight carries no key (api/collect.py)
        return None if method == "OPTIONS" else "events:collect"
    if path.startswith("/v1/models"):
        return "models:admin"
    if path.startswith("/v1/feeds/"):
        return "feeds:read"
    if path.startswith("/v1/users/") and (path.endswith("/export") or method == "DELETE"):
        return "privacy:admin"
    return "content:read"


_STATUS_KEYS = tuple(f"status_{n}xx" for n in range(10))


def count_request(metrics: dict[str, Any], status: int, took: float) -> None:
    metrics["requests"] = metrics.get("requests", 0) + 1
    metrics["seconds"] = metrics.get("seconds", 0.0) + took
    status_key = _STATUS_KEYS[status // 100]
    metrics[status_key] = metrics.get(status_key, 0) + 1


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            response = problem(exc.status, exc.reason, exc.text or "")
        else:
            raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = problem(500, "Internal Server Error", "see the server log")
    count_request(request.app[METRICS], response.status, time.perf_counter() - started)
    return response


def authorize(request: web.Request, scope: str) -> tuple[str | None, web.Response | None]:
    """(key name, None) when the request's key has `scope`, else (the key's name or None when
    no key was recognized, the 401/403 problem, or a 429 when the client's address failed
    authentication too often: api/limits.py). The name of a refused key is only for the audit."""
    app = request.app
    return authorize_peer(
        app[KEYS],
        app[THROTTLE],
        request.headers.get("Authorization", ""),
        scope,
        request.remote,
    )


def authorize_peer(
    keys: KeyRing, throttle: AuthThrottle, authorization: str, scope: str, remote: str | None
) -> tuple[str | None, web.Response | None]:
    """`authorize_header`, with a failed authentication counted against the peer address
    `remote` (and answered 429 once it is over its allowance); a valid key always passes."""
    name, refused = authorize_header(keys, authorization, scope)
    if refused is not None and refused.status == 401:
        refused = throttle.refusal(remote, refused)
    return name, refused


def authorize_header(
    keys: KeyRing, authorization: str, scope: str
) -> tuple[str | None, web.Response | None]:
    """`authorize` for an `Authorization` header value checked against `keys`."""
    feeds = scope == "feeds:read"  # ad platforms fetch feeds with HTTP Basic (key as password)
    secret = secret_from_header(authorization, allow_basic=feeds)
    key = keys.authenticate(secret) if secret else None
    if key is None:
        response = problem(401, "Unauthorized", "send Authorization: Bearer <api key>")
        response.headers["WWW-Authenticate"] = (
            'Basic realm="persona feeds"' if feeds else 'Bearer realm="persona"'
        )
        return None, response
    if scope not in key.scopes:
        return key.name, problem(403, "Forbidden", f"this key lacks the {scope} scope")
    return key.name, None


async def authorize_hop(request: web.Request, scope: str) -> tuple[str | None, web.Response | None]:
    """`authorize` for a forwarded request: its signed hop instead of a bearer (api/hops.py)."""
    hop = await hops.verify(request)
    if isinstance(hop, str):
        response = problem(401, "Unauthorized", f"{hop}: forwarded requests are signed")
        response.headers["WWW-Authenticate"] = 'Bearer realm="persona"'
        return None, request.app[THROTTLE].refusal(request.remote, response)
    if scope not in hop.scopes:
        return hop.name, problem(403, "Forbidden", f"this key lacks the {scope} scope")
    return hop.name, None


def caller(request: web.Request) -> tuple[str, frozenset[str]]:
    """The authenticated key of a request the auth middleware let in: its name and scopes."""
    secret = secret_from_header(request.headers.get("Authorization", ""))
    key = request.app[KEYS].authenticate(secret) if secret else None
    return (key.name, key.scopes) if key is not None else (request[KEY_NAME], frozenset())


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    scope = _scope_for(request)
    if scope is None:
        return await handler(request)
    if HOP_HEADER in request.headers:  # forwarded by another Persona process (api/hops.py)
        name, refusal = await authorize_hop(request, scope)
    else:
        name, refusal = authorize(request, scope)
    if refusal is not None:  # audited: the key's name on a 403, the address always
        key = name or ""
        refused(request.app, request.remote, refusal.status, key, request.method, request.path)
        return refusal
    assert name is not None
    request[KEY_NAME] = name
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ready, reason = request.app[CONTENT].state.ready()
    return web.json_response(
        {"status": "ready" if ready else "starting", "detail": reason},
        status=200 if ready else 503,
    )


async def get_block(request: web.Request) -> web.StreamResponse:
    return block_response(request)


def block_response(request: web.Request) -> web.Response:
    """GET /v1/users/{id}/blocks/{block}: synchronous (a cached block is a lookup), so the hot
    path (api/hot.py) calls it directly (as `block_answer`)."""
    return block_answer(request)[0]


def block_answer(request: web.Request) -> tuple[web.Response, Block | None]:
    """The block GET's response, and the block it answers with (None for a 4xx)."""
    match = request.match_info
    fmt, params = "html", NO_PARAMS
    if request.query_string:
        query = request.query
        fmt = query.get("format", "html")
        if len(query) > 1 or "format" not in query:
            try:
                params = from_query(query.items())
            except InvalidParam as exc:
                return bad_param(exc), None
    content = request.app[CONTENT]
    refused, block = block_lookup(content, match["user_id"], match["block"], fmt, params)
    if block is None:
        assert refused is not None
        return refused, None
    if not_modified(block, request.headers.get("If-None-Match")):
        return web.Response(status=304, headers=block.not_modified_headers), block
    return web.Response(body=block.body, headers=block.headers), block


def block_lookup(
    content: ContentService,
    user_id: str,
    block_name: str,
    fmt: str,
    params: BlockParams = NO_PARAMS,
) -> tuple[web.Response | None, Block | None]:
    """(None, the block) for a valid block GET, else (its 4xx problem, None)."""
    if block_name not in ALL_BLOCKS:
        return problem(404, "Unknown block", f"blocks are {', '.join(ALL_BLOCKS)}"), None
    if fmt not in FORMATS:
        return problem(400, "Bad format", f"format is one of {', '.join(FORMATS)}"), None
    if not 1 <= len(user_id) <= 128:
        return problem(400, "Bad user id", "user ids are 1..128 characters"), None
    if block_name in CONTEXT_BLOCKS and params.context_item is None:
        return bad_param(InvalidParam("context_item", f"{block_name} needs one")), None
    return None, content.block(user_id, block_name, fmt, params=params)


def bad_param(exc: InvalidParam) -> web.Response:
    """The 400 problem for a block parameter (engine.params), naming it in `parameter`."""
    return problem(400, "Bad parameter", str(exc), parameter=exc.name)


def not_modified(block: Block, if_none_match: str | None) -> bool:
    """Whether a GET with this If-None-Match header is answered 304 for `block`."""
    if not if_none_match:
        return False
    return block.etag in _etags(if_none_match)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


async def get_profile(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    view = request.app[CONTENT].profile_view(user_id)
    if view is None:
        return problem(404, "Unknown user", f"no events were seen for user {user_id!r}")
    return web.json_response(view, headers={"X-Persona-Model": models_header(view["models"])})


def _parse_events_body(text: str, content_type: str) -> list[Any]:
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except RecursionError:
            raise ValueError("nested too deeply") from None
        if not isinstance(data, list):
            raise ValueError("expected a JSON array of events")
        return data
    items: list[Any] = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {n} is not JSON: {exc.msg}") from None
            except (ValueError, RecursionError):  # too many digits, nested too deeply
                raise ValueError(f"line {n} is not JSON within bounds") from None
    return items


async def post_events(request: web.Request) -> web.Response:
    items = await read_events(request, MAX_EVENTS)
    if isinstance(items, web.Response):
        return items
    return await accept_events(request, items)


async def read_events(request: web.Request, limit: int) -> list[Any] | web.Response:
    """The items of an events body (a JSON array or NDJSON, at most `limit`), or its 4xx problem;
    POST /v1/collect reads its bodies here too (api/collect.py)."""
    try:
        text = await request.text()
    except UnicodeDecodeError:
        return problem(400, "Bad body", "the body must be UTF-8 JSON or NDJSON")
    try:
        items = _parse_events_body(text, request.content_type)
    except ValueError as exc:
        return problem(400, "Bad body", f"expected a JSON array or NDJSON of events: {exc}")
    if len(items) > limit:
        return problem(413, "Too many events", f"at most {limit} events per request")
    return items


Policy = Callable[[Event], str | None]  # why an event is refused here (POST /v1/collect), or None


async def accept_events(
    request: web.Request, items: list[Any], policy: Policy | None = None
) -> web.Response:
    """Validate, admit (and check with `policy`: POST /v1/collect's limits), produce the good
    events; answer 202 with the counts and the reason of each refused one."""
    accepted, errors = sort_events(items, request.app[EVENT_SKEW_MS], policy)
    if accepted:
        await request.app[CONTENT].state.produce(accepted)
        audit_consents(request, accepted)
    return web.json_response(
        {"accepted": len(accepted), "rejected": len(errors), "errors": errors}, status=202
    )


def sort_events(
    items: list[Any], skew_ms: int, policy: Policy | None = None
) -> tuple[list[Event], list[dict[str, Any]]]:
    """(the acceptable events, {index, reason} of the others) of a request body."""
    accepted: list[Event] = []
    errors: list[dict[str, Any]] = []
    wall = int(time.time() * 1000)
    for index, item in enumerate(items):
        try:
            event = validate(item)
        except InvalidEvent as exc:
            errors.append({"index": index, "reason": exc.reason})
            continue
        except Exception as exc:  # unforeseen: still one bad event, never a 500
            errors.append({"index": index, "reason": f"unreadable event: {type(exc).__name__}"})
            continue
        future = admit(event.ts, None, wall, 0, skew_ms)  # no stream time here: future only
        reason = future if future is not None else policy(event) if policy else None
        if reason is not None:
            errors.append({"index": index, "reason": reason})
            continue
        accepted.append(event)
    return accepted, errors


def audit_consents(request: web.Request, events: list[Event]) -> None:
    """A `consent_received` audit record for each consent event accepted (and produced) here:
    who sent it (the key), whose and which purposes; the worker writes `consent_applied` when
    it folds it (streams/app.py)."""
    for event in events:
        if event.type == "consent":
            audit(request, "consent_received", **consent_fields(event))


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def _register_serving(app: web.Application, options: ServingOptions) -> None:
    """Send-time routes (batch, render, feeds) and the limits (api/limits.py)."""
    from api import batch, feeds, limits, render, similar  # here: they import this module

    audit, limit = limits.register(app, options, lambda r: r.get(KEY_NAME), _scope_for)
    at = app.middlewares.index(auth_middleware)
    app.middlewares.insert(at + 1, limit)  # after auth: it needs the key name
    app.middlewares.insert(at, audit)  # before auth: model changes, with their outcome
    batch.register(app)
    render.register(app)
    feeds.register(app)
    similar.register(app)


def create_app(
    content: ContentService, keys: KeyRing, options: ServingOptions | None = None
) -> web.Application:
    app = web.Application(
        middlewares=[
            errors_middleware,
            auth_middleware,
            routing.routing_middleware(content.state.owner_url, caller),
        ],
        client_max_size=MAX_BODY,
    )
    routing.register(app)
    hops.register(app, (options or ServingOptions()).cluster_secret)
    privacy.register(app)
    app[CONTENT] = content
    app[KEYS] = keys
    app[METRICS] = {}
    app[EVENT_SKEW_MS] = (options or ServingOptions()).max_clock_skew_ms
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", get_openapi)
    app.router.add_get("/v1/users/{user_id}/blocks/{block}", get_block)
    app.router.add_get("/v1/users/{user_id}/profile", get_profile)
    app.router.add_post("/v1/events", post_events)
    _register_serving(app, options or ServingOptions())
    from api import observability, ui  # here: both import this module

    observability.register(app, content)
    from api import limits, render  # here: render imports this module

    app[observability.TELEMETRY].text_sources.append(
        lambda: limits.metrics_lines(app) + render.metrics_lines(app) + hops.metrics_lines(app)
    )
    ui.register(app)
    from api import models_routes  # here: it imports this module

    models_routes.register(app)
    from api import collect  # here: it imports this module

    collect.register(app, options or ServingOptions())
    from api import hot  # here: it imports this module

    hot.register(app)
    return app
