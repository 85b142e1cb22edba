"""`persona models evaluate` on the public formats, and the packaged data sets' converters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.datasets import SHARED, cdnow_events, instacart_events, write_jsonl
from engine.events import validate
from engine.sources import read_events
from persona.cli import main
from tests.models.synthetic import basket_events

UCI = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"


def _uci_file(path: Path) -> Path:
    """The synthetic baskets as UCI Online Retail rows (one invoice per order)."""
    rows = [
        f"{e.props['order_id']}-{e.user_id},{e.item_id},thing,1,2011-01-0{1 + n % 9} 10:00,1.5,"
        f"{100 + int(e.user_id[1:])},United Kingdom\n"
        for n, e in enumerate(basket_events())
        if e.type == "purchase"
    ]
    path.write_text(UCI + "".join(rows))
    return path


def test_evaluate_reads_a_uci_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _uci_file(tmp_path / "retail.csv")
    args = ["models", "evaluate", "recs", "--events", str(path), "--holdout", "1", "--json"]
    assert main([*args, "--protocol", "last-n"]) == 0
    captured = capsys.readouterr()
    assert "(uci)" in captured.err
    (split,) = json.loads(captured.out)["recs"]
    assert split["protocol"] == "leave-last-1" and split["test_users"] > 0
    assert {"persona", "popularity", "item_knn", "item_knn_last1", "ease"} == set(split["models"])


@pytest.mark.skipif(
    not (SHARED / "otto_fixture" / "train_fixture.jsonl").is_file(),
    reason="../shared/data (the OTTO fixture) is not here",
)
def test_evaluate_reads_the_otto_fixture(capsys: pytest.CaptureFixture[str]) -> None:
    path = SHARED / "otto_fixture" / "train_fixture.jsonl"
    args = ["models", "evaluate", "recs", "--events", str(path), "--protocol", "last-n", "--json"]
    assert main(args) == 0
    (split,) = json.loads(capsys.readouterr().out)["recs"]
    assert split["protocol"] == "leave-last-5" and split["test_users"] > 0
    assert {"persona", "popularity", "item_knn", "item_knn_last5", "ease"} <= set(split["models"])


def test_instacart_rows_become_purchases_on_a_made_up_calendar(tmp_path: Path) -> None:
    sample = tmp_path / "df_sample.csv"
    sample.write_text(
        ",order_id,user_id,order_number,order_dow,order_hour_of_day,days_since_prior_order,"
        "product_id,add_to_cart_order,reordered\n"
        "0,10,1,1,2,8,,196,1.0,0.0\n"
        "1,10,1,1,2,8,,14084,2.0,0.0\n"
        "2,11,1,2,3,7,15.0,196,1.0,1.0\n"
        "3,20,2,1,5,9,,42,1.0,0.0\n"
    )
    events = [validate(e) for e in instacart_events(sample)]
    assert [(e.user_id, e.item_id, e.props["order_id"]) for e in events] == [
        ("1", "196", "10"),
        ("1", "14084", "10"),
        ("1", "196", "11"),
        ("2", "42", "20"),
    ]
    assert events[0].ts == events[1].ts  # one basket
    assert events[2].ts - events[0].ts == 15 * 86_400_000 - 3_600_000  # 15 days, 8 h -> 7 h
    assert len({e.event_id for e in events}) == 4


def test_cdnow_lines_become_1997_purchases_that_history_reads(tmp_path: Path) -> None:
    master = tmp_path / "CDNOW_master.txt"
    master.write_text(
        " customer_id  date number_of_cds  dollar_value\n"
        " 00001 19970101  1   11.77\n"
        " 00002 19970112  2   24.00\n"
    )
    path = write_jsonl(cdnow_events(master), tmp_path / "cdnow.jsonl")
    events = list(read_events(path, history=True))
    assert [(e.user_id, e.item_id, e.quantity, e.price) for e in events] == [
        ("00001", "cd", 1, 11.77),
        ("00002", "cd", 2, 12.0),
    ]
    assert events[0].ts == 852_076_800_000  # 1997-01-01T00:00:00Z


def test_the_default_evaluation_keeps_the_recs_tables_when_churn_cannot_be_evaluated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`persona models evaluate --events F` evaluates both models; on a file too short for the
    churn horizon it used to print nothing but churn's error after evaluating the
    recommendations (minutes on a big file). `evaluate churn` still fails with status 2."""
    path = _uci_file(tmp_path / "retail.csv")
    args = ["models", "evaluate", "--events", str(path), "--holdout", "1", "--protocol", "last-n"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "| persona |" in captured.out and "Churn: not evaluated: " in captured.out
    assert "churn not evaluated: evaluating churn needs" in captured.err
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["recs"][0]["test_users"] > 0 and result["churn"] is None
    assert "2 x the horizon" in result["not_evaluated"]["churn"]
    assert main(["models", "evaluate", "churn", "--events", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_test_window_as_long_as_the_events_is_refused_naming_their_span(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--test-days 30` (the default) on events over 8 days held every event out: the time
    split printed "0 test users" and an empty table without a word. `--protocol time` is
    refused (status 2) naming the span; the default `both` keeps the leave-last-N table and
    says why the time split is missing."""
    path = _uci_file(tmp_path / "retail.csv")
    args = ["models", "evaluate", "recs", "--events", str(path), "--holdout", "1"]
    assert main([*args, "--protocol", "time", "--test-days", "30"]) == 2
    err = capsys.readouterr().err
    assert "--test-days 30" in err and "span 8.0 days" in err and "Traceback" not in err
    assert main([*args, "--test-days", "30"]) == 0
    captured = capsys.readouterr()
    assert "leave-last-1" in captured.out and ": 0 test users" not in captured.out
    assert "Recommendations (time split): not evaluated: --test-days 30" in captured.out
    assert "time split not evaluated: --test-days 30" in captured.err
    assert main([*args, "--test-days", "30", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [split["protocol"] for split in result["recs"]] == ["leave-last-1"]
    assert "span 8.0 days" in result["not_evaluated"]["recs (time split)"]
    assert main([*args, "--protocol", "time", "--test-days", "3"]) == 0  # within the span


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("empty.csv", "", "an empty file"),
        (
            "header.csv",
            "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n",
            "uci, 0 data rows",
        ),
        ("blank.jsonl", "\n\n", "jsonl, 0 data rows"),
    ],
)
def test_evaluate_of_a_file_without_events_says_so_naming_what_was_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, said: str
) -> None:
    """An empty `.csv` printed "read 0 events (jsonl)" (a format it is not) and went on to
    evaluate nothing: it is said as `train` says it, naming the format read (none for an empty
    file), exit 2."""
    path = tmp_path / name
    path.write_text(text)
    assert main(["models", "evaluate", "--events", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: no events to evaluate ({said})" in err, err
    assert "read 0 events" not in err and "Traceback" not in err, err
