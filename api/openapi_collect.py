"""OpenAPI entries of browser collection (api/collect.py): POST/OPTIONS /v1/collect, the tag;
and of the click redirect (api/clicks.py)."""

from __future__ import annotations

from typing import Any

from engine.collect import COLLECTED_PREFIX, MAX_COLLECTED_ID, MAX_EVENTS
from engine.collect import MAX_BYTES as MAX_BODY

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_LIMITED = {
    "description": "too many requests from this client address (PERSONA_COLLECT_PER_MINUTE) or "
    "over the key's rate limit; see Retry-After",
    "headers": {"Retry-After": {"schema": {"type": "string"}}},
    "content": {"application/problem+json": {"schema": {"type": "object"}}},
}
# POST /v1/events and /v1/collect while the data dir is full (api/event_routes.py)
DISK_FULL = {
    "description": "the engine's data dir is full (less free space than a worker needs to "
    "start): no event of the request was accepted; or the event broker cannot be reached "
    "(title `Broker unavailable`). Send them again after Retry-After (an event sent twice is "
    "applied once, by its event_id)",
    "headers": {"Retry-After": {"schema": {"type": "string"}}},
    "content": {"application/problem+json": {"schema": {"type": "object"}}},
}
_KEY = {
    "name": "key",
    "in": "query",
    "required": False,
    "description": "the publishable key, for navigator.sendBeacon (which cannot set headers); "
    "an Authorization header wins",
    "schema": {"type": "string"},
}
_ORIGIN = (
    " A request whose `Origin` is not in PERSONA_COLLECT_ORIGINS is answered 403 without CORS "
    "headers; a listed origin gets Access-Control-Allow-Origin on every answer, and its CORS "
    "preflight (OPTIONS, no key) is answered 204. Every answer carries `Vary: Origin`."
)


def collect_paths() -> dict[str, Any]:
    return {
        "/v1/collect": {"post": _post()},  # its CORS preflight (OPTIONS, no key): in _ORIGIN
        "/v1/sdk.js": {"get": _sdk()},
        "/c/{token}": {"get": _click()},
    }


def _post() -> dict[str, Any]:
    return {
        "summary": "Browser events sent with a publishable key (the collect scope)",
        "description": "Clickstream and cart events, `identify`, and consent withdrawals; "
        "`purchase` only with the events:collect-purchase scope; other events are refused one "
        f"by one in `errors`. At most {MAX_EVENTS} events and {MAX_BODY} bytes; answered like "
        "POST /v1/events. Each event_id is stored as "
        f"`{COLLECTED_PREFIX}<event_id>` (one of more than {MAX_COLLECTED_ID} characters as "
        f"`{COLLECTED_PREFIX}sha256:<its SHA-256>`), apart from the ids the shop's server sends."
        + _ORIGIN,
        "parameters": [_KEY],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "array", "maxItems": MAX_EVENTS}},
                "text/plain": {"schema": {"type": "string"}},
            },
        },
        "responses": {
            "202": {
                "description": "accepted and rejected counts, and each rejected event's reason",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "400": _PROBLEM,
            "401": _PROBLEM,
            "403": _PROBLEM,
            "413": _PROBLEM,
            "429": _LIMITED,
            "503": DISK_FULL,
        },
    }


def _sdk() -> dict[str, Any]:
    return {
        "summary": "The browser tag (public; no key)",
        "security": [],
        "description": "ETag and Cache-Control for a day; `?v=<X-Persona-Sdk-Version>` is "
        "cached for a year (immutable).",
        "parameters": [
            {"name": "v", "in": "query", "required": False, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": {"description": "the script", "content": {"text/javascript": {}}},
            "304": {"description": "not modified (If-None-Match)"},
            "400": _PROBLEM,  # `v` given twice
        },
    }


def _click() -> dict[str, Any]:
    return {
        "summary": "Click redirect of a link in a block (public; the token is signed)",
        "security": [],
        "description": "302 to the item's URL in the catalog and a `click` event for the "
        "token's user (props block, variant); a link older than 400 days still redirects but "
        "records nothing. An item gone from the catalog redirects to PERSONA_FEED_LINK when set. "
        "Tokens that do not verify count as failed authentications of the client address.",
        "parameters": [
            {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "302": {
                "description": "to the item's page",
                "headers": {"Location": {"schema": {"type": "string"}}},
            },
            "404": _PROBLEM,
            "429": _LIMITED,
        },
    }
