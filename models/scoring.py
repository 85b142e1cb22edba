"""Scores of a profile: churn probability and recommendations, with the versions that made them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.features import features
from engine.profile import Profile, held_items, history_newest
from engine.repeat import Window
from models.registry import ModelSet
from models.similar import Content, with_content

TOP_RECOMMENDATIONS = 20


@dataclass(frozen=True)
class Scores:
    churn: float
    recommendations: list[str]  # best first, at most TOP_RECOMMENDATIONS
    models: dict[str, str] = field(default_factory=dict)  # name -> version


def excluded_items(profile: Profile, now_ms: int, repeat: Window | None = None) -> set[str]:
    """What not to recommend: every item the profile holds the user interacted with, whenever
    (its purchases, recent items, long history and cart): a slot shows something new to them
    (issue 17; the offline evaluation's peers exclude the same). Items that may repeat
    (`repeat`, engine/repeat.py: PERSONA_REPEAT_ITEMS) are left out only while in the cart or
    within their replenishment window after the last purchase: the only way the clock reaches
    the exclusions."""
    held = held_items(profile)
    if repeat is None:
        return held
    bought: dict[str, int] = {}
    for item, ts in profile.purchased:
        bought[item] = max(ts, bought.get(item, ts))
    return {item for item in held if _still_held(item, profile, now_ms, repeat, bought)}


def _still_held(
    item: str, profile: Profile, now_ms: int, repeat: Window, bought: dict[str, int]
) -> bool:
    window = repeat(item)
    if window is None or item in profile.cart:
        return True
    last = bought.get(item)
    return last is not None and now_ms - last < window


def _recommend(
    profile: Profile,
    now_ms: int,
    models: ModelSet,
    allowed: Callable[[str], bool],
    repeat: Window | None = None,
) -> list[str]:
    exclude = excluded_items(profile, now_ms, repeat)
    return models.recs.recommend(history_newest(profile), exclude, TOP_RECOMMENDATIONS, allowed)


def score_profile(
    profile: Profile,
    now_ms: int,
    models: ModelSet,
    allowed: Callable[[str], bool],
    recommendations: list[str] | None = None,
    content: Content | None = None,
    repeat: Window | None = None,
) -> Scores:
    """Churn from `features(profile, now_ms)`; recommendations from the long history, or
    `recommendations` as given: the caller's, made for the same profile, models, catalog and
    `excluded_items`. `content`: the catalog's content
    index, for products the model has not seen (models/similar.py); `repeat`: the items that may
    be recommended again after their replenishment window (engine/repeat.py)."""
    churn = models.churn.score(features(profile, now_ms))
    if recommendations is None:
        recommendations = _recommend(profile, now_ms, models, allowed, repeat)
        if content is not None:
            exclude = excluded_items(profile, now_ms, repeat)
            recommendations = with_content(
                recommendations,
                profile,
                models.recs,
                content,
                exclude,
                allowed,
                TOP_RECOMMENDATIONS,
            )
    return Scores(
        churn=round(churn, 6),
        recommendations=recommendations,
        models=models.versions(),
    )


def score_profiles(
    profiles: Sequence[Profile],
    now_ms: int,
    models: ModelSet,
    allowed: Callable[[str], bool],
    repeat: Window | None = None,
) -> list[Scores]:
    """`score_profile` for many profiles, churn scored as one matrix."""
    if not profiles:
        return []
    matrix = np.array([features(p, now_ms) for p in profiles], dtype=np.float64)
    churn = models.churn.score_batch(matrix)
    versions = models.versions()
    return [
        Scores(
            churn=round(float(c), 6),
            recommendations=_recommend(p, now_ms, models, allowed, repeat),
            models=dict(versions),
        )
        for p, c in zip(profiles, churn, strict=True)
    ]
