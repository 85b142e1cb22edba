"""Product feeds in the formats shops have (issue 19 item 3), streamed into `Product`s. Pure.

Formats (`FORMATS`, `auto` tells them apart from the first bytes): JSON lines, CSV, TSV and Google
Merchant Center XML (RSS 2.0 `<item>` or Atom `<entry>`, with the `g:` namespace). Column names
may be Persona's (`item_id, url, image_url, price, currency, ...`) or Google's (`id, link,
image_link, price` as "2.55 GBP", `sale_price`, `additional_image_link`, `product_type`, ...);
other names are mapped with a map file (`load_map`: a JSON object `{"their name": "our name"}`).
Columns with no meaning here become the product's free `attributes` (the first
`catalog.MAX_ATTRIBUTES`).

Bounded memory whatever the feed's size: rows are read one at a time (a csv reader over lines of
at most `MAX_LINE` characters, and rows of at most `MAX_LINE` characters whatever their quoted
newlines; an expat parser fed 64 KB at a time that keeps only the current item, refuses markup
longer than `MAX_MARKUP` bytes and elements nested deeper than `MAX_NESTING`); a gzip feed
inflates to at most `MAX_GZIP_RATIO` times its size (`GZIP_FLOOR` at least). XML is hostile
input: a document type declaration (where entity bombs and external entities live) is refused
outright, so no entity is ever declared, expanded or fetched; a field longer than `MAX_FIELD`
characters or an item with more than `MAX_FIELDS` fields rejects the item.

A bad row is rejected with its line and reason (`reject(line, reason)`) and reading goes on; a
feed that cannot be read on (not well-formed XML, a DTD, an over-long line) raises `InvalidFeed`,
so does a CSV/TSV header that gives one product field twice or none the item id (`check_columns`;
a repeated column of no product field, or one named close to a field no column gives (`titel`),
is only a warning), and so do the files no format reads: an
empty one, a binary one (a spreadsheet) and a JSON array (`_refuse_what_no_format_reads`).
"""

from __future__ import annotations

import csv
import errno
import gzip
import io
import operator
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol, cast
from xml.parsers import expat

from engine.catalog import MAX_ATTRIBUTES, InvalidProduct, Product, validate_product
from engine.files import read_regular
from engine.suggest import closest, meaning
from engine.text import BadJson, RepeatedKeys, key_shown, outside_json, unique_keys

FORMATS = ("auto", "jsonl", "csv", "tsv", "google-xml")
MAX_LINE = 1 << 20  # characters of one line of a text feed
MAX_FIELD = 10_000  # characters of one field
MAX_FIELDS = 200  # fields of one item
MAX_MARKUP = 1 << 20  # bytes of one XML token (a start tag with its attributes, a comment, ...)
MAX_NESTING = 100  # depth of XML elements
MAX_GZIP_RATIO = 100  # a gzip feed inflates to at most this times its size ...
GZIP_FLOOR = 64 << 20  # ... or this many bytes, whichever is more
CHUNK = 64 * 1024
MAX_MAP_FILE = 1 << 20  # bytes of a map file (a JSON object of column names)
G_NS = "http://base.google.com/ns/1.0"
ATOM_NS = "http://www.w3.org/2005/Atom"

Reject = Callable[[int, str], None]
Row = tuple[int, dict[str, Any], str | None]  # line, fields, why the row is already refused

# Google Merchant Center's names for the contract's fields
GOOGLE_NAMES = {
    "id": "item_id",
    "link": "url",
    "image_link": "image_url",
    "additional_image_link": "additional_image_links",
    "summary": "description",  # Atom
}
OWN_FIELDS = frozenset(
    {
        "item_id",
        "title",
        "url",
        "image_url",
        "price",
        "currency",
        "availability",
        "category",
        "brand",
        "description",
        "sale_price",
        "sale_price_effective_date",
        "sale_starts",
        "sale_ends",
        "item_group_id",
        "gtin",
        "mpn",
        "condition",
        "availability_date",
        "additional_image_links",
        "attributes",
        "product_type",
        "prices",
    }
)
KNOWN_NAMES = OWN_FIELDS | set(GOOGLE_NAMES)
# fields a text feed may give in several columns of one name, a value each (Google's sheets do)
REPEATED_FIELDS = frozenset({"additional_image_links"})
AVAILABILITY_WORDS = {
    "in_stock": "in_stock",
    "in stock": "in_stock",
    "out_of_stock": "out_of_stock",
    "out of stock": "out_of_stock",
    "discontinued": "out_of_stock",
    "preorder": "preorder",
    "pre-order": "preorder",
    "backorder": "preorder",
    "available for order": "preorder",
    # schema.org's ItemAvailability names (what shop platforms put in their own feeds), read
    # lower-cased and without the `https://schema.org/` before them
    "instock": "in_stock",
    "limitedavailability": "in_stock",
    "onlineonly": "in_stock",
    "outofstock": "out_of_stock",
    "soldout": "out_of_stock",
    "presale": "preorder",
}
REPEATS_WARNED = 20  # repeated item ids named one by one, then counted
TRACKED_IDS = 1_000_000  # item ids remembered (by hash) to find repeats: ~100 MB at most
_SCHEMA_ORG = ("https://schema.org/", "http://schema.org/")


