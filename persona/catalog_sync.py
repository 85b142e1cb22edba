"""Catalog import and sync (issue 19 items 3-4): a feed file or URL into the `catalog` topic.

- `download`: http(s) only, at most `MAX_FEED_BYTES` and `FETCH_TIMEOUT_S`, into a private file;
  `If-None-Match`/`If-Modified-Since` from the previous pull (a 304 imports nothing). At most
  `MAX_REDIRECTS` redirects, to http(s) only; the configured URL's host may be any (the
  operator's choice), every other host a redirect names must resolve to public addresses only
  (`engine.addresses`: never loopback, link-local such as cloud metadata, or private networks),
  checked where the connection is made, so a name re-pointed between check and use is caught.
- `import_feed`: the feed's valid products into the topic (`engine.catalog_formats` reads it, in a
  worker thread that hands the GIL back often, so the worker's loop keeps serving), every
  rejected row to `reject(line, reason)` (a scheduled pull logs the first `LOGGED_REJECTS`);
  with `full`, every product of the topic that the feed does not list is produced again as
  `out_of_stock` (never deleted: a user may hold it in a cart; it comes back when a feed lists it
  again). A feed with no valid product marks nothing (an
  emptied or broken export must not take the whole shop out of stock).
- `CatalogFeeds`: the worker's schedule for `PERSONA_CATALOG_FEEDS`: each feed is pulled every
  N minutes as a full sync, retried with doubling backoff after a failure, one log line and one
  count in `persona_catalog_syncs_total{feed,outcome}` per pull. Every worker pulls: a full sync
  is idempotent (the same records again change nothing a reader sees), and `persona run` has one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from engine.addresses import internal_address, ip_literal
from engine.catalog import InvalidProduct, Product, parse_product
from engine.catalog_formats import InvalidFeed, open_binary, read_products
from engine.settings import Settings, parse_catalog_feeds
from engine.text import urls_shown
from streams.kafka_security import Broker, as_config

log = logging.getLogger("persona.catalog")
MAX_FEED_BYTES = 2 * 1024**3
FETCH_TIMEOUT_S = 600.0
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
FIRST_RETRY_S = 30.0
READ_BATCH = 1000  # products read in a worker thread at a time
YIELD_EVERY_S = 0.01  # the reading thread hands the GIL to the event loop this often ...
YIELD_PAUSE_S = 0.0005  # ... for this long
LOGGED_REJECTS = 20  # rejected rows logged per pull (the summary line counts them all)
OUTCOMES = ("imported", "not_modified", "failed")
Reject = Callable[[int, str], None]


class FeedFetchError(Exception):
    pass


@dataclass(frozen=True)
class Download:
    changed: bool  # False: 304 Not Modified, nothing written
    etag: str | None = None
    last_modified: str | None = None


@dataclass
class ImportResult:
    sent: int = 0
    rejected: int = 0
    marked_out: int = 0


def shown(url: str) -> str:
    """A feed URL for logs: scheme, host[:port] as written and path (no credentials, no query,
    no fragment); `scheme://***` for a URL that does not split (an open bracket)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{url.partition('://')[0]}://***"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def scrubbed(text: str) -> str:
    """`text` (an exception's message) with every URL in it as `shown` writes it: aiohttp's
    InvalidUrlClientError is the whole URL, the feed's or the one its host redirected to, with
    the token or signature in its query or user info."""
    return urls_shown(text, shown)


