"""Blank lines in an event file (what `persona replay` and `persona models train/evaluate` read):
a gzip bomb of newlines (300 KB inflating to 64 MiB) was read a Python step per blank line, ~90 s
before the gzip bound refused it. Runs of blank lines are now consumed a buffer at a time and
counted, so line numbers stay right and a normal file's blank lines are still skipped."""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path
from typing import IO, Any

import pytest

import engine.catalog_formats as catalog_formats
import engine.sources as sources
from engine.events import InvalidEvent
from engine.sources import UCI_HEADER, ReadStats, SourceError, detect_format, read_events

EVENT = {"event_id": "e1", "type": "page_view", "user_id": "u1", "ts": "2024-01-01T00:00:00Z"}
# every kind of line `str.strip` leaves empty: ASCII white space, CRLF, NBSP, NEL, U+3000, ...
BLANKS = ["\n", "  \n", "\t\r\n", "\x1c\x1f\n", "\xa0\n", "\x85 \n", "\u2028\u3000\n", "\u202f\n"]


class _Counted:
    """The real source `open_binary` gives, counting the reader's calls into it."""

    def __init__(self, inner: IO[bytes], counter: list[int]) -> None:
        self._inner = inner
        self._counter = counter

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in ("read", "readline", "peek"):
            return attr

        def counted(*args: Any) -> Any:
            self._counter[0] += 1
            return attr(*args)

        return counted

    def __enter__(self) -> _Counted:
        return self

    def __exit__(self, *_: object) -> None:
        self._inner.close()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    counter = [0]
    real = sources.open_binary
    monkeypatch.setattr(sources, "open_binary", lambda path: _Counted(real(path), counter))
    return counter


def test_a_gzip_bomb_of_newlines_is_refused_without_a_step_per_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: list[int]
) -> None:
    """The gzip bound set low (1 MiB): 4 MiB of newlines are refused at the bound, having been
    read in some hundred calls where there were a million (one per line, ~90 s at 64 MiB)."""
    monkeypatch.setattr(catalog_formats, "GZIP_FLOOR", 1 << 20)
    path = tmp_path / "bomb.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n" * (4 << 20), 9))
    with pytest.raises(InvalidEvent, match=r"blank lines after line 1: .* a gzip bomb"):
        list(read_events(path))
    assert calls[0] < 10_000, calls[0]  # 1,048,577 readline calls before


def test_a_file_of_blank_lines_is_read_in_bulk_with_its_line_numbers(
    tmp_path: Path, calls: list[int]
) -> None:
    """200,000 blank lines of every kind between two lines: the bad line after them is named by
    its number, read in a few calls (one per line before)."""
    path = tmp_path / "blank.jsonl"
    blanks = "".join(BLANKS[i % len(BLANKS)] for i in range(200_000))
    path.write_text(json.dumps(EVENT) + "\n" + blanks + "not json\n", encoding="utf-8")
    with pytest.raises(InvalidEvent, match=r"^line 200002: "):
        list(read_events(path))
    assert calls[0] < 2_000, calls[0]
    errors: list[SourceError] = []
    assert [e.event_id for e in read_events(path, errors)] == ["e1"]
    assert [e.line for e in errors] == [200_002]
    calls[0] = 0
    assert detect_format(tmp_path / "blank.jsonl") == "jsonl"
    only_blank = tmp_path / "only_blank.jsonl"
    only_blank.write_text(blanks, encoding="utf-8")
    stats = ReadStats()
    assert list(read_events(only_blank, stats=stats)) == []
    assert stats.rows == 0 and calls[0] < 4_000, calls[0]


