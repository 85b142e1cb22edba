"""The hot path: `GET /v1/users/{id}/blocks/{block}` answered by one middleware.

Send time is dominated by this route, and aiohttp's middleware chain (observe, errors, audit,
auth, limits, routing, exposures, timeout: one coroutine frame each) cost more than the block
lookup itself. This middleware runs first and, for that route, does the same work inline, in the
same order and with the same answers: request id, key and scope check (401/403), rate limit
(429), the block (a cached lookup, see `api.content`), metrics and the access log. No timeout is
needed: the handler never awaits.

It hands the request to the full chain whenever that chain would do something more: the user's
partition belongs to another worker (routing forwards it), or an experiment is running (exposures
are logged). Every other route goes through the chain as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from api.app import (
    CONTENT,
    METRICS,
    _scope_for,
    authorize,
    block_answer,
    count_request,
    get_block,
    problem,
)
from api.limits import over_limit
from api.models_routes import ADMIN
from api.observability import TELEMETRY, _request_id, request_id
from api.routing import ROUTED

log = logging.getLogger("persona.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _needs_chain(request: web.Request, user_id: str) -> bool:
    app = request.app
    content = app[CONTENT]
    if content.models.experiment is not None and app.get(ADMIN) is not None:
        return True  # exposures_middleware logs the exposure
    # routing_middleware forwards to the owner of the user's partition
    return request.headers.get(ROUTED) is None and content.state.owner_url(user_id) is not None


@web.middleware
async def hot_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    match = request.match_info
    if match.route.handler is not get_block or request.method != "GET":
        return await handler(request)
    user_id = match.get("user_id", "")
    if _needs_chain(request, user_id):
        return await handler(request)
    rid = _request_id(request.headers.get("X-Request-Id"))
    token = request_id.set(rid)
    started = time.perf_counter()
    app = request.app
    block = None
    try:
        scope = _scope_for(request)
        assert scope is not None  # the block route is never public
        name, response = authorize(request, scope)
        if response is None:
            response = over_limit(app, name)
            if response is None:
                response, block = block_answer(request)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = problem(500, "Internal Server Error", "see the server log")
    finally:
        request_id.reset(token)
    took = time.perf_counter() - started
    response.headers["X-Request-Id"] = rid
    status = response.status
    count_request(app[METRICS], status, took)
    app[TELEMETRY].observe_block(request, status, took, block)
    return response


def register(app: web.Application) -> None:
    """Install the hot path as the outermost middleware (call after every other middleware)."""
    app.middlewares.insert(0, hot_middleware)
