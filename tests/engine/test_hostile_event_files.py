"""Hostile event files for `read_events` (what `persona replay` and `persona models` read): binary
garbage, a 10 GiB line, a damaged gzip, a CSV cell that never ends. Each ends in an InvalidEvent
naming the line, in bounded memory, never a UnicodeDecodeError, csv.Error or MemoryError."""

from __future__ import annotations

import gzip
import hashlib
import json
import tracemalloc
from pathlib import Path

import pytest

from engine.events import InvalidEvent
from engine.sources import (
    MAX_LINE,
    UCI_HEADER,
    SourceError,
    _Ids,
    detect_format,
    read_events,
)

EVENT = {"event_id": "e1", "type": "page_view", "user_id": "u1", "ts": "2024-01-01T00:00:00Z"}


def _sparse(path: Path, size: int) -> Path:
    with path.open("wb") as out:
        out.truncate(size)  # NUL bytes that take no disk space
    return path


def test_binary_garbage_is_not_an_event_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.bin"
    path.write_bytes(bytes(range(255, -1, -1)) * 100)
    with pytest.raises(InvalidEvent, match="line 1: not UTF-8 text"):
        list(read_events(path))


def test_garbage_after_good_lines_names_its_line_even_when_errors_are_collected(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(json.dumps(EVENT).encode() + b"\n\xff\xfe\x00garbage\n")
    errors: list[SourceError] = []
    with pytest.raises(InvalidEvent, match="line 2: not UTF-8 text"):
        list(read_events(path, errors=errors))


def test_a_10_gib_line_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    path = _sparse(tmp_path / "sparse.jsonl", 10 << 30)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidEvent, match=f"line 1: .*longer than {MAX_LINE} characters"):
            list(read_events(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # the line is never held whole (it was: MemoryError)


def test_a_long_line_after_a_good_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps(EVENT) + "\n" + "x" * (MAX_LINE + 10) + "\n")
    with pytest.raises(InvalidEvent, match="line 2: "):
        list(read_events(path, errors=[]))


def test_a_damaged_gzip_file_is_an_invalid_event(tmp_path: Path) -> None:
    whole = gzip.compress((json.dumps(EVENT) + "\n").encode() * 10_000)
    path = tmp_path / "cut.jsonl.gz"
    # the gzip reader shared with catalog feeds says what is wrong (engine/catalog_formats.py)
    damaged = "the gzip data is damaged or cut short"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InvalidEvent, match=damaged):
        list(read_events(path, errors=[]))
    path.write_bytes(whole[:10] + b"\x00" * 50 + whole[60:])
    with pytest.raises(InvalidEvent, match=damaged):
        list(read_events(path, errors=[]))


def test_a_csv_cell_that_never_ends_is_an_invalid_event(tmp_path: Path) -> None:
    path = tmp_path / "uci.csv"
    row = '536365,85123A,"never closed,6,2010-12-01 08:26,2.55,17850,UK\n'
    path.write_text(",".join(UCI_HEADER) + "\n" + row + "more,text\n" * 20_000)
    with pytest.raises(InvalidEvent, match="line 2"):
        list(read_events(path, errors=[]))


def test_an_unknown_format_is_an_invalid_event(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(InvalidEvent, match="unknown event file format"):
        detect_format(path)


def test_deterministic_ids_keep_bounded_memory_and_their_values() -> None:
    """The per-row counter behind the public formats' ids grew with the file (~85 bytes a row)."""
    window = 100_000  # _Ids.WINDOW
    ids = _Ids("rees")
    first = [ids(f"row-{i}") for i in range(window + 5_000)]
    assert len(ids._seen) <= window
    # ids as they were: a digest of the content, the ordinal mixed in for identical neighbours
    digest = hashlib.blake2b(b"row-0", digest_size=10).digest()
    assert first[0] == f"rees-{digest.hex()}"
    again = _Ids("rees")
    twice = [again("same"), again("same"), again("other"), again("same")]
    assert len(set(twice)) == 4 and twice[0] == f"rees-{_digest('same')}"
    ordinal = (1).to_bytes(4, "big")
    second = hashlib.blake2b(bytes.fromhex(_digest("same")) + ordinal, digest_size=10)
    assert twice[1] == f"rees-{second.hexdigest()}"


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32"])
def test_a_wide_text_event_file_is_said_to_be_one(tmp_path: Path, codec: str) -> None:
    """An events file saved as "Unicode" by a Windows editor (UTF-16 with its byte order mark)
    was "line 1: not UTF-8 text (byte 0 of the line): not an event file?"; the catalog says of
    the same feed which encoding it is and what to do. So do event files now."""
    path = tmp_path / "events.jsonl"
    text = json.dumps(EVENT) + "\n"
    bom = {"utf-16-be": "\ufeff"}.get(codec, "")  # the BE codec writes no mark of its own
    path.write_bytes((bom + text).encode(codec))
    wide = codec.upper()[:6]
    with pytest.raises(InvalidEvent, match=f"line 1: the file is {wide} text .*save it as UTF-8"):
        list(read_events(path))
    with pytest.raises(InvalidEvent, match=f"the file is {wide} text"):
        detect_format(path)


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_a_wide_text_event_file_whose_first_line_is_blank_is_said_to_be_one(
    tmp_path: Path, codec: str, end: str
) -> None:
    """The first line of a wide text file holding only its byte order mark and a line end was
    judged by the bytes of that line alone: "UTF-16" for some (little-endian, a line feed, whose
    high byte is on the next line), "not UTF-8 text: not an event file?" for others (a Windows
    editor's CR LF, any big-endian file). The wide text is now told by what follows the mark,
    the next line's first bytes included."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(("\ufeff" + end + json.dumps(EVENT) + "\n").encode(codec))
    wide = codec.upper()[:6]
    with pytest.raises(InvalidEvent, match=f"line 1: the file is {wide} text .*save it as UTF-8"):
        list(read_events(path))
    with pytest.raises(InvalidEvent, match=f"the file is {wide} text"):
        detect_format(path)


@pytest.mark.parametrize("mark", [b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xff\xfe\x00\x00"])
def test_a_file_of_a_byte_order_mark_alone_is_an_empty_file(tmp_path: Path, mark: bytes) -> None:
    """A file holding a UTF-8 byte order mark alone reads as an empty file (no events); one
    holding a UTF-16 or UTF-32 mark alone was "the file is UTF-16 text (its byte order mark says
    so): save it as UTF-8" though it holds no text to save. It is an empty file too now."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(mark)
    assert detect_format(path) == "jsonl"
    assert list(read_events(path)) == []


def test_utf8_after_a_wide_mark_and_a_line_feed_is_not_taken_for_wide_text(
    tmp_path: Path,
) -> None:
    """A UTF-16 mark, a one-byte line feed and UTF-8 lines (no wide text: its line feed is two
    bytes) was said to be UTF-16 text, judged by the mark alone: it is not UTF-8 text."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\xff\xfe\n" + json.dumps(EVENT).encode() + b"\n")
    with pytest.raises(InvalidEvent, match="line 1: not UTF-8 text"):
        list(read_events(path))
