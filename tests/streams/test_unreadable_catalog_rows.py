"""A catalog row that is not a product (the catalog table's changelog topic is open to producers
too) must not cost other users their events about the item. In-process: Faust's real RocksDB
store, no broker."""

from __future__ import annotations

import json
from pathlib import Path

from engine.fold import BatchFold, Record
from engine.placement import partition as placed
from engine.settings import Settings
from streams.app import PersonaStreams
from tests.streams.test_catalog_cache import record

PARTITIONS = 4
TS = 1_700_000_000_000


class Fixed:
    def now_ms(self) -> int:
        return TS + 60_000


def test_events_about_an_item_whose_stored_row_is_not_a_product_are_folded(
    tmp_path: Path,
) -> None:
    """The fold read the item's row as a product for each event about it and the unpack's
    error became the event's dead letter (`processing failed: ...`): one record on the catalog
    changelog dead-lettered every user's views, carts and purchases of that item."""
    streams = PersonaStreams(
        Settings(data_dir=tmp_path, partitions=PARTITIONS), "kafka://127.0.0.1:9"
    )
    streams.catalog.apply_changelog_batch([record(b"lamp", b"\xc1 not a product", 0)])
    fold: BatchFold[None] = BatchFold(streams._fold_reads, streams._fold_rules, Fixed(), {})
    steps = []
    for n, user in enumerate(["ann", "bob", "cy"]):
        event = {"event_id": f"e{n}", "type": "product_view", "user_id": user, "ts": TS}
        key = user.encode()
        value = json.dumps({**event, "item_id": "lamp"}).encode()
        steps.append(
            fold.event(Record("clickstream", placed(key, PARTITIONS), n, key, value), None)
        )
    assert [step.dead for step in steps] == [None, None, None]
    assert fold.result().counts["events"] == 3
    assert streams.product("lamp") is None  # the API's reads pass it over too
    assert list(streams.products()) == []
