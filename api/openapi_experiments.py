"""OpenAPI entries of the content experiments (api/experiments.py): GET and PUT /v1/experiments
and GET /v1/experiments/{name}/report."""

from __future__ import annotations

from typing import Any

from engine.content_experiments import (
    EXPERIMENT_BLOCKS,
    MAX_ARMS,
    MAX_EXPERIMENTS,
    MAX_NAME,
    MAX_WEIGHT,
    VARIANT_NAME,
)
from models.content_report import DEFAULT_WINDOW_HOURS, MAX_WINDOW_HOURS

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_AUTH = {"401": _PROBLEM, "403": _PROBLEM, "429": _PROBLEM}
_TIME = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
_ARM = {
    "type": "object",
    "required": ["variant"],
    "properties": {
        "variant": {
            "type": "string",
            "pattern": f"^{VARIANT_NAME.pattern}$",
            "description": "`default` (the block's own template) or a template variant: "
            "templates/email/<block>.<variant>.html, templates/ads/<block>.<variant>.json",
        },
        "weight": {
            "type": "number",
            "minimum": 0,
            "exclusiveMinimum": True,
            "maximum": MAX_WEIGHT,
            "default": 1,
        },
    },
}
_DOCUMENT = {
    "type": "object",
    "required": ["experiments"],
    "properties": {
        "version": {"type": "string", "description": "set by the server (1, 2, ...)"},
        "experiments": {
            "type": "array",
            "maxItems": MAX_EXPERIMENTS,
            "items": {
                "type": "object",
                "required": ["name", "block", "arms"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME},
                    "block": {"type": "string", "enum": list(EXPERIMENT_BLOCKS)},
                    "arms": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_ARMS,
                        "items": _ARM,
                        "description": "the first arm is the control",
                    },
                    "holdout": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": 1,
                        "exclusiveMaximum": True,
                        "description": "the fraction of users shown the fallback (variant "
                        "`holdout`)",
                    },
                    "starts": _TIME,
                    "ends": _TIME,
                },
            },
        },
    },
}
_INTERVAL = {
    "type": "object",
    "properties": {
        "difference": {"type": "number", "nullable": True},
        "ci95": {"type": "array", "nullable": True, "items": {"type": "number"}},
    },
}
_REPORT = {
    "type": "object",
    "properties": {
        "experiment": {"type": "string"},
        "block": {"type": "string"},
        "window_hours": {"type": "number"},
        "control": {"type": "string"},
        "arms": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "variant": {"type": "string"},
                    **{
                        name: {"type": "integer"}
                        for name in ("users", "exposures", "clicks", "clickers", "buyers")
                    },
                    "purchases": {"type": "integer"},
                    "ctr": {"type": "number", "nullable": True},
                    "purchase_rate": {"type": "number", "nullable": True},
                    "revenue": {"type": "number"},
                    "revenue_per_user": {"type": "number", "nullable": True},
                    "vs_control": {
                        "type": "object",
                        "properties": {
                            "ctr": _INTERVAL,
                            "purchase_rate": _INTERVAL,
                            "revenue_per_user": _INTERVAL,
                        },
                    },
                },
            },
        },
    },
}


def experiments_paths() -> dict[str, Any]:
    answer = {
        "description": 'the content experiments now served, with ETag: "<version>"',
        "content": {"application/json": {"schema": _DOCUMENT}},
    }
    put = {
        "summary": "Replace the content experiments (every process within seconds)",
        "description": "A/B and multivariate tests of block template variants; one experiment a "
        "block at a time; an arm naming a variant without a template file is a 400 naming it. "
        '`If-Match: "<version>"` refuses a stale edit (412).',
        "requestBody": {"required": True, "content": {"application/json": {"schema": _DOCUMENT}}},
        "responses": {
            "200": answer,
            **{code: _PROBLEM for code in ("400", "412", "413", "503")},
            **_AUTH,
        },
    }
    window = {
        "name": "window_hours",
        "in": "query",
        "required": False,
        "description": "purchases count within this many hours after a click",
        "schema": {
            "type": "number",
            "minimum": 0,
            "exclusiveMinimum": True,
            "maximum": MAX_WINDOW_HOURS,
            "default": DEFAULT_WINDOW_HOURS,
        },
    }
    report = {
        "summary": "A content experiment's report: per arm exposures, clicks, CTR, purchases and "
        "revenue after a click, and each arm against the control with a 95% interval",
        "parameters": [
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
            window,
        ],
        "responses": {
            "200": {
                "description": "the report",
                "content": {"application/json": {"schema": _REPORT}},
            },
            **{code: _PROBLEM for code in ("400", "404", "503")},
            **_AUTH,
        },
    }
    return {
        "/v1/experiments": {
            "get": {
                "summary": "The content experiments",
                "responses": {"200": answer, "503": _PROBLEM, **_AUTH},
            },
            "put": put,
        },
        "/v1/experiments/{name}/report": {"get": report},
    }