def test_blank_lines_of_csv_and_otto_files_keep_their_line_numbers(
    tmp_path: Path, calls: list[int]
) -> None:
    uci = tmp_path / "uci.csv"
    row = "536365,85123A,LAMP,6,2010-12-01 08:26,2.55,17850,United Kingdom\n"
    blanks = "".join(BLANKS[i % len(BLANKS)] for i in range(50_000))
    uci.write_text(",".join(UCI_HEADER) + "\n" + blanks + row + blanks + "x,y,z,oops\n")
    errors: list[SourceError] = []
    assert len(list(read_events(uci, errors))) == 1
    assert [e.line for e in errors] == [100_003]
    otto = tmp_path / "otto.jsonl"
    session = {"session": 1, "events": [{"aid": 5, "ts": 1_600_000_000_000, "type": "clicks"}]}
    otto.write_text(json.dumps(session) + "\n" + blanks + '{"session": 2}\n')
    errors = []
    assert len(list(read_events(otto, errors))) == 1
    assert [e.line for e in errors] == [50_002]
    assert calls[0] < 5_000, calls[0]


def test_a_normal_file_with_some_blank_lines_reads_as_before(tmp_path: Path) -> None:
    """Blank lines between events, at the start and the end are skipped; a quoted CSV cell that
    holds blank lines keeps them (its row's id digests the cell as written)."""
    lines = ["\n", "  \n"]
    for i in range(20):
        lines.append(json.dumps(EVENT | {"event_id": f"e{i}"}) + "\n")
        lines.extend(BLANKS[: i % 4])
    path = tmp_path / "events.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    stats = ReadStats()
    assert [e.event_id for e in read_events(path, stats=stats)] == [f"e{i}" for i in range(20)]
    assert stats.rows == 20 and stats.invalid == 0
    gz = tmp_path / "events.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert len(list(read_events(gz))) == 20

    uci = tmp_path / "uci.csv"
    cells = ["536365", "85123A", "LAMP\n\n  \nRED", "6", "2010-12-01 08:26", "2.55", "17850", "UK"]
    quoted = ",".join(f'"{c}"' for c in cells)
    uci.write_text(",".join(UCI_HEADER) + "\n\n\n" + quoted + "\n\n" + quoted + "\n")
    events = list(read_events(uci))
    first = hashlib.blake2b("\x1f".join(cells).encode(), digest_size=10)
    second = hashlib.blake2b(first.digest() + (1).to_bytes(4, "big"), digest_size=10)
    assert [e.event_id for e in events] == [f"uci-{first.hexdigest()}", f"uci-{second.hexdigest()}"]


def test_the_blank_run_is_what_str_strip_takes_away(tmp_path: Path) -> None:
    """skip_blank_lines takes the lines `not line.strip()` skips, and no other."""
    from engine.catalog_formats import skip_blank_lines

    spaces = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    path = tmp_path / "spaces.txt"
    path.write_bytes("".join(c + "\n" for c in spaces).encode() + b"\xe2\x80\x8b\n\n")  # ZWSP
    with catalog_formats.open_binary(path) as source:
        assert skip_blank_lines(source) == len(spaces) + spaces.count("\n")
        assert source.readline() == "\u200b\n".encode()
        assert skip_blank_lines(source) == 1 and source.readline() == b""
        assert skip_blank_lines(source) == 0


@pytest.mark.parametrize("before", ["\n", "\n  \n\n", "\t\n"])
def test_blank_lines_before_a_csv_header_are_not_taken_for_it(tmp_path: Path, before: str) -> None:
    """A CSV events file that began with a blank line took that line for its header and read the
    real header as data: "line 2: bad UCI row: could not convert string to float: 'CustomerID'"
    and its first row refused. Blank lines before the header are skipped like those between
    rows; line numbers stay the file's."""
    uci = tmp_path / "uci.csv"
    row = "536365,85123A,LAMP,6,2010-12-01 08:26,2.55,17850,United Kingdom\n"
    uci.write_text(before + ",".join(UCI_HEADER) + "\n" + row + "x,y,z,oops\n")
    errors: list[SourceError] = []
    events = list(read_events(uci, errors))
    assert [e.user_id for e in events] == ["17850"], errors
    assert [e.line for e in errors] == [before.count("\n") + 3], errors
