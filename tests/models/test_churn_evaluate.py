"""The churn part of the offline evaluation: the shipped model's pipeline against the peers."""

from __future__ import annotations

import numpy as np
import pytest

from models.churn import churn_dataset, train_churn
from models.evaluate import churn_scores, evaluate_churn, markdown
from tests.models.synthetic import DAY, churn_events

METHODS = {"persona", "persona_uncalibrated", "gbm", "rfm_logistic"}


def test_every_method_has_its_scores_and_calibration_table() -> None:
    result = evaluate_churn(churn_events(), horizon_days=90)
    assert set(result["models"]) == METHODS
    for metrics in result["models"].values():
        table = metrics["calibration"]
        assert len(table) == 10 and sum(r["users"] for r in table) == result["test_users"]
        assert 0 <= metrics["brier"] <= 1
    assert result["models"]["persona"]["roc_auc"] > 0.9
    text = markdown(None, result)
    assert "| persona |" in text and "| decile | persona | persona_uncalibrated" in text


def test_the_persona_row_scores_what_train_churn_ships() -> None:
    events = churn_events()
    newest = max(e.ts for e in events)
    c1, c2 = newest - 180 * DAY, newest - 90 * DAY
    train, test = churn_dataset(events, 90, c1), churn_dataset(events, 90, c2)
    shipped = train_churn(events, 90, cutoff_ms=c1)
    raw = np.sign(test.x) * np.expm1(np.abs(test.x))
    assert np.allclose(churn_scores(train, test)["persona"], shipped.score_batch(raw), atol=1e-9)


def test_a_span_under_twice_the_horizon_is_said_as_such() -> None:
    """The evaluation fits at newest - 2 x horizon: 352 days of events against a 200-day
    horizon said 'no user was active before the cut-off (the newest event minus the 200-day
    horizon); the events span 352 days', which reads as if 352 > 200 were too short."""
    events = churn_events()
    span = (max(e.ts for e in events) - min(e.ts for e in events)) / DAY
    assert 200 < span < 400
    with pytest.raises(ValueError) as refused:
        evaluate_churn(events, horizon_days=200)
    message = str(refused.value)
    assert "2 x the horizon" in message and "400 days" in message
    assert f"span {span:.1f} days" in message and f"--horizon-days under {span / 2:.1f}" in message
