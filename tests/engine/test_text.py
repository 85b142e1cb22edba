"""JSON from outside fails as one exception type with a reason, never as a RecursionError or a
plain ValueError out of `json.loads` (engine.text.outside_json)."""

from __future__ import annotations

import time

import pytest

from engine.text import (
    BadJson,
    cut,
    id_problem,
    isolated,
    key_shown,
    new_id_problem,
    outside_json,
    repr_cut,
    urls_shown,
)

DEEP_ARRAY = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 100_000 + "1" + "}" * 100_000
LONG_INT = '{"ts": ' + "7" * 5_000 + "}"  # over Python's 4,300-digit conversion limit


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (DEEP_ARRAY, "nested too deeply"),
        (DEEP_OBJECT.encode(), "nested too deeply"),
        (LONG_INT, "4300 digits"),
        (b'{"a": "\xff\xfe"}', "invalid JSON"),
        ("{", "invalid JSON: Expecting property name"),
        ("", "invalid JSON"),
    ],
    ids=["deep array", "deep object", "long integer", "not UTF-8", "truncated", "empty"],
)
def test_hostile_json_is_a_bad_json_with_its_reason(raw: str | bytes, reason: str) -> None:
    with pytest.raises(BadJson, match=reason) as caught:
        outside_json(raw)
    assert "7777" not in str(caught.value)  # the input is not echoed whole
    assert isinstance(caught.value, ValueError)


def test_good_json_is_read() -> None:
    assert outside_json(b'{"a": [1, 2.5, "x", null]}') == {"a": [1, 2.5, "x", None]}
    nested = outside_json("[" * 100 + "]" * 100)  # nesting within Python's stack is fine
    for _ in range(99):
        (nested,) = nested
    assert nested == []


@pytest.mark.parametrize(
    ("char", "name"),
    [
        ("\ufeff", "U+FEFF, a byte order mark"),
        ("\u200b", "U+200B, a zero-width space"),
        ("\u200d", "U+200D, a zero-width joiner"),
        ("\u200e", "U+200E, a direction mark"),
        ("\u202e", "U+202E, a direction override"),
        ("\u2066", "U+2066, a direction isolate"),
        ("\u2060", "U+2060, a word joiner"),
    ],
)
def test_an_id_holding_an_invisible_character_is_refused_naming_it(char: str, name: str) -> None:
    """Two ids that look alike must be alike: an invisible character (a BOM from a joined file,
    a zero-width space pasted with an id, a direction override that shows `user-1` for another id)
    is refused where ids are checked."""
    assert new_id_problem(f"user{char}-1") == f"contains an invisible character ({name})"
    assert id_problem(f"user{char}-1") is None  # a lookup: what an older version stored


@pytest.mark.parametrize("value", ["user-1", "utilisateur-é", "用户", "ユーザー", "פריט-1", "a b"])
def test_ids_in_any_script_stay_allowed(value: str) -> None:
    assert new_id_problem(value) is None


RLO, PDI, FSI = "\u202e", "\u2069", "\u2068"


@pytest.mark.parametrize(
    "title",
    [
        f"{RLO}99.00 £",
        f"{PDI}{RLO}escapes a naive wrapper",
        f"\u2067\u2067{RLO}two isolates left open",
        "\u202b\u202a nested embeddings",
    ],
)
def test_isolated_text_cannot_reorder_what_follows(title: str) -> None:
    """A free text (a product title) with direction controls, written into a sentence, reversed
    the rest of its line (the price, the other titles). `isolated` closes everything it opens."""
    wrapped = isolated(title)
    assert wrapped.startswith(FSI) and wrapped.endswith(PDI)
    depth = 0
    for ch in wrapped:  # every isolate it opens is closed, and none closes one opened before it
        depth += ch in "\u2066\u2067\u2068"
        depth -= ch == PDI
        assert depth >= 0
    assert depth == 0
    # the rest is kept: a legitimate right-to-left title still shows as written
    assert wrapped[1:].rstrip(PDI) == title.replace(PDI, "")


def test_text_without_direction_controls_is_left_alone() -> None:
    for text in ("Tea lights", "שמן זית", "قهوة", ""):
        assert isolated(text) == text
    assert isolated("قهوة \u200f").startswith(FSI)  # a mark, too, acts on what follows


def test_cut_keeps_short_text_whole_and_cuts_long_text_with_dots() -> None:
    assert cut("x" * 40, 40) == "x" * 40
    assert cut("x" * 41, 40) == "x" * 40 + "..."


def test_repr_cut_shows_a_repr_whole_or_cut_with_its_length_when_asked() -> None:
    assert repr_cut("a\nb", 10, 5) == "'a\\nb'"  # one line: control characters escaped
    assert repr_cut("x" * 10, 12, 12) == "'" + "x" * 10 + "'"
    assert repr_cut("x" * 11, 12, 6) == "'xxxxx..."
    assert repr_cut("x" * 11, 12, 6, end="...'") == "'xxxxx...'"
    assert repr_cut("x" * 11, 12, 6, counted="repr") == "'xxxxx... (13 characters)"
    assert repr_cut("x" * 11, 12, 6, counted="str") == "'xxxxx... (11 characters)"
    assert key_shown("k" * 100) == "'" + "k" * 61 + "...'"  # at most 66 characters
    assert len(key_shown("k" * 100)) == 66 and key_shown("k" * 64) == "'" + "k" * 64 + "'"


def _hidden(url: str) -> str:
    return "<" + url.partition("://")[0] + ">"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("at http://h/p?t=1 then", "at <http> then"),
        ("x1http://h/p and 'https://a/b'", "<x1http> and '<https>'"),
        ("1http://h/p", "1<http>"),  # a scheme begins with a letter
        ("--git+ssh://u@h/r", "--<git+ssh>"),
        ("a.b-c://h https://x/?n=http://y", "<a.b-c> <https>"),  # a URL in a URL: one
        ("no url: //h/p, ://h, 9://h", "no url: //h/p, ://h, 9://h"),
    ],
)
def test_urls_shown_replaces_every_url_whole(text: str, shown: str) -> None:
    assert urls_shown(text, _hidden) == shown


def test_urls_shown_takes_linear_time_on_a_run_of_scheme_characters() -> None:
    """An error's message quotes what a server sent (aiohttp quotes some 100 KB of a bad answer):
    a long run of letters with no `://` made the pattern try a scheme from each of its letters
    to the end of the run, quadratic (100 KB: ~20 s of a stalled event loop). It must cost about
    what text of the same length made of short words costs (a 100x margin)."""

    def cost(text: str) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            urls_shown(text, _hidden)
            best = min(best, time.perf_counter() - started)
        return best

    n = 60_000
    words = cost("ab " * (n // 3))
    for run in ("z" * n, "a1" * (n // 2), "a." * (n // 2), "zz:/" * (n // 4)):
        assert cost(run) < 100 * words + 0.05, (run[:8], cost(run), words)
