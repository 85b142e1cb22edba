"""OpenAPI entries of the send-time routes (api/batch.py, api/render.py, api/feeds.py)."""

from __future__ import annotations

from typing import Any

from api.batch import DEADLINE_HEADER, MAX_DEADLINE_MS, TIMEOUT_SHARE
from api.limits import MAX_TEMPLATE
from api.openapi_params import PARAMETERS_NOTE, body_properties
from api.render import BUDGET_MOST
from engine.blocks import ALL_BLOCKS, FORMATS, REASONS
from engine.feeds import CONTENT_TYPES, FEEDS
from engine.sandbox import REQUEST_TIME_SHARE, describe_limits

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_LIMITED = {
    "description": "over the key's rate limit (PERSONA_RATE_LIMITS); see Retry-After",
    "headers": {"Retry-After": {"schema": {"type": "string"}}},
    "content": {"application/problem+json": {"schema": {"type": "object"}}},
}
_ERRORS = {"400": _PROBLEM, "401": _PROBLEM, "403": _PROBLEM, "413": _PROBLEM, "429": _LIMITED}
_USER_IDS = {
    "type": "array",
    "minItems": 1,
    "maxItems": 1000,
    "items": {"type": "string", "minLength": 1, "maxLength": 128},
    "description": "duplicates are answered once (the limit counts every entry); a list with "
    "ids that are no string of 1..128 characters, or hold a control character or a lone "
    "surrogate, is a 400 (`parameter` user_ids) naming each one's index and fault (the first "
    "10, then how many more)",
}


def _both(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}, "application/msgpack": {"schema": schema}}


