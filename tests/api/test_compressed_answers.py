"""Large send-time answers (`POST /v1/blocks:batch`, `POST /v1/render`) are gzipped for a client
that accepts gzip, from `COMPRESS_FROM` bytes on: they went out uncompressed (a 1000-recipient
HTML batch is ~6.5 MB; gzipped at level 1, ~0.34 MB: benchmarks/batch_compression.py). Small
answers and block GETs (the hot path) go out as they are; every batch and render answer says
`Vary: Accept-Encoding`."""

from __future__ import annotations

import gzip
import http.client
import json
from typing import Any

import msgpack
import pytest

from api.encodings import COMPRESS_FROM, accepts_gzip
from tests.api.test_schemathesis import HEADERS, Server

MANY = [f"u{n}" for n in range(5)] + [f"stranger-{n}" for n in range(995)]  # 1000 recipients
BATCH = {"block": "recommendations", "format": "html", "user_ids": MANY}
RENDER = {"template": "<p>Hi {{ user.user_id }}</p>{{ blocks.recommendations }}", "user_ids": MANY}


def call(
    server: Server, method: str, path: str, document: Any = None, **headers: str
) -> tuple[int, Any, bytes]:
    """(status, headers, body as sent) of one request: http.client inflates nothing."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    body = None if document is None else json.dumps(document).encode()
    sent = {**HEADERS, **({"Content-Type": "application/json"} if body else {}), **headers}
    connection.request(method, path, body=body, headers=sent)
    answer = connection.getresponse()
    try:
        return answer.status, answer.headers, answer.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("path", "document"), [("/v1/blocks:batch", BATCH), ("/v1/render", RENDER)]
)
@pytest.mark.parametrize("accept", ["application/json", "application/msgpack"])
def test_a_large_answer_is_gzipped_for_a_client_that_accepts_it(
    api_server: Server, path: str, document: Any, accept: str
) -> None:
    status, headers, plain = call(api_server, "POST", path, document, Accept=accept)
    assert status == 200
    assert headers.get("Content-Encoding") is None
    assert len(plain) >= COMPRESS_FROM
    status, headers, packed = call(
        api_server, "POST", path, document, Accept=accept, **{"Accept-Encoding": "gzip, br"}
    )
    assert status == 200
    assert headers.get("Content-Encoding") == "gzip"
    assert int(headers["Content-Length"]) == len(packed) < len(plain) / 4
    assert headers.get("Content-Type") is not None
    assert accept in headers["Content-Type"]
    load = json.loads if accept == "application/json" else msgpack.unpackb
    assert load(gzip.decompress(packed)) == load(plain)
    for answer in (headers,):
        assert "accept-encoding" in answer.get("Vary", "").lower()


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("gzip;q=0", False),
        ("gzip;q=0, deflate", False),
        ("identity", False),
        ("*", True),
        ("*;q=0", False),
        ("x-gzip", True),
        ("GZIP;Q=0.5", True),
        ("gzip, identity;q=0", True),
    ],
)
def test_accept_encoding_q_values_decide(
    api_server: Server, accept_encoding: str, gzipped: bool
) -> None:
    status, headers, body = call(
        api_server, "POST", "/v1/blocks:batch", BATCH, **{"Accept-Encoding": accept_encoding}
    )
    assert status == 200
    assert (headers.get("Content-Encoding") == "gzip") is gzipped
    assert "accept-encoding" in headers.get("Vary", "").lower()
    text = gzip.decompress(body) if gzipped else body
    assert len(json.loads(text)["results"]) == len(MANY)


def test_a_small_answer_goes_out_as_it_is(api_server: Server) -> None:
    small = {**BATCH, "user_ids": ["u1"]}
    status, headers, body = call(
        api_server, "POST", "/v1/blocks:batch", small, **{"Accept-Encoding": "gzip"}
    )
    assert status == 200
    assert headers.get("Content-Encoding") is None
    assert "accept-encoding" in headers.get("Vary", "").lower()
    assert list(json.loads(body)["results"]) == ["u1"]


def test_a_block_get_goes_out_as_it_is(api_server: Server) -> None:
    status, headers, body = call(
        api_server, "GET", "/v1/users/u1/blocks/recommendations", **{"Accept-Encoding": "gzip"}
    )
    assert status == 200
    assert headers.get("Content-Encoding") is None
    assert b"<" in body


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("", False),
        ("gzip", True),
        ("deflate, gzip;q=1.0, *;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("*", True),
        ("br;q=1, *;q=0", False),
        ("gzip;q=0, *", False),  # named beats `*`
        ("gzip;q=nonsense", False),
        ("identity;q=0", False),
    ],
)
def test_accepts_gzip(header: str, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted
