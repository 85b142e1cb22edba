"""Every route that takes a body (found in /openapi.json, so a new route is attacked too) refuses
hostile JSON with a 4xx problem body, promptly: JSON nested deeper than Python's stack (arrays,
objects, NDJSON), an integer over Python's 4,300-digit limit, a deep msgpack body, msgpack headers
claiming 2**32 entries, ext types and timestamps where the routes read their fields. Before, the
admin routes (models, rules, experiments) answered 500 for deep JSON (a RecursionError)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import msgpack
import pytest

from tests.api.test_schemathesis import HEADERS, Server

MSGPACK = "application/msgpack"
FIELDS = [  # what the body routes read: batch, render, events, rules, experiments, models
    *("user_ids", "block", "format", "template", "data", "params", "variant", "locale"),
    *("events", "event_id", "type", "user_id", "ts", "item_id", "name", "version"),
    *("rules", "experiments", "items"),
]


def packb(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


BODIES = {
    "deep array": (b"[" * 100_000 + b"]" * 100_000, "application/json"),
    "deep object": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "application/json"),
    "deep ndjson": (b"[" * 100_000 + b"]" * 100_000, "application/x-ndjson"),
    "long integer": (b'{"user_ids": ["u1"], "n": ' + b"7" * 5_000 + b"}", "application/json"),
    "deep msgpack": (b"\x91" * 100_000 + b"\xc0", "application/msgpack"),
    # headers claiming 2**32 - 1 entries or bytes in five bytes: refused, never allocated
    "msgpack map of 2**32": (b"\xdf\xff\xff\xff\xff", "application/msgpack"),
    "msgpack array of 2**32": (b"\xdd\xff\xff\xff\xff", "application/msgpack"),
    "msgpack str of 4 GiB": (b"\xdb\xff\xff\xff\xff", "application/msgpack"),
    "msgpack ext of 4 GiB": (b"\xc9\xff\xff\xff\xff\x05", "application/msgpack"),
    # ext types (an application's own, and the timestamp msgpack decodes to an object) where
    # every route reads its fields, alone and in lists; bytes (msgpack bin) and bytes keys too
    "msgpack ext": (packb(msgpack.ExtType(5, b"x")), "application/msgpack"),
    "msgpack ext fields": (packb(dict.fromkeys(FIELDS, msgpack.ExtType(5, b"x"))), MSGPACK),
    "msgpack ext lists": (packb({f: [msgpack.ExtType(5, b"x")] for f in FIELDS}), MSGPACK),
    "msgpack timestamps": (packb(dict.fromkeys(FIELDS, msgpack.Timestamp(0))), MSGPACK),
    "msgpack timestamp lists": (packb({f: [msgpack.Timestamp(0)] for f in FIELDS}), MSGPACK),
    "msgpack bin lists": (packb({f: [b"\x00u1"] for f in FIELDS}), MSGPACK),
    "msgpack bin keys": (b"\x81\xc4\x08user_ids\x91\xa2u1", MSGPACK),
    "msgpack event of ext": (
        packb(
            [
                {
                    "event_id": msgpack.Timestamp(0),
                    "type": "view",
                    "user_id": "u1",
                    "ts": msgpack.Timestamp(0),
                    "item_id": msgpack.ExtType(5, b"x"),
                }
            ]
        ),
        MSGPACK,
    ),
}


def _routes(api_server: Server) -> list[tuple[str, str]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{api_server.port}/openapi.json") as answer:
        paths = json.load(answer)["paths"]
    found = []
    for path, operations in paths.items():
        for method in operations:
            if method.upper() in ("POST", "PUT", "PATCH"):
                concrete = path
                while "{" in concrete:  # any path parameter: a plain value
                    start, end = concrete.index("{"), concrete.index("}")
                    concrete = concrete[:start] + "x" + concrete[end + 1 :]
                found.append((method.upper(), concrete))
    return found


def test_the_document_lists_the_routes_that_take_bodies(api_server: Server) -> None:
    routes = _routes(api_server)
    for route in [("POST", "/v1/events"), ("POST", "/v1/render"), ("PUT", "/v1/rules")]:
        assert route in routes


@pytest.mark.parametrize("kind", list(BODIES))
def test_every_body_route_refuses_hostile_json_with_a_4xx_problem(
    api_server: Server, kind: str
) -> None:
    body, content_type = BODIES[kind]
    wrong = []
    for method, path in _routes(api_server):
        request = urllib.request.Request(
            f"http://127.0.0.1:{api_server.port}{path}",
            data=body,
            method=method,
            headers={**HEADERS, "Content-Type": content_type},
        )
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status, headers = answer.status, answer.headers
        except urllib.error.HTTPError as refused:
            status, headers = refused.code, refused.headers
        took = time.monotonic() - started
        problem = headers.get("Content-Type", "").startswith("application/problem+json")
        if not (400 <= status < 500 and problem and took < 5):
            wrong.append((method, path, status, headers.get("Content-Type"), round(took, 1)))
    assert wrong == []


def test_the_server_still_answers(api_server: Server) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{api_server.port}/healthz") as answer:
        assert answer.status == 200
