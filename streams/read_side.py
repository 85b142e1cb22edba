"""The read path the worker (streams/app.py) and its readers (streams/readers.py) share.

Both answer the API's `engine.state_view.StateView` over the same tables, the worker from its live
Faust tables, a reader from the same RocksDB files opened as secondaries. What they do alike lives
here once:
- `PartitionMemo`: Kafka's default (murmur2) partition of a user id, memoized: the pure-Python
  hash (`engine.placement`) costs about as much as the table read it leads to (the worker checks
  every event's placement with it, a reader finds the user's profiles partition with it).
- `ProductMemo`: decoded catalog products by item id (None: unknown), bounded by entries and
  accounted bytes. The worker forgets an entry when its product changes; a reader, which cannot
  tell which rows a catch-up changed, clears it when the catalog generation moves.
- `best_sellers` / `best_sellers_stepwise`: the best-seller list ranked from the popularity
  table's rows (decayed scores compare at any one time: `engine.popularity.rank_key`).
- `produce` / `erase`: events keyed by user id into their input topics, and the signed erase
  command, through whichever producer the caller has (`Send`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from itertools import islice
from typing import Any

from aiokafka.errors import KafkaError

from engine.catalog import Product, stored_product
from engine.errors import BrokerUnavailable
from engine.events import Event, encode
from engine.memo import ENTRY_OVERHEAD, SizedMemo
from engine.placement import partition
from engine.popularity import rank_key
from engine.ranking import POPULAR_KEEP, TopK
from engine.signing import Headers
from streams.admin import COMMANDS_TOPIC
from streams.backlog import Backlog
from streams.signed import RecordSigner

# An unpacked product is accounted as PRODUCT_FACTOR times its stored row plus its id (tracemalloc,
# 2026-12-05: the demo catalog's 3,926 products, 234 bytes stored, take 3.6 times that decoded).
PRODUCT_FACTOR = 6
# The best-seller ranking reads every popularity row (100,000 sold items: 4.6 % of a folding
# worker's samples at a 5 s period): the worker and the readers wait at least POPULAR_REST times
# the last ranking's length before the next (engine.pacing), so it takes at most 1/20 of the time.
POPULAR_REST = 19.0
Rows = Iterable[tuple[bytes, bytes]]
# Produce one record: (topic, key, value, headers) -> a future that resolves on the broker's ack
Send = Callable[[str, bytes, bytes, Headers | None], Awaitable["asyncio.Future[Any]"]]


def stored_products(rows: Iterable[tuple[Any, Any]]) -> Iterator[Product]:
    """The products of catalog rows (the feeds of the worker and of a reader). A row that is
    not a product is skipped: the catalog table's changelog topic is open to producers too, and
    its bookkeeping rows share the files."""
    for _, raw in rows:
        if raw:
            with contextlib.suppress(Exception):
                yield Product.unpack(raw)


class PartitionMemo(SizedMemo[bytes, int]):
    """The default partitioner's partition of a key among `partitions`, memoized."""

    def __init__(self, partitions: int, max_entries: int, max_bytes: int) -> None:
        super().__init__(max_entries, max_bytes)
        self._partitions = partitions

    def partition(self, key: bytes) -> int:
        entry = self._entries.get(key)  # a hit is one dict read (per event in the fold)
        if entry is not None:
            return entry[0]
        found = partition(key, self._partitions)
        self.put(key, found, sys.getsizeof(key))
        return found


class ProductMemo(SizedMemo[str, tuple[Product | None]]):
    """Decoded products by item id; `read` gives a product's stored row (None: unknown).
    What an entry keeps of a product (`kept`) and what it counts (`cost`) are the subclass's."""

    def lookup(self, item_id: str, read: Callable[[bytes], bytes | None]) -> Product | None:
        entry = self._entries.get(item_id)  # a hit is one dict read (per event in the fold)
        if entry is not None:
            return entry[0][0]
        raw = read(item_id.encode())
        # a row that is not a product counts as none: the fold unpacked it for every event about
        # the item, and its error dead-lettered each of them, whoever sent it
        found = stored_product(raw)
        product = None if found is None else self.kept(found)
        self.put(item_id, (product,), self.cost(item_id, raw, product))
        return product

    def kept(self, product: Product) -> Product:
        """What an entry keeps of a decoded product: all of it."""
        return product

    def cost(self, item_id: str, raw: bytes | None, product: Product | None) -> int:
        """The accounted bytes of an entry: the key and PRODUCT_FACTOR times the stored row."""
        return sys.getsizeof(item_id) + PRODUCT_FACTOR * len(raw or b"")


