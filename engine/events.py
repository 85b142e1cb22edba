"""The contract's event: types, decoding (JSON or msgpack) and validation.

Pure: no I/O. `decode` turns the bytes of a Kafka value into a dict, `validate` turns a dict into an
`Event` or raises `InvalidEvent` with a reason a person can act on.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack

from engine.consent import TEXT_VERSION
from engine.text import (
    MAX_ID,
    BadJson,
    RepeatedKeys,
    cut,
    id_problem,
    key_shown,
    new_id_problem,
    outside_json,
    repr_cut,
    short,
    text_problem,
    unique_keys,
)

CLICKSTREAM_TYPES = frozenset({"page_view", "product_view", "category_view", "search"})
CART_TYPES = frozenset({"add_to_cart", "remove_from_cart", "checkout", "purchase"})
SOCIAL_TYPES = frozenset({"like", "share", "comment", "follow", "mention"})
# `identify` (v1, any topic: it goes with clickstream) links `props.previous_id`, an anonymous id,
# to `user_id`; the fold merges the anonymous history into the user (engine/identity.py)
IDENTIFY = "identify"
# `click` (v1, clickstream): a link in a block was followed (`GET /c/{token}`, api/clicks.py);
# props `block`, `variant`, `link_ms` (when the link was made: a click on a link made before the
# user's erasure is fenced). The fold counts it; browsers cannot send it (engine/collect.py).
CLICK = "click"
EVENT_TYPES = CLICKSTREAM_TYPES | CART_TYPES | SOCIAL_TYPES | {"consent", IDENTIFY, CLICK}
INPUT_TOPICS = ("clickstream", "cart", "social")
CONSENT_PURPOSES = ("personalization", "email", "ads")

_ITEM_REQUIRED = frozenset({"product_view"}) | CART_TYPES - {"checkout"}
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# Live event times (topics, HTTP) before 2000 or after 2100 are certainly unit mistakes (seconds
# sent for milliseconds, say). History read from files (`persona models train` / `evaluate`, the
# readers of `persona replay`) may be of any era: years 1..9999, what RFC 3339 can write.
_MIN_TS_MS = 946_684_800_000
_MAX_TS_MS = 4_102_444_800_000
_HISTORY_MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
_HISTORY_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
LIVE_BOUND = (
    "live events must fall within 2000..2100 (epoch milliseconds expected: the bound catches "
    "seconds sent for milliseconds); history files of any era are read by `persona models "
    "train` and `persona models evaluate`"
)
# Bounds on what one event may carry (every field that grows state is bounded here or in the fold).
MAX_EVENT_BYTES = 64 * 1024  # one encoded event
MAX_QUANTITY = 1_000_000
MAX_PRICE = 1e9
MAX_PROPS_DEPTH = 3  # props -> object/list -> object/list -> scalars
MAX_PROPS_ENTRIES = 64  # keys of one object, items of one list
MAX_PROP_KEY = 64  # characters of a props key
MAX_PROP_TEXT = 2000  # characters of a props string
MAX_PROP_INT = 2**53  # beyond that JSON peers lose precision; msgpack cannot hold 2**64


def found(value: Any) -> str:
    """What a producer sent, in JSON's terms (a JavaScript producer knows no `NoneType`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = cut(value, 40)
        return f"the string {shown!r}"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, bytes):
        return "binary data"
    return f"a {type(value).__name__}"


def _holds_object(value: str) -> bool:
    """Whether a string is a JSON object encoded as text (an object encoded twice)."""
    if not value.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(value), dict)
    except (ValueError, RecursionError):
        return False


def _not_object(what: str, value: Any) -> str:
    """The reason for `what` (an event, props) that is not an object."""
    if isinstance(value, str) and _holds_object(value):
        return (
            f"{what} must be an object, got a string holding a JSON object (encoded twice?): "
            "send the object itself"
        )
    if what == "an event" and isinstance(value, list | tuple):
        return (
            "an event must be an object, got an array: send one event object per item of the "
            "body's array (or per NDJSON line, per Kafka message)"
        )
    return f"{what} must be an object, got {found(value)}"


