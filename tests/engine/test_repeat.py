"""PERSONA_REPEAT_ITEMS (engine/repeat.py): entries parsed or refused with the entry named, and
each item's replenishment window by id or by category and sub-category."""

from __future__ import annotations

import pytest

from engine.catalog import Product
from engine.repeat import DAY_MS, MAX_DAYS, NO_REPEATS, parse_repeat


def product(item_id: str, category: str) -> Product:
    url = f"https://shop.example.com/{item_id}"
    return Product(item_id, item_id, url, url + ".jpg", 1.0, "EUR", category=category)


CATALOG = {
    "beans": product("beans", "Pantry > Coffee > Beans"),
    "mug": product("mug", "Kitchen"),
    "kibble": product("kibble", "Pets"),
}


def test_windows_by_item_then_category() -> None:
    policy = parse_repeat(" category:pantry > COFFEE@30 ; item:kibble@21;item:beans@7 ;")
    window = policy.window(CATALOG.get)
    assert window is not None
    assert window("beans") == 7 * DAY_MS  # the item entry wins
    assert window("kibble") == 21 * DAY_MS
    assert window("mug") is None and window("unknown") is None
    other = parse_repeat("category:Pantry@30").window(CATALOG.get)
    assert other is not None and other("beans") == 30 * DAY_MS  # a sub-category
    assert parse_repeat("category:Pan@30").window(CATALOG.get)("beans") is None  # type: ignore[misc]


def test_no_entries_cost_nothing() -> None:
    assert parse_repeat("") == NO_REPEATS and NO_REPEATS.window(CATALOG.get) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("coffee@30", "write item:<item_id>@<days>"),
        ("sku:A@3", "write item:"),
        ("item:A", "write item:"),
        ("item:@3", "1..256 characters"),
        ("item:A@0", f"1..{MAX_DAYS}"),
        ("item:A@-1", f"1..{MAX_DAYS}"),
        ("item:A@1.5", f"1..{MAX_DAYS}"),
        (f"item:A@{MAX_DAYS + 1}", f"1..{MAX_DAYS}"),
        ("item:" + "x" * 257 + "@3", "1..256"),
        (";".join(f"item:{n}@1" for n in range(1001)), "at most 1000"),
    ],
)
def test_bad_entries_are_refused_with_the_entry(text: str, says: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_repeat(text)
    assert says in str(err.value)
