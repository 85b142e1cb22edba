"""Route per-user requests to the worker that owns the user's partition.

Each worker advertises its API URL to the consumer group; a request for a user whose partition
another worker owns is forwarded there once (`X-Persona-Routed` stops loops). If the owner cannot
be reached, this worker answers from what it has (a standby copy, or the fallback): a sender always
gets an answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

log = logging.getLogger("persona.routing")

ROUTED = "X-Persona-Routed"
FORWARDED_HEADERS = ("Authorization", "If-None-Match", "Accept", "Content-Type", "X-Request-Id")
SESSION = web.AppKey("routing_session", aiohttp.ClientSession)
OwnerLookup = Callable[[str], "str | None"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _user_of(request: web.Request) -> str | None:
    if not request.path.startswith("/v1/users/"):
        return None
    return request.match_info.get("user_id")


def routing_middleware(owner_of: OwnerLookup) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        user = _user_of(request)
        if user is None or request.headers.get(ROUTED):
            return await handler(request)
        owner = owner_of(user)
        if owner is None:
            return await handler(request)
        try:
            return await _forward(request, owner)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("owner %s of user %r unreachable (%s); answering locally", owner, user, exc)
            return await handler(request)

    return middleware


async def _forward(request: web.Request, owner: str) -> web.Response:
    session = request.app[SESSION]
    headers = {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}
    headers[ROUTED] = "1"
    body = await request.read() if request.can_read_body else None
    async with session.request(
        request.method,
        owner + str(request.rel_url),
        headers=headers,
        data=body,
        allow_redirects=False,
    ) as upstream:
        payload = await upstream.read()
        out = {
            k: v
            for k, v in upstream.headers.items()
            if k.lower()
            not in (
                "content-length",
                "transfer-encoding",
                "connection",
                "date",
                "server",
                "content-encoding",
            )
        }
        out[ROUTED] = owner
        return web.Response(status=upstream.status, body=payload, headers=out)


async def _open_session(app: web.Application) -> None:
    app[SESSION] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))


async def _close_session(app: web.Application) -> None:
    await app[SESSION].close()


def register(app: web.Application) -> None:
    app.on_startup.append(_open_session)
    app.on_cleanup.append(_close_session)
