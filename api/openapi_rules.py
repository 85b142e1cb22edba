"""OpenAPI entries of the merchandising rules (api/rules.py): GET and PUT /v1/rules."""

from __future__ import annotations

from typing import Any

from engine.rules import (
    ACTIONS,
    AVAILABILITY,
    MAX_ITEM_IDS,
    MAX_PIN_CHECKS,
    MAX_POSITION,
    MAX_RULES,
    RULE_BLOCKS,
)

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_AUTH = {"401": _PROBLEM, "403": _PROBLEM, "429": _PROBLEM}
_DOCUMENT = {
    "type": "object",
    "required": ["rules"],
    "properties": {
        "version": {"type": "string", "description": "set by the server (1, 2, ...)"},
        "rules": {
            "type": "array",
            "maxItems": MAX_RULES,
            "description": f"the item_ids of all pin rules times the number of rules is at most "
            f"{MAX_PIN_CHECKS} (a pin checks each item it lists against every rule); category "
            "and brand hold no lone surrogate and no control character but tab, LF and CR",
            "items": {
                "type": "object",
                "required": ["id", "action", "match"],
                "properties": {
                    "id": {"type": "string", "minLength": 1, "maxLength": 128},
                    "action": {"type": "string", "enum": list(ACTIONS)},
                    "match": {
                        "type": "object",
                        "minProperties": 1,
                        "properties": {
                            "item_ids": {
                                "type": "array",
                                "items": {"type": "string"},
                                "maxItems": MAX_ITEM_IDS,
                            },
                            "category": {"type": "string"},
                            "brand": {"type": "string"},
                            "min_price": {"type": "number", "minimum": 0},
                            "max_price": {"type": "number", "minimum": 0},
                            "availability": {"type": "string", "enum": list(AVAILABILITY)},
                        },
                    },
                    "weight": {"type": "number", "description": "boost > 1, bury in (0, 1)"},
                    "position": {"type": "integer", "minimum": 1, "maximum": MAX_POSITION},
                    "blocks": {
                        "type": "array",
                        "items": {"type": "string", "enum": list(RULE_BLOCKS)},
                    },
                    "starts": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                    "ends": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                },
            },
        },
    },
}


def rules_paths() -> dict[str, Any]:
    answer = {
        "description": 'the rules now served, with ETag: "<version>"',
        "content": {"application/json": {"schema": _DOCUMENT}},
    }
    return {
        "/v1/rules": {
            "get": {
                "summary": "The merchandising rules",
                "responses": {"200": answer, "503": _PROBLEM, **_AUTH},
            },
            "put": {
                "summary": "Replace the merchandising rules (every process within seconds)",
                "description": "Exclude, filter, boost/bury, pin, in that order; rules never bring "
                'back an out-of-stock item. `If-Match: "<version>"` refuses a stale edit (412).',
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _DOCUMENT}},
                },
                "responses": {
                    "200": answer,
                    "400": _PROBLEM,
                    "412": _PROBLEM,
                    "413": _PROBLEM,
                    "503": _PROBLEM,
                    **_AUTH,
                },
            },
        }
    }
