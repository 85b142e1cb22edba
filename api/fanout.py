"""A request's users asked of their owners: `POST /v1/blocks:batch` and `POST /v1/render` split by
partition owner.

With several workers in a group (`StateView.scaled_out`), the users of a batch (the recipients
of a render) whose `profiles` partition another worker owns are asked of that worker: one
sub-request per owner, with the request's own fields (a batch's block, format and parameters; a
render's template, parameters and the sender's `data` of those recipients only) and only its
users, signed as a hop (api/hops.py, the routing session and the `X-Persona-Routed` mark of
api/routing.py), with `deadline_ms` the share of the time left that `engine.fanout.owner_budget`
gives, and waited for a little longer. The owner answers them itself (a request with a hop
header is never split again: no loops), logs their exposures and charges their rendering to its
own budget. A sub-request goes as msgpack, or as JSON when it holds what msgpack cannot carry
(a render's `data` may hold an integer past 64 bits or a lone surrogate).

An owner that answers anything but a 200 answer of exactly its users (`Route.results`), or not
in time, or cannot be reached, has its users answered here as before (a standby copy, or the
fallback: a sender always gets an answer); they are counted in
`persona_http_batch_owner_fallbacks_total{route}`, and a warning per route says so at most once
a minute. A lone worker (or a reader of one) asks `owner_url` nothing: `split` is one call of
`scaled_out`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import aiohttp
import msgpack
from aiohttp import web
from yarl import URL

from api import hops
from api.bodies import MSGPACK
from api.gate import caller
from api.observability import TELEMETRY, current_request_id
from api.routing import ROUTED, SESSION, _target
from api.shared import CONTENT, HOPPED
from engine.fanout import Groups, group, owner_budget, owner_renders, owner_results
from engine.signing import HOP_HEADER

log = logging.getLogger("persona.routing")

DEADLINE_HEADER = "X-Persona-Deadline-Fallbacks"  # as api/batch.py's
MAX_ANSWER = 256 * 1024 * 1024  # bytes of an owner's answer read at most (1000 users of ~1 MiB...)
WARN_EVERY = 60.0  # seconds between two warnings of owners answered for here (per route)


@dataclass(frozen=True)
class Route:
    """A route whose requests are split by owner: its path, and what checks an owner's decoded
    answer (engine/fanout.py: its entries for the users asked, or why it cannot be used)."""

    path: str
    results: Callable[[Any, Sequence[str]], dict[str, dict[str, Any]] | str]


BATCH = Route("/v1/blocks:batch", owner_results)
RENDER = Route("/v1/render", owner_renders)
ROUTES = (BATCH, RENDER)
PATH = BATCH.path
# per route path: when the last warning went out, users answered here since, the last problem
_warned: dict[str, dict[str, Any]] = {
    route.path: {"at": -WARN_EVERY, "users": 0, "owner": "?", "problem": "out of time"}
    for route in ROUTES
}


@dataclass(frozen=True)
class OwnerEntry:
    """One user's entry as its owner answered it, encoded as api/batch.py `encode_results`
    writes a `Block`'s (`engine.blocks.Block.entry_json`, `entry_msgpack`: the same bytes)."""

    entry: dict[str, Any]

    @cached_property
    def entry_json(self) -> str:
        return json.dumps(self.entry, ensure_ascii=False, separators=(",", ":"))

    @cached_property
    def entry_msgpack(self) -> bytes:
        packed: bytes = msgpack.packb(self.entry, use_bin_type=True)
        return packed


@dataclass(frozen=True)
class OwnerAnswer:
    owner: str
    users: list[str]
    entries: dict[str, OwnerEntry] | None  # None: the owner failed; its users answered here
    late: int = 0  # of them, answered with the deadline fallback by the owner
    reached: bool = True  # False: the owner was never sent the request (no time, no connection)


def split(request: web.Request, ids: list[str]) -> Groups | None:
    """`ids` by owner, or None when every user is answered here: a forwarded request (a
    verified hop: its sender split it), a process alone in its group, or no owner elsewhere
    that a hop may go to (no cluster secret, a target refused: api/routing.py `_target`)."""
    if request.get(HOPPED):  # a verified hop (a caller's own X-Persona-Routed is no hop)
        return None
    state = request.app[CONTENT].state
    if not state.scaled_out():
        return None
    groups = group(ids, state.owner_url)
    if not groups.remote:
        return None
    local = list(groups.local)
    remote: dict[str, list[str]] = {}
    for owner, users in groups.remote.items():
        if _target(request.app, owner) is None:
            local += users
        else:
            remote[owner] = users
    return Groups(local, remote) if remote else None


