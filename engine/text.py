"""Checks on text from outside: ids and free text that state and Kafka keys are built from, and
JSON read from files, feeds and topics.

Pure. Ids (user, event, item, session ids) are keys: they refuse every control character (C0, DEL,
C1) and every lone surrogate (which no UTF-8 encoder accepts), `id_problem`. An id entering state
(an event's, a catalog feed's) also refuses the invisible characters that make two different ids
look alike (a byte order mark left by joined files, zero-width spaces and joiners, direction
marks, overrides and isolates, which can show one id as another), `new_id_problem`; lookups
keep the first rule, so what an older version stored stays readable, exportable and erasable.
Free text (titles, comments, search queries) refuses lone surrogates and the C0 controls other
than tab, line feed and carriage return.
JSON from outside (`outside_json`) fails with one exception type, `BadJson` (a `ValueError`),
whatever went wrong: invalid JSON, nesting deeper than Python's stack (a `RecursionError` out of
`json.loads`), an integer over Python's 4,300-digit conversion limit, bytes that are not UTF-8.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Literal

MAX_ID = 128  # characters of an id (user, event, item id): what an event may hold
_INVISIBLE = {
    "\u00ad": "a soft hyphen",
    "\u200b": "a zero-width space",
    "\u200c": "a zero-width non-joiner",
    "\u200d": "a zero-width joiner",
    "\u200e": "a direction mark",
    "\u200f": "a direction mark",
    "\u202a": "a direction embedding",
    "\u202b": "a direction embedding",
    "\u202c": "a direction pop",
    "\u202d": "a direction override",
    "\u202e": "a direction override",
    "\u2060": "a word joiner",
    "\u2061": "an invisible operator",
    "\u2062": "an invisible operator",
    "\u2063": "an invisible operator",
    "\u2064": "an invisible operator",
    "\u2066": "a direction isolate",
    "\u2067": "a direction isolate",
    "\u2068": "a direction isolate",
    "\u2069": "a direction isolate",
    "\ufeff": "a byte order mark",
}
_ID_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_NEW_ID_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff" + "".join(_INVISIBLE) + "]")
_TEXT_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def _describe(char: str) -> str:
    if "\udc80" <= char <= "\udcff":  # how Python's surrogateescape reads a byte
        return (
            f"a lone surrogate (U+{ord(char):04X}: in a file, the byte 0x{ord(char) - 0xDC00:02X}, "
            "which is not UTF-8)"
        )
    if "\ud800" <= char <= "\udfff":
        return f"a lone surrogate (U+{ord(char):04X})"
    if char in _INVISIBLE:
        return f"an invisible character (U+{ord(char):04X}, {_INVISIBLE[char]})"
    return f"a control character (U+{ord(char):04X})"


def id_problem(value: str) -> str | None:
    """Why `value` cannot be an id, or None when it can."""
    found = _ID_FORBIDDEN.search(value)
    return None if found is None else f"contains {_describe(found.group())}"


def new_id_problem(value: str) -> str | None:
    """Why `value` cannot be the id of something new (an event's, a product's), or None."""
    found = _NEW_ID_FORBIDDEN.search(value)
    return None if found is None else f"contains {_describe(found.group())}"


# Unicode's bidirectional formatting characters: marks, embeddings, overrides, isolates (the
# Arabic letter mark besides those ids refuse)
_BIDI = frozenset(
    ["\u061c", *(char for char, what in _INVISIBLE.items() if what.startswith("a direction"))]
)
_OPENS_ISOLATE = "\u2066\u2067\u2068"
_FSI, _PDI = "\u2068", "\u2069"


def isolated(text: str) -> str:
    """`text` to be written inside other text (a title in a sentence): with direction controls, it
    is put between FSI and PDI so that it cannot reorder what stands after it (a right-to-left
    override in a title reversed the price beside it). Its own PDIs, which would close that FSI
    early, are dropped, and every isolate it leaves open is closed (a PDI also ends the
    embeddings and overrides opened inside it). Text without direction controls is returned as
    it is."""
    if not _BIDI.intersection(text):
        return text
    inner = text.replace(_PDI, "")
    opened = sum(inner.count(ch) for ch in _OPENS_ISOLATE)
    return _FSI + inner + _PDI * (opened + 1)


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as free text, or None when it can."""
    found = _TEXT_FORBIDDEN.search(value)
    return None if found is None else f"contains {_describe(found.group())}"


