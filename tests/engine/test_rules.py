"""Merchandising rules (engine/rules.py): each action, the order they apply in, time windows and
blocks, the promise that rules never bring back an out-of-stock or forbidden item, and hostile
documents refused with the place of the problem."""

from __future__ import annotations

from typing import Any

import pytest

from engine.catalog import Product
from engine.rules import (
    MAX_RULES,
    Applied,
    InvalidRules,
    Rules,
    apply_rules,
    parse_rules,
    to_document,
)

NOW = 1_790_000_000_000


def item(i: str, **fields: Any) -> Product:
    base: dict[str, Any] = {
        "title": f"Item {i}",
        "url": f"https://shop.example.com/p/{i}",
        "image_url": f"https://shop.example.com/i/{i}.jpg",
        "price": 10.0,
        "currency": "GBP",
        "category": "Home > Candles",
        "brand": "Acme",
    }
    return Product(i, **(base | fields))


CATALOG = {
    "a": item("a"),
    "b": item("b", brand="Other", price=50.0),
    "c": item("c", category="Garden"),
    "d": item("d", price=5.0),
    "e": item("e"),
    "gone": item("gone", availability="out_of_stock"),
    "pin": item("pin", category="Garden"),
}
CANDIDATES = ["a", "b", "c", "d", "e"]


def run(
    rules: list[dict[str, Any]], k: int = 4, candidates: list[str] = CANDIDATES, **kw: Any
) -> Applied:
    parsed = parse_rules({"rules": rules})
    return apply_rules(candidates, CATALOG.get, parsed.live("recommendations", NOW), k, **kw)


def test_no_rules_keeps_the_recommenders_order() -> None:
    applied = run([])
    assert applied.items == ["a", "b", "c", "d"] and applied.fired == []


def test_exclude_never_shows_matching_items() -> None:
    applied = run([{"id": "x", "action": "exclude", "match": {"brand": "other"}}])
    assert applied.items == ["a", "c", "d", "e"] and applied.fired == ["x"]


def test_filter_shows_only_matching_items_and_sub_categories() -> None:
    applied = run([{"id": "f", "action": "filter", "match": {"category": "Home"}}])
    assert applied.items == ["a", "b", "d", "e"] and applied.fired == ["f"]
    both = run(
        [
            {"id": "f", "action": "filter", "match": {"category": "home"}},
            {"id": "g", "action": "filter", "match": {"max_price": 10}},
        ]
    )
    assert both.items == ["a", "d", "e"]


def test_boost_and_bury_move_matching_items() -> None:
    boosted = run([{"id": "up", "action": "boost", "match": {"item_ids": ["d"]}, "weight": 5}])
    assert boosted.items == ["d", "a", "b", "c"] and boosted.fired == ["up"]
    tie = run([{"id": "up", "action": "boost", "match": {"item_ids": ["d"]}, "weight": 4}])
    assert tie.items == ["a", "d", "b", "c"]  # 1/4 * 4 ties with the first: the order holds
    buried = run([{"id": "down", "action": "bury", "match": {"item_ids": ["a"]}, "weight": 0.1}])
    assert buried.items == ["b", "c", "d", "e"] and buried.fired == ["down"]


def test_a_weight_too_small_to_move_anything_does_not_fire() -> None:
    applied = run([{"id": "up", "action": "boost", "match": {"item_ids": ["a"]}}])
    assert applied.items == ["a", "b", "c", "d"] and applied.fired == []


def test_pin_places_an_item_even_from_outside_the_candidates() -> None:
    applied = run([{"id": "p", "action": "pin", "match": {"item_ids": ["pin"]}, "position": 2}])
    assert applied.items == ["a", "pin", "b", "c"] and applied.fired == ["p"]
    moved = run([{"id": "p", "action": "pin", "match": {"item_ids": ["e"]}, "position": 1}])
    assert moved.items == ["e", "a", "b", "c"]
    last = run([{"id": "p", "action": "pin", "match": {"brand": "other"}, "position": 50}])
    assert last.items == ["a", "c", "d", "b"]


def test_rules_never_bring_back_an_out_of_stock_or_forbidden_item() -> None:
    gone = run([{"id": "p", "action": "pin", "match": {"item_ids": ["gone"]}, "position": 1}])
    assert "gone" not in gone.items and gone.fired == []
    with_gone = run(
        [{"id": "up", "action": "boost", "match": {"availability": "out_of_stock"}}],
        candidates=["gone", *CANDIDATES],
    )
    assert "gone" not in with_gone.items
    forbidden = run(
        [{"id": "p", "action": "pin", "match": {"item_ids": ["pin"]}, "position": 1}],
        may_show=lambda i: i != "pin",  # e.g. the user bought it, or the request excludes it
    )
    assert "pin" not in forbidden.items


def test_the_order_exclude_filter_weigh_pin() -> None:
    applied = run(
        [
            {"id": "p", "action": "pin", "match": {"item_ids": ["b"]}, "position": 1},
            {"id": "x", "action": "exclude", "match": {"item_ids": ["b"]}},
            {"id": "f", "action": "filter", "match": {"min_price": 6}},
        ]
    )
    assert applied.items == ["a", "c", "e"] and applied.fired == ["x", "f"]