class InvalidFeed(ValueError):
    """The feed as a whole cannot be read (on): nothing after `line` was imported."""

    def __init__(self, line: int, reason: str) -> None:
        where = f"line {line}: " if line else ""  # 0: not about a line (the gzip layer)
        super().__init__(f"{where}{reason}")
        self.line = line
        self.reason = f"{where}{reason}"
        self.imported = 0  # products produced before it (persona.catalog_sync.import_feed)


# -- opening and detection ------------------------------------------------------------------------


NOT_REGULAR = "is not a regular file (a directory, FIFO or device?)"
BUFFER = 1 << 16  # bytes read from the file at a time (fewer calls into _AsOpened)


def open_binary(path: str | Path) -> IO[bytes]:
    """The file's bytes, gunzipped when it starts with gzip's magic bytes; a gzip file that
    inflates to more than MAX_GZIP_RATIO times its size (at least GZIP_FLOOR bytes) raises
    InvalidFeed once it gets there (a gzip bomb: 200 MB of newlines fit in 200 KB).

    Only a regular file (through symbolic links) is read: a directory, a FIFO or a device raises
    InvalidFeed(NOT_REGULAR) at once. The file is opened without blocking and its type taken
    from the open descriptor, then read through that descriptor only, so a path swapped for a
    FIFO after a caller's check cannot block the reader (a FIFO without a writer blocked the
    open for ever; /dev/zero and /dev/urandom never end).

    The file is read as it was when opened (its size then): one that another process keeps
    appending to was read for ever. Its end raises InvalidFeed(GREW) once a reader asks for
    more, when the file is larger by then, so what was appended is not taken for read; one cut
    short meanwhile raises InvalidFeed(SHRANK) where it comes up short (it ended there, as if
    whole: a full sync marked every product past the cut out of stock), one written meanwhile
    (its modification time moved: rewritten in place to its size) InvalidFeed(CHANGED) at its
    end."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO opens at once
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidFeed(0, NOT_REGULAR)
        os.set_blocking(fd, True)
        raw: IO[bytes] = io.BufferedReader(_AsOpened(fd, info), BUFFER)
    except BaseException:
        os.close(fd)
        raise
    try:
        magic = raw.read(2)
        raw.seek(0)
        if magic == b"\x1f\x8b":
            limit = max(GZIP_FLOOR, MAX_GZIP_RATIO * info.st_size)
            return cast(IO[bytes], _Inflating(gzip.GzipFile(fileobj=raw, mode="rb"), limit, raw))
    except BaseException:
        raw.close()
        raise
    return raw


class Peekable(Protocol):
    """A source `open_binary` gives: what `skip_blank_lines` reads of it."""

    def peek(self, size: int = 0, /) -> bytes: ...

    def read(self, size: int = -1, /) -> bytes: ...


# a run of the characters `str.strip` takes away (those `str.isspace` says are), in UTF-8
_WHITE_RUN = re.compile(
    rb"(?:[\t\n\x0b\x0c\r\x1c-\x1f ]|\xc2[\x85\xa0]|\xe1\x9a\x80|\xe2\x80[\x80-\x8a\xa8\xa9\xaf]"
    rb"|\xe2\x81\x9f|\xe3\x80\x80)*+"
)


def skip_blank_lines(source: Peekable) -> int:
    """Consume the blank lines (white space only: `not line.strip()`) that come next in
    `source`, a buffer at a time; the number of lines consumed. A reader calls it after a blank
    line: a gzip bomb of newlines (300 KB inflating to 64 MiB) was read a Python step per line,
    ~90 s before the gzip bound refused it. A line it cannot see the end of in one buffer (a
    long one) is left to the reader's readline (and its length bound)."""
    lines = 0
    while True:
        chunk = source.peek(BUFFER)  # what is buffered, or one read of the file
        white = _WHITE_RUN.match(chunk)
        end = chunk.rfind(b"\n", 0, white.end() if white else 0) + 1
        if not end:
            return lines
        source.read(end)
        lines += chunk.count(b"\n", 0, end)
        if end < len(chunk):
            return lines


