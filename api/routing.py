"""Route per-user requests to the worker that owns the user's partition.

Each worker advertises its API URL to the consumer group; a request for a user whose partition
another worker owns is forwarded there once: the owner answers a verified hop (api/hops.py, the
auth middleware sets `HOPPED`) itself, which stops loops. `X-Persona-Routed` on an answer names
the owner it came from; on a request it is a mark only (a caller's own is ignored: routing
proceeds, or any content:read caller got a non-owner's standby copy). If the owner cannot
be reached, this worker answers from what it has (a standby copy, or the fallback): a sender always
gets an answer.

The forwarded request never carries the caller's `Authorization`: the caller was authenticated
here (the auth middleware runs first), and the hop is signed for the owner with the cluster secret
(api/hops.py). A target that is not a plain http(s) URL, or a process without a cluster secret,
answers locally instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from yarl import URL

from api import hops
from api.encodings import read_whole
from api.limits import OPTIONS, ServingOptions
from api.observability import current_request_id
from api.shared import HOPPED, STARTED
from engine.signing import HOP_HEADER

log = logging.getLogger("persona.routing")

ROUTED = "X-Persona-Routed"
# the caller's X-Request-Id is not copied: the hop carries this request's id (`request_id`)
FORWARDED_HEADERS = ("If-None-Match", "Accept", "Content-Type")
SESSION = web.AppKey("routing_session", aiohttp.ClientSession)
OwnerLookup = Callable[[str], "str | None"]
Caller = Callable[[web.Request], "tuple[str, frozenset[str]]"]  # the authenticated key
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_WARNED: set[str] = set()
HOP_TIMEOUT = 2.0  # seconds a hop may take (an owner that answers no sooner is unreachable)
HOP_ANSWER = 1.0  # seconds for an owner's answer once its erasure wait is over (DELETE)
# a hop ends by this share of the request's own timeout (PERSONA_REQUEST_TIMEOUT): the rest
# answers locally (and a DELETE queues and audits the erasure) before the timeout answers 503
HOP_SHARE = 0.8


def _user_of(request: web.Request) -> str | None:
    if not request.path.startswith("/v1/users/"):
        return None
    return request.match_info.get("user_id")


def routing_middleware(
    owner_of: OwnerLookup, caller: Caller
) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        user = _user_of(request)
        if user is None or request.get(HOPPED):  # a verified hop: its sender routed it
            return await handler(request)
        owner = _target(request.app, owner_of(user))
        timeout = None if owner is None else _hop_timeout(request)
        if owner is None or timeout is None:
            return await handler(request)
        try:
            return await _forward(request, owner, caller(request), timeout)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("owner %s of user %r unreachable (%s); answering locally", owner, user, exc)
            return await handler(request)

    return middleware


def _target(app: web.Application, owner: str | None) -> str | None:
    """`owner` when a hop may go there, else None (this process answers)."""
    if owner is None:
        return None
    problem = hops.target_problem(owner)
    if problem is None and hops.CLUSTER in app:
        return owner
    hops.count(app, "hop_targets_refused")
    if owner in _WARNED or len(_WARNED) > 100:
        return None
    _WARNED.add(owner)  # once per target: this is asked on every request
    log.warning(
        "not forwarding to the owner %s: %s; answering locally",
        owner.split("@")[-1],
        problem or "no cluster secret to sign the hop",
    )
    return None


async def _forward(
    request: web.Request,
    owner: str,
    caller: tuple[str, frozenset[str]],
    timeout: aiohttp.ClientTimeout,
) -> web.Response:
    session = request.app[SESSION]
    headers = {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}
    headers[ROUTED] = "1"
    # the id this process answers with (the caller's valid one, or one made here): the owner takes
    # it as any caller's (observability's check), so its answer and audit records name it too
    headers["X-Request-Id"] = current_request_id()
    # inflated here (the owner is sent no Content-Encoding), its stream checked to its end
    body = await read_whole(request) if request.can_read_body else b""
    name, scopes = caller
    target = str(request.rel_url)
    signature = request.app[hops.CLUSTER].hop(
        request.method, target, name, scopes, body, hops.now_ms()
    )
    headers[HOP_HEADER] = signature
    hops.count(request.app, "hops_forwarded")
    async with session.request(
        request.method,
        URL(owner + target, encoded=True),  # as signed: no requoting
        headers=headers,
        data=body or None,
        allow_redirects=False,
        timeout=timeout,
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
    app[SESSION] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HOP_TIMEOUT))


def _hop_timeout(request: web.Request) -> aiohttp.ClientTimeout | None:
    """A DELETE's hop waits as long as the owner may wait for the erasure before it answers
    (api/privacy.py `erase_wait`), plus a second for its answer: at the session's HOP_TIMEOUT an
    owner applying the erasure was taken for unreachable (202 `owner_unreachable` from a
    process holding nothing, the erase queued twice). Other hops: HOP_TIMEOUT (an explicit
    timeout of None would be none at all, not the session's). Either ends by HOP_SHARE of the
    request's own timeout, counted from its start (`STARTED`): with a request timeout under
    2.5 s an owner that did not answer held the request until the timeout middleware answered
    503, nothing answered (or, for a DELETE, queued and audited) here. None: no time is left
    for a hop (answered here)."""
    total = HOP_TIMEOUT
    if request.method == "DELETE":
        from api.privacy import erase_wait  # the handler's module: imported where it is needed

        total = max(HOP_TIMEOUT, erase_wait(request) + HOP_ANSWER)
    started = request.get(STARTED)
    if started is not None:  # behind the limits middleware: its timeout counts from then
        request_timeout = (request.app.get(OPTIONS) or ServingOptions()).request_timeout
        left = started + HOP_SHARE * request_timeout - time.monotonic()
        if left <= 0.001:  # aiohttp takes a total of 0 for no timeout at all
            return None
        total = min(total, left)
    return aiohttp.ClientTimeout(total=total)


async def _close_session(app: web.Application) -> None:
    await app[SESSION].close()


def register(app: web.Application) -> None:
    app.on_startup.append(_open_session)
    app.on_cleanup.append(_close_session)
