"""engine/fanout.py: a request's users split by owner and the answers merged back (pure parts)."""

from __future__ import annotations

import pytest

from engine.fanout import group, merge, owner_budget, owner_renders, owner_results

A, B = "http://a:1", "http://b:2"
OWNERS = {"u1": None, "u2": B, "u3": A, "u4": B, "u5": None}


def entry(text: str) -> dict:
    return {"content": text, "fallback": False, "etag": f'"{text}"'}


def test_group_keeps_the_request_order_within_each_owner() -> None:
    groups = group(["u5", "u4", "u3", "u2", "u1"], OWNERS.get)
    assert groups.local == ["u5", "u1"]
    assert groups.remote == {B: ["u4", "u2"], A: ["u3"]}
    assert list(groups.remote) == [B, A]  # owners in the order their first user came


def test_group_keeps_duplicates_where_they_are() -> None:
    groups = group(["u2", "u1", "u2", "u1"], OWNERS.get)
    assert groups.local == ["u1", "u1"] and groups.remote == {B: ["u2", "u2"]}


def test_merge_answers_in_the_request_order() -> None:
    ids = ["u5", "u4", "u3", "u2", "u1"]
    here = {"u5": "h5", "u1": "h1"}
    from_b = {"u4": "b4", "u2": "b2"}
    from_a = {"u3": "a3"}
    assert merge(ids, here, from_b, from_a) == ["h5", "b4", "a3", "b2", "h1"]


def test_an_owner_failing_its_users_are_answered_here() -> None:
    ids = ["u1", "u2", "u3", "u4"]
    groups = group(ids, OWNERS.get)
    failed = groups.remote[B]  # b did not answer: its users computed here
    here = {uid: f"here-{uid}" for uid in [*groups.local, *failed]}
    assert merge(ids, here, {"u3": "from-a"}) == ["here-u1", "here-u2", "from-a", "here-u4"]


def test_merge_refuses_a_user_without_an_answer() -> None:
    with pytest.raises(KeyError):
        merge(["u1", "u2"], {"u1": 1})


def test_owner_results_takes_exactly_the_users_asked() -> None:
    answer = {"results": {"u2": entry("x"), "u4": {**entry("y"), "fallback_reason": "deadline"}}}
    assert owner_results(answer, ["u2", "u4"]) == answer["results"]


@pytest.mark.parametrize(
    "answer",
    [
        None,
        [],
        {"results": []},
        {"results": {"u2": entry("x")}, "more": 1},
        {"results": {"u2": entry("x")}},  # u4 missing
        {"results": {"u2": entry("x"), "u9": entry("y")}},  # not asked
        {"results": {"u2": entry("x"), "u4": entry("y"), "u9": entry("z")}},
        {"results": {"u2": entry("x"), "u4": "text"}},
        {"results": {"u2": entry("x"), "u4": {**entry("y"), "content": 1}}},
        {"results": {"u2": entry("x"), "u4": {**entry("y"), "fallback": "no"}}},
        {"results": {"u2": entry("x"), "u4": {**entry("y"), "etag": None}}},
        {"results": {"u2": entry("x"), "u4": {**entry("y"), "fallback_reason": 3}}},
        {"results": {"u2": entry("x"), "u4": {**entry("y"), "script": "x"}}},
    ],
)
def test_owner_results_refuses_what_was_not_asked_or_is_broken(answer: object) -> None:
    assert isinstance(owner_results(answer, ["u2", "u4"]), str)


def test_owner_budget_leaves_time_to_answer_here() -> None:
    assert owner_budget(1.0) == (600, 0.8)
    assert owner_budget(60.0) == (10_000, 48.0)  # deadline_ms is 1..10000
    assert owner_budget(0.01) is None  # too late to ask: answered here
    assert owner_budget(-1.0) is None


def message(text: str | None = "<p>x</p>", error: str | None = None) -> dict:
    return {"content": text, "fallback": error is not None, "fallback_blocks": [], "error": error}


def test_owner_renders_takes_exactly_the_recipients_asked() -> None:
    results = {"u2": message(), "u4": message(None, "BudgetExceeded: late")}
    answer = {"results": results, "errors": 1}
    assert owner_renders(answer, ["u2", "u4"]) == results
    cut_and_failed = {"u2": message("<p>fb</p>", "TypeError: x"), "u4": message(None, "late")}
    assert owner_renders({"results": cut_and_failed, "errors": 2}, ["u2", "u4"]) == cut_and_failed


@pytest.mark.parametrize(
    "answer",
    [
        None,
        {"results": {"u2": message(), "u4": message()}},  # no errors
        {"results": {"u2": message(), "u4": message()}, "errors": 0, "more": 1},
        {"results": [], "errors": 0},
        {"results": {"u2": message()}, "errors": 0},  # u4 missing
        {"results": {"u2": message(), "u9": message()}, "errors": 0},  # not asked
        {"results": {"u2": message(), "u4": message()}, "errors": 1},  # miscounted
        {"results": {"u2": message(), "u4": message()}, "errors": "0"},
        {"results": {"u2": message(), "u4": message()}, "errors": False},
        {"results": {"u2": message(), "u4": message(None)}, "errors": 0},  # null without error
        {"results": {"u2": message(), "u4": message(3)}, "errors": 0},
        {"results": {"u2": message(), "u4": message("x", 3)}, "errors": 0},
        {"results": {"u2": message(), "u4": {**message(), "fallback": 0}}, "errors": 0},
        {"results": {"u2": message(), "u4": {**message(), "fallback_blocks": "x"}}, "errors": 0},
        {"results": {"u2": message(), "u4": {**message(), "fallback_blocks": [1]}}, "errors": 0},
        {"results": {"u2": message(), "u4": {**message(), "script": 1}}, "errors": 0},
        {"results": {"u2": message(), "u4": {"content": "x"}}, "errors": 0},
        {"results": {"u2": message(), "u4": "text"}, "errors": 0},
    ],
)
def test_owner_renders_refuses_what_was_not_asked_or_is_broken(answer: object) -> None:
    assert isinstance(owner_renders(answer, ["u2", "u4"]), str)
