"""Who may call: the errors and auth middlewares and the key checks every path uses (the chain,
api/hot.py's fast path, api/collect.py)."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError

from api import hops
from api.audit import refused
from api.auth import KeyRing, basic_password, secret_from_header
from api.encodings import NOT_INFLATING, leave_unread
from api.limits import THROTTLE, AuthThrottle
from api.shared import HOPPED, KEY_NAME, KEYS, Handler, http_problem, problem, request_scope
from engine.clicks import logged_path
from engine.errors import BrokerUnavailable
from engine.signing import HOP_HEADER

log = logging.getLogger("persona.api")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        return error_answer(request, exc)


def error_answer(request: web.Request, exc: Exception) -> web.Response:
    """The problem answering `exc`, raised by the handler of `request` (a redirect or other
    HTTPException below 400 is raised again). `errors_middleware` answers every route so;
    api/collect.py answers its own, to add its CORS headers."""
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return http_problem(exc)
    if isinstance(exc, web.RequestPayloadError):  # the body broke off or did not inflate
        return unreadable_body(exc)
    if isinstance(exc, BrokerUnavailable):
        return broker_unavailable(request, exc)
    log.error(
        "unhandled error on %s %s",
        request.method,
        logged_path(request.path),
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return problem(500, "Internal Server Error", "see the server log")


BROKER_RETRY_AFTER = 5  # seconds: the Retry-After of a 503 for a broker that took nothing
BROKER_WARN_EVERY = 60.0  # seconds between two warnings of a broker that takes nothing
BROKER_WARNED = web.AppKey("broker_warned", list)  # [monotonic time of the last warning]


def broker_unavailable(request: web.Request, exc: BrokerUnavailable) -> web.Response:
    """The 503 for a request whose records the broker did not take (unreachable, or it
    refused them): nothing was accepted, send again. One warning a minute names the error."""
    now = time.monotonic()
    warned = request.app.get(BROKER_WARNED, [-BROKER_WARN_EVERY])  # set by api.app.create_app
    if now - warned[0] >= BROKER_WARN_EVERY:
        warned[0] = now
        log.warning(
            "the broker took nothing on %s %s (PERSONA_BROKER_URL): %s; answering 503",
            request.method,
            logged_path(request.path),
            exc,
        )
    answer = problem(
        503,
        "Broker unavailable",
        "the event broker cannot be reached: send the request again later (an event sent "
        "twice is applied once, by its event_id)",
    )
    answer.headers["Retry-After"] = str(BROKER_RETRY_AFTER)
    return answer


def unreadable_body(exc: web.RequestPayloadError) -> web.Response:
    """The 400 problem for a body aiohttp could not read (it was a 500): one that does not
    inflate as its `Content-Encoding` says (corrupt, or not compressed), or whose framing broke
    off. The connection is closed: its parser cannot tell where the next request starts."""
    if isinstance(exc.__cause__, ContentEncodingError):
        detail = NOT_INFLATING
    else:
        detail = "the request body could not be read"
    answer = problem(400, "Bad body", detail)
    answer.force_close()
    return answer


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
        response = problem(401, "Unauthorized", _unauthorized(keys, secret, authorization, feeds))
        response.headers["WWW-Authenticate"] = (
            'Basic realm="persona feeds"' if feeds else 'Bearer realm="persona"'
        )
        return None, response
    if scope not in key.scopes:
        return key.name, problem(403, "Forbidden", f"this key lacks the {scope} scope")
    return key.name, None


def _unauthorized(
    keys: KeyRing, secret: str | None, authorization: str = "", feeds: bool = False
) -> str:
    """The 401's detail: what to send, or why the key sent is not taken (it said "send
    Authorization: Bearer <api key>" to requests that had sent one, and to Basic credentials
    a feed route could not read)."""
    if not secret:
        scheme, _, value = authorization.partition(" ")
        if feeds and scheme.lower() == "basic":
            return f"HTTP Basic: {basic_password(value)[1]}"
        if feeds:
            return "send Authorization: Bearer <api key>, or HTTP Basic with the key as password"
        return "send Authorization: Bearer <api key>"
    if not keys.keys:
        return (
            "this process has no API keys (PERSONA_API_KEYS or PERSONA_API_KEYS_FILE; "
            "`persona run` makes <data dir>/local-api-key)"
        )
    return "the API key sent is not one of this process's keys"


async def authorize_hop(request: web.Request, scope: str) -> tuple[str | None, web.Response | None]:
    """`authorize` for a forwarded request: its signed hop instead of a bearer (api/hops.py)."""
    hop = await hops.verify(request)
    if isinstance(hop, str):
        response = problem(401, "Unauthorized", f"{hop}: forwarded requests are signed")
        response.headers["WWW-Authenticate"] = 'Bearer realm="persona"'
        response = request.app[THROTTLE].refusal(request.remote, response)
        if request.can_read_body:  # a body the refusal left unread (past the bound) stays so
            leave_unread(request, response)
        return None, response
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
    scope = request_scope(request)
    if scope is None:
        return await handler(request)
    if HOP_HEADER in request.headers:  # forwarded by another Persona process (api/hops.py)
        name, refusal = await authorize_hop(request, scope)
        request[HOPPED] = refusal is None
    else:
        name, refusal = authorize(request, scope)
    if refusal is not None:  # audited: the key's name on a 403, the address always
        key = name or ""
        refused(request.app, request.remote, refusal.status, key, request.method, request.path)
        return refusal
    assert name is not None
    request[KEY_NAME] = name
    return await handler(request)
