from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from engine.catalog import InvalidProduct
from engine.events import InvalidEvent
from engine.profile import is_reversal
from engine.sources import (
    ReadStats,
    SourceError,
    detect_format,
    nice_title,
    read_catalog,
    read_events,
    uci_catalog,
    uci_category,
)

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"{SHARED} is missing (public data sets live outside the repo)"
)

UCI = """InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom
536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom
536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom
536366,22633,"HAND WARMER, UNION JACK",6,2010-12-01 08:28:00,1.85,,United Kingdom
C536379,D,Discount,-1,2010-12-01 09:41:00,27.5,14527.0,United Kingdom
536400,85123A,WHITE HANGING HEART T-LIGHT HOLDER,2,2010-12-02 10:00:00,2.95,13047,United Kingdom
"""
REES = (
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
    "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde\n"
    "2019-10-01 00:00:05 UTC,cart,3900821,2053013552326770905,app.heater,,33.20,554748717,93\n"
    "2019-10-01 00:00:09 UTC,purchase,3900821,2053013552326770905,app.heater,aqua,33.20,"
    "554748717,93\n"
)
OTTO = [
    {
        "session": 7,
        "events": [
            {"aid": 11, "ts": 1659304800025, "type": "clicks"},
            {"aid": 12, "ts": 1659304900000, "type": "carts"},
            {"aid": 12, "ts": 1659305000000, "type": "orders"},
        ],
    }
]


def write(path: Path, text: str, gz: bool = False) -> Path:
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_uci_rows_become_purchases(tmp_path: Path, gz: bool) -> None:
    # a misleading name: the format is detected from content, compression from magic bytes
    path = write(tmp_path / "retail.txt", UCI, gz)
    stats = ReadStats()
    events = list(read_events(path, stats=stats))
    assert stats.format == "uci"
    assert stats.skipped == {"guest": 1}
    assert len(events) == 5 and stats.reversals == 1
    cancellation = events[3]  # C536379: a cancellation takes the purchase back
    assert cancellation.type == "purchase" and is_reversal(cancellation)
    assert (cancellation.item_id, cancellation.quantity) == ("D", 1)
    assert cancellation.props == {"order_id": "C536379", "cancelled": True}
    assert not any(is_reversal(e) for e in events[:3] + events[4:])
    first = events[0]
    assert first.type == "purchase"
    assert first.user_id == "17850"
    assert first.item_id == "85123A"
    assert first.quantity == 6
    assert first.price == 2.55
    assert first.currency == "GBP"
    assert first.ts == 1291191960000  # 2010-12-01T08:26:00Z
    assert first.session_id == "536365"
    assert first.props == {"order_id": "536365"}
    assert events[4].user_id == "13047"
    # identical rows still get distinct ids
    assert len({e.event_id for e in events}) == 5
    assert all(e.event_id.startswith("uci-") for e in events)


def test_public_format_ids_are_deterministic(tmp_path: Path) -> None:
    a = write(tmp_path / "a.csv", UCI)
    b = write(tmp_path / "b.csv.gz", UCI, gz=True)
    assert [e.event_id for e in read_events(a)] == [e.event_id for e in read_events(b)]


def test_rees46_mapping(tmp_path: Path) -> None:
    events = list(read_events(write(tmp_path / "r.csv", REES)))
    assert [e.type for e in events] == ["product_view", "add_to_cart", "purchase"]
    assert events[0].props == {"category": "2103807459595387724", "brand": "shiseido"}
    assert events[2].props == {"category": "app.heater", "brand": "aqua"}
    assert events[1].currency == "USD"
    assert events[1].price == 33.2
    assert events[1].session_id == "93"
    assert events[0].ts == 1569888000000
    assert all(e.event_id.startswith("rees-") for e in events)


def test_otto_mapping(tmp_path: Path) -> None:
    path = write(tmp_path / "o.jsonl", "".join(json.dumps(s) + "\n" for s in OTTO))
    assert detect_format(path) == "otto"
    events = list(read_events(path))
    assert [e.type for e in events] == ["product_view", "add_to_cart", "purchase"]
    assert {e.user_id for e in events} == {"otto-7"}
    assert events[0].item_id == "11"
    assert events[0].ts == 1659304800025
    assert events[0].event_id == next(iter(read_events(path))).event_id


