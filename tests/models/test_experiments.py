"""The statistics of models/experiments.py: the assignment hash, the interval of a difference of
two proportions, the sample-ratio-mismatch check, and what the report counts (each user in one
arm, a hit only after the item was shown)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from engine.events import Event
from models.experiments import (
    Experiment,
    assign,
    chi2_sf,
    difference,
    report,
    sample_ratio,
)

T0 = 1_900_000_000_000


def exposure(
    user: str, variant: str, ts: int = T0, items: list[str] | None = None
) -> dict[str, Any]:
    return {"experiment": "e", "variant": variant, "user_id": user, "ts": ts, "items": items or []}


def purchase(user: str, ts: int, item: str = "z") -> Event:
    return Event(f"p-{user}-{ts}", "purchase", user, ts, item, 1, 1.0, "GBP")


def view(user: str, item: str, ts: int) -> Event:
    return Event(f"v-{user}-{ts}", "product_view", user, ts, item)


# -- assignment --------------------------------------------------------------------------------


def test_assignment_is_uniform_and_independent_between_experiments() -> None:
    users = [f"user-{i}" for i in range(20_000)]
    first = [assign(u, "one", 0.3) == "B" for u in users]
    second = [assign(u, "two", 0.5) == "B" for u in users]
    assert sum(first) / len(users) == pytest.approx(0.3, abs=0.015)
    both = sum(a and b for a, b in zip(first, second, strict=True))
    # P(B in two | B in one) is P(B in two): no correlation between two experiments' arms
    assert both / sum(first) == pytest.approx(0.5, abs=0.025)
    assert all(
        assign(u, "one", 0.3) == ("B" if f else "A") for u, f in zip(users, first, strict=True)
    )


# -- the interval of a difference of proportions ---------------------------------------------


@pytest.mark.parametrize(
    ("x_b", "n_b", "x_a", "n_a", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.0582, 0.8062),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (0, 10, 0, 10, -0.2775, 0.2775),
    ],
)
def test_difference_interval_is_newcombes_hybrid_score(
    x_b: int, n_b: int, x_a: int, n_a: int, low: float, high: float
) -> None:
    """The Wald interval collapsed to [0, 0] at 0/10 against 0/10 (and ran outside [-1, 1] on
    small counts); the hybrid score interval has Newcombe's published values."""
    diff = difference(x_a, n_a, x_b, n_b)
    assert diff["difference"] == pytest.approx(x_b / n_b - x_a / n_a, abs=1e-6)
    assert diff["ci95"] == pytest.approx([low, high], abs=1e-4)


@pytest.mark.parametrize(
    ("x_a", "n_a", "x_b", "n_b"), [(3, 40, 9, 41), (0, 5, 5, 5), (120, 1000, 80, 950)]
)
def test_difference_interval_from_scipys_wilson_intervals(
    x_a: int, n_a: int, x_b: int, n_b: int
) -> None:
    stats = pytest.importorskip("scipy.stats")
    la, ua = stats.binomtest(x_a, n_a).proportion_ci(method="wilson")
    lb, ub = stats.binomtest(x_b, n_b).proportion_ci(method="wilson")
    pa, pb = x_a / n_a, x_b / n_b
    d = pb - pa
    expected = [d - math.hypot(pb - lb, ua - pa), d + math.hypot(ub - pb, pa - la)]
    assert difference(x_a, n_a, x_b, n_b)["ci95"] == pytest.approx(expected, abs=2e-6)


def test_difference_of_nothing_has_no_interval() -> None:
    assert difference(0, 0, 3, 10) == {"difference": None, "ci95": None}


# -- sample ratio mismatch --------------------------------------------------------------------


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 19, 20])
@pytest.mark.parametrize("x", [0.0, 0.01, 0.5, 1.0, 3.84, 10.0, 25.0, 80.0])
def test_chi2_survival_matches_scipy(df: int, x: float) -> None:
    stats = pytest.importorskip("scipy.stats")
    assert chi2_sf(x, df) == pytest.approx(float(stats.chi2.sf(x, df)), rel=1e-9, abs=1e-300)


def test_sample_ratio_mismatch_on_hand_values() -> None:
    # 5,200 against 4,800 on a 50/50 split: chi2 = 2 * 200^2 / 5000 = 16, p = erfc(sqrt(8))
    srm = sample_ratio({"A": 4800, "B": 5200}, {"A": 0.5, "B": 0.5})
    assert srm["chi2"] == pytest.approx(16.0)
    assert srm["p_value"] == pytest.approx(math.erfc(math.sqrt(8.0)), rel=1e-5)
    assert srm["mismatch"] is True
    fine = sample_ratio({"A": 4960, "B": 5040}, {"A": 0.5, "B": 0.5})
    assert fine["chi2"] == pytest.approx(0.64) and fine["mismatch"] is False
    assert sample_ratio({"A": 0, "B": 0}, {"A": 0.5, "B": 0.5})["p_value"] is None


