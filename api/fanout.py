"""A batch's users asked of their owners: `POST /v1/blocks:batch` split by partition owner.

With several workers in a group (`StateView.scaled_out`), a batch's users whose `profiles`
partition another worker owns are asked of that worker: one sub-request per owner, with the
batch's own fields (block, format, parameters) and only its users, signed as a hop
(api/hops.py, the routing session and the `X-Persona-Routed` mark of api/routing.py), with
`deadline_ms` the share of the time left that `engine.fanout.owner_budget` gives, and waited for
a little longer. The owner answers them itself (a request with a hop header is never split
again: no loops) and logs their exposures.

An owner that answers anything but a 200 batch answer of exactly its users, or not in time, or
cannot be reached, has its users answered here as before (a standby copy, or the fallback: a
sender always gets an answer); they are counted in
`persona_http_batch_owner_fallbacks_total`, and a warning says so at most once a minute. A lone
worker (or a reader of one) asks `owner_url` nothing: `split` is one call of `scaled_out`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
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
from api.observability import TELEMETRY
from api.routing import ROUTED, SESSION, _target
from api.shared import CONTENT
from engine.fanout import Groups, group, owner_budget, owner_results
from engine.signing import HOP_HEADER

log = logging.getLogger("persona.routing")

PATH = "/v1/blocks:batch"
DEADLINE_HEADER = "X-Persona-Deadline-Fallbacks"  # as api/batch.py's
MAX_ANSWER = 256 * 1024 * 1024  # bytes of an owner's answer read at most (1000 users of ~1 MiB...)
WARN_EVERY = 60.0  # seconds between two warnings of owners answered for here
_warned = {"at": -WARN_EVERY, "users": 0}  # when the last warning went out; users since


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


def split(request: web.Request, ids: list[str]) -> Groups | None:
    """`ids` by owner, or None when every user is answered here: a forwarded request (its
    sender split it), a process alone in its group, or no owner elsewhere that a hop may go to
    (no cluster secret, a target refused: api/routing.py `_target`)."""
    if HOP_HEADER in request.headers or ROUTED in request.headers:
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
    request: web.Request, body: dict[str, Any], owner: str, users: list[str], deadline: float
) -> OwnerAnswer:
    """`owner`'s entries for `users` (the batch `body` with only them), or a failed answer
    (logged and counted by `answered_here`) when it cannot give them by `deadline` (a
    `time.perf_counter()` time, api/batch.py's `clock`)."""
    budget = owner_budget(deadline - time.perf_counter())
    if budget is None:
        _note(owner, "too little time left to ask it")
        return OwnerAnswer(owner, users, None)
    owner_ms, wait = budget
    try:
        answer = await asyncio.wait_for(_ask(request, body, owner, users, owner_ms), wait)
    except (aiohttp.ClientError, TimeoutError, ValueError, TypeError) as exc:
        _note(owner, f"{type(exc).__name__} {exc}".strip())
        return OwnerAnswer(owner, users, None)
    if isinstance(answer, str):
        _note(owner, answer)
        return OwnerAnswer(owner, users, None)
    return answer


_last_problem: dict[str, str] = {}


def _note(owner: str, problem: str) -> None:
    _last_problem["owner"], _last_problem["problem"] = owner, problem[:200]


async def _ask(
    request: web.Request, body: dict[str, Any], owner: str, users: list[str], owner_ms: int
) -> OwnerAnswer | str:
    app = request.app
    sub = {**body, "user_ids": users, "deadline_ms": owner_ms}
    data: bytes = msgpack.packb(sub, use_bin_type=True)
    name, scopes = caller(request)
    headers = {
        "Content-Type": MSGPACK,
        "Accept": MSGPACK,
        ROUTED: "1",
        HOP_HEADER: app[hops.CLUSTER].hop("POST", PATH, name, scopes, data, hops.now_ms()),
    }
    if "X-Request-Id" in request.headers:
        headers["X-Request-Id"] = request.headers["X-Request-Id"]
    hops.count(app, "hops_forwarded")
    async with app[SESSION].post(
        URL(owner + PATH, encoded=True), data=data, headers=headers, allow_redirects=False
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
    results = owner_results(decoded, users)
    if isinstance(results, str):
        return results
    late = int(late_header) if late_header.isdigit() and len(late_header) < 6 else 0
    entries = {uid: OwnerEntry(entry) for uid, entry in results.items()}
    return OwnerAnswer(owner, users, entries, min(late, len(users)))


def answered_here(app: web.Application, failed: Sequence[OwnerAnswer]) -> None:
    """Count the users of owners that failed (answered here instead), and say so at most once a
    minute."""
    users = sum(len(a.users) for a in failed)
    if not users:
        return
    telemetry = app.get(TELEMETRY)
    if telemetry is not None:
        telemetry.batch_owner_fallbacks += users
    _warned["users"] += users
    now = time.monotonic()
    if now - _warned["at"] < WARN_EVERY:
        return
    log.warning(
        "POST %s: %d users answered here (a standby copy or the fallback) since the last "
        "warning because their owner failed or ran out of time (last: %s: %s)",
        PATH,
        _warned["users"],
        _last_problem.get("owner", "?"),
        _last_problem.get("problem", "out of time"),
    )
    _warned["at"], _warned["users"] = now, 0
