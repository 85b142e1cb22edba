"""The detail of a 401 (api/gate.py): it said "send Authorization: Bearer <api key>" to requests
that had sent one (a worker started without the keys its readers have answered every keyed route
so). A module of its own: its server's failed-authentication allowance is not spent by other
tests' attempts (tests/api/test_hostile_auth.py)."""

from __future__ import annotations

import json

import pytest

from api.auth import KeyRing
from api.gate import authorize_header
from tests.api.test_hostile_auth import GATED, get, raw
from tests.api.test_schemathesis import Server


@pytest.mark.parametrize("target", GATED[:4])
def test_a_401_says_whether_a_key_was_sent(api_server: Server, target: str) -> None:
    """The 401 said "send Authorization: Bearer <api key>" to requests that had sent one (a
    worker started without the keys its readers have answered every keyed route so)."""
    for keep_alive in (False, True):
        status, body = raw(api_server, get(api_server, target, b"Bearer " + b"x" * 32, keep_alive))
        assert status == 401 and "not one of this process's keys" in json.loads(body)["detail"]
        no_key = get(api_server, target, b"", keep_alive).replace(b"Authorization: \r\n", b"")
        status, body = raw(api_server, no_key)
        assert status == 401 and "send Authorization" in json.loads(body)["detail"]


def test_a_process_without_keys_says_so() -> None:
    _, refused = authorize_header(KeyRing([]), "Bearer " + "y" * 32, "content:read")
    assert refused is not None and refused.status == 401
    assert refused.text is not None and "this process has no API keys" in refused.text
