"""Products of the shop's catalog: validation and (de)serialization. Pure."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import msgpack

from engine.text import id_problem, text_problem

MAX_PRICE = 1e9  # as engine.events.MAX_PRICE

AVAILABILITY = ("in_stock", "out_of_stock", "preorder")


class InvalidProduct(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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

    @property
    def purchasable(self) -> bool:
        return self.availability != "out_of_stock"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def pack(self) -> bytes:
        return bytes(msgpack.packb(self.to_dict(), use_bin_type=True))

    @classmethod
    def unpack(cls, raw: bytes) -> Product:
        return cls(**msgpack.unpackb(raw, raw=False))


_KEYS = frozenset({"item_id", "currency", "availability", "url", "image_url"})


def _text(data: dict[str, Any], name: str, required: bool, max_len: int = 2048) -> str:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise InvalidProduct(f"missing required field {name!r}")
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise InvalidProduct(f"{name} must be a string")
    text = str(value).strip()
    if len(text) > max_len:
        raise InvalidProduct(f"{name} is longer than {max_len} characters")
    problem = id_problem(text) if name in _KEYS else text_problem(text)
    if problem:
        raise InvalidProduct(f"{name} {problem}")
    return text


def _absolute_url(data: dict[str, Any], name: str) -> str:
    url = _text(data, name, True)
    if not url.startswith(("https://", "http://")):
        raise InvalidProduct(f"{name} must be an absolute http(s) URL (e-mail clients need one)")
    return url


def validate_product(data: Any) -> Product:
    if not isinstance(data, dict):
        raise InvalidProduct(f"a product must be an object, got {type(data).__name__}")
    item_id = _text(data, "item_id", True, max_len=128)
    price_raw = data.get("price")
    try:
        price = float(price_raw)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise InvalidProduct("price must be a number >= 0") from None
    if not math.isfinite(price) or price < 0:
        raise InvalidProduct("price must be a finite number >= 0")
    if price > MAX_PRICE:
        raise InvalidProduct(f"price must be at most {MAX_PRICE:.0f}")
    currency = _text(data, "currency", True, max_len=3).upper()
    if len(currency) != 3 or not currency.isalpha():
        raise InvalidProduct("currency must be an ISO 4217 code such as 'EUR'")
    availability = _text(data, "availability", False) or "in_stock"
    if availability not in AVAILABILITY:
        raise InvalidProduct(f"availability must be one of {', '.join(AVAILABILITY)}")
    return Product(
        item_id=item_id,
        title=_text(data, "title", True, max_len=500),
        url=_absolute_url(data, "url"),
        image_url=_absolute_url(data, "image_url"),
        price=round(price, 4),
        currency=currency,
        availability=availability,
        category=_text(data, "category", False, max_len=500),
        brand=_text(data, "brand", False, max_len=200),
        description=_text(data, "description", False, max_len=5000),
    )


def parse_product(raw: bytes) -> Product:
    """Decode a `catalog` topic value (JSON or msgpack) into a valid product."""
    try:
        is_json = raw.lstrip()[:1] == b"{"
        data = json.loads(raw) if is_json else msgpack.unpackb(raw, raw=False)
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
