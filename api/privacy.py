"""GDPR access and erasure: `GET /v1/users/{id}/export`, `DELETE /v1/users/{id}` (privacy:admin).

Erasure is queued on the user's partition (in order with their events) where the worker deletes the
profile with a changelog tombstone; this handler waits until the profile is gone, drops every cached
block and score of the user, and records the action in the audit log. Answered away from the
user's owner (unreachable: api/routing.py), or while no owner is known (a rebalance), with nothing
of the user held here, it confirms nothing: 202, `existed` null (the erasure is still queued);
an export then answers 503 with Retry-After (neither the user's data nor its absence is known).
Every 202 says why in `reason` (`REASONS`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from aiohttp import web

from api.audit import audit
from api.content import ContentService
from api.limits import OPTIONS, ServingOptions
from api.models_routes import ADMIN, ModelAdmin
from api.observability import current_request_id
from api.shared import CONTENT, STARTED, Handler, problem, shown_id
from engine import consent
from engine.audit import AuditPseudonyms
from engine.profile import MINUTE_MS
from engine.state_view import StateView
from engine.text import MAX_ID, id_problem

ERASE_WAIT = 10.0  # seconds the DELETE waits at most for the erasure to be applied
# ... and no longer than this share of the request timeout (PERSONA_REQUEST_TIMEOUT, 10 s by
# default): the rest queues it, audits it and answers, before the timeout answers 503 instead
ERASE_SHARE = 0.6
OWNER_RETRY_AFTER = 5  # seconds: the Retry-After of an export answered away from the owner
# why a 202 (`reason`): no owner known, the owner not reached, or queued behind the backlog here
# or the user's partition moved to another owner while the erasure was awaited here
REASONS = ("ownership_unknown", "owner_unreachable", "not_applied_yet", "ownership_moved")


def erase_wait(request: web.Request) -> float:
    """Seconds the DELETE waits for the erasure to be applied before answering 202, counted from
    the request's start (`erase_deadline`; a hop to the owner waits that long too:
    api/routing.py)."""
    options = request.app.get(OPTIONS)
    timeout = (options or ServingOptions()).request_timeout
    return min(ERASE_WAIT, ERASE_SHARE * timeout)


def erase_deadline(request: web.Request) -> float:
    """The time.monotonic() until which the DELETE waits for the erasure: `erase_wait` after the
    request began (a hop to an owner that did not answer in time has used it up: the answer
    here is then at once)."""
    return request.get(STARTED, time.monotonic()) + erase_wait(request)


class HeldRecords(Protocol):
    """The user's records still held on Persona's output topics (streams.erasure.HeldRecords)."""

    async def of_user(self, user_id: str) -> dict[str, Any]: ...

    async def of_users(self, user_ids: list[str]) -> dict[str, dict[str, Any]]: ...


RECORDS = web.AppKey("held_records", HeldRecords)
PSEUDONYMS = web.AppKey("audit_pseudonyms", AuditPseudonyms)


def _content(request: web.Request) -> ContentService:
    return request.app[CONTENT]


def export_view(content: ContentService, user_id: str) -> dict[str, Any] | None:
    profile = content.state.profile(user_id)
    if profile is None:
        return None
    return {
        "user_id": user_id,
        "profile": content.profile_view(user_id),
        "stored": {
            "counts": profile.counts,
            "recent_items": profile.recent,
            "cart": profile.cart,
            "purchased": profile.purchased,
            # the long history: item, ms of the minute of its newest signal, signals counted
            "history": [[i, m * MINUTE_MS, n] for i, (m, n) in profile.history.items()],
            "orders": profile.orders,
            "monetary": profile.monetary,
            # per currency: [amount spent, orders] ("": no currency known); the newest locale
            "spend": {code: list(v) for code, v in profile.spend.items()},
            "locale": profile.locale,
            "sessions": profile.sessions,
            "session_spans": profile.spans,
            "categories": profile.categories,
            "brands": profile.brands,
            "consent": profile.consent,
            # per purpose, newest first: value, event time, source, text_version (engine.consent)
            "consent_records": consent.export(profile.consent_log),
            "first_seen": profile.first_seen,
            "last_seen": profile.last_seen,
            "event_ids_remembered": len(profile.seen),
        },
        "cached_blocks": content.cached_blocks(user_id),
    }


async def get_export(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    content = _content(request)
    view = export_view(content, user_id)
    if view is None and _away_from_owner(content, user_id):
        # nothing of the user here, and the owner could not be asked: neither the user's
        # existence nor their absence is known (a 404 told an access request no data existed)
        audit(request, "export", user_id=user_id, found=None)
        refusal = problem(
            503,
            "Owner unavailable",
            f"the owner of user {shown_id(user_id)}'s partition is not known now (a rebalance) or "
            "cannot be reached, and nothing of the user is held here: whether anything is "
            "stored is not known; retry shortly",
        )
        refusal.headers["Retry-After"] = str(OWNER_RETRY_AFTER)
        return refusal
    merged_ids = [i for i in content.state.merged_ids(user_id) if i != user_id]
    held = request.app.get(RECORDS)
    found = None if held is None else await held.of_users([user_id, *merged_ids])
    records = None if found is None else found[user_id]
    if view is None and records is not None and _any_held(records):
        # no profile, but records on the output topics (say, only dead letters)
        view = {"user_id": user_id, "profile": None, "stored": None, "cached_blocks": []}
    audit(request, "export", user_id=user_id, found=view is not None)
    if view is None:
        return problem(404, "Unknown user", f"nothing is stored about user {shown_id(user_id)}")
    if records is not None:
        view["records"] = records
    # Identity: the anonymous ids an `identify` merged into the user (their histories are in
    # `stored` since the merge) and the records still held under each of those ids' keys.
    view["merged_ids"] = [
        {"user_id": anon, "records": None if found is None else found[anon]} for anon in merged_ids
    ]
    return web.json_response(view)


def _away_from_owner(content: ContentService, user_id: str) -> bool:
    """Whether this process answers for the user though it is not their partition's known
    owner: another worker owns it (routing could not reach it: api/routing.py), or nobody is
    known to (a rebalance, or a reader whose worker does not hold the partition:
    `owner_known`). Only a copy held here (a standby) then shows anything of the user."""
    state = content.state
    return state.owner_url(user_id) is not None or not state.owner_known(user_id)


def _any_held(records: dict[str, Any]) -> bool:
    return any(isinstance(v, list) and v for v in records.values())


async def delete_user(request: web.Request) -> web.Response:
    deadline = erase_deadline(request)
    user_id = request.match_info["user_id"]
    too_long = len(user_id) > MAX_ID
    why = id_problem(user_id) or (f"is over {MAX_ID} characters" if too_long else None)
    if why is not None:  # no event can have named it: nothing to erase, no fence to write
        return problem(400, "Bad user id", f"the user id {why}: no user can hold it")
    content = _content(request)
    existed: bool | None = content.state.profile(user_id) is not None
    # Answered here though another worker owns the user's partition (routing could not reach it:
    # api/routing.py), or while nobody is known to (a rebalance: `owner_known`). Only a copy held
    # here (a standby) can show the erasure applied; with nothing of the user here, neither the
    # erasure nor the user's existence is known. The erase command is queued all the same on
    # the user's partition of the command topic: whoever owns it applies it.
    away = _away_from_owner(content, user_id)
    unseen = not existed and away
    # (the exposures queued here of the user and the ids merged into it: `erasure_middleware`)
    await content.state.erase(user_id)
    while content.state.profile(user_id) is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    # a partition revoked during the wait (a rebalance) is dropped here: its users' profiles
    # vanish without any erasure, which waits for the new owner
    moved = not away and _away_from_owner(content, user_id)
    done = content.state.profile(user_id) is None and not unseen and not moved
    if unseen:
        existed = None
    content.forget(user_id)
    # names this erasure in the audit log, answered or not: the request's id (X-Request-Id), so
    # the owner's record of a forwarded DELETE names what the process called answered
    request_id = current_request_id()
    # the erasure's own record names the user by pseudonym only (engine/audit.py)
    erased = {user_id: request.app[PSEUDONYMS].of(user_id)}
    audit(
        request,
        "erase",
        erased=erased,
        user_id=user_id,
        existed=existed,
        completed=done,
        request_id=request_id,
    )
    body: dict[str, Any] = {
        "user_id": user_id,
        "erased": done,
        "existed": existed,
        "request_id": request_id,
    }
    if not done:
        body["reason"] = "ownership_moved" if moved else _not_done(content.state, user_id)
    return web.json_response(body, status=200 if done else 202)


ERASE_ROUTE = "/v1/users/{user_id}"


@web.middleware
async def erasure_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An authorized DELETE of a user (it runs after auth and the rate limit, before routing):
    the experiment exposures queued in this process (flushed to `exposures` every 0.5 s) of the
    user and of the ids merged into the user that it knows of go before it is answered here or
    forwarded to the owner of the user's partition, and again before the answer (those logged
    meanwhile), whichever process answers. One flushed after the erasure's tombstone would
    outlive it on the topic. Before, only the process answering did so: a process forwarding
    the DELETE kept its own, and one answering for a partition it does not hold missed the
    merged ids (`forget_exposures`)."""
    resource = request.match_info.route.resource
    admin = request.app.get(ADMIN)
    if (
        request.method != "DELETE"
        or admin is None
        or resource is None
        or resource.canonical != ERASE_ROUTE
    ):
        return await handler(request)
    user_id = request.match_info["user_id"]
    gone = forget_exposures(admin, request.app[CONTENT].state, user_id)
    try:
        return await handler(request)
    finally:
        forget_exposures(admin, request.app[CONTENT].state, user_id, gone)


