"""`GET /v1/items/{item_id}/similar`: items like this one, as the `similar_items` block.

`?n=` (1..50), `?format=html|json` and the other block parameters (engine.params) but
`context_item`, which is the path's item. The block is the item's co-occurrence neighbours in the
active recs model that are in stock and pass the filters, never the item itself; the best-sellers
(`fallback` true, reason `nothing_similar`) when none is. It belongs to no user (`user_id` ""),
so any process answers it from its own catalog and models (no routing). 404 for an item not in
the catalog; ETag / If-None-Match as for user blocks.
"""

from __future__ import annotations

from aiohttp import web

from api.block_headers import response
from api.block_routes import not_modified, parse_query
from api.shared import CONTENT, bad_param, problem, shown_id
from engine.blocks import FORMATS
from engine.params import BlockParams, InvalidParam

ROUTE = "/v1/items/{item_id}/similar"


def parse(request: web.Request) -> tuple[str, BlockParams]:
    """(format, parameters) of the query string; InvalidParam for a bad one (`format` given
    twice too)."""
    query = request.query if request.query_string else None
    if query is not None and "context_item" in query:
        raise InvalidParam("context_item", "is the path's item on this route")
    fmt, params = parse_query(query)  # as a user block GET reads it
    if isinstance(params, InvalidParam):
        raise params
    return fmt, params


async def get_similar(request: web.Request) -> web.Response:
    item_id = request.match_info["item_id"]
    try:
        fmt, params = parse(request)
    except InvalidParam as exc:
        return bad_param(exc)
    if fmt not in FORMATS:
        return problem(
            400, "Bad format", f"format is one of {', '.join(FORMATS)}", parameter="format"
        )
    if not 1 <= len(item_id) <= 128:
        return problem(400, "Bad item id", "item ids are 1..128 characters")
    block = request.app[CONTENT].similar_block(item_id, fmt, params)
    if block is None:
        return problem(404, "Unknown item", f"item {shown_id(item_id)} is not in the catalog")
    return response(block, not_modified(block, request.headers.get("If-None-Match")))


def register(app: web.Application) -> None:
    app.router.add_get(ROUTE, get_similar)