async def download(
    url: str,
    dest: Path,
    previous: Download | None = None,
    max_bytes: int = MAX_FEED_BYTES,
    timeout: float = FETCH_TIMEOUT_S,
) -> Download:
    """Fetch `url` into `dest` (0600), conditionally on `previous`'s validators, following at
    most MAX_REDIRECTS redirects (see the module docstring)."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise FeedFetchError("a feed URL must be http(s)")
    headers = {"Accept-Encoding": "gzip"}
    if previous and previous.etag:
        headers["If-None-Match"] = previous.etag
    if previous and previous.last_modified:
        headers["If-Modified-Since"] = previous.last_modified
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    trusted = (urlsplit(url).hostname or "").lower()
    connector = aiohttp.TCPConnector(resolver=_PublicBeyond(trusted))
    async with aiohttp.ClientSession(timeout=client_timeout, connector=connector) as session:
        target = url
        for _ in range(MAX_REDIRECTS + 1):
            async with session.get(target, headers=headers, allow_redirects=False) as response:
                if response.status in _REDIRECTS:
                    target = _redirect(target, response.headers.get("Location"), trusted)
                    continue
                if response.status == 304 and previous is not None:
                    return replace(previous, changed=False)
                if response.status != 200:
                    raise FeedFetchError(f"HTTP {response.status}")
                await _save(response, dest, max_bytes)
                return Download(
                    True, response.headers.get("ETag"), response.headers.get("Last-Modified")
                )
    raise FeedFetchError(f"more than {MAX_REDIRECTS} redirects")


def _redirect(current: str, location: str | None, trusted: str) -> str:
    """Where a redirect leads, if a feed may be fetched there (FeedFetchError otherwise). A host
    name is checked when it is resolved (`_PublicBeyond`); an address written out, here."""
    if not location:
        raise FeedFetchError("a redirect without a Location")
    target = urljoin(current, location)
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https"):
        raise FeedFetchError("a redirect to a URL that is not http(s)")
    host = (parts.hostname or "").lower()
    if host != trusted and ip_literal(host) and internal_address(host):
        raise FeedFetchError(f"a redirect to the internal address {host}")
    return target


class _PublicBeyond(AbstractResolver):
    """The system resolver, refusing internal addresses for every host but `trusted` (the
    configured feed URL's): a redirect can name a host that resolves to one."""

    def __init__(self, trusted: str) -> None:
        self._inner = DefaultResolver()
        self._trusted = trusted

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if host.lower() != self._trusted:
            internal = [r["host"] for r in found if internal_address(r["host"])]
            if internal:
                raise FeedFetchError(f"a redirect to {host}, an internal address ({internal[0]})")
        return found

    async def close(self) -> None:
        await self._inner.close()


async def _save(response: aiohttp.ClientResponse, dest: Path, max_bytes: int) -> None:
    size = 0
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    with os.fdopen(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        async for chunk in response.content.iter_chunked(256 * 1024):
            size += len(chunk)
            if size > max_bytes:
                raise FeedFetchError(f"the feed is larger than {max_bytes} bytes")
            out.write(chunk)


# -- into the topic -------------------------------------------------------------------------------


async def import_feed(
    broker: Broker,
    partitions: int,
    path: Path,
    fmt: str = "auto",
    mapping: dict[str, str] | None = None,
    full: bool = False,
    reject: Reject | None = None,
    progress: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> ImportResult:
    """Produce the feed at `path` into `catalog` (see the module docstring). A warning about
    the feed (a repeated column Persona does not use) goes to `warn`, else to the log."""
    from streams.produce import ALL_INPUTS, Producer, SendFailed, ensure_topics

    result = ImportResult()

    def count(line: int, reason: str) -> None:
        result.rejected += 1
        if reject is not None:
            reject(line, reason)

    await ensure_topics(broker, partitions, ALL_INPUTS)
    seen: set[str] = set()
    async with Producer(broker) as producer:
        with open_binary(path) as source:
            polite = cast(IO[bytes], _Yielding(source))
            told = warn or _logged_warning
            read = read_products(polite, fmt, mapping, count, told)
            products = _noting(read, seen if full else None)
            try:
                async for batch in _read_aside(products):
                    result.sent += await producer.send_products(
                        batch, progress=_after(result, progress)
                    )
            except InvalidFeed as exc:  # the products before it are in the topic: say so
                exc.imported = result.sent
                raise
            except SendFailed as exc:  # the broker part way: the batches before it, and its own
                exc.acknowledged += result.sent
                raise
        if full and seen:
            missing = await missing_products(broker, seen)
            result.marked_out = await producer.send_products(missing)
    return result


def _logged_warning(message: str) -> None:
    log.warning("catalog feed: %s", message)


async def _read_aside(products: Iterator[Product]) -> AsyncIterator[list[Product]]:
    """The products in batches of READ_BATCH, each read (parsed, validated, rejected) in a
    worker thread: the worker's event loop serves the API and the streams meanwhile (a feed of
    rejected rows was read on it without a single await: seconds of stall per 100,000 rows)."""
    while batch := await asyncio.to_thread(lambda: list(itertools.islice(products, READ_BATCH))):
        yield batch


class _Yielding:
    """A feed file read in a worker thread that hands the GIL over every YIELD_EVERY_S: a
    thread that reads a file takes the GIL back after each read before the event loop's thread
    gets it (CPython's convoy effect), which stalled the loop as if nothing ran aside."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self._due = time.monotonic() + YIELD_EVERY_S

    def _pause(self) -> None:
        now = time.monotonic()
        if now >= self._due:
            time.sleep(YIELD_PAUSE_S)
            self._due = now + YIELD_EVERY_S

    def read(self, size: int = -1) -> bytes:
        self._pause()
        return self._inner.read(size)

    def readline(self, size: int = -1) -> bytes:
        self._pause()
        return self._inner.readline(size)

    def peek(self, size: int = 0) -> bytes:
        """What `skip_blank_lines` reads runs of blank lines by (without it, a line at a
        time: a feed of a product and 64 MiB of newlines took a Python step per line)."""
        self._pause()
        return cast(Any, self._inner).peek(size)  # open_binary's source: it peeks

    def tell(self) -> int:
        return self._inner.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._inner.seek(offset, whence)


def _after(
    result: ImportResult, progress: Callable[[int], None] | None
) -> Callable[[int], None] | None:
    """`progress` of the products sent so far, for a batch that counts from 0."""
    if progress is None:
        return None
    done = result.sent
    return lambda sent: progress(done + sent)


def _noting(products: Iterable[Product], seen: set[str] | None) -> Iterator[Product]:
    for product in products:
        if seen is not None:
            seen.add(product.item_id)
        yield product


async def missing_products(broker: Broker, listed: set[str]) -> list[Product]:
    """Out-of-stock copies of the catalog's purchasable products that `listed` leaves out."""
    return await out_of_stock_copies(read_catalog_topic(broker), listed)


async def out_of_stock_copies(
    records: AsyncIterable[tuple[bytes, bytes | None]], listed: set[str]
) -> list[Product]:
    """Out-of-stock copies of the purchasable products of the catalog `records` (key, value;
    the later record of a key wins) that `listed` leaves out. Only those are held while the
    records are read: the products out of stock already (every earlier full sync's marks, a
    shop's discontinued items, which only grow) and the deleted ones were held decoded until the
    end, a copy of them all in memory at every sync."""
    marked: dict[str, Product] = {}
    async for key, value in records:
        item_id = key.decode("utf-8", errors="replace")
        if item_id in listed:
            continue
        try:
            product = None if value is None else parse_product(value)
        except InvalidProduct:
            continue
        if product is not None and product.purchasable:
            marked[item_id] = replace(product, availability="out_of_stock")
        else:  # deleted, or out of stock already: nothing to mark (an earlier record's undone)
            marked.pop(item_id, None)
    return list(marked.values())


async def read_catalog_topic(broker: Broker) -> AsyncIterator[tuple[bytes, bytes | None]]:
    """(key, value) of every record of `catalog`, up to each partition's end at the start."""
    consumer = AIOKafkaConsumer(
        **as_config(broker).aiokafka(), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        parts = [
            TopicPartition("catalog", p) for p in consumer.partitions_for_topic("catalog") or ()
        ]
        if not parts:
            return
        consumer.assign(parts)
        end = await consumer.end_offsets(parts)
        await consumer.seek_to_beginning(*parts)
        while not all([await consumer.position(tp) >= end[tp] for tp in parts]):
            batch = await consumer.getmany(*parts, timeout_ms=1000)
            for messages in batch.values():
                for msg in messages:
                    if msg.key is not None:
                        yield msg.key, msg.value
    finally:
        await consumer.stop()


# -- the schedule ---------------------------------------------------------------------------------


@dataclass
class FeedState:
    url: str
    minutes: float
    validators: Download | None = None
    failures: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))


class CatalogFeeds(Service):
    """Pulls `PERSONA_CATALOG_FEEDS` on their schedules (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        broker: Broker,
        first_retry_s: float = FIRST_RETRY_S,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.settings = settings
        self.broker = broker
        self.first_retry_s = first_retry_s
        feeds = parse_catalog_feeds(settings.catalog_feeds or "")
        self.feeds = [FeedState(url, minutes) for url, minutes in feeds]

    @Service.task
    async def _pull_all(self) -> None:
        await asyncio.gather(*(self._follow(index) for index in range(len(self.feeds))))

    async def _follow(self, index: int) -> None:
        feed = self.feeds[index]
        while not self.should_stop:
            ok = await self.pull(index)
            await self.sleep(self._wait_s(feed, ok))

    def _wait_s(self, feed: FeedState, ok: bool) -> float:
        interval = feed.minutes * 60
        if ok:
            return interval
        return min(interval, self.first_retry_s * 2 ** (feed.failures - 1))

    async def pull(self, index: int) -> bool:
        """One pull of feed `index`: fetched, imported as a full sync; logged and counted."""
        feed = self.feeds[index]
        started = time.monotonic()
        dest = self.settings.data_dir / "feeds" / f"feed-{index}.download"
        try:
            got = await download(feed.url, dest, feed.validators)
            if not got.changed:
                outcome, summary = "not_modified", "not modified (304)"
            else:
                result = await import_feed(
                    self.broker, self.settings.partitions, dest, full=True, reject=_log_reject(feed)
                )
                outcome = "imported"
                summary = (
                    f"{result.sent} products, {result.rejected} rejected rows, "
                    f"{result.marked_out} marked out of stock"
                )
            feed.validators, feed.failures = got, 0
        except (TimeoutError, FeedFetchError, InvalidFeed, OSError, aiohttp.ClientError) as exc:
            feed.failures += 1
            outcome, summary = "failed", scrubbed(f"{type(exc).__name__}: {exc}")[:300]
            summary += f"; retry in {self._wait_s(feed, False):.0f} s"
        except Exception as exc:  # a broker error, say: the next pull tries again
            feed.failures += 1
            outcome, summary = "failed", scrubbed(f"{type(exc).__name__}: {exc}")[:300]
        finally:
            dest.unlink(missing_ok=True)
        feed.outcomes[outcome] += 1
        level = logging.WARNING if outcome == "failed" else logging.INFO
        log.log(
            level,
            "catalog sync %s %s in %.1f s: %s",
            shown(feed.url),
            outcome,
            time.monotonic() - started,
            summary,
        )
        return outcome != "failed"

    def metric_lines(self) -> list[str]:
        name = "persona_catalog_syncs_total"
        lines = [
            f"# HELP {name} Scheduled catalog feed pulls by outcome.",
            f"# TYPE {name} counter",
        ]
        for index, feed in enumerate(self.feeds):
            for outcome, count in feed.outcomes.items():
                lines.append(f'{name}{{feed="{index}",outcome="{outcome}"}} {count}')
        return lines


def _log_reject(feed: FeedState) -> Reject:
    """A pull's rejected rows to the log: the first LOGGED_REJECTS (a feed of a million bad rows
    wrote a million warnings); the pull's summary line counts them all."""
    logged = 0

    def reject(line: int, reason: str) -> None:
        nonlocal logged
        logged += 1
        if logged <= LOGGED_REJECTS:
            log.warning("catalog sync %s: line %d rejected: %s", shown(feed.url), line, reason)
        if logged == LOGGED_REJECTS:
            log.warning("catalog sync %s: further rejected rows are counted only", shown(feed.url))

    return reject


def catalog_services(settings: Settings, broker: Broker, web_app: Any) -> list[Service]:
    """The worker's feed puller when `PERSONA_CATALOG_FEEDS` is set (else none)."""
    if not settings.catalog_feeds:
        return []
    from api.observability import TELEMETRY

    service = CatalogFeeds(settings, broker)
    web_app[TELEMETRY].text_sources.append(service.metric_lines)
    log.info(
        "catalog feeds: %s",
        ", ".join(f"{shown(f.url)} every {f.minutes:g} min" for f in service.feeds),
    )
    return [service]
