"""The block GET and the profile GET (thin: parse -> api.content -> respond)."""

from __future__ import annotations

from aiohttp import web

from api.content import ContentService
from api.shared import CONTENT, problem
from engine.blocks import ALL_BLOCKS, CONTEXT_BLOCKS, FORMATS, Block, models_header
from engine.params import NO_PARAMS, BlockParams, InvalidParam, from_query


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