class InvalidEvent(ValueError):
    """An event that breaks the contract; `reason` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.file: str | None = None  # the events file whose reading raised it (read_events)


@dataclass(slots=True)
class Event:
    """One validated event. A value: nothing mutates it once `validate` built it. Not a frozen
    dataclass: a frozen one's __init__ sets each field through `object.__setattr__`, which made
    building the Event a fifth of validating it (profiled in the worker)."""

    event_id: str
    type: str
    user_id: str
    ts: int  # event time, epoch milliseconds
    item_id: str | None = None
    quantity: int = 1
    price: float | None = None
    currency: str | None = None
    session_id: str | None = None
    source: str | None = None
    props: dict[str, Any] = field(default_factory=dict)

    def topic(self) -> str:
        """The input topic this event type belongs on (consent goes with clickstream)."""
        return topic_for(self.type)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "type": self.type,
            "user_id": self.user_id,
            "ts": self.ts,
        }
        if self.item_id is not None:
            out["item_id"] = self.item_id
        if self.quantity != 1:
            out["quantity"] = self.quantity
        for name in ("price", "currency", "session_id", "source"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.props:
            out["props"] = self.props
        return out


def topic_for(event_type: str) -> str:
    if event_type in CART_TYPES:
        return "cart"
    if event_type in SOCIAL_TYPES:
        return "social"
    return "clickstream"


BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark
# the first bytes of JSON scalars (a string encoded twice, a number, true/false/null): msgpack
# reads them as positive integers, never as the map an event is
_JSON_SCALAR_STARTS = b'"-0123456789tfn'


def decode(raw: bytes) -> Any:
    """Decode one Kafka value: JSON (starts with `{` or `[` after whitespace and an optional BOM;
    a JSON scalar is read as JSON too, so its reason is the HTTP route's) or msgpack."""
    if not raw:
        raise InvalidEvent("empty message")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"the event is larger than {MAX_EVENT_BYTES} bytes")
    raw = raw.removeprefix(BOM)  # RFC 8259 lets a parser ignore one; some UTF-8 writers add it
    stripped = raw.lstrip()
    if stripped[:1] in (b"{", b"["):
        try:
            return outside_json(raw, unique_keys)
        except BadJson as exc:
            raise InvalidEvent(str(exc)) from None
    if stripped[:1] and stripped[:1] in _JSON_SCALAR_STARTS:
        try:  # JSON that is no object ("an event must be an object, got ...": the route's reason)
            return outside_json(raw, unique_keys)
        except BadJson:
            pass  # a msgpack integer (no msgpack map starts so): msgpack says what it is
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False, object_pairs_hook=unique_keys)
    except Exception as exc:  # msgpack raises several unrelated types
        raise InvalidEvent(
            f"neither JSON nor msgpack: {type(exc).__name__}: {short(exc)}"
        ) from None


def parse(raw: bytes) -> Event:
    """Bytes from a topic -> a valid Event, or InvalidEvent with the reason: never another error,
    whatever the bytes (a record from outside must not stop the fold)."""
    try:
        return validate(decode(raw))
    except InvalidEvent:
        raise
    except Exception as exc:  # a case the checks above did not foresee: still one bad record
        raise InvalidEvent(f"unreadable event: {type(exc).__name__}: {short(exc)}") from None


def parse_ts(value: Any, history: bool = False) -> int:
    """RFC 3339 string or integer epoch milliseconds -> epoch milliseconds. Live events
    (`history` False) fall within 2000..2100; history from files within years 1..9999."""
    if isinstance(value, bool):
        raise InvalidEvent(f"{TS_FORMS}, got {found(value)}")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, float) and value.is_integer():
        ms = int(value)
    elif isinstance(value, float):
        raise InvalidEvent(_fraction(value))
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > 64:
            raise InvalidEvent("ts is longer than an RFC 3339 time")
        if _NUMBER.fullmatch(text):
            raise InvalidEvent(_number_in_string(value, text, history))
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        # a leap second (RFC 3339 allows second 60) reads as POSIX time reads it: the minute's
        # last second repeated
        text = _LEAP_SECOND.sub(r"\g<1>59", text, count=1)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidEvent(f"ts {value!r} is not RFC 3339") from None
        if parsed.tzinfo is None:
            raise InvalidEvent(
                f"ts {value!r} has no time zone offset (RFC 3339 needs a date, a time and an "
                "offset, such as '2023-11-14T22:13:20Z')"
            )
        try:  # exact: the float `timestamp() * 1000` lost a millisecond of one time in ~200
            ms = (parsed - _EPOCH) // _MS
        except (OverflowError, OSError, ValueError):
            raise InvalidEvent(f"ts {value!r} is outside years 1..9999") from None
    else:
        raise InvalidEvent(f"{TS_FORMS}, got {found(value)}")
    return _bounded(value, ms, history)


