"""POST /v1/events with the body mistakes producers commonly make: a BOM is ignored (as the topic
consumer ignores it, RFC 8259), and a body that cannot be read says what it looks like."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from models.registry import ModelSet

SECRET = "s3cret-kkkkkkkkkkkkkkkkk"
AUTH = {"Authorization": f"Bearer {SECRET}"}


def event(n: int) -> dict[str, Any]:
    return {
        "event_id": f"e{n}",
        "type": "add_to_cart",
        "user_id": "u1",
        "ts": int(time.time() * 1000),
        "item_id": "i1",
    }


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    keys = KeyRing.from_settings(f"all:{SECRET}:events:write", None)
    content = ContentService(MemoryState(), ModelSet.default(), Renderer(), BlockPolicy())
    async with TestClient(TestServer(create_app(content, keys))) as c:
        yield c


async def post(client: TestClient, body: str) -> tuple[int, dict[str, Any]]:
    r = await client.post("/v1/events", data=body.encode(), headers=AUTH)
    return r.status, await r.json(content_type=None)


@pytest.mark.parametrize(
    "body",
    [
        "\ufeff" + json.dumps(event(1)) + "\n" + json.dumps(event(2)) + "\n",
        "\ufeff" + json.dumps([event(1), event(2)]),
        "\ufeff" + json.dumps(event(1)) + "\r\n" + json.dumps(event(2)) + "\r\n",
    ],
)
async def test_a_leading_byte_order_mark_is_ignored(client: TestClient, body: str) -> None:
    """Before: 400 'line 1 is not JSON: Unexpected UTF-8 BOM (decode using utf-8-sig)'."""
    status, answer = await post(client, body)
    assert (status, answer["accepted"], answer["rejected"]) == (202, 2, 0), answer


async def test_a_pretty_printed_object_says_ndjson_is_one_event_per_line(
    client: TestClient,
) -> None:
    status, answer = await post(client, json.dumps(event(1), indent=2))
    assert status == 400
    assert "one JSON object over several lines" in answer["detail"], answer
    assert "one event per line" in answer["detail"] and "JSON array" in answer["detail"]


async def test_ndjson_lines_ending_in_commas_say_so(client: TestClient) -> None:
    body = json.dumps(event(1)) + ",\n" + json.dumps(event(2)) + ",\n"
    status, answer = await post(client, body)
    assert status == 400
    assert "line 1" in answer["detail"] and "comma after" in answer["detail"], answer


async def test_an_array_with_a_trailing_comma_says_so(client: TestClient) -> None:
    body = "[" + json.dumps(event(1)) + ",\n" + json.dumps(event(2)) + ",\n]"
    status, answer = await post(client, body)
    assert status == 400
    assert "Expecting value" in answer["detail"], answer  # json's message and position, kept
    assert "trailing comma" in answer["detail"], answer


async def test_an_array_of_arrays_says_to_send_the_events(client: TestClient) -> None:
    status, answer = await post(client, json.dumps([[event(1)], [event(2)]]))
    assert status == 202 and answer["rejected"] == 2
    assert "got an array" in answer["errors"][0]["reason"], answer


async def test_a_gzipped_body_without_its_content_encoding_says_to_name_it(
    client: TestClient,
) -> None:
    """Before: 400 'the body must be UTF-8 JSON or NDJSON', though the body was fine, only
    compressed without `Content-Encoding: gzip` (what a shop's HTTP client leaves out)."""
    import gzip

    body = gzip.compress(json.dumps([event(1)]).encode())
    r = await client.post("/v1/events", data=body, headers=AUTH)
    answer = await r.json(content_type=None)
    assert r.status == 400
    assert "gzip" in answer["detail"] and "Content-Encoding: gzip" in answer["detail"], answer
    r = await client.post("/v1/events", data=body, headers={**AUTH, "Content-Encoding": "gzip"})
    assert r.status == 202 and (await r.json())["accepted"] == 1


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "latin-1"])
async def test_a_body_in_another_encoding_names_it_or_says_utf_8(
    client: TestClient, encoding: str
) -> None:
    text = json.dumps([{**event(1), "props": {"query": "café"}}], ensure_ascii=False)
    r = await client.post("/v1/events", data=text.encode(encoding), headers=AUTH)
    answer = await r.json(content_type=None)
    assert r.status == 400 and "UTF-8" in answer["detail"], answer
    if encoding.startswith("utf-16"):
        assert "UTF-16" in answer["detail"], answer
    else:  # where: the first byte that is not UTF-8
        assert f"byte {text.index('é')} is not UTF-8" in answer["detail"], answer


@pytest.mark.parametrize("ndjson", [False, True])
async def test_an_event_giving_a_key_twice_is_one_refused_event(
    client: TestClient, ndjson: bool
) -> None:
    twice = json.dumps(event(1)).replace('"user_id": "u1"', '"user_id": "u1", "user_id": "u2"')
    items = [twice, json.dumps(event(2))]
    body = "\n".join(items) if ndjson else "[" + ", ".join(items) + "]"
    status, answer = await post(client, body)
    assert status == 202, answer
    assert answer["accepted"] == 1
    assert answer["errors"] == [
        {"index": 0, "reason": "the event gives the key 'user_id' more than once"}
    ]