async def ask(
    request: web.Request,
    body: dict[str, Any],
    owner: str,
    users: list[str],
    deadline: float,
    route: Route = BATCH,
) -> OwnerAnswer:
    """`owner`'s entries for `users` (the request's `body` with only them), or a failed answer
    (logged and counted by `answered_here`) when it cannot give them by `deadline` (a
    `time.perf_counter()` time, api/batch.py's `clock`)."""
    budget = owner_budget(deadline - time.perf_counter())
    if budget is None:
        _note(route, owner, "too little time left to ask it")
        return OwnerAnswer(owner, users, None, reached=False)
    owner_ms, wait = budget
    try:
        answer = await asyncio.wait_for(_ask(request, body, owner, users, owner_ms, route), wait)
    except aiohttp.ClientConnectorError as exc:  # not connected: the request was never sent
        _note(route, owner, f"{type(exc).__name__} {exc}".strip())
        return OwnerAnswer(owner, users, None, reached=False)
    except (aiohttp.ClientError, TimeoutError, ValueError, TypeError) as exc:
        _note(route, owner, f"{type(exc).__name__} {exc}".strip())
        return OwnerAnswer(owner, users, None)
    if isinstance(answer, str):
        _note(route, owner, answer)
        return OwnerAnswer(owner, users, None)
    return answer


def _note(route: Route, owner: str, problem: str) -> None:
    warned = _warned[route.path]
    warned["owner"], warned["problem"] = owner, problem[:200]


def encoded(sub: dict[str, Any]) -> tuple[bytes, str]:
    """A sub-request's body and its content type: msgpack, or JSON (ASCII, as the sender's JSON
    held it) when it holds what msgpack cannot carry (an integer past 64 bits, a lone
    surrogate: values a render's `data` may hold, read from a JSON body)."""
    try:
        return msgpack.packb(sub, use_bin_type=True), MSGPACK
    except (OverflowError, ValueError, TypeError):
        return json.dumps(sub, separators=(",", ":")).encode(), "application/json"


async def _ask(
    request: web.Request,
    body: dict[str, Any],
    owner: str,
    users: list[str],
    owner_ms: int,
    route: Route,
) -> OwnerAnswer | str:
    app = request.app
    data, content_type = encoded({**body, "user_ids": users, "deadline_ms": owner_ms})
    name, scopes = caller(request)
    signature = app[hops.CLUSTER].hop("POST", route.path, name, scopes, data, hops.now_ms())
    headers = {
        "Content-Type": content_type,
        "Accept": MSGPACK,
        ROUTED: "1",
        HOP_HEADER: signature,
    }
    headers["X-Request-Id"] = current_request_id()  # the id the sender answers with
    hops.count(app, "hops_forwarded")
    async with app[SESSION].post(
        URL(owner + route.path, encoded=True), data=data, headers=headers, allow_redirects=False
    ) as upstream:
        if upstream.status != 200:
            return f"answered {upstream.status}"
        if (upstream.content_length or 0) > MAX_ANSWER:
            return f"an answer of {upstream.content_length} bytes"
        payload = await upstream.content.read(MAX_ANSWER + 1)
        if len(payload) > MAX_ANSWER or not upstream.content.at_eof():
            return f"an answer past {MAX_ANSWER} bytes"
        late_header = upstream.headers.get(DEADLINE_HEADER, "0")
    try:
        decoded = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # whatever a broken answer raises
        return f"not msgpack: {type(exc).__name__}"
    results = route.results(decoded, users)
    if isinstance(results, str):
        return results
    late = int(late_header) if late_header.isdigit() and len(late_header) < 6 else 0
    entries = {uid: OwnerEntry(entry) for uid, entry in results.items()}
    return OwnerAnswer(owner, users, entries, min(late, len(users)))


def answered_here(
    app: web.Application, failed: Sequence[OwnerAnswer], route: Route = BATCH
) -> None:
    """Count the users of owners that failed (answered here instead), and say so at most once a
    minute (per route)."""
    users = sum(len(a.users) for a in failed)
    if not users:
        return
    telemetry = app.get(TELEMETRY)
    if telemetry is not None:
        telemetry.owner_fallbacks[route.path] += users
    warned = _warned[route.path]
    warned["users"] += users
    now = time.monotonic()
    if now - warned["at"] < WARN_EVERY:
        return
    log.warning(
        "POST %s: %d users answered here (a standby copy or the fallback) since the last "
        "warning because their owner failed or ran out of time (last: %s: %s)",
        route.path,
        warned["users"],
        warned["owner"],
        warned["problem"],
    )
    warned["at"], warned["users"] = now, 0
