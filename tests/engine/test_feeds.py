"""Product feeds: columns, escaping, ids valid everywhere, streaming in chunks."""

from __future__ import annotations

import csv
import io
import itertools
import xml.etree.ElementTree as ET

import pytest

from engine.catalog import Product
from engine.feeds import COLUMNS, CRITEO_COLUMNS, FEEDS, META_COLUMNS, feed_id, feed_url, stream


def product(item_id: str = "85123A", **kw) -> Product:
    base = dict(
        title="White hanging heart\tT-light holder",
        url="https://shop.example.com/p/1?a=1&b=2",
        image_url="https://shop.example.com/i/1.jpg",
        price=2.55,
        currency="GBP",
        availability="out_of_stock",
        brand='Acme "Home"',
        description="Line one\nline <two> & three",
    )
    base.update(kw)
    return Product(item_id, **base)  # type: ignore[arg-type]


def test_feed_ids_are_kept_when_valid_and_derived_otherwise():
    assert feed_id("85123A") == "85123A"
    assert feed_id("sku_1.2-3") == "sku_1.2-3"
    odd = feed_id("shoe/red size:42 " + "x" * 100)
    assert odd.startswith("p-shoe_red_size_42") and len(odd) <= 50
    assert odd == feed_id("shoe/red size:42 " + "x" * 100)  # stable
    assert feed_id("äöü") != feed_id("ÄÖÜ")
    for item in ("a b", "ü", "x" * 51, "/"):
        fid = feed_id(item)
        assert 1 <= len(fid) <= 50 and all(c.isalnum() or c in "._-" for c in fid)


def test_google_tsv_has_the_columns_and_one_line_per_product():
    text = "".join(stream("google.tsv", [product(), product("B", availability="preorder")]))
    lines = text.splitlines()
    assert lines[0].split("\t") == list(COLUMNS)
    first = dict(zip(COLUMNS, lines[1].split("\t"), strict=True))
    assert first["id"] == "85123A" and first["title"] == "White hanging heart T-light holder"
    assert first["price"] == "2.55 GBP" and first["availability"] == "out_of_stock"
    assert first["condition"] == "new" and first["description"].startswith("Line one line")
    second = dict(zip(COLUMNS, lines[2].split("\t"), strict=True))
    assert second["availability"] == "preorder" and len(lines) == 3


@pytest.mark.parametrize(
    ("name", "word", "columns"),
    [("meta.csv", "out of stock", META_COLUMNS), ("criteo.csv", "out of stock", CRITEO_COLUMNS)],
)
def test_csv_feeds_parse_back(name: str, word: str, columns: tuple[str, ...]):
    rows = list(csv.DictReader(io.StringIO("".join(stream(name, [product(), product("C")])))))
    assert tuple(rows[0]) == columns and len(rows) == 2
    assert rows[0]["brand"] == 'Acme "Home"' and rows[0]["availability"] == word
    assert rows[0]["link"] == "https://shop.example.com/p/1?a=1&b=2"


def test_google_xml_is_well_formed_rss():
    text = "".join(stream("google.xml", [product(description="bad \x01 char"), product("D")]))
    root = ET.fromstring(text)
    ns = {"g": "http://base.google.com/ns/1.0"}
    items = root.findall("./channel/item")
    assert len(items) == 2
    assert items[0].find("g:link", ns).text == "https://shop.example.com/p/1?a=1&b=2"
    assert items[0].find("g:description", ns).text == "bad  char"
    assert items[1].find("g:id", ns).text == "D"


@pytest.mark.parametrize("name", FEEDS)
def test_feeds_stream_lazily_in_chunks(name: str):
    pulled = 0

    def products():
        nonlocal pulled
        for n in itertools.count():
            pulled += 1
            yield product(f"P{n}")

    chunks = stream(name, products(), chunk_rows=100)
    next(chunks)  # header
    next(chunks)
    assert pulled <= 101  # one chunk at a time, never the whole (endless) catalog


def test_unknown_feed():
    with pytest.raises(KeyError):
        stream("bing.csv", [])


