"""Scheduled retraining's pure side (models/retrain.py): when a run is due, what it keeps, how the
new version and the active one are compared on the held-out window, and when one is promoted."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.clock import ManualClock
from engine.events import Event, validate
from engine.settings import SettingsError, load_settings
from models.artifacts import rfc3339
from models.registry import ModelSet
from models.retrain import (
    MAX_AGE_DAYS,
    RETRAIN,
    TRAINERS,
    Schedule,
    bound,
    decide,
    retrain_all,
    retrain_churn,
    retrain_recs,
    retrained_at,
    unfenced,
)
from tests.models.synthetic import DAY, T0, purchase, view

HOUR = 3_600_000


def cluster_events(users: int = 60, start: int = T0, groups: int = 4) -> list[Event]:
    """Each user views then buys 8 items of one group of 12 (`g{group}-{item}`), a few hours
    apart: the items of a group go together, so a model trained on them ranks a user's held-out
    items of the group; a model that never saw these ids ranks none of them."""
    events: list[Event] = []
    for u in range(users):
        group, user = u % groups, f"c{u}"
        for step in range(8):
            item = f"g{group}-{(u + step * 5) % 12}"
            ts = start + u * 60_000 + step * HOUR
            events += [view(user, item, ts), purchase(user, item, ts + 1000)]
    return events


def shop_events(users: int = 300, seed: int = 3) -> list[Event]:
    """A year of purchases: users start within 100 days, buy every 6, 15 or 40 days on average
    (exponential gaps) and stop at a random day, some after the year ends."""
    rng = random.Random(seed)
    events: list[Event] = []
    for u in range(users):
        day, stop, gap = rng.uniform(0, 100), rng.uniform(60, 600), rng.choice((6, 15, 40))
        while day < min(stop, 360):
            item, price = f"i{rng.randrange(20)}", rng.uniform(2, 40)
            events.append(purchase(f"n{u}", item, T0 + int(day * DAY), price=price))
            day += rng.expovariate(1 / gap)
    return sorted(events, key=lambda e: e.ts)


# -- the schedule ----------------------------------------------------------------------------


def test_a_run_is_due_one_interval_after_the_latest_start_attempt_or_retrained_version() -> None:
    clock = ManualClock(T0)
    schedule = Schedule.every(2.0, started_ms=clock.now_ms())
    assert not schedule.due(clock.now_ms(), [])  # not at start: a restart does not retrain
    clock.advance(2 * HOUR - 1)
    assert not schedule.due(clock.now_ms(), [])
    clock.advance(1)
    assert schedule.due(clock.now_ms(), [])
    another_worker_retrained = clock.now_ms() - HOUR
    assert not schedule.due(clock.now_ms(), [another_worker_retrained])
    clock.advance(HOUR)
    assert schedule.due(clock.now_ms(), [another_worker_retrained, T0 + HOUR])


def test_fractions_of_an_hour_make_short_schedules_and_polling_stays_within_bounds() -> None:
    schedule = Schedule.every(0.002, started_ms=0)  # 7.2 s: what the integration test uses
    assert schedule.interval_ms == 7_200
    assert schedule.poll_s() == pytest.approx(1.8)
    assert Schedule.every(24, 0).poll_s() == 60.0
    assert Schedule.every(0.0001, 0).poll_s() == 1.0


def test_retrained_at_reads_only_well_formed_retrain_marks() -> None:
    rows: list[dict[str, Any]] = [
        {"metrics": {RETRAIN: {"at_ms": 5}}},
        {"metrics": {"hr@10": 0.3}},  # trained by hand
        {"metrics": {RETRAIN: {"at_ms": "5"}}},
        {"metrics": {RETRAIN: {"at_ms": True}}},
        {"metrics": {RETRAIN: "x"}},
        {"metrics": None},
    ]
    assert retrained_at(rows) == [5]


# -- what a run trains on --------------------------------------------------------------------


def test_bound_keeps_the_newest_events_within_the_age_bound() -> None:
    old = purchase("u", "a", T0 - (MAX_AGE_DAYS + 1) * DAY)
    recent = [purchase("u", f"i{n}", T0 + n) for n in range(10)]
    kept = bound([*reversed(recent), old], max_events=4)
    assert [e.item_id for e in kept] == ["i6", "i7", "i8", "i9"]
    assert bound([old, *recent], max_events=100) == recent
    assert bound([]) == []


def test_an_erased_users_events_produced_before_the_erasure_stay_out() -> None:
    before, after, other = view("gone", "a", T0), view("gone", "b", T0 + 9), view("kept", "a", T0)
    records = [(100, before), (300, after), (100, other)]
    assert unfenced(records, {"gone": 200}) == [after, other]


def test_an_erased_users_click_on_a_link_made_before_the_erasure_stays_out() -> None:
    """A click counts as produced when its link was made (`props.link_ms`), as in the fold's
    fence (engine/fold.py): the fold left such a click out, retraining learned from it."""

    def click(user: str, link_ms: int) -> Event:
        props = {"block": "recommendations", "variant": "default", "link_ms": link_ms}
        raw = {"event_id": f"c-{user}-{link_ms}", "type": "click", "user_id": user, "ts": T0}
        return validate({**raw, "item_id": "a", "props": props})

    old_link, new_link = click("gone", 150), click("gone", 250)
    records = [(300, old_link), (300, new_link)]
    assert unfenced(records, {"gone": 200}) == [new_link]


# -- the comparison --------------------------------------------------------------------------


def mark(new: float, old: float, metric: str = "hr@10", users: int = 50) -> dict[str, Any]:
    active = {"version": "v0", metric: old}
    return {RETRAIN: {"new": {metric: new}, "active": active, "test_users": users}}


def test_promotion_needs_the_setting_and_a_strictly_better_decisive_metric() -> None:
    assert decide("recs", mark(0.4, 0.3), enabled=True).promote
    off = decide("recs", mark(0.4, 0.3), enabled=False)
    assert not off.promote and "PERSONA_RETRAIN_PROMOTE is off" in off.reason
    assert not decide("recs", mark(0.3, 0.3), enabled=True).promote  # a tie keeps the active
    assert not decide("recs", mark(0.2, 0.3), enabled=True).promote
    assert decide("churn", mark(0.8, 0.7, "roc_auc"), enabled=True).promote
    assert not decide("churn", mark(0.8, 0.7), enabled=True).promote  # churn decides on AUC
    few = decide("recs", mark(0.9, 0.1, users=49), enabled=True)
    assert not few.promote and "on 49 held-out users only (promotion needs 50)" in few.reason
    missing = decide("recs", {}, enabled=True)
    assert not missing.promote and "missing" in missing.reason


def test_a_retrained_recommender_carries_both_evaluations_and_beats_one_blind_to_its_items() -> (
    None
):
    active = ModelSet.default().recs  # the shipped model: UCI stock codes only
    model = retrain_recs(cluster_events(), active, now_ms=T0)
    mark = model.metrics[RETRAIN]
    assert mark["at_ms"] == T0 and mark["test_users"] == 60
    assert mark["active"]["version"] == active.version
    assert mark["active"]["hr@10"] == 0.0
    assert mark["new"]["hr@10"] > 0.2  # 0.33 with the EASE table of Dec 2026
    assert decide("recs", model.metrics, enabled=True).promote
    # evaluated on the same window, the retrained model is not above itself
    again = retrain_recs(cluster_events(), model, now_ms=T0)
    assert again.metrics[RETRAIN]["active"]["hr@10"] == again.metrics[RETRAIN]["new"]["hr@10"]
    assert not decide("recs", again.metrics, enabled=True).promote


def test_the_held_out_items_are_not_in_the_training_data() -> None:
    events = cluster_events(users=8, groups=1)
    model = retrain_recs(events, ModelSet.default().recs, now_ms=T0)
    # user c0's last 5 distinct items are held out: its training history is its first 3
    recs = model.recommend([("g0-0", T0)], {"g0-0"}, 20)
    assert recs and model.metrics[RETRAIN]["new"]["hr@10"] > 0.0
    assert model.metrics[RETRAIN]["test_users"] == 8


def test_churn_is_retrained_on_an_earlier_horizon_and_compared_on_the_last() -> None:
    events = shop_events()
    active = ModelSet.default().churn
    model = retrain_churn(events, active, now_ms=T0, horizon_days=60)
    mark = model.metrics[RETRAIN]
    assert mark["active"]["version"] == active.version
    assert 0.0 <= mark["active"]["roc_auc"] <= 1.0
    assert mark["test_users"] > 200
    assert mark["new"]["roc_auc"] > 0.8  # 0.877 (the shipped model: 0.770)
    assert mark["new"]["roc_auc"] > mark["active"]["roc_auc"]
    assert 0.0 < mark["new"]["brier"] < mark["active"]["brier"]
    fitted_at = max(e.ts for e in events) - 2 * 60 * DAY  # labels from one horizon back
    assert model.metrics["cutoff"] == rfc3339(datetime.fromtimestamp(fitted_at / 1000, UTC))


def test_a_run_skips_what_its_events_cannot_train_and_says_why() -> None:
    active = {"recs": ModelSet.default().recs, "churn": ModelSet.default().churn}
    results = {r.name: r for r in retrain_all(cluster_events(), active, now_ms=T0)}
    assert results["recs"].model is not None and not results["recs"].skipped
    assert results["churn"].model is None  # 60 users over a few days: no horizon to label
    assert "needs over 180 days of events" in results["churn"].skipped
    few = {r.name: r for r in retrain_all([view("u", "a", T0)], active, now_ms=T0)}
    assert "no user has more than 5 distinct items" in few["recs"].skipped


# -- the settings ----------------------------------------------------------------------------


def test_retraining_is_off_unless_set_and_promotion_is_off_by_default(tmp_path: Path) -> None:
    default = load_settings({}, env={})
    assert default.retrain_hours is None and default.retrain_promote is False
    s = load_settings(env={"PERSONA_RETRAIN_HOURS": "0.5", "PERSONA_RETRAIN_PROMOTE": "yes"})
    assert s.retrain_hours == 0.5 and s.retrain_promote is True
    assert load_settings(env={"PERSONA_RETRAIN_PROMOTE": "0"}).retrain_promote is False
    config = tmp_path / "persona.toml"
    config.write_text("retrain_hours = 24\nretrain_promote = true\n")
    s = load_settings(env={"PERSONA_CONFIG": str(config)})
    assert s.retrain_hours == 24.0 and s.retrain_promote is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PERSONA_RETRAIN_HOURS", "0"),
        ("PERSONA_RETRAIN_HOURS", "-1"),
        ("PERSONA_RETRAIN_HOURS", "nan"),
        ("PERSONA_RETRAIN_HOURS", "8761"),
        ("PERSONA_RETRAIN_HOURS", "daily"),
        ("PERSONA_RETRAIN_PROMOTE", "maybe"),
    ],
)
def test_invalid_retrain_settings_name_the_setting(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings(env={name: value})


def test_a_run_that_reproduces_the_active_version_registers_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Trained twice within a minute from the same events, a model gets the same version id
    (models.artifacts.make_version): registering it again would overwrite its evaluation."""
    first = retrain_recs(cluster_events(), ModelSet.default().recs, now_ms=T0)
    monkeypatch.setitem(TRAINERS, "recs", lambda events, current, now_ms: first)
    again = {r.name: r for r in retrain_all(cluster_events(), {"recs": first}, now_ms=T0)}
    assert again["recs"].model is None
    assert again["recs"].skipped == f"the same as the active {first.version}"
    other = {r.name: r for r in retrain_all([], {"recs": ModelSet.default().recs}, now_ms=T0)}
    assert other["recs"].model is first  # any other active version: registered
