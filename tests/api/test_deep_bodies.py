"""Every route that takes a body (found in /openapi.json, so a new route is attacked too) refuses
hostile JSON with a 4xx problem body, promptly: JSON nested deeper than Python's stack (arrays,
objects, NDJSON), an integer over Python's 4,300-digit limit, a deep msgpack body. Before, the
admin routes (models, rules, experiments) answered 500 for deep JSON (a RecursionError)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from tests.api.test_schemathesis import HEADERS, Server

BODIES = {
    "deep array": (b"[" * 100_000 + b"]" * 100_000, "application/json"),
    "deep object": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "application/json"),
    "deep ndjson": (b"[" * 100_000 + b"]" * 100_000, "application/x-ndjson"),
    "long integer": (b'{"user_ids": ["u1"], "n": ' + b"7" * 5_000 + b"}", "application/json"),
    "deep msgpack": (b"\x91" * 100_000 + b"\xc0", "application/msgpack"),
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
