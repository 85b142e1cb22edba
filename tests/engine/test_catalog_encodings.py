"""Feeds that are not UTF-8. A Latin-1 byte in a text feed rejects its row naming the field (it
was read as U+FFFD and the title stored as 'Caf\\ufffd' without a word); a UTF-16 text feed is an
InvalidFeed that says so (its rows were all rejected as 'missing required field item_id', and a
UTF-16 XML feed was read as CSV: 0 products, 0 rejected rows, a successful import of nothing); a
UTF-16 XML feed with its byte order mark is XML (expat reads it)."""

from __future__ import annotations

import io

import pytest

from engine.catalog_formats import InvalidFeed, read_products

CSV = "item_id,title,url,image_url,price,currency\n"
ROW = "{id},{title},https://x.example/a,https://x.example/a.png,1.5,EUR\n"
XML = (
    '<rss xmlns:g="http://base.google.com/ns/1.0"><channel><item><g:id>a1</g:id>'
    "<title>Café</title><link>https://x.example/a</link>"
    "<g:image_link>https://x.example/i.png</g:image_link><g:price>2.55 GBP</g:price>"
    "</item></channel></rss>"
)


def _read(raw: bytes, fmt: str = "auto") -> tuple[list[str], list[tuple[int, str]]]:
    rejected: list[tuple[int, str]] = []
    products = read_products(io.BytesIO(raw), fmt, None, lambda n, r: rejected.append((n, r)))
    return [f"{p.item_id}:{p.title}" for p in products], rejected


@pytest.mark.parametrize("fmt", ["auto", "csv"])
def test_a_latin1_byte_rejects_its_row_naming_the_field(fmt: str) -> None:
    raw = (
        (CSV + ROW.format(id="a1", title="Plain")).encode()
        + ROW.format(id="a2", title="Café").encode("latin-1")
        + ROW.format(id="a3", title="Café").encode()
    )
    products, rejected = _read(raw, fmt)
    assert products == ["a1:Plain", "a3:Café"]
    assert [n for n, _ in rejected] == [3]
    assert "title" in rejected[0][1] and "not UTF-8" in rejected[0][1]


def test_a_latin1_byte_in_a_jsonl_row_rejects_it() -> None:
    good = '{"item_id":"a1","title":"T","url":"https://x.example","image_url":"https://x.example","price":1,"currency":"EUR"}\n'
    bad = good.replace("a1", "a2").replace('"T"', '"Caf\xe9"').encode("latin-1")
    products, rejected = _read(good.encode() + bad)
    assert products == ["a1:T"]
    assert [n for n, _ in rejected] == [2] and "not UTF-8" in rejected[0][1]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
@pytest.mark.parametrize("fmt", ["auto", "csv", "tsv", "jsonl"])
def test_a_utf16_or_utf32_text_feed_is_refused_saying_so(encoding: str, fmt: str) -> None:
    text = CSV + ROW.format(id="a1", title="T")
    raw = text.encode(encoding)
    if encoding == "utf-16-be":
        raw = b"\xfe\xff" + raw
    with pytest.raises(InvalidFeed, match=r"UTF-(16|32).*UTF-8"):
        _read(raw, fmt)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_a_utf16_xml_feed_with_its_bom_reads_as_xml(encoding: str) -> None:
    raw = ('<?xml version="1.0" encoding="UTF-16"?>' + XML).encode(encoding)
    if encoding == "utf-16-be":
        raw = b"\xfe\xff" + raw
    assert _read(raw) == (["a1:Café"], [])


def test_utf8_with_or_without_its_bom_still_reads() -> None:
    raw = (CSV + ROW.format(id="a1", title="Café")).encode()
    assert _read(raw) == (["a1:Café"], [])
    assert _read(b"\xef\xbb\xbf" + raw) == (["a1:Café"], [])
    assert _read(XML.encode()) == (["a1:Café"], [])
