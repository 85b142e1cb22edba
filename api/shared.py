"""What every route module of the API shares (a leaf: it imports no route module, so none of them
imports api.app): the application and request keys, the handler type, problem+json, the scope a
path needs."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from api.auth import KeyRing
from api.content import ContentService

MAX_BODY = 10 * 1024 * 1024  # bytes of one request body

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONTENT = web.AppKey("content", ContentService)
KEYS = web.AppKey("keys", KeyRing)
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
