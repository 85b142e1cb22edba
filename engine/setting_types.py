"""Parsers of setting values (engine/settings.py declares which field uses which).

Each parser turns a raw value from a flag, a `PERSONA_*` variable or the TOML file into the
field's type, or raises ValueError saying what is wanted (never quoting a secret: the caller names
the setting and hides the value of secret ones). Pure: no I/O but the readable-file check and the
CPU affinity lookup.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from engine.files import read_regular
from engine.repeat import parse_repeat
from engine.utm import parse_utm

Parse = Callable[[Any], Any]

# Numbers as people type them, in ASCII: Python's int() and float() also take other scripts'
# digits ("٨٠٨٠"), underscores ("80_80"), "nan" and "inf"; a setting takes none of those.
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_REAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)
NAME_MAX = 255  # bytes of one path component (Linux)
PATH_MAX = 4095  # bytes of a whole path (Linux, without the terminating NUL)


def _number_text(value: Any, pattern: re.Pattern[str], says: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(says)  # TOML's true/false are no numbers; arrays and tables neither
    text = str(value).strip()
    if isinstance(value, str) and (len(text) > 40 or not pattern.fullmatch(text)):
        raise ValueError(says)
    return text


@dataclass(frozen=True)
class Integer:
    low: int
    high: int

    def __call__(self, value: Any) -> int:
        says = f"must be a whole number {self.low}..{self.high}"
        _number_text(value, _INTEGER, says)
        if isinstance(value, float):
            if not value.is_integer():  # TOML's 3.7: never cut to 3
                raise ValueError(says)
            value = int(value)
        number = int(value)
        if not self.low <= number <= self.high:
            raise ValueError(f"must be {self.low}..{self.high}")
        return number


@dataclass(frozen=True)
class Real:
    """A number in low..high; `open_low` excludes low; `says` replaces the range in the message."""

    low: float
    high: float
    says: str = ""
    open_low: bool = False

    def __call__(self, value: Any) -> float:
        says = self.says or f"must be {self.low:g}..{self.high:g}"
        real = float(_number_text(value, _REAL, says))
        inside = self.low < real if self.open_low else self.low <= real
        if not (inside and real <= self.high):  # nan fails too
            raise ValueError(self.says or f"must be {self.low:g}..{self.high:g}")
        return real


@dataclass(frozen=True)
class Choice:
    """One of `values`, compared after `case` ("lower", "upper" or "" to compare as given)."""

    values: tuple[str, ...]
    case: str = ""
    says: str = ""

    def __call__(self, value: Any) -> str:
        text = str(value)
        text = (
            text.lower() if self.case == "lower" else text.upper() if self.case == "upper" else text
        )
        if text not in self.values:
            raise ValueError(self.says or f"must be one of {', '.join(self.values)}")
        return text


def text(value: Any) -> str:
    return str(value)


def path(value: Any) -> Path:
    """A path the file system can take: no NUL byte, no name over NAME_MAX bytes, at most
    PATH_MAX bytes in all (else every use of it fails with an OSError far from the setting)."""
    text = str(value)
    if "\x00" in text:
        raise ValueError("a path cannot hold a NUL character")
    try:
        raw = os.fsencode(text)
    except UnicodeError:
        raise ValueError("is not a path this system can encode") from None
    if len(raw) > PATH_MAX or any(len(part) > NAME_MAX for part in raw.split(b"/")):
        raise ValueError(
            f"is longer than a path may be ({PATH_MAX} bytes, {NAME_MAX} bytes per name)"
        )
    return Path(text).expanduser()


MAX_SETTING_FILE = 16 << 20  # bytes of a file a setting names (a CA bundle, a key, a password)


def readable_file(value: Any) -> Path:
    """A regular file of at most MAX_SETTING_FILE bytes this process can read; ValueError saying
    why not (a FIFO or /dev/zero is refused unread: TLS would wait on one, read the other
    forever)."""
    file = path(value)
    try:
        read_regular(file, MAX_SETTING_FILE)
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror or exc})") from None
    return file


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def boolean(value: Any) -> bool:
    if isinstance(value, bool):  # TOML's true/false
        return value
    word = str(value).lower()
    if word not in _TRUE + _FALSE:
        raise ValueError("must be true or false (1/0, yes/no, on/off)")
    return word in _TRUE


def broker_url(value: Any) -> str:
    urls = []
    for part in str(value).split(";"):
        url = part.strip()
        if "://" not in url:
            url = "kafka://" + url
        parsed = urlparse(url)
        if parsed.scheme != "kafka" or not parsed.hostname or not parsed.port:
            raise ValueError("expected kafka://host:port (several separated by ';')")
        urls.append(url)
    return ";".join(urls)


def http_url(says: str) -> Parse:
    """An http(s) URL without a trailing slash; ValueError(`says`) otherwise."""

    def parse(value: Any) -> str:
        url = str(value).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(says)
        return url

    return parse


def http_url_as_given(says: str) -> Parse:
    """An http(s) URL kept exactly as given; ValueError(`says`) otherwise."""

    def parse(value: Any) -> str:
        url = str(value)
        if not url.startswith(("http://", "https://")):
            raise ValueError(says)
        return url

    return parse


def url_list(value: Any) -> str:
    urls = [u.strip() for u in str(value).split(",") if u.strip()]
    if not all(u.startswith(("http://", "https://")) for u in urls):
        raise ValueError("must be comma-separated http(s) URLs")
    return ",".join(urls)


def utm(value: Any) -> str:
    return parse_utm(str(value))  # engine/utm.py: key=value&... with {block} and {variant}


def repeat_items(value: Any) -> str:
    parse_repeat(str(value))  # engine/repeat.py: item:<id>@<days> or category:<name>@<days>
    return str(value)


def rate_limits(value: Any) -> str:
    parse_rate_limits(str(value))
    return str(value)


def parse_rate_limits(text: str) -> dict[str, float]:
    """`name:requests_per_second;...` -> {key name: rate}; ValueError when malformed."""
    limits: dict[str, float] = {}
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        name, sep, rate_text = entry.rpartition(":")
        try:
            rate = float(rate_text)
        except ValueError:
            rate = -1.0
        if not sep or not name.strip() or not rate > 0 or rate == float("inf"):
            raise ValueError(f"entry {entry!r} is not name:requests_per_second (a number > 0)")
        limits[name.strip()] = rate
    return limits


def origins(value: Any) -> str:
    return ";".join(parse_origins(str(value)))


def parse_origins(text: str) -> tuple[str, ...]:
    """`https://shop.example;http://localhost:3000` -> the origins as browsers send them in
    `Origin` (scheme://host[:port], lower case, no path); ValueError when one is not an origin."""
    found: list[str] = []
    for entry in (e.strip() for e in text.split(";") if e.strip()):
        parsed = urlparse(entry)
        try:
            port = parsed.port
        except ValueError:
            port = -1
        if parsed.scheme not in ("http", "https") or not parsed.hostname or port == -1:
            raise ValueError(f"{entry!r} is not an origin such as https://shop.example.com")
        if parsed.path not in ("", "/") or parsed.query or parsed.fragment or "@" in entry:
            raise ValueError(f"{entry!r} has more than scheme://host[:port] (an origin)")
        host = parsed.netloc.lower()
        if (parsed.scheme, port) in (("http", 80), ("https", 443)):  # browsers leave it out
            host = host.rsplit(":", 1)[0]
        found.append(f"{parsed.scheme}://{host}")
    return tuple(found)


def catalog_feeds(value: Any) -> str:
    parse_catalog_feeds(str(value))
    return str(value).strip()


def parse_catalog_feeds(text: str) -> list[tuple[str, float]]:
    """`url@minutes;...` -> [(url, minutes)]; ValueError (never quoting a URL) when malformed."""
    feeds: list[tuple[str, float]] = []
    for number, entry in enumerate((e.strip() for e in text.split(";") if e.strip()), 1):
        url, sep, minutes_text = entry.rpartition("@")
        try:
            minutes = float(minutes_text)
        except ValueError:
            minutes = -1.0
        if not sep or not url.startswith(("http://", "https://")):
            raise ValueError(f"entry {number} is not an http(s) URL@minutes")
        if not 0.01 <= minutes <= 10_080.0:  # nan fails too
            raise ValueError(f"entry {number}: minutes must be 0.01..10080 (a week)")
        feeds.append((url, minutes))
    return feeds


def cpus(value: Any) -> frozenset[int]:
    return parse_cpus(str(value))


def parse_cpus(text: str) -> frozenset[int]:
    """A Linux CPU list (`0-2,5`) -> {0, 1, 2, 5}; ValueError when malformed or when it names a
    CPU this process may not run on."""
    wanted: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"{part!r} is not a CPU number or range (a CPU list: 0-2,5)")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise ValueError(f"range {part!r} runs backwards")
        wanted.update(range(first, last + 1))
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if usable is None:
        raise ValueError("CPU placement needs Linux (sched_setaffinity)")
    missing = sorted(wanted - usable)
    if missing:
        raise ValueError(
            f"CPU(s) {','.join(map(str, missing))} not available here "
            f"(available: {','.join(map(str, sorted(usable)))})"
        )
    return frozenset(wanted)
