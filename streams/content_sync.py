"""The content index (engine.similarity) kept current from the catalog table, in the worker and
in the readers (issue 17 item 4: a product is recommendable as soon as it is in the catalog).

The worker indexes each catalog record as its agent stores it or as the table's changelog brings
it (`apply`), and reads the whole table once after its recovery (`sync`: the rows kept in RocksDB
from earlier runs never pass through either). A reader sees the catalog only as the worker's
RocksDB files: after a catch-up moved them it reads the whole table again (`diff`, in a thread)
and applies what changed (`apply_changes`, on the event loop, where the index is read). Each
side moves its `catalog_generation` after a sync that changed the index, so cached blocks and
recommendations are made again.

Besides the index (engine.similarity: about 1 KB per product) this keeps a fingerprint of each
product's stored row (`hash` of the bytes, ~100 bytes per product with its dict entry), so a pass
over the table decodes only the rows that changed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from engine.catalog import Product
from engine.similarity import ContentIndex

log = logging.getLogger("persona.content")

Change = tuple[str, Product | None]  # (item id, the product now; None: gone)


def _decode(key: Any, raw: Any) -> tuple[str, Product | None] | None:
    """(item id, product) of a catalog row; product None for a tombstone; None for a row that is
    not a product (logged once per row at debug level: the catalog agent dead-letters bad input
    before it is stored)."""
    try:
        item_id = key.decode() if isinstance(key, bytes) else str(key)
        return item_id, (Product.unpack(raw) if raw else None)
    except Exception as exc:
        log.debug("catalog row %r is not a product: %s", key, exc)
        return None


class CatalogContent:
    """A `ContentIndex` plus the fingerprints of the rows it was built from."""

    def __init__(self, index: ContentIndex | None = None) -> None:
        self.index = index or ContentIndex()
        self._seen: dict[str, int] = {}  # item id -> hash of its row when last read by `diff`
        self.synced = False  # a whole pass over the table was applied

    def put(self, product: Product) -> None:
        self.index.put(product)

    def remove(self, item_id: str) -> None:
        self.index.remove(item_id)

    def apply(self, key: Any, raw: Any) -> None:
        """One catalog row as stored (`raw` None or empty: a tombstone)."""
        decoded = _decode(key, raw)
        if decoded is not None:
            self.apply_changes([decoded])

    def diff(self, rows: Iterable[tuple[Any, Any]]) -> list[Change]:
        """What changed in the table since the last `diff`: the rows whose bytes changed and the
        items no longer in it. Reads only the fingerprints: safe in a thread while the event
        loop reads the index."""
        seen: dict[str, int] = {}
        changes: list[Change] = []
        for key, raw in rows:
            item = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
            if not raw:
                continue
            fingerprint = hash(raw)
            seen[item] = fingerprint
            if self._seen.get(item) != fingerprint:
                decoded = _decode(key, raw)
                if decoded is not None:
                    changes.append(decoded)
        changes += [(item, None) for item in self._seen.keys() - seen.keys()]
        self._seen = seen
        return changes

    def apply_changes(self, changes: Iterable[Change]) -> bool:
        """Put or remove each changed product; whether the index changed."""
        before = self.index.generation
        for item_id, product in changes:
            if product is None:
                self.index.remove(item_id)
            else:
                self.index.put(product)
        return self.index.generation != before

    def sync(self, rows: Iterable[tuple[Any, Any]]) -> bool:
        """`diff` and `apply_changes` in one go (on the event loop); whether the index changed."""
        changed = self.apply_changes(self.diff(rows))
        self.synced = True
        return changed
