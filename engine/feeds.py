"""Product feeds for ad platforms, streamed from any iterable of products. Pure.

Formats (`FEEDS`): Google Merchant Center TSV and RSS 2.0 XML, Meta catalog CSV, Criteo CSV. Every
format has `id, title, description, link, image_link, availability, price, brand, condition`,
with each platform's availability words; a missing description repeats the title. `feed_id`
makes ids every platform accepts: an item id of 1..50 characters from
`[A-Za-z0-9._-]` is used as is (the common case, so the ids of the ad JSON blocks match the feed);
anything else becomes `p-<safe prefix>-<12 hex digest>` (at most 50 characters, stable).

`stream(name, products)` yields text chunks of about `chunk_rows` rows; nothing holds more than one
chunk, so a 100k-product feed never sits in memory at once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Callable, Iterable, Iterator
from xml.sax.saxutils import escape

from engine.catalog import Product

FEED_ID_MAX = 50  # Google's limit is the strictest of the three
TITLE_MAX = 150  # Google
DESCRIPTION_MAX = 5000  # Google and Meta
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,50}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# XML 1.0 forbids most control characters even escaped.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_WHITESPACE = re.compile(r"\s+")

COLUMNS = (
    "id",
    "title",
    "description",
    "link",
    "image_link",
    "availability",
    "price",
    "brand",
    "condition",
)
_GOOGLE_AVAILABILITY = {
    "in_stock": "in_stock",
    "out_of_stock": "out_of_stock",
    "preorder": "preorder",
}
_META_AVAILABILITY = {
    "in_stock": "in stock",
    "out_of_stock": "out of stock",
    "preorder": "available for order",
}
_CRITEO_AVAILABILITY = {
    "in_stock": "in stock",
    "out_of_stock": "out of stock",
    "preorder": "preorder",
}
CONTENT_TYPES = {
    "google.tsv": "text/tab-separated-values",
    "google.xml": "application/rss+xml",
    "meta.csv": "text/csv",
    "criteo.csv": "text/csv",
}


def feed_id(item_id: str) -> str:
    """An id valid in Google, Meta and Criteo feeds, equal to `item_id` whenever it already is."""
    if _SAFE_ID.match(item_id):
        return item_id
    digest = hashlib.blake2b(item_id.encode(), digest_size=6).hexdigest()
    prefix = _UNSAFE.sub("_", item_id)[: FEED_ID_MAX - len(digest) - 3].strip("_")
    return f"p-{prefix}-{digest}" if prefix else f"p-{digest}"


def _one_line(text: str, limit: int) -> str:
    return _WHITESPACE.sub(" ", text).strip()[:limit]


def price_text(product: Product) -> str:
    return f"{product.price:.2f} {product.currency}"


def row(product: Product, availability: dict[str, str]) -> tuple[str, ...]:
    """The common columns (`COLUMNS`) of one product."""
    title = _one_line(product.title, TITLE_MAX)
    return (
        feed_id(product.item_id),
        title,
        _one_line(product.description, DESCRIPTION_MAX) or title,
        product.url,
        product.image_url,
        availability.get(product.availability, "in_stock"),
        price_text(product),
        _one_line(product.brand, 70),
        "new",
    )


def _chunks(
    products: Iterable[Product], render: Callable[[Product], str], chunk_rows: int
) -> Iterator[str]:
    buffer: list[str] = []
    for product in products:
        buffer.append(render(product))
        if len(buffer) >= chunk_rows:
            yield "".join(buffer)
            buffer.clear()
    if buffer:
        yield "".join(buffer)


def _tsv(products: Iterable[Product], chunk_rows: int) -> Iterator[str]:
    yield "\t".join(COLUMNS) + "\n"
    yield from _chunks(
        products,
        lambda p: "\t".join(v.replace("\t", " ") for v in row(p, _GOOGLE_AVAILABILITY)) + "\n",
        chunk_rows,
    )


def _csv_line(values: Iterable[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(list(values))
    return out.getvalue()


def _csv(
    products: Iterable[Product], availability: dict[str, str], chunk_rows: int
) -> Iterator[str]:
    yield _csv_line(COLUMNS)
    yield from _chunks(products, lambda p: _csv_line(row(p, availability)), chunk_rows)


def _xml_text(value: str) -> str:
    return escape(_XML_INVALID.sub("", value))


def _xml(products: Iterable[Product], chunk_rows: int, title: str, link: str) -> Iterator[str]:
    yield (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0">\n<channel>\n'
        f"<title>{_xml_text(title)}</title>\n<link>{_xml_text(link)}</link>\n"
        "<description>Product feed</description>\n"
    )

    def item(p: Product) -> str:
        fields = "".join(
            f"<g:{name}>{_xml_text(value)}</g:{name}>"
            for name, value in zip(COLUMNS, row(p, _GOOGLE_AVAILABILITY), strict=True)
        )
        return f"<item>{fields}</item>\n"

    yield from _chunks(products, item, chunk_rows)
    yield "</channel>\n</rss>\n"


FEEDS = tuple(CONTENT_TYPES)


def stream(
    name: str,
    products: Iterable[Product],
    chunk_rows: int = 500,
    title: str = "Persona product feed",
    link: str = "https://example.invalid/",
) -> Iterator[str]:
    """The feed `name` (one of FEEDS) as text chunks; KeyError for an unknown name."""
    if name == "google.tsv":
        return _tsv(products, chunk_rows)
    if name == "google.xml":
        return _xml(products, chunk_rows, title, link)
    if name == "meta.csv":
        return _csv(products, _META_AVAILABILITY, chunk_rows)
    if name == "criteo.csv":
        return _csv(products, _CRITEO_AVAILABILITY, chunk_rows)
    raise KeyError(name)
