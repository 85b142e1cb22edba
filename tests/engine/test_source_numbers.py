"""Prices and quantities of the public event formats within the contract's bounds
(engine.events: a price finite in 0..MAX_PRICE, a quantity at most MAX_QUANTITY), as the
contract's JSON lines are: a UCI UnitPrice of nan, inf or 1e308 and a Quantity of 4,000 digits
became events (training sums them into NaN or infinite features, or overflows converting the
quantity), a REES46 price of inf or 1e308 too."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.events import MAX_PRICE, MAX_QUANTITY, Event
from engine.sources import SourceError, read_events

UCI = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
UCI_ROW = "{invoice},85123A,HEART,{qty},2010-12-01 08:26:00,{price},17850.0,United Kingdom\n"
REES = (
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
)
REES_ROW = "2019-10-01 00:00:00 UTC,purchase,44600062,21,,shiseido,{price},541312140,72d76fde\n"


def _read(tmp_path: Path, text: str) -> tuple[list[Event], list[SourceError]]:
    path = tmp_path / "events.csv"
    path.write_text(text, "utf-8")
    errors: list[SourceError] = []
    return list(read_events(path, errors=errors, history=True)), errors


def _uci(qty: str = "6", price: str = "2.55", invoice: str = "536365") -> str:
    return UCI_ROW.format(invoice=invoice, qty=qty, price=price)


@pytest.mark.parametrize(
    "row",
    [
        _uci(price="nan"),
        _uci(price="inf"),
        _uci(price="1e308"),
        _uci(price=str(MAX_PRICE * 2)),
        _uci(qty="9" * 4000),
        _uci(qty=str(MAX_QUANTITY + 1)),
        _uci(qty="-" + "9" * 4000, invoice="C536379"),
    ],
    ids=["nan", "inf", "1e308", "over MAX_PRICE", "4000 digits", "over MAX_QUANTITY", "cancel"],
)
def test_a_uci_number_out_of_the_contract_is_an_error_of_its_line(tmp_path: Path, row: str) -> None:
    events, errors = _read(tmp_path, UCI + _uci() + row + _uci(price="3"))
    assert [e.price for e in events] == [2.55, 3.0]
    assert [e.line for e in errors] == [3]


@pytest.mark.parametrize("price", ["inf", "1e308", str(MAX_PRICE * 2)])
def test_a_rees46_price_out_of_the_contract_is_an_error_of_its_line(
    tmp_path: Path, price: str
) -> None:
    text = REES + REES_ROW.format(price="35.79") + REES_ROW.format(price=price)
    events, errors = _read(tmp_path, text)
    assert [e.price for e in events] == [35.79]
    assert [e.line for e in errors] == [3]


def test_numbers_at_the_bounds_still_read(tmp_path: Path) -> None:
    events, errors = _read(tmp_path, UCI + _uci(qty=str(MAX_QUANTITY), price=str(MAX_PRICE)))
    assert errors == [] and [(e.quantity, e.price) for e in events] == [(MAX_QUANTITY, MAX_PRICE)]
    events, errors = _read(tmp_path, REES + REES_ROW.format(price="nan"))
    assert errors == [] and [e.price for e in events] == [None]  # no price, as a negative one
