"""Per-request block parameters (issue 18 item 1): parsed, validated and matched here. Pure.

`n` (1..50 items), `category`, `brand`, `min_price`, `max_price` (filters on the candidate
items' catalog fields), `exclude` (item ids never shown), `context_item` (the item the recipient
looks at or just bought: recommendations lean on it; `similar_items` needs it) and `locale`
(BCP 47, handed to the templates). A query string (`from_query`) carries them as text,
`exclude` comma-separated; a JSON body (`from_body`) as JSON values, `exclude` as an array of
ids or that text. Anything unknown, repeated or out of range raises `InvalidParam` naming the
parameter (the API answers 400). `BlockParams.key` is the canonical text of a parameter set: the
block caches keep one entry per distinct key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.catalog import Product
from engine.suggest import did_you_mean
from engine.text import id_problem, text_problem

NAMES = (
    "n",
    "category",
    "brand",
    "min_price",
    "max_price",
    "exclude",
    "context_item",
    "locale",
)
NUMBERS = ("n", "min_price", "max_price")  # JSON numbers in a body (text in a query string)
MAX_N = 50
MAX_EXCLUDE = 100  # item ids in one `exclude`
MAX_TEXT = 500  # characters of a category or brand (as the catalog's bound)
MAX_ID = 128
MAX_LOCALE = 64
MAX_PRICE = 1e9  # as engine.catalog.MAX_PRICE
REPEATED = "given more than once"  # the reason for a parameter given twice (api.shared.single)
CATEGORY_SEPARATOR = " > "  # Google's product_type path: "Home > Kitchen" is in "Home"
# BCP 47 (RFC 5646) language tags, matched on the lower-cased tag: language (with extlangs),
# script, region, variants, extensions, private use. Grandfathered tags are not accepted.
_LANGTAG = re.compile(
    r"(?:[a-z]{2,3}(?:-[a-z]{3}){0,3}|[a-z]{4,8})"
    r"(?:-[a-z]{4})?"
    r"(?:-(?:[a-z]{2}|[0-9]{3}))?"
    r"(?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*"
    r"(?:-[0-9a-wy-z](?:-[a-z0-9]{2,8})+)*"
    r"(?:-x(?:-[a-z0-9]{1,8})+)?"
    r"|x(?:-[a-z0-9]{1,8})+"
)


class InvalidParam(ValueError):
    """A parameter that is unknown, repeated or out of range; `name` names it."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"parameter {name!r}: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BlockParams:
    n: int | None = None
    category: str | None = None
    brand: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    exclude: frozenset[str] = frozenset()
    context_item: str | None = None
    locale: str | None = None

    @property
    def filtered(self) -> bool:
        """Whether a filter on the catalog fields is set (category, brand, price range)."""
        return (self.category, self.brand, self.min_price, self.max_price) != (None,) * 4

    def matches(self, product: Product) -> bool:
        """Whether `product` passes the filters and is not excluded."""
        if product.item_id in self.exclude:
            return False
        if self.category is not None and not _in_category(product.category, self.category):
            return False
        if self.brand is not None and product.brand.casefold() != self.brand.casefold():
            return False
        if self.min_price is not None and product.price < self.min_price:
            return False
        return self.max_price is None or product.price <= self.max_price

    @property
    def key(self) -> str:
        """The canonical text of this parameter set: equal sets, equal keys; different sets,
        different keys (NUL separates the parts: no value can hold one)."""
        parts = [
            f"n={self.n}" if self.n is not None else "",
            f"category={self.category.casefold()}" if self.category is not None else "",
            f"brand={self.brand.casefold()}" if self.brand is not None else "",
            f"min_price={self.min_price!r}" if self.min_price is not None else "",
            f"max_price={self.max_price!r}" if self.max_price is not None else "",
            "exclude=" + ",".join(sorted(self.exclude)) if self.exclude else "",
            f"context_item={self.context_item}" if self.context_item is not None else "",
            f"locale={self.locale}" if self.locale is not None else "",
        ]
        return "\x00".join(part for part in parts if part)


NO_PARAMS = BlockParams()


def _in_category(category: str, wanted: str) -> bool:
    have, want = category.casefold(), wanted.casefold()
    return have == want or have.startswith(want + CATEGORY_SEPARATOR)


# -- parsing ---------------------------------------------------------------------------------------


def from_query(
    pairs: Iterable[tuple[str, str]], ignore: Iterable[str] = ("format",)
) -> BlockParams:
    """The parameters of a query string's (name, value) pairs; names in `ignore` are the route's
    own (`format`). Raises InvalidParam."""
    own = tuple(ignore)
    skip = frozenset(own)
    values: dict[str, Any] = {}
    for name, value in pairs:
        if name in skip:
            continue
        if name not in NAMES:
            raise _unknown(name, own)
        if name in values:
            raise InvalidParam(name, REPEATED)
        values[name] = value
    return build(values)


