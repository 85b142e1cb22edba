"""Catalog import by URL and the scheduled full sync (issue 19 items 3-4), against a real embedded
broker of this module's own (a full sync marks the rest of a catalog out of stock: the session
broker's catalog belongs to other tests) and a local aiohttp server with ETags."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web

from engine.catalog import Product, parse_product
from engine.settings import load_settings
from persona.catalog_sync import (
    CatalogFeeds,
    Download,
    FeedFetchError,
    download,
    import_feed,
    read_catalog_topic,
)
from streams.broker import EmbeddedBroker, free_port
from streams.kafka_security import client_config
from tests.conftest import ROOT, http, metric, start_worker, wait_until

FEEDS = ROOT / "tests" / "engine" / "feeds"
RSS = (FEEDS / "google-rss.xml").read_bytes()
pytestmark = pytest.mark.integration


@dataclass
class FeedServer:
    """Serves `body` at /feed with `etag`; answers 500 `fail_next` times; logs each request."""

    body: bytes = RSS
    etag: str = '"v1"'
    fail_next: int = 0
    seen: list[tuple[str | None, int]] = field(default_factory=list)  # If-None-Match, status
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        condition = request.headers.get("If-None-Match")
        status = 200
        if self.fail_next:
            self.fail_next -= 1
            status = 500
        elif condition == self.etag:
            status = 304
        self.seen.append((condition, status))
        if status != 200:
            return web.Response(status=status)
        return web.Response(body=self.body, headers={"ETag": self.etag})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/feed"


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("sync-broker") / "broker.log"
    with EmbeddedBroker(log_file=log) as running:
        yield running


async def big(_: web.Request) -> web.Response:
    return web.Response(body=b"x" * 100_000)


async def moved(request: web.Request) -> web.Response:
    """/moved?to=URL: a 302 to URL (a feed host, or whoever took it over, steering the pull);
    /moved?to= (empty): a 302 to itself, for ever."""
    to = request.query["to"] or str(request.rel_url)
    return web.Response(status=302, headers={"Location": to})


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "persona", "catalog", "import", *args],
        cwd=ROOT,
        env=dict(os.environ, PERSONA_PARTITIONS="4"),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def server() -> Iterator[FeedServer]:
    feed = FeedServer(port=free_port())
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/feed", feed.handle)
    app.router.add_get("/big", big)
    app.router.add_get("/moved", moved)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", feed.port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield feed
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def catalog(broker_url: str) -> dict[str, Product]:
    async def read() -> dict[str, Product]:
        broker = client_config(load_settings(env={}), broker_url)
        return {
            key.decode(): parse_product(value)
            async for key, value in read_catalog_topic(broker)
            if value is not None
        }

    return asyncio.run(read())


def test_scheduled_pulls_use_etags_retry_and_sync_fully(
    own_broker: EmbeddedBroker,
    server: FeedServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = load_settings(
        env={
            "PERSONA_CATALOG_FEEDS": f"{server.url}?token=s3cret@5",
            "PERSONA_DATA_DIR": str(tmp_path),
            "PERSONA_PARTITIONS": "4",
        }
    )
    feeds = CatalogFeeds(settings, client_config(settings, own_broker.url), first_retry_s=10)
    caplog.set_level(logging.INFO, "persona.catalog")

    async def pulls(n: int) -> list[bool]:
        return [await feeds.pull(0) for _ in range(n)]

    assert asyncio.run(pulls(2)) == [True, True]
    assert server.seen[-2:] == [(None, 200), ('"v1"', 304)]
    products = catalog(own_broker.url)
    assert products["85123A"].sale_price == 1.99 and products["22423"].availability == "preorder"
    assert "bad-price" not in products

    # the feed drops 22423; the server fails twice first
    server.body = RSS.replace(b"<g:id>22423</g:id>", b"<g:id>22424</g:id>")
    server.etag, server.fail_next = '"v2"', 2
    assert asyncio.run(pulls(2)) == [False, False]
    assert feeds._wait_s(feeds.feeds[0], False) == 20  # 10 s, then doubled
    assert asyncio.run(pulls(1)) == [True]
    products = catalog(own_broker.url)
    assert products["22423"].availability == "out_of_stock"  # kept, not deleted
    assert products["22424"].availability == "preorder"
    assert feeds.feeds[0].outcomes == {"imported": 2, "not_modified": 1, "failed": 2}
    assert 'persona_catalog_syncs_total{feed="0",outcome="failed"} 2' in feeds.metric_lines()
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        "imported" in line and "1 rejected rows, 1 marked out of stock" in line for line in lines
    )
    assert sum("failed" in line and "HTTP 500" in line for line in lines) == 2
    assert not any("s3cret" in line for line in lines)  # the URL's token stays out of the log


def test_a_full_sync_of_a_feed_without_products_marks_nothing(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    broker = client_config(load_settings(env={}), own_broker.url)
    empty = tmp_path / "empty.tsv"
    empty.write_text("id\ttitle\tlink\timage_link\tprice\n")
    before = catalog(own_broker.url)
    result = asyncio.run(import_feed(broker, 4, empty, full=True, reject=lambda *_: None))
    assert (result.sent, result.marked_out) == (0, 0)
    assert catalog(own_broker.url) == before


def test_downloads_are_http_only_and_bounded(server: FeedServer, tmp_path: Path) -> None:
    with pytest.raises(FeedFetchError, match="http"):
        asyncio.run(download("file:///etc/passwd", tmp_path / "f"))
    with pytest.raises(FeedFetchError, match="larger than 1000 bytes"):
        asyncio.run(download(server.url.replace("/feed", "/big"), tmp_path / "f", max_bytes=1000))
    got = asyncio.run(download(server.url, tmp_path / "f", Download(True, '"nope"')))
    assert got.changed and (tmp_path / "f").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("http://localhost:{port}/feed", "localhost"),  # another host name, a loopback address
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),  # cloud metadata
        ("http://[::ffff:10.0.0.1]/admin", "10.0.0.1"),  # a private address, IPv4-mapped
        ("http://0.0.0.0:{port}/feed", "0.0.0.0"),
        ("file:///etc/passwd", "http"),
        ("ftp://feeds.example/feed.xml", "http"),
    ],
)
def test_a_feed_redirect_never_leads_to_an_internal_address_or_another_scheme(
    server: FeedServer, tmp_path: Path, target: str, why: str
) -> None:
    """The feed's own host is the operator's choice (it may be internal); a redirect to another
    host must lead to a public address: a feed host redirecting to loopback, link-local (cloud
    metadata) or a private network got Persona to fetch it and import or log what it said."""
    url = server.url.replace("/feed", "/moved")
    to = target.format(port=server.port)
    with pytest.raises(FeedFetchError, match=why.replace(".", r"\.").replace("[", r"\[")):
        asyncio.run(download(f"{url}?to={quote(to)}", tmp_path / "f", timeout=10))
    assert not (tmp_path / "f").exists()


def test_a_feed_may_redirect_on_its_own_host_a_bounded_number_of_times(
    server: FeedServer, tmp_path: Path
) -> None:
    url = server.url.replace("/feed", "/moved")
    got = asyncio.run(download(f"{url}?to=/feed", tmp_path / "f", timeout=10))
    assert got.changed and (tmp_path / "f").read_bytes() == server.body
    loop = f"{url}?to={quote(f'{url}?to=/feed')}"  # 2 hops: fine
    assert asyncio.run(download(loop, tmp_path / "g", timeout=10)).changed
    endless = f"{url}?to=/moved%3Fto%3D/moved%253Fto%253D"  # /moved?to=/moved?to=/moved?to=...
    with pytest.raises(FeedFetchError, match="more than 5 redirects"):
        asyncio.run(download(endless, tmp_path / "h", timeout=10))


def test_cli_imports_by_url_with_a_map_and_reports_each_rejected_row(
    own_broker: EmbeddedBroker, server: FeedServer, tmp_path: Path
) -> None:
    server.body, server.etag = (FEEDS / "custom.csv").read_bytes(), '"csv"'
    mapping = str(FEEDS / "custom-map.json")
    result = cli(server.url, "--format", "csv", "--map", mapping, "--broker", own_broker.url)
    assert result.returncode == 1, result.stderr  # a row was rejected; the other imported
    assert "line 3 rejected: image_url must be an absolute http(s) URL" in result.stderr
    assert "catalog import: 1 products, 1 rows rejected" in result.stderr
    assert catalog(own_broker.url)["m-1"].title == "Mapped kettle"
    hostile = cli(str(FEEDS / "billion-laughs.xml"), "--broker", own_broker.url)
    assert hostile.returncode == 1 and "document type declaration" in hostile.stderr
    assert "lol" not in catalog(own_broker.url)


def test_cli_full_marks_what_the_feed_leaves_out(own_broker: EmbeddedBroker) -> None:
    broker = client_config(load_settings(env={}), own_broker.url)
    rss = FEEDS / "google-rss.xml"
    asyncio.run(import_feed(broker, 4, rss, reject=lambda *_: None))
    before = catalog(own_broker.url)
    assert before["85123A"].availability == "in_stock"
    result = cli(str(FEEDS / "google.tsv"), "--full", "--broker", own_broker.url)
    assert result.returncode == 1, result.stderr  # t-3's availability is rejected
    assert "line 4 rejected: availability must be one of" in result.stderr
    after = catalog(own_broker.url)
    assert after["85123A"].availability == "out_of_stock"  # kept, not deleted
    assert after["t-1"].availability == "in_stock" and after["t-1"].sale_price == 6.5
    assert [item for item in before if item not in after] == []  # nothing deleted
    marked = sum(p.purchasable for k, p in before.items() if k not in ("t-1", "t-2"))
    assert f"{marked} missing products marked out of stock" in result.stderr


def test_a_worker_pulls_persona_catalog_feeds_on_schedule(
    own_broker: EmbeddedBroker, server: FeedServer, tmp_path: Path
) -> None:
    server.body, server.etag = RSS, '"worker"'
    worker = start_worker(
        own_broker.url,
        tmp_path / "worker",
        {"PERSONA_CATALOG_FEEDS": f"{server.url}@0.05", "PERSONA_FEED_TITLE": "Example Shop"},
    )
    try:

        def listed() -> bool:
            status, _, body = http("GET", worker.base + "/v1/feeds/google.tsv")
            return status == 200 and b"85123A\tWhite Hanging Heart" in body

        wait_until(listed, timeout=120, what="the pulled feed's products in the worker's feed")
        unchanged = 'persona_catalog_syncs_total{feed="0",outcome="not_modified"}'
        wait_until(lambda: metric(worker.base, unchanged) >= 1, timeout=60, what="a 304 pull")
        assert ('"worker"', 304) in server.seen
        log = worker.log.read_text()
        assert f"catalog sync {server.url} imported" in log
        assert "line 39 rejected: price must be a number" in log
    finally:
        worker.stop()


def test_cli_refuses_other_schemes_and_reports_an_unreachable_url(tmp_path: Path) -> None:
    ftp = cli("ftp://shop.example.com/feed.xml", "--broker", "kafka://127.0.0.1:9")
    assert ftp.returncode == 2 and "ftp:// feeds are not fetched: http(s) only" in ftp.stderr
    gone = cli(f"http://127.0.0.1:{free_port()}/feed.xml", "--broker", "kafka://127.0.0.1:9")
    assert gone.returncode == 1 and "cannot fetch the feed" in gone.stderr
    assert "Traceback" not in gone.stderr


def test_a_pull_of_a_hostile_feed_leaves_the_worker_answering(
    own_broker: EmbeddedBroker,
    server: FeedServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """200,000 rows that are all rejected: the pull read them on the worker's event loop without
    a single await (its API and stream stalled for the whole feed, seconds here) and logged one
    warning per row."""
    rows = b"".join(b'{"item_id": "r%d"}\n' % i for i in range(200_000))
    settings = load_settings(
        env={
            "PERSONA_CATALOG_FEEDS": f"{server.url}@5",
            "PERSONA_DATA_DIR": str(tmp_path),
            "PERSONA_PARTITIONS": "4",
        }
    )
    feeds = CatalogFeeds(settings, client_config(settings, own_broker.url))
    caplog.set_level(logging.INFO, "persona.catalog")

    async def pull_while_ticking() -> tuple[bool, float]:
        longest, done = 0.0, asyncio.Event()

        async def tick() -> None:
            nonlocal longest
            loop = asyncio.get_running_loop()
            last = loop.time()
            while not done.is_set():
                await asyncio.sleep(0.005)
                longest, last = max(longest, loop.time() - last), loop.time()

        ticker = asyncio.create_task(tick())
        try:
            return await feeds.pull(0), longest
        finally:
            done.set()
            await ticker

    saved = server.body, server.etag
    server.body, server.etag = rows, '"hostile"'
    try:
        ok, longest = asyncio.run(pull_while_ticking())
    finally:
        server.body, server.etag = saved
    assert ok
    rejected = [r for r in caplog.records if "rejected:" in r.getMessage()]
    assert rejected and all(r.thread != threading.get_ident() for r in rejected)  # read aside
    # the loop ticks every 5 ms; the bound is generous for a shared machine (5.4 s on the loop)
    assert longest < 1.0, f"the event loop stalled {longest:.2f} s"
    lines = [r.getMessage() for r in caplog.records]
    assert sum("rejected:" in line for line in lines) <= 20
    assert any("200000 rejected rows" in line for line in lines)
