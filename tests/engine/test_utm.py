"""PERSONA_UTM (engine/utm.py): checked, filled per block, added after a product URL's own query,
never overriding a parameter the shop set; e-mail blocks carry it, ads blocks do not."""

from __future__ import annotations

import pytest

from engine.blocks import BlockInput, BlockPolicy, Renderer, assemble
from engine.catalog import Product
from engine.utm import parse_utm, with_utm

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
        ("a=" + "x" * 600, "at most 512"),
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
