"""A block's HTTP headers, on the api side of `engine.blocks.Block` (engine/ knows no HTTP).

A cached block is served many times (send time is the hot path), so what is derived from it here
is built once per block and kept in its `memo`: the header dict aiohttp's `Response` is given and
the header lines the hot path writes as bytes (api/hot.py). Everything here depends only on what
a block's headers show (ETag, models, variant, fallback and its reason, content type), never on
its user id:
`engine.blocks.for_unknown_user` shares the memo between blocks that differ only in that.
"""

from __future__ import annotations

from typing import cast

from aiohttp import web

from engine.blocks import Block

_MISSING = object()


def not_modified_headers(block: Block) -> dict[str, str]:
    """The headers of a GET of `block` answered 304: ETag, Cache-Control, the models and
    variant, and for the fallback `X-Persona-Fallback: 1` and `X-Persona-Fallback-Reason` (one
    of engine.blocks.REASONS, never user data). Never modified (aiohttp's `Response` copies
    what it is given)."""
    headers: dict[str, str] | None = block.memo.get("not_modified_headers")
    if headers is None:
        headers = {
            "ETag": block.etag,
            "Cache-Control": "private, no-cache",
            "X-Persona-Model": block.models_header,
            "X-Persona-Variant": block.variant,
        }
        if block.fallback:
            headers["X-Persona-Fallback"] = "1"
            if block.reason:
                headers["X-Persona-Fallback-Reason"] = block.reason
        block.memo["not_modified_headers"] = headers
    return headers


def headers(block: Block) -> dict[str, str]:
    """The headers of a GET of `block` answered 200: the 304's plus Content-Type (with the
    charset)."""
    found: dict[str, str] | None = block.memo.get("headers")
    if found is None:
        ctype = block.content_type
        found = {
            **not_modified_headers(block),
            "Content-Type": ctype if "charset" in ctype else ctype + "; charset=utf-8",
        }
        block.memo["headers"] = found
    return found


def header_lines(block: Block, unchanged: bool) -> bytes | None:
    """The headers of a 304 (`unchanged`) or a 200 of `block` as HTTP/1.1 header lines (`Name:
    value\r\n` each, UTF-8), which the hot path writes as they are; None if a value holds a CR
    or LF (no header injection: aiohttp's own checks refuse to write those)."""
    name = "not_modified_lines" if unchanged else "lines"
    lines = block.memo.get(name, _MISSING)
    if lines is _MISSING:
        lines = _lines(not_modified_headers(block) if unchanged else headers(block))
        block.memo[name] = lines
    return cast("bytes | None", lines)


def response(block: Block, unchanged: bool) -> web.Response:
    """aiohttp's `Response` to a GET of `block`: its 304 (`unchanged`) or its 200."""
    if unchanged:
        return web.Response(status=304, headers=not_modified_headers(block))
    return web.Response(body=block.body, headers=headers(block))


def _lines(fields: dict[str, str]) -> bytes | None:
    text = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    if text.count("\r") != len(fields) or text.count("\n") != len(fields):
        return None  # a CR or LF inside a name or value
    return text.encode()
