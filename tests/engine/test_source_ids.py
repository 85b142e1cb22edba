"""Rows of the public event formats (UCI, REES46, OTTO) whose ids no event may carry: each is a
bad row of its own line, never an event (training turned one such id into an artifact every
loader refuses, `check_item_ids`) and never an exception out of the reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.events import Event, InvalidEvent
from engine.sources import SourceError, read_events
from engine.text import MAX_ID, id_problem

UCI = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
UCI_ROW = "536365,{code},HEART,6,2010-12-01 08:26:00,2.55,{customer},United Kingdom\n"
REES = (
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
)
REES_ROW = "2019-10-01 00:00:00 UTC,view,{product},21,,shiseido,35.79,{user},{session}\n"
OTTO_ROW = (
    '{{"session": {session}, "events": '
    '[{{"aid": {aid}, "ts": 1659304800000, "type": "clicks"}}]}}\n'
)


def _read(tmp_path: Path, text: str) -> tuple[list[Event], list[SourceError]]:
    path = tmp_path / "events.txt"
    path.write_text(text, "utf-8")
    errors: list[SourceError] = []
    return list(read_events(path, errors=errors, history=True)), errors


def _usable(value: str) -> bool:
    return 1 <= len(value) <= MAX_ID and id_problem(value) is None


UCI_GOOD = UCI_ROW.format(code="85123A", customer="17850.0")
UCI_BAD = {
    "a control character in the stock code": UCI_ROW.format(code="85\x01123A", customer="17850"),
    "a stock code longer than an id": UCI_ROW.format(code="X" * 300, customer="17850"),
    "an infinite customer": UCI_ROW.format(code="85123A", customer="inf"),
    "a customer of 1e300": UCI_ROW.format(code="85123A", customer="1e300"),
}
REES_GOOD = REES_ROW.format(product="44600062", user="541312140", session="72d76fde")
REES_BAD = {
    "a control character in the user": REES_ROW.format(product="1", user="5\x0141", session="s"),
    "a NUL in the product": REES_ROW.format(product="4\x006", user="5", session="s"),
    "a product longer than an id": REES_ROW.format(product="4" * 500, user="5", session="s"),
    "a user longer than an id": REES_ROW.format(product="4", user="5" * 500, session="s"),
    "a control character in the session": REES_ROW.format(product="4", user="5", session="s\x7f"),
}
OTTO_GOOD = OTTO_ROW.format(session="1", aid="5")
OTTO_BAD = {
    "a NUL in the session": OTTO_ROW.format(session='"a\\u0000"', aid="5"),
    "a boolean aid": OTTO_ROW.format(session="1", aid="true"),
    "a fractional aid": OTTO_ROW.format(session="1", aid="5.5"),
    "an object aid": OTTO_ROW.format(session="1", aid='{"a": 1}'),
    "a session longer than an id": OTTO_ROW.format(session='"' + "s" * 300 + '"', aid="5"),
    "an aid longer than an id": OTTO_ROW.format(session="1", aid="9" * 200),
}
CASES = [
    *((f"UCI: {why}", UCI + UCI_GOOD + row + UCI_GOOD) for why, row in UCI_BAD.items()),
    *((f"REES46: {why}", REES + REES_GOOD + row + REES_GOOD) for why, row in REES_BAD.items()),
    *((f"OTTO: {why}", OTTO_GOOD + row + OTTO_GOOD) for why, row in OTTO_BAD.items()),
]


@pytest.mark.parametrize(("why", "text"), CASES, ids=[why for why, _ in CASES])
def test_a_row_with_an_unusable_id_is_an_error_of_its_line(
    tmp_path: Path, why: str, text: str
) -> None:
    events, errors = _read(tmp_path, text)
    assert len(events) == 2, why  # the good rows around it still read
    assert [e.line for e in errors] == [2 if why.startswith("OTTO") else 3], why
    for event in events:
        assert _usable(event.user_id) and event.item_id and _usable(event.item_id)
        assert event.session_id is None or _usable(event.session_id)


def test_without_an_error_list_the_bad_row_raises_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(UCI + UCI_GOOD + UCI_BAD["an infinite customer"], "utf-8")
    with pytest.raises(InvalidEvent, match="line 3"):
        list(read_events(path, history=True))