TS_FORMS = "ts must be an RFC 3339 string or integer epoch milliseconds"
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_LEAP_SECOND = re.compile(r"([T t][0-9]{2}:[0-9]{2}:)60(?=[.,+-]|$)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# (unit, milliseconds per unit) of the epoch times a producer may send for milliseconds: their
# 2000..2100 ranges do not overlap, so a live time outside the bound names at most one
_UNITS = (("seconds", 1e3), ("microseconds", 1e-3), ("nanoseconds", 1e-6))


def _unit(number: float) -> tuple[str, int] | None:
    """For an epoch time in another unit than milliseconds (what its magnitude says of 2000..2100),
    (the unit, the milliseconds to send); never applied to the value: a `ts` in seconds is
    refused, not multiplied."""
    if not -1e30 < number < 1e30:  # nothing near (and an int beyond a float would not convert)
        return None
    for unit, ms_per in _UNITS:
        ms = number * ms_per
        if _MIN_TS_MS <= ms <= _MAX_TS_MS:
            return unit, round(ms) if unit == "seconds" else int(ms)
    return None


def _looks_like(unit: str, ms: int) -> str:
    return f"it looks like {unit} sent for milliseconds: send epoch milliseconds ({ms})"


def _fraction(value: float) -> str:
    """The reason for a `ts` number with a fraction."""
    if math.isfinite(value) and _MIN_TS_MS <= value <= _MAX_TS_MS:
        return f"ts {value!r} must be a whole number of milliseconds: send {int(value)}"
    guess = _unit(value) if math.isfinite(value) else None
    if guess is not None:
        return f"ts {value!r} is not a whole number: {_looks_like(*guess)}"
    return f"{TS_FORMS}, got {found(value)}"


def _number_in_string(value: str, text: str, history: bool) -> str:
    """The reason for a `ts` sent as a number in a string ("1700000000000")."""
    number = float(text)
    guess = None if history or _MIN_TS_MS <= number <= _MAX_TS_MS else _unit(number)
    if guess is not None:
        unit, ms = guess
        return (
            f"ts {value!r} is a number in a string, and it looks like {unit} sent for "
            f"milliseconds: send epoch milliseconds as a JSON number ({ms}), or an RFC 3339 time"
        )
    shown = f" ({int(number)})" if number.is_integer() and abs(number) <= MAX_PROP_INT else ""
    return (
        f"ts {value!r} is a number in a string: send epoch milliseconds as a JSON number{shown}, "
        "or an RFC 3339 time"
    )


def _bounded(value: Any, ms: int, history: bool) -> int:
    if history:
        if not _HISTORY_MIN_MS <= ms <= _HISTORY_MAX_MS:
            raise InvalidEvent(f"ts {_shown(value)} is outside years 1..9999 (epoch milliseconds)")
    elif not _MIN_TS_MS <= ms <= _MAX_TS_MS:
        guess = _unit(ms)
        if guess is not None:
            raise InvalidEvent(f"ts {_shown(value)} is outside 2000..2100: {_looks_like(*guess)}")
        raise InvalidEvent(f"ts {_shown(value)} is outside 2000..2100: {LIVE_BOUND}")
    return ms


def _shown(value: Any) -> str:
    """A `ts` out of bounds for its reason: a number of thousands of digits (JSON allows up to
    4,300) is cut, not echoed whole into every answer and dead letter."""
    return repr_cut(value, 40, 24, counted="repr")


def _string(data: dict[str, Any], name: str, required: bool, max_len: int = MAX_ID) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise InvalidEvent(f"missing required field {name!r}")
        return None
    if not isinstance(value, str):
        hint = f': send "{value}"' if isinstance(value, int) and not isinstance(value, bool) else ""
        raise InvalidEvent(f"{name} must be a string, got {found(value)}{hint}")
    if not 1 <= len(value) <= max_len:
        raise InvalidEvent(f"{name} must be 1..{max_len} characters")
    problem = new_id_problem(value)
    if problem:
        raise InvalidEvent(f"{name} {problem}")
    return value


def validate(data: Any, history: bool = False) -> Event:
    """A decoded event -> Event, or InvalidEvent with the reason. `history` True: an event read
    from a file for training or evaluation, whose time may be of any era (`parse_ts`)."""
    if not isinstance(data, dict):
        raise InvalidEvent(_not_object("an event", data))
    if type(data) is RepeatedKeys:
        raise InvalidEvent(f"the event gives the key {key_shown(data.repeated)} more than once")
    if "event_id" not in data:
        wrapped = _wrapping(data)
        empty = _empty_wrapping(data) if wrapped is None else None
        if wrapped is not None or empty is not None:
            held = (
                f"a list of objects under {wrapped!r}"
                if wrapped is not None
                else f"an empty list under {empty!r} (no events)"
            )
            raise InvalidEvent(
                f"missing required field 'event_id'; this object holds {held}: send the events "
                "themselves (a JSON array or NDJSON over HTTP, one per message on a topic)"
            )
    event_id = _string(data, "event_id", True)
    etype = data.get("type")
    if etype is None:
        raise InvalidEvent("missing required field 'type'")
    if not isinstance(etype, str):
        raise InvalidEvent(f"type must be a string, got {found(etype)}")
    if etype not in EVENT_TYPES:
        raise InvalidEvent(unknown_type(etype))
    user_id = _string(data, "user_id", True)
    if "@" in str(user_id):
        raise InvalidEvent("user_id looks like an e-mail address; send a pseudonymous id")
    if "ts" not in data:
        raise InvalidEvent("missing required field 'ts'")
    ts = parse_ts(data["ts"], history)
    if data.get("item_id") is None and etype in _ITEM_REQUIRED:
        listed = _item_list(data)
        if listed is not None:
            raise InvalidEvent(
                f"missing required field 'item_id'; this {etype} holds a list of items under "
                f"{listed!r}: send one {etype} event per item (each with its own event_id, "
                "item_id, quantity and price)"
            )
    item_id = _string(data, "item_id", etype in _ITEM_REQUIRED)
    quantity = data.get("quantity", 1)
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        raise InvalidEvent(_bad_quantity(quantity))
    if quantity > MAX_QUANTITY:
        raise InvalidEvent(f"quantity must be at most {MAX_QUANTITY}")
    price = data.get("price")
    if price is not None:
        if isinstance(price, bool) or not isinstance(price, int | float):
            raise InvalidEvent(_bad_price(price))
        if isinstance(price, int) and not -MAX_PROP_INT <= price <= MAX_PROP_INT:
            raise InvalidEvent(f"price must be at most {MAX_PRICE:.0f}")
        if not math.isfinite(price) or price < 0:
            raise InvalidEvent(f"price must be a finite number >= 0, got {price!r}")
        if price > MAX_PRICE:
            raise InvalidEvent(f"price must be at most {MAX_PRICE:.0f}")
        price = float(price)
    currency = data.get("currency")
    if currency is not None and (
        not isinstance(currency, str) or not _CURRENCY.fullmatch(currency)
    ):
        raise InvalidEvent(_bad_currency(currency))
    session_id = _string(data, "session_id", False)
    source = _string(data, "source", False, max_len=64)
    props = data.get("props", {})
    if props is None:
        props = {}
    if not isinstance(props, dict):
        raise InvalidEvent(_not_object("props", props))
    _check_value(props, "props", 1)
    if etype == "consent":
        _check_consent(props)
    elif etype == IDENTIFY:
        _check_identify(props, str(user_id))
    return Event(
        event_id=str(event_id),
        type=etype,
        user_id=str(user_id),
        ts=ts,
        item_id=item_id,
        quantity=quantity,
        price=price,
        currency=currency,
        session_id=session_id,
        source=source,
        props=props,
    )


# Other vocabularies' names for the contract's types, by their `_type_key` (GA4's recommended
# events, Segment's e-commerce spec, the Meta pixel's standard events): named in the reason, never
# applied (a type is the contract's or the event is refused).
_OTHER_NAMES = {
    "view_item": "product_view",
    "view_content": "product_view",
    "product_viewed": "product_view",
    "view_item_list": "category_view",
    "product_list_viewed": "category_view",
    "view_search_results": "search",
    "products_searched": "search",
    "page": "page_view",
    "pageview": "page_view",
    "page_viewed": "page_view",
    "addtocart": "add_to_cart",
    "product_added": "add_to_cart",
    "product_removed": "remove_from_cart",
    "begin_checkout": "checkout",
    "initiate_checkout": "checkout",
    "checkout_started": "checkout",
    "order_completed": "purchase",
    "product_shared": "share",
}
# ... and theirs for a return or a cancellation, which Persona records as a `purchase` with a flag
# (docs/streams.md, "Best-sellers")
_RETURNS = {
    "refund": "returned",
    "order_refunded": "returned",
    "order_cancelled": "cancelled",
    "order_canceled": "cancelled",
}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[\s\-.]+")


def _type_key(text: str) -> str:
    """`text` in the contract's spelling: lower case, words joined by `_` ("addToCart",
    "Add To Cart", "add-to-cart" -> "add_to_cart")."""
    return _SEPARATORS.sub("_", _CAMEL.sub("_", text.strip())).strip("_").lower()


def unknown_type(etype: str) -> str:
    """The reason for a type the contract does not name: the contract's name when `etype` is one
    spelled otherwise or another vocabulary's (GA4, Segment), else the list of types."""
    shown = f"unknown event type {etype[:64]!r}"
    key = _type_key(etype[:64])
    if key in EVENT_TYPES:
        return f"{shown}: send {key!r} (types are lower case, words joined by '_')"
    if key in _OTHER_NAMES:
        return f"{shown}: send {_OTHER_NAMES[key]!r}, Persona's name for it"
    if key in _RETURNS:
        flag = _RETURNS[key]
        return f"{shown}: send 'purchase' with props.{flag}: true, how Persona records it"
    return f"{shown}: the types are {', '.join(sorted(EVENT_TYPES))}"


def _bad_quantity(quantity: Any) -> str:
    reason = "quantity must be an integer >= 1, got "
    if isinstance(quantity, str) and _COUNT.fullmatch(quantity.strip()):
        return reason + f"{found(quantity)}: send {int(quantity)} (a JSON number)"
    if isinstance(quantity, float) and quantity.is_integer() and quantity >= 1:
        return reason + f"{quantity!r}: send {int(quantity)}"
    if isinstance(quantity, int | float) and not isinstance(quantity, bool) and quantity < 1:
        return reason + (
            f"{quantity!r}: an event is about 1 or more units (taking units out of the cart is "
            "remove_from_cart with a positive quantity)"
        )
    return reason + found(quantity)


_COUNT = re.compile(r"0*[1-9][0-9]{0,8}")  # a quantity in a string ("2")


def _bad_price(price: Any) -> str:
    reason = f"price must be a JSON number >= 0, got {found(price)}"
    if not isinstance(price, str):
        return reason
    text = price.strip()
    comma = "," in text and "." not in text
    try:
        number = float(text.replace(",", ".") if comma else text)
    except ValueError:
        return reason
    if not math.isfinite(number) or number < 0:
        return reason
    return (
        reason + f": send {number!r}" + (" (a JSON number, with a decimal point)" if comma else "")
    )


def _bad_currency(currency: Any) -> str:
    if not isinstance(currency, str):
        return f"currency must be an ISO 4217 code such as 'EUR', got {found(currency)}"
    shown = cut(currency, 40)
    if _CURRENCY.fullmatch(currency.strip().upper()):
        code = currency.strip().upper()
        return f"currency {shown!r} must be an ISO 4217 code in capital letters: send {code!r}"
    if not re.search(r"[A-Za-z]", currency):
        return f"currency {shown!r} looks like a symbol: send its ISO 4217 code, such as 'EUR'"
    return f"currency {shown!r} must be an ISO 4217 code such as 'EUR'"


def _item_list(data: dict[Any, Any]) -> str | None:
    """The key of the first list of objects in `data`: an order's lines sent as one event
    (`{"type": "purchase", "items": [...]}`), or events wrapped in an object (`_wrapping`)."""
    for key, value in data.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return str(key)[:64]
    return None


def _wrapping(data: dict[Any, Any]) -> str | None:
    """The key of an object without the event fields that holds a list of objects: events
    wrapped as `{"events": [...]}` or `{"batch": [...]}`."""
    if "type" in data or "user_id" in data:
        return None
    return _item_list(data)


def _empty_wrapping(data: dict[Any, Any]) -> str | None:
    """The key of an object that is nothing but an empty list (at most one other field): a
    batch wrapper sent with no events in it, `{"events": []}`."""
    if len(data) > 2 or "type" in data or "user_id" in data:
        return None
    for key, value in data.items():
        if isinstance(value, list) and not value:
            return str(key)[:64]
    return None


def _check_value(value: Any, where: str, depth: int) -> None:
    """Props hold JSON values only (msgpack may carry bytes, extension types, non-string keys,
    integers JSON cannot hold), nested at most MAX_PROPS_DEPTH deep, each container and string
    bounded."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -MAX_PROP_INT <= value <= MAX_PROP_INT:
            raise InvalidEvent(f"{where} is an integer beyond +-2**53")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEvent(f"{where} is not a finite number")
    elif isinstance(value, str):
        if len(value) > MAX_PROP_TEXT:
            raise InvalidEvent(f"{where} is longer than {MAX_PROP_TEXT} characters")
        problem = text_problem(value)
        if problem:
            raise InvalidEvent(f"{where} {problem}")
    elif isinstance(value, dict | list | tuple):
        _check_container(value, where, depth)
    else:
        raise InvalidEvent(f"{where} must be a JSON value, not {type(value).__name__}")


def _check_container(
    value: dict[Any, Any] | list[Any] | tuple[Any, ...], where: str, depth: int
) -> None:
    if depth > MAX_PROPS_DEPTH:
        raise InvalidEvent(f"{where} is nested deeper than {MAX_PROPS_DEPTH} levels")
    if len(value) > MAX_PROPS_ENTRIES:
        raise InvalidEvent(f"{where} has more than {MAX_PROPS_ENTRIES} entries")
    if type(value) is RepeatedKeys:
        raise InvalidEvent(f"{where} gives the key {key_shown(value.repeated)} more than once")
    if not isinstance(value, dict):
        for index, item in enumerate(value):
            _check_value(item, f"{where}[{index}]", depth + 1)
        return
    for key, item in value.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_PROP_KEY or id_problem(key):
            raise InvalidEvent(f"{where} keys must be 1..{MAX_PROP_KEY} characters of text")
        _check_value(item, f"{where}.{key}", depth + 1)


def _check_consent(props: dict[str, Any]) -> None:
    purposes = {k: v for k, v in props.items() if k in CONSENT_PURPOSES}
    if not purposes:
        raise InvalidEvent(
            "a consent event needs props with at least one of personalization, email, ads"
        )
    for name, value in purposes.items():
        if not isinstance(value, bool):
            raise InvalidEvent(f"consent purpose {name!r} must be true or false")
    text = props.get("text_version")
    if text is not None and (not isinstance(text, str) or not 1 <= len(text) <= TEXT_VERSION):
        raise InvalidEvent(
            f"consent props.text_version must be a string of 1..{TEXT_VERSION} characters"
        )


def _check_identify(props: dict[str, Any], user_id: str) -> None:
    previous = props.get("previous_id")
    if not isinstance(previous, str) or not 1 <= len(previous) <= 128:
        raise InvalidEvent("an identify event needs props.previous_id, the anonymous id (1..128)")
    problem = new_id_problem(previous)
    if problem:
        raise InvalidEvent(f"props.previous_id {problem}")
    if previous == user_id:
        raise InvalidEvent("an identify event's props.previous_id must differ from its user_id")


def encode(event: Event, fmt: str = "msgpack") -> bytes:
    """Serialize an event for an input topic (msgpack by default: smaller and faster)."""
    if fmt == "json":
        return json.dumps(event.to_dict(), separators=(",", ":")).encode()
    return bytes(msgpack.packb(event.to_dict(), use_bin_type=True))
