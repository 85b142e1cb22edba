"""Reading an events body (api/event_routes.py `_parse_events_body`): a JSON array is decoded
item by item and only up to the first item past the limit, with the answers `json.loads` gave
for every body within it (the same items, the same error and position for a malformed one)."""

from __future__ import annotations

import json

import pytest

from api.event_routes import _parse_events_body

LIMIT = 3

VALID = [
    "[]",
    "[ ]",
    " \n\t[ \r\n]\n ",
    "[{}]",
    '[{"a": [1, 2, {"b": "]"}]}, "x,y", 1.5e3]',
    "[null, true, false]",
    "[1,2,3]",
    "\n[ 1 ,\n 2 ,\t3 ]  \n",
    '[[1, [2]], {"k": "v"}]',
]

MALFORMED = [
    "[",
    "[ ",
    "[1",
    "[1 ",
    "[1,",
    "[1, ",
    "[1,]",
    "[1 , ]",
    "[1,,2]",
    "[,1]",
    "[1 2]",
    "[1]x",
    "[1] ,",
    "[1]]",
    "[1][2]",
    "[1,\n]",
    '[ "a]',
    "[{]",
    "[{}",
    "[{} {}]",
    "[1, 2\n\n",
    "[nul]",
    "[01]",
    '[{"a": 1,}]',
    "[1]\x0b",
    "\x0b[1]",
    "\xa0[1]",
    "[\xa01]",
]


@pytest.mark.parametrize("body", VALID)
def test_a_valid_array_reads_as_json_loads_reads_it(body: str) -> None:
    assert _parse_events_body(body, LIMIT) == json.loads(body)


@pytest.mark.parametrize("body", MALFORMED)
def test_a_malformed_array_fails_as_json_loads_fails(body: str) -> None:
    """The same message and position as before (json.loads: the 400's detail quotes them)."""
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(body)
    with pytest.raises(ValueError) as got:
        _parse_events_body(body, LIMIT)
    assert str(got.value) == str(expected.value)


def test_an_array_is_read_only_up_to_the_first_item_past_the_limit() -> None:
    """Before, the whole array was decoded (and this one, never closed, was a 400): a 413 body
    of 10 MiB of `{}` items cost the event loop its whole parse."""
    items = _parse_events_body("[" + "{}," * (LIMIT + 1) + " {not json", LIMIT)
    assert items == [{}] * (LIMIT + 1)
    assert _parse_events_body("[" + "{}," * (LIMIT + 1) + "{}]", LIMIT) == [{}] * (LIMIT + 1)
    assert _parse_events_body("[" + ",".join(["{}"] * LIMIT) + "]", LIMIT) == [{}] * LIMIT


@pytest.mark.parametrize(
    "body",
    [
        "[" + "[" * 100_000 + "]" * 100_000 + "]",
        '[{}, {"a":' * 1 + '{"a":' * 100_000 + "1" + "}" * 100_001 + "]",
    ],
)
def test_an_item_nested_too_deeply_is_still_a_bad_body(body: str) -> None:
    with pytest.raises(ValueError, match=r"^nested too deeply$"):
        _parse_events_body(body, LIMIT)


def test_an_item_past_the_digit_limit_is_still_a_bad_body() -> None:
    with pytest.raises(ValueError, match="digits"):
        _parse_events_body("[" + "1" * 5_000 + "]", LIMIT)


LINE_PIECES = [
    "a",
    "{}",
    " ",
    "\n",
    "\r",
    "\r\n",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x85",
    "\u2028",
    "\u2029",
]


@pytest.mark.parametrize("window", [1, 2, 3, 7, 64])
def test_ndjson_lines_split_a_window_at_a_time_are_splitlines_lines(
    window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`_lines` splits as str.splitlines does, whatever the window cuts (a \\r\\n across it, a
    line longer than it, a break ending it)."""
    import random

    from api import event_routes

    monkeypatch.setattr(event_routes, "_WINDOW", window)
    rng = random.Random(window)
    for _ in range(3000):
        text = "".join(rng.choice(LINE_PIECES) for _ in range(rng.randint(0, 40)))
        assert list(event_routes._lines(text)) == text.splitlines(), repr(text)


def test_ndjson_past_the_limit_is_not_split_whole() -> None:
    """10 MiB of `{}` lines with a limit of 3: the body was split into 3.5 million strings (a
    list of ~200 MB) before its first line was parsed; now a window at a time."""
    import tracemalloc

    text = "{}\n" * (3_500_000)
    tracemalloc.start()
    try:
        items = _parse_events_body(text, LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(items) == LIMIT + 1
    assert peak < 8 << 20
