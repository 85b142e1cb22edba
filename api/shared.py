"""What every route module of the API shares (a leaf: it imports no route module, so none of them
imports api.app): the application and request keys, the handler type, problem+json, the scope a
path needs."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, overload

from aiohttp import web
from multidict import MultiMapping

from api.auth import KeyRing
from api.content import ContentService
from engine.params import REPEATED, InvalidParam
from engine.text import repr_cut

MAX_BODY = 10 * 1024 * 1024  # bytes of one request body

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONTENT = web.AppKey("content", ContentService)
KEYS = web.AppKey("keys", KeyRing)
EVENT_SKEW_MS = web.AppKey("event_skew_ms", int)  # POST /v1/events: how far ahead is `future`
KEY_NAME = web.RequestKey("api_key", str)
# set on a request a signed hop let in: the process the sender called charged its rate limit
HOPPED = web.RequestKey("hopped", bool)
# time.monotonic() when the request reached the limits middleware (its timeout counts from then)
STARTED = web.RequestKey("started", float)

PUBLIC = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/v1/sdk.js"})


def problem(status: int, title: str, detail: str = "", **extra: Any) -> web.Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/problem+json"
    )


def shown_id(value: str) -> str:
    """A user or item id from the request's path for a problem's detail: whole (quoted) when it
    could be a real id, else cut (a path may carry ~8 KB: echoed whole, every 404 grew with it)."""
    return repr_cut(value, 160, 130, counted="str")


def http_problem(exc: web.HTTPException) -> web.Response:
    """The problem answer of an aiohttp HTTP error (status 400 and above) raised on the way."""
    return problem(exc.status, exc.reason, exc.text or "")


def bad_param(exc: InvalidParam) -> web.Response:
    """The 400 problem for a bad query parameter (engine.params), naming it in `parameter`."""
    return problem(400, "Bad parameter", str(exc), parameter=exc.name)


@overload
def single(query: MultiMapping[str], name: str, default: str) -> str: ...
@overload
def single(query: MultiMapping[str], name: str, default: None = None) -> str | None: ...
def single(query: MultiMapping[str], name: str, default: str | None = None) -> str | None:
    """The value of query parameter `name` (`default` when absent); InvalidParam naming it when
    it is given more than once (answered with `bad_param`). No query parameter of the API is
    repeatable (`exclude` takes its ids comma-separated): a second value was ignored silently."""
    values = query.getall(name, ())
    if len(values) > 1:
        raise InvalidParam(name, REPEATED)
    return values[0] if values else default


def request_scope(request: web.Request) -> str | None:
    return scope_for(request.path, request.method)


def scope_for(path: str, method: str) -> str | None:
    """The scope a request for `path` (decoded) with `method` needs; None for the public ones."""
    if path in PUBLIC or path.startswith(("/ui/", "/c/")):  # UI pages check the key themselves;
        # a click link (api/clicks.py) carries its own signature
        return None
    if path == "/v1/events":
        return "events:write"
    if path == "/v1/collect":  # a browser's preflight carries no key (api/collect.py)
        return None if method == "OPTIONS" else "events:collect"
    if path.startswith(("/v1/models", "/v1/experiments")):
        return "models:admin"
    if path == "/v1/rules":
        return "rules:admin"
    if path.startswith("/v1/feeds/"):
        return "feeds:read"
    if path.startswith("/v1/users/") and (path.endswith("/export") or method == "DELETE"):
        return "privacy:admin"
    return "content:read"