def test_report_flags_a_sample_ratio_mismatch() -> None:
    exposures = [exposure(f"a{i}", "A") for i in range(600)]
    exposures += [exposure(f"b{i}", "B") for i in range(400)]
    srm = report("e", exposures, [], share=0.5)["sample_ratio"]
    assert srm["expected"] == {"A": 0.5, "B": 0.5}
    assert srm["chi2"] == pytest.approx(40.0) and srm["mismatch"] is True
    assert report("e", exposures, [], share=0.4)["sample_ratio"]["mismatch"] is False
    assert report("e", exposures, [])["sample_ratio"] is None  # the split is not known


# -- what the report counts ---------------------------------------------------------------------


def test_a_user_exposed_in_both_arms_counts_once_in_the_first() -> None:
    """A user logged in A and later in B (the experiment restarted with another share) was in
    both arms' users, but could convert only in the first: B's rate was diluted."""
    exposures = [exposure("u1", "A", T0), exposure("u1", "B", T0 + 10), exposure("u2", "B", T0)]
    result = report("e", exposures, [purchase("u1", T0 + 20), purchase("u2", T0 + 20)])
    a, b = result["variants"]["A"], result["variants"]["B"]
    assert (a["users"], a["exposures"], a["conversions"]) == (1, 2, 1)
    assert (b["users"], b["exposures"], b["conversions"]) == (1, 1, 1)
    assert b["conversion_rate"] == 1.0


def test_a_view_before_the_item_was_shown_is_no_hit() -> None:
    """The items shown were pooled over every exposure, so a view at T0+5 of an item first
    recommended at T0+10 counted as a hit of that recommendation."""
    exposures = [exposure("u1", "A", T0, ["x"]), exposure("u1", "A", T0 + 10, ["y"])]
    early = report("e", exposures, [view("u1", "y", T0 + 5)])
    assert early["variants"]["A"]["recommendation_hits"] == 0
    later = report("e", exposures, [view("u1", "y", T0 + 10), view("u1", "x", T0 + 5)])
    assert later["variants"]["A"]["recommendation_hits"] == 1


def test_shadow_hits_are_compared_as_paired() -> None:
    """In shadow mode both arms are the same users: B - A is a paired difference (McNemar), not
    two independent samples. 100 users; 20 hit the candidate's items only, 5 the active's only,
    10 both: d = 0.15, se = sqrt((25/100 - 0.15^2) / 100)."""
    exposures = [
        {**exposure(f"u{i}", "A", T0, ["a"]), "mode": "shadow", "shadow_items": ["b"]}
        for i in range(100)
    ]
    events = [view(f"u{i}", "b", T0 + 1) for i in range(20)]
    events += [view(f"u{i}", "a", T0 + 2) for i in range(20, 25)]
    events += [view(f"u{i}", "a", T0 + 3) for i in range(25, 35)]
    events += [view(f"u{i}", "b", T0 + 4) for i in range(25, 35)]
    hits = report("e", exposures, events)["recommendation_hits"]
    se = math.sqrt((25 / 100 - 0.15**2) / 100)
    assert hits["difference"] == pytest.approx(0.15)
    assert hits["ci95"] == pytest.approx([0.15 - 1.959964 * se, 0.15 + 1.959964 * se], abs=1e-5)


@pytest.mark.parametrize("name", ["", " ", "a/b", "-x", "x" * 65, "t\n1", "été"])
def test_an_experiment_name_is_a_url_safe_word(name: str) -> None:
    """The name keys the report's URL and the CLI's argument: the content experiments' rule."""
    with pytest.raises(ValueError, match="name"):
        Experiment(name, "recs", "recs-a", "recs-b")
    assert Experiment("recs-test_2.1", "recs", "recs-a", "recs-b").name == "recs-test_2.1"


def test_a_stored_experiment_named_as_earlier_versions_allowed_still_loads() -> None:
    """An experiment started before the name rule (a space in its name) keeps running after an
    upgrade: its record loads as it is; a new one of that name is refused."""
    record = {"name": "spring sale", "model": "recs", "control": "recs-a", "candidate": "recs-b"}
    loaded = Experiment.from_dict(record)
    assert loaded.name == "spring sale" and loaded.to_dict()["name"] == "spring sale"
    assert loaded.variant("u1") == assign("u1", "spring sale", 0.5)
    with pytest.raises(ValueError, match="name"):
        Experiment("spring sale", "recs", "recs-a", "recs-b")
    with pytest.raises(ValueError, match="name"):
        Experiment.from_dict({**record, "name": " "})


def test_an_unknown_experiment_is_said_with_those_there_are() -> None:
    from models.experiments import unknown_experiment

    said = unknown_experiment("spring-sal", ["homepage-v2", "spring-sale"])
    assert "'spring-sal'" in said and "did you mean 'spring-sale'?" in said
    assert "'homepage-v2', 'spring-sale'" in said
    assert "did you mean" not in unknown_experiment("zzz", ["spring-sale"])
    assert "no experiment was started" in unknown_experiment("zzz", [])
    many = unknown_experiment("x", [f"e{i:03}" for i in range(500)])
    assert len(many) < 1000 and "500 experiments" in many  # a bounded list
