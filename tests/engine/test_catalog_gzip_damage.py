"""A damaged or cut gzip feed is an unreadable feed (InvalidFeed, what `persona catalog import`
reports with exit 1 and a scheduled sync logs as a failed pull), not an EOFError, BadGzipFile or
zlib.error out of the reader (the command line printed a traceback for a cut download)."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.catalog_formats import InvalidFeed, open_binary, read_products

FEED = b"item_id,title,url,image_url,price,currency\n" + b"".join(
    b"a%d,T,https://x.example/a,https://x.example/a.png,1.5,EUR\n" % i for i in range(2000)
)
WHOLE = gzip.compress(FEED)
DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "cut short": lambda b: b[: len(b) // 2],
    "cut before its trailer": lambda b: b[:-6],
    "an unknown compression method": lambda b: b[:2] + b"\x07" + b[3:],
    "a wrong CRC": lambda b: b[:-8] + b"\0\0\0\0" + b[-4:],
    "junk after the stream": lambda b: b + b"trailing junk",
    "a corrupt deflate stream": lambda b: b[:20] + bytes(40) + b[60:],
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_gzip_feed_is_an_invalid_feed(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "feed.csv.gz"
    path.write_bytes(DAMAGE[damage](WHOLE))
    with open_binary(path) as source, pytest.raises(InvalidFeed, match="gzip"):
        list(read_products(source, "auto", None, lambda line, reason: None))


def test_a_whole_gzip_feed_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "feed.csv.gz"
    path.write_bytes(WHOLE)
    with open_binary(path) as source:
        assert len(list(read_products(source))) == 2000
