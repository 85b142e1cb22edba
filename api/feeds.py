"""`GET /v1/feeds/{name}`: the catalog as an ad-platform product feed, streamed.

Names: `google.tsv`, `google.xml`, `meta.csv`, `criteo.csv` (`engine.feeds`): each platform's
required attributes in its vocabulary, sale prices while effective by the wall clock, the channel
title and link from PERSONA_FEED_TITLE / PERSONA_FEED_LINK. Every catalog
product is listed (the catalog already holds only valid products with absolute URLs). Rows are
written in chunks as the catalog is iterated: a 100k-product
feed never sits in memory. Ad platforms fetch feeds with HTTP Basic: the key's secret as password
is accepted on these routes (the user name is ignored).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from aiohttp import web

from api.shared import CONTENT, problem
from engine.catalog import Product
from engine.feeds import CONTENT_TYPES, FEEDS, Channel, stream


def _products(request: web.Request) -> Iterator[Product]:
    state = request.app[CONTENT].state
    products = getattr(state, "products", None)
    if products is None:
        return iter(())
    return iter(products())


async def get_feed(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in FEEDS:
        return problem(404, "Unknown feed", f"feeds are {', '.join(FEEDS)}")
    response = web.StreamResponse(
        headers={
            "Content-Type": f"{CONTENT_TYPES[name]}; charset=utf-8",
            "Cache-Control": "private, max-age=300",
            "Content-Disposition": f'inline; filename="{name}"',
        }
    )
    response.enable_compression()
    await response.prepare(request)
    for chunk in stream(name, _products(request), channel=_channel(request)):
        await response.write(chunk.encode())
        await asyncio.sleep(0)  # let other requests in between chunks
    await response.write_eof()
    return response


def _channel(request: web.Request) -> Channel:
    """The shop's channel (PERSONA_FEED_TITLE, PERSONA_FEED_LINK) and the wall clock: ad
    platforms show a sale by real time, not by the event-time clock of a replay."""
    from api.limits import OPTIONS

    options = request.app.get(OPTIONS)
    if options is None:
        return Channel(now_ms=int(time.time() * 1000))
    return Channel(options.feed_title, options.feed_link, int(time.time() * 1000))


def register(app: web.Application) -> None:
    app.router.add_get("/v1/feeds/{name}", get_feed)