def test_time_windows_and_blocks() -> None:
    doc = parse_rules(
        {
            "rules": [
                {
                    "id": "sale",
                    "action": "exclude",
                    "match": {"item_ids": ["a"]},
                    "starts": "2026-09-21T00:00:00Z",
                    "ends": NOW + 1,
                    "blocks": ["winback"],
                }
            ]
        }
    )
    assert doc.live("winback", NOW) and not doc.live("recommendations", NOW)
    assert not doc.live("winback", NOW + 1)
    assert not doc.live("winback", 1_758_412_800_000 - 1)  # before 2026-09-21


def test_the_document_round_trips() -> None:
    rules = [
        {"id": "p", "action": "pin", "match": {"item_ids": ["b", "a"]}, "position": 3},
        {"id": "u", "action": "boost", "match": {"brand": "Acme", "min_price": 1}, "weight": 3},
        {
            "id": "x",
            "action": "exclude",
            "match": {"availability": "preorder"},
            "blocks": ["winback"],
        },
    ]
    doc = to_document(parse_rules({"version": "7", "rules": rules}))
    assert doc["version"] == "7"
    assert doc["rules"][0] == {
        "id": "p",
        "action": "pin",
        "match": {"item_ids": ["a", "b"]},
        "position": 3,
    }
    assert doc["rules"][1]["match"] == {"brand": "acme", "min_price": 1.0}
    assert parse_rules(doc) == parse_rules(doc)
    assert to_document(parse_rules(doc)) == doc


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ([], "must be an object"),
        ({"rules": {}}, "rules: must be a list"),
        ({"rules": [], "extra": 1}, "unknown field 'extra'"),
        ({"rules": [{"id": "a", "action": "nuke", "match": {"brand": "x"}}]}, "rules[0].action"),
        ({"rules": [{"id": "", "action": "exclude", "match": {"brand": "x"}}]}, "rules[0].id"),
        ({"rules": [{"id": "a\n", "action": "exclude", "match": {"brand": "x"}}]}, "rules[0].id"),
        ({"rules": [{"id": "a", "action": "exclude", "match": {}}]}, "rules[0].match"),
        ({"rules": [{"id": "a", "action": "exclude", "match": {"sql": 1}}]}, "unknown field 'sql'"),
        ({"rules": [{"id": "a", "action": "exclude", "match": {"min_price": "1"}}]}, "min_price"),
        (
            {"rules": [{"id": "a", "action": "exclude", "match": {"min_price": float("nan")}}]},
            "min_price",
        ),
        (
            {
                "rules": [
                    {"id": "a", "action": "exclude", "match": {"min_price": 5, "max_price": 1}}
                ]
            },
            "max_price",
        ),
        ({"rules": [{"id": "a", "action": "exclude", "match": {"item_ids": []}}]}, "item_ids"),
        ({"rules": [{"id": "a", "action": "exclude", "match": {"item_ids": [1]}}]}, "item_ids[0]"),
        (
            {"rules": [{"id": "a", "action": "exclude", "match": {"availability": "maybe"}}]},
            "availability",
        ),
        ({"rules": [{"id": "a", "action": "pin", "match": {"brand": "x"}}]}, "position 1..50"),
        (
            {"rules": [{"id": "a", "action": "pin", "match": {"brand": "x"}, "position": 51}]},
            "position",
        ),
        (
            {"rules": [{"id": "a", "action": "boost", "match": {"brand": "x"}, "weight": 0.5}]},
            "more than 1",
        ),
        (
            {"rules": [{"id": "a", "action": "bury", "match": {"brand": "x"}, "weight": 2}]},
            "less than 1",
        ),
        (
            {"rules": [{"id": "a", "action": "boost", "match": {"brand": "x"}, "weight": 1e9}]},
            "at most 100",
        ),
        (
            {"rules": [{"id": "a", "action": "exclude", "match": {"brand": "x"}, "weight": 2}]},
            "only boost",
        ),
        (
            {"rules": [{"id": "a", "action": "exclude", "match": {"brand": "x"}, "blocks": ["x"]}]},
            "blocks[0]",
        ),
        (
            {
                "rules": [
                    {"id": "a", "action": "exclude", "match": {"brand": "x"}, "starts": "soon"}
                ]
            },
            "starts",
        ),
        (
            {
                "rules": [
                    {
                        "id": "a",
                        "action": "exclude",
                        "match": {"brand": "x"},
                        "starts": NOW,
                        "ends": NOW,
                    }
                ]
            },
            "after starts",
        ),
        ({"rules": [{"id": "a", "action": "exclude", "match": {"brand": "x"}}] * 2}, "used twice"),
        (
            {
                "rules": [
                    {"id": f"r{n}", "action": "exclude", "match": {"brand": "x"}}
                    for n in range(MAX_RULES + 1)
                ]
            },
            "at most",
        ),
    ],
)
def test_hostile_documents_are_refused_with_the_place(document: Any, says: str) -> None:
    with pytest.raises(InvalidRules) as err:
        parse_rules(document)
    assert says in str(err.value)


def test_no_rules_is_a_document_too() -> None:
    assert parse_rules({"rules": []}) == Rules("0")
