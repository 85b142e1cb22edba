"""File readers: event files and product feeds -> `Event`s and `Product`s. Stdlib + engine only.

Event files (`read_events`), plain or gzip (told apart by the gzip magic bytes, not the name):

- the contract's JSON lines: one event object per line, validated by `engine.events.validate`;
- UCI Online Retail CSV (`InvoiceNo,StockCode,...`): one `purchase` per invoice line with a customer
  and a positive quantity; a cancellation (a `C...` invoice, negative quantity) becomes a `purchase`
  with `props.cancelled: true` and the quantity cancelled, which takes the purchase back
  (`engine.profile.is_reversal`); guest rows and other non-sales are skipped and counted in
  `ReadStats`;
- REES46 CSV (`event_time,event_type,...`): view/cart/remove_from_cart/purchase;
- OTTO JSON lines (`{"session": .., "events": [{"aid", "ts", "type"}]}`): clicks/carts/orders.

Rows of the three public formats get deterministic event ids: a prefix (`uci-`, `rees-`, `otto-`)
and a short digest of the row's content plus its ordinal among identical rows, so replaying a file
twice produces the same ids and the engine's dedup ignores the second pass.

Errors: both readers take an optional `errors` list. Without it the first bad line raises
(`InvalidEvent` / `InvalidProduct`, the message starting with `line N:`); with it each bad line is
appended as a `SourceError(line, reason)` and skipped. Rows that a public format legitimately does
not map to an event (a guest order, say) are not errors: they are counted in `ReadStats`.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import math
import re
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

from engine.catalog import InvalidProduct, Product
from engine.catalog_formats import (
    InvalidFeed,
    Peekable,
    _wide_encoding,
    open_binary,
    skip_blank_lines,
)
from engine.events import MAX_PRICE, MAX_QUANTITY, Event, InvalidEvent, validate
from engine.text import (
    MAX_ID,
    BadJson,
    RepeatedKeys,
    key_shown,
    new_id_problem,
    outside_json,
    unique_keys,
)

GZIP_MAGIC = b"\x1f\x8b"
UCI_HEADER = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
REES46_HEADER = (
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
)
REES46_TYPES = {
    "view": "product_view",
    "cart": "add_to_cart",
    "remove_from_cart": "remove_from_cart",
    "purchase": "purchase",
}
OTTO_TYPES = {"clicks": "product_view", "carts": "add_to_cart", "orders": "purchase"}
# UCI stock codes that are fees, postage or manual adjustments rather than merchandise. They stay in
# the event stream (they are part of what a customer paid) but are not catalog products.
UCI_NON_PRODUCT_CODES = frozenset(
    {"POST", "DOT", "M", "m", "C2", "D", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS"}
)
SHOP_BASE_URL = "https://shop.example.com"

FORMATS = ("jsonl", "uci", "rees46", "otto")
MAX_SKIP_REASONS = 50  # distinct reasons counted in ReadStats.skipped; the rest under one key
MAX_SKIP_TEXT = 40  # characters of an unknown event type in its reason
MAX_LINE = 1 << 20  # characters of one line of an event file


@dataclass(frozen=True, slots=True)
class SourceError:
    line: int
    reason: str


@dataclass(slots=True)
class ReadStats:
    """What a reader did with the rows of a file (filled in while the iterator is consumed)."""

    format: str = ""
    rows: int = 0  # data rows read (lines of JSON, CSV rows, or OTTO session events)
    events: int = 0  # events produced
    invalid: int = 0  # rows reported as errors
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> rows not mapped to events
    reversals: int = 0  # of `events`, those that take a purchase back (UCI's cancellations)


def _skip_type(stats: ReadStats, kind: object) -> None:
    """Count a row skipped for its unknown event type `kind`: under `event_type:<kind>` (cut to
    MAX_SKIP_TEXT characters) for the first MAX_SKIP_REASONS reasons, under
    `event_type:(others)` after them (a key per distinct type held a file of distinct types in
    memory)."""
    key = f"event_type:{str(kind)[:MAX_SKIP_TEXT]}"
    if key not in stats.skipped and len(stats.skipped) >= MAX_SKIP_REASONS:
        key = "event_type:(others)"
    stats.skipped[key] += 1


# -- opening and format detection -------------------------------------------------------------


def open_text(path: str | Path) -> IO[str]:
    """Open a text file, transparently decompressing gzip (detected by its magic bytes)."""
    p = Path(path)
    with p.open("rb") as raw:
        magic = raw.read(2)
    if magic == GZIP_MAGIC:
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8", newline="")
    return p.open("r", encoding="utf-8", newline="")


class _Lines:
    """The lines of an event file (gzip or plain) as text, for the readers: each line at most
    MAX_LINE characters of UTF-8, read without ever holding more than one line (a file of binary
    garbage, a 10 GiB line or a damaged gzip stream is an InvalidEvent naming the line, not a
    MemoryError or a decoding traceback). Such a file cannot be read on, so these are raised
    whether or not the reader collects its bad lines. A leading BOM is dropped."""

    def __init__(self, path: str | Path) -> None:
        self._source = open_binary(path)  # a gzip bomb inflates to a bounded size
        self.number = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        where = f"line {self.number + 1}"
        try:
            raw = self._source.readline(MAX_LINE * 4 + 1)
        except (InvalidFeed, OSError, EOFError, zlib.error) as exc:
            raise _unreadable(where, exc) from None
        if not raw:
            raise StopIteration
        self.number += 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            after = self._after() if self.number == 1 else b""
            if self.number == 1 and not after and raw in _MARKS:
                return ""  # a byte order mark alone: an empty file, as a UTF-8 one alone is
            wide = _wide_text(raw + after) if self.number == 1 else None
            if wide:  # a Windows editor's "Unicode"
                raise InvalidEvent(
                    f"{where}: the file is {wide} text (its byte order mark says so): save it "
                    "as UTF-8"
                ) from None
            if len(raw) <= MAX_LINE * 4 or exc.start < MAX_LINE * 4 - 4:
                raise InvalidEvent(
                    f"{where}: not UTF-8 text (byte {exc.start} of the line): not an event file?"
                ) from None
            text = ""  # cut inside a character: too long anyway
        if len(raw) > MAX_LINE * 4 or len(text.rstrip("\r\n")) > MAX_LINE:
            raise InvalidEvent(f"{where}: a line longer than {MAX_LINE} characters")
        return text.lstrip("\ufeff") if self.number == 1 else text

    def _after(self) -> bytes:
        """The first bytes after the line just read (a wide character's other bytes, when it
        ends in one's line feed); none where they cannot be read (the next read says why)."""
        try:
            return bytes(cast(Peekable, self._source).peek(_WIDE_LOOK)[:_WIDE_LOOK])
        except (InvalidFeed, OSError, EOFError, zlib.error):
            return b""

    def skip_blank(self) -> None:
        """After a blank line: the blank lines that follow, consumed a buffer at a time and
        counted in `number` (`catalog_formats.skip_blank_lines`). The readers call it where
        they skip a blank line (between CSV rows: never inside a quoted cell)."""
        try:
            self.number += skip_blank_lines(cast(Peekable, self._source))
        except (InvalidFeed, OSError, EOFError, zlib.error) as exc:
            raise _unreadable(f"in the blank lines after line {self.number}", exc) from None

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unreadable(where: str, exc: BaseException) -> InvalidEvent:
    """The gzip bound, a file grown while read, a damaged or cut gzip stream: an InvalidEvent."""
    if isinstance(exc, InvalidFeed):
        return InvalidEvent(f"{where}: {exc.reason}")
    return InvalidEvent(f"{where}: the file cannot be read on ({exc})")


_WIDE_CODECS = (  # byte order mark, codec, bytes of one character
    (b"\xff\xfe\x00\x00", "utf-32-le", 4),
    (b"\x00\x00\xfe\xff", "utf-32-be", 4),
    (b"\xff\xfe", "utf-16-le", 2),
    (b"\xfe\xff", "utf-16-be", 2),
)


_MARKS = {mark for mark, _, _ in _WIDE_CODECS}
_WIDE_LOOK = 8 * 4  # bytes looked at after a wide byte order mark (8 characters of UTF-32)


def _wide_text(raw: bytes) -> str | None:
    """ "UTF-16" or "UTF-32" when `raw` (the first line and the bytes after it) starts with
    that encoding's byte order mark and goes on with ASCII text in it (every event file starts
    with `{`, a header or a blank line): binary that merely starts with the mark's bytes stays
    "not UTF-8 text". A blank first line is told by the line end in that encoding (CR LF, LF:
    the line read ends at the byte 0x0A, the bytes after it complete the character)."""
    wide = _wide_encoding(raw)
    for mark, codec, unit in _WIDE_CODECS:
        if wide and raw.startswith(mark):
            head = raw[len(mark) : len(mark) + 8 * unit]
            first = head[: len(head) // unit * unit].decode(codec, errors="replace")[:1]
            text = first.isascii() and (first.isprintable() or first in "\t\r\n")
            return wide if first and text else None
    return None


def _first_line(path: str | Path) -> str:
    with _Lines(path) as lines:
        for line in lines:
            if line.strip():
                return line.strip()
            lines.skip_blank()
    return ""


def detect_format(path: str | Path) -> str:
    """One of `FORMATS` from the file's first non-blank line; InvalidEvent (a ValueError) when
    none fits or the file is no text."""
    first = _first_line(path)
    if not first:
        return "jsonl"  # an empty file: no events in any format
    if first.startswith("{"):
        try:
            obj = outside_json(first)
        except BadJson:
            return "jsonl"  # reported with its line number when read
        if isinstance(obj, dict) and "session" in obj and "events" in obj and "event_id" not in obj:
            return "otto"
        return "jsonl"
    header = tuple(h.strip() for h in next(csv.reader([first])))
    if header[: len(UCI_HEADER)] == UCI_HEADER:
        return "uci"
    if header[: len(REES46_HEADER)] == REES46_HEADER:
        return "rees46"
    raise InvalidEvent(
        f"{path}: unknown event file format (expected JSON lines, UCI Online Retail, REES46 or "
        f"OTTO); first line starts {first[:60]!r}"
    )


# -- deterministic ids ------------------------------------------------------------------------


class _Ids:
    """`prefix-<digest>` ids from row content; identical rows get their ordinal mixed in.

    Ordinals are counted over the `window` rows' contents seen most recently, not over the whole
    file: a count for every row of a file made memory grow with the file (~85 bytes a row: 3.5 GB
    for REES46's 42 million rows of one month; a 10 GB file of distinct rows, more than the
    machine has). Identical rows of the public formats are neighbours (the same invoice, session
    or second: the files are in time order), so their ids are the same as with a count over the
    whole file; two identical rows further apart than the window get the same id (the second is
    taken for a replay of the first). Deterministic: a file replayed twice gets the same ids."""

    WINDOW = 100_000

    def __init__(self, prefix: str, window: int = WINDOW) -> None:
        self.prefix = prefix
        self.window = window
        self._seen: OrderedDict[bytes, int] = OrderedDict()  # digest -> rows so far, LRU order

    def __call__(self, content: str) -> str:
        digest = hashlib.blake2b(content.encode(), digest_size=10).digest()
        ordinal = self._seen.pop(digest, 0)
        self._seen[digest] = ordinal + 1
        if len(self._seen) > self.window:
            self._seen.popitem(last=False)
        if ordinal:
            digest = hashlib.blake2b(digest + ordinal.to_bytes(4, "big"), digest_size=10).digest()
        return f"{self.prefix}-{digest.hex()}"


# -- readers ---------------------------------------------------------------------------------


def _fail(
    errors: list[SourceError] | None,
    stats: ReadStats,
    line: int,
    reason: str,
    exc: type[ValueError],
) -> None:
    stats.invalid += 1
    if errors is None:
        raise exc(f"line {line}: {reason}")
    errors.append(SourceError(line, reason))


def read_events(
    path: str | Path,
    errors: list[SourceError] | None = None,
    stats: ReadStats | None = None,
    history: bool = False,
) -> Iterator[Event]:
    """Events of an event file in file order (format auto-detected, see the module docstring).

    With `errors=None` a bad line raises `InvalidEvent("line N: ...")`; with a list, bad lines are
    appended to it and skipped. Pass a `ReadStats` to get counts (rows, skipped guests, ...).
    `history` True (training, evaluation) reads times of any era; False (replay into the engine)
    keeps the live bound of `engine.events.parse_ts`."""
    stats = stats if stats is not None else ReadStats()
    readers: dict[str, Callable[[_Lines, list[SourceError] | None, ReadStats], Iterator[Event]]]
    readers = {
        "jsonl": _read_history if history else _read_jsonl,
        "uci": _read_uci,
        "rees46": _read_rees46,
        "otto": _read_otto,
    }
    try:
        fmt = detect_format(path)
        stats.format = fmt
        with _Lines(path) as lines:
            yield from readers[fmt](lines, errors, stats)
    except InvalidEvent as exc:  # from reading the file: a caller may name it (models_cli)
        exc.file = str(path)
        raise


def _read_history(
    fh: _Lines, errors: list[SourceError] | None, stats: ReadStats
) -> Iterator[Event]:
    return _read_jsonl(fh, errors, stats, history=True)


def _read_jsonl(
    fh: _Lines, errors: list[SourceError] | None, stats: ReadStats, history: bool = False
) -> Iterator[Event]:
    for line in fh:
        if not line.strip():
            fh.skip_blank()
            continue
        number = fh.number
        stats.rows += 1
        try:
            # a key given twice is refused (validate), as POST /v1/events refuses it: json.loads
            # kept the last value, other parsers the first
            event = validate(outside_json(line, unique_keys), history)
        except BadJson as exc:
            _fail(errors, stats, number, str(exc), InvalidEvent)
            continue
        except InvalidEvent as exc:
            _fail(errors, stats, number, exc.reason, InvalidEvent)
            continue
        stats.events += 1
        yield event


def _csv_rows(fh: _Lines, width: int) -> Iterator[tuple[int, list[str]]]:
    """(line number, row) after the header, skipping blank rows (before the header too); short
    rows are padded. A row csv cannot read (a quoted cell that never ends grows past csv's
    field limit) stops the file: what follows it cannot be told apart."""
    reader = csv.reader(fh)
    header = True
    while True:
        start = fh.number + 1  # where the next row begins
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InvalidEvent(f"line {start}: unreadable CSV: {exc}") from None
        if not row or (len(row) == 1 and not row[0].strip()):
            fh.skip_blank()  # between rows: csv has read the blank line and nothing after it
            continue
        if header:  # the first row that is not blank (one blank line before it was taken)
            header = False
            continue
        if len(row) < width:
            row = row + [""] * (width - len(row))
        yield fh.number, row


def _naive_utc_ms(text: str, cache: dict[str, int]) -> int:
    """`YYYY-MM-DD HH:MM[:SS]` (optionally ending in ` UTC`) read as UTC -> epoch ms."""
    ms = cache.get(text)
    if ms is None:
        clean = text.strip().removesuffix("UTC").strip()
        parsed = datetime.fromisoformat(clean)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        ms = int(parsed.timestamp() * 1000)
        if len(cache) > 100_000:
            cache.clear()
        cache[text] = ms
    return ms


def _ids_problem(**ids: str | None) -> str | None:
    """Why one of a row's ids (user, item, session) cannot be an event's, or None: 1..MAX_ID
    characters without control characters or lone surrogates, what `engine.events.validate`
    takes from the contract's JSON lines. (An item id of 300 characters, or one holding a NUL,
    trained into an artifact that every loader refuses: `models.artifacts.check_item_ids`.)"""
    for name, value in ids.items():
        if value is None:
            continue
        if len(value) > MAX_ID:
            return f"{name} is longer than {MAX_ID} characters"
        problem = new_id_problem(value)
        if problem:
            return f"{name} {problem}"
    return None


def _numbers_problem(
    price: float | None, quantity: int, price_name: str, qty_name: str
) -> str | None:
    """Why a row's price (None: it has none) or quantity is out of the contract's bounds
    (`engine.events.validate`), or None. An infinite price, or one of 1e308, summed into
    infinite or NaN training features; a quantity of 4,000 digits overflowed converting it to a
    float."""
    if price is not None and not (math.isfinite(price) and price <= MAX_PRICE):
        return f"{price_name} must be a finite number of at most {MAX_PRICE:.0f}"
    if quantity > MAX_QUANTITY:
        return f"{qty_name} must be at most {MAX_QUANTITY}"
    return None


def _otto_id(value: Any, name: str) -> str:
    """An OTTO session or aid (an integer, or text) as an id; TypeError for any other JSON value
    (True was read as the id "True", 5.5 as "5.5")."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"{name} must be an integer or a string, got {type(value).__name__}")
    return str(value)


def uci_customer_id(raw: str) -> str:
    """`17850.0` (how pandas exports it) or `17850` -> `17850`; `""` for guest rows."""
    raw = raw.strip()
    if not raw:
        return ""
    return str(int(float(raw)))


def _read_uci(fh: _Lines, errors: list[SourceError] | None, stats: ReadStats) -> Iterator[Event]:
    ids = _Ids("uci")
    times: dict[str, int] = {}
    for number, row in _csv_rows(fh, len(UCI_HEADER)):
        stats.rows += 1
        invoice, code, _desc, qty_raw, date, price_raw, customer_raw, _country = row[:8]
        invoice = invoice.strip()
        cancelled = invoice.startswith("C")
        try:
            customer = uci_customer_id(customer_raw)
            quantity = -int(qty_raw) if cancelled else int(qty_raw)
            price = float(price_raw)
            ts = _naive_utc_ms(date, times)
        except (ValueError, OverflowError) as exc:  # OverflowError: a customer id of "inf"
            _fail(errors, stats, number, f"bad UCI row: {exc}", InvalidEvent)
            continue
        if not customer:
            stats.skipped["guest"] += 1
            continue
        if quantity <= 0:
            stats.skipped["non_positive_quantity"] += 1
            continue
        if price < 0:
            stats.skipped["negative_price"] += 1
            continue
        code = code.strip()
        if not code or not invoice:
            _fail(errors, stats, number, "missing InvoiceNo or StockCode", InvalidEvent)
            continue
        problem = _ids_problem(CustomerID=customer, StockCode=code, InvoiceNo=invoice)
        problem = problem or _numbers_problem(price, quantity, "UnitPrice", "Quantity")
        if problem:
            _fail(errors, stats, number, f"bad UCI row: {problem}", InvalidEvent)
            continue
        stats.events += 1
        stats.reversals += cancelled
        yield Event(
            event_id=ids("\x1f".join(row)),
            type="purchase",
            user_id=customer,
            ts=ts,
            item_id=code,
            quantity=quantity,
            price=price,
            currency="GBP",
            session_id=invoice,
            props={"order_id": invoice, "cancelled": True} if cancelled else {"order_id": invoice},
        )


def _read_rees46(fh: _Lines, errors: list[SourceError] | None, stats: ReadStats) -> Iterator[Event]:
    ids = _Ids("rees")
    times: dict[str, int] = {}
    for number, row in _csv_rows(fh, len(REES46_HEADER)):
        stats.rows += 1
        when, kind, product, category_id, category_code, brand, price_raw, user, session = row[:9]
        etype = REES46_TYPES.get(kind.strip())
        if etype is None:
            _skip_type(stats, kind.strip())
            continue
        try:
            ts = _naive_utc_ms(when, times)
            price = float(price_raw) if price_raw.strip() else None
        except ValueError as exc:
            _fail(errors, stats, number, f"bad REES46 row: {exc}", InvalidEvent)
            continue
        if not product.strip() or not user.strip():
            _fail(errors, stats, number, "missing product_id or user_id", InvalidEvent)
            continue
        problem = _ids_problem(
            user_id=user.strip(), product_id=product.strip(), user_session=session.strip()[:128]
        )
        if price is not None and not price >= 0:  # negative or NaN: an event without a price
            price = None
        problem = problem or _numbers_problem(price, 1, "price", "")
        if problem:
            _fail(errors, stats, number, f"bad REES46 row: {problem}", InvalidEvent)
            continue
        props: dict[str, Any] = {}
        category = category_code.strip() or category_id.strip()
        if category:
            props["category"] = category
        if brand.strip():
            props["brand"] = brand.strip()
        stats.events += 1
        yield Event(
            event_id=ids("\x1f".join(row)),
            type=etype,
            user_id=user.strip(),
            ts=ts,
            item_id=product.strip(),
            price=price,
            currency=None if price is None else "USD",
            session_id=session.strip()[:128] or None,
            props=props,
        )


def _once(obj: Any, what: str) -> None:
    """TypeError when `obj` (an OTTO line's object) gave a key twice (`unique_keys`)."""
    if type(obj) is RepeatedKeys:
        raise TypeError(f"{what} gives the key {key_shown(obj.repeated)} more than once")


def _read_otto(fh: _Lines, errors: list[SourceError] | None, stats: ReadStats) -> Iterator[Event]:
    ids = _Ids("otto")
    for line in fh:
        if not line.strip():
            fh.skip_blank()
            continue
        number = fh.number
        try:
            obj = outside_json(line, unique_keys)
            _once(obj, "the session")
            session = _otto_id(obj["session"], "session")
            events = obj["events"]
            if not isinstance(events, list):
                raise TypeError("events must be a list")
            problem = _ids_problem(session=f"otto-{session}")
            if problem:
                raise TypeError(problem)
        except (BadJson, KeyError, TypeError) as exc:
            stats.rows += 1
            _fail(errors, stats, number, f"bad OTTO session: {exc}", InvalidEvent)
            continue
        user = f"otto-{session}"
        for raw in events:
            stats.rows += 1
            try:
                _once(raw, "an event")
                etype = OTTO_TYPES.get(raw["type"])
                aid, ts = _otto_id(raw["aid"], "aid"), raw["ts"]
                if isinstance(ts, bool) or not isinstance(ts, int):
                    raise TypeError(f"ts must be integer milliseconds, got {ts!r}")
                problem = _ids_problem(aid=aid)
                if problem:
                    raise TypeError(problem)
            except (KeyError, TypeError) as exc:
                _fail(errors, stats, number, f"bad OTTO event: {exc}", InvalidEvent)
                continue
            if etype is None:
                _skip_type(stats, raw["type"])
                continue
            stats.events += 1
            yield Event(
                event_id=ids(f"{session}\x1f{aid}\x1f{ts}\x1f{raw['type']}"),
                type=etype,
                user_id=user,
                ts=ts,
                item_id=aid,
                session_id=user,
            )


# -- product feeds ----------------------------------------------------------------------------


def read_catalog(
    path: str | Path,
    errors: list[SourceError] | None = None,
    fmt: str = "auto",
    mapping: dict[str, str] | None = None,
) -> Iterator[Product]:
    """Products of a feed file, plain or gzip: JSON lines, CSV or TSV with the contract's fields
    (`item_id,title,url,image_url,price,currency,availability,category,brand[,description]`) or
    Google Merchant Center's names, or Google's XML (`engine.catalog_formats`).

    Errors as for `read_events`: `InvalidProduct("line N: ...")`, or collected into `errors`;
    a feed that cannot be read on raises `catalog_formats.InvalidFeed`."""
    from engine.catalog_formats import open_binary, read_products

    def reject(line: int, reason: str) -> None:
        assert errors is not None
        errors.append(SourceError(line, reason))

    with open_binary(path) as source:
        yield from read_products(source, fmt, mapping, None if errors is None else reject)


# -- the UCI catalog --------------------------------------------------------------------------

_SMALL_WORDS = frozenset({"of", "and", "in", "with", "the", "for", "a", "an", "on", "to", "or"})
# Words that describe a colour, pattern, size or theme rather than the kind of thing: skipped when
# taking the category from the end of a description.
_NOT_A_KIND = frozenset(
    [
        "RED",
        "PINK",
        "BLUE",
        "WHITE",
        "GREEN",
        "BLACK",
        "IVORY",
        "CREAM",
        "GOLD",
        "SILVER",
        "PURPLE",
        "ORANGE",
        "YELLOW",
        "BROWN",
        "GREY",
        "PASTEL",
        "NATURAL",
        "ASSORTED",
        "COLOUR",
        "COLOURS",
        "RETROSPOT",
        "POLKADOT",
        "SPOTTY",
        "SPOT",
        "SPOTS",
        "DESIGN",
        "DESIGNS",
        "VINTAGE",
        "SMALL",
        "LARGE",
        "MEDIUM",
        "MINI",
        "JUMBO",
        "GIANT",
        "SET",
        "PACK",
        "BOX",
        "PAISLEY",
        "FLORAL",
        "SKULL",
        "SKULLS",
        "CHRISTMAS",
        "HEART",
        "HEARTS",
        "STAR",
        "STARS",
        "UNION",
        "JACK",
        "FLAG",
        "DOLLY",
        "GIRL",
        "BOY",
        "CIRCUS",
        "PARADE",
        "RETRO",
        "DOILY",
        "ROSE",
        "ROSES",
        "LOVE",
        "BIRD",
        "BIRDS",
        "WOODLAND",
        "APPLES",
        "PANTRY",
        "REGENCY",
        "BAROQUE",
        "ENGLISH",
        "ROSE",
        "CHARM",
        "RUSTIC",
        "DOTCOM",
        "TEA",
        "PARTY",
        "ANTIQUE",
        "METAL",
        "WOODEN",
        "GLASS",
        "ZINC",
        "STRIPE",
        "STRIPES",
        "STRIPEY",
        "GINGHAM",
    ]
)


def nice_title(description: str) -> str:
    """`WHITE HANGING HEART T-LIGHT HOLDER` -> `White Hanging Heart T-Light Holder`.

    Capitalizes each letter that starts a word or follows `-`, `/`, `(` or `&`; letters after digits
    stay lower case (`50CM` -> `50cm`); small words (of, and, ...) are lower case but the first."""
    words = description.split()
    out: list[str] = []
    for index, word in enumerate(words):
        lower = word.lower()
        if index and lower in _SMALL_WORDS:
            out.append(lower)
            continue
        chars: list[str] = []
        previous = ""
        for ch in lower:
            if ch.isalpha() and (not previous or previous in '-/(&"'):
                ch = ch.upper()
            chars.append(ch)
            previous = ch
        out.append("".join(chars))
    return " ".join(out)


def uci_category(description: str) -> str:
    """The kind of thing a UCI description names: its last word that is alphabetic, three letters
    or longer and not a colour/pattern/size word (`JUMBO BAG RED RETROSPOT` -> `Bag`), singular
    (`CAKE CASES` -> `Case`); `Other` when no word qualifies. A heuristic, good enough to group
    products for affinities and feeds."""
    words = re.findall(r"[A-Za-z]+", description.upper())
    for word in reversed(words):
        if len(word) < 3 or word in _NOT_A_KIND:
            continue
        return _singular(word).capitalize()
    return "Other"


def _singular(word: str) -> str:
    if word.endswith(("SSES", "XES", "CHES", "SHES")):
        return word[:-2]
    if word.endswith("IES") and len(word) > 4:
        return word[:-3] + "Y"
    if word.endswith("S") and not word.endswith(("SS", "US", "IS")) and len(word) > 3:
        return word[:-1]
    return word


def uci_catalog(path: str | Path) -> list[Product]:
    """Every merchandise product of a UCI Online Retail file, ordered by item id.

    - item_id: StockCode (fees, postage and adjustments in `UCI_NON_PRODUCT_CODES` are left out);
    - title: the description the product is most often sold under (ties: the latest), via
      `nice_title`; category: `uci_category(description)`; brand: empty (UCI has none);
    - price: the latest UnitPrice > 0 (GBP); products never sold at a positive price are left out;
    - availability in_stock; url/image_url on shop.example.com.
    Rows are read regardless of customer or cancellation: every row says what a product is called
    and costs."""
    names: dict[str, Counter[str]] = {}
    last_name: dict[str, str] = {}
    prices: dict[str, tuple[int, float]] = {}
    times: dict[str, int] = {}
    with _Lines(path) as fh:
        if detect_format(path) != "uci":
            raise ValueError(f"{path} is not a UCI Online Retail CSV")
        for number, row in _csv_rows(fh, len(UCI_HEADER)):
            code, desc, date, price_raw = row[1].strip(), row[2].strip(), row[4], row[5]
            if not code or code in UCI_NON_PRODUCT_CODES:
                continue
            try:
                price = float(price_raw)
                ts = _naive_utc_ms(date, times)
            except ValueError as exc:
                raise InvalidProduct(f"line {number}: bad UCI row: {exc}") from None
            if price <= 0 or not desc:
                continue
            names.setdefault(code, Counter())[desc] += 1
            last_name[code] = desc
            if code not in prices or ts >= prices[code][0]:
                prices[code] = (ts, price)
    products: list[Product] = []
    for code in sorted(prices):
        counts = names[code]
        top = max(counts.values())
        desc = last_name[code] if counts[last_name[code]] == top else counts.most_common(1)[0][0]
        products.append(
            Product(
                item_id=code,
                title=nice_title(desc),
                url=f"{SHOP_BASE_URL}/products/{code}",
                image_url=f"{SHOP_BASE_URL}/images/{code}.jpg",
                price=round(prices[code][1], 4),
                currency="GBP",
                availability="in_stock",
                category=uci_category(desc),
            )
        )
    return products
