"""Campaign parameters on the product links of e-mail blocks (issue 18 item 6; PERSONA_UTM). Pure.

`PERSONA_UTM` is a query string such as `utm_source=persona&utm_medium=email&utm_campaign={block}`:
`{block}` and `{variant}` are filled in per block. It is added to each product link of an html
block (and to the click redirect's target, api/clicks.py), after any query the product URL has;
a parameter the product URL already sets is left as the shop set it.

An e-mail block writes a link as one token no line break may split (engine/email_lines.py), and
takes only items whose links are at most EMAIL_URL_MAX octets written: the setting is refused at
start-up when, written into a link (`&` as `&amp;`, the placeholders filled with the longest
block and variant names, the separator before it), it could take more than EMAIL_UTM_MAX
octets, so no link it makes passes SMTP's 998-octet line (which failed the block to its
fallback, as a template error, once a 512-character setting met a long product link).
"""

from __future__ import annotations

import re
import urllib.parse

from engine.content_experiments import MAX_VARIANT
from engine.email_lines import EMAIL_URL_MAX, EMAIL_UTM_MAX, SMTP_LINE_MAX

LONGEST_BLOCK = 15  # characters of the longest block name (engine/blocks.py ALL_BLOCKS)
_PAIR = re.compile(r"^[A-Za-z0-9_.\-]{1,64}=[A-Za-z0-9_.\-{}~%+]{0,128}$")
_PLACES = ("{block}", "{variant}")


def parse_utm(text: str) -> str:
    """`text` checked: `key=value` pairs joined by `&`, values of URL-safe characters with the
    placeholders {block} and {variant}; ValueError saying what is wrong."""
    text = text.strip().lstrip("?")
    most = written_octets(text)
    if most > EMAIL_UTM_MAX:
        raise ValueError(
            f"written into an e-mail link it takes up to {most} octets ('&' is written '&amp;', "
            f"{{block}} is up to {LONGEST_BLOCK} characters, {{variant}} up to {MAX_VARIANT}); "
            f"at most {EMAIL_UTM_MAX} fit beside a product link of {EMAIL_URL_MAX} octets within "
            f"SMTP's {SMTP_LINE_MAX}-octet line"
        )
    for pair in text.split("&"):
        if not _PAIR.fullmatch(pair):
            raise ValueError(f"{pair!r} is not key=value (letters, digits, _ . - ~ % +)")
        braces = re.findall(r"\{[^}]*\}", pair)
        if any(b not in _PLACES for b in braces) or pair.count("{") != len(braces):
            raise ValueError(f"{pair!r}: the only placeholders are {{block}} and {{variant}}")
    return text


def written_octets(utm: str) -> int:
    """The most octets `utm` adds to a link an e-mail block writes (HTML-escaped): the
    separator (`&amp;` at most), each `&` written `&amp;`, `{block}` and `{variant}` filled
    with the longest names (all ASCII, which percent-encoding leaves as they are); a pair the
    product URL sets already is left out, which only shortens it."""
    if not utm:
        return 0
    filled = LONGEST_BLOCK - len("{block}"), MAX_VARIANT - len("{variant}")
    return (
        len(utm.encode())
        + len("&amp;")
        + 4 * utm.count("&")
        + utm.count("{block}") * filled[0]
        + utm.count("{variant}") * filled[1]
    )


def with_utm(url: str, utm: str, block: str, variant: str) -> str:
    """`url` with the parameters of `utm` it does not set yet, at the end of its query (before
    its fragment). Only the query and fragment are read (after the first `?`, the first `#`):
    the rest stays as the catalog wrote it. `urllib.parse.urlsplit` also read the host, and
    raised ValueError for a stored URL with an unbalanced bracket there (`https://[shop...`),
    which failed every e-mail block holding the item and its click redirect."""
    if not utm:
        return url
    filled = utm.replace("{block}", _quote(block)).replace("{variant}", _quote(variant))
    before, hash_, fragment = url.partition("#")
    base, _, query = before.partition("?")
    have = {key for key, _v in urllib.parse.parse_qsl(query, keep_blank_values=True)}
    extra = [p for p in filled.split("&") if p.split("=", 1)[0] not in have]
    if not extra:
        return url
    joined = "&".join([query, *extra] if query else extra)
    return f"{base}?{joined}{hash_}{fragment}"


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")
