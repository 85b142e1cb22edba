"""Catalog feeds attacked (engine.catalog_formats through `read_products`, as `persona catalog
import` and the scheduled pulls read them): fields that never end, in CSV (quoted or not), TSV
and XML text or CDATA, read from streams that would go on forever, so a read that is not bounded
hangs the test; NUL bytes and escapes past the sniffed head; XML entities, external entities and
includes in every spelling expat could be asked to follow. Memory is asserted with tracemalloc
(peaks in MiB with a 30x margin), never elapsed time."""

from __future__ import annotations

import io
import tracemalloc

import pytest

from engine.catalog import Product
from engine.catalog_formats import MAX_FIELD, InvalidFeed, read_products

G = '<rss xmlns:g="http://base.google.com/ns/1.0"><channel>\n'
LINK = "https://s.example.com/1"
ITEM = (
    "<item><g:id>{id}</g:id><g:title>{title}</g:title><g:link>" + LINK + "</g:link>"
    "<g:image_link>" + LINK + ".jpg</g:image_link><g:price>1 EUR</g:price></item>\n"
)
HEADER = b"item_id,title,link,image_link,price,currency\n"
ROW = b"%s,%s,https://s.example.com/1,https://s.example.com/1.jpg,1,EUR\n"


class Endless(io.RawIOBase):
    """`head`, then `fill` repeated for `length` bytes (forever when None), then `tail`;
    `served` is the position: the bytes read (the content is the same wherever read from)."""

    def __init__(self, head: bytes, fill: bytes, length: int | None = None, tail: bytes = b""):
        self.head, self.fill, self.length, self.tail = head, fill, length, tail
        self.served = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:  # the reader peeks at the head and goes back
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        assert whence == 0
        self.served = offset
        return offset

    def tell(self) -> int:
        return self.served

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
        n, at = len(buffer), self.served
        if at < len(self.head):
            chunk = self.head[at : at + n]
        elif self.length is None or at < len(self.head) + self.length:
            left = n if self.length is None else len(self.head) + self.length - at
            chunk = (self.fill * (min(n, left) // len(self.fill) + 1))[: min(n, left)]
        else:
            rest = at - len(self.head) - (self.length or 0)
            chunk = self.tail[rest : rest + n]
        buffer[: len(chunk)] = chunk
        self.served += len(chunk)
        return len(chunk)


def read(source: io.RawIOBase | bytes) -> tuple[list[Product], list[tuple[int, str]]]:
    stream = io.BufferedReader(source) if isinstance(source, io.RawIOBase) else io.BytesIO(source)
    rejected: list[tuple[int, str]] = []
    products = list(read_products(stream, "auto", None, lambda n, r: rejected.append((n, r))))
    return products, rejected


def peak_mib(source: io.RawIOBase | bytes) -> tuple[int, str]:
    """The traced memory peak (MiB) of reading `source`, and how the read ended."""
    tracemalloc.start()
    try:
        try:
            products, rejected = read(source)
            ended = f"{len(products)} products, rejected {rejected}"
        except InvalidFeed as exc:
            ended = f"InvalidFeed: {exc}"
        return tracemalloc.get_traced_memory()[1] >> 20, ended
    finally:
        tracemalloc.stop()


NEVER_ENDING = {
    "a quoted CSV cell": (HEADER + b'a,"', b"x", "a line longer than"),
    "a quoted CSV cell of lines": (HEADER + b'a,"', b"x\n", "field larger than field limit"),
    "an unquoted CSV cell": (HEADER + b"a,", b"x", "a line longer than"),
    "a TSV cell": (HEADER.replace(b",", b"\t") + b"a\t", b"x", "a line longer than"),
    "a JSON line": (b'{"item_id": "a", "title": "', b"x", "a line longer than"),
    "an XML tag": ((G + "<item><g:title a='").encode(), b"x", "longer than"),
    "an XML comment": ((G + "<!--").encode(), b"x", "longer than"),
}


@pytest.mark.parametrize("name", list(NEVER_ENDING))
def test_a_field_that_never_ends_stops_the_feed_within_a_few_mib(name: str) -> None:
    head, fill, reason = NEVER_ENDING[name]
    source = Endless(head, fill)
    peak, ended = peak_mib(source)
    assert ended.startswith("InvalidFeed") and reason in ended, ended[:300]
    assert source.served < 64 << 20 and peak < 64, (source.served, peak)


@pytest.mark.parametrize("wrap", [("", ""), ("<![CDATA[", "]]>")])
def test_a_100_mb_xml_text_rejects_its_item_and_is_never_held(wrap: tuple[str, str]) -> None:
    head = (G + "<item><g:id>big</g:id><g:title>" + wrap[0]).encode()
    tail = (wrap[1] + "</g:title></item>\n" + ITEM.format(id="ok", title="t")).encode()
    peak, ended = peak_mib(Endless(head, b"x", 100 << 20, tail + b"</channel></rss>"))
    assert ended == f"1 products, rejected [(2, 'g:title is longer than {MAX_FIELD} characters')]"
    assert peak < 16  # the text is 100 MiB


def test_a_nul_byte_past_the_sniffed_head_rejects_its_row_only() -> None:
    rows = b"".join(ROW % (b"x%d" % i, b"T") for i in range(20_000))  # ~1.3 MB: past the head
    feed = HEADER + rows + ROW % (b"n\x00ul", b"T") + ROW % (b"t", b"T\x00") + ROW % (b"z", b"T")
    products, rejected = read(feed)
    assert len(products) == 20_001 and products[-1].item_id == "z"
    assert rejected == [
        (20_002, "item_id contains a control character (U+0000)"),
        (20_003, "title contains a control character (U+0000)"),
    ]


def test_a_byte_order_mark_opening_the_feed_is_dropped() -> None:
    products, rejected = read(b"\xef\xbb\xbf" + HEADER + ROW % (b"a", b"T"))
    assert [p.item_id for p in products] == ["a"] and rejected == []


PASSWD = "root:"  # what /etc/passwd holds first, were it ever read


@pytest.mark.parametrize(
    "xml",
    [
        # billion laughs, external entities (general and parameter), in UTF-8 and in UTF-16
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        + G
        + ITEM.format(id="a", title="&b;"),
        '<!DOCTYPE r [<!ENTITY s SYSTEM "file:///etc/passwd">]>'
        + G
        + ITEM.format(id="s", title="&s;"),
        '<!DOCTYPE r [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>' + G,
        '<!DOCTYPE r SYSTEM "file:///etc/passwd">' + G + ITEM.format(id="d", title="t"),
        '<!DOCTYPE r PUBLIC "-//x//y" "http://127.0.0.1:1/x.dtd">' + G,
    ],
)
@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_every_document_type_declaration_is_refused(xml: str, encoding: str) -> None:
    declared = f'<?xml version="1.0" encoding="{encoding.upper()}"?>' if "<?xml" not in xml else ""
    source = declared + xml.replace('"1.0"?>', f'"1.0" encoding="{encoding.upper()}"?>', 1)
    with pytest.raises(InvalidFeed, match="a document type declaration") as refused:
        read(source.encode(encoding) + "</channel></rss>".encode(encoding))
    assert PASSWD not in str(refused.value)


def test_xinclude_and_stylesheets_are_plain_markup_never_followed() -> None:
    xml = (
        '<?xml version="1.0"?><?xml-stylesheet href="file:///etc/passwd"?>'
        + G.replace("<rss ", '<rss xmlns:xi="http://www.w3.org/2001/XInclude" ')
        + ITEM.format(id="x", title='t<xi:include href="file:///etc/passwd" parse="text"/>')
        + "</channel></rss>"
    )
    products, rejected = read(xml.encode())
    assert [(p.item_id, p.title) for p in products] == [("x", "t")] and rejected == []


def test_a_byte_order_mark_inside_the_feed_rejects_its_row_naming_it() -> None:
    """Two exports joined with `cat`: the second's BOM opens a row. Kept, it would store the id
    `\\ufeffb`, which no event names: the row is refused saying why."""
    products, rejected = read(HEADER + ROW % (b"a", b"T") + b"\xef\xbb\xbf" + ROW % (b"b", b"T"))
    assert [p.item_id for p in products] == ["a"]
    assert rejected == [(3, "item_id contains an invisible character (U+FEFF, a byte order mark)")]
