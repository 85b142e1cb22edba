"""A file that keeps growing while Persona reads it (another process appends to it for ever: a
log, an export still running): `read_events` (what `persona replay` and `persona models` read)
and a catalog feed (`persona catalog import`) read the file as it was when opened and end. What
was appended meanwhile is not read, and the reader says so (InvalidEvent / InvalidFeed naming
the growth) rather than ending as if the file were whole, or reading for ever.

The appending process is played by the test itself, one line appended for each line read: an
unbounded reader then never reaches the end, whatever the machine's speed (each test guards
its loop with a count, so the unfixed reader fails instead of hanging)."""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.catalog_formats import InvalidFeed, _AsOpened, open_binary, read_products
from engine.events import InvalidEvent
from engine.sources import read_events

LINES = 2000  # several buffers of lines: the reader has read only some of them when growth starts
HEADER = b"item_id,title,url,image_url,price,currency\n"
GUARD = 3 * LINES  # a reader past this count read what was appended


def _event(i: int) -> bytes:
    event = {"event_id": f"e{i}", "type": "page_view", "user_id": "u1"}
    return json.dumps({**event, "ts": "2024-01-01T00:00:00Z"}).encode() + b"\n"


def _row(i: int) -> bytes:
    url = f"https://shop.example/p{i}"
    return f"p{i},Product {i},{url},{url}.jpg,9.99,EUR\n".encode()


def _growing(path: Path, items: Iterator[object], line: bytes) -> int:
    """Read `items`, appending `line` to `path` for each one; how many were read (GUARD + 1:
    the reader did not stop)."""
    count = 0
    with path.open("ab") as out:
        for _ in items:
            count += 1
            if count > GUARD:
                break
            out.write(line)
            out.flush()
    return count


def test_an_event_file_that_grows_while_read_is_read_as_it_was_opened(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(_event(i) for i in range(LINES)))
    with pytest.raises(InvalidEvent, match="grew while it was read"):
        _growing(path, read_events(path), _event(LINES + 1))


def test_the_events_read_before_the_growth_is_seen_are_all_of_the_file_as_opened(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(_event(i) for i in range(LINES)))
    read: list[str] = []

    def events() -> Iterator[object]:
        for event in read_events(path):
            read.append(event.event_id)
            yield event

    with pytest.raises(InvalidEvent, match="grew while it was read"):
        _growing(path, events(), _event(LINES + 1))
    assert read == [f"e{i}" for i in range(LINES)]


def test_a_gzip_event_file_that_grows_while_read_ends(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(_event(i) for i in range(LINES))))
    # gzip members appended one after another: a gzip file that keeps growing
    count = _growing_or_told(path, read_events(path), gzip.compress(_event(LINES + 1)))
    assert count <= LINES


def _growing_or_told(path: Path, items: Iterator[object], line: bytes) -> int:
    try:
        return _growing(path, items, line)
    except (InvalidEvent, InvalidFeed) as exc:
        assert "grew while it was read" in str(exc)
        return 0


def test_a_feed_that_grows_while_read_is_read_as_it_was_opened(tmp_path: Path) -> None:
    path = tmp_path / "products.csv"
    path.write_bytes(HEADER + b"".join(_row(i) for i in range(LINES)))
    with open_binary(path) as source, pytest.raises(InvalidFeed, match="grew while it was read"):
        _growing(path, read_products(source), _row(LINES + 1))


def test_a_file_that_does_not_grow_reads_whole(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(_event(i) for i in range(LINES)))
    assert len(list(read_events(path))) == LINES


def _shrinking(path: Path, items: Iterator[object], size: int) -> int:
    """Read `items`, cutting `path` to `size` bytes after the first; how many were read."""
    count = 0
    for _ in items:
        count += 1
        if count == 1:
            with path.open("r+b") as out:
                out.truncate(size)
    return count


