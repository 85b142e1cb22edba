"""Why a user gets what they get: the history items and neighbours behind each recommendation, the
churn score and the features that moved it most, the blocks' variants and the model versions.
Pure: everything comes in as arguments (`GET /v1/users/{user_id}/explain` and the preview page).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from engine.catalog import Product
from engine.features import FEATURE_NAMES, features, log_scale
from engine.profile import Profile, history_newest
from models.recs import history_weights

RECENT_SHOWN = 10
REASONS_PER_ITEM = 3
TOP_FEATURES = 5

Lookup = Callable[[str], Product | None]


class Neighbours(Protocol):
    recency_decay: float  # and, as both recommenders have them, `history` and `history_floor`

    def neighbours_of(self, item: str) -> list[tuple[str, float]]: ...


def churn_contributions(model: Any, vec: Sequence[float]) -> list[dict[str, Any]]:
    """Each feature's pull on the churn log-odds (`z_i * coef_i` of the logistic model), largest
    pull first. Empty for a model that is not a linear one over `FEATURE_NAMES`."""
    names = tuple(getattr(model, "feature_names", ()))
    mean, scale, coef = (getattr(model, a, None) for a in ("mean", "scale", "coef"))
    if names != FEATURE_NAMES or mean is None or scale is None or coef is None:
        return []
    out = []
    for name, raw, x, m, s, c in zip(
        names, vec, log_scale(list(vec)), mean, scale, coef, strict=True
    ):
        out.append({"feature": name, "value": round(raw, 4), "weight": round((x - m) / s * c, 4)})
    out.sort(key=lambda f: (-abs(f["weight"]), f["feature"]))
    return out


def recommendation_reasons(
    recent: Sequence[tuple[str, int]],
    recommendations: Sequence[str],
    recs: Neighbours,
    per_item: int = REASONS_PER_ITEM,
) -> dict[str, list[dict[str, Any]]]:
    """For each recommended item, the history items whose neighbour lists hold it, with the
    share each adds to its score (similarity x the weight the recommender gives the item: its
    newest `history` items, decay**rank + floor), strongest first. An item without any such
    history item came from the best-seller fill."""
    wanted = set(recommendations)
    found: dict[str, list[dict[str, Any]]] = {item: [] for item in recommendations}
    recent = recent[: getattr(recs, "history", len(recent))]
    floor = float(getattr(recs, "history_floor", 0.0))
    for (item, _ts), weight in zip(
        recent, history_weights(recent, recs.recency_decay, floor), strict=True
    ):
        for neighbour, similarity in recs.neighbours_of(item):
            if neighbour in wanted:
                found[neighbour].append(
                    {
                        "item_id": item,
                        "similarity": round(float(similarity), 4),
                        "contribution": round(float(similarity) * weight, 4),
                    }
                )
    for reasons in found.values():
        reasons.sort(key=lambda r: (-r["contribution"], r["item_id"]))
        del reasons[per_item:]
    return found


def _title(lookup: Lookup, item_id: str) -> str | None:
    product = lookup(item_id)
    return product.title if product is not None else None


def explain(
    profile: Profile,
    now_ms: int,
    churn: float,
    recommendations: Sequence[str],
    models: Any,
    lookup: Lookup,
    blocks: dict[str, dict[str, Any]],
    churn_threshold: float,
) -> dict[str, Any]:
    """The "why" of one user's content. `models` is the serving model set (`.churn`, `.recs`,
    `.versions()`); `blocks` maps block name -> {variant, fallback, reason, items}."""
    vec = features(profile, now_ms)
    contributions = churn_contributions(models.churn, vec)
    reasons = recommendation_reasons(history_newest(profile), recommendations, models.recs)
    return {
        "user_id": profile.user_id,
        "models": dict(models.versions()),
        "recent_items": [
            {"item_id": item, "title": _title(lookup, item), "ts": ts}
            for item, ts in profile.recent[:RECENT_SHOWN]
        ],
        "recommendations": [
            {
                "item_id": item,
                "title": _title(lookup, item),
                "source": "neighbours" if reasons[item] else "best-sellers",
                "because": [{**r, "title": _title(lookup, r["item_id"])} for r in reasons[item]],
            }
            for item in recommendations
        ],
        "churn": {
            "score": round(churn, 6),
            "threshold": churn_threshold,
            "winback": churn >= churn_threshold,
            "intercept": round(float(getattr(models.churn, "intercept", 0.0)), 4),
            "top_features": contributions[:TOP_FEATURES],
            "features": dict(zip(FEATURE_NAMES, (round(v, 4) for v in vec), strict=True)),
        },
        "blocks": blocks,
    }