def forget_exposures(
    admin: ModelAdmin, state: StateView, user_id: str, known: list[str] | None = None
) -> list[str]:
    """Drop the exposures queued in this process of the user, of the ids merged into the user
    (its `m:` row, where held here) and of every queued id whose alias row (held here) names
    the user: a reader whose worker holds an anonymous id's partition but not the user's knows
    of the merge only so. `known`: the ids found before the erasure removed those rows.
    Returns every id dropped for (`known` the second time)."""
    ids = [user_id, *(i for i in state.merged_ids(user_id) if i != user_id)]
    ids += [i for i in known or () if i not in ids]

    def merged_here(queued: str) -> bool:
        if state.merged_into(queued) != user_id:
            return False
        ids.append(queued)
        return True

    admin.forget_exposures(list(ids), merged_here)
    return ids


def _not_done(state: StateView, user_id: str) -> str:
    """Why an erasure is answered queued (202): `ownership_unknown` (no owner of the user's
    partition is known: before the first assignment, a rebalance), `owner_unreachable` (another
    worker owns it and could not be reached: answered here), or `not_applied_yet` (this
    process's own partition: the erasure waits behind the partition's backlog)."""
    if not state.owner_known(user_id):
        return "ownership_unknown"
    if state.owner_url(user_id) is not None:
        return "owner_unreachable"
    return "not_applied_yet"


def register(app: web.Application, cluster_secret: str | None = None) -> None:
    """The routes, and the audit pseudonyms under the cluster secret (every process has one: a
    worker or reader refuses to start without it; "" keys them in a bare test app)."""
    app[PSEUDONYMS] = AuditPseudonyms(cluster_secret or "")
    app.router.add_get("/v1/users/{user_id}/export", get_export)
    app.router.add_delete(ERASE_ROUTE, delete_user)
