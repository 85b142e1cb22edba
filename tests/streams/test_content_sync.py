"""The content index follows the catalog table in the worker (catalog records, changelog records,
the rows kept from earlier runs) and in a reader (the worker's RocksDB files), issue 17 item 4."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from engine.catalog import Product
from engine.settings import Settings
from engine.similarity import features
from streams.app import PersonaStreams
from streams.content_sync import CatalogContent
from streams.read_side import FoldProducts
from streams.readers import SecondaryState
from tests.streams.test_catalog_cache import record
from tests.streams.test_readers import PARTITIONS, Primary


def product(item_id: str, title: str, availability: str = "in_stock") -> Product:
    return Product(
        item_id,
        title,
        f"https://shop.test/p/{item_id}",
        "https://shop.test/i.jpg",
        12.0,
        "EUR",
        availability,
        category="Garden",
    )


HOSE, HOSE2 = product("hose", "garden hose green"), product("hose2", "garden hose blue")


def alike(content: CatalogContent, item_id: str) -> list[str]:
    return [i for i, _ in content.index.similar(item_id, 10)]


def test_the_workers_index_follows_changelog_records(tmp_path: Path) -> None:
    streams = PersonaStreams(Settings(data_dir=tmp_path), "kafka://127.0.0.1:9")
    streams.catalog.apply_changelog_batch(
        [record(b"hose", HOSE.pack(), 0), record(b"hose2", HOSE2.pack(), 1)]
    )
    assert alike(streams.content, "hose") == ["hose2"]
    gone = product("hose2", "garden hose blue", "out_of_stock")
    streams.catalog.apply_changelog_batch([record(b"hose2", gone.pack(), 2)])
    assert alike(streams.content, "hose") == []
    streams.catalog.apply_changelog_batch([record(b"hose2", HOSE2.pack(), 3)])
    streams.catalog.apply_changelog_batch([record(b"hose2", None, 4)])  # tombstone
    assert "hose2" not in streams.content.index and alike(streams.content, "hose") == []


def keep(streams: PersonaStreams, partition: int, rows: dict[bytes, bytes]) -> None:
    """Rows in a catalog partition's RocksDB, as an earlier run left them (no changelog apply)."""
    db = cast(Any, streams.catalog.data)._db_for_partition(partition)
    for key, value in rows.items():
        db[key] = value


async def test_the_worker_indexes_the_rows_kept_from_earlier_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    streams = PersonaStreams(Settings(data_dir=tmp_path), "kafka://127.0.0.1:9")
    keep(streams, 0, {b"hose": HOSE.pack(), b"junk": b"\xc1not a product"})
    keep(streams, 1, {b"hose2": HOSE2.pack()})
    monkeypatch.setattr(streams, "_recovered", lambda: "tables recovering")
    await streams._sync_content()
    assert len(streams.content.index) == 0  # not before the tables are recovered
    monkeypatch.setattr(streams, "_recovered", lambda: "ok")
    generation = streams.catalog_generation
    await streams._sync_content()
    assert alike(streams.content, "hose") == ["hose2"] and "junk" not in streams.content.index
    assert streams.catalog_generation > generation and streams.content.synced


async def test_a_partition_opened_during_the_pass_does_not_restart_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faust opens a catalog partition's database when its first record arrives, also while
    the pass over the kept rows gives the stream a turn: the pass reads on (the table's own
    `items()` stopped with "dictionary changed size during iteration" and began again), and
    the rows of the partition opened meanwhile are indexed too."""
    streams = PersonaStreams(Settings(data_dir=tmp_path), "kafka://127.0.0.1:9")
    many = {f"mat-{n}".encode(): product(f"mat-{n}", f"door mat {n}").pack() for n in range(1200)}
    keep(streams, 0, many)
    monkeypatch.setattr(streams, "_recovered", lambda: "ok")
    syncing = asyncio.create_task(streams._sync_content())
    await asyncio.sleep(0)  # the pass has read its first rows and given the loop a turn
    assert not syncing.done()
    keep(streams, 3, {b"hose": HOSE.pack()})  # a partition opened now, its row kept earlier
    await syncing
    assert streams.content.synced
    assert len(streams.content.index) == 1201 and "hose" in streams.content.index


async def test_the_workers_api_is_ready_once_the_kept_rows_are_indexed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted worker answers /readyz 503 until the catalog kept from earlier runs is in its
    content index (else recommendations and similar items lacked content neighbours meanwhile);
    the stream's own readiness (triggers, the position audit) does not wait for it."""
    from persona.worker import StreamState

    streams = PersonaStreams(Settings(data_dir=tmp_path), "kafka://127.0.0.1:9")
    keep(streams, 2, {b"hose": HOSE.pack(), b"hose2": HOSE2.pack()})
    monkeypatch.setattr(streams, "_recovered", lambda: "ok")
    monkeypatch.setattr(streams, "ready", lambda: (True, "ok"))
    state = StreamState(streams, Any)  # type: ignore[arg-type]  # any models: loaded
    assert state.ready() == (
        False, "indexing the catalog's content: 0 rows read, 0 applied"
    )  # fmt: skip
    await streams._sync_content()
    assert state.ready() == (True, "ok") and "hose" in state.content_index


