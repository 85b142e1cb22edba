"""The recommenders read the profile's long history (issue 17 item 3), weighted by recency plus a
floor for every item, and their artifacts carry how much of it they read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.events import Event
from engine.profile import RECENT_ITEMS, Profile, fold
from models.artifacts import ModelLoadError
from models.churn import train_churn
from models.embedding import EmbeddingRecommender
from models.recs import (
    JSON_NAME,
    LEGACY_HISTORY,
    Recommender,
    history_weights,
    train_recs,
)
from models.registry import ModelSet
from models.scoring import excluded_items, score_profile
from tests.models.synthetic import DAY, T0, basket_events, churn_events, purchase, view


def old_signal_then_unknown_views(user: str, old_item: str) -> Profile:
    """A user who bought `old_item` long ago and since viewed more items than the recent list
    holds, none of them known to any model: their only usable signal is beyond the recent 30."""
    events: list[Event] = [purchase(user, old_item, T0 - 100 * DAY)]
    events += [view(user, f"unknown{n}", T0 + n * 60_000) for n in range(RECENT_ITEMS + 5)]
    profile = fold(events)
    assert profile is not None
    assert old_item not in profile.recent_items and old_item in profile.history
    return profile


def test_history_weights_add_a_floor_to_the_recency_decay() -> None:
    history = [("x", 30), ("y", 20), ("z", 20), ("w", 10)]
    assert history_weights(history, 0.5, 0.0) == [1.0, 0.5, 0.5, 0.25]
    assert history_weights(history, 0.5, 0.25) == [1.25, 0.75, 0.75, 0.5]
    assert history_weights([], 0.5, 1.0) == []


def test_the_floor_lets_two_older_items_outweigh_the_newest() -> None:
    # a -> y; b -> z and c -> z: the newest item's partner against the older items' shared one
    items = ["a", "b", "c", "y", "z"]
    model = Recommender(
        "recs-t", "", items, np.array([0, 1, 2, 3, 3, 3]), np.array([3, 4, 4], np.int32),
        np.ones(3, np.float32), popular=[], recency_decay=0.5, history_floor=0.0,
    )  # fmt: skip
    history = [("a", 3), ("b", 2), ("c", 1)]
    assert model.recommend(history, set(), k=2) == ["y", "z"]  # 1 against 0.5 + 0.25
    model.history_floor = 1.0
    assert model.recommend(history, set(), k=2) == ["z", "y"]  # 2 against 1.5 + 1.25
    model.history = 1
    assert model.recommend(history, set(), k=2) == ["y"]  # only the newest item is read


def test_the_served_recommender_reads_an_item_beyond_the_recent_ones() -> None:
    models = ModelSet(train_churn(churn_events()), train_recs(basket_events(), k=5))
    profile = old_signal_then_unknown_views("x", "a")
    assert "a" in excluded_items(profile, T0)
    recs = score_profile(profile, T0 + DAY, models, allowed=lambda i: True).recommendations
    assert recs[0] == "a2" and "a" not in recs  # the old purchase's partner, first
    models.recs.history = RECENT_ITEMS  # what the recommender read before the long history
    recs = score_profile(profile, T0 + DAY, models, allowed=lambda i: True).recommendations
    assert recs[0] != "a2"  # the recent items alone say nothing: the popular fill


def test_the_embedding_recommender_folds_in_the_same_history() -> None:
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32)
    model = EmbeddingRecommender("recs-e", "", ["a", "a2", "b"], vectors, popular=["b"])
    profile = old_signal_then_unknown_views("x", "a")
    models = ModelSet(train_churn(churn_events()), model)
    recs = score_profile(profile, T0 + DAY, models, allowed=lambda i: True).recommendations
    assert recs == ["a2", "b"]
    model.history = RECENT_ITEMS
    recs = score_profile(profile, T0 + DAY, models, allowed=lambda i: True).recommendations
    assert recs == ["b"]  # nothing known among the recent items: the popular fill only


@pytest.mark.parametrize("kind", ["item_knn", "embedding"])
def test_artifacts_keep_their_history_settings_and_older_ones_read_30(
    kind: str, tmp_path: Path
) -> None:
    model: Recommender | EmbeddingRecommender
    if kind == "item_knn":
        model = train_recs(basket_events(), k=5, evaluate_split=False)
    else:
        model = EmbeddingRecommender(
            "recs-e", "", ["a", "b"], np.eye(2, dtype=np.float32), popular=["a"]
        )
    model.history, model.history_floor = 120, 0.05
    model.save(tmp_path)
    back = type(model).load(tmp_path)
    assert (back.history, back.history_floor) == (120, 0.05)
    meta = json.loads((tmp_path / JSON_NAME).read_text())
    del meta["history"], meta["history_floor"]  # an artifact written before the long history
    (tmp_path / JSON_NAME).write_text(json.dumps(meta))
    older = type(model).load(tmp_path)
    assert (older.history, older.history_floor) == (LEGACY_HISTORY, 0.0)
    for bad in ({"history": 0}, {"history": "200"}, {"history_floor": -1}, {"history_floor": True}):
        (tmp_path / JSON_NAME).write_text(json.dumps({**meta, **bad}))
        with pytest.raises(ModelLoadError, match="history"):
            type(model).load(tmp_path)