# A fold view's objects besides its strings (tracemalloc, 2026-12-05: 336 bytes for
# benchmarks.scale's products, whose views share their interned category, brand and currency).
FOLD_VIEW_BYTES = 400


def fold_view_cost(item_id: str, view: Product | None) -> int:
    """The accounted bytes of a `FoldProducts` entry: the key, and the view with its own
    strings (counted in full even where interning shares them)."""
    size = sys.getsizeof(item_id)
    if view is None:
        return size
    strings = (view.item_id, view.category, view.brand, view.currency)
    return size + FOLD_VIEW_BYTES + sum(sys.getsizeof(text) for text in strings)


class FoldProducts(ProductMemo):
    """The fold's products by item id, kept as `Product.fold_view` (~0.4 KB against ~0.9 KB
    for a whole decoded product): the same bytes hold twice the catalog, and each event of an
    item kept saves a RocksDB read and an unpack (issue 21 item 5: a worker folding a
    100,000-item catalog missed about half of its lookups, ~7 % of its time)."""

    def kept(self, product: Product) -> Product:
        return product.fold_view()

    def cost(self, item_id: str, raw: bytes | None, product: Product | None) -> int:
        return fold_view_cost(item_id, product)

    def warm(self, item_id: str, product: Product) -> None:
        """Keep `product`, read by a pass over the catalog (the content sync after a start),
        while there is room: never drops an entry, nor replaces one. A restarted worker then
        folds its catch-up without reading and unpacking each product on its first sighting
        (~7 % of a worker's time folding new users over a 100,000-item catalog, 2026-12-08).
        The caller keeps out products changed since its pass began (their rows may be older)."""
        if item_id in self._entries or len(self._entries) >= self.max_entries:
            return
        view = product.fold_view()
        cost = fold_view_cost(item_id, view)
        if self.bytes + cost + ENTRY_OVERHEAD <= self.max_bytes:
            self.put(item_id, (view,), cost)


class BestSellers:
    """The best POPULAR_KEEP items of the popularity rows fed to it (rows that are not a
    score are passed over)."""

    def __init__(self) -> None:
        self._top = TopK(POPULAR_KEEP)

    def add(self, rows: Rows) -> None:
        for key, raw in rows:
            rank = rank_key(raw)
            if rank is not None:
                self._top.add(rank, key.decode(errors="replace"))

    def ranked(self) -> list[str]:
        return self._top.ranked()


def best_sellers(rows: Rows) -> list[str]:
    """The best-seller list of the popularity rows, in one go (a reader, in a thread)."""
    top = BestSellers()
    top.add(rows)
    return top.ranked()


async def best_sellers_stepwise(rows: Rows, step: int) -> list[str]:
    """`best_sellers`, giving the event loop a turn every `step` rows (the worker, on its loop:
    a catalog of many thousand sold items was one long stall)."""
    top = BestSellers()
    pending = iter(rows)
    while chunk := list(islice(pending, step)):
        top.add(chunk)
        await asyncio.sleep(0)
    return top.ranked()


async def produce(send: Send, events: list[Event], backlog: Backlog | None) -> None:
    """Produce events to their input topics keyed by user id (placed as the fold expects); with a
    `backlog` (the embedded broker), return once the fold is close behind them."""
    with _broker_errors():
        futures = [await send(e.topic(), e.user_id.encode(), encode(e), None) for e in events]
        acks = await asyncio.gather(*futures)
    if backlog is not None:
        backlog.produced((m.topic, m.partition, m.offset) for m in acks)
        await backlog.settle()


def erase_command(user_id: str) -> bytes:
    return json.dumps({"command": "erase", "user_id": user_id}).encode()


async def erase(send: Send, signer: RecordSigner | None, user_id: str) -> None:
    """Queue the erasure of a user: the command, signed with the cluster secret (the fold refuses
    unsigned ones), runs in the user's partition in order with the events; returns once the
    broker acknowledged it."""
    body, key = erase_command(user_id), user_id.encode()
    headers = signer.headers(COMMANDS_TOPIC, key, body) if signer else None
    with _broker_errors():
        await (await send(COMMANDS_TOPIC, key, body, headers))


@contextlib.contextmanager
def _broker_errors() -> Iterator[None]:
    """The Kafka client's errors as BrokerUnavailable: the API answers them 503 (send again)
    instead of a 500 (a reader whose broker was down answered POST /v1/events so)."""
    try:
        yield
    except KafkaError as exc:
        raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc
