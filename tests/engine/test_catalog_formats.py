"""Catalog import formats (issue 19 item 3): Google Merchant Center RSS, Atom, TSV and CSV, a map
file for other names, every rejected row with its line and reason, hostile XML refused."""

from __future__ import annotations

import gzip
import io
import os
import re
from pathlib import Path

import pytest

from engine.catalog import Product, parse_time
from engine.catalog_formats import (
    MAX_FIELD,
    MAX_LINE,
    InvalidFeed,
    detect,
    load_map,
    read_products,
)

FEEDS = Path(__file__).parent / "feeds"


def read(name: str, fmt: str = "auto", mapping: dict[str, str] | None = None):
    rejected: list[tuple[int, str]] = []
    with (FEEDS / name).open("rb") as fh:
        products = list(read_products(fh, fmt, mapping, lambda n, r: rejected.append((n, r))))
    return {p.item_id: p for p in products}, rejected


def from_text(text: str, fmt: str = "auto") -> list[Product]:
    return list(read_products(io.BytesIO(text.encode()), fmt))


def test_formats_are_told_apart_by_their_first_bytes() -> None:
    for name, fmt in [
        ("google-rss.xml", "google-xml"),
        ("google-atom.xml", "google-xml"),
        ("google.tsv", "tsv"),
        ("google.csv", "csv"),
    ]:
        assert detect((FEEDS / name).read_bytes()[:4096]) == fmt
    assert detect(b'\xef\xbb\xbf\n{"item_id": 1}') == "jsonl"


def test_google_rss_with_every_attribute() -> None:
    products, rejected = read("google-rss.xml")
    heart = products["85123A"]
    assert heart.title == "White Hanging Heart T-Light Holder"
    assert heart.description == "A holder & a heart"
    assert heart.url == "https://shop.example.com/p/85123A"
    assert (heart.price, heart.currency, heart.sale_price) == (2.55, "GBP", 1.99)
    assert heart.sale_starts == parse_time("2026-12-01T00:00+00:00")
    assert heart.sale_ends == parse_time("2026-12-31T23:59+00:00")
    assert heart.additional_image_links == (
        "https://shop.example.com/i/85123A-2.jpg",
        "https://shop.example.com/i/85123A-3.jpg",
    )
    assert (heart.gtin, heart.mpn, heart.item_group_id) == ("4006381333931", "AC-85123", "hearts")
    assert heart.category == "Home > Candle holders"  # product_type
    assert heart.attributes == {
        "google_product_category": "Home & Garden > Decor",
        "custom_label_0": "winter",
    }  # g:shipping's nested fields are not product fields
    plain = products["22423"]
    assert plain.title == "Plain RSS title" and plain.url == "https://shop.example.com/p/22423"
    assert plain.availability == "preorder"
    assert plain.availability_date == parse_time("2027-01-15T00:00+00:00")
    # the line of its <item>; its price gave no currency either: each problem is named
    assert rejected == [
        (39, "price must be a number >= 0, not 'cheap'; also: missing required field 'currency'")
    ]


def test_google_atom() -> None:
    products, rejected = read("google-atom.xml")
    lamp = products["a-1"]  # g:id wins over Atom's own <id>
    assert (lamp.title, lamp.url, lamp.description) == (
        "Atom lamp",
        "https://shop.example.com/p/a-1",
        "A lamp from an Atom feed",
    )
    assert (lamp.price, lamp.currency, lamp.availability) == (19.9, "EUR", "out_of_stock")
    assert lamp.attributes == {}  # Atom's own <updated>, <author> are not product data
    assert products["a-2"].url == "https://shop.example.com/p/a-2"
    assert products["a-2"].availability == "in_stock"
    assert rejected == []


def test_google_tsv() -> None:
    products, rejected = read("google.tsv")
    mug = products["t-1"]
    assert (mug.price, mug.sale_price, mug.currency) == (8.0, 6.5, "USD")
    assert (mug.condition, mug.mpn, mug.item_group_id) == ("used", "MC-1", "mugs")
    assert mug.category == "Kitchen > Mugs"
    assert mug.attributes == {"custom_label_1": "clearance", "color": "blue"}
    assert products["t-2"].description == ""
    assert rejected == [
        (4, "availability must be one of in_stock, out_of_stock, preorder, not 'sold out'")
    ]


def test_google_csv_with_quoted_cells() -> None:
    products, rejected = read("google.csv")
    chair = products["c-1"]
    assert chair.title == "CSV chair, oak" and chair.description == 'Solid "oak"'
    assert chair.gtin == "04006381333931" and len(chair.additional_image_links) == 2
    assert chair.sale_starts == parse_time("2026-12-01") and chair.sale_ends == parse_time(
        "2027-01-01"
    )
    assert chair.category == "Furniture > Chairs > Oak"
    labels = {f"custom_label_{i}": v for i, v in enumerate("abcde")}
    assert chair.attributes == {"google_product_category": "Furniture > Chairs", **labels}
    assert products["c-3"].currency == "USD"
    assert rejected == [(3, "sale_price must be below price")]


def test_a_map_file_names_other_columns() -> None:
    mapping = load_map(FEEDS / "custom-map.json")
    products, rejected = read("custom.csv", "csv", mapping)
    kettle = products["m-1"]
    assert (kettle.title, kettle.price, kettle.currency, kettle.brand) == (
        "Mapped kettle",
        25.5,
        "EUR",
        "Kettleco",
    )
    assert kettle.availability == "in_stock" and kettle.attributes == {}
    assert rejected == [
        (3, "image_url must be an absolute http(s) URL (e-mail clients need one), not 'not-a-url'")
    ]
    with pytest.raises(InvalidFeed, match="no column gives the item_id"):
        read("custom.csv", "csv")  # without the map nothing is a product: said once


def test_a_bad_map_file_is_refused(tmp_path: Path) -> None:
    for text, reason in [
        ("[1]", "must be a JSON object"),
        ('{"a": "colour"}', "unknown target name"),
        ("{", "not a readable JSON object"),
    ]:
        (tmp_path / "m.json").write_text(text)
        with pytest.raises(ValueError, match=reason):
            load_map(tmp_path / "m.json")


def test_price_and_currency_must_agree() -> None:
    header = "id,title,link,image_link,price,currency\n"
    row = "x,X,https://s.example.com/x,https://s.example.com/x.jpg,2.55 GBP,EUR\n"
    with pytest.raises(ValueError, match="line 2: a price in GBP but currency EUR"):
        from_text(header + row)


@pytest.mark.parametrize("name", ["billion-laughs.xml", "external-entity.xml"])
def test_hostile_xml_is_refused_before_any_entity(name: str) -> None:
    with pytest.raises(InvalidFeed, match="line 2: a document type declaration"):
        read(name)


def test_an_undeclared_entity_is_not_well_formed() -> None:
    xml = '<rss xmlns:g="http://base.google.com/ns/1.0"><channel><item><g:id>&x;</g:id>'
    with pytest.raises(InvalidFeed, match="not well-formed XML: undefined entity"):
        from_text(xml + "</item></channel></rss>")


def test_an_over_long_xml_field_rejects_its_item_only() -> None:
    good = (
        "<item><g:id>{id}</g:id><g:title>{title}</g:title><g:link>https://s.example.com/1"
        "</g:link><g:image_link>https://s.example.com/1.jpg</g:image_link>"
        "<g:price>1 EUR</g:price></item>\n"
    )
    xml = (
        '<rss xmlns:g="http://base.google.com/ns/1.0"><channel>\n'
        + good.format(id="long", title="x" * (MAX_FIELD + 1))
        + good.format(id="ok", title="fine")
        + "</channel></rss>"
    )
    rejected: list[tuple[int, str]] = []
    products = list(
        read_products(io.BytesIO(xml.encode()), "google-xml", None, lambda *r: rejected.append(r))
    )
    assert [p.item_id for p in products] == ["ok"]
    assert rejected == [(2, f"g:title is longer than {MAX_FIELD} characters")]


def test_an_over_long_line_or_cell_stops_a_text_feed() -> None:
    text = '{"item_id": "a"}\n' + "x" * (MAX_LINE + 10) + "\n"
    with pytest.raises(InvalidFeed, match=f"line 2: a line longer than {MAX_LINE}"):
        list(read_products(io.BytesIO(text.encode()), "jsonl", None, lambda *r: None))
    with pytest.raises(InvalidFeed, match="line 2: unreadable ','-separated text: field larger"):
        from_text("item_id,title\n" + "x" * 200_000 + "\n", "csv")


def test_jsonl_rows_and_gzip(tmp_path: Path) -> None:
    good = (
        '{"item_id": "j1", "title": "T", "url": "https://s.example.com/j1", '
        '"image_url": "https://s.example.com/j1.jpg", "price": 3, "currency": "EUR"}'
    )
    path = tmp_path / "feed.jsonl.gz"
    path.write_bytes(gzip.compress(f"{good}\nnot json\n[1]\n".encode()))
    from engine.catalog_formats import open_binary

    rejected: list[tuple[int, str]] = []
    with open_binary(path) as fh:
        products = list(read_products(fh, "auto", None, lambda *r: rejected.append(r)))
    assert [p.item_id for p in products] == ["j1"]
    assert [line for line, _ in rejected] == [2, 3]
    assert rejected[1][1] == "a product must be an object, got list"


def test_a_hostile_jsonl_row_rejects_its_line_only() -> None:
    """A feed row nested deeper than Python's stack, or with a 5,000-digit price, stopped the
    whole import (a RecursionError, a ValueError); now it is its line's rejection."""
    good = (
        '{"item_id": "j%d", "title": "T", "url": "https://s.example.com/j", '
        '"image_url": "https://s.example.com/j.jpg", "price": 3, "currency": "EUR"}'
    )
    rows = [good % 1, "[" * 100_000 + "]" * 100_000, '{"price": ' + "9" * 5_000 + "}", good % 2]
    rejected: list[tuple[int, str]] = []
    feed = io.BytesIO("\n".join(rows).encode())
    products = list(read_products(feed, "jsonl", None, lambda *r: rejected.append(r)))
    assert [p.item_id for p in products] == ["j1", "j2"]
    assert rejected[0] == (2, "invalid JSON: nested too deeply")
    assert rejected[1][0] == 3 and "4300 digits" in rejected[1][1]


def test_a_hostile_map_file_is_refused_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=r"not a readable JSON object.*nested too deeply"):
        load_map(tmp_path / "m.json")


HEADER = "item_id,title,url,image_url,price,currency\n"


def test_a_row_that_never_ends_stops_a_text_feed() -> None:
    """A quoted cell holding a newline, 300,000 times over: one csv row of 300,000 cells built in
    memory (10x the feed's size: a 2 GB feed, or a small gzip, exhausted the worker's memory)."""
    text = HEADER + '"\n",' * 300_000 + "x\n"
    with pytest.raises(InvalidFeed, match=f"line 2: a row longer than {MAX_LINE} characters"):
        list(read_products(io.BytesIO(text.encode()), "csv", None, lambda *r: None))


XML_HEAD = '<rss xmlns:g="http://base.google.com/ns/1.0"><channel>'


@pytest.mark.parametrize(
    "markup",
    [
        '<item a="' + "x" * 2_000_000 + '"><g:id>1</g:id></item>',  # one huge start tag
        "<!--" + "x" * 2_000_000 + "-->",  # a huge comment
        "<item " + " ".join(f"a{i}='1'" for i in range(300_000)) + "></item>",
    ],
    ids=["attribute", "comment", "attributes"],
)
def test_over_long_xml_markup_stops_the_feed(markup: str) -> None:
    """expat rescans a token it has not finished with each chunk it gets: a 50 MB attribute took
    18 s (quadratic) and held the whole token; markup is now bounded like a text feed's line."""
    xml = XML_HEAD + markup + "</channel></rss>"
    with pytest.raises(InvalidFeed, match="markup longer than"):
        list(read_products(io.BytesIO(xml.encode()), "google-xml", None, lambda *r: None))


def test_deeply_nested_xml_stops_the_feed() -> None:
    xml = XML_HEAD + "<item>" + "<a>" * 10_000 + "</a>" * 10_000 + "</item></channel></rss>"
    with pytest.raises(InvalidFeed, match="nested deeper than"):
        list(read_products(io.BytesIO(xml.encode()), "google-xml", None, lambda *r: None))


def test_a_gzip_bomb_stops_the_feed(tmp_path: Path) -> None:
    """200 MB of blank lines in 200 KB of gzip: inflated whole, however large."""
    from engine.catalog_formats import open_binary

    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(gzip.compress(HEADER.encode() + (b" " * 999 + b"\n") * 200_000, 1))
    with open_binary(path) as fh, pytest.raises(InvalidFeed, match="inflates to more than"):
        list(read_products(fh, "csv", None, lambda *r: None))


def test_a_map_file_that_never_ends_or_is_huge_is_refused_unread(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a regular file"):
        load_map("/dev/zero")  # read whole it was a MemoryError
    huge = tmp_path / "map.json"
    with huge.open("wb") as out:
        out.truncate(4 << 30)
    with pytest.raises(ValueError, match="larger than"):
        load_map(huge)


# -- what is no regular file, repeated columns ---------------------------------------------------


def test_open_binary_refuses_what_is_not_a_regular_file_at_once(tmp_path: Path) -> None:
    """A FIFO blocked the open until a writer came (for ever under `persona catalog import`);
    /dev/zero and /dev/urandom never end; a directory failed with IsADirectoryError. Each is
    refused from the open descriptor, before a byte is read. (The FIFO here has a writer and
    bytes waiting, so the old code returned a handle instead of hanging the test.)"""
    from engine.catalog_formats import NOT_REGULAR, open_binary

    fifo = tmp_path / "feed.csv"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # never blocks on Linux
    try:
        os.write(writer, b"id,title\n")
        for path in (fifo, tmp_path, Path("/dev/zero"), Path("/dev/urandom"), Path("/dev/null")):
            with pytest.raises(InvalidFeed, match=re.escape(NOT_REGULAR)):
                open_binary(path).close()
    finally:
        os.close(writer)
    plain = tmp_path / "plain.csv"
    plain.write_text("id,title\n")
    with open_binary(plain) as fh:
        assert fh.read() == b"id,title\n"
    packed = tmp_path / "packed.csv.gz"
    packed.write_bytes(gzip.compress(b"id,title\n"))
    with open_binary(packed) as fh:
        assert fh.read() == b"id,title\n"


ROW = "c-1,Chair,https://s.example/c-1,https://s.example/c-1.jpg"


def test_a_column_named_close_to_a_product_field_is_a_warning_naming_it() -> None:
    """A header's misspelled field (`titel`) was only a free attribute, without a word: each row
    was then rejected as missing its title (a required field), or, for an optional one
    (`catgory`), imported without it. The warning names the field meant, once; a column close
    to a field another column gives already (`titles` beside `title`) is left alone."""
    warned: list[str] = []
    text = "item_id,titel,url,image_url,price,currency,catgory,notes\n" + (
        "c-1,Mug,https://s.example/c-1,https://s.example/c-1.jpg,2.00,GBP,Mugs,x\n" * 2
    )
    rejected: list[tuple[int, str]] = []
    products = list(
        read_products(
            io.BytesIO(text.encode()),
            "csv",
            None,
            lambda n, r: rejected.append((n, r)),
            warned.append,
        )
    )
    assert products == [] and [n for n, _ in rejected] == [2, 3]
    assert warned == [
        "line 1: the column 'titel' is no product field (read as a free attribute): "
        "did you mean 'title'?",
        "line 1: the column 'catgory' is no product field (read as a free attribute): "
        "did you mean 'category'?",
    ]
    fixed = text.replace("titel", "title").replace(",notes", ",titles")
    warned.clear()
    (first, _) = read_products(io.BytesIO(fixed.encode()), "csv", None, None, warned.append)
    assert first.title == "Mug" and "'catgory'" in warned[0]
    assert warned[1:] == ["line 3: item_id 'c-1' was given before (line 2): the later row wins"]


@pytest.mark.parametrize("sep", [",", "\t"])
def test_a_repeated_product_column_refuses_the_feed_naming_it(sep: str) -> None:
    """Two `price` columns: the last one silently won, whichever the shop meant."""
    head = sep.join(["id", "title", "link", "image_link", "price", "brand", "price"])
    row = sep.join([*ROW.split(","), "10.00 EUR", "Oakly", "99.00 EUR"])
    fmt = "csv" if sep == "," else "tsv"
    with pytest.raises(
        InvalidFeed, match=r"line 1: the column 'price' is given twice \(columns 5 and 7\)"
    ):
        from_text(f"{head}\n{row}\n", fmt)


def test_two_names_of_one_field_refuse_the_feed_too() -> None:
    """Google's `id` and Persona's `item_id`, or a mapped name and the name it maps to: to_product
    kept the first and dropped the other without a word."""
    text = f"id,title,link,image_link,price,item_id\n{ROW},10.00 EUR,c-2\n"
    with pytest.raises(InvalidFeed, match=r"'id' and 'item_id' is given twice \(columns 1 and 6\)"):
        from_text(text)
    mapped = f"sku,title,link,image_link,price,id\n{ROW},10.00 EUR,c-2\n"
    with pytest.raises(InvalidFeed, match="for the product's item_id"):
        list(read_products(io.BytesIO(mapped.encode()), "csv", {"sku": "id"}))


def test_a_repeated_column_persona_does_not_use_is_a_warning() -> None:
    """A free attribute (`color`) or unnamed columns (a trailing separator) given twice: the feed
    is read, the last value kept, and the warning names the column."""
    warned: list[str] = []
    text = f"id,title,link,image_link,price,color,color,,\n{ROW},10.00 EUR,red,blue,,\n"
    (product,) = read_products(io.BytesIO(text.encode()), "csv", None, None, warned.append)
    assert product.item_id == "c-1" and product.attributes == {"color": "blue"}
    assert warned == [
        "line 1: the column 'color' appears 2 times (columns 6, 7); it is no product field, "
        "only a free attribute: the last one's value is kept",
        "line 1: an unnamed column appears 2 times (columns 8, 9); it is no product field, "
        "only a free attribute: the last one's value is kept",
    ]
    assert from_text(text)[0].price == 10.0  # no warn given: read all the same


@pytest.mark.parametrize("sep", [",", "\t"])
def test_a_repeated_field_in_several_columns_is_joined_not_refused(sep: str) -> None:
    """Google's sheets take a repeated attribute (`additional_image_link`) as one column per
    value: every column's image is kept, in column order, and an empty cell adds none."""
    head = sep.join(["id", "title", "link", "image_link", "price", *["additional_image_link"] * 3])
    images = ["https://shop.example/a.jpg", "", "https://shop.example/c.jpg"]
    row = sep.join([*ROW.split(","), "10.00 EUR", *images])
    (product,) = from_text(f"{head}\n{row}\n", "csv" if sep == "," else "tsv")
    assert product.additional_image_links == (
        "https://shop.example/a.jpg",
        "https://shop.example/c.jpg",
    )


def test_a_mapped_repeated_field_in_several_columns_is_joined_too() -> None:
    """A map file naming the shop's column for `additional_image_link` (`extra_image`), given in
    three columns: the header check lets them through as one repeated field, so every image is
    kept too, not the last column's alone."""
    head = "id,title,link,image_link,price,extra_image,extra_image,extra_image"
    images = "https://shop.example/a.jpg,https://shop.example/b.jpg,https://shop.example/c.jpg"
    text = f"{head}\n{ROW},10.00 EUR,{images}\n"
    mapping = {"extra_image": "additional_image_link"}
    (product,) = read_products(io.BytesIO(text.encode()), "csv", mapping)
    assert product.additional_image_links == tuple(images.split(","))


# -- feeds a new user hands over by mistake (walk16): refused as a whole, never "0 products, 0
# rows rejected" with exit status 0 -----------------------------------------------------------


def test_a_json_array_feed_is_refused_naming_json_lines() -> None:
    """A JSON array (what most exports write) was read as a CSV whose header is the whole file:
    nothing imported, nothing rejected, exit status 0."""
    body = '[{"item_id": "A1", "title": "Mug", "url": "https://s.example/a1", "price": 1}]'
    for text in (body, "\ufeff \n" + body):
        with pytest.raises(InvalidFeed, match=r"line 1: .*JSON array.*JSON lines"):
            from_text(text)
    with pytest.raises(InvalidFeed, match=r"JSON array"):
        from_text(body, "csv")  # the format named wrongly: the same refusal


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"PK\x03\x04\x14\x00\x06\x00xl/workbook.xml", "ZIP archive"),  # .xlsx, .ods, .zip
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00\x00", "binary"),  # .xls
        (b"item_id,title\x00\x00\x00\x01", "binary"),
    ],
)
def test_a_binary_feed_is_refused_saying_what_it_looks_like(head: bytes, kind: str) -> None:
    with pytest.raises(InvalidFeed, match=rf"line 1: .*{kind}.*CSV"):
        list(read_products(io.BytesIO(head + b"\nmore,bytes\n")))


