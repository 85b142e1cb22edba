"""Blank lines in a catalog feed (JSON lines, CSV, TSV): a feed of one product and 64 MiB of
newlines (~80 KB gzipped) was read a Python step per blank line before the gzip bound refused
it. Runs of blank lines are now consumed a buffer at a time (`skip_blank_lines`, as the event
readers do), counted so that the line numbers of the rows after them stay right."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import IO, Any, cast

import pytest

import engine.catalog_formats as catalog_formats
from engine.catalog_formats import InvalidFeed, open_binary, read_products
from persona.catalog_sync import _Yielding

# every kind of line `str.strip` leaves empty: ASCII white space, CRLF, NBSP, NEL, U+3000, ...
BLANKS = ["\n", "  \n", "\t\r\n", "\x1c\x1f\n", "\xa0\n", "\x85 \n", "\u2028\u3000\n", "\u202f\n"]
URL = "https://shop.example/p"
PRODUCT = {
    "item_id": "p1",
    "title": "Lamp",
    "price": 12.5,
    "currency": "EUR",
    "url": URL,
    "image_url": URL + ".jpg",
}


class _Counted:
    """The real source, counting the reader's calls into it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in ("read", "readline", "peek"):
            return attr

        def counted(*args: Any) -> Any:
            self.calls += 1
            return attr(*args)

        return counted


def _read(path: Path, fmt: str, polite: bool = False) -> tuple[list[str], list[int], int]:
    """The ids read, the rejected rows' lines and the calls into the source."""
    rejected: list[int] = []
    with open_binary(path) as raw:
        source = _Counted(cast(IO[bytes], _Yielding(raw)) if polite else raw)
        ids = [
            p.item_id
            for p in read_products(
                cast(IO[bytes], source), fmt, None, lambda line, _: rejected.append(line)
            )
        ]
    return ids, rejected, source.calls


def test_a_gzip_bomb_of_newlines_after_a_product_is_refused_without_a_step_per_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gzip bound set low (1 MiB): 2 MiB of newlines after a product are refused at the
    bound, read in some hundred calls where there were two million (one per line)."""
    monkeypatch.setattr(catalog_formats, "GZIP_FLOOR", 1 << 20)
    path = tmp_path / "bomb.jsonl.gz"
    path.write_bytes(gzip.compress(json.dumps(PRODUCT).encode() + b"\n" * (2 << 20), 9))
    with open_binary(path) as raw:
        source = _Counted(raw)
        with pytest.raises(InvalidFeed, match="a gzip bomb"):
            list(read_products(cast(IO[bytes], source), "jsonl"))
    assert source.calls < 10_000, source.calls


@pytest.mark.parametrize("polite", [False, True])  # persona catalog sync reads through _Yielding
def test_blank_lines_of_a_jsonl_feed_are_read_in_bulk_with_their_line_numbers(
    tmp_path: Path, polite: bool
) -> None:
    blanks = "".join(BLANKS[i % len(BLANKS)] for i in range(100_000))
    path = tmp_path / "feed.jsonl"
    product = json.dumps(PRODUCT)
    second = json.dumps(PRODUCT | {"item_id": "p2"})
    path.write_text(f"{product}\n{blanks}not json\n{blanks}{second}\n{blanks}", encoding="utf-8")
    ids, rejected, calls = _read(path, "jsonl", polite)
    assert ids == ["p1", "p2"]
    assert rejected == [100_002]
    assert calls < 3_000, calls  # 300,003 readline calls before


@pytest.mark.parametrize(("fmt", "sep"), [("csv", ","), ("tsv", "\t")])
def test_blank_lines_of_a_csv_feed_are_read_in_bulk_with_their_line_numbers(
    tmp_path: Path, fmt: str, sep: str
) -> None:
    blanks = "".join(BLANKS[i % len(BLANKS)] for i in range(50_000))
    header = sep.join(["item_id", "title", "currency", "url", "image_url", "price"])
    path = tmp_path / f"feed.{fmt}"
    cells = ["Lamp", "EUR", URL, URL + ".jpg"]
    rows = [sep.join(["p1", *cells, "12.5"]), sep.join(["p2", *cells, "1", "extra"])]
    path.write_text(f"{header}\n{blanks}{rows[0]}\n{blanks}{rows[1]}\n{blanks}", encoding="utf-8")
    ids, rejected, calls = _read(path, fmt)
    assert ids == ["p1"]
    assert rejected == [100_003]  # more cells than header columns
    assert calls < 3_000, calls


def test_a_quoted_cell_holding_blank_lines_keeps_them(tmp_path: Path) -> None:
    """Blank lines inside a quoted cell are the cell's, not skipped; the rows after it keep
    their line numbers."""
    path = tmp_path / "feed.csv"
    path.write_text(
        f"item_id,title,currency,url,image_url,description,price\n\n\np1,Lamp,EUR,{URL},{URL}.jpg,"
        f'"red\n\n  \nlamp",12.5\n\n\np2,Lamp,EUR,{URL},{URL}.jpg,,oops\n',
        encoding="utf-8",
    )
    rejected: list[int] = []
    with open_binary(path) as raw:
        products = list(read_products(raw, "csv", None, lambda line, _: rejected.append(line)))
    assert [p.description for p in products] == ["red\n\n  \nlamp"]
    assert rejected == [10]
