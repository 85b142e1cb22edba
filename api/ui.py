"""The preview and dashboard pages, their static assets, and the JSON routes only they need.

Auth: the pages' data routes (`/v1/users/{id}/explain`, `/v1/users`, `/v1/stats`, the blocks and
the profile) take the key like every other route. A browser cannot send `Authorization` when it
navigates, so `/ui/preview` and `/ui/dashboard` answer 200 to a request with a content:read key and
401 (with `WWW-Authenticate`) to any other, and in both cases the body is the same data-free page
shell: a sign-in form that keeps the key in the tab's sessionStorage (never a cookie, never the
URL's query) and sends it as `Authorization: Bearer` on every fetch. `#key=...` in the address is
taken the same way (for scripts and tests; the fragment never reaches the server) and removed at
once. A page request that sent a key and is refused is audited (`api.audit.refused`); the sign-in
page answered to a request without a key is not a refusal. The assets under `/ui/static/` hold
code and style only and are public.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web

from api.audit import refused
from api.auth import ApiKey
from api.explain import explain
from api.limits import THROTTLE
from api.observability import sample_profiles
from api.shared import CONTENT, KEYS, bad_param, problem, shown_id, single
from api.shop_words import shop_why
from engine.blocks import BLOCKS
from engine.params import InvalidParam
from engine.text import repr_cut

STATIC = Path(__file__).parent / "static"
PAGES = {"/ui/preview": "preview.html", "/ui/dashboard": "dashboard.html"}
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# the assets served: the files of STATIC of those types, listed once. A request's name is looked
# up here, never on the disk (a name longer than a file name may be made stat raise: a 500)
ASSETS = frozenset(p.name for p in STATIC.iterdir() if p.suffix in STATIC_TYPES and p.is_file())
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src * data:; frame-src 'self' about:; connect-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# an asset opened by itself (in a tab, or framed) is a document of this origin too: it may run
# nothing, load nothing and be framed by nobody
ASSET_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'"
# every page and asset: no MIME sniffing, no framing (X-Frame-Options for browsers that predate
# frame-ancestors), no Referer to wherever a link leads
HARDENING = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
SCOPE = "content:read"
USERS_SAMPLE = 1000


def _key(request: web.Request) -> ApiKey | None:
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return request.app[KEYS].authenticate(secret.strip())


async def page(request: web.Request) -> web.Response:
    key = _key(request)
    authorized = key is not None and SCOPE in key.scopes
    headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-store", **HARDENING}
    if not authorized:
        headers["WWW-Authenticate"] = 'Bearer realm="persona"'
    response = web.Response(
        status=200 if authorized else 401,
        body=(STATIC / PAGES[request.path]).read_bytes(),
        content_type="text/html",
        charset="utf-8",
        headers=headers,
    )
    if key is None and "Authorization" in request.headers:  # a key was sent, and it is wrong
        response = request.app[THROTTLE].refusal(request.remote, response)
    if not authorized and "Authorization" in request.headers:  # the sign-in page is no refusal
        name = key.name if key is not None else ""
        refused(request.app, request.remote, response.status, name, "GET", request.path)
    return response


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        return problem(404, "Not Found", f"no asset {repr_cut(name, 80, 60)}")
    path = STATIC / name
    return web.Response(
        body=path.read_bytes(),
        content_type=STATIC_TYPES[path.suffix],
        charset="utf-8",
        headers={"Content-Security-Policy": ASSET_CSP, "Cache-Control": "no-cache", **HARDENING},
    )


async def get_explain(request: web.Request) -> web.Response:
    content = request.app[CONTENT]
    user_id = request.match_info["user_id"]
    profile = content.state.profile(user_id)
    if profile is None:
        return problem(
            404,
            "Unknown user",
            f"no events were seen for user {shown_id(user_id)}: every block is the fallback "
            "(the best-sellers)",
        )
    if not content.personal(profile):  # engine.consent: an explanation is profiling
        return problem(
            403,
            "No consent",
            f"user {shown_id(user_id)} does not consent to personalization: nothing is derived "
            "from their profile, every block is the fallback",
        )
    scores = content.scores(profile)
    blocks: dict[str, dict[str, Any]] = {}
    for name in BLOCKS:
        block = content.block(user_id, name, "json")
        blocks[name] = {
            "variant": block.variant,
            "fallback": block.fallback,
            "reason": block.reason,
            "items": list(block.items),
            "models": block.models,
            "rules": list(block.rules),  # the merchandising rules that changed it
        }
    body = explain(
        profile,
        content.state.now_ms(),
        scores.churn,
        scores.recommendations[: content.policy.items * 2],
        content.models,
        content.state.product,
        blocks,
        content.policy.churn_threshold,
    )
    body["shop"] = shop_why(profile, body, content.state.product, content.state.now_ms())
    return web.json_response(body, dumps=lambda o: json.dumps(o, ensure_ascii=False))


async def get_users(request: web.Request) -> web.Response:
    try:
        limit = max(1, min(int(single(request.query, "limit", "20")), 200))
    except InvalidParam as exc:  # `limit` twice
        return bad_param(exc)
    except ValueError:
        return problem(400, "Bad limit", "limit is an integer from 1 to 200")
    content = request.app[CONTENT]
    # engine.consent: the list is a view of profiles; a user who withdrew personalization is
    # not offered to preview (their blocks are the fallback anyway)
    profiles = [p for p in sample_profiles(content, USERS_SAMPLE) if content.personal(p)]
    profiles.sort(key=lambda p: (-p.version, p.user_id))
    return web.json_response(
        {
            "users": [
                {"user_id": p.user_id, "events": p.version, "last_seen": p.last_seen}
                for p in profiles[:limit]
            ],
            "note": f"the most active of a sample of up to {USERS_SAMPLE} users of the tables "
            "this process reads (a worker's, or its worker's for a reader; users without "
            "personalization consent are left out)",
        }
    )


def register(app: web.Application) -> None:
    for path in PAGES:
        app.router.add_get(path, page)
    app.router.add_get("/ui/static/{name}", static)
    app.router.add_get("/v1/users", get_users)
    app.router.add_get("/v1/users/{user_id}/explain", get_explain)
