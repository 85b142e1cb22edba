"""The OpenAPI 3 document of the routes this build serves."""

from __future__ import annotations

from typing import Any

from api.encodings import COMPRESS_FROM
from api.openapi_collect import DISK_FULL, collect_paths
from api.openapi_experiments import experiments_paths
from api.openapi_models import models_paths, privacy_paths
from api.openapi_params import (
    PARAMETERS_NOTE,
    block_parameters,
    block_responses,
    similar_paths,
    user_param,
)
from api.openapi_paths import extra_paths
from api.openapi_rules import rules_paths
from api.openapi_serving import serving_paths
from engine.blocks import ALL_BLOCKS

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_AUTH_ERRORS = {"401": _PROBLEM, "403": _PROBLEM}
_LIMITED = {
    "description": "over the key's rate limit (PERSONA_RATE_LIMITS), or too many failed "
    "authentications from this address; see Retry-After",
    "headers": {"Retry-After": {"schema": {"type": "string"}}},
    "content": {"application/problem+json": {"schema": {"type": "object"}}},
}
_UNREADABLE = {
    "description": "a request HTTP cannot read (a malformed request line or header, such as an "
    "empty `Content-Length`), refused before any route sees it",
    "content": {"application/problem+json": {"schema": {"type": "object"}}},
}


def openapi_document() -> dict[str, Any]:
    """The document; every operation can answer 400 (a request aiohttp's parser refuses before
    any route sees it: api/protocol.py), every one that can answer 401 can also answer 429 (a
    key over its rate limit, or an address with too many failed authentications:
    api/limits.py), and every one that takes a body 415 (a `Content-Encoding` not read here:
    api/encodings.py)."""
    document = _document()
    for operations in document["paths"].values():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.setdefault("400", _UNREADABLE)
            if "401" in responses:
                responses.setdefault("429", _LIMITED)
            if method in ("post", "put", "patch"):
                responses.setdefault("415", _PROBLEM)
    return document


def _document() -> dict[str, Any]:
    item = {
        "type": "object",
        "required": ["item_id", "title", "url", "image_url", "price", "currency"],
        "properties": {
            "item_id": {"type": "string"},
            "title": {"type": "string"},
            "url": {"type": "string"},
            "image_url": {"type": "string"},
            "price": {"type": "number"},
            "currency": {"type": "string"},
        },
    }
    block_json = {
        "type": "object",
        "required": ["block", "user_id", "items", "variant", "models", "fallback"],
        "properties": {
            "block": {"type": "string", "enum": list(ALL_BLOCKS)},
            "user_id": {"type": "string"},
            "items": {"type": "array", "items": item},
            "variant": {"type": "string"},
            "models": {"type": "object", "additionalProperties": {"type": "string"}},
            "fallback": {"type": "boolean"},
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Persona content API",
            "version": "0.1.0",
            "description": "A query parameter given more than once is a 400 problem naming it "
            "in `parameter`: none is repeatable (`exclude` takes its item ids comma-separated). "
            "A request body may be sent with `Content-Encoding: gzip` (or its alias `x-gzip`) "
            "or `deflate`: every bound "
            "on a body counts its inflated bytes (413 past it), one that does not inflate, or "
            "whose stream does not end properly (cut short, a CRC32/ISIZE trailer that does not "
            "match, bytes after it), is a 400 and nothing of it is accepted, and any other "
            "coding (or several) a 415 naming these two in "
            "`Accept-Encoding` (after the key check: a request without a valid key gets its "
            "401 or 403 whatever its coding). Answers of `POST /v1/blocks:batch` and "
            f"`POST /v1/render` of {COMPRESS_FROM // 1024} KiB or more are gzipped when the "
            "request's `Accept-Encoding` accepts gzip; they carry `Vary: Accept-Encoding`.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},  # feeds only
            },
            "responses": {
                "Problem": {
                    "description": "An RFC 9457 problem",
                    "content": {"application/problem+json": {"schema": {"type": "object"}}},
                }
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {"security": [], "responses": {"200": {"description": "alive"}}}},
            "/readyz": {
                "get": {
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "tables recovered, models loaded, the catalog "
                            "kept from earlier runs in the content index"
                        },
                        "503": {
                            "description": "still starting; `detail` says what it waits for. "
                            "Once ready, a rebalance of the worker group does not make it 503: "
                            "200 with `detail` `ok; rebalancing` (or `ok; tables recovering: "
                            "...`) while it answers from what it has"
                        },
                    },
                }
            },
            "/metrics": {
                "get": {"security": [], "responses": {"200": {"description": "Prometheus text"}}}
            },
            "/openapi.json": {
                "get": {"security": [], "responses": {"200": {"description": "this document"}}}
            },
            "/v1/users/{user_id}/blocks/{block}": {
                "get": {
                    "summary": "One content block for one user (personalized or the fallback)",
                    "description": "`similar_items` needs `context_item`." + PARAMETERS_NOTE,
                    "parameters": block_parameters(
                        user_param(),
                        {
                            "name": "block",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": list(ALL_BLOCKS)},
                        },
                    ),
                    "responses": block_responses(block_json),
                }
            },
            "/v1/users/{user_id}/profile": {
                "get": {
                    "summary": "The user's profile, scores and recommendations",
                    "description": "Without personalization consent `personalized` is false and "
                    "nothing derived from the profile is shown: `scores.churn` null, "
                    "`recommendations` [], `models` {}, `affinities` empty.",
                    "parameters": [user_param()],
                    "responses": {
                        "200": {
                            "description": "the profile",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "404": _PROBLEM,
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/events": {
                "post": {
                    "summary": "Collect events (a JSON array or NDJSON)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"type": "array"}},
                            "application/x-ndjson": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "accepted and rejected counts",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "400": _PROBLEM,
                        "413": _PROBLEM,
                        **_AUTH_ERRORS,
                        "503": DISK_FULL,
                    },
                }
            },
            **collect_paths(),  # api/openapi_collect.py: browser collection, the tag
            **extra_paths(),  # api/openapi_paths.py: the UI and observability routes
            **serving_paths(),  # api/openapi_serving.py: batch, render, feeds
            **models_paths(),  # api/openapi_models.py: the model registry, experiments
            **privacy_paths(),  # api/openapi_models.py: GDPR export and erasure
            **similar_paths(block_json),  # api/openapi_params.py: items like this one
            **rules_paths(),  # api/openapi_rules.py: merchandising rules
            **experiments_paths(),  # api/openapi_experiments.py: content A/B tests
        },
    }