def test_a_feed_cut_short_while_read_is_not_taken_for_whole(tmp_path: Path) -> None:
    """A feed truncated while read (an export rewriting it in place: `> feed.csv`, then the new
    rows) ended where the cut was as if the file ended there: a full sync then marked every
    product past the cut out of stock. Read as it was when opened, a file that comes up short
    of its size then is refused, naming what happened."""
    path = tmp_path / "products.csv"
    path.write_bytes(HEADER + b"".join(_row(i) for i in range(LINES)))
    cut = len(HEADER + b"".join(_row(i) for i in range(LINES // 2)))  # at a row's end
    rejected: list[int] = []
    with open_binary(path) as source, pytest.raises(InvalidFeed, match="shrank while it was read"):
        _shrinking(path, read_products(source, reject=lambda n, _: rejected.append(n)), cut)
    assert rejected == []


def test_an_event_file_cut_short_while_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(_event(i) for i in range(LINES)))
    cut = len(b"".join(_event(i) for i in range(LINES // 2)))  # at a line's end
    with pytest.raises(InvalidEvent, match="shrank while it was read"):
        _shrinking(path, read_events(path), cut)


def test_a_file_rewritten_in_place_to_its_size_while_read_is_refused(tmp_path: Path) -> None:
    """Rewritten in place to the very size it had (its later rows replaced): neither longer nor
    shorter, but written meanwhile (its modification time moved): half old, half new rows were
    read as one file."""
    path = tmp_path / "products.csv"
    path.write_bytes(HEADER + b"".join(_row(i) for i in range(LINES)))
    size = path.stat().st_size
    opened = path.stat().st_mtime_ns
    half = len(HEADER + b"".join(_row(i) for i in range(LINES // 2)))  # at a row's end
    new = b"".join(_row(i).replace(b"9.99", b"1.11") for i in range(LINES // 2, LINES))
    assert half + len(new) == size
    with open_binary(path) as source, pytest.raises(InvalidFeed, match="changed while it was read"):
        for n, _ in enumerate(read_products(source)):
            if n == 0:
                with path.open("r+b") as out:
                    out.seek(half)
                    out.write(new)
                os.utime(path, ns=(opened + 10**9, opened + 10**9))  # whatever the clock's tick


def test_seeking_the_file_as_opened_behaves_as_a_file_does(tmp_path: Path) -> None:
    """The raw file under `open_binary` (`_AsOpened`) raised KeyError for an unknown `whence`
    and took a seek before the start for the start (what was read next was not what a seek
    asked for). Now it answers as an io file does: OSError (EINVAL) for a position before the
    start, ValueError for an unknown `whence`; a position past the end reads nothing."""
    path = tmp_path / "feed.jsonl"
    path.write_bytes(b"abcdef")
    with open_binary(path) as src:
        assert src.read(2) == b"ab"
        for offset, whence in [(-1, os.SEEK_SET), (-3, os.SEEK_CUR), (-7, os.SEEK_END)]:
            with pytest.raises(OSError) as refused:
                src.seek(offset, whence)
            assert refused.value.errno == errno.EINVAL
        assert src.read(1) == b"c"  # a refused seek moves nothing
        assert src.seek(-2, os.SEEK_END) == 4 and src.read() == b"ef"
    fd = os.open(path, os.O_RDONLY)
    with io.FileIO(os.dup(fd)) as plain, _AsOpened(fd, os.fstat(fd)) as raw:
        for name, stream in (("plain", plain), ("as opened", raw)):
            with pytest.raises((ValueError, OSError)):
                stream.seek(0, 9)
            with pytest.raises(OSError):
                stream.seek(-1)
            assert stream.seek(2) == 2 and stream.seek(1, os.SEEK_CUR) == 3, name
            assert stream.seek(10) == 10 and stream.read(4) == b"", name
            assert stream.seek(-1, os.SEEK_END) == 5 and stream.read(4) == b"f", name
        with pytest.raises(ValueError, match="whence"):
            raw.seek(0, 9)