GREW = (
    "the file grew while it was read (another process is writing it?): what it held when "
    "opened was read, what was appended was not; read it again once it is complete"
)
SHRANK = (
    "the file shrank while it was read (another process is rewriting it?): it ends before "
    "what it held when opened; read it again once it is complete"
)
CHANGED = (
    "the file changed while it was read (another process is rewriting it?): what was read "
    "may mix its old and new contents; read it again once it is complete"
)


class _AsOpened(io.RawIOBase):
    """The bytes of a regular file's descriptor up to its size when opened (`opened`, its
    fstat then): at that end, InvalidFeed(GREW) when the file has grown since, CHANGED when it
    was written meanwhile (its modification time moved), else the end of the file; SHRANK
    where it comes up short of that size (cut meanwhile)."""

    def __init__(self, fd: int, opened: os.stat_result) -> None:
        self._fd = fd
        self._size = opened.st_size
        self._mtime = opened.st_mtime_ns
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._size - self._at)
        if want <= 0:
            if len(view):
                now = os.fstat(self._fd)
                if now.st_size > self._size:
                    raise InvalidFeed(0, GREW)
                if now.st_mtime_ns != self._mtime:
                    raise InvalidFeed(0, CHANGED)
            return 0
        got = os.preadv(self._fd, [view[:want]], self._at)
        if got == 0:  # short of the size it had when opened: cut meanwhile
            raise InvalidFeed(0, SHRANK)
        self._at += got
        return got

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """As a file's `seek` (io.FileIO): ValueError for an unknown `whence`, OSError (EINVAL)
        for a position before the start (nothing moves); one past the end reads nothing."""
        offset = operator.index(offset)
        bases = {os.SEEK_SET: 0, os.SEEK_CUR: self._at, os.SEEK_END: self._size}
        if whence not in bases:
            raise ValueError(f"invalid whence ({whence!r}, should be 0, 1 or 2)")
        at = bases[whence] + offset
        if at < 0:
            raise OSError(errno.EINVAL, f"negative seek position {at}")
        self._at = at
        return at

    def tell(self) -> int:
        return self._at

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class _Inflating:
    """The reading side of a GzipFile (what the readers use: read, readline, tell, seek) that
    refuses to inflate past `limit` bytes. A damaged or cut stream (EOFError, BadGzipFile,
    zlib.error out of gzip) is an InvalidFeed too: nothing after it can be read."""

    def __init__(self, inner: gzip.GzipFile, limit: int, raw: IO[bytes] | None = None) -> None:
        self._inner = inner
        self._limit = limit
        self._raw = raw  # the file under a GzipFile made over a file object (not closed by it)

    def _checked(self, data: bytes) -> bytes:
        if self._inner.tell() > self._limit:
            raise InvalidFeed(
                0,
                f"the gzip feed inflates to more than {self._limit} bytes ({MAX_GZIP_RATIO} "
                "times its size): a gzip bomb?",
            )
        return data

    def read(self, size: int = -1) -> bytes:
        try:
            return self._checked(self._inner.read(size))
        except (OSError, EOFError, zlib.error) as exc:
            raise _damaged(exc) from None

    def readline(self, size: int = -1) -> bytes:
        try:
            return self._checked(self._inner.readline(size))
        except (OSError, EOFError, zlib.error) as exc:
            raise _damaged(exc) from None

    def peek(self, size: int = 0) -> bytes:
        try:
            return self._inner.peek(size)  # no further than a buffer: read() checks the bound
        except (OSError, EOFError, zlib.error) as exc:
            raise _damaged(exc) from None

    def tell(self) -> int:
        return self._inner.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._inner.seek(offset, whence)

    def close(self) -> None:
        self._inner.close()
        if self._raw is not None:
            self._raw.close()

    def __enter__(self) -> _Inflating:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _damaged(exc: BaseException) -> InvalidFeed:
    return InvalidFeed(0, f"the gzip data is damaged or cut short ({exc})")


