"""A click link's token never reaches a log line (api/observability.py, api/gate.py,
api/limits.py; engine.clicks.logged_path). A token is base64 of who clicked what (the user, the
block, the item): written into the access log, the log would be a store of clicks that anybody
reading logs can decode and that outlives the user's erasure. Logs write `/c/~<12 hex digits>`
(the start of the token's SHA-256) instead, and the access line still names the route."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.limits import ServingOptions
from api.observability import JsonFormatter
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.catalog import Product
from engine.clicks import MINUTE_MS, Click, click_key, logged_path, make_token
from engine.events import Event
from models.registry import ModelSet

SECRET = "cluster-secret-of-this-test-cccccccccc"
KEY = click_key(SECRET)
USER = "alice-7f3e"


def token(item: str = "A") -> str:
    made = int(time.time() * 1000) // MINUTE_MS
    return make_token(KEY, Click(USER, "recommendations", "default", item, made))


class Lines(logging.Handler):
    """Every record of the `persona` loggers, formatted as stderr gets it (JSON lines)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def lines() -> Iterator[Lines]:
    keep = Lines()
    logger = logging.getLogger("persona")
    level = logger.level
    logger.addHandler(keep)
    logger.setLevel(logging.DEBUG)
    yield keep
    logger.removeHandler(keep)
    logger.setLevel(level)


class Slow(MemoryState):
    async def produce(self, events: list[Event]) -> None:
        await asyncio.sleep(1.0)


class Broken(MemoryState):
    async def produce(self, events: list[Event]) -> None:
        raise RuntimeError("the broker is away")


def _state(state: MemoryState) -> MemoryState:
    state.put_product(
        Product(
            "A",
            "Tea",
            "https://shop.example.com/p/A",
            "https://shop.example.com/A.jpg",
            2.5,
            "GBP",
            "in_stock",
        )
    )
    return state


async def _client(state: MemoryState, **options: object) -> TestClient:
    content = ContentService(_state(state), ModelSet.default(), Renderer(), BlockPolicy())
    serving = ServingOptions(cluster_secret=SECRET, **options)  # type: ignore[arg-type]
    return TestClient(TestServer(create_app(content, KeyRing([]), serving)))


def _hidden(text: str, tok: str) -> None:
    payload, signature = tok.split(".")
    assert tok not in text
    assert payload not in text and signature not in text
    assert USER not in text  # the token's decoded contents neither


async def test_a_clicks_access_line_holds_no_token(lines: Lines) -> None:
    tok = token()
    payload = base64.urlsafe_b64decode(tok.split(".")[0] + "==")
    assert USER.encode() in payload  # what the old access line gave away to any reader
    async with await _client(MemoryState()) as client:
        r = await client.get(f"/c/{tok}", allow_redirects=False)
        assert r.status == 302
    access = [json.loads(line) for line in lines.lines if '"persona.access"' in line]
    (line,) = [a for a in access if a["route"] == "/c/{token}"]
    _hidden(json.dumps(line), tok)
    assert line["status"] == 302 and line["method"] == "GET"
    assert line["path"] == logged_path(f"/c/{tok}")
    assert line["path"].startswith("/c/~") and len(line["path"]) == len("/c/~") + 12
    assert line["msg"] == f"GET {line['path']} 302"
    for text in lines.lines:
        _hidden(text, tok)


async def test_a_token_the_router_does_not_take_is_hidden_too(lines: Lines) -> None:
    """A mail client that appends a slash (or anything after the token) misses the route: the
    unmatched 404's access line held the whole token."""
    tok = token()
    async with await _client(MemoryState()) as client:
        for path in (f"/c/{tok}/", f"/c/{tok}/x"):
            r = await client.get(path, allow_redirects=False)
            assert r.status == 404
    assert lines.lines
    for text in lines.lines:
        _hidden(text, tok)


async def test_a_failed_click_logs_its_route_not_its_token(lines: Lines) -> None:
    """The errors middleware's `unhandled error on GET <path>` (a broker that fails)."""
    tok = token()
    async with await _client(Broken()) as client:
        r = await client.get(f"/c/{tok}", allow_redirects=False)
        assert r.status == 500
    failed = [line for line in lines.lines if "unhandled error" in line]
    assert failed and all(logged_path(f"/c/{tok}") in line for line in failed)
    for text in lines.lines:
        _hidden(text, tok)


async def test_a_click_that_times_out_logs_no_token(lines: Lines) -> None:
    """The limits middleware's `<path> timed out` warning and its debug line."""
    tok = token()
    async with await _client(Slow(), request_timeout=0.05) as client:
        r = await client.get(f"/c/{tok}", allow_redirects=False)
        assert r.status == 503
    assert [line for line in lines.lines if "timed out" in line]
    for text in lines.lines:
        _hidden(text, tok)


def test_logged_path_leaves_other_paths_alone() -> None:
    for path in ("/v1/users/u-1/blocks/recommendations", "/c", "/c/", "/v1/users/c/profile"):
        assert logged_path(path) == path
    tok = token()
    assert logged_path(f"/c/{tok}") == logged_path(f"/c/{tok}")  # one click's lines correlate
    assert logged_path(f"//c/{tok}") == logged_path(f"/c/{tok}")
    assert logged_path(f"/c/{tok}") != logged_path(f"/c/{token('B')}")
    assert logged_path("/c/\udcff").startswith("/c/~")  # undecodable bytes: no exception