def test_contract_jsonl_and_errors(tmp_path: Path) -> None:
    good = {"event_id": "e1", "type": "page_view", "user_id": "u1", "ts": "2024-01-01T00:00:00Z"}
    lines = [json.dumps(good), "", "{not json", json.dumps({**good, "type": "nope"})]
    path = write(tmp_path / "e.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(InvalidEvent, match="line 3"):
        list(read_events(path))
    errors: list[SourceError] = []
    events = list(read_events(path, errors=errors))
    assert [e.event_id for e in events] == ["e1"]
    assert [e.line for e in errors] == [3, 4]
    assert "unknown event type" in errors[1].reason


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown event file format"):
        list(read_events(write(tmp_path / "x.csv", "a,b,c\n1,2,3\n")))


PRODUCT = {
    "item_id": "p1",
    "title": "Lantern",
    "url": "https://shop.example.com/p1",
    "image_url": "https://shop.example.com/p1.jpg",
    "price": "3.5",
    "currency": "gbp",
    "availability": "in_stock",
    "category": "Lantern",
    "brand": "",
}


@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_catalog_csv_and_tsv(tmp_path: Path, delimiter: str) -> None:
    header = delimiter.join(PRODUCT)
    good = delimiter.join(str(v) for v in PRODUCT.values())
    bad = good.replace("https://shop.example.com/p1.jpg", "/p1.jpg")
    path = write(tmp_path / "feed.txt", "\n".join([header, good, bad]) + "\n")
    with pytest.raises(InvalidProduct, match="line 3: image_url"):
        list(read_catalog(path))
    errors: list[SourceError] = []
    products = list(read_catalog(path, errors=errors))
    assert len(products) == 1
    assert products[0].price == 3.5
    assert products[0].currency == "GBP"
    assert errors == [SourceError(3, errors[0].reason)]


def test_catalog_jsonl_gz(tmp_path: Path) -> None:
    text = json.dumps(PRODUCT) + "\n" + json.dumps({**PRODUCT, "item_id": "p2", "price": -1})
    path = write(tmp_path / "feed.jsonl.gz", text + "\n", gz=True)
    errors: list[SourceError] = []
    assert [p.item_id for p in read_catalog(path, errors=errors)] == ["p1"]
    assert errors[0].line == 2


def test_uci_catalog(tmp_path: Path) -> None:
    products = {p.item_id: p for p in uci_catalog(write(tmp_path / "u.csv", UCI))}
    assert set(products) == {"85123A", "71053", "22633"}  # "D" (discount) is not a product
    holder = products["85123A"]
    assert holder.title == "White Hanging Heart T-Light Holder"
    assert holder.price == 2.95  # the latest price
    assert holder.currency == "GBP"
    assert holder.category == "Holder"
    assert holder.url == "https://shop.example.com/products/85123A"
    assert holder.image_url == "https://shop.example.com/images/85123A.jpg"
    assert products["22633"].category == "Warmer"


def test_titles_and_categories() -> None:
    assert nice_title("SET OF 3 CAKE TINS PANTRY DESIGN") == "Set of 3 Cake Tins Pantry Design"
    assert nice_title("RIBBON REEL 50CM") == "Ribbon Reel 50cm"
    assert nice_title("PAPER CHAIN KIT 50'S CHRISTMAS") == "Paper Chain Kit 50's Christmas"
    assert uci_category("JUMBO BAG RED RETROSPOT") == "Bag"
    assert uci_category("60 CAKE CASES VINTAGE CHRISTMAS") == "Case"
    assert uci_category("SET/6 RED SPOTTY PAPER CUPS") == "Cup"
    assert uci_category("??") == "Other"


@needs_shared
def test_shared_uci_file() -> None:
    stats = ReadStats()
    count = sum(
        1 for _ in read_events(SHARED / "uci_online_retail/online_retail.csv.gz", [], stats)
    )
    assert stats.rows == 541_909
    assert count == stats.events > 390_000
    assert stats.skipped["guest"] > 100_000
    assert stats.reversals > 8_000  # cancellations of customers' order lines
    assert stats.invalid == 0


@needs_shared
def test_shared_rees46_and_otto() -> None:
    rees = list(read_events(SHARED / "rees46_oct2019_head/2019-Oct_head.csv.gz"))
    assert len(rees) == 17_434
    assert {e.type for e in rees} <= {"product_view", "add_to_cart", "purchase", "remove_from_cart"}
    otto = list(read_events(SHARED / "otto_fixture/train_fixture.jsonl"))
    assert len(otto) == 862
    assert len({e.user_id for e in otto}) == 20
    assert len({e.event_id for e in otto}) == 862


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[" * 100_000 + "]" * 100_000, "invalid JSON: nested too deeply"),
        ('{"a":' * 50_000 + "1" + "}" * 50_000, "invalid JSON: nested too deeply"),
        (
            '{"event_id": "e9", "type": "product_view", "user_id": "u", "item_id": "i", "ts": '
            + "1" * 5_000
            + "}",
            "4300 digits",
        ),
    ],
    ids=["deep array", "deep object", "long integer"],
)
def test_a_hostile_json_line_is_an_error_of_its_own_line(
    tmp_path: Path, line: str, reason: str
) -> None:
    """Before, a line nested deeper than Python's stack or holding a 5,000-digit number stopped
    the whole read with a RecursionError or a ValueError (with an errors list, too)."""
    good = '{"event_id": "e%d", "type": "product_view", "user_id": "u", "item_id": "i", "ts": %d}'
    path = tmp_path / "events.jsonl"
    t = 1_700_000_000_000
    path.write_text("\n".join([good % (1, t), line, good % (2, t + 1)]) + "\n")
    errors: list[SourceError] = []
    events = list(read_events(path, errors=errors))
    assert [e.event_id for e in events] == ["e1", "e2"]
    assert [e.line for e in errors] == [2] and reason in errors[0].reason
    with pytest.raises(InvalidEvent, match=f"line 2: .*{reason}"):
        list(read_events(path))


