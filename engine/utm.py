"""Campaign parameters on the product links of e-mail blocks (issue 18 item 6; PERSONA_UTM). Pure.

`PERSONA_UTM` is a query string such as `utm_source=persona&utm_medium=email&utm_campaign={block}`:
`{block}` and `{variant}` are filled in per block. It is added to each product link of an html
block (and to the click redirect's target, api/clicks.py), after any query the product URL has;
a parameter the product URL already sets is left as the shop set it.
"""

from __future__ import annotations

import re
import urllib.parse

MAX_UTM = 512
_PAIR = re.compile(r"^[A-Za-z0-9_.\-]{1,64}=[A-Za-z0-9_.\-{}~%+]{0,128}$")
_PLACES = ("{block}", "{variant}")


def parse_utm(text: str) -> str:
    """`text` checked: `key=value` pairs joined by `&`, values of URL-safe characters with the
    placeholders {block} and {variant}; ValueError saying what is wrong."""
    text = text.strip().lstrip("?")
    if len(text) > MAX_UTM:
        raise ValueError(f"at most {MAX_UTM} characters")
    for pair in text.split("&"):
        if not _PAIR.fullmatch(pair):
            raise ValueError(f"{pair!r} is not key=value (letters, digits, _ . - ~ % +)")
        braces = re.findall(r"\{[^}]*\}", pair)
        if any(b not in _PLACES for b in braces) or pair.count("{") != len(braces):
            raise ValueError(f"{pair!r}: the only placeholders are {{block}} and {{variant}}")
    return text


def with_utm(url: str, utm: str, block: str, variant: str) -> str:
    """`url` with the parameters of `utm` it does not set yet."""
    if not utm:
        return url
    filled = utm.replace("{block}", _quote(block)).replace("{variant}", _quote(variant))
    parts = urllib.parse.urlsplit(url)
    have = {key for key, _v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)}
    extra = [p for p in filled.split("&") if p.split("=", 1)[0] not in have]
    if not extra:
        return url
    query = "&".join([parts.query, *extra] if parts.query else extra)
    return urllib.parse.urlunsplit(parts._replace(query=query))


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")
