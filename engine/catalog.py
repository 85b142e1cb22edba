"""Products of the shop's catalog: validation and (de)serialization. Pure.

Beyond the contract's fields a product may carry what Google Merchant Center feeds hold (issue 19):
`sale_price` with an optional effective period (`sale_starts`/`sale_ends`, epoch ms, the end
excluded; `effective_price(now)` is what blocks and feeds show), `item_group_id` (variants of one
product), `gtin`, `mpn`, `condition`, `availability_date` (epoch ms, for pre-orders),
`additional_image_links`, free `attributes` (text -> text, bounded) and `prices` in other
currencies (ISO 4217 code -> list price, at most MAX_PRICES; issue 19 item 6: a block shows the
user's currency when the product has it, engine.locales). `pack()` leaves those out
while they hold their defaults, so records of products without them are what they were before.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgpack

from engine.text import (
    RepeatedKeys,
    id_problem,
    key_shown,
    new_id_problem,
    repr_cut,
    text_problem,
    unique_keys,
)

log = logging.getLogger("persona.catalog")

MAX_PRICE = 1e9  # as engine.events.MAX_PRICE

AVAILABILITY = ("in_stock", "out_of_stock", "preorder")
CONDITIONS = ("new", "refurbished", "used")  # Google's and Meta's shared vocabulary
MAX_IMAGES = 10  # additional image links kept (Google takes up to 10)
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_NAME = 64
MAX_ATTRIBUTE_VALUE = 1000
MAX_PRICES = 20  # currencies in a product's `prices`


_T = TypeVar("_T")

MAX_PROBLEMS = 5  # a refused product's problems named in its reason; past them, a count


class InvalidProduct(ValueError):
    """A refused product: `reason` names its first problem first (where a reason always began)
    and then, after "; also: ", the others found (at most MAX_PROBLEMS named, then "and N
    more"); `problems`: each of them."""

    def __init__(self, reason: str, problems: list[str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.problems = problems if problems is not None else [reason]

    @classmethod
    def of(cls, problems: list[str]) -> InvalidProduct:
        """One refusal naming each of `problems` (at least one), the first one first."""
        named = problems[:MAX_PROBLEMS]
        reason = named[0]
        if len(named) > 1:
            reason += "; also: " + "; ".join(named[1:])
        if len(problems) > MAX_PROBLEMS:
            reason += f"; and {len(problems) - MAX_PROBLEMS} more"
        return cls(reason, list(problems))


@dataclass(frozen=True, slots=True)
class Product:
    item_id: str
    title: str
    url: str
    image_url: str
    price: float
    currency: str
    availability: str = "in_stock"
    category: str = ""
    brand: str = ""
    description: str = ""
    sale_price: float | None = None
    sale_starts: int | None = None  # epoch ms; None: since ever
    sale_ends: int | None = None  # epoch ms, excluded; None: for ever
    item_group_id: str = ""
    gtin: str = ""
    mpn: str = ""
    condition: str = "new"
    availability_date: int | None = None  # epoch ms: when a pre-order ships
    additional_image_links: tuple[str, ...] = ()
    attributes: dict[str, str] = field(default_factory=dict)
    prices: dict[str, float] = field(default_factory=dict)  # other currencies: code -> price

    def __hash__(self) -> int:  # `attributes` is a dict: hash what identifies the offer
        return hash((self.item_id, self.title, self.url, self.price, self.availability))

    @property
    def purchasable(self) -> bool:
        return self.availability != "out_of_stock"

    def sale_active(self, now_ms: int) -> bool:
        """The sale price applies at `now_ms` (inside its effective period, if it has one)."""
        if self.sale_price is None:
            return False
        started = self.sale_starts is None or self.sale_starts <= now_ms
        return started and (self.sale_ends is None or now_ms < self.sale_ends)

    def effective_price(self, now_ms: int) -> float:
        """What the product costs at `now_ms`: the sale price while it is effective."""
        return self.sale_price if self.sale_active(now_ms) else self.price  # type: ignore[return-value]

    def fold_view(self) -> Product:
        """This product as the profile fold reads it (`engine.profile.apply`: the category and
        brand for affinities, the price and currency of a purchase without its own), every other
        field left empty: what a worker keeps for its fold, about a third of a whole decoded
        product's memory (streams.read_side.FoldProducts). The shared strings are interned."""
        return Product(
            self.item_id,
            "",
            "",
            "",
            self.price,
            sys.intern(self.currency),
            category=sys.intern(self.category),
            brand=sys.intern(self.brand),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def pack(self) -> bytes:
        data = self.to_dict()
        for name, default in _OPTIONAL_DEFAULTS.items():
            if data[name] == default:
                del data[name]
        return bytes(msgpack.packb(data, use_bin_type=True))

    @classmethod
    def unpack(cls, raw: bytes) -> Product:
        data = msgpack.unpackb(raw, raw=False)
        if "additional_image_links" in data:
            data["additional_image_links"] = tuple(data["additional_image_links"])
        return cls(**data)


def stored_product(raw: bytes | None) -> Product | None:
    """A catalog table row as a product; None for no row and for a row that is not a product
    (the table's changelog topic is open to producers too, and earlier versions wrote other
    rows): whoever reads it takes the item as unknown, as the feeds pass such rows over."""
    if raw is None:
        return None
    try:
        return Product.unpack(raw)
    except Exception:
        return None


_OPTIONAL_DEFAULTS: dict[str, Any] = {
    "sale_price": None,
    "sale_starts": None,
    "sale_ends": None,
    "item_group_id": "",
    "gtin": "",
    "mpn": "",
    "condition": "new",
    "availability_date": None,
    "additional_image_links": (),
    "attributes": {},
    "prices": {},
}


_KEYS = frozenset({"item_id", "currency", "availability", "url", "image_url"})


def _shown(value: Any) -> str:
    """A refused value for a message (so a shop sees what its feed said): its repr, cut to 40
    characters; control characters come escaped, so the message stays one line."""
    if isinstance(value, int) and value.bit_length() > 64:  # repr could take long, or refuse
        return f"an integer of {value.bit_length()} bits"
    return repr_cut(value, 42, 40, counted="repr")


def _text(data: dict[str, Any], name: str, required: bool, max_len: int = 2048) -> str:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise InvalidProduct(f"missing required field {name!r}")
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise InvalidProduct(f"{name} must be a string")
    if isinstance(value, float) and not math.isfinite(value):  # JSON's NaN: the product "nan"
        raise InvalidProduct(f"{name} must be a string, not {value}")
    text = str(value).strip()
    if len(text) > max_len:
        raise InvalidProduct(f"{name} is longer than {max_len} characters")
    problem = new_id_problem(text) if name in _KEYS else text_problem(text)
    if problem:
        raise InvalidProduct(f"{name} {problem}")
    return text


def _absolute_url(data: dict[str, Any], name: str) -> str:
    url = _text(data, name, True)
    if not url.startswith(("https://", "http://")):
        hint = ""
        if url.startswith("/") and not url.startswith("//"):  # a shop's relative link
            hint = (
                f": write it with its scheme and host, such as https://shop.example.com{url[:60]}"
            )
        raise InvalidProduct(
            f"{name} must be an absolute http(s) URL (e-mail clients need one), "
            f"not {_shown(url)}{hint}"
        )
    problem = userinfo_problem(url)
    if problem:
        raise InvalidProduct(f"{name} {problem}")
    try:  # an unbalanced bracket in the host: no browser opens it, urllib cannot split it
        urllib.parse.urlsplit(url)
    except ValueError as exc:
        reason = f"{name} is not a URL a browser can open ({exc}): {_shown(url)}"
        raise InvalidProduct(reason) from None
    return url


def userinfo_problem(url: str) -> str | None:
    """Why an http(s) URL must not be followed for its userinfo (`https://shop@evil.example/p`
    reads as the shop and goes to evil.example), or None when it has none. The authority is read
    as browsers read it (WHATWG URL, special schemes): after the scheme's `:` any slashes and
    backslashes, then up to the first `/`, `?`, `#` or backslash; its userinfo is what stands
    before its last `@`; tabs, CRs and LFs are removed first, as browsers remove them."""
    _, sep, rest = url.translate(_STRIPPED).partition(":")
    if not sep:
        return None
    rest = rest.lstrip("/\\")
    authority = re.split(r"[/?#\\]", rest, maxsplit=1)[0]
    user, at, host = authority.rpartition("@")
    if not at:
        return None
    return (
        f"holds a user name before '@' ({_shown(user)}): it reads as the shop, but the link "
        f"goes to {_shown(host)}"
    )


_STRIPPED = str.maketrans("", "", "\t\r\n")  # what a browser removes from a URL before reading it
MAX_REPORTED = 10_000  # item ids `UnsafeProducts` remembers having reported


class UnsafeProducts:
    """Stored products left out of blocks and feeds because their `url` or `image_url` holds
    userinfo (`shown_safely`): catalog intake refuses such URLs (`userinfo_problem`), but a
    catalog stored by an older version, or by another producer, can hold them. Each product is
    logged once (a warning naming the item and the field, never the userinfo, which may be a
    password) and counted (`count`: products reported, per process); at most `limit` ids are
    remembered, then the memory starts over (a product may then be reported again)."""

    def __init__(self, limit: int = MAX_REPORTED) -> None:
        self.limit = limit
        self.reported: set[str] = set()
        self.count = 0

    def report(self, product: Product, name: str) -> None:
        """Log and count `product` (its URL field `name` holds userinfo) unless done already."""
        if product.item_id in self.reported:
            return
        if len(self.reported) >= self.limit:
            self.reported.clear()
        self.reported.add(product.item_id)
        self.count += 1
        log.warning(
            "product %r left out of blocks and feeds: its %s holds a user name before '@' (it "
            "reads as the shop, the link goes elsewhere; stored before the catalog refused such "
            "URLs): send the product again with a plain URL",
            product.item_id[:128],
            name,
        )


UNSAFE_PRODUCTS = UnsafeProducts()


def shown_safely(product: Product) -> bool:
    """Whether `product`'s links may be shown (blocks, feeds): False, reported once
    (`UNSAFE_PRODUCTS`), when its `url` or `image_url` holds userinfo. One substring test per
    URL in the common case."""
    for name, url in (("url", product.url), ("image_url", product.image_url)):
        if "@" in url and userinfo_problem(url):
            UNSAFE_PRODUCTS.report(product, name)
            return False
    return True


# A price written as text: decimal digits, an optional fraction and exponent. Python's float()
# also takes "1_000" (1000) and surrounding whitespace of any kind; a feed means neither.
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


# A price written for people: an optional currency symbol, digits grouped by `.`, `,`, a space
# or an apostrophe, and a decimal part after `.` or `,` (`12,50`, `1.299,00`, `€24.90`, `$1,299`).
_SYMBOLS = "€$£¥₹₽₺₩₪"
_WRITTEN = re.compile(
    rf"[{_SYMBOLS}]*\s?"  # a symbol before
    r"(\d{1,3}(?:[., '\u00a0\u202f]\d{3})*|\d+)"  # the whole part, perhaps grouped
    r"(?:([.,])(\d{1,2}))?"  # a decimal part
    rf"\s?[{_SYMBOLS}]*",  # a symbol after
    re.ASCII,
)


def price_hint(value: Any) -> str:
    """What to write for a price written for people (`12,50` -> `12.50`; `1.299,00` ->
    `1299.00`; `€24.90` -> `24.90`), as the tail of a refusal ("" when the text is no such
    price, or a comma leaves it ambiguous: `1,299` is 1299 in one shop and 1.299 in another)."""
    if not isinstance(value, str) or len(value) > 40:
        return ""
    match = _WRITTEN.fullmatch(value.strip())
    if match is None:
        return ""
    whole, point, decimals = match.groups()
    digits = re.sub(r"\D", "", whole)
    if point is None and ("." in whole or "," in whole):
        return ""  # 1,299 or 1.299: a thousands separator, or a decimal one?
    written = digits if point is None else f"{digits}.{decimals}"
    symbol = any(c in _SYMBOLS for c in value)
    also = " and the currency in the currency column" if symbol else ""
    return f": write {written} (a decimal point, no thousands separator{also})"


def _as_float(value: Any) -> float:
    """`value` as a float (TypeError, ValueError or OverflowError when it is none): a number, or
    text that is a plain decimal number (`_DECIMAL`, after trimming spaces)."""
    if isinstance(value, str) and not _DECIMAL.fullmatch(value.strip(" ")):
        raise ValueError(f"not a decimal number: {value[:40]!r}")
    if isinstance(value, bool):
        raise TypeError("a boolean is not a price")
    return float(value)


def validate_product(data: Any) -> Product:
    """`data` as a valid product, or InvalidProduct naming every problem found in it (the
    fields checked in a fixed order: the first problem comes first in the reason)."""
    if not isinstance(data, dict):
        raise InvalidProduct(f"a product must be an object, got {type(data).__name__}")
    if type(data) is RepeatedKeys:
        raise InvalidProduct(f"the product gives the key {key_shown(data.repeated)} more than once")
    problems: list[str] = []

    def checked(check: Callable[[], _T], otherwise: _T) -> _T:
        try:
            return check()
        except InvalidProduct as exc:
            problems.extend(exc.problems)
            return otherwise

    item_id = checked(lambda: _text(data, "item_id", True, max_len=128), "")
    price = checked(lambda: _product_price(data.get("price")), None)
    currency = checked(lambda: _currency(_text(data, "currency", True, max_len=3), "currency"), "")
    availability = checked(lambda: _availability(data), "in_stock")
    no_sale: tuple[float | None, int | None, int | None] = (None, None, None)
    sale_price, sale_starts, sale_ends = checked(lambda: _sale(data, price), no_sale)
    title = checked(lambda: _text(data, "title", True, max_len=500), "")
    url = checked(lambda: _absolute_url(data, "url"), "")
    image_url = checked(lambda: _absolute_url(data, "image_url"), "")
    category = checked(lambda: _text(data, "category", False, max_len=500), "")
    brand = checked(lambda: _text(data, "brand", False, max_len=200), "")
    description = checked(lambda: _text(data, "description", False, max_len=5000), "")
    item_group_id = checked(lambda: _text(data, "item_group_id", False, max_len=50), "")
    gtin = checked(lambda: _gtin(data), "")
    mpn = checked(lambda: _text(data, "mpn", False, max_len=70), "")
    condition = checked(lambda: _condition(data), "new")
    availability_date = checked(lambda: _time(data, "availability_date"), None)
    no_images: tuple[str, ...] = ()
    images = checked(lambda: _images(data.get("additional_image_links")), no_images)
    attributes: dict[str, str] = checked(lambda: _attributes(data.get("attributes")), {})
    # rounded to 4 places as stored (+ 0.0: -0.0 is 0.0, shown "-0.00" otherwise)
    stored = None if price is None else round(price, 4) + 0.0
    prices: dict[str, float] = checked(
        lambda: _prices(data.get("prices"), stored, currency or None), {}
    )
    if problems or stored is None:
        raise InvalidProduct.of(problems)
    return Product(
        item_id=item_id,
        title=title,
        url=url,
        image_url=image_url,
        price=stored,
        currency=currency,
        availability=availability,
        category=category,
        brand=brand,
        description=description,
        sale_price=sale_price,
        sale_starts=sale_starts,
        sale_ends=sale_ends,
        item_group_id=item_group_id,
        gtin=gtin,
        mpn=mpn,
        condition=condition,
        availability_date=availability_date,
        additional_image_links=images,
        attributes=attributes,
        prices=prices,
    )


def _product_price(price_raw: Any) -> float:
    """The product's `price` as a float, checked."""
    try:
        price = _as_float(price_raw)
    except (TypeError, ValueError, OverflowError):
        raise InvalidProduct(
            f"price must be a number >= 0, not {_shown(price_raw)}{price_hint(price_raw)}"
        ) from None
    if not math.isfinite(price) or price < 0:
        raise InvalidProduct(f"price must be a finite number >= 0, not {_shown(price_raw)}")
    if price > MAX_PRICE:
        raise InvalidProduct(f"price must be at most {MAX_PRICE:.0f}, not {_shown(price_raw)}")
    return price


def _availability(data: dict[str, Any]) -> str:
    availability = _text(data, "availability", False) or "in_stock"
    if availability not in AVAILABILITY:
        raise InvalidProduct(
            f"availability must be one of {', '.join(AVAILABILITY)}, not {_shown(availability)}"
        )
    return availability


def _currency(text: str, name: str) -> str:
    code = text.upper()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise InvalidProduct(f"{name} must be an ISO 4217 code such as 'EUR', not {_shown(text)}")
    return code


def _prices(value: Any, price: float | None, currency: str | None) -> dict[str, float]:
    """`prices`: an object of at most MAX_PRICES ISO 4217 code -> price (0..MAX_PRICE); the
    product's own currency may appear only with its `price` (not compared while either of them
    is refused: None); a currency given twice (a repeated key, "2 EUR, 3 EUR", "eur" and "EUR")
    is refused, not one of its prices kept."""
    if value is None or value == "" or value == {}:
        return {}
    pairs: list[tuple[Any, Any]]
    if isinstance(value, str):  # a CSV/TSV cell: "12.50 EUR, 54.00 PLN" (Google's price form)
        pairs = _price_list(value)
    elif not isinstance(value, dict) or len(value) > MAX_PRICES:
        raise InvalidProduct(f"prices must be an object of at most {MAX_PRICES} currency -> price")
    elif type(value) is RepeatedKeys:
        raise InvalidProduct(f"prices gives the key {key_shown(value.repeated)} more than once")
    else:
        pairs = list(value.items())
    out: dict[str, float] = {}
    for code, amount in pairs:
        key = _currency(str(code)[:8], f"prices key {str(code)[:8]!r}")
        if key in out:
            raise InvalidProduct(f"prices gives the currency {key!r} more than once")
        if isinstance(amount, bool):
            raise InvalidProduct(f"prices[{key}] must be a number >= 0")
        out[key] = _price(amount, f"prices[{key}]")
    if price is None or currency is None:
        return out
    if out.get(currency, price) != price:
        raise InvalidProduct(f"prices[{currency}] differs from price in {currency}")
    out.pop(currency, None)
    return out


def _price_list(text: str) -> list[tuple[str, str]]:
    """The (code, amount) pairs of a cell "12.50 EUR, 54.00 PLN", in order."""
    pairs = [part.split() for part in text.split(",", MAX_PRICES) if part.strip()]
    if len(pairs) > MAX_PRICES or any(len(pair) != 2 for pair in pairs):
        raise InvalidProduct("prices must be written as '12.50 EUR, 54.00 PLN'")
    return [(code, amount) for amount, code in pairs]


def _price(value: Any, name: str) -> float:
    try:
        price = _as_float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidProduct(
            f"{name} must be a number >= 0, not {_shown(value)}{price_hint(value)}"
        ) from None
    if not math.isfinite(price) or price < 0 or price > MAX_PRICE:
        raise InvalidProduct(
            f"{name} must be a finite number from 0 to {MAX_PRICE:.0f}, not {_shown(value)}"
        )
    return round(price, 4) + 0.0  # -0.0 is 0.0


def _sale(data: dict[str, Any], price: float | None) -> tuple[float | None, int | None, int | None]:
    """(sale price, start, end) from `sale_price` and either `sale_price_effective_date`
    (ISO 8601 `start/end`, Google's form) or `sale_starts`/`sale_ends` (epoch ms, ours); the
    sale price is not compared with a refused `price` (None)."""
    raw = data.get("sale_price")
    if raw is None or raw == "":
        return None, None, None
    sale = _price(raw, "sale_price")
    if price is not None and sale >= price:
        raise InvalidProduct("sale_price must be below price")
    period = data.get("sale_price_effective_date")
    starts: int | None
    ends: int | None
    if period:
        starts, ends = parse_period(str(period))
    else:
        starts, ends = _time(data, "sale_starts"), _time(data, "sale_ends")
    if starts is not None and ends is not None and ends <= starts:
        raise InvalidProduct("the sale's end must come after its start")
    return sale, starts, ends


def parse_time(text: str) -> int:
    """An ISO 8601 date or date-time (no zone: UTC) -> epoch ms; ValueError when it is not one
    or comes before 1970 (epoch ms >= 0, as a product's times written as numbers: `_time`)."""
    parsed = datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    ms = int(parsed.timestamp() * 1000)
    if ms < 0:
        raise ValueError(f"{text.strip()[:40]!r} is before 1970")
    return ms


def parse_period(text: str) -> tuple[int, int]:
    """Google's `sale_price_effective_date`: `start/end`, both ISO 8601 -> epoch ms."""
    start, sep, end = text.partition("/")
    try:
        if not sep:
            raise ValueError
        return parse_time(start), parse_time(end)
    except (ValueError, OverflowError):
        raise InvalidProduct(
            "sale_price_effective_date must be two ISO 8601 times as start/end"
        ) from None


def _time(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < 2**53:
            raise InvalidProduct(f"{name} must be epoch milliseconds >= 0, not {_shown(value)}")
        return value
    try:
        return parse_time(str(value)[:64])
    except (ValueError, OverflowError):
        raise InvalidProduct(
            f"{name} must be an ISO 8601 date or time, not {_shown(value)}"
        ) from None


def _gtin(data: dict[str, Any]) -> str:
    gtin = _text(data, "gtin", False, max_len=14)
    if gtin and (not gtin.isdigit() or len(gtin) not in (8, 12, 13, 14)):
        raise InvalidProduct(f"gtin must be 8, 12, 13 or 14 digits, not {_shown(gtin)}")
    return gtin


def _condition(data: dict[str, Any]) -> str:
    condition = (_text(data, "condition", False, max_len=20) or "new").lower()
    if condition not in CONDITIONS:
        raise InvalidProduct(
            f"condition must be one of {', '.join(CONDITIONS)}, not {_shown(condition)}"
        )
    return condition


def _images(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = value.split(",")  # Google's TSV: comma-separated
    if not isinstance(value, list | tuple):
        raise InvalidProduct("additional_image_links must be a list of URLs")
    links = [str(v).strip() for v in value if str(v).strip()]
    checked = [
        _absolute_url({"additional_image_link": link}, "additional_image_link") for link in links
    ]
    return tuple(checked[:MAX_IMAGES])


def _attributes(value: Any) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if not isinstance(value, dict) or len(value) > MAX_ATTRIBUTES:
        raise InvalidProduct(f"attributes must be an object of at most {MAX_ATTRIBUTES} texts")
    if type(value) is RepeatedKeys:
        shown = key_shown(value.repeated)
        raise InvalidProduct(f"attributes gives the key {shown} more than once")
    out: dict[str, str] = {}
    for name, text in value.items():
        key = _text({"name": name}, "name", True, max_len=MAX_ATTRIBUTE_NAME)
        out[key] = _text({key: text}, key, False, max_len=MAX_ATTRIBUTE_VALUE)
    return out


def parse_product(raw: bytes) -> Product:
    """Decode a `catalog` topic value (JSON or msgpack) into a valid product."""
    try:
        is_json = raw.lstrip()[:1] == b"{"
        data = (
            json.loads(raw, object_pairs_hook=unique_keys)
            if is_json
            else msgpack.unpackb(raw, raw=False, object_pairs_hook=unique_keys)
        )
    except Exception as exc:
        raise InvalidProduct(f"undecodable product: {str(exc)[:200]}") from None
    try:
        return validate_product(data)
    except InvalidProduct:
        raise
    except Exception as exc:  # unforeseen: still one bad record, never a stopped agent
        raise InvalidProduct(
            f"unreadable product: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None


def catalog_record(key: bytes | None, value: bytes | None) -> tuple[bytes, Product | None]:
    """What one record of the `catalog` topic asks for: (the catalog table's key, the product to
    store; None: delete the key). A product is stored under its own item id, whatever the record's
    key; a null value deletes the item its key names. InvalidProduct (with the reason) for a record
    the catalog cannot take."""
    if value is None:
        if not key:
            raise InvalidProduct("a catalog tombstone needs the item_id as key")
        return _tombstone_key(key), None
    product = parse_product(value)
    return product.item_id.encode(), product


def item_key_problem(key: bytes) -> str | None:
    """Why a record key cannot be an item id (1..128 characters of UTF-8, no control character:
    what `validate_product` and engine.events take), or None when it can. A key that is no item
    id may name a row of a table's own: Faust's offset row (`__faust\\x00offset__`, where table
    recovery resumes) is in every partition of the catalog and popularity tables."""
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return "is not UTF-8"
    if not 1 <= len(text) <= 128:
        return "is not 1..128 characters"
    return id_problem(text)


def _tombstone_key(key: bytes) -> bytes:
    """A tombstone's key, when it can name a product (a tombstone keyed as Faust's offset row
    deleted that row from every partition)."""
    problem = item_key_problem(key)
    if problem:
        raise InvalidProduct(f"a catalog tombstone's key must be an item id: it {problem}")
    return key
