"""PERSONA_UTM (engine/utm.py): checked, filled per block, added after a product URL's own query,
never overriding a parameter the shop set; e-mail blocks carry it, ads blocks do not."""

from __future__ import annotations

import pytest

from engine.blocks import ALL_BLOCKS, BlockInput, BlockPolicy, Renderer, assemble
from engine.catalog import Product
from engine.content_experiments import MAX_VARIANT, VARIANT_NAME
from engine.email_lines import EMAIL_UTM_MAX, SMTP_LINE_MAX, octets
from engine.settings import SettingsError, load_settings
from engine.utm import LONGEST_BLOCK, parse_utm, with_utm, written_octets

UTM = "utm_source=persona&utm_medium=email&utm_campaign={block}&utm_content={variant}"


def test_parameters_are_added_filled_and_never_override_the_shops() -> None:
    utm = parse_utm("?" + UTM)
    assert with_utm("https://s.example/p/1", utm, "winback", "b") == (
        "https://s.example/p/1?utm_source=persona&utm_medium=email&utm_campaign=winback"
        "&utm_content=b"
    )
    kept = with_utm("https://s.example/p/1?utm_source=shop&x=1#top", utm, "a b", "v")
    assert kept == (
        "https://s.example/p/1?utm_source=shop&x=1&utm_medium=email&utm_campaign=a%20b"
        "&utm_content=v#top"
    )
    assert with_utm("https://s.example/p/1", "", "b", "v") == "https://s.example/p/1"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("utm_source", "is not key=value"),
        ("a=1&&b=2", "is not key=value"),
        ("a=<script>", "is not key=value"),
        ('a="x"', "is not key=value"),
        ("a={user_id}", "the only placeholders"),
        ("a={block", "the only placeholders"),
        ("a=" + "x" * 600, "up to 607 octets"),
        ("a=" + "x" * 128 + "&b=" + "y" * 14, "at most 150 fit"),
    ],
)
def test_bad_parameters_are_refused(text: str, says: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_utm(text)
    assert says in str(err.value)


def test_email_blocks_carry_the_parameters_and_ads_do_not() -> None:
    product = Product(
        "P1", "Tea", "https://s.example/p/P1", "https://s.example/i/P1.jpg", 2.0, "GBP"
    )
    renderer = Renderer()
    renderer.utm = parse_utm(UTM)
    for fmt, carried in (("html", True), ("json", False)):
        inp = BlockInput(
            block="recommendations", fmt=fmt, user_id="u", profile=None, churn=None,
            recommendations=[], models={}, popular=["P1"],
        )  # fmt: skip
        out = assemble(inp, {"P1": product}.get, BlockPolicy(), renderer).content
        assert ("utm_campaign=recommendations" in out) is carried, fmt


# -- every link within SMTP's line -----------------------------------------------------------------

LONGEST_LINK = "https://a.example/" + "a" * 782  # 800 octets: the longest link fits_email passes
AT_SETTING_MAX = [
    "utm_campaign=" + "x" * 128 + "&utm_source=" + "y" * 128 + "&utm_medium=" + "z" * 128
    + "&utm_term=" + "w" * 81,  # 512 characters
    "&".join(["a={variant}"] * 42),  # 503 characters: each {variant} up to 32 characters
    "&".join(["k=v"] * 128)[:511],  # 511 characters: each '&' is written '&amp;'
]  # fmt: skip


def _email_block(utm: str) -> tuple[str, tuple[str, ...], int]:
    """An e-mail block (the best-sellers: no profile) of the longest link, with `utm`."""
    product = Product("L", "Lamp", LONGEST_LINK, "https://a.example/i/L.jpg", 2.0, "GBP")
    renderer = Renderer()
    renderer.utm = utm
    inp = BlockInput(
        block="recommendations", fmt="html", user_id="u", profile=None, churn=None,
        recommendations=[], models={}, popular=["L"], variant="v" * 32,
    )  # fmt: skip
    block = assemble(inp, {"L": product}.get, BlockPolicy(), renderer)
    return block.content, block.items, renderer.errors


@pytest.mark.parametrize("text", AT_SETTING_MAX)
def test_no_campaign_setting_accepted_can_push_a_link_past_a_line(text: str) -> None:
    """PERSONA_UTM took 512 characters, added to product links of up to 800 octets: the link no
    longer fit SMTP's 998-octet line, and the block failed to its fallback (a template error).
    A setting is either refused, naming the bound, or every link it makes fits."""
    try:
        utm = parse_utm(text)
    except ValueError as exc:
        assert "998" in str(exc) and "octets" in str(exc)
        return
    content, items, errors = _email_block(utm)
    assert (items, errors) == (("L",), 0)  # not the empty block of a failed fallback
    assert max(octets(line) for line in content.splitlines()) <= SMTP_LINE_MAX


def test_the_longest_setting_accepted_keeps_the_longest_link_within_a_line() -> None:
    """The bound is exact: the setting that takes EMAIL_UTM_MAX octets is taken and its links
    fit, with every placeholder filled at its longest; one more character is refused."""
    assert max(map(len, ALL_BLOCKS)) <= LONGEST_BLOCK
    assert VARIANT_NAME.fullmatch("v" * MAX_VARIANT) and not VARIANT_NAME.fullmatch("v" * 33)
    text = "c={block}&v={variant}&x="
    text += "x" * (EMAIL_UTM_MAX - written_octets(text))
    utm = parse_utm(text)
    assert written_octets(utm) == EMAIL_UTM_MAX
    with pytest.raises(ValueError, match="at most 150 fit"):
        parse_utm(text + "x")
    content, items, errors = _email_block(utm)
    assert (items, errors) == (("L",), 0)  # not the empty block of a failed fallback
    assert "v" * 32 in content  # the placeholder filled
    assert max(octets(line) for line in content.splitlines()) <= SMTP_LINE_MAX


def test_a_setting_too_long_for_a_link_stops_the_start_naming_the_bound() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings({}, env={"PERSONA_UTM": "utm_campaign=" + "x" * 128 + "&utm_source=y"})
    assert "PERSONA_UTM" in str(err.value) and "at most 150 fit" in str(err.value)
    example = "utm_source=persona&utm_medium=email&utm_campaign={block}&utm_content={variant}"
    assert load_settings({}, env={"PERSONA_UTM": example}).utm == example
