"""Content similarity of catalog products (engine/similarity.py, issue 17 item 4)."""

from __future__ import annotations

from engine.catalog import Product
from engine.similarity import (
    MAX_SCAN,
    MAX_TOKEN_CHARS,
    MAX_TOKENS,
    W_BRAND,
    W_CATEGORY,
    W_PRICE,
    ContentIndex,
    price_band,
    tokenize,
)


def product(
    item_id: str,
    title: str,
    category: str = "",
    brand: str = "",
    price: float = 10.0,
    availability: str = "in_stock",
    currency: str = "EUR",
) -> Product:
    return Product(
        item_id=item_id,
        title=title,
        url=f"https://shop.example/{item_id}",
        image_url=f"https://shop.example/{item_id}.jpg",
        price=price,
        currency=currency,
        availability=availability,
        category=category,
        brand=brand,
    )


def index_of(*products: Product) -> ContentIndex:
    index = ContentIndex()
    for p in products:
        assert index.put(p)
    return index


def test_tokenize_folds_case_plurals_stop_words_and_numbers() -> None:
    assert tokenize("Set of 3 RED Hearts, with Glass-Jars_2!") == (
        "set",
        "red",
        "heart",
        "glass",
        "jar",
    )
    assert tokenize("Crème brûlée Tassen") == ("crème", "brûlée", "tassen")
    assert tokenize("glass dress bus") == ("glass", "dress", "bus")  # no "s" cut from these
    assert tokenize("") == ()


def test_tokenize_is_bounded() -> None:
    many = " ".join(f"word{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(100))
    assert len(tokenize(many)) == MAX_TOKENS
    assert tokenize("x" * 1000) == ("x" * MAX_TOKEN_CHARS,)


def test_price_bands_grow_by_a_ratio() -> None:
    assert price_band(0.0) == 0
    assert price_band(12.0) == price_band(13.0)
    assert all(price_band(1.45 * p) - price_band(p) in (0, 1) for p in (1.0, 7.0, 50.0, 3e5))
    assert price_band(10.0) < price_band(100.0) < price_band(1000.0)
    assert price_band(1e9) - price_band(1e8) in (5, 6)  # log(10) / log(1.5) = 5.7 bands a decade


def test_the_most_alike_comes_first_and_never_itself() -> None:
    index = index_of(
        product("mug", "White ceramic coffee mug", "Kitchen > Mugs", "Acme", 8.0),
        product("mug2", "Blue ceramic coffee mug", "Kitchen > Mugs", "Acme", 9.0),
        product("mug3", "Ceramic tea mug", "Kitchen > Mugs", "Other", 8.5),
        product("plate", "White ceramic plate", "Kitchen > Plates", "Acme", 8.0),
        product("sock", "Warm wool socks", "Clothing", "Acme", 8.0),
        product("car", "Toy car", "Toys", "Nobody", 8.0),
    )
    found = index.similar("mug", 10)
    ids = [i for i, _ in found]
    assert ids[:3] == ["mug2", "mug3", "plate"]
    assert "mug" not in ids
    assert "car" not in ids  # the same price band alone makes nothing alike
    assert ids[-1] == "sock"  # the brand alone
    assert found[-1][1] == round(W_BRAND + W_PRICE, 6)
    assert all(0.0 < s <= 1.0 for _, s in found)
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    assert index.similar("mug", 2) == found[:2]
    assert index.similar("nope", 5) == []


def test_rare_title_words_weigh_more_than_common_ones() -> None:
    index = index_of(
        product("q", "vintage lantern red"),
        product("rare", "lantern blue"),
        product("common", "red blue"),
        *(product(f"f{n}", f"red filler{n}") for n in range(20)),
    )
    assert index.similarity("q", "rare") > index.similarity("q", "common") > 0.0


def test_category_brand_and_price_count_as_the_module_says() -> None:
    index = index_of(
        product("a", "alpha", "Garden", "Acme", 12.0),
        product("b", "beta", "garden ", "ACME", 12.5),
        product("c", "gamma", "Garden", "", 18.0),
        product("d", "delta", "Garden", "", 12.0, currency="USD"),
    )
    assert index.similarity("a", "b") == round(W_CATEGORY + W_BRAND + W_PRICE, 6)
    assert index.similarity("a", "c") == round(W_CATEGORY + W_PRICE / 2, 6)  # next band
    assert index.similarity("a", "d") == W_CATEGORY  # another currency: no price closeness


def test_out_of_stock_items_are_left_out_unless_asked() -> None:
    index = index_of(
        product("a", "garden hose", "Garden"),
        product("b", "garden hose long", "Garden", availability="out_of_stock"),
        product("c", "garden hose reel", "Garden", availability="preorder"),
    )
    assert [i for i, _ in index.similar("a", 5)] == ["c"]
    assert {i for i, _ in index.similar("a", 5, available_only=False)} == {"b", "c"}
    assert index.similar("a", 5, accept=lambda i: i != "c") == []
    assert index.similar("a", 5, skip=frozenset({"c"})) == []
    assert index.similar("a", 5) == [("c", index.similarity("a", "c"))]  # memo keys apart


def test_updates_move_an_item_and_deletions_remove_it() -> None:
    index = index_of(
        product("a", "garden hose", "Garden"),
        product("b", "kitchen knife", "Kitchen"),
        product("c", "kitchen spoon", "Kitchen"),
    )
    generation = index.generation
    assert [i for i, _ in index.similar("a", 5)] == []
    index.put(product("b", "garden hose", "Garden"))  # b changed: now a garden product
    assert index.generation > generation
    assert [i for i, _ in index.similar("a", 5)] == ["b"]
    assert [i for i, _ in index.similar("c", 5)] == []
    index.put(product("b", "garden hose", "Garden", availability="out_of_stock"))
    assert index.similar("a", 5) == []
    index.put(product("b", "garden hose", "Garden"))
    generation = index.generation
    index.put(product("b", "garden hose", "Garden"))  # the same again: no change
    assert index.generation == generation
    assert index.remove("b") and not index.remove("b")
    assert "b" not in index and len(index) == 2
    assert index.similar("a", 5) == [] and index.similar("b", 5) == []
    assert index.get("b") is None


def test_a_rebuilt_index_answers_as_the_updated_one() -> None:
    products = [
        product(f"p{n}", f"item {n % 7} word{n % 3}", f"cat{n % 4}", price=n) for n in range(60)
    ]
    updated = index_of(*products)
    for p in products[::5]:
        updated.remove(p.item_id)
    rebuilt = index_of(*(p for n, p in enumerate(products) if n % 5))
    for p in products[1::5]:
        assert updated.similar(p.item_id, 10) == rebuilt.similar(p.item_id, 10)


def test_a_full_index_counts_what_it_drops() -> None:
    index = ContentIndex(max_items=2)
    assert index.put(product("a", "one")) and index.put(product("b", "two"))
    assert not index.put(product("c", "three"))
    assert index.dropped == 1 and "c" not in index
    assert index.put(product("a", "one changed"))  # an indexed item still updates
    assert index.remove("a") and index.put(product("c", "three"))


def test_a_new_product_is_found_in_a_long_list() -> None:
    """Long inverted lists are read newest first, so the newest products of a big category
    are candidates even when the list is longer than a query reads."""
    old = [product(f"old{n}", f"thing{n}", "Big", price=10.0) for n in range(MAX_SCAN + 500)]
    index = index_of(*old, product("new", "novel", "Big", price=10.0))
    assert "new" in {i for i, _ in index.similar("old0", MAX_SCAN + 600)}
