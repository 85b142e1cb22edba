"""Validators of product feed rows, written from the platforms' published attribute lists:

- Google Merchant Center product data specification (support.google.com/merchants/answer/7052112):
  id <= 50, title <= 150, description <= 5000, link, image_link, availability in_stock /
  out_of_stock / preorder / backorder with availability_date for the last two, price "N CUR",
  brand for new products unless identifier_exists is no, gtin of 8/12/13/14 digits,
  identifier_exists no exactly when there is no GTIN and no brand with an MPN, condition new /
  refurbished / used,
  sale_price below price in its currency, sale_price_effective_date "start/end" in ISO 8601,
  item_group_id <= 50, product_type <= 750, at most 10 additional_image_link.
- Meta catalog fields (developers.facebook.com/docs/commerce-platform/catalog/fields): id <= 100,
  title <= 200, description <= 9999, availability in stock / out of stock / preorder / available
  for order / discontinued, condition, price, link, image_link, and brand, gtin or mpn.
- Criteo product feed specification (support.criteo.com, article 207571095): id (ASCII, no quotes,
  <= 240), title, description, link, image_link, price required; availability in stock / out of
  stock / preorder.

Each returns the list of problems of one row (a dict of the feed's column -> text), empty when
the row passes.
"""

from __future__ import annotations

import re
from datetime import datetime

PRICE = re.compile(r"^(\d+(?:\.\d{1,2})?) ([A-Z]{3})$")
URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$")
GTIN_LENGTHS = (8, 12, 13, 14)
CONDITIONS = ("new", "refurbished", "used")
GOOGLE_AVAILABILITY = ("in_stock", "out_of_stock", "preorder", "backorder")
META_AVAILABILITY = ("in stock", "out of stock", "preorder", "available for order", "discontinued")
CRITEO_AVAILABILITY = ("in stock", "out of stock", "preorder")


def _required(row: dict[str, str], names: tuple[str, ...]) -> list[str]:
    return [f"{name} is required" for name in names if not row.get(name, "").strip()]


def _lengths(row: dict[str, str], limits: dict[str, int]) -> list[str]:
    return [
        f"{name} is longer than {limit}"
        for name, limit in limits.items()
        if len(row.get(name, "")) > limit
    ]


def _urls(row: dict[str, str], names: tuple[str, ...]) -> list[str]:
    problems = [f"{n} is not an http(s) URL" for n in names if row.get(n) and not URL.match(row[n])]
    extra = [u for u in row.get("additional_image_link", "").split(",") if u]
    problems += [f"additional_image_link {u!r} is not a URL" for u in extra if not URL.match(u)]
    return problems + (["more than 10 additional_image_link"] if len(extra) > 10 else [])


def _iso(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _prices(row: dict[str, str]) -> list[str]:
    price = PRICE.match(row.get("price", ""))
    if price is None:
        return [f"price {row.get('price')!r} is not 'number currency'"]
    sale_text = row.get("sale_price", "")
    if not sale_text:
        return []
    sale = PRICE.match(sale_text)
    if sale is None:
        return [f"sale_price {sale_text!r} is not 'number currency'"]
    if sale.group(2) != price.group(2):
        return ["sale_price is in another currency than price"]
    if float(sale.group(1)) >= float(price.group(1)):
        return ["sale_price is not below price"]
    return _period(row.get("sale_price_effective_date", ""))


def _period(text: str) -> list[str]:
    if not text:
        return []
    start, sep, end = text.partition("/")
    if not sep or not _iso(start) or not _iso(end):
        return [f"sale_price_effective_date {text!r} is not ISO 8601 start/end"]
    if datetime.fromisoformat(start) >= datetime.fromisoformat(end):
        return ["sale_price_effective_date ends before it starts"]
    return []


def _vocabulary(row: dict[str, str], name: str, words: tuple[str, ...]) -> list[str]:
    value = row.get(name, "")
    return [] if value in words else [f"{name} {value!r} is not one of {', '.join(words)}"]


def google(row: dict[str, str]) -> list[str]:
    problems = _required(row, ("id", "title", "description", "link", "image_link"))
    problems += _required(row, ("availability", "price", "identifier_exists"))
    limits = {"id": 50, "title": 150, "description": 5000, "item_group_id": 50}
    problems += _lengths(row, limits | {"product_type": 750, "brand": 70, "mpn": 70})
    problems += _urls(row, ("link", "image_link"))
    problems += _vocabulary(row, "availability", GOOGLE_AVAILABILITY)
    if row.get("availability") in ("preorder", "backorder"):
        date = row.get("availability_date", "")
        problems += [] if date and _iso(date) else ["availability_date is required for it"]
    problems += _prices(row)
    problems += _vocabulary(row, "condition", CONDITIONS) if row.get("condition") else []
    return problems + _google_identifiers(row)


def _google_identifiers(row: dict[str, str]) -> list[str]:
    gtin, brand, mpn = row.get("gtin", ""), row.get("brand", ""), row.get("mpn", "")
    problems = []
    if gtin and (not gtin.isdigit() or len(gtin) not in GTIN_LENGTHS):
        problems.append(f"gtin {gtin!r} is not 8, 12, 13 or 14 digits")
    expected = "yes" if gtin or (brand and mpn) else "no"
    if row.get("identifier_exists") != expected:
        problems.append(f"identifier_exists must be {expected}")
    if not brand and expected == "yes" and row.get("condition", "new") == "new":
        problems.append("brand is required for a new product with identifiers")
    return problems


def meta(row: dict[str, str]) -> list[str]:
    problems = _required(row, ("id", "title", "description", "availability", "condition"))
    problems += _required(row, ("price", "link", "image_link"))
    problems += _lengths(row, {"id": 100, "title": 200, "description": 9999, "brand": 100})
    problems += _urls(row, ("link", "image_link"))
    problems += _vocabulary(row, "availability", META_AVAILABILITY)
    problems += _vocabulary(row, "condition", CONDITIONS)
    if not (row.get("brand") or row.get("gtin") or row.get("mpn")):
        problems.append("brand, gtin or mpn is required")
    return problems + _prices(row)


def criteo(row: dict[str, str]) -> list[str]:
    problems = _required(row, ("id", "title", "description", "link", "image_link", "price"))
    problems += _lengths(row, {"id": 240})
    if not row.get("id", "").isascii() or '"' in row.get("id", ""):
        problems.append("id must be ASCII without quotation marks")
    problems += _urls(row, ("link", "image_link"))
    if row.get("availability"):
        problems += _vocabulary(row, "availability", CRITEO_AVAILABILITY)
    return problems + _prices(row)
