"""Lines of e-mail HTML within SMTP's limit, without changing what the HTML says. Pure.

RFC 5321 (4.5.3.1.6) and RFC 5322 (2.1.1) allow 998 octets a line (without its CRLF). Senders
inject a block into their message, and some send HTML as 8bit without re-encoding it: a server
then refuses the message or breaks the long line wherever the 998th octet falls (inside a URL,
an entity or a character). `wrap_html` breaks every line longer than LINE_TARGET octets, only
where a line break means what is there already:

- inside a tag, at the whitespace between its name and attributes or between two attributes
  (that whitespace becomes the line break), or just before the tag's closing `>` or `/>` (a
  line break is added: whitespace there is allowed in every start and end tag);
- in text, at an ASCII space or tab, which becomes the line break: both are collapsible white
  space, except where CSS keeps white space (`<pre>`, `<textarea>`, `<listing>`, and any
  `white-space: pre*` or `break-spaces` in the document, which turns text breaks off), and
  except between two East Asian wide characters or next to a zero width space, where CSS
  removes a line break instead of showing it as a space (CSS Text 3, 4.1.3);

never inside an attribute value (a URL, alt text), an entity, a comment (Outlook's conditional
comments), the text of `<script>`, `<style>`, `<title>`, or a character (the text is `str`).

A token that cannot be broken (a long URL, a long word) stays whole: its line may exceed
LINE_TARGET. A line that still exceeds SMTP_LINE_MAX raises `LineTooLong` (the block renderer
treats it as a template error); engine.blocks keeps items whose links or title could not fit a
line out of e-mail blocks before rendering (`fits_email`).

Why LINE_TARGET is 900 and not 998: a block is inserted mid-line into the sender's template, so
its first and last lines share a line with the host's markup (`<td ...>{{ block }}</td>`);
senders' click tracking rewrites links into longer ones; 98 octets of headroom cover both in the
common case, and an unbreakable token can still take a line up to 998.
"""

from __future__ import annotations

import bisect
import functools
import html as htmllib
import re
import unicodedata

SMTP_LINE_MAX = 998  # octets a line, without its CRLF (RFC 5321 4.5.3.1.6, RFC 5322 2.1.1)
LINE_TARGET = 900  # octets: where lines are broken (module docstring: why below 998)
# An e-mail block writes a link as one token no break may split, on a line of its own but for
# the attribute's name and quotes (`href="..."`) and what ends its tag: EMAIL_ROOM octets are
# kept for those, EMAIL_URL_MAX for the link as the catalog gave it (engine/blocks.py
# `fits_email`), and EMAIL_UTM_MAX for the campaign parameters added to it (engine/utm.py).
EMAIL_ROOM = 48
EMAIL_URL_MAX = 800  # octets of an item's link or image link as an e-mail block writes it
EMAIL_UTM_MAX = SMTP_LINE_MAX - EMAIL_ROOM - EMAIL_URL_MAX  # 150 octets of PERSONA_UTM, written


class LineTooLong(ValueError):
    """A line of e-mail HTML over SMTP_LINE_MAX octets that has nowhere to break."""


# one token of HTML: a comment (an unclosed one runs to the end), a doctype, CDATA or processing
# instruction, a tag (quoted attribute values may hold `>`), text, or a `<` that starts none of
# those (kept whole up to the next `>`, never broken: a malformed tag is not ours to guess)
_TOKEN = re.compile(
    r"(?P<comment><!--.*?-->|<!--.*\Z|<![^>]*>|<\?[^>]*>)"
    r"|(?P<tag></?[A-Za-z][^\s/>]*+(?:[^>\"']++|\"[^\"]*\"|'[^']*')*+>)"
    r"|(?P<text>[^<]+)"
    r"|(?P<other><[^>]*>?)",
    re.S,
)
_TAG_NAME = re.compile(r"</?([A-Za-z][^\s/>]*)")
_TAG_START = re.compile(r"</?[A-Za-z][^\s/>]*+")  # a tag's `<` and name (`_TOKEN`'s `tag`)
_TAG_SPECIAL = re.compile("[>\"']")
_OTHER = re.compile(r"<[^>]*>?")  # `_TOKEN`'s `other`
# inside a tag: a quoted value, a run of whitespace, or anything else
_TAG_PART = re.compile(r"\"[^\"]*\"|'[^']*'|[ \t\r\n\f]+|[^ \t\r\n\f\"']+")
# elements whose content is raw text (kept whole, up to their end tag)
_RAW = frozenset({"script", "style", "title", "textarea", "xmp", "iframe", "noembed", "noframes"})
_PREFORMATTED = frozenset({"pre", "listing"})
_KEEPS_SPACE = re.compile(
    r"white-space(?:-collapse)?\s*:\s*(?:pre|break-spaces|preserve)|<plaintext", re.I
)
_ENTITY = r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{0,31});"  # a reference
_ENTITY_BEFORE = re.compile(_ENTITY + r"\Z")  # one ending where the search ends
_ENTITY_AFTER = re.compile(_ENTITY)
_SPACES = " \t"
_ZWSP = "\u200b"