def test_line_breaks_in_any_catalog_text_never_add_feed_rows_or_columns():
    """A hostile catalog producer's line breaks (CR, LF, NEL, U+2028/9) and tabs in the
    free-text fields other than title/description/brand/category (mpn, item_group_id, an
    attribute) split a Google TSV row in two: the second line was a forged product row."""
    from engine.catalog import validate_product

    breaks = "\r\n\x85\u2028\u2029\t"
    forged = "FORGED\tFake\tdesc\thttps://evil.example/\thttps://evil.example/i.jpg"
    hostile = validate_product(
        {
            "item_id": "a1",
            "title": "T",
            "url": "https://shop.example/p",
            "image_url": "https://shop.example/i.jpg",
            "price": 1,
            "currency": "EUR",
            "mpn": f"M1{breaks}{forged}"[:70],
            "item_group_id": f"g{breaks}x",
            "attributes": {"google_product_category": f"c{breaks}{forged}"},
        }
    )
    text = "".join(stream("google.tsv", [hostile, product("B")]))
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == 4  # header, two products, the final newline
    assert not any(c in text for c in "\r\x85\u2028\u2029")
    rows = [line.split("\t") for line in lines[:-1]]
    assert all(len(r) == len(COLUMNS) for r in rows)
    first = dict(zip(COLUMNS, rows[1], strict=True))
    assert first["mpn"].startswith("M1 FORGED Fake") and first["item_group_id"] == "g x"
    for name in ("meta.csv", "criteo.csv"):  # quoted by csv, and one line anyway
        parsed = list(csv.reader(io.StringIO("".join(stream(name, [hostile, product("B")])))))
        assert len(parsed) == 3 and all("\n" not in cell for row in parsed for cell in row)
    root = ET.fromstring("".join(stream("google.xml", [hostile])))
    mpn = root.find("./channel/item/{http://base.google.com/ns/1.0}mpn")
    assert mpn is not None and "\n" not in (mpn.text or "")


def test_quotes_in_catalog_text_never_merge_google_tsv_rows():
    """A TSV cell that starts with a double quote opens a quoted value for every quote-aware
    reader (Python's csv, Persona's own `catalog import`, Merchant Center with quoted fields,
    its default for new data sources): with no closing quote the rest of the feed became one
    cell of one row. Cells with a quote are written quoted, the quotes doubled."""
    from engine.catalog_formats import read_products

    hostile = product("Q1", title='"Open quote, never closed', brand='12" pan', mpn='"x"')
    text = "".join(stream("google.tsv", [hostile, product("Q2"), product("Q3")]))
    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    assert len(rows) == 4 and all(len(r) == len(COLUMNS) for r in rows)
    first = dict(zip(COLUMNS, rows[1], strict=True))
    assert first["title"] == '"Open quote, never closed' and first["brand"] == '12" pan'
    assert first["mpn"] == '"x"' and rows[2][0] == "Q2" and rows[3][0] == "Q3"
    back = list(read_products(io.BytesIO(text.encode()), "tsv"))
    assert [(p.item_id, p.title) for p in back][:2] == [
        ("Q1", '"Open quote, never closed'),
        ("Q2", "White hanging heart T-light holder"),
    ]
    assert len(back) == 3


@pytest.mark.parametrize(
    ("url", "written"),
    [
        (
            "https://bücher.example/pfad/ä?q=ü#x",
            "https://xn--bcher-kva.example/pfad/%C3%A4?q=%C3%BC#x",
        ),
        ("https://u:p@BÜCHER.example:8443/x", "https://u:p@xn--bcher-kva.example:8443/x"),
        ("https://xn--bcher-kva.example/x y", "https://xn--bcher-kva.example/x%20y"),
        ("https://shop.example/a%20b/plain_1.jpg", "https://shop.example/a%20b/plain_1.jpg"),
    ],
)
def test_a_non_ascii_host_is_written_in_idna_form(url: str, written: str) -> None:
    """A percent-encoded host name (https://b%C3%BCcher.example/) names no host a browser or a
    mail client resolves: the host goes to punycode, the rest is percent-encoded."""
    assert feed_url(url) == written
