"""Authenticated hops: a request one Persona process forwards to the owner of a user's partition.

The first process authenticates the caller (api/app.py's auth middleware runs before routing),
then forwards the request without the caller's `Authorization`, signed for the owner with
`PERSONA_CLUSTER_SECRET` (engine/signing.py: method, path and query, time, a nonce, the key's
name and scopes, the body's digest). The owner accepts the signature instead of a bearer only
within `HOP_WINDOW_MS` of its clock and once per nonce, and then acts as that key (scopes, rate
limits, audit name). A target must be an http(s) URL without credentials (the owner the group's
assignment names); https targets are verified against the system's CAs (aiohttp's default).

Counted on /metrics: `persona_hops_forwarded_total`, `persona_hops_accepted_total`,
`persona_hops_refused_total` (bad, expired, replayed or missing signatures, and hops to a
process without a cluster secret) and `persona_hop_targets_refused_total`.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from engine.ownership import url_problem
from engine.signing import (
    HOP_HEADER,
    ClusterKey,
    Hop,
    SeenNonces,
    cluster_key,
    hop_header_problem,
)

log = logging.getLogger("persona.routing")

CLUSTER = web.AppKey("cluster_key", ClusterKey)
NONCES = web.AppKey("hop_nonces", SeenNonces)
HOP_STATS = web.AppKey("hop_stats", dict)
_COUNTERS = ("hops_forwarded", "hops_accepted", "hops_refused", "hop_targets_refused")


def register(app: web.Application, secret: str | None) -> None:
    """Keep the cluster key (when one is configured) and the hop counters on `app`."""
    key = cluster_key(secret)
    if key is not None:
        app[CLUSTER] = key
    app[NONCES] = SeenNonces()
    app[HOP_STATS] = dict.fromkeys(_COUNTERS, 0)


def count(app: web.Application, counter: str) -> None:
    stats = app[HOP_STATS]
    stats[counter] = stats.get(counter, 0) + 1


def now_ms() -> int:
    return int(time.time() * 1000)


async def verify(request: web.Request) -> Hop | str:
    """The caller a request's hop header speaks for, or why it is refused (counted). What can be
    checked from the header (a cluster secret here, the header's form, its time) is checked
    before the body is read, and a body past the app's bound (`MAX_BODY`) is refused as
    unverifiable, not answered 413: no member forwards one (it reads a body within that bound
    to sign it), and a forged hop learns nothing but its refusal. A body announced past the
    bound is not read at all; one without a length is read no further than the bound."""
    app = request.app
    key = app.get(CLUSTER)
    now = now_ms()
    found: Hop | str
    if key is None:
        found = "this process has no cluster secret"
    else:
        header = request.headers.get(HOP_HEADER, "")
        found = hop_header_problem(header, now) or await _check_signature(request, key, header, now)
    if isinstance(found, Hop) and not app[NONCES].first(found, now):
        found = "replayed hop signature"
    count(app, "hops_accepted" if isinstance(found, Hop) else "hops_refused")
    if not isinstance(found, Hop):
        log.warning("refused a hop from %s: %s", request.remote, found)
    return found


async def _check_signature(
    request: web.Request, key: ClusterKey, header: str, now: int
) -> Hop | str:
    """`verify`'s signature check, which covers the body (read here, within its bound)."""
    body = await _signed_body(request)
    if body is None:
        return "a hop's body past the body bound or broken off cannot be verified"
    return key.verify_hop(header, request.method, str(request.rel_url), body, now)


async def _signed_body(request: web.Request) -> bytes | None:
    """The body a hop's signature covers, or None when it is past the app's bound (announced
    past it: not read; else read up to it) or broke off: its signature cannot be checked."""
    if not request.can_read_body:
        return b""
    length = request.content_length
    if length is not None and length > request.client_max_size:
        return None
    try:
        return await request.read()
    except (web.HTTPRequestEntityTooLarge, web.RequestPayloadError):
        return None


def target_problem(url: str) -> str | None:
    """Why `url` cannot receive a hop, or None: an http(s) URL with a host and no credentials
    (engine/ownership.py `url_problem`, which a reader checks its worker's view with too)."""
    return url_problem(url)


def metrics_lines(app: web.Application) -> list[str]:
    stats = app.get(HOP_STATS) or {}
    lines: list[str] = []
    for counter in _COUNTERS:
        name = f"persona_{counter}_total"
        lines += [f"# TYPE {name} counter", f"{name} {stats.get(counter, 0)}"]
    return lines
