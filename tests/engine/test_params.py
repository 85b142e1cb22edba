"""engine.params: block parameters parsed from a query string or a JSON body, validated, matched
against products, and keyed for the caches."""

from __future__ import annotations

from typing import Any

import pytest

from engine.catalog import Product
from engine.params import (
    MAX_EXCLUDE,
    NO_PARAMS,
    BlockParams,
    InvalidParam,
    build,
    canonical_locale,
    from_body,
    from_query,
)


def product(item: str, category: str = "", brand: str = "", price: float = 10.0) -> Product:
    return Product(item, item, f"https://s.example/{item}", f"https://s.example/{item}.jpg",
                   price, "EUR", category=category, brand=brand)  # fmt: skip


def test_no_parameters_is_the_shared_empty_set() -> None:
    assert from_query([]) is NO_PARAMS
    assert from_query([("format", "json")]) is NO_PARAMS
    assert from_body({"block": "x"}, ("block",)) is NO_PARAMS


def test_every_parameter_from_a_query_string() -> None:
    params = from_query(
        [
            ("n", "3"),
            ("category", "Home"),
            ("brand", "Acme"),
            ("min_price", "1.5"),
            ("max_price", "20"),
            ("exclude", "a,b"),
            ("context_item", "c"),
            ("locale", "en-gb"),
            ("format", "json"),
        ]
    )
    assert params == BlockParams(3, "Home", "Acme", 1.5, 20.0, frozenset({"a", "b"}), "c", "en-GB")


def test_every_parameter_from_a_json_body() -> None:
    body = {"n": 4, "max_price": 9.99, "exclude": ["a"], "locale": "de", "block": "x"}
    params = from_body(body, ("block",))
    assert (params.n, params.max_price, params.exclude, params.locale) == (
        4, 9.99, frozenset({"a"}), "de",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("values", "name"),
    [
        ({"n": "0"}, "n"),
        ({"n": "51"}, "n"),
        ({"n": "three"}, "n"),
        ({"n": 2.5}, "n"),
        ({"n": True}, "n"),
        ({"min_price": "-1"}, "min_price"),
        ({"max_price": "1e999"}, "max_price"),
        ({"max_price": float("nan")}, "max_price"),
        ({"min_price": "5", "max_price": "4"}, "max_price"),
        ({"category": ""}, "category"),
        ({"brand": "x" * 501}, "brand"),
        ({"brand": "a\x00b"}, "brand"),
        ({"category": 3}, "category"),
        ({"exclude": ""}, "exclude"),
        ({"exclude": "a,,b"}, "exclude"),
        ({"exclude": []}, "exclude"),
        ({"exclude": [1]}, "exclude"),
        ({"exclude": ",".join(f"i{n}" for n in range(MAX_EXCLUDE + 1))}, "exclude"),
        ({"context_item": "x" * 129}, "context_item"),
        ({"context_item": "a\nb"}, "context_item"),
        ({"locale": "english please"}, "locale"),
        ({"locale": "en_GB"}, "locale"),
        ({"locale": "e"}, "locale"),
        ({"locale": "en-" + "x" * 70}, "locale"),
    ],
)
def test_invalid_values_name_their_parameter(values: dict[str, Any], name: str) -> None:
    with pytest.raises(InvalidParam) as caught:
        build(values)
    assert caught.value.name == name


def test_unknown_and_repeated_parameters_are_refused() -> None:
    with pytest.raises(InvalidParam) as caught:
        from_query([("sort", "price")])
    assert caught.value.name == "sort" and "unknown" in caught.value.reason
    with pytest.raises(InvalidParam) as caught:
        from_query([("n", "2"), ("n", "3")])
    assert caught.value.name == "n" and "more than once" in caught.value.reason
    with pytest.raises(InvalidParam) as caught:
        from_body({"user_ids": [], "colour": "red"}, ("user_ids",))
    assert caught.value.name == "colour"


@pytest.mark.parametrize(
    ("tag", "canonical"),
    [
        ("en", "en"),
        ("EN-gb", "en-GB"),
        ("zh-hant-tw", "zh-Hant-TW"),
        ("es-419", "es-419"),
        ("de-CH-1996", "de-CH-1996"),
        ("sl-rozaj-biske", "sl-rozaj-biske"),
        ("en-US-u-ca-gregory", "en-US-u-ca-gregory"),
        ("x-private", "x-private"),
    ],
)
def test_bcp47_tags_are_accepted_in_canonical_case(tag: str, canonical: str) -> None:
    assert build({"locale": tag}).locale == canonical == canonical_locale(tag)


def test_filters_match_category_brand_price_and_exclusions() -> None:
    params = build({"category": "home", "brand": "ACME", "min_price": 5, "max_price": 10})
    assert params.filtered
    assert params.matches(product("a", "Home", "Acme", 5.0))
    assert params.matches(product("b", "Home > Kitchen", "acme", 10.0))  # a sub-category
    assert not params.matches(product("c", "Homeware", "Acme", 7.0))
    assert not params.matches(product("d", "Home", "Other", 7.0))
    assert not params.matches(product("e", "Home", "Acme", 4.99))
    assert not params.matches(product("f", "Home", "Acme", 10.01))
    excluded = build({"exclude": "a"})
    assert not excluded.filtered
    assert not excluded.matches(product("a")) and excluded.matches(product("b"))


def test_keys_are_equal_for_equal_sets_and_differ_otherwise() -> None:
    one = build({"exclude": "a,b", "category": "Home"})
    same = build({"category": "home", "exclude": ["b", "a"]})
    assert one.key == same.key
    keys = {
        build(values).key
        for values in (
            {"n": "3"},
            {"n": "4"},
            {"category": "a&brand=b"},
            {"category": "a", "brand": "b"},
            {"locale": "en"},
            {"locale": "fr"},
            {"context_item": "x"},
            {"exclude": "x"},
        )
    }
    assert len(keys) == 8 and NO_PARAMS.key == ""


def test_an_unknown_name_is_answered_with_the_one_meant_and_the_routes_own_fields() -> None:
    """`deadline` in a batch body, `fromat` in a block's query: the message listed only the
    block parameters, not the route's own fields the sender had misspelled (`deadline_ms`,
    `format`), so it read as if they did not exist."""
    own = ("block", "format", "user_ids", "deadline_ms")
    with pytest.raises(InvalidParam) as caught:
        from_body({"block": "recommendations", "deadline": 200}, own)
    assert caught.value.name == "deadline"
    assert "did you mean 'deadline_ms'?" in caught.value.reason
    assert "block, format, user_ids, deadline_ms" in caught.value.reason
    assert "n, category, brand" in caught.value.reason
    with pytest.raises(InvalidParam) as caught:
        from_query([("fromat", "json")])
    assert "did you mean 'format'?" in caught.value.reason
    with pytest.raises(InvalidParam) as caught:
        from_query([("catgory", "Home")])
    assert "did you mean 'category'?" in caught.value.reason
    with pytest.raises(InvalidParam) as caught:
        from_body({"colour": "red"}, own)
    assert "did you mean" not in caught.value.reason  # nothing close: the lists only
    assert "block, format, user_ids, deadline_ms" in caught.value.reason