async def test_a_readers_index_follows_the_workers_files(tmp_path: Path) -> None:
    primary = Primary(tmp_path)
    try:
        primary.put("catalog", 1, b"hose", HOSE.pack())
        state = SecondaryState(tmp_path, PARTITIONS, tmp_path / "secondary")
        state.refresh()
        await state._sync_content(time.monotonic() + 60)
        assert len(state.content_index) == 1 and state.content_index.similar("hose", 5) == []

        primary.put("catalog", 3, b"hose2", HOSE2.pack())
        state.refresh()
        generation = state.catalog_generation
        await state._sync_content(time.monotonic())  # due only a moment after the change
        assert "hose2" not in state.content_index
        await state._sync_content(time.monotonic() + 60)
        assert [i for i, _ in state.content_index.similar("hose", 5)] == ["hose2"]
        assert state.catalog_generation > generation  # cached recommendations are made again

        del primary.dbs[("catalog", 3)][b"hose2"]
        state.refresh()
        await state._sync_content(time.monotonic() + 60)
        assert "hose2" not in state.content_index
        await state.stop()
    finally:
        primary.close()


async def test_a_record_applied_during_a_sync_wins_over_what_the_sync_read() -> None:
    content = CatalogContent()
    newer = product("hose2", "garden hose red")
    filler = [(f"f{n}".encode(), product(f"f{n}", f"filler {n}").pack()) for n in range(40)]

    def rows() -> Iterator[tuple[bytes, bytes]]:
        yield b"hose2", HOSE2.pack()  # read before the record below is applied
        yield from filler
        content.put(newer)  # the catalog fold, during the sync's turn for the loop
        yield b"hose", HOSE.pack()

    assert await content.sync(rows(), step=10)
    assert content.index.get("hose2") == features(newer) and "hose" in content.index
    assert len(content.index) == 42 and content.synced


async def test_a_pass_decodes_only_the_rows_that_changed() -> None:
    content = CatalogContent()
    assert await content.sync([(b"hose", HOSE.pack()), (b"hose2", HOSE2.pack())])
    assert content.diff([(b"hose", HOSE.pack()), (b"hose2", HOSE2.pack())]) == []
    moved = product("hose2", "garden hose red")
    assert content.diff([(b"hose", HOSE.pack()), (b"hose2", moved.pack())]) == [("hose2", moved)]
    assert content.diff([(b"hose2", moved.pack())]) == [("hose", None)]


async def test_the_workers_pass_after_a_start_warms_the_folds_product_memo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows kept from earlier runs are in the fold's memo once the pass has read them: the
    catch-up's first sighting of each product reads nothing (issue 21 item 5)."""
    streams = PersonaStreams(Settings(data_dir=tmp_path), "kafka://127.0.0.1:9")
    keep(streams, 0, {b"hose": HOSE.pack(), b"junk": b"\xc1not a product"})
    keep(streams, 1, {b"hose2": HOSE2.pack()})
    monkeypatch.setattr(streams, "_recovered", lambda: "ok")
    await streams._sync_content()
    memo = streams._fold_products
    assert sorted(memo._entries) == ["hose", "hose2"]
    assert memo.get("hose") == (HOSE.fold_view(),)

    def no_read(key: bytes) -> bytes | None:
        raise AssertionError(f"read {key!r} from the table")

    assert memo.lookup("hose2", no_read) == HOSE2.fold_view()


async def test_a_changelog_record_applied_during_the_pass_wins_in_the_fold_memo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A product changed by a changelog record while the pass runs is never kept from the
    pass's (older) read of its row, before or after the pass read it."""
    streams = PersonaStreams(Settings(data_dir=tmp_path), "kafka://127.0.0.1:9")
    many = {f"mat-{n}".encode(): product(f"mat-{n}", f"door mat {n}").pack() for n in range(1200)}
    old_rug = product("zz-rug", "old rug").pack()
    keep(
        streams, 0, {**many, b"zz-hose": product("zz-hose", "old hose").pack(), b"zz-rug": old_rug}
    )
    monkeypatch.setattr(streams, "_recovered", lambda: "ok")
    syncing = asyncio.create_task(streams._sync_content())
    await asyncio.sleep(0)  # the pass has read its first chunk (mat-0...) and warmed it
    assert not syncing.done() and "mat-0" in streams._fold_products
    red, blue = product("mat-0", "door mat red"), product("zz-hose", "garden hose blue")
    streams.catalog.apply_changelog_batch(
        [
            record(b"mat-0", red.pack(), 0),
            record(b"zz-hose", blue.pack(), 1),
            record(b"zz-rug", b"\xc1not a product", 2),  # stored as sent: no product now
        ]
    )
    await syncing
    memo = streams._fold_products
    assert "mat-0" not in memo and "zz-hose" not in memo  # forgotten, not warmed again
    assert "zz-rug" not in memo and streams._fold_product("zz-rug") is None
    assert streams._fold_product("mat-0") == red.fold_view()
    assert streams._fold_product("zz-hose") == blue.fold_view()
    assert "mat-1199" in memo


async def test_warming_never_drops_or_replaces_an_entry() -> None:
    memo = FoldProducts(max_entries=2, max_bytes=10**6)
    memo.put("hose", (HOSE2.fold_view(),), 100)  # what the fold read itself: kept as it is
    content = CatalogContent(warm=memo.warm)
    rows = [
        (b"hose", HOSE.pack()),
        (b"a", product("a", "a").pack()),
        (b"b", product("b", "b").pack()),
    ]
    await content.sync(rows)
    assert list(memo._entries) == ["hose", "a"] and memo.get("hose") == (HOSE2.fold_view(),)
    small = FoldProducts(max_entries=100, max_bytes=1)
    CatalogContent(warm=small.warm)._read(rows, {}, [], small.warm)
    assert len(small) == 0  # no room in bytes: nothing kept