def detect(head: bytes) -> str:
    """The format of a feed from its first bytes: `google-xml`, `jsonl`, `tsv` or `csv`."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<"):
        return "google-xml"
    if text.startswith(b"{"):
        return "jsonl"
    first = text.split(b"\n", 1)[0]
    return "tsv" if b"\t" in first else "csv"


def load_map(path: str | Path) -> dict[str, str]:
    """A map file: a JSON object from the feed's column names to Persona's or Google's names."""
    try:
        raw = read_regular(Path(path), MAX_MAP_FILE)
    except (OSError, ValueError) as exc:
        raise ValueError(f"map file {path}: cannot be read: {exc}") from None
    try:
        data = outside_json(raw)
    except BadJson as exc:
        raise ValueError(f"map file {path}: not a readable JSON object ({exc})") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f'map file {path}: must be a JSON object {{"their name": "our name"}}')
    unknown = sorted(v for v in data.values() if _name(v) not in KNOWN_NAMES)
    if unknown:
        raise ValueError(
            f"map file {path}: unknown target name(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(KNOWN_NAMES))})"
        )
    return {_name(k): _name(v) for k, v in data.items()}


def _name(column: str) -> str:
    name = column.strip().lower()
    return name[2:] if name.startswith("g:") else name


# -- fields -> product ----------------------------------------------------------------------------


def to_product(fields: dict[str, Any], mapping: dict[str, str] | None = None) -> Product:
    """One row of any format (Persona's, Google's or mapped names) -> a valid product."""
    data: dict[str, Any] = {}
    attributes: dict[str, str] = {}
    for column, value in fields.items():
        name = _name(column)
        name = (mapping or {}).get(name, name)
        name = GOOGLE_NAMES.get(name, name)
        if name in OWN_FIELDS:
            data.setdefault(name, value)
        elif value not in (None, "") and len(attributes) < MAX_ATTRIBUTES:
            attributes[name] = value
    if attributes and not data.get("attributes"):
        data["attributes"] = attributes
    _google_values(data)
    return validate_product(data)


def _google_values(data: dict[str, Any]) -> None:
    """Google's forms of values, in place: prices with their currency, availability words,
    `product_type` as the category."""
    if isinstance(data.get("price"), str):
        data["price"], currency = _money(data["price"], "price")
        _same_currency(data, currency)
    if isinstance(data.get("sale_price"), str) and data["sale_price"].strip():
        data["sale_price"], currency = _money(data["sale_price"], "sale_price")
        _same_currency(data, currency)
    availability = data.get("availability")
    if isinstance(availability, str) and availability.strip():
        word = availability.strip().lower()
        if word.startswith(_SCHEMA_ORG):
            word = word.partition("schema.org/")[2]
        data["availability"] = AVAILABILITY_WORDS.get(word, availability.strip())
    product_type = data.pop("product_type", "")
    if product_type and not data.get("category"):
        data["category"] = product_type


def _money(text: str, name: str) -> tuple[str, str | None]:
    """`2.55 GBP` -> ("2.55", "GBP"); `2.55` -> ("2.55", None) (the number checked later)."""
    number, _, currency = text.strip().rpartition(" ")
    if number and len(currency) == 3 and currency.isalpha():
        return number.strip(), currency
    return text, None


def _same_currency(data: dict[str, Any], currency: str | None) -> None:
    if currency is None:
        return
    given = data.get("currency")
    if given and str(given).strip().upper() != currency.upper():
        raise InvalidProduct(f"a price in {currency.upper()} but currency {given}")
    data["currency"] = currency.upper()


# -- reading --------------------------------------------------------------------------------------


