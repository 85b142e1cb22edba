"""The block GET and the profile GET (thin: parse -> decide -> respond).

`decide` is the one function that decides a block GET: the key and its scope, the key's rate
limit, the parameters, the block, and whether it is answered 304. Its callers keep only their own
parsing and writing: `hot_middleware`, `Front.answer` and `Front.wire` (api/hot.py), which answer
block GETs ahead of the middleware chain. The route handler `get_block` answers the block GETs
the chain gates (its middlewares checked the key and the limit): it calls `block_lookup` and
`not_modified`, the second half of `decide`.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from multidict import MultiMapping

from api.auth import KeyRing
from api.block_headers import header_lines, response
from api.content import ContentService
from api.gate import authorize_header, authorize_peer
from api.limits import LIMITER, THROTTLE, AuthThrottle, RateLimiter, limited
from api.shared import CONTENT, KEYS, bad_param, problem, scope_for, shown_id, single
from engine.blocks import ALL_BLOCKS, CONTEXT_BLOCKS, FORMATS, Block, models_header
from engine.params import NO_PARAMS, BlockParams, InvalidParam, from_query


@dataclass(slots=True)
class BlockGet:
    """A block GET as its caller parsed it: the decoded path, its parts, the format, the
    parameters (or the error parsing them), and the headers and peer address that matter."""

    path: str
    user_id: str
    block: str
    fmt: str
    params: BlockParams | InvalidParam
    authorization: str
    if_none_match: str | None
    remote: str | None


@dataclass(slots=True)
class Decision:
    """What a block GET is answered: `status`, the key's name (for the audit of a refusal), and
    either the block (200, or 304 when `unchanged`) or the refusal's problem response; `lines`:
    the answer's header lines, for a tentative decision (api/block_headers.py)."""

    status: int
    name: str | None
    block: Block | None = None
    unchanged: bool = False
    refusal: web.Response | None = None
    lines: bytes | None = None


HAND_ON = Decision(0, None)  # `decide(..., tentative=True)`: the application must answer it


class Gate:
    """What `decide` reads: the content, the keys, the rate limiter and the failed-authentication
    throttle of one application."""

    __slots__ = ("content", "keys", "limiter", "throttle")

    def __init__(
        self, content: ContentService, keys: KeyRing, limiter: RateLimiter, throttle: AuthThrottle
    ) -> None:
        self.content = content
        self.keys = keys
        self.limiter = limiter
        self.throttle = throttle

    @classmethod
    def of(cls, app: web.Application) -> Gate:
        return cls(app[CONTENT], app[KEYS], app[LIMITER], app[THROTTLE])


def decide(gate: Gate, get: BlockGet, tentative: bool = False) -> Decision:
    """The answer to a block GET, in the middleware chain's order: 401/403 (or 429 for an address
    with too many failed authentications), 429 over the key's rate limit, 400 for a bad
    parameter, 404/400 for an unknown block or format or a bad user id, then the block.

    `tentative` (`Front.wire`): answered only when it can be written here in full (a 200 or 304
    with writable header lines), else HAND_ON and nothing counted against the key or the address:
    the application answers it, and decides again."""
    scope = scope_for(get.path, "GET")
    assert scope is not None  # the block route is never public
    if tentative:
        name, refusal = authorize_header(gate.keys, get.authorization, scope)
    else:
        name, refusal = authorize_peer(
            gate.keys, gate.throttle, get.authorization, scope, get.remote
        )
    if refusal is None and not tentative:
        refusal = limited(gate.limiter, name)
    if refusal is None:
        refusal, block = block_lookup(gate.content, get.user_id, get.block, get.fmt, get.params)
    if refusal is not None:
        return HAND_ON if tentative else Decision(refusal.status, name, refusal=refusal)
    assert block is not None
    unchanged = not_modified(block, get.if_none_match)
    status = 304 if unchanged else 200
    if not tentative:
        return Decision(status, name, block, unchanged)
    lines = header_lines(block, unchanged)
    if lines is None or not _within_limit(gate.limiter, name):
        return HAND_ON
    return Decision(status, name, block, unchanged, lines=lines)


def _within_limit(limiter: RateLimiter, name: str | None) -> bool:
    """Whether a tentative answer's key is within its rate limit (checked last: a request
    handed on takes no token here)."""
    if limiter.check(name):
        limiter.limited -= 1  # the application refuses it again, and counts it
        return False
    return True


async def get_block(request: web.Request) -> web.StreamResponse:
    return block_response(request)


def block_response(request: web.Request) -> web.Response:
    """GET /v1/users/{id}/blocks/{block} behind the chain's middlewares (the key and the limit
    checked): synchronous, a cached block is a lookup."""
    return block_answer(request)[0]


def block_answer(request: web.Request) -> tuple[web.Response, Block | None]:
    """The chain's block GET response, and the block it answers with (None for a 4xx)."""
    match = request.match_info
    fmt, params = parse_query(request.query if request.query_string else None)
    content = request.app[CONTENT]
    refused, block = block_lookup(content, match["user_id"], match["block"], fmt, params)
    if block is None:
        assert refused is not None
        return refused, None
    return response(block, not_modified(block, request.headers.get("If-None-Match"))), block


def parse_query(query: MultiMapping[str] | None) -> tuple[str, BlockParams | InvalidParam]:
    """(format, parameters) of a block GET's query (None: no query string); the parameters are
    the error parsing them for a bad one (engine.params; `format` given twice too)."""
    if query is None:
        return "html", NO_PARAMS
    try:
        fmt = single(query, "format", "html")
    except InvalidParam as exc:
        return "html", exc
    if len(query) == 1 and "format" in query:
        return fmt, NO_PARAMS
    try:
        return fmt, from_query(query.items())
    except InvalidParam as exc:
        return fmt, exc


def block_lookup(
    content: ContentService,
    user_id: str,
    block_name: str,
    fmt: str,
    params: BlockParams | InvalidParam = NO_PARAMS,
) -> tuple[web.Response | None, Block | None]:
    """(None, the block) for a valid block GET, else (its 4xx problem, None)."""
    if isinstance(params, InvalidParam):
        return bad_param(params), None
    if block_name not in ALL_BLOCKS:
        return problem(404, "Unknown block", f"blocks are {', '.join(ALL_BLOCKS)}"), None
    if fmt not in FORMATS:
        return problem(
            400, "Bad format", f"format is one of {', '.join(FORMATS)}", parameter="format"
        ), None
    if not 1 <= len(user_id) <= 128:
        return problem(400, "Bad user id", "user ids are 1..128 characters"), None
    if block_name in CONTEXT_BLOCKS and params.context_item is None:
        return bad_param(InvalidParam("context_item", f"{block_name} needs one")), None
    return None, content.block(user_id, block_name, fmt, params=params)


def not_modified(block: Block, if_none_match: str | None) -> bool:
    """Whether a GET with this If-None-Match header is answered 304 for `block`: one of its
    tags is the block's (weak or strong), or it holds `*`, which matches any current
    representation (RFC 9110 13.1.2), and every block of every user has one."""
    if not if_none_match:
        return False
    tags = _etags(if_none_match)
    return block.etag in tags or "*" in tags


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


async def get_profile(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    view = request.app[CONTENT].profile_view(user_id)
    if view is None:
        return problem(404, "Unknown user", f"no events were seen for user {shown_id(user_id)}")
    return web.json_response(view, headers={"X-Persona-Model": models_header(view["models"])})
