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
from urllib.parse import urlsplit

from aiohttp import web

from engine.signing import HOP_HEADER, ClusterKey, Hop, SeenNonces, cluster_key

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
    """The caller a request's hop header speaks for, or why it is refused (counted)."""
    app = request.app
    key = app.get(CLUSTER)
    body = await request.read() if request.can_read_body else b""
    now = now_ms()
    if key is None:
        found: Hop | str = "this process has no cluster secret"
    else:
        header = request.headers.get(HOP_HEADER, "")
        found = key.verify_hop(header, request.method, str(request.rel_url), body, now)
    if isinstance(found, Hop) and not app[NONCES].first(found, now):
        found = "replayed hop signature"
    count(app, "hops_accepted" if isinstance(found, Hop) else "hops_refused")
    if not isinstance(found, Hop):
        log.warning("refused a hop from %s: %s", request.remote, found)
    return found


def target_problem(url: str) -> str | None:
    """Why `url` cannot receive a hop, or None: an http(s) URL with a host and no credentials."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a URL"
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme!r} is not http(s)"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "the URL carries credentials"
    if not parts.hostname or (port is not None and not 0 < port < 65536):
        return "no host"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "the URL has a path, query or fragment"
    return None


def metrics_lines(app: web.Application) -> list[str]:
    stats = app.get(HOP_STATS) or {}
    lines: list[str] = []
    for counter in _COUNTERS:
        name = f"persona_{counter}_total"
        lines += [f"# TYPE {name} counter", f"{name} {stats.get(counter, 0)}"]
    return lines