def read_products(
    source: IO[bytes],
    fmt: str = "auto",
    mapping: dict[str, str] | None = None,
    reject: Reject | None = None,
    warn: Callable[[str], None] | None = None,
) -> Iterator[Product]:
    """The valid products of a feed read from `source`, in feed order. Each bad row goes to
    `reject(line, reason)` (None: the first one raises `InvalidProduct("line N: ...")`); what
    is read but worth a word (a repeated column Persona does not use, `check_columns`) goes to
    `warn(message)`."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown feed format {fmt!r}; expected one of {', '.join(FORMATS)}")
    head = _peek(source)
    wide = _wide_encoding(head)
    if wide == "UTF-16" and fmt in ("auto", "google-xml") and _utf16_xml(head):
        fmt = "google-xml"  # expat reads UTF-16 (with its byte order mark) itself
    elif wide:
        raise InvalidFeed(
            1, f"the feed is {wide} text (its byte order mark says so): save it as UTF-8"
        )
    else:
        _refuse_what_no_format_reads(head, fmt)
    if fmt == "auto":
        fmt = detect(head)

    def header(names: list[str]) -> None:
        check_columns(names, mapping, warn)

    repeats = _Repeats(warn)
    for line, fields, problem in _rows(source, fmt, header, mapping):
        try:
            if problem:
                raise InvalidProduct(problem)
            product = to_product(fields, mapping)
        except InvalidProduct as exc:
            if reject is None:
                raise InvalidProduct(f"line {line}: {exc.reason}") from None
            reject(line, exc.reason)
            continue
        repeats.note(product.item_id, line)
        yield product
    repeats.close()


class _Repeats:
    """An item id a feed gives twice: both rows are sent, the later one wins (as before), but a
    shop whose export repeats ids (two variants sharing a SKU) is told, with both lines; after
    REPEATS_WARNED of them only a count. The first TRACKED_IDS ids are remembered, as 64-bit
    hashes (a collision would cost a wrong warning, never a product)."""

    def __init__(self, warn: Callable[[str], None] | None) -> None:
        self._warn = warn
        self._first: dict[int, int] = {}  # hash(item_id) -> its first line
        self.repeated = 0

    def note(self, item_id: str, line: int) -> None:
        if self._warn is None:
            return
        first = self._first.get(hash(item_id))
        if first is None:
            if len(self._first) < TRACKED_IDS:
                self._first[hash(item_id)] = line
            return
        self.repeated += 1
        if self.repeated <= REPEATS_WARNED:
            self._warn(
                f"line {line}: item_id {item_id!r} was given before (line {first}): "
                "the later row wins"
            )

    def close(self) -> None:
        if self._warn is not None and self.repeated > REPEATS_WARNED:
            self._warn(
                f"{self.repeated} rows gave an item_id given before in this feed: "
                "the later row wins"
            )


def _refuse_what_no_format_reads(head: bytes, fmt: str) -> None:
    """Raise InvalidFeed for the files a new user hands over by mistake, each of which imported
    nothing with exit status 0 ("0 products, 0 rows rejected"): an empty file, a binary one (a
    spreadsheet: its bytes were one CSV header without rows) and a JSON array (read as a CSV
    whose header was the whole file)."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text and len(head) < CHUNK:
        raise InvalidFeed(1, "the feed is empty")
    if head.startswith(b"PK\x03\x04"):
        kind = "a ZIP archive (an .xlsx or .ods spreadsheet?)"
    elif b"\x00" in head:
        kind = "binary data (NUL bytes: a spreadsheet, or UTF-16 text without a byte order mark?)"
    else:
        kind = ""
    if kind:
        raise InvalidFeed(
            1, f"the feed is {kind}, not text: export it as CSV, TSV, JSON lines or Google XML"
        )
    if fmt != "google-xml" and text.startswith(b"[") and text[1:].lstrip()[:1] in (b"{", b"]"):
        raise InvalidFeed(
            1,
            "the feed is one JSON array; Persona reads JSON lines, one product object a line "
            "(`jq -c '.[]' feed.json > feed.jsonl` writes them)",
        )


def _wide_encoding(head: bytes) -> str | None:
    """ "UTF-32" or "UTF-16" when the feed starts with that encoding's byte order mark, else
    None (the text readers read UTF-8: a UTF-16 feed's rows were all rejected as missing their
    item_id, and a UTF-16 XML feed read as CSV imported nothing without a word)."""
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "UTF-32"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    return None


def _utf16_xml(head: bytes) -> bool:
    codec = "utf-16-le" if head.startswith(b"\xff\xfe") else "utf-16-be"
    return head[2:].decode(codec, errors="replace").lstrip(" \t\r\n").startswith("<")


def _peek(source: IO[bytes]) -> bytes:
    start = source.tell()
    head = source.read(CHUNK)
    source.seek(start)
    return head