def serving_paths() -> dict[str, Any]:
    batch_request = {
        "type": "object",
        "required": ["block", "user_ids"],
        "description": "Block parameters apply to every user; `similar_items` needs "
        "`context_item`." + PARAMETERS_NOTE,
        "additionalProperties": False,
        "properties": {
            "block": {"type": "string", "enum": list(ALL_BLOCKS)},
            "format": {"type": "string", "enum": list(FORMATS), "default": "html"},
            "user_ids": _USER_IDS,
            "deadline_ms": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_DEADLINE_MS,
                "description": "answer about this many milliseconds after the body was read: "
                "the users not computed by then get the fallback",
            },
            **body_properties(),
        },
    }
    batch_response = {
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["content", "fallback", "etag"],
                    "properties": {
                        "content": {
                            "type": "string",
                            "description": "the block as GET serves it (HTML, or JSON text)",
                        },
                        "fallback": {"type": "boolean"},
                        "etag": {"type": "string"},
                        "fallback_reason": {
                            "type": "string",
                            "enum": list(REASONS),
                            "description": "why the entry is the fallback (docs/serving.md); "
                            "only on fallbacks",
                        },
                    },
                },
            }
        },
    }
    render_request = {
        "type": "object",
        "required": ["template", "user_ids"],
        "description": "Block parameters apply to every block the template uses "
        "(`blocks.similar_items` without `context_item` is the fallback)." + PARAMETERS_NOTE,
        "additionalProperties": False,
        "properties": {
            **body_properties(),
            "template": {"type": "string", "minLength": 1, "maxLength": MAX_TEMPLATE},
            "user_ids": _USER_IDS,
            "data": {
                "type": "object",
                "description": "user_id -> merge fields, available as user.*",
                "additionalProperties": {"type": "object"},
            },
            "deadline_ms": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_DEADLINE_MS,
                "description": "render for at most this many milliseconds after the body was "
                "read: the recipients not rendered by then get `content: null` and why in "
                "`error`",
            },
            "render_budget": {
                "type": "object",
                "description": "lowers the request's rendering budget (never raises it): a "
                "worker that splits a render by owner sends each owner its recipients' share "
                "of what is left of its own, so the request as a whole stays within one budget",
                "required": list(BUDGET_MOST),
                "additionalProperties": False,
                "properties": {
                    name: {"type": "integer", "minimum": 0, "maximum": most}
                    for name, most in BUDGET_MOST.items()
                },
            },
        },
    }
    render_response = {
        "type": "object",
        "required": ["results", "errors"],
        "properties": {
            "errors": {"type": "integer", "minimum": 0},
            "results": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["content", "fallback", "fallback_blocks", "error"],
                    "properties": {
                        "content": {"type": "string", "nullable": True},
                        "fallback": {"type": "boolean"},
                        "fallback_blocks": {
                            "type": "array",
                            "items": {"type": "string", "enum": list(ALL_BLOCKS)},
                        },
                        "error": {"type": "string", "nullable": True},
                    },
                },
            },
        },
    }
    return {
        "/v1/blocks:batch": {
            "post": {
                "summary": "One block for up to 1000 users (msgpack by Accept)",
                "description": (
                    "With `deadline_ms` (an integer 1.."
                    f"{MAX_DEADLINE_MS}; anything else is a 400 naming it) the answer is sent "
                    "about that many milliseconds after the request's body was read: the users "
                    "whose blocks were not computed by then get the fallback block an unknown "
                    "user gets (best-sellers, `fallback` true, the same entry shape). They are "
                    "the last ones of the de-duplicated `user_ids`, and "
                    f"`{DEADLINE_HEADER}: <n>` (sent whenever `deadline_ms` is, or users were "
                    "cut) says how many. With or without it, a batch stops computing at "
                    f"{TIMEOUT_SHARE:.0%} of the request timeout (PERSONA_REQUEST_TIMEOUT) the "
                    "same way, rather than answer 503 at the timeout."
                ),
                "requestBody": {"required": True, "content": _both(batch_request)},
                "responses": {
                    "200": {
                        "description": "one answer per user",
                        "headers": {
                            DEADLINE_HEADER: {
                                "description": "users answered with the fallback because "
                                "`deadline_ms` or the share of the request timeout had passed "
                                "(when `deadline_ms` was given, or users were cut)",
                                "schema": {"type": "integer", "minimum": 0},
                            }
                        },
                        "content": _both(batch_response),
                    },
                    **_ERRORS,
                },
            }
        },
        "/v1/render": {
            "post": {
                "summary": "A sender's e-mail template (sandboxed Jinja2), one message per user",
                "description": (
                    "`{{ blocks.recommendations }}`, `{{ blocks.cart_reminder }}`, "
                    "`{{ blocks.winback }}` insert the blocks' e-mail HTML; `{{ user.* }}` holds "
                    "user_id, known, orders, monetary, first_seen, last_seen, cart_items and the "
                    "sender's data (JSON values only); for a user without personalization "
                    "consent they hold an unknown user's values (known false) and the blocks are "
                    "the fallbacks. The template runs in a strict sandbox "
                    "and sees data, never objects: attributes, filters and callables are "
                    "allow-lists (no `format`, no `lipsum`, no `pprint`, no names starting with "
                    "`_`), and whatever it prints must be plain data. A template that does not "
                    "compile, or that reads a block that does not exist "
                    "(`{{ blocks.recomendations }}`), is a 400 naming it; an undefined `user.*` "
                    "renders empty; one that fails for one user renders with fallbacks; one "
                    "that goes over a budget gets `content: null` and the reason in `error` for "
                    "that user. Recipients after the request's budget is spent get the same. "
                    "The message's lines are kept within SMTP's 998 octets as a block's are "
                    "(broken only where a line break changes nothing); a line with nowhere to "
                    "break is that recipient's template error. "
                    + describe_limits()
                    + f" Rendering stops after {REQUEST_TIME_SHARE:.0%} of the request timeout "
                    "(PERSONA_REQUEST_TIMEOUT), or after `deadline_ms` (an integer 1.."
                    f"{MAX_DEADLINE_MS}, as a batch's; anything else is a 400 naming it) "
                    "milliseconds from when the body was read when that is sooner; the "
                    "recipients left get `content: null` and the reason in `error` (counted "
                    "in `errors`). Other requests keep being answered meanwhile. With several "
                    "workers, each owner of some recipients renders them under their share of "
                    "what is left of the request's budget, sent as `render_budget` (`cpu_ms`, "
                    "`steps`, `output_bytes`, `built_chars`; it can only lower a budget, values "
                    "out of range are a 400 naming it): the request as a whole stays within one "
                    "budget."
                ),
                "requestBody": {"required": True, "content": _both(render_request)},
                "responses": {
                    "200": {
                        "description": "one message per user",
                        "content": _both(render_response),
                    },
                    **_ERRORS,
                },
            }
        },
        "/v1/feeds/{name}": {
            "get": {
                "summary": "The catalog as an ad-platform product feed (streamed)",
                "security": [{"bearer": []}, {"basic": []}],
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": list(FEEDS)},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "the feed",
                        "content": {
                            ct: {"schema": {"type": "string"}}
                            for ct in dict.fromkeys(CONTENT_TYPES.values())  # no set: one order
                        },
                    },
                    "401": _PROBLEM,
                    "403": _PROBLEM,
                    "404": _PROBLEM,
                    "429": {
                        **_LIMITED,
                        "description": "over the key's rate limit (PERSONA_RATE_LIMITS) or "
                        "streaming PERSONA_FEED_STREAMS_PER_KEY feeds already; see Retry-After",
                    },
                },
            }
        },
    }
