"""engine/email_lines.py: lines of e-mail HTML within SMTP's 998 octets, broken only where a
line break means what is there; engine/blocks.py: items whose links or title could not fit a line
stay out of e-mail blocks (not of ads), and a line nothing can break is a template error."""

from __future__ import annotations

import dataclasses
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from engine import blocks
from engine.blocks import (
    DEFAULT_TEMPLATE_DIR,
    BlockInput,
    BlockPolicy,
    Renderer,
    assemble,
    fits_email,
)
from engine.catalog import Product, validate_product
from engine.clicks import link_maker
from engine.email_lines import LINE_TARGET, SMTP_LINE_MAX, LineTooLong, longest_line, wrap_html
from engine.params import build
from engine.profile import Profile
from engine.text import MAX_ID

Event = tuple[str, object]


class Events(HTMLParser):
    """What a parser makes of HTML: tags with their exact attribute values, comments, text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[Event] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.events.append(("start", (tag, tuple(attrs))))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.events.append(("start", (tag, tuple(attrs))))

    def handle_endtag(self, tag: str) -> None:
        self.events.append(("end", tag))

    def handle_comment(self, data: str) -> None:
        self.events.append(("comment", data))

    def handle_data(self, data: str) -> None:
        if self.events and self.events[-1][0] == "text":  # one text between two tags
            self.events[-1] = ("text", str(self.events[-1][1]) + data)
        else:
            self.events.append(("text", data))


def parsed(html: str) -> list[Event]:
    parser = Events()
    parser.feed(html)
    parser.close()
    return parser.events


def assert_same_meaning(before: str, after: str) -> None:
    """Same tags with the same attribute values, same comments; texts equal but for spaces or
    tabs that became line breaks (collapsible white space either way)."""
    a, b = parsed(before), parsed(after)
    assert [e[0] for e in a] == [e[0] for e in b]
    for (kind, x), (_kind, y) in zip(a, b, strict=True):
        if kind != "text":
            assert x == y
            continue
        assert isinstance(x, str) and isinstance(y, str) and len(x) == len(y)
        assert all(c == d or (c in " \t" and d == "\n") for c, d in zip(x, y, strict=True))


def lines_within(html: str, limit: int = SMTP_LINE_MAX) -> bool:
    return all(len(line.encode()) <= limit for line in html.replace("\r\n", "\n").split("\n"))


def test_short_html_is_returned_as_it_is() -> None:
    html = '<table role="presentation"><tr><td>a b</td></tr></table>'
    assert wrap_html(html) is html


def test_a_long_tag_breaks_between_attributes_never_inside_a_value() -> None:
    value = "x" * 300 + " y" * 50  # spaces inside a value are not whitespace of the tag
    html = "<td " + " ".join(f'data-a{n}="{value}"' for n in range(8)) + ">t</td>"
    out = wrap_html(html)
    assert lines_within(out, LINE_TARGET) and out.count("\n") >= 3
    assert out.replace("\n", " ") == html
    assert_same_meaning(html, out)


def test_text_breaks_at_spaces_and_an_end_tag_before_its_bracket() -> None:
    html = "<p>" + "<b>word</b>" * 150 + " and " + "word " * 300 + "</p>"
    out = wrap_html(html)
    assert lines_within(out, LINE_TARGET)
    # no whitespace anywhere in the run of tags: a line break is added inside a tag
    assert "</b\n>" in out or "<b\n>" in out
    assert out.replace("b\n>", "b>").replace("\n", " ") == html
    assert_same_meaning(html, out)


def test_a_start_tag_before_a_long_word_breaks_before_its_bracket() -> None:
    word = "ü" * 440  # 880 octets: only a line of its own holds it
    html = f'<span style="{"x" * 100}">{word}</span><span>b</span>'
    out = wrap_html(html)
    assert f'"\n>{word}</span>' in out and lines_within(out)
    assert_same_meaning(html, out)


def test_multibyte_characters_are_never_split_and_octets_are_counted() -> None:
    html = "<p>" + "ä€😀 " * 400 + "</p>"  # 10 octets a word: 4,000 octets in 1,600 characters
    out = wrap_html(html)
    assert lines_within(out, LINE_TARGET)
    assert all(line.count("ä€😀") * 10 <= LINE_TARGET for line in out.split("\n"))
    assert_same_meaning(html, out)


def test_no_break_between_east_asian_wide_characters_or_by_a_zero_width_space() -> None:
    """CSS removes a line break between two wide characters (and next to U+200B) instead of
    showing it as a space: such a space must stay a space."""
    cjk = "<p>" + "日本 製" * 200 + "</p>"
    with pytest.raises(LineTooLong):
        wrap_html(cjk)
    zwsp = "<p>" + "ab\u200b cd" * 200 + "</p>"
    with pytest.raises(LineTooLong):
        wrap_html(zwsp)
    mixed = "<p>" + "日本 製 AB " * 200 + "</p>"  # breaks where a narrow character is beside
    out = wrap_html(mixed)
    assert lines_within(out, LINE_TARGET) and out.count("\n") >= 3 and "本\n製" not in out
    assert_same_meaning(mixed, out)
    # an entity is read as its character: `&#26085;` is 日
    entity = "<p>" + "&#26085; 本 " * 150 + "</p>"
    with pytest.raises(LineTooLong):
        wrap_html(entity)


def test_entities_comments_and_raw_text_are_kept_whole() -> None:
    html = (
        "<!--[if mso]>" + "<td>" * 300 + "<![endif]-->"  # a conditional comment: whole
        "<style>a { color: red; } " * 20 + "</style>"
        "<p>" + "&amp; " * 250 + "</p>"
    )
    with pytest.raises(LineTooLong):  # the comment alone is 1,225 octets
        wrap_html(html)
    out = wrap_html(html.replace("<td>" * 300, "<td>" * 100))
    comment_end = out.index("<![endif]-->")
    assert "\n" not in out[: comment_end + 12]
    style = out[out.index("<style>") : out.index("</style>")]
    assert "\n" not in style
    assert "&amp;\n" in out and "&am\n" not in out
    assert_same_meaning(html.replace("<td>" * 300, "<td>" * 100), out)


@pytest.mark.parametrize(
    "keeps",
    ["<pre>", "<textarea>", '<div style="white-space: pre-line">', "<div style='WHITE-SPACE:pre'>"],
)
def test_text_where_white_space_is_kept_is_not_broken(keeps: str) -> None:
    html = keeps + "word " * 300 + "</div>"
    with pytest.raises(LineTooLong):
        wrap_html(html)


def test_a_line_nothing_can_break_is_an_error_naming_its_size() -> None:
    url = "https://shop.example.com/" + "a" * 1200
    with pytest.raises(LineTooLong, match=r"a line of 12\d\d octets"):
        wrap_html(f'<a href="{url}">x</a>')
    out = wrap_html(f'<a style="{"s" * 200}" href="{url[:950]}" title="t">x</a>')
    assert lines_within(out) and f'href="{url[:950]}"' in out  # over the target, within 998


def test_crlf_and_lf_lines_are_both_counted() -> None:
    html = ("<p>" + "word " * 100 + "</p>\r\n") * 3
    assert wrap_html(html) is html  # every line is short
    long = "<p>" + "word " * 400 + "</p>\r\n" + "<p>x</p>"
    out = wrap_html(long)
    assert lines_within(out, LINE_TARGET) and out.endswith("</p>\r\n<p>x</p>")


# -- blocks ----------------------------------------------------------------------------------------


def product(item: str, title: str = "Candle", url_size: int = 0, image_size: int = 0) -> Product:
    url = f"https://shop.example.com/p/{item}?" + "&".join(f"k{n}=v" for n in range(500))
    image = f"https://shop.example.com/i/{item}.jpg?" + "x" * 2100
    return validate_product(
        {
            "item_id": item,
            "title": title,
            "url": url[:url_size] if url_size else f"https://shop.example.com/p/{item}",
            "image_url": image[:image_size] if image_size else f"https://x.example/{item}.jpg",
            "price": 3,
            "currency": "EUR",
        }
    )


def test_fits_email_bounds_links_as_written_and_titles_as_escaped() -> None:
    assert fits_email(dataclasses.replace(product("a"), url="https://a.example/" + "a" * 782))
    assert not fits_email(dataclasses.replace(product("a"), url="https://a.example/" + "a" * 783))
    assert not fits_email(product("a", url_size=2000))
    assert not fits_email(product("a", url_size=700))  # 700 characters, '&' written '&amp;'
    assert not fits_email(product("a", image_size=900))
    assert fits_email(product("a", title="A" * 500))
    assert fits_email(product("a", title="&" * 189))  # 945 octets escaped
    assert not fits_email(product("a", title="&" * 191))
    assert not fits_email(product("a", title="日本" * 160))  # 960 octets
    # the title as written: a direction override is isolated (FSI ... PDI, 3 octets each)
    assert fits_email(product("a", title="&" * 188 + "\u202e"))  # 943 octets, 949 written
    assert not fits_email(product("a", title="&" * 189 + "\u202e"))  # 948 octets, 954 written
    url = "https://shop.example.com/😀/" + "😀" * 66  # 12 octets a character once encoded
    assert not fits_email(dataclasses.replace(product("a"), url=url))


def test_fits_email_never_passes_a_link_written_longer_than_its_bound() -> None:
    """`fits_email` settles most links by their length (an ASCII character is written in at
    most 5 octets, `&` escaped): no printable ASCII character may take more, else a link the
    shortcut passes could be written past the bound."""
    from markupsafe import escape

    from engine.blocks import EMAIL_URL_MAX
    from engine.feeds import feed_url

    for code in range(32, 127):
        link = "https://a.example/" + chr(code) * 140  # 158 characters: within 5 x 160
        written = len(str(escape(feed_url(link))))
        assert written <= 5 * len(link), (chr(code), written)
        assert fits_email(dataclasses.replace(product("a"), url=link)) == (written <= EMAIL_URL_MAX)


CATALOG = {
    f"P{n}": product(f"P{n}", url_size=2000 if n % 2 else 0, title="Lamp " * 100) for n in range(12)
}


def block_input(fmt: str, n: int = 6) -> BlockInput:
    return BlockInput(
        block="recommendations", fmt=fmt, user_id="u", profile=None, churn=None,
        recommendations=[], models={}, popular=list(CATALOG), params=build({"n": n}),
    )  # fmt: skip


def test_an_item_whose_link_cannot_fit_stays_out_of_email_blocks_only() -> None:
    renderer = Renderer()
    html = assemble(block_input("html"), CATALOG.get, BlockPolicy(), renderer)
    assert html.items == ("P0", "P2", "P4", "P6", "P8", "P10") and lines_within(html.content)
    ads = assemble(block_input("json"), CATALOG.get, BlockPolicy(), renderer)
    assert ads.items == tuple(f"P{n}" for n in range(6))  # json (ads) blocks are not affected
    default = dataclasses.replace(block_input("html"), params=build({}))
    assert assemble(default, CATALOG.get, BlockPolicy(), renderer).items[:2] == ("P0", "P2")


def test_wrapping_keeps_the_blocks_meaning(monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = {
        "a": product("a", title=('Tom & Jerry "XL" <set> ' * 30)[:500], url_size=400),
        "b": product("b", title=("Superkalifragilistisch" * 23)[:500]),
        "c": product("c", title=("👍🏽 candle " * 60)[:500]),
        "d": product("d", title="日本製の陶器 " * 50),
    }
    renderer = Renderer()
    for block in ("recommendations", "cart_reminder", "winback", "similar_items"):
        for locale in ("en-GB", "he"):
            inp = dataclasses.replace(
                block_input("html"),
                block=block,
                popular=list(catalog),
                params=build({"n": 4, "locale": locale}),
            )
            after = assemble(inp, catalog.get, BlockPolicy(), renderer).content
            with monkeypatch.context() as m:
                m.setattr(blocks, "wrap_html", lambda html: html)
                before = assemble(inp, catalog.get, BlockPolicy(), renderer).content
            # over the target only where a token cannot break (an alt text in CJK: 950 octets)
            assert longest_line(before) > SMTP_LINE_MAX and lines_within(after)
            assert_same_meaning(before, after)


def test_a_template_line_nothing_can_break_is_a_template_error(tmp_path: Path) -> None:
    directory = tmp_path / "templates"
    shutil.copytree(DEFAULT_TEMPLATE_DIR, directory)
    (directory / "email" / "recommendations.html").write_text(
        '{% set heading, intro, cta_text = "Picked for you", "", "Shop" %}'
        '<img src="https://cdn.example/banner.png?' + "x" * 1200 + '">'
        '{% include "email/_grid.html" %}'
    )
    renderer = Renderer(template_dir=directory)
    block = assemble(block_input("html"), CATALOG.get, BlockPolicy(), renderer)
    assert renderer.errors == 1 and block.reason == "template_error" and block.items == ()
    assert lines_within(block.content)


@pytest.mark.parametrize(
    "tag",
    [
        "<a href=https://shop.example/{long}/>",  # an unquoted link ending in '/'
        "<img src=https://shop.example/{long}/>",
        '<img alt="" src= https://shop.example/{long}/>',  # whitespace after '='
        '<a title="t" href=/{long}/>',
    ],
)
def test_an_unquoted_value_ending_in_a_slash_keeps_its_slash(tag: str) -> None:
    """In `<a href=https://x/>` the '/' belongs to the unquoted value (HTML's tokenizer): the
    break went before it as if it were a self-closing '/>', and the link lost its last '/'."""
    html = "<p>x" + tag.format(long="a" * 895) + "y</a></p>"
    wrapped = wrap_html(html)
    assert wrapped != html and lines_within(wrapped)
    assert_same_meaning(html, wrapped)


def test_a_self_closing_slash_still_breaks_before_it() -> None:
    """`<br/>`, `<img src="..."/>` and `<input disabled/>`: the '/' is no value's, a break may
    go before it as before."""
    for tag in ('<img src="/{long}"/>', "<input value=1 disabled{long}/>"):
        html = "<p>x" + tag.format(long="a" * 895) + "</p>"
        wrapped = wrap_html(html)
        assert "\n/>" in wrapped and lines_within(wrapped)
        assert_same_meaning(html, wrapped)


def test_a_click_link_too_long_for_a_line_is_the_products_link_not_a_template_error() -> None:
    """The click redirect's token carries the user id and item id (engine/clicks.py): a user id
    of 128 emoji (512 octets, as an event may name) and an item id of 128 'é' made a link of
    1,141 octets, which no line holds: the personalized render and its fallback both failed
    (LineTooLong), and the user got the empty block, logged as a template error."""
    item = "é" * MAX_ID
    catalog = {item: product("p", title="Candle")}
    catalog[item] = dataclasses.replace(catalog[item], item_id=item)
    renderer = Renderer()
    renderer.links = link_maker(b"k" * 32, "https://shop.example.com/persona", lambda: 0)
    for user, tracked in (("u", True), ("😀" * MAX_ID, False)):
        inp = dataclasses.replace(block_input("html"), user_id=user, popular=list(catalog))
        block = assemble(inp, catalog.get, BlockPolicy(), renderer)
        assert block.items == (item,) and renderer.errors == 0 and lines_within(block.content)
        assert ("/persona/c/" in block.content) is tracked
        assert tracked or 'href="https://shop.example.com/' in block.content


def test_a_cart_link_too_long_for_a_line_is_the_shops_link_not_a_template_error() -> None:
    """PERSONA_CART_URL takes the user id percent-encoded: 128 emoji made it 1,575 octets, the
    cart reminder failed (LineTooLong) and the user got the best-sellers, as a template error."""
    catalog = {f"P{n}": product(f"P{n}") for n in range(3)}
    renderer = Renderer()
    renderer.cart_url = "https://shop.example.com/cart?u={user_id}"
    for user, to_cart in (("u", True), ("😀" * MAX_ID, False)):
        inp = dataclasses.replace(
            block_input("html"),
            block="cart_reminder",
            user_id=user,
            popular=list(catalog),
            profile=Profile(user, cart={"P0": 1, "P1": 2}),
        )
        block = assemble(inp, catalog.get, BlockPolicy(), renderer)
        assert block.items == ("P0", "P1") and not block.fallback and renderer.errors == 0
        assert ("/cart?u=" in block.content) is to_cart and lines_within(block.content)


@pytest.mark.parametrize("unit", ["<a '>'\"", '<a ">"\'', "<a '>' \""])
def test_tags_whose_quotes_never_close_cost_linear_time(unit: str) -> None:
    """Each '<' of `<a '>'"<a '>'"...` started a tag whose quotes pair up to the end of the
    document without closing it: every one was scanned to the end, quadratic (80 KB: 8 s, a
    1 MiB block: about 20 minutes of a reader's CPU). Now each place is read once."""
    html = unit * (120_000 // len(unit))  # quadratic: ~20 s; linear: ~0.1 s
    started = time.perf_counter()
    try:
        wrapped = wrap_html(html)
    except LineTooLong:
        wrapped = None
    took = time.perf_counter() - started
    # a guard against the quadratic form (a margin of ~100x either way), not a speed target
    assert took < 10.0, f"{took:.1f} s for {len(html)} characters"
    if wrapped is not None:
        assert lines_within(wrapped)
