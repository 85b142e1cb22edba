"""A hostile client against the API's authentication, over real sockets (the `api_server`
fixture: the API served by `HotRunner`, as workers and readers serve it), with the raw bytes a
client library would not send."""

from __future__ import annotations

import base64
import socket

import pytest

from tests.api.test_schemathesis import SECRET, Server


def raw(server: Server, request: bytes) -> tuple[int, bytes]:
    """The status and body (by its Content-Length) of one raw HTTP/1.1 request."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        conn.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
        length = int({k.lower(): v for k, v in fields.items()}.get(b"content-length", b"0"))
        while len(body) < length and (chunk := conn.recv(65536)):
            body += chunk
    return int(head.split(b" ", 2)[1]), body


def get(server: Server, target: str, authorization: bytes, keep_alive: bool = False) -> bytes:
    connection = b"keep-alive" if keep_alive else b"close"
    return (
        b"GET " + target.encode() + b" HTTP/1.1\r\nHost: t\r\nConnection: " + connection
        + b"\r\nAuthorization: " + authorization + b"\r\n\r\n"
    )  # fmt: skip


GATED = [
    "/v1/users/u1/blocks/recommendations",  # the hot path (api/hot.py)
    "/v1/users/u1/blocks/recommendations?format=json&n=3",  # hot_middleware
    "/v1/users/u1/profile",  # the middleware chain
    "/v1/users/u1/export",
    "/v1/models",
    "/v1/feeds/google.tsv",  # Basic is accepted here
    "/ui/preview",  # the page checks the key itself
]


@pytest.mark.parametrize("target", GATED)
@pytest.mark.parametrize(
    "authorization",
    [b"Bearer \xff\xfe-not-utf-8", b"Bearer " + SECRET.encode() + b"\xff"],
)
def test_a_key_that_is_not_utf8_is_a_401_not_a_500(
    api_server: Server, target: str, authorization: bytes
) -> None:
    """A header value aiohttp cannot decode as UTF-8 reaches the key check as surrogates; hashing
    it raised UnicodeEncodeError: every authenticated route answered 500 (with a traceback in the
    log) instead of 401, and the failed authentication was not counted against the address."""
    for keep_alive in (False, True):  # Front.wire hands a keep-alive block GET on; close: Front
        status, body = raw(api_server, get(api_server, target, authorization, keep_alive))
        assert status == 401, body[:300]
        assert b"Internal" not in body


@pytest.mark.parametrize(
    "authorization",
    [
        b"Basic \xc3\xa9",  # UTF-8 text, but not Base64's alphabet
        b"Basic \xff\xfe",  # not UTF-8: reaches the check as surrogates
        b"Basic dXNlcjo" + b"\xe2\x80\x8b",  # Base64 with a zero-width space after it
    ],
)
def test_basic_credentials_that_are_not_ascii_are_a_401_not_a_500(
    api_server: Server, authorization: bytes
) -> None:
    """The feeds take HTTP Basic: base64.b64decode raises a plain ValueError (not binascii.Error)
    for text with a character outside ASCII, which reached the errors middleware as a 500."""
    status, body = raw(api_server, get(api_server, "/v1/feeds/google.tsv", authorization))
    assert status in (401, 429), body[:300]  # 429: the module's earlier 401s used the allowance
    assert b"Internal" not in body


@pytest.mark.parametrize(
    "user",
    [
        b"\xff\xfe",  # no UTF-8
        "Händler".encode("latin-1"),  # what clients that write Latin-1 send
        b"",  # no user name at all
    ],
)
def test_the_basic_user_name_is_ignored_whatever_its_bytes(api_server: Server, user: bytes) -> None:
    """The feeds take HTTP Basic with the key as password and ignore the user name, but the
    whole `user:password` was decoded as UTF-8 first: a user name in Latin-1 (RFC 7617 leaves
    the charset open, and many clients send Latin-1) refused the right key with a 401 that said
    "send Authorization: Bearer <api key>"."""
    credentials = base64.b64encode(user + b":" + SECRET.encode())
    status, body = raw(api_server, get(api_server, "/v1/feeds/google.tsv", b"Basic " + credentials))
    assert status == 200, body[:300]