def check_columns(
    names: list[str], mapping: dict[str, str] | None, warn: Callable[[str], None] | None
) -> None:
    """A CSV/TSV header: two columns that give the same product field (the same name twice,
    Google's and Persona's name of one field, or a mapped name) raise InvalidFeed naming them;
    a row took one of them silently before (the last of a repeated name), say a second
    `price`. Google Merchant Center counts a single-valued attribute given more than once as
    an error too. A repeated field (`REPEATED_FIELDS`: `additional_image_link`) may be given in
    several columns of the same name, one value each, as Google's sheets take it: `_csv_rows`
    joins them. A repeated name Persona does not use as a field (a free attribute, an unnamed
    column) only goes to `warn`: the last one's value is kept, as before."""
    own: dict[str, tuple[int, str]] = {}  # product field -> the first column giving it
    other: dict[str, list[int]] = {}  # a name of no field -> its columns
    for number, raw in enumerate(names, 1):
        name = (mapping or {}).get(raw, raw)
        field = GOOGLE_NAMES.get(name, name)
        if field not in OWN_FIELDS:
            other.setdefault(raw, []).append(number)
            continue
        if field in own:
            first, first_name = own[field]
            if field in REPEATED_FIELDS and first_name == raw:
                continue  # one value a column, joined by _csv_rows
            said = repr(raw) if first_name == raw else f"{first_name!r} and {raw!r}"
            raise InvalidFeed(
                1,
                f"the column {said} is given twice (columns {first} and {number}) for the "
                f"product's {field}: Persona would take one of them silently; keep one",
            )
        own[field] = (number, raw)
    if "item_id" not in own:
        shown = ", ".join(repr(name[:40]) for name in names[:12])
        more = f" and {len(names) - 12} more" if len(names) > 12 else ""
        raise InvalidFeed(
            1,
            f"no column gives the item_id (`item_id`, or Google's `id`; another name with "
            f"--map): the columns are {shown}{more}",
        )
    if warn is None:
        return
    for raw in other:
        meant = _field_meant(raw, own)
        if meant is not None:
            warn(
                f"line 1: the column {raw[:40]!r} is no product field (read as a free "
                f"attribute): {meaning(meant)}"
            )
    for raw, columns in other.items():
        if len(columns) > 1:
            shown = f"the column {raw!r}" if raw else "an unnamed column"
            where = ", ".join(str(c) for c in columns)
            warn(
                f"line 1: {shown} appears {len(columns)} times (columns {where}); it is no "
                "product field, only a free attribute: the last one's value is kept"
            )


# as alike as a column must be to a product field to be warned of: at engine.suggest's CUTOFF a
# shop's free `rating` column read as Google's `gtin`, `style` as `title`, `region` as `gtin`
MISSPELLED_COLUMN = 0.75


def _field_meant(column: str, given: dict[str, tuple[int, str]]) -> str | None:
    """The name (Persona's or Google's) of a product field no column gives that `column` looks
    like a misspelling of (`titel`: 'title'), else None."""
    free = [name for name in KNOWN_NAMES if GOOGLE_NAMES.get(name, name) not in given]
    return closest(column, free, cutoff=MISSPELLED_COLUMN)


def _rows(
    source: IO[bytes],
    fmt: str,
    header: Callable[[list[str]], None] | None = None,
    mapping: dict[str, str] | None = None,
) -> Iterator[Row]:
    if fmt == "google-xml":
        return xml_rows(source)
    lines = _TextLines(source)
    if fmt == "jsonl":
        return _json_rows(lines)
    return _csv_rows(lines, "\t" if fmt == "tsv" else ",", header, mapping)


