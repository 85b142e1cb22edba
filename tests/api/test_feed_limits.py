"""GET /v1/feeds/{name} against hostile clients, over a real RocksDB catalog read as a reader
does (streams.readers.SecondaryState) and served by the readers' runner (api.hot.HotRunner):

- one key holds at most `feed_streams_per_key` streams at once; one more is a 429 problem with
  Retry-After (counted with the rate-limit refusals), another key is not limited by it;
- a stream's slot is freed however it ends: read to the end, the client gone, the handler
  cancelled (aiohttp's `handler_cancellation`), cut off at the deadline;
- a client that stops reading is cut off after `feed_timeout` seconds: the connection is closed
  mid-body, a warning names the key (never its secret), and the key may stream again.

The feed (some 20 MB of TSV) is far larger than what the kernel and aiohttp buffer between the
two ends, so a client that reads nothing really holds its stream (and a catalog iterator) open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import encode_basic_auth, web
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.hot import HotRunner
from api.limits import FEED_STREAMS, LIMITER, ServingOptions
from engine.blocks import BlockPolicy, Renderer
from engine.catalog import Product
from models.registry import ModelSet
from streams.readers import SecondaryState
from tests.streams.test_readers import PARTITIONS, Primary

SECRET = "feeds-secret-0123456789abcdef"
OTHER_SECRET = "other-secret-0123456789abcdef"
KEYS = f"shop-feeds:{SECRET}:feeds:read;other:{OTHER_SECRET}:feeds:read"
PRODUCTS = 6_000
DESCRIPTION = 3_000  # characters: some 3 KB a row, 18 MB a feed
PATH = "/v1/feeds/google.tsv"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A worker's tables holding PRODUCTS products, written once for the module."""
    root = tmp_path_factory.mktemp("feed-limits")
    primary = Primary(root)
    for n in range(PRODUCTS):
        item = f"sku-{n:05d}"
        url = f"https://shop.example/p/{item}"
        words = f"{item} lamp brass shade warm light " * (DESCRIPTION // 40)
        product = Product(item, f"Lamp {item}", url, url + ".jpg", 20.0, "EUR", description=words)
        primary.put("catalog", n % PARTITIONS, item.encode(), product.pack())
    primary.close()
    return root


class ReaderTestServer(TestServer):
    """A test server run by `HotRunner` as the reader processes serve: without aiohttp's
    `handler_cancellation` (which TestServer turns on) unless `cancel_handlers`."""

    def __init__(self, app: web.Application, cancel_handlers: bool = False) -> None:
        super().__init__(app)
        self.cancel_handlers = cancel_handlers

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        kwargs["handler_cancellation"] = self.cancel_handlers
        return HotRunner(self.app, **kwargs)


Serve = Callable[..., Awaitable[TestClient]]
OPEN: list[RawStream] = []  # the raw streams of the running test


@pytest.fixture
async def serve(data_dir: Path, tmp_path: Path) -> AsyncIterator[Serve]:
    """serve(options, cancel_handlers=False) -> a started client of a reader's API on the
    catalog."""
    states: list[SecondaryState] = []
    clients: list[TestClient] = []

    async def start(options: ServingOptions, cancel_handlers: bool = False) -> TestClient:
        state = SecondaryState(data_dir, PARTITIONS, tmp_path / f"secondary-{len(states)}")
        state.refresh()
        states.append(state)
        content = ContentService(state, ModelSet.default(), Renderer(), BlockPolicy())
        app = create_app(content, KeyRing.from_settings(KEYS, None), options)
        client = TestClient(ReaderTestServer(app, cancel_handlers))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    while OPEN:  # a failed test leaves its stalled streams: the server would wait for them
        OPEN.pop().abort()
    for client in clients:
        await client.close()
    for state in states:
        await state.stop()


class RawStream:
    """A feed request on a raw socket that reads the response's head, then only when told."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, client: TestClient, secret: str = SECRET) -> RawStream:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(
            f"GET {PATH} HTTP/1.1\r\nHost: feeds\r\nAuthorization: Bearer {secret}\r\n"
            "Connection: close\r\n\r\n".encode()  # no Accept-Encoding: the body as is
        )
        await writer.drain()
        stream = cls(reader, writer)
        OPEN.append(stream)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 200 "), head[:200]
        assert b"transfer-encoding: chunked" in head.lower()
        return stream

    async def rows(self) -> tuple[int, bool]:
        """Read the rest: (feed lines received, whether the chunked body was complete)."""
        body = bytearray()
        complete = False
        try:
            while True:
                size_line = await self.reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    complete = True
                    break
                body += await self.reader.readexactly(size + 2)
                del body[-2:]
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        return body.count(b"\n"), complete

    def abort(self) -> None:
        """Go away without reading: unread data makes the kernel reset the connection."""
        self.writer.transport.abort()


async def status_of(client: TestClient, secret: str = SECRET) -> tuple[int, int]:
    """(status, feed lines) of a feed request read to its end."""
    response = await client.get(PATH, headers={"Authorization": f"Bearer {secret}"})
    text = await response.text()
    return response.status, text.count("\n")


async def eventually_served(client: TestClient) -> tuple[int, int]:
    """The first answer to the key that is not a 429 (its slot may take a moment to be freed
    once the connection is gone), waiting at most 30 s."""
    for _ in range(300):
        status, rows = await status_of(client)
        if status != 429:
            return status, rows
        await asyncio.sleep(0.1)
    return 429, 0


def limited(client: TestClient) -> int:
    app = client.app
    assert app is not None
    return app[LIMITER].limited


async def test_a_third_stream_of_one_key_is_refused_and_another_key_is_not(serve: Serve) -> None:
    client = await serve(ServingOptions())  # the default: 2 streams per key
    await RawStream.open(client)
    await RawStream.open(client)
    response = await client.get(PATH, headers={"Authorization": f"Bearer {SECRET}"})
    assert response.status == 429
    assert response.content_type == "application/problem+json"
    assert int(response.headers["Retry-After"]) >= 1
    body = await response.json()
    assert body["status"] == 429 and "PERSONA_FEED_STREAMS_PER_KEY" in body["detail"]
    assert limited(client) == 1  # counted with the rate-limit refusals
    metrics = await (await client.get("/metrics")).text()
    assert "persona_http_rate_limited_total 1" in metrics
    assert "persona_http_feed_streams 2" in metrics
    # HTTP Basic with the same key is the same key
    basic = {"Authorization": encode_basic_auth("merchant-center", SECRET)}
    refused = await client.get(PATH, headers=basic)
    assert refused.status == 429
    # another key streams the whole feed meanwhile
    assert await status_of(client, OTHER_SECRET) == (200, PRODUCTS + 1)


async def test_a_stream_read_to_its_end_frees_its_slot(serve: Serve) -> None:
    client = await serve(ServingOptions(feed_streams_per_key=1))
    stream = await RawStream.open(client)
    assert (await status_of(client))[0] == 429
    assert await stream.rows() == (PRODUCTS + 1, True)
    assert await eventually_served(client) == (200, PRODUCTS + 1)


async def test_a_client_gone_mid_stream_frees_its_slot(serve: Serve) -> None:
    client = await serve(ServingOptions(feed_streams_per_key=1))
    stream = await RawStream.open(client)
    assert (await status_of(client))[0] == 429
    stream.abort()
    assert await eventually_served(client) == (200, PRODUCTS + 1)


async def test_a_cancelled_stream_frees_its_slot(serve: Serve) -> None:
    """With aiohttp's `handler_cancellation`, a client going away cancels the handler: the
    slot is freed by the cancellation (without it, as `persona` serves, by the failed write)."""
    client = await serve(ServingOptions(feed_streams_per_key=1), cancel_handlers=True)
    stream = await RawStream.open(client)
    assert (await status_of(client))[0] == 429
    stream.abort()
    assert await eventually_served(client) == (200, PRODUCTS + 1)


async def test_a_client_that_stops_reading_is_cut_off_at_the_deadline(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    client = await serve(ServingOptions(feed_streams_per_key=1, feed_timeout=1.0))
    caplog.set_level(logging.WARNING, logger="persona.api")
    stream = await RawStream.open(client)
    for _ in range(300):  # the server gives up on the stalled client (at most 30 s here)
        if any("shop-feeds" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.1)
    rows, complete = await asyncio.wait_for(stream.rows(), 30)
    assert not complete and rows < PRODUCTS + 1  # the connection was closed mid-body
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("shop-feeds" in w and "PERSONA_FEED_TIMEOUT" in w for w in warnings), warnings
    assert not any(SECRET in w for w in warnings)
    # the slot is free again: the key may start a feed (not read here: reading the whole feed
    # could itself take longer than this test's short deadline on a busy machine)
    response = await client.get(PATH, headers={"Authorization": f"Bearer {SECRET}"})
    assert response.status == 200
    response.close()
    app = client.app
    assert app is not None
    assert app[FEED_STREAMS].timeouts == 1
