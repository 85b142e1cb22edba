"""Content experiments (engine/content_experiments.py): the document, deterministic assignment
over any number of arms with a holdout, and one experiment a block at a time."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest

from engine.content_experiments import (
    HOLDOUT,
    NO_EXPERIMENTS,
    ContentExperiment,
    InvalidExperiments,
    parse_experiments,
    share,
    to_document,
)
from models.experiments import assign as model_assign

USERS = [f"user-{n}" for n in range(20_000)]
VARIANTS = {("recommendations", "compact"), ("recommendations", "bold"), ("winback", "warm")}


def has_variant(block: str, variant: str) -> bool:
    return (block, variant) in VARIANTS


def doc(*experiments: dict[str, Any]) -> dict[str, Any]:
    return {"experiments": list(experiments)}


def three_arms(**extra: Any) -> dict[str, Any]:
    arms = [
        {"variant": "default", "weight": 2},
        {"variant": "compact", "weight": 1},
        {"variant": "bold", "weight": 1},
    ]
    return {"name": "design-1", "block": "recommendations", "arms": arms, **extra}


def within_binomial(count: int, n: int, p: float) -> bool:
    """|count - n p| within 5 standard deviations: fails by chance about once in 3.5 million."""
    return abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p))


def test_assignment_is_deterministic_and_uses_the_models_hash() -> None:
    (exp,) = parse_experiments(doc(three_arms()), has_variant).experiments
    again = parse_experiments(doc(three_arms()), has_variant).experiments[0]
    assert [exp.assign(u) for u in USERS[:500]] == [again.assign(u) for u in USERS[:500]]
    # the same fraction as models.experiments.assign: a 50/50 split agrees with share 0.5
    two = ContentExperiment("design-1", "recommendations", exp.arms[1:])
    for user in USERS[:500]:
        b = model_assign(user, "design-1", 0.5) == "B"
        assert (share("design-1", user) < 0.5) == b
        assert two.assign(user) == ("compact" if b else "bold")


def test_arm_shares_follow_the_weights_within_a_binomial_bound() -> None:
    (exp,) = parse_experiments(doc(three_arms(holdout=0.1)), has_variant).experiments
    counts = Counter(exp.assign(u) for u in USERS)
    n = len(USERS)
    assert set(counts) == {"default", "compact", "bold", HOLDOUT}
    assert within_binomial(counts[HOLDOUT], n, 0.1)
    assert within_binomial(counts["default"], n, 0.9 * 0.5)
    assert within_binomial(counts["compact"], n, 0.9 * 0.25)
    assert within_binomial(counts["bold"], n, 0.9 * 0.25)


def test_another_experiment_name_splits_users_independently() -> None:
    first = parse_experiments(doc(three_arms()), has_variant).experiments[0]
    other = parse_experiments(doc(three_arms(name="design-2")), has_variant).experiments[0]
    same = sum(first.assign(u) == other.assign(u) for u in USERS[:4000])
    # independent: P(same) = 0.5^2 + 0.25^2 + 0.25^2 = 0.375
    assert within_binomial(same, 4000, 0.375)


def test_one_arm_and_a_holdout_is_an_experiment() -> None:
    one = {"name": "h", "block": "winback", "arms": [{"variant": "warm"}], "holdout": 0.5}
    (exp,) = parse_experiments(doc(one), has_variant).experiments
    assert exp.variants == ["warm", HOLDOUT]
    assert {exp.assign(u) for u in USERS[:100]} == {"warm", HOLDOUT}


def test_the_running_experiment_of_a_block_follows_starts_and_ends() -> None:
    timed = three_arms(starts="2030-01-01T00:00:00Z", ends="2030-02-01T00:00:00Z")
    later = three_arms(name="design-2", starts="2030-02-01T00:00:00Z")
    found = parse_experiments(doc(timed, later), has_variant)
    jan, feb = 1_893_456_000_000, 1_896_134_400_000
    assert found.running("recommendations", jan - 1) is None
    assert found.running("recommendations", jan).name == "design-1"  # type: ignore[union-attr]
    assert found.running("recommendations", feb).name == "design-2"  # type: ignore[union-attr]
    assert found.running("winback", jan) is None and "winback" not in found.by_block
    assert [found.phase(t) for t in (jan - 1, jan, feb)] == [0, 1, 3]
    assert NO_EXPERIMENTS.by_block == {}


def test_the_document_round_trips() -> None:
    found = parse_experiments(
        {"version": "4", **doc(three_arms(holdout=0.2, ends=2_000_000_000_000))}, has_variant
    )
    assert parse_experiments(to_document(found), has_variant) == found
    assert to_document(found)["experiments"][0]["arms"][1] == {"variant": "compact", "weight": 1.0}


@pytest.mark.parametrize(
    ("document", "place"),
    [
        ([], "the body must be an object"),
        ({"experiments": [], "extra": 1}, "unknown field 'extra'"),
        (doc({"name": "x", "block": "nope", "arms": []}), r"experiments\[0\]\.block"),
        (doc(three_arms(name="")), r"experiments\[0\]\.name"),
        (doc(three_arms(name="a b")), r"experiments\[0\]\.name"),
        (doc(three_arms(holdout=1)), r"experiments\[0\]\.holdout"),
        (doc(three_arms(holdout=True)), r"experiments\[0\]\.holdout"),
        (doc(three_arms(colour="red")), r"experiments\[0\]: unknown field 'colour'"),
        (doc(three_arms(arms=[])), r"experiments\[0\]\.arms: must be a list"),
        (doc(three_arms(arms=[{"variant": "compact"}])), "one arm needs a holdout"),
        (doc(three_arms(arms=[{"variant": "x"}] * 21)), r"arms: must be a list of 1\.\.20"),
        (doc(three_arms(arms=[{"variant": "compact"}] * 2)), "'compact' is used twice"),
        (doc(three_arms(arms=[{"variant": "holdout"}, {"variant": "default"}])), r"arms\[0\]"),
        (doc(three_arms(arms=[{"variant": "../x"}, {"variant": "default"}])), r"arms\[0\]"),
        (
            doc(three_arms(arms=[{"variant": "default"}, {"variant": "missing"}])),
            r"arms\[1\]\.variant: no template variant 'missing' for recommendations",
        ),
        (
            doc(three_arms(arms=[{"variant": "default"}, {"variant": "warm"}])),
            r"no template variant 'warm' for recommendations",
        ),
        (
            doc(three_arms(arms=[{"variant": "default", "weight": 0}, {"variant": "bold"}])),
            r"arms\[0\]\.weight",
        ),
        (
            doc(three_arms(arms=[{"variant": "default", "weight": "1"}, {"variant": "bold"}])),
            r"arms\[0\]\.weight: must be a number",
        ),
        (doc(three_arms(starts="yesterday")), r"experiments\[0\]\.starts"),
        (doc(three_arms(starts=2_000_000_000_000, ends=1_900_000_000_000)), r"\.ends"),
        (doc(three_arms(), three_arms()), r"experiments\[1\]\.name: 'design-1' is used twice"),
        (doc(three_arms(), three_arms(name="d2")), r"experiments\[1\]: 'design-1' runs on"),
    ],
)
def test_bad_documents_name_the_place(document: Any, place: str) -> None:
    with pytest.raises(InvalidExperiments, match=place):
        parse_experiments(document, has_variant)