def from_body(body: Mapping[str, Any], ignore: Iterable[str]) -> BlockParams:
    """The parameters among a JSON body's fields; names in `ignore` are the route's own fields
    (`block`, `user_ids`, ...). Raises InvalidParam for any other field."""
    own = tuple(ignore)
    skip = frozenset(own)
    values: dict[str, Any] = {}
    for name, value in body.items():
        if name in skip:
            continue
        if name not in NAMES:
            raise _unknown(str(name)[:100], own)
        if name in NUMBERS and isinstance(value, str):
            raise InvalidParam(name, "must be a JSON number, not a string")
        values[name] = value
    return build(values)


def _unknown(name: str, own: tuple[str, ...]) -> InvalidParam:
    """An unknown name, with the one meant when it is close to one (`deadline` for
    `deadline_ms`, `fromat`) and the route's own fields beside the block parameters: the
    message listed only the latter, so a misspelled own field read as one that does not exist."""
    meant = did_you_mean(name, (*own, *NAMES))
    fields = f"the fields are {', '.join(own)}; " if own else ""
    return InvalidParam(
        name, f"unknown; {meant}{fields}the block parameters are {', '.join(NAMES)}"
    )


def build(values: Mapping[str, Any]) -> BlockParams:
    """A parameter set from name -> value (text from a query, or JSON values)."""
    if not values:
        return NO_PARAMS
    params = BlockParams(
        n=_count(values.get("n")),
        category=_text(values, "category"),
        brand=_text(values, "brand"),
        min_price=_price(values, "min_price"),
        max_price=_price(values, "max_price"),
        exclude=_ids(values.get("exclude")),
        context_item=_item(values.get("context_item"), "context_item"),
        locale=_locale(values.get("locale")),
    )
    low, high = params.min_price, params.max_price
    if low is not None and high is not None and low > high:
        raise InvalidParam("max_price", f"is below min_price ({high:g} < {low:g})")
    return params


def _count(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,3}", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_N:
        raise InvalidParam("n", f"must be an integer from 1 to {MAX_N}")
    return value


def _text(values: Mapping[str, Any], name: str) -> str | None:
    value = values.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidParam(name, "must be a non-empty string")
    text = value.strip()
    if len(text) > MAX_TEXT:
        raise InvalidParam(name, f"is longer than {MAX_TEXT} characters")
    problem = text_problem(text)
    if problem:
        raise InvalidParam(name, problem)
    return text


def _price(values: Mapping[str, Any], name: str) -> float | None:
    value = values.get(name)
    if value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,10}(\.[0-9]{1,4})?", value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidParam(name, "must be a number >= 0, such as 10 or 9.99")
    # compared before float(): an integer of 400 digits overflows it (NaN fails the comparison)
    if not 0 <= value <= MAX_PRICE:
        raise InvalidParam(name, f"must be a number from 0 to {MAX_PRICE:.0f}")
    return float(value)


def _item(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID:
        raise InvalidParam(name, f"must be an item id of 1..{MAX_ID} characters")
    problem = id_problem(value)
    if problem:
        raise InvalidParam(name, problem)
    return value


def _ids(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not value:
        raise InvalidParam("exclude", "must be item ids (comma-separated, or an array)")
    if len(value) > MAX_EXCLUDE:
        raise InvalidParam("exclude", f"holds more than {MAX_EXCLUDE} item ids")
    if not all(isinstance(v, str) for v in value):  # `_item` takes None for "not given"
        raise InvalidParam("exclude", f"must be item ids of 1..{MAX_ID} characters")
    return frozenset(_item(v, "exclude") or "" for v in value)


def _locale(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_LOCALE:
        raise InvalidParam("locale", "must be a BCP 47 language tag such as en-GB")
    if _LANGTAG.fullmatch(value.lower()) is None:
        raise InvalidParam("locale", f"{value[:MAX_LOCALE]!r} is not a BCP 47 language tag")
    return canonical_locale(value)


def canonical_locale(tag: str) -> str:
    """A valid tag in its canonical case: `en-gb` -> `en-GB`, `zh-hant-tw` -> `zh-Hant-TW`."""
    out: list[str] = []
    extension = False
    for i, part in enumerate(tag.split("-")):
        extension = extension or (i > 0 and len(part) == 1)
        if i and not extension and len(part) == 4 and part.isalpha():
            out.append(part.title())
        elif i and not extension and len(part) == 2 and part.isalpha():
            out.append(part.upper())
        else:
            out.append(part.lower())
    return "-".join(out)
