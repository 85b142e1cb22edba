"""What `persona run` says about the state it kept (streams.adopt.Adopted.describe): a first
start on a new data dir keeps nothing and says so, not "kept state: 0 table partition(s); 0 ..."."""

from __future__ import annotations

from streams.adopt import Adopted


def test_nothing_kept_says_starting_empty() -> None:
    said = Adopted(partitions=0, removed=0).describe()
    assert "kept state" not in said and "0 " not in said
    assert "starting empty" in said


def test_kept_state_names_what_was_kept() -> None:
    said = Adopted(partitions=8, removed=3, registry=2, catalog=0).describe()
    assert said.startswith("kept state: 8 table partition(s); 0 catalog product(s) and 2 model")


def test_a_kept_registry_alone_is_kept_state() -> None:
    # models published before any event: no table partition yet, but the registry is kept
    said = Adopted(partitions=0, removed=0, registry=4).describe()
    assert said.startswith("kept state: 0 table partition(s)") and "4 model registry" in said
