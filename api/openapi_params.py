"""OpenAPI entries of the block parameters (engine.params) and the item route (api/similar.py)."""

from __future__ import annotations

from typing import Any

from engine.blocks import FORMATS, REASONS
from engine.params import MAX_EXCLUDE, MAX_ID, MAX_LOCALE, MAX_N, MAX_PRICE, MAX_TEXT

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_PRICE = {"type": "number", "minimum": 0, "maximum": MAX_PRICE}
_ITEM = {"type": "string", "minLength": 1, "maxLength": MAX_ID}
_TEXT = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}
# what each parameter does, for the query parameters and the body fields alike
DESCRIPTIONS = {
    "n": f"how many items the block shows (1..{MAX_N}; default: the configured count)",
    "category": "only items of this catalog category (case-insensitive; `Home` also takes "
    "`Home > Kitchen`)",
    "brand": "only items of this brand (case-insensitive)",
    "min_price": "only items priced at least this much (the catalog price, any currency)",
    "max_price": "only items priced at most this much",
    "exclude": f"item ids never shown (at most {MAX_EXCLUDE})",
    "context_item": "the item the recipient looks at or just bought: `recommendations` and "
    "`winback` lean on it (as the newest history item) and never show it; `similar_items` shows "
    "items like it (required there)",
    "locale": "a BCP 47 language tag (e.g. `en-GB`), handed to the templates as `locale`",
}
PARAMETERS_NOTE = (
    " Block parameters: an unknown, repeated or invalid one is a 400 problem naming it in "
    "`parameter`. Filters apply to the candidate items (personal ones and the best-sellers of a "
    "fallback); each distinct parameter set is cached on its own (`PARAM_BLOCKS` entries, "
    "api/content.py)."
)


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or {"type": "string"}}


# the headers of a block GET's 200 and 304 (api/block_headers.py), beside Content-Type
BLOCK_HEADERS = {
    "ETag": _header("the block's tag: send it back in If-None-Match to get a 304 while unchanged"),
    "Cache-Control": _header(
        "`private, no-cache`: a cache may keep it for this user only, and revalidates with the ETag"
    ),
    "X-Persona-Fallback": _header(
        "`1` when the block is the fallback (not derived from this "
        "user's own profile; an e-mail block has no `fallback` field to say so); absent "
        "otherwise",
        {"type": "string", "enum": ["1"]},
    ),
    "X-Persona-Fallback-Reason": _header(
        "why the block is the fallback, one of a fixed vocabulary (docs/serving.md); absent "
        "when personalized",
        {"type": "string", "enum": list(REASONS)},
    ),
    "X-Persona-Variant": _header(
        "the arm of a running content or model experiment (`default` otherwise)"
    ),
    "X-Persona-Model": _header(
        "`name=version` of the models behind the block, comma-separated (empty for a fallback)"
    ),
}


def _schemas(body: bool) -> dict[str, dict[str, Any]]:
    exclude: dict[str, Any] = {"type": "string", "minLength": 1, "description": "comma-separated"}
    if body:
        exclude = {"oneOf": [{"type": "array", "items": _ITEM, "minItems": 1}, exclude]}
    return {
        "n": {"type": "integer", "minimum": 1, "maximum": MAX_N},
        "category": _TEXT,
        "brand": _TEXT,
        "min_price": _PRICE,
        "max_price": _PRICE,
        "exclude": exclude,
        "context_item": _ITEM,
        "locale": {"type": "string", "minLength": 1, "maxLength": MAX_LOCALE},
    }


def query_params(skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The block parameters as OpenAPI query parameters (but those in `skip`)."""
    return [
        {"name": name, "in": "query", "description": DESCRIPTIONS[name], "schema": schema}
        for name, schema in _schemas(False).items()
        if name not in skip
    ]


def body_properties() -> dict[str, Any]:
    """The block parameters as properties of a JSON request body."""
    return {
        name: {**schema, "description": DESCRIPTIONS[name]}
        for name, schema in _schemas(True).items()
    }


def user_param() -> dict[str, Any]:
    """The path's `{user_id}`."""
    return {
        "name": "user_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    }


def block_parameters(*path: dict[str, Any], skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """A block route's parameters: its path's, `format`, the block parameters but `skip`, and
    If-None-Match."""
    return [
        *path,
        {
            "name": "format",
            "in": "query",
            "schema": {"type": "string", "enum": list(FORMATS), "default": "html"},
        },
        *query_params(skip=skip),
        {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
    ]


def block_responses(block_json: dict[str, Any]) -> dict[str, Any]:
    """A block route's answers; `block_json` is the JSON block's schema."""
    return {
        "200": {
            "description": "the block",
            "headers": BLOCK_HEADERS,
            "content": {
                "text/html": {"schema": {"type": "string"}},
                "application/json": {"schema": block_json},
            },
        },
        "304": {"description": "not modified", "headers": BLOCK_HEADERS},
        "400": _PROBLEM,
        "404": _PROBLEM,
        "401": _PROBLEM,
        "403": _PROBLEM,
    }


def similar_paths(block_json: dict[str, Any]) -> dict[str, Any]:
    """`GET /v1/items/{item_id}/similar`; `block_json` is the JSON block's schema."""
    return {
        "/v1/items/{item_id}/similar": {
            "get": {
                "summary": "Items like this one: the `similar_items` block of a catalog item",
                "description": "Its co-occurrence neighbours in the active recs model, content "
                "neighbours for an item the model has not seen; only items in stock, never the "
                "item itself; the best-sellers (`fallback` true) when none is. `user_id` is "
                '"". 404 for an item not in the catalog.' + PARAMETERS_NOTE,
                "parameters": block_parameters(
                    {"name": "item_id", "in": "path", "required": True, "schema": _ITEM},
                    skip=("context_item",),
                ),
                "responses": block_responses(block_json),
            }
        }
    }
