"""EASE's weights served as the default neighbour table (issue 17 item 4)."""

from __future__ import annotations

import numpy as np
import pytest

from models.ease_table import Table, ease_table, sorted_interactions, top_positive
from models.recs import _histories, fit_recommender, neighbour_table
from tests.models.synthetic import basket_events


def _row(table: Table, item: str) -> dict[str, float]:
    items, indptr, neighbours, weights = table
    i = items.index(item)
    start, end = int(indptr[i]), int(indptr[i + 1])
    return {
        items[j]: float(w) for j, w in zip(neighbours[start:end], weights[start:end], strict=True)
    }


def test_top_positive_keeps_the_k_largest_positive_entries_best_first() -> None:
    row = np.array([0.5, -1.0, 0.0, 2.0, 0.5, 0.1])
    assert top_positive(row, 3).tolist() == [3, 0, 4]  # ties by index
    assert top_positive(row, 10).tolist() == [3, 0, 4, 5]
    assert top_positive(-np.ones(3), 2).tolist() == []


def test_each_item_keeps_its_partner_as_its_best_neighbour() -> None:
    events = basket_events()
    cosine = neighbour_table(_histories(events, ()), 5)
    table = ease_table(events, 5, (), cosine, lam=1.0)
    assert table[0] == cosine[0] == sorted_interactions(events, ()).items
    for item, partner in (("a", "a2"), ("b2", "b"), ("c", "c2")):
        row = _row(table, item)
        assert max(row, key=lambda j: row[j]) == partner
        assert all(w > 0 for w in row.values()) and item not in row


def test_items_beyond_the_cap_keep_their_cosine_rows() -> None:
    events = basket_events()
    cosine = neighbour_table(_histories(events, ()), 5)
    table = ease_table(events, 5, (), cosine, lam=1.0, max_items=2)
    for item in cosine[0]:
        if item in ("pop", "pop2"):
            assert set(_row(table, item)) <= {"pop", "pop2"}
        else:
            assert _row(table, item) == _row(cosine, item)


def test_the_default_recommender_is_trained_on_the_ease_table() -> None:
    events = basket_events()
    ease = fit_recommender(events, k=5)
    cosine = fit_recommender(events, k=5, table="cosine")
    assert not np.array_equal(ease.weights, cosine.weights)
    assert ease.recommend([("a", 1)], {"a"}, 1) == ["a2"]
    with pytest.raises(ValueError, match="unknown neighbour table"):
        fit_recommender(events, table="svd")
