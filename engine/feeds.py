"""Product feeds for ad platforms, streamed from any iterable of products. Pure.

Formats (`FEEDS`): Google Merchant Center TSV and RSS 2.0 XML, Meta catalog CSV, Criteo CSV, each
with its platform's columns (`GOOGLE_COLUMNS`, `META_COLUMNS`, `CRITEO_COLUMNS`: the required
attributes and those a product can fill) in the platform's vocabulary: availability words (Meta's
pre-order value is `preorder`), `availability_date` for a pre-order that has one,
`identifier_exists` no unless a GTIN or a brand with an MPN, `product_type` from the category,
`sale_price` while the sale runs at `Channel.now_ms` (Google and Meta also get a sale yet to
start, with its `sale_price_effective_date`, which they apply themselves), item groups, GTIN, MPN,
condition, more images; every free-text attribute is one line (a catalog's line breaks and tabs
never add a row or a column); a missing description repeats the title; Meta gets the shop's name
(`Channel.title`) as the brand of a product with no brand, GTIN nor MPN. URLs are
percent-encoded. The RSS channel's link is `Channel.link` (PERSONA_FEED_LINK), else the origin of
the first product's URL (empty when that URL cannot be read). `feed_id` makes ids every
platform accepts: an item id of 1..50 characters from `[A-Za-z0-9._-]` is used as is (the
common case, so the ids of the ad JSON blocks match the feed); anything else becomes
`p-<safe prefix>-<12 hex digest>` (at most 50 characters, stable).

Formula-looking text (a cell starting with `=`, `+`, `-` or `@`) is written as the catalog has
it, on purpose: these files are read by the ad platforms, which take every cell as text and show
it in ads, so the `'` prefix OWASP recommends against CSV injection in spreadsheet exports would
appear in front of titles such as "-20% desk lamp" or "@home cushion" (and change ids). Whoever
opens meta.csv or criteo.csv in a spreadsheet should import it as text, not double-click it.

`stream(name, products)` yields text chunks of about `chunk_rows` rows; nothing holds more than one
chunk, so a 100k-product feed never sits in memory at once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit
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
# Any whitespace but the space: tabs and every line break (CR, LF, VT, FF, NEL, U+2028/9, ...)
# that a TSV reader may take for a column or row boundary.
_TSV_BREAKS = re.compile(r"[^\S ]")
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"
_PLAIN_URL = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]*")  # no `%`: nothing to check

# Each platform's columns, from its published attribute list (Google Merchant Center product data
# specification, Meta catalog fields, Criteo product feed specification): the required ones and
# those Persona's products can fill. A cell Persona has nothing for is left empty.
GOOGLE_COLUMNS = (
    "id",
    "title",
    "description",
    "link",
    "image_link",
    "additional_image_link",
    "availability",
    "availability_date",
    "price",
    "sale_price",
    "sale_price_effective_date",
    "brand",
    "gtin",
    "mpn",
    "identifier_exists",
    "condition",
    "item_group_id",
    "google_product_category",
    "product_type",
)
META_COLUMNS = (
    "id",
    "title",
    "description",
    "availability",
    "condition",
    "price",
    "link",
    "image_link",
    "brand",
    "sale_price",
    "sale_price_effective_date",
    "item_group_id",
    "gtin",
    "mpn",
    "additional_image_link",
    "google_product_category",
    "product_type",
)
CRITEO_COLUMNS = (
    "id",
    "title",
    "description",
    "link",
    "image_link",
    "additional_image_link",
    "availability",
    "price",
    "sale_price",
    "brand",
    "gtin",
    "mpn",
    "item_group_id",
    "google_product_category",
    "product_type",
    "condition",
)
COLUMNS = GOOGLE_COLUMNS  # the Google feeds' columns (TSV header, XML elements)
_GOOGLE_AVAILABILITY = {
    "in_stock": "in_stock",
    "out_of_stock": "out_of_stock",
    "preorder": "preorder",
}
_META_AVAILABILITY = {  # Meta's own pre-order value, `preorder` (not `available for order`)
    "in_stock": "in stock",
    "out_of_stock": "out of stock",
    "preorder": "preorder",
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


@dataclass(frozen=True)
class Channel:
    """What a feed says about the shop: the RSS channel's title and link (the shop's home page:
    `PERSONA_FEED_LINK`, else the origin of the first product's URL); Meta's brand of products
    that have no brand, GTIN nor MPN (its rule for private label: the shop's name); and the
    time that decides which sales are shown (epoch ms)."""

    title: str = "Persona product feed"
    link: str | None = None
    now_ms: int = 0


def feed_id(item_id: str) -> str:
    """An id valid in Google, Meta and Criteo feeds, equal to `item_id` whenever it already is."""
    if _SAFE_ID.fullmatch(item_id):
        return item_id
    digest = hashlib.blake2b(item_id.encode(), digest_size=6).hexdigest()
    prefix = _UNSAFE.sub("_", item_id)[: FEED_ID_MAX - len(digest) - 3].strip("_")
    return f"p-{prefix}-{digest}" if prefix else f"p-{digest}"


def _one_line(text: str, limit: int) -> str:
    return _WHITESPACE.sub(" ", text).strip()[:limit]


def price_text(product: Product, price: float | None = None) -> str:
    return f"{product.price if price is None else price:.2f} {product.currency}"


def feed_url(url: str) -> str:
    """`url` with spaces, non-ASCII and other unsafe characters percent-encoded (the platforms
    want encoded URLs; `%` sequences already there are kept). A non-ASCII host name is written
    in its IDNA (punycode) form, as browsers and mail clients resolve it: percent-encoded, it
    named no host. A URL that needs nothing is returned as it is (blocks call this per item)."""
    if _PLAIN_URL.fullmatch(url):
        return url
    if not url.isascii():
        url = _idna_host(url)
    return quote(url, safe=_URL_SAFE)


def _idna_host(url: str) -> str:
    """`url` with its host name in IDNA form when it has a non-ASCII one (else as it is: an
    unconvertible name is percent-encoded by the caller, as before)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return url
    if not host or host.isascii():
        return url
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return url
    netloc = parts.netloc
    at = netloc.rfind("@") + 1  # user info, if any, stays (percent-encoded by the caller)
    start = netloc.lower().find(host, at)
    if start < 0:
        return url
    netloc = netloc[:start] + ascii_host + netloc[start + len(host) :]
    return parts._replace(netloc=netloc).geturl()


def iso_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M%z")


def identifier_exists(product: Product) -> str:
    """Google's rule: `no` unless the product has a GTIN, or a brand with an MPN."""
    return "yes" if product.gtin or (product.brand and product.mpn) else "no"


def _sale(product: Product, now_ms: int, ahead: bool) -> dict[str, str]:
    """sale_price (and its period) while the sale runs at `now_ms`; with `ahead`, also for a
    sale yet to start (for platforms that read the period and apply it themselves)."""
    if product.sale_price is None:
        return {}
    if product.sale_ends is not None and now_ms >= product.sale_ends:
        return {}
    if not ahead and not product.sale_active(now_ms):
        return {}
    values = {"sale_price": price_text(product, product.sale_price)}
    if product.sale_starts is not None or product.sale_ends is not None:
        start = iso_time(product.sale_starts if product.sale_starts is not None else 0)
        end = iso_time(product.sale_ends if product.sale_ends is not None else 253402300740000)
        values["sale_price_effective_date"] = f"{start}/{end}"
    return values


def values(product: Product, availability: dict[str, str], now_ms: int) -> dict[str, str]:
    """Every attribute of one product under Google's names (the platforms share them)."""
    title = _one_line(product.title, TITLE_MAX)
    out = {
        "id": feed_id(product.item_id),
        "title": title,
        "description": _one_line(product.description, DESCRIPTION_MAX) or title,
        "link": feed_url(product.url),
        "image_link": feed_url(product.image_url),
        "additional_image_link": ",".join(
            quote(url, safe=_URL_SAFE.replace(",", "")) for url in product.additional_image_links
        ),
        "availability": availability.get(product.availability, "in_stock"),
        "price": price_text(product),
        "brand": _one_line(product.brand, 70),
        "gtin": product.gtin,
        "mpn": _one_line(product.mpn, 70),
        "identifier_exists": identifier_exists(product),
        "condition": product.condition,
        "item_group_id": _one_line(product.item_group_id, 50),
        "google_product_category": _one_line(
            product.attributes.get("google_product_category", ""), 750
        ),
        "product_type": _one_line(product.category, 750),
    }
    if product.availability == "preorder" and product.availability_date is not None:
        out["availability_date"] = iso_time(product.availability_date)
    return out


def row(product: Product, availability: dict[str, str], now_ms: int = 0) -> tuple[str, ...]:
    """The Google columns (`COLUMNS`) of one product."""
    cells = values(product, availability, now_ms) | _sale(product, now_ms, ahead=True)
    return tuple(cells.get(name, "") for name in COLUMNS)


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


def _cells(
    product: Product, availability: dict[str, str], channel: Channel, ahead: bool
) -> dict[str, str]:
    return values(product, availability, channel.now_ms) | _sale(product, channel.now_ms, ahead)


def _tsv(products: Iterable[Product], chunk_rows: int, channel: Channel) -> Iterator[str]:
    yield "\t".join(GOOGLE_COLUMNS) + "\n"

    def line(p: Product) -> str:
        cells = _cells(p, _GOOGLE_AVAILABILITY, channel, ahead=True)
        # one line of one cell per column, whatever text a product holds; a cell with a double
        # quote is quoted (quotes doubled): one that starts with a quote would otherwise open a
        # quoted value for every quote-aware reader and run on into the next rows
        return _csv_line((_TSV_BREAKS.sub(" ", cells.get(c, "")) for c in GOOGLE_COLUMNS), "\t")

    yield from _chunks(products, line, chunk_rows)


def _csv_line(values: Iterable[str], delimiter: str = ",") -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\n").writerow(list(values))
    return out.getvalue()


def _meta(products: Iterable[Product], chunk_rows: int, channel: Channel) -> Iterator[str]:
    yield _csv_line(META_COLUMNS)

    def line(p: Product) -> str:
        cells = _cells(p, _META_AVAILABILITY, channel, ahead=True)
        if not (cells["brand"] or p.gtin or p.mpn):
            cells["brand"] = _one_line(channel.title, 100)  # Meta: the shop's name
        return _csv_line(cells.get(c, "") for c in META_COLUMNS)

    yield from _chunks(products, line, chunk_rows)


def _criteo(products: Iterable[Product], chunk_rows: int, channel: Channel) -> Iterator[str]:
    yield _csv_line(CRITEO_COLUMNS)

    def line(p: Product) -> str:
        cells = _cells(p, _CRITEO_AVAILABILITY, channel, ahead=False)  # no sale period column
        return _csv_line(cells.get(c, "") for c in CRITEO_COLUMNS)

    yield from _chunks(products, line, chunk_rows)


def _xml_text(value: str) -> str:
    return escape(_XML_INVALID.sub("", value))


def _origin(url: str) -> str:
    """The origin of `url`, "" for one urlsplit cannot read (a host opening an IPv6 bracket
    it never closes: the ValueError cut the feed off after its 200 was sent)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    return f"{parts.scheme}://{parts.netloc}/"


def _xml(products: Iterable[Product], chunk_rows: int, channel: Channel) -> Iterator[str]:
    iterator = iter(products)
    first = next(iterator, None)
    link = channel.link or (_origin(first.url) if first is not None else "")
    yield (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0">\n<channel>\n'
        f"<title>{_xml_text(channel.title)}</title>\n<link>{_xml_text(link)}</link>\n"
        "<description>Product feed</description>\n"
    )

    def item(p: Product) -> str:
        cells = _cells(p, _GOOGLE_AVAILABILITY, channel, ahead=True)
        fields = []
        for name in GOOGLE_COLUMNS:
            value = cells.get(name, "")
            parts = value.split(",") if name == "additional_image_link" and value else [value]
            fields += [f"<g:{name}>{_xml_text(v)}</g:{name}>" for v in parts if v]
        return f"<item>{''.join(fields)}</item>\n"

    rest = iterator if first is None else itertools.chain([first], iterator)
    yield from _chunks(rest, item, chunk_rows)
    yield "</channel>\n</rss>\n"


FEEDS = tuple(CONTENT_TYPES)
_WRITERS: dict[str, Callable[[Iterable[Product], int, Channel], Iterator[str]]] = {
    "google.tsv": _tsv,
    "google.xml": _xml,
    "meta.csv": _meta,
    "criteo.csv": _criteo,
}


def stream(
    name: str,
    products: Iterable[Product],
    chunk_rows: int = 500,
    channel: Channel | None = None,
) -> Iterator[str]:
    """The feed `name` (one of FEEDS) as text chunks; KeyError for an unknown name."""
    return _WRITERS[name](products, chunk_rows, channel or Channel())
