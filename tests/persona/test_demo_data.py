"""The bundled demo data reads with the product's own readers and stays small."""

from __future__ import annotations

from pathlib import Path

from engine.sources import ReadStats, read_catalog, read_events

DEMO = Path(__file__).resolve().parents[2] / "persona" / "demo"


def test_demo_files_are_small_and_attributed() -> None:
    size = sum(p.stat().st_size for p in DEMO.glob("*.gz"))
    assert size < 5 * 1024 * 1024
    assert "doi:10.24432/C5BW33, CC BY 4.0" in (DEMO / "README.md").read_text()


def test_demo_catalog_and_orders_read() -> None:
    products = {p.item_id: p for p in read_catalog(DEMO / "catalog.jsonl.gz")}
    assert len(products) > 3000
    assert all(p.url.startswith("https://shop.example.com/") for p in products.values())
    stats = ReadStats()
    events = list(read_events(DEMO / "orders.csv.gz", stats=stats))
    assert stats.format == "uci" and stats.invalid == 0
    assert len(events) > 50_000
    known = sum(1 for e in events if e.item_id in products)
    assert known / len(events) > 0.95
