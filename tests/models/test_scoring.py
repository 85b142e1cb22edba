from __future__ import annotations

import pytest

from engine.events import Event
from engine.features import FEATURE_NAMES, features
from engine.profile import Profile, fold
from engine.repeat import parse_repeat
from models.churn import train_churn
from models.recs import train_recs
from models.registry import DEFAULT_DIR, ModelSet, load_default
from models.scoring import Scores, excluded_items, score_profile, score_profiles
from tests.models.synthetic import DAY, T0, basket_events, churn_events, purchase


@pytest.fixture(scope="module")
def models() -> ModelSet:
    return ModelSet(train_churn(churn_events()), train_recs(basket_events(), k=5))


def _profile(events: list[Event]) -> Profile:
    profile = fold(events)
    assert profile is not None
    return profile


def test_versions(models: ModelSet) -> None:
    assert models.versions() == {"churn": models.churn.version, "recs": models.recs.version}


def test_score_profile_excludes_every_item_the_user_had(models: ModelSet) -> None:
    now = T0 + 400 * DAY
    events = [
        purchase("x", "b", now - 300 * DAY),  # bought long ago: still never recommended
        purchase("x", "a", now - DAY),  # bought yesterday
        Event(event_id="v1", type="product_view", user_id="x", ts=now - 1, item_id="c"),
        Event(event_id="c1", type="add_to_cart", user_id="x", ts=now, item_id="b2"),
    ]
    profile = _profile(events)
    assert excluded_items(profile, now) == {"a", "b", "b2", "c"}
    assert excluded_items(profile, now + 1000 * DAY) == excluded_items(profile, now)
    scores = score_profile(profile, now, models, allowed=lambda i: i != "pop")
    assert isinstance(scores, Scores)
    assert 0.0 <= scores.churn <= 1.0
    assert scores.churn == pytest.approx(models.churn.score(features(profile, now)), abs=1e-6)
    recs = scores.recommendations
    assert {"a2", "c2"} <= set(recs[:4])  # the partners of what they bought and viewed
    assert not {"a", "b", "b2", "c", "pop"} & set(recs)
    assert len(recs) <= 20
    assert scores.models == models.versions()


def test_items_that_may_repeat_come_back_after_their_window(models: ModelSet) -> None:
    """PERSONA_REPEAT_ITEMS (engine/repeat.py): a consumable is left out in the cart and within
    its replenishment window after the last purchase, then may be recommended again; other
    items stay out for ever."""
    now = T0 + 400 * DAY
    window = parse_repeat("item:a2@30").window(lambda item: None)
    events = [
        purchase("y", "a", now - 40 * DAY),
        purchase("y", "a2", now - 40 * DAY),  # a consumable, bought 40 days ago
        purchase("y", "a2", now - 10 * DAY),  # and again 10 days ago
    ]
    profile = _profile(events)
    assert excluded_items(profile, now, window) == {"a", "a2"}  # 10 days < 30
    later = now + 21 * DAY  # 31 days after the last purchase
    assert excluded_items(profile, later, window) == {"a"}
    assert excluded_items(profile, later) == {"a", "a2"}  # without the setting: never again
    recs = score_profile(profile, later, models, allowed=lambda i: True, repeat=window)
    assert "a2" in recs.recommendations[:3] and "a" not in recs.recommendations
    never = score_profile(profile, later, models, allowed=lambda i: True)
    assert "a2" not in never.recommendations
    carted = _profile(
        [*events, Event(event_id="c", type="add_to_cart", user_id="y", ts=later, item_id="a2")]
    )
    assert "a2" in excluded_items(carted, later, window)  # in the cart: not recommended


def test_score_profiles_batches_like_one_by_one(models: ModelSet) -> None:
    now = T0 + 400 * DAY
    by_user: dict[str, list[Event]] = {}
    for e in churn_events(20):
        by_user.setdefault(e.user_id, []).append(e)
    profiles = [_profile(evs) for evs in by_user.values()]
    batch = score_profiles(profiles, now, models, allowed=lambda i: True)
    single = [score_profile(p, now, models, allowed=lambda i: True) for p in profiles]
    assert [s.recommendations for s in batch] == [s.recommendations for s in single]
    assert [s.churn for s in batch] == pytest.approx([s.churn for s in single], abs=1e-6)
    assert score_profiles([], now, models, allowed=lambda i: True) == []


def test_shipped_default_models() -> None:
    assert (DEFAULT_DIR / "churn.json").is_file()
    churn, recs = load_default()
    assert churn.feature_names == FEATURE_NAMES
    assert churn.metrics["roc_auc"] > 0.6
    assert recs.metrics["hr@10"] > recs.metrics["popularity_hr@10"]
    models = ModelSet(churn, recs)
    now = 1_323_000_000_000  # 2011-12-04
    history = [
        purchase("17850", "85123A", now - 2 * DAY),  # white hanging heart t-light holder
        purchase("17850", "71053", now - 2 * DAY),  # white metal lantern
        purchase("17850", "22423", now - 40 * DAY),  # regency cakestand 3 tier
    ]
    scores = score_profile(_profile(history), now, models, allowed=lambda i: True)
    assert len(scores.recommendations) == 20
    assert not {"85123A", "71053"} & set(scores.recommendations)
    assert all(item in set(recs.items) for item in scores.recommendations)
    assert 0.0 <= scores.churn <= 1.0
    assert scores.models["churn"].startswith("churn-")