Break = tuple[int, bool]  # (position, insert: True adds "\n" there, False replaces that char)


def octets(text: str) -> int:
    """UTF-8 octets of `text`."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def longest_line(text: str) -> int:
    """Octets of the longest line of `text` (lines split on LF; a CR before it counts)."""
    return max(map(octets, text.split("\n")), default=0)


def _over(html: str, limit: int) -> bool:
    """Whether a line of `html` has more than `limit` octets (a line needs more than limit / 4
    characters to have that many; only such lines are encoded to count them)."""
    least = limit // 4
    if len(html) <= least:
        return False
    lines = html.split("\n")
    longest = max(map(len, lines))
    if longest <= least:
        return False
    if html.isascii():
        return longest > limit
    return any(octets(line) > limit for line in lines if len(line) > least)


def wrap_html(html: str, target: int = LINE_TARGET, hard: int = SMTP_LINE_MAX) -> str:
    """`html` with lines over `target` octets broken where a line break means what is there
    (module docstring); LineTooLong when a line is still over `hard` octets."""
    if not _over(html, target):
        return html
    spans = _long_lines(html, target)
    breaks = _breaks(html, spans)
    positions = [pos for pos, _insert in breaks]
    chosen: list[Break] = []
    for start, end in spans:
        here = breaks[bisect.bisect_left(positions, start) : bisect.bisect_left(positions, end)]
        chosen.extend(_choose(html, start, end, here, target))
    out = _apply(html, chosen)
    if _over(out, hard):
        raise LineTooLong(
            f"a line of {longest_line(out)} octets has nowhere to break (at most {hard})"
        )
    return out


def _long_lines(html: str, limit: int) -> list[tuple[int, int]]:
    """(start, end) of each line of `html` over `limit` octets."""
    spans = []
    start = 0
    for line in html.split("\n"):
        end = start + len(line)
        if len(line) > limit // 4 and octets(line) > limit:
            spans.append((start, end))
        start = end + 1
    return spans


def _choose(html: str, start: int, end: int, here: list[Break], target: int) -> list[Break]:
    """Greedy: the last break that keeps the line within `target`; where none does (a token
    longer than that), the first break after it."""
    chosen: list[Break] = []
    best: Break | None = None
    i = 0
    while i < len(here):
        pos = here[i][0]
        if octets(html[start:pos]) <= target:
            best = here[i]
            i += 1
            continue
        taken = best if best is not None else here[i]
        chosen.append(taken)
        start = taken[0] if taken[1] else taken[0] + 1
        best = None
        if taken == here[i]:
            i += 1
    if best is not None and octets(html[start:end]) > target:
        chosen.append(best)
    return chosen


def _apply(html: str, chosen: list[Break]) -> str:
    parts: list[str] = []
    last = 0
    for pos, insert in chosen:
        parts.append(html[last:pos])
        parts.append("\n")
        last = pos if insert else pos + 1
    parts.append(html[last:])
    return "".join(parts)


class _TagEnds:
    """Whether the tag starting at a `<` of `html` ends (`_TOKEN`'s `tag` matches there): its
    name, then quoted values and other characters up to an unquoted `>`. Tried by the regular
    expression at each `<`, a tag whose quotes pair up to the end of the document without a `>`
    (`<a '>'"<a '>'"...`) read the rest of the document for every `<`: quadratic, minutes for a
    megabyte. Here each `>` or quote outside quotes is followed once, its outcome kept: every
    later tag whose reading reaches it shares it."""

    __slots__ = ("_html", "_known")

    def __init__(self, html: str) -> None:
        self._html = html
        self._known: dict[int, bool] = {}  # position of a `>` or quote read outside quotes

    def closes(self, start: int, name_end: int) -> bool:
        html, known = self._html, self._known
        seen: list[int] = []
        pos = name_end
        ends = False
        while True:
            special = _TAG_SPECIAL.search(html, pos)
            if special is None:
                break
            at = special.start()
            if at in known:
                ends = known[at]
                break
            seen.append(at)
            if html[at] == ">":
                ends = True
                break
            closing = html.find(html[at], at + 1)
            if closing < 0:
                break
            pos = closing + 1
        for at in seen:
            known[at] = ends
        return ends


def _token(html: str, pos: int, tags: _TagEnds) -> tuple[re.Match[str], str]:
    """The token of `html` at `pos` and its kind (`_TOKEN`), without trying a tag that does not
    end (`_TagEnds`)."""
    start = _TAG_START.match(html, pos)
    if start is not None and not tags.closes(pos, start.end()):
        other = _OTHER.match(html, pos)
        assert other is not None  # `<` is there
        return other, "other"
    m = _TOKEN.match(html, pos)
    assert m is not None and m.lastgroup is not None  # `other` matches any `<`, text the rest
    return m, m.lastgroup


def _breaks(html: str, spans: list[tuple[int, int]]) -> list[Break]:
    """The places in the lines `spans` of `html` where a line break means what is there, in
    order (the whole document is read: what a line is inside of starts before it)."""
    found: list[Break] = []
    text_breaks = not _KEEPS_SPACE.search(html)
    preformatted = 0
    pos = 0
    span = 0  # the first span that does not end before the token
    tags = _TagEnds(html)
    while pos < len(html) and span < len(spans):
        m, kind = _token(html, pos, tags)
        pos = m.end()
        while span < len(spans) and spans[span][1] <= m.start():
            span += 1
        inside = span < len(spans) and spans[span][0] < pos
        if kind == "tag":
            token = m.group()
            if inside:
                found.extend(_tag_breaks(token, m.start()))
            name_match = _TAG_NAME.match(token)
            name = name_match.group(1).lower() if name_match else ""
            closing = token.startswith("</")
            if name in _PREFORMATTED:
                preformatted = max(0, preformatted - 1) if closing else preformatted + 1
            elif name in _RAW and not closing:
                found_end = re.compile(rf"</{re.escape(name)}[\s/>]", re.I).search(html, pos)
                pos = found_end.start() if found_end else len(html)  # raw text: kept whole
        elif kind == "text" and inside and text_breaks and not preformatted:
            found.extend(_text_breaks(m.group(), m.start()))
    return found


def _tag_breaks(tag: str, offset: int) -> list[Break]:
    """Inside a tag: each run of whitespace outside quotes (replaced), and before its `>` or
    `/>` when no whitespace is there (inserted)."""
    out: list[Break] = []
    body_end = len(tag) - (2 if tag.endswith("/>") and not _unquoted_slash(tag) else 1)
    for part in _TAG_PART.finditer(tag, 0, body_end):
        run = part.group()
        if run[0] in " \t\r\n\f" and "\n" not in run:
            out.append((offset + part.start(), False))
    if tag[body_end - 1] not in " \t\r\n\f":
        out.append((offset + body_end, True))
    return out


def _unquoted_slash(tag: str) -> bool:
    """Whether the '/' of a tag ending in `/>` ends an unquoted attribute value (`href=/a/>`),
    which it belongs to (HTML's tokenizer), rather than marking the tag self-closing: the value
    is the last run of the tag if that holds '=' or follows one (`src= /a/>`)."""
    parts = [p.group() for p in _TAG_PART.finditer(tag, 0, len(tag) - 1)]
    runs = [p for p in parts if p[0] not in " \t\r\n\f"]
    if len(runs) < 2 or runs[-1][0] in "\"'":
        return False  # `<br/>`, or a quoted value before the '/'
    last = runs[-1]
    return "=" in last or (runs[-2].endswith("=") and len(runs) > 2)


_SPACE = re.compile("[ \t]")


def _text_breaks(text: str, offset: int) -> list[Break]:
    """In text: each ASCII space or tab whose nearest characters on both sides (past other
    white space) are in this text and do not make CSS remove a line break there."""
    out: list[Break] = []
    wide_text = not text.isascii()
    for space in _SPACE.finditer(text):
        i = space.start()
        if i == 0 or i == len(text) - 1 or "\n" in (text[i - 1], text[i + 1]):
            continue  # the neighbour is outside this text, or a line break is already there
        if not wide_text and text[i - 1] not in " \t;" and text[i + 1] not in " \t&":
            out.append((offset + i, False))  # ASCII on both sides: the common case
            continue
        before = _char_before(text, i)
        after = _char_after(text, i)
        if before is None or after is None or _ZWSP in (before, after):
            continue
        if _wide(before) and _wide(after):
            continue
        out.append((offset + i, False))
    return out


def _char_before(text: str, i: int) -> str | None:
    j = i - 1
    while j >= 0 and text[j] in " \t\n\r\f":
        j -= 1
    if j < 0:
        return None
    if text[j] == ";":
        entity = _ENTITY_BEFORE.search(text, max(0, j - 40), j + 1)
        if entity:
            return _entity(entity.group())[-1:] or None
    return text[j]


def _char_after(text: str, i: int) -> str | None:
    j = i + 1
    while j < len(text) and text[j] in " \t\n\r\f":
        j += 1
    if j >= len(text):
        return None
    if text[j] == "&":
        entity = _ENTITY_AFTER.match(text, j)
        if entity:
            return _entity(entity.group())[:1] or None
    return text[j]


@functools.lru_cache(maxsize=256)
def _entity(reference: str) -> str:
    """What a character reference (`&amp;`, `&#26085;`) stands for."""
    return htmllib.unescape(reference)


def _wide(char: str) -> bool:
    """East Asian wide, fullwidth or halfwidth and not Hangul: CSS removes a line break between
    two such characters rather than showing a space."""
    if char.isascii():
        return False
    code = ord(char)
    hangul = (
        0x1100 <= code <= 0x11FF
        or 0x3130 <= code <= 0x318F
        or 0xA960 <= code <= 0xA97F
        or 0xAC00 <= code <= 0xD7FF
    )
    return not hangul and unicodedata.east_asian_width(char) in ("F", "W", "H")