def test_a_text_header_without_an_item_id_column_is_refused_naming_its_columns() -> None:
    """Every row was rejected one by one as missing its item_id (a UCI orders file given to
    the catalog: 500,000 lines of the same reason); the header says it once."""
    text = "InvoiceNo,StockCode,Description\n536365,85123A,Heart\n"
    with pytest.raises(InvalidFeed, match=r"line 1: no column gives the item_id.*'stockcode'"):
        from_text(text)
    with pytest.raises(InvalidFeed, match=r"no column gives the item_id"):
        from_text("sku\ttitle\nA1\tMug\n")
    mapped = read_products(
        io.BytesIO(
            b"SKU,Name,url,image_url,price,currency\nA1,Mug,https://s.example/a1,https://s.example/a1.jpg,2,GBP\n"
        ),
        mapping={"sku": "id", "name": "title"},
    )
    assert [p.item_id for p in mapped] == ["A1"]  # a mapped id column counts


def test_an_empty_feed_is_refused() -> None:
    for text in ("", " \n\n"):
        with pytest.raises(InvalidFeed, match="the feed is empty"):
            from_text(text)
    assert from_text("item_id,title\n") == []  # a header without rows is an empty catalog


def test_urls_with_userinfo_are_refused_per_row() -> None:
    """`https://shop@evil.example/p` reads as the shop but goes to evil.example (the part before
    the '@' is a user name): it was taken, and the click redirect followed it. A browser reads
    the host after the last '@' before the first '/', '?', '#' or '\\' (after any slashes)."""
    rows = [
        ("ok", "https://shop.example.com/p/1", "https://shop.example.com/1.jpg"),
        ("at-path", "https://shop.example.com/p/@home?x=a@b#c@d", "https://shop.example.com/1.jpg"),
        ("back", "https://shop.example.com\\@x.example/p", "https://shop.example.com/1.jpg"),
        ("user", "https://shop@evil.example/p", "https://shop.example.com/1.jpg"),
        ("pass", "http://shop.example.com:x@evil.example", "https://shop.example.com/1.jpg"),
        ("slashes", "https:///shop.example.com@evil.example/p", "https://shop.example.com/1.jpg"),
        ("empty", "https://@evil.example/p", "https://shop.example.com/1.jpg"),
        ("image", "https://shop.example.com/p/2", "https://cdn@evil.example/2.jpg"),
    ]
    feed = "item_id,title,price,currency,url,image_url\n" + "".join(
        f"{item},T,1,EUR,{url},{image}\n" for item, url, image in rows
    )
    rejected: list[tuple[int, str]] = []
    products = list(
        read_products(io.BytesIO(feed.encode()), "csv", None, lambda n, r: rejected.append((n, r)))
    )
    assert [p.item_id for p in products] == ["ok", "at-path", "back"]
    assert [n for n, _ in rejected] == [5, 6, 7, 8, 9]
    for (_, reason), field in zip(rejected, ["url"] * 4 + ["image_url"], strict=True):
        assert reason.startswith(f"{field} holds a user name before '@'"), reason
        assert "evil.example" in reason, reason


def test_userinfo_is_found_where_browsers_strip_tabs_and_newlines() -> None:
    """A browser removes every tab, CR and LF from a URL before reading it (WHATWG URL), so
    `https://\\t/shop@evil.example/p` goes to evil.example; the slashes' tab hid the authority
    (the catalog refuses such URLs; a stored one reached the click redirect's check)."""
    from engine.catalog import userinfo_problem

    for url in (
        "https://\t/shop@evil.example/p",
        "https:/\n/shop.example.com@evil.example/p",
        "https://\r\n/shop@evil.example",
    ):
        problem = userinfo_problem(url)
        assert problem is not None and "evil.example" in problem, url
    assert userinfo_problem("https://shop.example.com/\t@home") is None  # in the path
