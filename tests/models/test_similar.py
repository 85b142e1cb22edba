"""Similar items and recommendations that reach products the model has not seen
(models/similar.py, issue 17 item 4), with a real trained recommender and content index."""

from __future__ import annotations

import pytest

from engine.catalog import Product
from engine.similarity import ContentIndex
from models.recs import Recommender, fit_recommender
from models.similar import FRESH_AFTER, FRESH_SLOTS, blend, similar_items
from tests.models.synthetic import T0, basket_events


def product(
    item_id: str, title: str, category: str, brand: str, stock: str = "in_stock"
) -> Product:
    return Product(
        item_id=item_id,
        title=title,
        url=f"https://shop.example/{item_id}",
        image_url=f"https://shop.example/{item_id}.jpg",
        price=20.0,
        currency="EUR",
        availability=stock,
        category=category,
        brand=brand,
    )


CATALOG = [
    product("a", "garden hose green", "Garden", "Acme"),
    product("a2", "hose reel", "Garden", "Other"),
    product("b", "kitchen knife", "Kitchen", "Chef"),
    product("b2", "cutting board", "Kitchen", "Chef"),
    product("c", "wool socks", "Clothing", "Knit"),
    product("c2", "wool hat", "Clothing", "Knit"),
    product("pop", "gift card", "Gifts", "Shop"),
    product("pop2", "gift wrap", "Gifts", "Shop"),
    product("pop3", "greeting card", "Gifts", "Shop"),
    # new in the catalog since the training:
    product("hose-new", "garden hose blue", "Garden", "Acme"),
    product("hose-gone", "garden hose yellow", "Garden", "Acme", "out_of_stock"),
    product("sock-new", "wool socks striped", "Clothing", "Knit"),
]


@pytest.fixture(scope="module")
def recs() -> Recommender:
    return fit_recommender(basket_events(), k=5)


@pytest.fixture
def content() -> ContentIndex:
    index = ContentIndex()
    for p in CATALOG:
        index.put(p)
    return index


def in_stock(item_id: str) -> bool:
    return any(p.item_id == item_id and p.purchasable for p in CATALOG)


def test_the_model_does_not_know_the_new_products(recs: Recommender) -> None:
    assert recs.neighbours_of("hose-new") == [] and recs.neighbours_of("a")


def test_a_known_item_keeps_its_co_occurrence_neighbours_first_and_gains_a_new_one(
    recs: Recommender, content: ContentIndex
) -> None:
    model = [i for i, _ in recs.neighbours_of("a")]
    out = similar_items("a", 6, recs, content, in_stock)
    assert out[:FRESH_AFTER] == model[:FRESH_AFTER]
    assert out.index("hose-new") == FRESH_AFTER  # same category, brand, price, most of the title
    assert "hose-gone" not in out and "a" not in out  # out of stock; itself
    assert "sock-new" not in out  # a new product, but not like a garden hose
    assert len(out) == len(set(out)) == len(model) + 1  # all there is: nothing else is alike


def test_a_new_item_gets_its_content_neighbours(recs: Recommender, content: ContentIndex) -> None:
    out = similar_items("hose-new", 3, recs, content, in_stock)
    assert out[0] == "a"  # the most alike: garden hose of the same brand
    assert "hose-new" not in out and "hose-gone" not in out
    assert set(out) <= {"a", "a2"}
    assert similar_items("hose-new", 3, recs, None, in_stock) == []  # no index: nothing known
    assert similar_items("hose-new", 3, recs, content, in_stock, exclude={"a"})[0] == "a2"
    assert similar_items("nowhere", 3, recs, content, in_stock) == []


def test_a_user_who_saw_only_a_new_product_gets_its_neighbours(
    recs: Recommender, content: ContentIndex
) -> None:
    recent = [("hose-new", T0)]
    ranked = recs.recommend(recent, {"hose-new"}, 5, in_stock)
    assert "a" not in ranked[:1]  # the model alone: best-sellers
    out = blend(ranked, recent, recs, content, {"hose-new"}, in_stock, 5)
    assert out[:2] == ["a", "a2"]  # all the history is unseen: its content neighbours lead
    assert out[2:] == [i for i in ranked if i not in {"a", "a2"}][:3]  # then the model's fill


def test_an_unseen_older_item_shares_the_places_by_its_recency_weight(
    recs: Recommender, content: ContentIndex
) -> None:
    recent = [("b", T0 + 1), ("sock-new", T0)]  # weights 1 and 0.7: the unseen item's share 0.41
    exclude = {"b", "sock-new"}
    ranked = recs.recommend(recent, exclude, 6, in_stock)
    out = blend(ranked, recent, recs, content, exclude, in_stock, 6)
    assert out[0] == ranked[0]  # round(0.41 * 1) = 0 places for content
    assert out[1] in {"c", "c2"}  # round(0.41 * 2) = 1: sock-new's content neighbours
    assert {"c", "c2"} <= set(out) and not exclude & set(out)


def test_a_new_product_stands_beside_a_known_item_at_a_small_weight(
    recs: Recommender, content: ContentIndex
) -> None:
    recent = [("a", T0)]
    ranked = recs.recommend(recent, {"a"}, 6, in_stock)
    out = blend(ranked, recent, recs, content, {"a"}, in_stock, 6)
    assert out.index("hose-new") == FRESH_AFTER
    assert out[:FRESH_AFTER] == ranked[:FRESH_AFTER]
    assert len([i for i in out if i not in recs.items]) <= FRESH_SLOTS
    assert "hose-gone" not in out


def test_nothing_changes_without_an_index_or_without_unseen_items(
    recs: Recommender, content: ContentIndex
) -> None:
    recent = [("b", T0)]
    ranked = recs.recommend(recent, {"b"}, 5, in_stock)
    assert blend(ranked, recent, recs, None, {"b"}, in_stock, 5) == ranked
    assert blend(ranked, recent, recs, content, {"b"}, in_stock, 5) == ranked  # nothing new alike
    assert blend(ranked, [("hose-new", T0)], object(), content, set(), in_stock, 5) == ranked
