"""The admin documents edited whole with `GET`/`PUT` (the merchandising rules, api/rules.py; the
content experiments, api/experiments.py): a bounded JSON body, server-numbered versions answered
as `ETag`, and `If-Match` so that two editors cannot overwrite each other's change unseen (checked
before the body is read, and again under `edit_lock` once it is). The lock holds within one
process; across processes (workers, readers) the `models` topic's fold decides: of two records of
the same version the first folded wins everywhere, and the PUT whose record lost answers 412 like
a stale `If-Match` (models/registry_log.py, `EditLost`)."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from api.encodings import body_chunks
from api.shared import problem
from models.registry_log import EditLost, EditUnsettled

MAX_DOCUMENT_BODY = 512 * 1024  # bytes of a PUT body
EDIT_ATTEMPTS = 3  # puts of an edit without `If-Match` that lose to another process's edit
T = TypeVar("T")


_EDITS: weakref.WeakKeyDictionary[object, dict[str, asyncio.Lock]] = weakref.WeakKeyDictionary()


def edit_lock(admin: object, document: str) -> asyncio.Lock:
    """The lock a PUT of `document` ("rules", "experiments") on `admin` (the registry) holds
    from its `If-Match` check, made once the body is read whole, until its version is published:
    an edit whose body arrived slowly was checked against the version before another edit
    replaced it, and then overwrote that edit unseen under the same version number."""
    return _EDITS.setdefault(admin, {}).setdefault(document, asyncio.Lock())


def too_large(request: web.Request) -> web.Response | None:
    """The 413 problem when the declared length is over the bound (None: go on)."""
    if (request.content_length or 0) > MAX_DOCUMENT_BODY:
        return problem(413, "Body too large", f"at most {MAX_DOCUMENT_BODY} bytes")
    return None


async def read_document(request: web.Request, field: str) -> Any:
    """The JSON body (read up to the bound whatever the declared length), or the 413 or 400
    problem to answer (`field`: the list the document is an object with)."""
    body = await _read_bounded(request, MAX_DOCUMENT_BODY + 1)
    if len(body) > MAX_DOCUMENT_BODY:
        return problem(413, "Body too large", f"at most {MAX_DOCUMENT_BODY} bytes")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        return problem(400, "Bad body", f"expected a JSON object with `{field}`")


async def _read_bounded(request: web.Request, limit: int) -> bytes:
    """At most `limit` bytes of the body (inflated, a step at a time, when encoded: see
    `api.encodings.body_chunks`), to its end or the limit: one `read` returns only what has
    arrived, so a body sent in chunks (no Content-Length) was cut at its first chunk."""
    parts: list[bytes] = []
    size = 0
    async for part in body_chunks(request):
        parts.append(part)
        size += len(part)
        if size >= limit:
            break
    return b"".join(parts)[:limit]


def answer(document: dict[str, Any], version: str) -> web.Response:
    response = web.json_response(document)
    response.headers["ETag"] = f'"{version}"'
    return response


def if_match(header: str | None, version: str) -> bool:
    """Whether a PUT with this `If-Match` may replace `version` (no header, or `*`: yes)."""
    if header is None or header.strip() == "*":
        return True
    tags = {tag.strip().removeprefix("W/").strip('"') for tag in header.split(",")}
    return version in tags


def stale(request: web.Request, version: str, what: str) -> web.Response | None:
    """The 412 problem when the request's `If-Match` is not `version` of `what` (None: go on)."""
    if if_match(request.headers.get("If-Match"), version):
        return None
    return _precondition_failed(version, what)


def _precondition_failed(version: str, what: str) -> web.Response:
    return problem(412, "Precondition Failed", f"the {what} are at version {version!r} now")


def _conditional(request: web.Request) -> bool:
    header = request.headers.get("If-Match")
    return header is not None and header.strip() != "*"


async def save_if_current(
    request: web.Request,
    admin: object,
    what: str,
    version_of: Callable[[], str],
    save: Callable[[str], Awaitable[T]],
) -> T | web.Response:
    """`save(the next version)` under `edit_lock(admin, what)` when the request's `If-Match` is
    still the current version (`version_of()`, read under the lock), else the 412 problem: the
    check made before the body was read may be stale once it has arrived. When `save` raises
    EditLost (another process's edit of that version was folded first) the answer is 412 too;
    an edit without `If-Match` is put again on the version that won (at most EDIT_ATTEMPTS
    times). A 503 problem when the record was sent but not folded here in time."""
    async with edit_lock(admin, what):
        last = version_of()
        for _ in range(EDIT_ATTEMPTS):
            version = version_of()
            refused = stale(request, version, what)
            if refused is not None:
                return refused
            try:
                return await save(next_version(version))
            except EditLost as lost:
                if _conditional(request):
                    return _precondition_failed(lost.version, what)
                last = lost.version
            except EditUnsettled:
                return problem(
                    503,
                    "Edit not settled",
                    f"the {what} edit was sent but is not folded here yet: GET the {what} to "
                    "see whether it was applied",
                )
        return _precondition_failed(last, what)


def next_version(version: str) -> str:
    return str(int(version) + 1) if version.isdigit() else "1"
