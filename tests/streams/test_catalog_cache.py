"""The fold's product cache follows catalog changes made by other workers: they arrive as
changelog records of the catalog table (Faust's real RocksDB store, no broker needed)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from faust.types import TP

from engine.catalog import Product
from engine.settings import Settings
from streams.app import PersonaStreams


def record(key: bytes, value: bytes | None, offset: int, partition: int = 0) -> SimpleNamespace:
    """A changelog event as Faust's recovery hands it to `apply_changelog_batch`."""
    topic = "persona-catalog-changelog"
    return SimpleNamespace(
        message=SimpleNamespace(
            tp=TP(topic, partition), offset=offset, partition=partition, key=key, value=value
        )
    )


def product(price: float) -> Product:
    return Product(
        "sku-1", "Lamp", "https://shop.test/p/1", "https://shop.test/i/1.jpg", price, "EUR"
    )


def test_changelog_records_replace_cached_products(tmp_path: Path) -> None:
    streams = PersonaStreams(Settings(data_dir=tmp_path), "kafka://127.0.0.1:9")
    assert streams.product("sku-1") is None  # unknown, and remembered as unknown
    generation = streams.catalog_generation

    lamp = product(10.0)
    streams.catalog.apply_changelog_batch([record(b"sku-1", lamp.pack(), 0)])
    assert streams.product("sku-1") == lamp
    assert streams.catalog_generation > generation

    cheaper = product(8.0)
    streams.catalog.apply_changelog_batch([record(b"sku-1", cheaper.pack(), 1)])
    assert streams.product("sku-1") == cheaper

    streams.catalog.apply_changelog_batch([record(b"sku-1", None, 2)])  # tombstone
    assert streams.product("sku-1") is None


def test_the_product_cache_is_bounded_in_bytes(tmp_path: Path, monkeypatch) -> None:
    from streams import app as streams_app

    monkeypatch.setattr(streams_app, "PRODUCT_CACHE_BYTES", 1024 * 1024)
    streams = PersonaStreams(Settings(data_dir=tmp_path), "kafka://127.0.0.1:9")
    big = "d" * 5000  # the largest description a product may have
    for n in range(2000):  # ~10 MB of products, against a 1 MiB bound
        item = Product(
            f"sku-{n}", "T", "https://s.test/p", "https://s.test/i.jpg", 1.0, "EUR", description=big
        )
        streams.catalog.apply_changelog_batch([record(item.item_id.encode(), item.pack(), n)])
        assert streams.product(item.item_id) == item
        assert streams._products.bytes <= 1024 * 1024
    assert len(streams._products) < 80


def test_products_are_read_from_any_partition_of_the_catalog(tmp_path: Path) -> None:
    """The fold reads catalog rows straight from the global table's RocksDB partitions: the
    partition Kafka's default partitioner places the item on first, then the others (a producer
    may have sent a product to another partition of the catalog topic). Unknown items stay
    unknown."""
    from engine.placement import partition

    settings = Settings(data_dir=tmp_path)
    streams = PersonaStreams(settings, "kafka://127.0.0.1:9")
    n = settings.partitions
    placed, elsewhere = (
        product(10.0),
        Product("sku-2", "Rug", "https://shop.test/p/2", "https://shop.test/i/2.jpg", 3.0, "EUR"),
    )
    home = partition(b"sku-2", n)
    streams.catalog.apply_changelog_batch(
        [
            record(b"sku-1", placed.pack(), 0, partition(b"sku-1", n)),
            record(b"sku-2", elsewhere.pack(), 0, (home + 1) % n),
        ]
    )
    assert streams.product("sku-1") == placed
    assert streams.product("sku-2") == elsewhere
    assert streams.product("sku-3") is None


def test_the_folds_product_views_follow_changelog_records(tmp_path: Path) -> None:
    """The fold reads products through its own memo of views (`Product.fold_view`): a
    changelog record of another worker's catalog update replaces the view, a tombstone makes
    the item unknown, as for the whole products."""
    streams = PersonaStreams(Settings(data_dir=tmp_path), "kafka://127.0.0.1:9")
    fold_product = streams._fold_reads.product
    assert fold_product("sku-1") is None  # unknown, and remembered as unknown

    streams.catalog.apply_changelog_batch([record(b"sku-1", product(10.0).pack(), 0)])
    assert fold_product("sku-1") == product(10.0).fold_view()
    assert streams.product("sku-1") == product(10.0)  # the reads' memo keeps whole products

    streams.catalog.apply_changelog_batch([record(b"sku-1", product(8.0).pack(), 1)])
    assert fold_product("sku-1") == product(8.0).fold_view()

    streams.catalog.apply_changelog_batch([record(b"sku-1", None, 2)])  # tombstone
    assert fold_product("sku-1") is None


def test_the_folds_product_views_are_bounded_in_bytes(tmp_path: Path, monkeypatch) -> None:
    """The views drop what the fold does not read (a 5,000-character description here), so the
    same bound holds many more of them than of whole products."""
    from streams import app as streams_app

    monkeypatch.setattr(streams_app, "FOLD_PRODUCTS_BYTES", 1024 * 1024)
    streams = PersonaStreams(Settings(data_dir=tmp_path), "kafka://127.0.0.1:9")
    big = "d" * 5000
    for n in range(4000):
        item = Product(
            f"sku-{n}", "T", "https://s.test/p", "https://s.test/i.jpg", 1.0, "EUR", description=big
        )
        streams.catalog.apply_changelog_batch([record(item.item_id.encode(), item.pack(), n)])
        assert streams._fold_reads.product(item.item_id) == item.fold_view()
        assert streams._fold_products.bytes <= 1024 * 1024
    assert 1000 < len(streams._fold_products) < 4000


def test_a_fold_view_counts_at_least_what_its_objects_take() -> None:
    """The fold memo's byte bound is real memory: views of products with short and with long
    category and brand names (tracemalloc) never take more than `fold_view_cost` accounts."""
    import tracemalloc

    from streams.read_side import fold_view_cost

    rows = [
        Product(
            f"item-{n:06d}",
            f"Title {n}",
            f"https://s.test/p/{n}",
            "https://s.test/i.jpg",
            1.0 + n,
            "EUR",
            category=f"category {n % 50}" * (1 + n % 3) * (40 if n % 7 == 0 else 1),
            brand=f"brand {n % 300}",
            description="words " * 100,
        ).pack()
        for n in range(2000)
    ]

    def measured() -> tuple[int, int]:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            kept = [
                (f"item-{n:06d}", Product.unpack(raw).fold_view()) for n, raw in enumerate(rows)
            ]
            taken = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        return taken, sum(fold_view_cost(key, view) for key, view in kept)

    # the least of three passes: a pass may also pay for memory that is not the views' (the
    # interpreter's table of interned strings growing when the views intern their names, a
    # thread of an earlier test allocating meanwhile: seen once in a whole-suite run)
    taken, cost = min(measured() for _ in range(3))
    assert taken <= cost, (taken, cost)
