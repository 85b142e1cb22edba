"""Request bodies of the send-time routes (batch, render): JSON or msgpack, decoded once per
request (the rate limit reads them first to count the recipients), their `user_ids` (checked
once, the same way, by the handlers and by the rate limit that charges per recipient), and their
400 problem."""

from __future__ import annotations

import json
from typing import Any

import msgpack
from aiohttp import web

from api.encodings import read_whole
from api.shared import problem
from engine.params import InvalidParam
from engine.text import MAX_ID, id_problem

MSGPACK = "application/msgpack"


class BadRequest(ValueError):
    def __init__(self, detail: str, parameter: str | None = None) -> None:
        super().__init__(detail)
        self.parameter = parameter  # the block parameter it is about, if one

    @classmethod
    def of(cls, exc: InvalidParam) -> BadRequest:
        return cls(str(exc), exc.name)

    def answer(self) -> web.Response:
        """The 400 problem (naming the parameter, if one)."""
        if self.parameter is None:
            return problem(400, "Bad request", str(self))
        return problem(400, "Bad parameter", str(self), parameter=self.parameter)


BODY = web.RequestKey("decoded_body", object)  # read_body's result, decoded once per request


async def read_body(request: web.Request) -> Any:
    """The request body as JSON or msgpack (by Content-Type); BadRequest if it is neither.
    Decoded once per request (the rate limit reads it first to count the recipients)."""
    if BODY in request:
        return request[BODY]
    raw = await read_whole(request)
    packed = request.content_type in (MSGPACK, "application/x-msgpack")
    try:
        body = msgpack.unpackb(raw, raw=False) if packed else json.loads(raw)
    except Exception as exc:
        raise BadRequest(_undecodable(raw, packed, request.content_type, exc)) from None
    request[BODY] = body
    return body


def _undecodable(raw: bytes, packed: bool, content_type: str, exc: Exception) -> str:
    """Why a body did not decode, and which Content-Type to send when it looks like the other
    encoding (JSON sent as msgpack, or msgpack without its header): 'not valid JSON or msgpack:
    unpack(b) received extra data.' did not tell the sender what to change."""
    head = raw.lstrip(b" \t\r\n")[:1]
    if packed:
        hint = (
            " (it looks like JSON: send Content-Type: application/json)"
            if head in (b"{", b"[")
            else ""
        )
        return f"the body is not msgpack (Content-Type: {content_type[:100]}): {exc}{hint}"
    hint = ""
    if head and (0x80 <= head[0] <= 0x9F or head[0] in (0xDC, 0xDD, 0xDE, 0xDF)):
        hint = " (it looks like msgpack: send Content-Type: application/msgpack)"
    return f"the body is not JSON (Content-Type: {content_type[:100]}): {exc}{hint}"


MAX_NAMED = 10  # bad user ids a 400 names, in order (then how many more)


def recipient_ids(body: dict[str, Any], limit: int) -> list[str]:
    """The body's `user_ids`, duplicates dropped (first occurrence kept, in order); BadRequest
    (`parameter` user_ids) naming the index and the fault of every bad id (the first
    `MAX_NAMED`, then how many more: a sender fixes them all at once), unless a non-empty array
    of at most `limit` ids of 1..MAX_ID characters with no control character and no lone
    surrogate (engine/text.py `id_problem`: a lone surrogate cannot even be written in the
    answer)."""
    ids = body.get("user_ids")
    if not isinstance(ids, list) or not ids:
        raise BadRequest("user_ids must be a non-empty array of strings")
    if len(ids) > limit:
        raise BadRequest(f"at most {limit} user_ids per request")
    faults: list[str] = []
    bad = 0
    for n, uid in enumerate(ids):
        if not isinstance(uid, str) or not 1 <= len(uid) <= MAX_ID:
            fault = f"is not a string of 1..{MAX_ID} characters"
        else:
            fault = id_problem(uid) or ""
        if fault:
            bad += 1
            if len(faults) < MAX_NAMED:
                faults.append(f"user_ids[{n}] {fault}")
    if bad:
        more = f"; and {bad - len(faults)} more" if bad > len(faults) else ""
        raise BadRequest("; ".join(faults) + more, "user_ids")
    return list(dict.fromkeys(ids))
