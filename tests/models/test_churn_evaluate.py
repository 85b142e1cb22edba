"""The churn part of the offline evaluation: the shipped model's pipeline against the peers."""

from __future__ import annotations

import numpy as np

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
