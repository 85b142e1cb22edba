"""One XML item holds at most MAX_FIELDS values, `additional_image_link`s included: they were
appended to a list without bound, so a single `<item>` of repeated image links held the whole
feed in memory (300 MB of links: 300 MB kept), against the module's promise of bounded memory
whatever the feed's size."""

from __future__ import annotations

import io

from engine.catalog_formats import MAX_FIELDS, read_products, xml_rows

HEAD = b'<rss xmlns:g="http://base.google.com/ns/1.0"><channel>'
TAIL = b"</channel></rss>"
FIELDS = (
    b"<title>T</title><link>https://x.example/a</link>"
    b"<g:image_link>https://x.example/i.png</g:image_link><g:price>2.55 GBP</g:price>"
)
LINK = b"<g:additional_image_link>https://x.example/%d.png</g:additional_image_link>"


def _item(item_id: bytes, links: int) -> bytes:
    return (
        b"<item><g:id>"
        + item_id
        + b"</g:id>"
        + FIELDS
        + b"".join(LINK % i for i in range(links))
        + b"</item>"
    )


def test_an_item_of_endless_image_links_is_rejected_and_keeps_no_more_than_the_bound() -> None:
    feed = HEAD + _item(b"big", 50 * MAX_FIELDS) + _item(b"next", 3) + TAIL
    rows = list(xml_rows(io.BytesIO(feed)))
    assert [problem is not None for _, _, problem in rows] == [True, False]
    big = rows[0][1]
    assert len(big.get("additional_image_link", [])) <= MAX_FIELDS  # not 10,000 kept
    assert "fields" in str(rows[0][2])
    rejected: list[tuple[int, str]] = []
    products = list(
        read_products(io.BytesIO(feed), "google-xml", None, lambda n, r: rejected.append((n, r)))
    )
    assert [p.item_id for p in products] == ["next"]
    assert len(rejected) == 1 and "fields" in rejected[0][1]


def test_an_item_with_its_images_within_the_bound_reads() -> None:
    feed = HEAD + _item(b"a1", MAX_FIELDS - 10) + TAIL
    (product,) = read_products(io.BytesIO(feed), "google-xml")
    assert product.item_id == "a1" and len(product.additional_image_links) == 10
