"""The content experiment report (models/content_report.py) on hand-made values: exposures,
clicks, CTR, purchases and revenue within the window after a click, and each arm against the
control with its 95% interval."""

from __future__ import annotations

import math
from typing import Any

import pytest

from engine.content_experiments import Arm, ContentExperiment
from engine.events import Event
from models.content_report import HOUR_MS, content_report, welch

EXP = ContentExperiment("design", "recommendations", (Arm("default"), Arm("compact")), holdout=0.1)
T0 = 1_900_000_000_000


def exposure(user: str, variant: str, ts: int = T0, experiment: str = "design") -> dict[str, Any]:
    return {
        "experiment": experiment,
        "variant": variant,
        "user_id": user,
        "ts": ts,
        "kind": "content",
    }


def click(user: str, variant: str, ts: int, block: str = "recommendations") -> Event:
    props = {"block": block, "variant": variant}
    return Event(f"c-{user}-{ts}-{block}", "click", user, ts, "P1", props=props)


def purchase(user: str, ts: int, price: float, quantity: int = 1, **props: Any) -> Event:
    return Event(f"p-{user}-{ts}", "purchase", user, ts, "P1", quantity, price, "GBP", props=props)


def arms(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {arm["variant"]: arm for arm in report["arms"]}


def test_exposures_clicks_ctr_and_purchases_per_arm() -> None:
    exposures = [
        exposure("a1", "default"),
        exposure("a1", "default", T0 + 5),
        exposure("a2", "default"),
        exposure("b1", "compact"),
        exposure("b2", "compact"),
        exposure("h1", "holdout"),
        exposure("x1", "compact", experiment="other"),  # another experiment: not counted
    ]
    events = [
        click("a1", "default", T0 + 10),
        click("a1", "default", T0 + 10),  # a duplicate record of the same event: once
        click("b1", "compact", T0 + 10),
        click("b1", "compact", T0 + 20),
        click("b2", "compact", T0 + 10, block="winback"),  # another block: not this test's
        click("b2", "default", T0 + 10),  # another arm's variant: not counted
        click("h1", "holdout", T0 - 1),  # before the exposure: not counted
        purchase("a1", T0 + 2 * HOUR_MS, 10.0, 2),  # within 24 h of the click
        purchase("b1", T0 + 25 * HOUR_MS, 99.0),  # more than 24 h after both clicks
        purchase("b1", T0 + 30, 5.0),
        purchase("b1", T0 + 40, 5.0, cancelled=True),  # a cancellation is no purchase
        purchase("a2", T0 + 40, 7.0),  # a2 never clicked: not attributed
        purchase("x1", T0 + 40, 7.0),
    ]
    report = content_report(EXP, exposures, events, window_hours=24)
    got = arms(report)
    assert [a["variant"] for a in report["arms"]] == ["default", "compact", "holdout"]
    assert got["default"] == {
        "variant": "default",
        "users": 2,
        "exposures": 3,
        "clicks": 1,
        "clickers": 1,
        "ctr": 0.5,
        "buyers": 1,
        "purchase_rate": 0.5,
        "purchases": 1,
        "revenue": 20.0,
        "revenue_per_user": 10.0,
    }
    compact = got["compact"]
    assert (compact["users"], compact["clicks"], compact["clickers"]) == (2, 2, 1)
    assert (compact["purchases"], compact["revenue"]) == (1, 5.0)
    assert got["holdout"]["users"] == 1 and got["holdout"]["clicks"] == 0
    # a wider window takes in b1's later purchase
    wide = arms(content_report(EXP, exposures, events, window_hours=48))["compact"]
    assert (wide["purchases"], wide["revenue"]) == (2, 104.0)


def test_differences_to_control_with_intervals() -> None:
    exposures = [exposure(f"a{n}", "default") for n in range(100)]
    exposures += [exposure(f"b{n}", "compact") for n in range(100)]
    events = [click(f"a{n}", "default", T0 + 1) for n in range(10)]
    events += [click(f"b{n}", "compact", T0 + 1) for n in range(30)]
    events += [purchase(f"b{n}", T0 + 2, 10.0) for n in range(20)]
    report = content_report(EXP, exposures, events)
    vs = arms(report)["compact"]["vs_control"]
    # CTR 0.10 -> 0.30: Newcombe's hybrid score interval (models.experiments.difference; the
    # figures are scipy's Wilson intervals of 10/100 and 30/100 combined by hand)
    assert vs["ctr"]["difference"] == 0.2
    low, high = vs["ctr"]["ci95"]
    assert math.isclose(low, 0.0900021, abs_tol=1e-6)
    assert math.isclose(high, 0.3057893, abs_tol=1e-6)
    assert vs["purchase_rate"]["difference"] == 0.2
    # revenue per user: control all 0, the arm 20 of 100 users at 10 -> mean 2
    assert vs["revenue_per_user"]["difference"] == 2.0
    assert vs["revenue_per_user"] == welch([0.0] * 100, [10.0] * 20 + [0.0] * 80)
    assert arms(report)["holdout"]["vs_control"]["ctr"] == {"difference": None, "ci95": None}


def test_welch_interval_on_hand_values() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0]
    # means 2.5 and 5; sample variances 5/3 and 20/3; se = sqrt((5/3 + 20/3) / 4)
    se = math.sqrt((5 / 3 + 20 / 3) / 4)
    got = welch(a, b)
    assert got["difference"] == 2.5
    assert got["ci95"] == [
        round(2.5 - 1.959963984540054 * se, 6),
        round(2.5 + 1.959963984540054 * se, 6),
    ]
    assert welch([1.0], b) == {"difference": None, "ci95": None}


def test_a_model_experiments_exposures_of_the_same_name_are_not_counted() -> None:
    model = {"experiment": "design", "variant": "default", "user_id": "m1", "ts": T0}
    got = arms(content_report(EXP, [exposure("u1", "default"), model], [], window_hours=24))
    assert got["default"]["users"] == 1 and got["default"]["exposures"] == 1


def test_sample_ratio_mismatch_against_the_weights_and_the_holdout() -> None:
    """Users per arm against the configured split (holdout 0.1, then the arms' weights 1 : 3 of
    the rest): 100 holdout, 450 control, 450 compact is a broken split (expected 225 and 675)."""
    exp = ContentExperiment(
        "design", "recommendations", (Arm("default"), Arm("compact", 3.0)), holdout=0.1
    )
    exposures = [exposure(f"h{i}", "holdout") for i in range(100)]
    exposures += [exposure(f"a{i}", "default") for i in range(450)]
    exposures += [exposure(f"b{i}", "compact") for i in range(450)]
    srm = content_report(exp, exposures, [])["sample_ratio"]
    assert srm["expected"] == {"default": 0.225, "compact": 0.675, "holdout": 0.1}
    assert srm["observed"] == {"default": 450, "compact": 450, "holdout": 100}
    chi2 = (450 - 225) ** 2 / 225 + (450 - 675) ** 2 / 675 + 0
    assert srm["chi2"] == pytest.approx(chi2) and srm["df"] == 2
    assert srm["p_value"] == pytest.approx(math.exp(-chi2 / 2), rel=1e-5)  # df 2: e^(-x/2)
    assert srm["mismatch"] is True
    fine = [exposure(f"h{i}", "holdout") for i in range(100)]
    fine += [exposure(f"a{i}", "default") for i in range(230)]
    fine += [exposure(f"b{i}", "compact") for i in range(670)]
    assert content_report(exp, fine, [])["sample_ratio"]["mismatch"] is False
