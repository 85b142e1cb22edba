"""An `active/<name>` record of the models topic whose history is not a list of versions is
refused by the fold (logged, counted, the activation before it kept): a history holding an object
made `streams.registry._servable` raise TypeError (`dict.fromkeys` of an unhashable entry), so a
worker kept what it served and a restarted one served the shipped defaults, and `persona models
rollback` printed a traceback."""

from __future__ import annotations

import json
from typing import Any

import pytest

from models.registry_log import RegistryLog, activation


def _record(**value: Any) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    "history",
    [[{"a": 1}], [["x"]], "recs-x", [5], [None], ["../etc"], {"a": 1}, ["x" * 300]],
)
def test_an_activation_whose_history_is_not_versions_is_refused(history: Any) -> None:
    state = RegistryLog()
    default = state.active("recs")
    assert state.apply("active/recs", _record(version=default, history=[])) == "active"
    before = state.refused
    state.apply("active/recs", _record(version=default, history=history))
    assert state.refused == before + 1
    assert state.history("recs") == []
    assert all(isinstance(v, str) for v in [state.active("recs"), *state.history("recs")])
    with pytest.raises(ValueError, match="no previously active"):
        activation(state, "recs", None)  # a rollback reads the history: nothing to roll back to


def test_an_activation_of_a_bad_version_is_refused_too() -> None:
    state = RegistryLog()
    before = state.refused
    state.apply("active/recs", _record(version="../../x", history=[]))
    assert state.refused == before + 1


def test_an_activation_with_a_history_of_versions_is_kept() -> None:
    state = RegistryLog()
    default = state.active("recs")
    state.apply("active/recs", _record(version=default, history=["recs-a", "recs-b"]))
    assert state.history("recs") == ["recs-a", "recs-b"]
