"""`GET /v1/feeds/{name}`: the catalog as an ad-platform product feed, streamed.

Names: `google.tsv`, `google.xml`, `meta.csv`, `criteo.csv` (`engine.feeds`): each platform's
required attributes in its vocabulary, sale prices while effective by the wall clock, the channel
title and link from PERSONA_FEED_TITLE / PERSONA_FEED_LINK. Every catalog
product is listed (the catalog already holds only valid products with absolute URLs). Rows are
written in chunks as the catalog is iterated: a 100k-product
feed never sits in memory. Ad platforms fetch feeds with HTTP Basic: the key's secret as password
is accepted on these routes (the user name is ignored).

Hostile clients (api/limits.py): a key streams at most PERSONA_FEED_STREAMS_PER_KEY feeds at once
(one more is a 429 problem with Retry-After); a response that is not over after
PERSONA_FEED_TIMEOUT seconds (a client reading slowly or not at all) is stopped and its connection
closed, since its status is long sent, with a warning naming the key. The slot and the catalog
iterator are given back however the response ends: finished, the client gone, cancelled, cut off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

from aiohttp import web

from api.audit import refused
from api.limits import FEED_STREAMS, OPTIONS, feed_slot
from api.shared import CONTENT, KEY_NAME, problem
from engine.catalog import Product, shown_safely
from engine.feeds import CONTENT_TYPES, FEEDS, Channel, stream

log = logging.getLogger("persona.api")


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
    app = request.app
    key = request.get(KEY_NAME, "")  # set by the auth middleware: this route needs a key
    refusal = feed_slot(app, key)
    if refusal is not None:
        refused(app, request.remote, refusal.status, key, request.method, request.path)
        return refusal
    try:
        return await _send(request, name, key)
    finally:
        app[FEED_STREAMS].leave(key)


async def _send(request: web.Request, name: str, key: str) -> web.StreamResponse:
    """Stream the feed `name` within the deadline; stop and close the connection past it."""
    response = web.StreamResponse(
        headers={
            "Content-Type": f"{CONTENT_TYPES[name]}; charset=utf-8",
            "Cache-Control": "private, max-age=300",
            "Content-Disposition": f'inline; filename="{name}"',
        }
    )
    response.enable_compression()
    timeout = request.app[OPTIONS].feed_timeout
    products = _products(request)
    # all but the products whose links hold userinfo (stored before the catalog refused them:
    # engine.catalog `shown_safely` leaves them out, reported once)
    listed = (product for product in products if shown_safely(product))
    chunks = stream(name, listed, channel=_channel(request))
    written = 0
    try:
        async with asyncio.timeout(timeout):
            await response.prepare(request)
            for chunk in chunks:
                data = chunk.encode()
                await response.write(data)
                written += len(data)
                await asyncio.sleep(0)  # let other requests in between chunks
            await response.write_eof()
    except TimeoutError:
        request.app[FEED_STREAMS].timeouts += 1
        log.warning(
            "%s %s for key %r from %s stopped after %g s (PERSONA_FEED_TIMEOUT) with %d bytes "
            "of the feed written: connection closed",
            request.method,
            request.path,
            key,
            request.remote,
            timeout,
            written,
        )
        if request.transport is not None:
            request.transport.abort()  # what is buffered for a client that stopped reading too
    except ConnectionError:  # the client went away: nobody to answer
        log.debug("%s %s for key %r: the client went away", request.method, request.path, key)
    finally:  # the catalog iterator (RocksDB) is given back now, not when collected
        for iterator in (chunks, products):
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
    return response


def _channel(request: web.Request) -> Channel:
    """The shop's channel (PERSONA_FEED_TITLE, PERSONA_FEED_LINK) and the wall clock: ad
    platforms show a sale by real time, not by the event-time clock of a replay."""
    options = request.app.get(OPTIONS)
    if options is None:
        return Channel(now_ms=int(time.time() * 1000))
    return Channel(options.feed_title, options.feed_link, int(time.time() * 1000))


def register(app: web.Application) -> None:
    app.router.add_get("/v1/feeds/{name}", get_feed)
