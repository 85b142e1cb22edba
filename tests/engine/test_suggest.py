"""engine.suggest: the one wording and cutoff of "did you mean" in the messages naming a mistake."""

from __future__ import annotations

from engine.suggest import CUTOFF, MAX_WORD, closest, did_you_mean, meaning

FIELDS = ("block", "format", "user_ids", "deadline_ms", "context_item")


def test_the_closest_name_is_suggested_and_nothing_when_none_is_close() -> None:
    assert closest("fromat", FIELDS) == "format"
    assert closest("context", FIELDS) == "context_item"  # 0.74: a name short of the field's
    assert closest("colour", FIELDS) is None
    assert closest("context", FIELDS, cutoff=0.8) is None  # a caller's stricter measure
    assert CUTOFF == 0.6


def test_one_wording_quoted_as_python_writes_the_name() -> None:
    assert meaning("deadline_ms") == "did you mean 'deadline_ms'?"
    assert did_you_mean("deadline", FIELDS) == "did you mean 'deadline_ms'? "
    assert did_you_mean("deadline", FIELDS, end="") == "did you mean 'deadline_ms'?"
    assert did_you_mean("blok", FIELDS, shown=lambda n: f"blocks.{n}") == (
        "did you mean 'blocks.block'? "
    )
    assert did_you_mean("colour", FIELDS) == ""


def test_a_word_from_outside_is_compared_by_its_first_characters_only() -> None:
    """difflib's time grows with the product of the lengths: a megabyte of name is cut."""
    name = "a" * MAX_WORD
    assert closest(name + "b" * 1_000_000, [name]) == name
