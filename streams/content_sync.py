"""The content index (engine.similarity) kept current from the catalog table, in the worker and
in the readers (issue 17 item 4: a product is recommendable as soon as it is in the catalog).

The worker indexes each catalog record as its agent stores it or as the table's changelog brings
it (`apply`), and reads the whole table once after its recovery (`sync`, on the event loop with a
turn for the stream every STEP rows: the rows kept in RocksDB from earlier runs never pass through
either; a record applied meanwhile wins). A reader sees the catalog only as the worker's RocksDB
files: after a catch-up moved them it reads the whole table again (`diff`, in a thread) and
applies what changed (`apply_async`, on the event loop, where the index is read). Each
side moves its `catalog_generation` after a sync that changed the index, so cached blocks and
recommendations are made again.

Besides the index (engine.similarity: about 1 KB per product) this keeps a fingerprint of each
product's stored row (`hash` of the bytes, ~100 bytes per product with its dict entry), so a pass
over the table decodes only the rows that changed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from engine.catalog import Product
from engine.similarity import ContentIndex

log = logging.getLogger("persona.content")

Change = tuple[str, Product | None]  # (item id, the product now; None: gone)
STEP = 500  # rows read or applied between two turns of the event loop


def _decode(key: Any, raw: Any) -> tuple[str, Product | None] | None:
    """(item id, product) of a catalog row; product None for a tombstone; None for a row that is
    not a product (logged once per row at debug level: the catalog fold dead-letters bad input
    before it is stored)."""
    try:
        item_id = key.decode() if isinstance(key, bytes) else str(key)
        return item_id, (Product.unpack(raw) if raw else None)
    except Exception as exc:
        log.debug("catalog row %r is not a product: %s", key, exc)
        return None


class CatalogContent:
    """A `ContentIndex` plus the fingerprints of the rows it was built from."""

    def __init__(
        self,
        index: ContentIndex | None = None,
        warm: Callable[[str, Product], None] | None = None,
    ) -> None:
        self.index = index or ContentIndex()
        # given each product a `sync` decodes that was not applied one by one since it began
        # (the worker's fold memo: streams/read_side.FoldProducts.warm)
        self._warm = warm
        self._seen: dict[str, int] = {}  # item id -> hash of its row when last read by `diff`
        self._touched: set[str] | None = None  # items applied one by one while a sync runs
        self.synced = False  # a whole pass over the table was applied
        # progress, for readiness while the first pass runs (only ever grows)
        self.rows_read = 0
        self.changes_applied = 0

    def indexing(self) -> str:
        """What /readyz says while the first pass runs; it changes as the pass moves on (a
        supervisor waiting for readiness tells a slow start from a stuck one by that)."""
        return (
            f"indexing the catalog's content: {self.rows_read:,} rows read, "
            f"{self.changes_applied:,} applied"
        )

    def put(self, product: Product) -> None:
        self._touch(product.item_id)
        self.index.put(product)

    def remove(self, item_id: str) -> None:
        self._touch(item_id)
        self.index.remove(item_id)

    def _touch(self, item_id: str) -> None:
        if self._touched is not None:
            self._touched.add(item_id)

    def apply(self, key: Any, raw: Any) -> None:
        """One catalog row as stored (`raw` None or empty: a tombstone). Counts as applied one by
        one even when it is no product: a sync must not warm what it read of the item before."""
        self._touch(key.decode(errors="replace") if isinstance(key, bytes) else str(key))
        decoded = _decode(key, raw)
        if decoded is not None:
            item_id, product = decoded
            if product is None:
                self.remove(item_id)
            else:
                self.put(product)

    def diff(self, rows: Iterable[tuple[Any, Any]]) -> list[Change]:
        """What changed in the table since the last `diff`: the rows whose bytes changed and the
        items no longer in it. Reads only the fingerprints: safe in a thread while the event
        loop reads the index."""
        seen: dict[str, int] = {}
        changes: list[Change] = []
        self._read(rows, seen, changes)
        return self._finish(seen, changes)

    def _read(
        self,
        rows: Iterable[tuple[Any, Any]],
        seen: dict[str, int],
        out: list[Change],
        warm: Callable[[str, Product], None] | None = None,
    ) -> None:
        """Fingerprint `rows`, decoding those that changed into `out`; with `warm` (a sync on the
        event loop, where one-by-one applies happen between chunks), give it each decoded product
        not applied one by one since the sync began: a product applied later drops what `warm`
        kept itself (the worker forgets a changed product before it applies it here)."""
        touched = self._touched or ()
        for key, raw in rows:
            self.rows_read += 1
            item = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
            if not raw:
                continue
            fingerprint = hash(raw)
            seen[item] = fingerprint
            if self._seen.get(item) != fingerprint:
                decoded = _decode(key, raw)
                if decoded is not None:
                    out.append(decoded)
                    product = decoded[1]
                    if warm is not None and product is not None and item not in touched:
                        warm(item, product)

    def _finish(self, seen: dict[str, int], changes: list[Change]) -> list[Change]:
        changes += [(item, None) for item in self._seen.keys() - seen.keys()]
        self._seen = seen
        return changes

    def apply_changes(self, changes: Iterable[Change]) -> bool:
        """Put or remove each changed product, but those applied one by one (`put`, `remove`,
        `apply`) since the sync began; whether the index changed."""
        before = self.index.generation
        touched = self._touched or ()
        for item_id, product in changes:
            if item_id in touched:
                continue
            if product is None:
                self.index.remove(item_id)
            else:
                self.index.put(product)
        return self.index.generation != before

    async def apply_async(self, changes: list[Change], step: int = STEP) -> bool:
        """`apply_changes` for what a whole pass over the table found (`diff`, `sync`), giving
        the event loop a turn every `step` changes; then the index is `synced`."""
        changed = False
        for start in range(0, len(changes), step):
            chunk = changes[start : start + step]
            changed = self.apply_changes(chunk) or changed
            self.changes_applied += len(chunk)
            await asyncio.sleep(0)
        self.synced = True
        return changed

    async def sync(self, rows: Iterable[tuple[Any, Any]], step: int = STEP) -> bool:
        """Read the whole table and apply what changed, on the event loop, giving it a turn
        every `step` rows; a record applied one by one meanwhile wins over what this pass read
        for the same item. Whether the index changed (False when a sync is already running)."""
        if self._touched is not None:
            return False
        self._touched = set()
        try:
            seen: dict[str, int] = {}
            changes: list[Change] = []
            iterator = iter(rows)
            while chunk := list(itertools.islice(iterator, step)):
                self._read(chunk, seen, changes, self._warm)
                await asyncio.sleep(0)
            changed = await self.apply_async(self._finish(seen, changes), step)
        finally:
            self._touched = None
        return changed
