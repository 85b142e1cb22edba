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