class BadJson(ValueError):
    """JSON from outside that cannot be read; the message says why, without the input."""


def cut(text: str, limit: int) -> str:
    """`text` for a message: whole when at most `limit` characters, else its first `limit`
    and "..."."""
    return text if len(text) <= limit else text[:limit] + "..."


def repr_cut(
    value: Any,
    most: int,
    keep: int,
    *,
    end: str = "...",
    counted: Literal["repr", "str"] | None = None,
) -> str:
    """`value` for a message: its repr (control characters escaped, so the message stays one
    line), whole when at most `most` characters, else its first `keep` and `end`, then
    ` (N characters)` with N the length of its repr or str when `counted` says which."""
    text = repr(value)
    if len(text) <= most:
        return text
    if counted is None:
        return text[:keep] + end
    length = len(text) if counted == "repr" else len(str(value))
    return f"{text[:keep]}{end} ({length} characters)"


def short(exc: BaseException, limit: int = 200) -> str:
    """An exception's message for a reason given to users: at most `limit` characters."""
    return cut(str(exc), limit)


class RepeatedKeys(dict[Any, Any]):
    """A JSON object or msgpack map that gave a key more than once, with the last value (what
    json.loads keeps); `repeated` names the first key given twice. Parsers disagree on such an
    object (the first value, the last, or an error), so readers of events refuse it."""

    __slots__ = ("repeated",)

    def __init__(self, pairs: list[tuple[Any, Any]], repeated: Any) -> None:
        super().__init__(pairs)
        self.repeated = repeated


def key_shown(key: Any) -> str:
    """A key from outside for a reason: its repr, at most 66 characters."""
    return repr_cut(key, 66, 62, end="...'")


def unique_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """`object_pairs_hook` (json, msgpack): the object as a dict, a `RepeatedKeys` when one of
    its keys is given twice."""
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    seen: set[Any] = set()
    for key, _ in pairs:
        if key in seen:
            return RepeatedKeys(pairs, key)
        seen.add(key)
    return out  # not reached: fewer keys than pairs means one was seen twice


def outside_json(
    raw: str | bytes, object_pairs_hook: Callable[[list[tuple[Any, Any]]], Any] | None = None
) -> Any:
    """`json.loads(raw)`, every failure a `BadJson` with a short reason."""
    try:
        return json.loads(raw, object_pairs_hook=object_pairs_hook)
    except RecursionError:
        raise BadJson("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many integer digits
        raise BadJson(f"invalid JSON: {short(exc)}") from None


# A URL: a scheme (`[A-Za-z][A-Za-z0-9+.-]*`), `://` and what follows up to a space, a quote or
# an angle bracket. Tried only where a run of scheme characters begins (the lookbehind), its
# leading digits, `+`, `.` and `-` kept out of the scheme (group 1): one try per run, each
# backtracking over its own run only, so linear time. Tried from every letter, a long run of
# letters without `://` (a server's answer quoted in an aiohttp error) cost quadratic time.
_URL_IN_TEXT = re.compile(r"(?<![A-Za-z0-9+.-])([0-9+.-]*)([A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*)")


def urls_shown(text: str, shown: Callable[[str], str]) -> str:
    """`text` (an error's message) with every `scheme://...` URL in it replaced by `shown(url)`:
    aiohttp's errors name URLs whole, tokens and signatures in their query or user info included
    (webhook receivers, streams/webhooks.py; catalog feeds, persona/catalog_sync.py). Linear in
    the length of `text`, whatever it holds (the servers named in such errors choose some of it)."""
    return _URL_IN_TEXT.sub(lambda match: match.group(1) + shown(match.group(2)), text)


def body_encoding_problem(raw: bytes) -> str | None:
    """What a JSON body that is not UTF-8 text looks like, for the 400 that refuses it (None:
    nothing seen in its first bytes): gzip sent without `Content-Encoding: gzip`, or UTF-16
    (with or without its byte order mark; its NUL bytes decode as UTF-8, but JSON never has a
    NUL in its first characters)."""
    head = raw[:4]
    if head.startswith(b"\x1f\x8b"):
        return (
            "the body is gzip-compressed: send it with the header Content-Encoding: gzip "
            "(or send it uncompressed)"
        )
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head:
        return "the body is UTF-16 text: send it as UTF-8"
    return None
