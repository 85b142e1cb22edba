"""The detail of a 401 (api/gate.py): it said "send Authorization: Bearer <api key>" to requests
that had sent one (a worker started without the keys its readers have answered every keyed route
so). A module of its own: its server's failed-authentication allowance is not spent by other
tests' attempts (tests/api/test_hostile_auth.py)."""

from __future__ import annotations

import base64
import json

import pytest

from api.auth import KeyRing
from api.gate import authorize_header
from tests.api.test_hostile_auth import GATED, get, raw
from tests.api.test_schemathesis import SECRET, Server


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


@pytest.mark.parametrize(
    ("credentials", "said"),
    [
        (f"{SECRET}:".encode(), "the password"),  # the key in the user name field
        (SECRET.encode(), "the password"),  # no colon: only a user name
        (b"\xff:\xff", "not UTF-8"),
    ],
)
def test_a_basic_401_says_what_is_wrong_with_the_credentials(
    api_server: Server, credentials: bytes, said: str
) -> None:
    """Basic credentials the feeds cannot take were answered "send Authorization: Bearer <api
    key>": an ad platform's form filled with the key as user name (and no password) was told to
    send a header it had sent, in a scheme it may not offer. The detail now says the key goes
    in the password, or that the password is no UTF-8 text."""
    header = b"Basic " + base64.b64encode(credentials)
    status, body = raw(api_server, get(api_server, "/v1/feeds/google.tsv", header))
    detail = json.loads(body)["detail"]
    assert status == 401 and said in detail and "Bearer" not in detail, detail
    assert SECRET not in detail  # a key sent in the wrong field is not echoed


def test_a_feed_401_without_credentials_names_basic_too() -> None:
    """A feed route takes HTTP Basic as well: its 401 says so (WWW-Authenticate says Basic)."""
    keys = KeyRing.from_settings(f"f:{'z' * 32}:feeds:read", None)
    _, refused = authorize_header(keys, "", "feeds:read")
    assert refused is not None and refused.text is not None
    assert "Basic" in json.loads(refused.text)["detail"]
    assert refused.headers["WWW-Authenticate"].startswith("Basic")