def _repeated_key_lines() -> list[str]:
    good = '{"event_id": "e1", "type": "purchase", "user_id": "u1", "ts": 1700000000000, '
    good += '"item_id": "a", "quantity": 1}'
    twice = '{"event_id": "e2", "type": "purchase", "user_id": "u1", "ts": 1700000000000, '
    twice += '"item_id": "a", "item_id": "b", "quantity": 1}'
    props = '{"event_id": "e3", "type": "page_view", "user_id": "u1", "ts": 1700000000000, '
    props += '"props": {"path": "/", "path": "/x"}}'
    return [good, twice, props]


@pytest.mark.parametrize("history", [False, True])
def test_a_json_line_giving_a_key_twice_is_refused_naming_its_line(
    tmp_path: Path, history: bool
) -> None:
    """Replay and training kept the last value of a repeated key (json.loads's choice; other
    parsers keep the first or refuse), where POST /v1/events refuses such an object: the line
    is refused with the key named, counted as other bad lines are."""
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(_repeated_key_lines()) + "\n")
    errors: list[SourceError] = []
    stats = ReadStats()
    events = list(read_events(path, errors=errors, stats=stats, history=history))
    assert [e.event_id for e in events] == ["e1"]
    assert [e.line for e in errors] == [2, 3]
    assert "'item_id' more than once" in errors[0].reason, errors
    assert "'path' more than once" in errors[1].reason, errors
    assert stats.invalid == 2
    with pytest.raises(InvalidEvent, match=r"line 2: .*'item_id' more than once"):
        list(read_events(path, history=history))


def test_an_otto_session_or_event_giving_a_key_twice_is_refused_naming_its_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "otto.jsonl"
    ok = '{"session": 1, "events": [{"aid": 5, "ts": 1659304800000, "type": "clicks"}]}'
    session = '{"session": 2, "session": 3, "events": []}'
    event = '{"session": 4, "events": [{"aid": 5, "aid": 6, "ts": 1659304800000, '
    event += '"type": "clicks"}]}'
    path.write_text("\n".join([ok, session, event]) + "\n")
    errors: list[SourceError] = []
    events = list(read_events(path, errors=errors))
    assert [e.user_id for e in events] == ["otto-1"]
    assert [e.line for e in errors] == [2, 3]
    assert "'session' more than once" in errors[0].reason, errors
    assert "'aid' more than once" in errors[1].reason, errors