class _TextLines:
    """The feed's lines as text (UTF-8, a leading BOM dropped), each at most MAX_LINE long. A
    byte that is not UTF-8 is read as a lone surrogate (Python's `surrogateescape`), which the
    product's field checks refuse (`engine.text`): its row is rejected naming the field, where
    U+FFFD stored a damaged title without a word. `number`: the lines read so far."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source
        self._peekable = callable(getattr(source, "peek", None))
        self.number = 0

    def __iter__(self) -> _TextLines:
        return self

    def __next__(self) -> str:
        raw = self._source.readline(MAX_LINE * 4 + 1)
        if not raw:
            raise StopIteration
        self.number += 1
        text = raw.decode("utf-8", errors="surrogateescape")
        if len(raw) > MAX_LINE * 4 or len(text.rstrip("\r\n")) > MAX_LINE:
            raise InvalidFeed(self.number, f"a line longer than {MAX_LINE} characters")
        return text.lstrip("\ufeff") if self.number == 1 else text

    def skip_blank(self) -> None:
        """After a blank line (between rows, never inside a quoted cell): the blank lines that
        follow, consumed a buffer at a time and counted in `number` (`skip_blank_lines`): a gzip
        feed of one product and 64 MiB of newlines was read a Python step per line. A source
        that cannot peek (a caller's own) has them read one at a time, as lines."""
        if self._peekable:
            self.number += skip_blank_lines(cast(Peekable, self._source))


def _json_rows(lines: _TextLines) -> Iterator[Row]:
    for line in lines:
        number = lines.number
        if not line.strip():
            lines.skip_blank()
            continue
        try:
            data = outside_json(line, unique_keys)
        except BadJson as exc:
            yield number, {}, str(exc)
            continue
        if not isinstance(data, dict):
            yield number, {}, f"a product must be an object, got {type(data).__name__}"
            continue
        if type(data) is RepeatedKeys:
            yield number, {}, f"the product gives the key {key_shown(data.repeated)} more than once"
            continue
        yield number, data, None


class _RowLines:
    """The lines csv reads, at most MAX_LINE characters per row: a quoted cell left open (or
    holding newlines on purpose) made one row of the rest of the feed, cell after cell in
    memory. `start_row()` between rows."""

    def __init__(self, lines: _TextLines) -> None:
        self._lines = lines
        self._first = 1
        self._size = 0

    @property
    def number(self) -> int:
        """The lines read so far (blank ones skipped in bulk included)."""
        return self._lines.number

    def start_row(self) -> None:
        self._first, self._size = self.number + 1, 0

    def skip_blank(self) -> None:
        """Between rows, after a blank one: `_TextLines.skip_blank`."""
        self._lines.skip_blank()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self._size += len(line)
        if self._size > MAX_LINE:
            raise InvalidFeed(
                self._first,
                f"a row longer than {MAX_LINE} characters (a quoted cell that does not end?)",
            )
        return line


def _joined_columns(
    header: list[str], mapping: dict[str, str] | None = None
) -> list[tuple[str, list[int]]]:
    """The names of a repeated field (`REPEATED_FIELDS`) that the header gives in more than one
    column, with those columns: a row's values of them are joined with commas (the form one
    such cell takes). A name is read through `mapping` as `check_columns` and `to_product` read
    it: a mapped name of the field given in several columns kept only the last one's value."""
    columns: dict[str, list[int]] = {}
    for number, name in enumerate(header):
        field = (mapping or {}).get(name, name)
        if GOOGLE_NAMES.get(field, field) in REPEATED_FIELDS:
            columns.setdefault(name, []).append(number)
    return [(name, where) for name, where in columns.items() if len(where) > 1]


def _csv_rows(
    lines: _TextLines,
    delimiter: str,
    check: Callable[[list[str]], None] | None = None,
    mapping: dict[str, str] | None = None,
) -> Iterator[Row]:
    rows = _RowLines(lines)
    reader = csv.reader(rows, delimiter=delimiter)
    try:
        header = [_name(h) for h in next(reader, [])]
        if check is not None:
            check(header)  # before any row: a refused header imports nothing
        joined = _joined_columns(header, mapping)
        rows.start_row()
        for row in reader:
            if not any(cell.strip() for cell in row):
                rows.skip_blank()  # csv has read the blank row's line and nothing after it
                rows.start_row()
                continue
            rows.start_row()
            problem = None if len(row) <= len(header) else "more cells than header columns"
            fields = dict(zip(header, row, strict=False))
            for name, columns in joined:
                fields[name] = ",".join(row[c] for c in columns if c < len(row) and row[c])
            yield rows.number, fields, problem
    except csv.Error as exc:
        raise InvalidFeed(rows.number, f"unreadable {delimiter!r}-separated text: {exc}") from None


# -- Google Merchant Center XML --------------------------------------------------------------------


def xml_rows(source: IO[bytes]) -> Iterator[Row]:
    """The `<item>`s (RSS) or `<entry>`s (Atom) of a feed, one at a time, as (line, fields)."""
    items = _XmlItems()
    while True:
        chunk = source.read(CHUNK)
        items.feed(chunk, final=not chunk)
        yield from items.done
        items.done.clear()
        if not chunk:
            return


class _XmlItems:
    """An expat parser that keeps only the item being read and refuses every DTD."""

    def __init__(self) -> None:
        parser = expat.ParserCreate(namespace_separator=" ")
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.StartDoctypeDeclHandler = self._doctype
        parser.EntityDeclHandler = self._doctype
        parser.ExternalEntityRefHandler = self._external
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._text
        parser.CommentHandler = self._seen
        parser.ProcessingInstructionHandler = self._seen
        parser.StartCdataSectionHandler = self._seen
        parser.EndCdataSectionHandler = self._seen
        parser.buffer_text = True
        self.parser = parser
        self.fed = 0  # bytes given to the parser
        self.parsed = 0  # where the parser last reported something
        self.open = 0  # elements open
        self.done: list[Row] = []
        self.item: dict[str, Any] | None = None
        self.line = 0
        self.depth = 0  # inside the item: 1 = one of its fields
        self.field = ""
        self.parts: list[str] = []
        self.size = 0
        self.links = 0  # additional image links of the item
        self.problem: str | None = None

    def feed(self, chunk: bytes, final: bool) -> None:
        try:
            self.parser.Parse(chunk, final)
        except expat.ExpatError as exc:
            raise InvalidFeed(
                exc.lineno, f"not well-formed XML: {expat.ErrorString(exc.code)}"
            ) from None
        self.fed += len(chunk)
        # expat holds an unfinished token and rescans it with each chunk: bound it
        if self.fed - self.parsed > MAX_MARKUP + CHUNK:
            raise InvalidFeed(
                self.parser.CurrentLineNumber,
                f"markup longer than {MAX_MARKUP} bytes (a tag with its attributes, a comment, "
                "...)",
            )

    def _seen(self, *_: Any) -> None:
        self.parsed = self.parser.CurrentByteIndex

    def _doctype(self, *_: Any) -> None:
        raise InvalidFeed(
            self.parser.CurrentLineNumber,
            "a document type declaration (DTD) is not accepted in a product feed (entities "
            "could expand without bound or read other files)",
        )

    def _external(self, *_: Any) -> int:
        self._doctype()
        return 0  # not reached: refused

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        self._seen()
        self.open += 1
        if self.open > MAX_NESTING:
            raise InvalidFeed(
                self.parser.CurrentLineNumber, f"elements nested deeper than {MAX_NESTING}"
            )
        ns, _, local = name.rpartition(" ")
        if self.item is None:
            if local in ("item", "entry"):
                self.item, self.line, self.depth, self.problem = (
                    {},
                    self.parser.CurrentLineNumber,
                    0,
                    None,
                )
                self.links = 0
            return
        self.depth += 1
        if self.depth != 1:
            return  # nested (g:shipping's country, ...): not a product field here
        self.field = ("g:" if ns == G_NS else "") + local
        self.parts, self.size = [], 0
        if ns == ATOM_NS and local == "link" and attrs.get("rel", "alternate") == "alternate":
            self.parts.append(attrs.get("href", ""))

    def _text(self, data: str) -> None:
        self._seen()
        if self.item is None or self.depth != 1 or self.problem:
            return
        self.size += len(data)
        if self.size > MAX_FIELD:
            self.problem = f"{self.field} is longer than {MAX_FIELD} characters"
            self.parts = []
            return
        self.parts.append(data)

    def _end(self, name: str) -> None:
        self._seen()
        self.open -= 1
        if self.item is None:
            return
        if self.depth == 0:
            self.done.append((self.line, _merge(self.item), self.problem))
            self.item = None
            return
        if self.depth == 1 and not self.problem:
            self._store("".join(self.parts).strip())
        self.depth -= 1

    def _store(self, value: str) -> None:
        assert self.item is not None
        # each additional image link counts as a field: they were kept without bound (one item
        # of repeated links held the whole feed in memory)
        if len(self.item) + self.links >= MAX_FIELDS:
            self.problem = f"more than {MAX_FIELDS} fields in one item"
            self.item.clear()  # rejected: nothing of it is kept
        elif _name(self.field) == "additional_image_link":
            self.item.setdefault(self.field, []).append(value)
            self.links += 1
        elif value:
            self.item[self.field] = value


RSS_ATOM_FIELDS = frozenset({"id", "title", "link", "description", "summary"})


def _merge(item: dict[str, Any]) -> dict[str, Any]:
    """An item's fields: every `g:` one, over RSS's and Atom's own title, link, description,
    summary and id (their other elements, such as Atom's `updated`, are not product data)."""
    plain = {k: v for k, v in item.items() if k in RSS_ATOM_FIELDS}
    return plain | {k[2:]: v for k, v in item.items() if k.startswith("g:")}
