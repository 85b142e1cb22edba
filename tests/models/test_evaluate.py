"""The offline evaluation (issue 17): its splits, its peers and its metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from engine.events import Event
from models.evaluate import evaluate_recs, leave_last_n, ranking_metrics, time_split
from models.peers import (
    Case,
    ease_ranker,
    ease_weights,
    interactions,
    knn_ranker,
    popularity_ranker,
    spd_inverse,
)
from persona.cli import main
from tests.models.synthetic import DAY, T0, basket_events, purchase, view


def _sequence(user: str, items: list[str], start: int = T0) -> list[Event]:
    return [view(user, item, start + n * DAY) for n, item in enumerate(items)]


def test_leave_last_n_holds_out_the_newest_distinct_items_and_trains_on_what_came_before() -> None:
    events = _sequence("u", ["a", "b", "c", "a", "d", "e", "f", "g", "h"]) + _sequence(
        "short", ["a", "b"]
    )
    train, cases = leave_last_n(events, n=5)
    assert [c.user for c in cases] == ["u"]  # "short" has too few items to hold any out
    (case,) = cases
    assert case.targets == {"d", "e", "f", "g", "h"}
    assert [item for item, _ts in case.history] == ["a", "c", "b"]  # newest first
    assert {e.item_id for e in train if e.user_id == "u"} == {"a", "b", "c"}
    assert {e.item_id for e in train if e.user_id == "short"} == {"a", "b"}


def test_a_time_split_targets_purchases_new_to_the_user() -> None:
    end = T0 + 100 * DAY
    events = [
        view("u", "a", T0),
        purchase("u", "b", T0 + DAY),
        purchase("u", "b", end - DAY),  # bought before: no target
        purchase("u", "c", end),
        view("u", "d", end),  # a view: no target
        purchase("new", "c", end),  # no history before T: no case
    ]
    train, cases = time_split(events, test_days=30)
    assert all(e.ts < end - 30 * DAY for e in train)
    assert [(c.user, set(c.targets)) for c in cases] == [("u", {"c"})]


def _cases(histories: dict[str, list[str]]) -> list[Case]:
    return [
        Case(user, tuple((item, 100 - n) for n, item in enumerate(items)), frozenset({"?"}))
        for user, items in histories.items()
    ]


@pytest.mark.parametrize("peer", ["popularity", "knn", "knn_last", "ease"])
def test_every_peer_excludes_every_item_of_the_history(peer: str) -> None:
    data = interactions(basket_events())
    ranker = {
        "popularity": lambda: popularity_ranker(data),
        "knn": lambda: knn_ranker(data),
        "knn_last": lambda: knn_ranker(data, last=1),
        "ease": lambda: ease_ranker(data, lam=1.0),
    }[peer]()
    histories = {"x": ["pop", "a"], "y": ["b", "pop2", "c2"]}
    for ranked, (user, items) in zip(ranker(_cases(histories)), histories.items(), strict=True):
        assert ranked, user
        assert not set(ranked) & set(items)
        assert len(ranked) == len(set(ranked))


def test_item_knn_and_ease_recommend_the_partner_first() -> None:
    data = interactions(basket_events())
    cases = _cases({"x": ["a"], "y": ["c2"]})
    for ranker in (knn_ranker(data), ease_ranker(data, lam=1.0)):
        assert [ranked[0] for ranked in ranker(cases)] == ["a2", "c"]
    assert popularity_ranker(data)(cases)[0][0] == "pop"  # bought by everyone


def test_knn_over_the_last_items_ignores_older_history() -> None:
    data = interactions(basket_events())
    (case,) = _cases({"x": ["a", "b"]})  # a newest
    assert knn_ranker(data, last=1)([case])[0][0] == "a2"
    assert "b2" in knn_ranker(data)([case])[0][:3]


def test_ease_keeps_only_the_most_popular_items_under_its_cap() -> None:
    data = interactions(basket_events())
    kept, b = ease_weights(data, lam=1.0, max_items=2)
    assert sorted(data.items[i] for i in kept) == ["pop", "pop2"]
    assert b.shape == (2, 2) and np.all(np.diag(b) == 0)
    ranked = ease_ranker(data, lam=1.0, max_items=2)(_cases({"x": ["a"]}))[0]
    assert ranked[:2] == ["pop", "pop2"]


def test_the_cholesky_inverse_is_the_inverse() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((50, 20))
    gram = x.T @ x + np.eye(20)
    assert np.allclose(spd_inverse(gram.copy()), np.linalg.inv(gram), atol=1e-8)
    with pytest.raises(np.linalg.LinAlgError):
        spd_inverse(-np.eye(3))


def test_ranking_metrics_count_hits_ranks_and_coverage() -> None:
    cases = [
        Case("u1", (), frozenset({"b"})),  # hit at rank 2
        Case("u2", (), frozenset({"z"})),  # miss
    ]
    m = ranking_metrics([["a", "b"], ["a", "c"]], cases, n_items=6)
    assert m["hr@10"] == 0.5
    assert m["mrr"] == 0.25
    assert m["ndcg@10"] == round(1 / math.log2(3) / 2, 4)
    assert m["coverage"] == 0.5


def test_evaluate_recs_reports_persona_and_every_peer_on_the_same_cases() -> None:
    report = evaluate_recs(basket_events() * 1, "last-n", n=1)
    assert set(report["models"]) == {
        "persona",
        "popularity",
        "item_knn",
        "item_knn_last1",
        "ease",
    }
    assert report["protocol"] == "leave-last-1" and report["test_users"] > 0
    assert report["implicit_installed"] is False
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate_recs(basket_events(), "random")


def test_the_cli_evaluates_a_contract_file_with_both_splits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    events = basket_events()
    first = min(e.ts for e in events)
    # a second between two users' baskets made two days: the events span more than the 30 days
    # the time split holds out (one that holds out all of them is refused: test_evaluate_sources)
    lines = [json.dumps({**e.to_dict(), "ts": first + (e.ts - first) * 172_800}) for e in events]
    path.write_text("\n".join(lines) + "\n")
    assert main(["models", "evaluate", "recs", "--events", str(path), "--holdout", "1"]) == 0
    out = capsys.readouterr().out
    assert "leave-last-1" in out and "time split, last 30 days" in out
    for method in ("persona", "popularity", "item_knn", "item_knn_last1", "ease"):
        assert f"| {method} |" in out


def test_an_empty_file_or_a_bad_setting_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["models", "evaluate", "--events", str(empty)]) == 2
    assert f"{empty}: no events to evaluate (an empty file)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least 1"):
        evaluate_recs(basket_events(), "last-n", n=0)
