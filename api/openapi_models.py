"""OpenAPI entries of the model registry routes (api/models_routes.py, scope models:admin) and the
GDPR routes (api/privacy.py, scope privacy:admin)."""

from __future__ import annotations

from typing import Any

from api.openapi_params import user_param
from api.privacy import REASONS
from engine.content_experiments import MAX_NAME
from models.bundle import KINDS, NAMES
from models.experiments import MODES

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_AUTH = {"401": _PROBLEM, "403": _PROBLEM}
_NO_REGISTRY = {
    "description": "no model registry on this server (the API runs without a broker)",
    "content": {"application/problem+json": {"schema": {"type": "object"}}},
}
_ANY = {"type": "object", "additionalProperties": True}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _name_param(description: str, enum: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if enum:
        schema["enum"] = enum
    return {
        "name": "name",
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def models_paths() -> dict[str, Any]:
    kinds = sorted({kind for kinds in KINDS.values() for kind in kinds})
    version = {
        "type": "object",
        "required": ["name", "version", "active", "created", "metrics"],
        "properties": {
            "name": {"type": "string", "enum": list(NAMES)},
            "version": {"type": "string", "example": "recs-20261122T0800-1a2b3c4d"},
            "active": {"type": "boolean"},
            "created": {"type": "string", "format": "date-time"},
            "metrics": _ANY,
            "kind": {"type": "string", "enum": kinds},
            "source": {
                "type": "string",
                "description": "`package` for the models shipped with Persona, else `registry`",
            },
        },
    }
    experiment = {
        "type": "object",
        "nullable": True,
        "required": ["name", "model", "control", "candidate", "mode", "share", "started"],
        "properties": {
            "name": {"type": "string"},
            "model": {"type": "string", "enum": list(NAMES)},
            "control": {"type": "string", "description": "the version variant A is served"},
            "candidate": {"type": "string", "description": "the version under test"},
            "mode": {"type": "string", "enum": list(MODES)},
            "share": {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "exclusiveMinimum": True,
                "exclusiveMaximum": True,
            },
            "started": {"type": "string", "format": "date-time"},
        },
    }
    experiment_body = {
        "type": "object",
        "required": ["experiment"],
        "properties": {"experiment": experiment},
    }
    switched = {
        "type": "object",
        "required": ["name", "version", "active", "serving"],
        "properties": {
            "name": {"type": "string", "enum": list(NAMES)},
            "version": {"type": "string"},
            "active": {"type": "boolean"},
            "serving": {
                "type": "boolean",
                "description": "whether this worker already serves it (the others follow within "
                "seconds)",
            },
        },
    }
    switch_errors = {
        "400": _PROBLEM,
        **_AUTH,
        "404": _PROBLEM,
        "409": {
            "description": "the version cannot be activated (another model's version, an "
            "incomplete artifact, nothing to roll back to)",
            "content": {"application/problem+json": {"schema": {"type": "object"}}},
        },
        "503": _NO_REGISTRY,
    }
    arm = {
        "type": "object",
        "properties": {
            "users": {"type": "integer"},
            "exposures": {"type": "integer"},
            "conversions": {"type": "integer"},
            "conversion_rate": {"type": "number", "nullable": True},
            "recommendation_hits": {"type": "integer"},
            "hit_rate": {"type": "number", "nullable": True},
        },
    }
    diff = {
        "type": "object",
        "properties": {
            "difference": {"type": "number", "nullable": True, "description": "B - A"},
            "ci95": {
                "type": "array",
                "nullable": True,
                "items": {"type": "number"},
                "minItems": 2,
                "maxItems": 2,
            },
        },
    }
    report = {
        "type": "object",
        "required": ["experiment", "mode", "variants", "conversion", "recommendation_hits"],
        "properties": {
            "experiment": {"type": "string"},
            "mode": {"type": "string", "enum": list(MODES)},
            "variants": {"type": "object", "properties": {"A": arm, "B": arm}},
            "conversion": diff,
            "recommendation_hits": diff,
        },
    }
    admin = "Scope `models:admin`."
    return {
        "/v1/models": {
            "get": {
                "summary": "Every registered model version, oldest first, and the experiment",
                "description": admin,
                "responses": {
                    "200": {
                        "description": "the registry",
                        "content": _json(
                            {
                                "type": "object",
                                "required": ["models", "experiment"],
                                "properties": {
                                    "models": {"type": "array", "items": version},
                                    "experiment": experiment,
                                },
                            }
                        ),
                    },
                    **_AUTH,
                    "503": _NO_REGISTRY,
                },
            }
        },
        "/v1/models/{name}/activate": {
            "post": {
                "summary": "Make a version active on every worker (answers once served here)",
                "description": admin,
                "parameters": [_name_param("the model", list(NAMES))],
                "requestBody": {
                    "required": True,
                    "content": _json(
                        {
                            "type": "object",
                            "required": ["version"],
                            "properties": {"version": {"type": "string", "minLength": 1}},
                        }
                    ),
                },
                "responses": {
                    "200": {"description": "activated", "content": _json(switched)},
                    **switch_errors,
                },
            }
        },
        "/v1/models/{name}/rollback": {
            "post": {
                "summary": "Back to the previously active version",
                "description": admin,
                "parameters": [_name_param("the model", list(NAMES))],
                "responses": {
                    "200": {"description": "rolled back", "content": _json(switched)},
                    **{k: v for k, v in switch_errors.items() if k != "400"},
                },
            }
        },
        "/v1/models/experiment": {
            "get": {
                "summary": "The running A/B test or shadow run (null when none)",
                "description": admin,
                "responses": {
                    "200": {"description": "the experiment", "content": _json(experiment_body)},
                    **_AUTH,
                    "503": _NO_REGISTRY,
                },
            },
            "put": {
                "summary": "Start an experiment: the active version (A) against a candidate (B)",
                "description": admin
                + " Replaces a running experiment. A candidate that is the active version is a"
                " 400 (a model against itself), an unknown one a 404.",
                "requestBody": {
                    "required": True,
                    "content": _json(
                        {
                            "type": "object",
                            "required": ["name", "model", "candidate"],
                            "properties": {
                                "name": {
                                    "type": "string",
                                    "minLength": 1,
                                    "maxLength": MAX_NAME,
                                    "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                                },
                                "model": {"type": "string", "enum": list(NAMES)},
                                "candidate": {"type": "string", "minLength": 1},
                                "mode": {"type": "string", "enum": list(MODES), "default": "ab"},
                                "share": {
                                    "type": "number",
                                    "minimum": 0,
                                    "maximum": 1,
                                    "exclusiveMinimum": True,
                                    "exclusiveMaximum": True,
                                    "default": 0.5,
                                    "description": "the fraction of users in variant B",
                                },
                            },
                        }
                    ),
                },
                "responses": {
                    "200": {"description": "started", "content": _json(experiment_body)},
                    "400": _PROBLEM,
                    **_AUTH,
                    "404": _PROBLEM,
                    "503": _NO_REGISTRY,
                },
            },
            "delete": {
                "summary": "Stop the running experiment",
                "description": admin,
                "responses": {
                    "200": {"description": "stopped", "content": _json(experiment_body)},
                    **_AUTH,
                    "503": _NO_REGISTRY,
                },
            },
        },
        "/v1/models/experiments/{name}/report": {
            "get": {
                "summary": "Per-variant exposures, conversions and recommendation hits, and B - A "
                "with a 95% confidence interval",
                "description": admin + " An experiment started (running or stopped since) "
                "without exposures reports zeros; any other name without an exposure logged is "
                "a 404 (a mistyped name) whose detail names the experiments started and the one "
                "meant when one is close.",
                "parameters": [_name_param("the experiment")],
                "responses": {
                    "200": {"description": "the report", "content": _json(report)},
                    **_AUTH,
                    "404": _PROBLEM,
                    "503": _NO_REGISTRY,
                },
            }
        },
    }


def _erased_schema(queued: bool) -> dict[str, Any]:
    """The DELETE's answer: applied (200), or queued (202, with why: `reason`)."""
    required = ["user_id", "erased", "existed", "request_id"]
    properties: dict[str, Any] = {
        "user_id": {"type": "string"},
        "erased": {"type": "boolean"},
        # null: answered away from the user's owner (unreachable, or none known), with nothing
        # of the user here
        "existed": {"type": "boolean", "nullable": True},
        "request_id": {"type": "string"},
    }
    if queued:
        properties["reason"] = {"type": "string", "enum": list(REASONS)}
        required.append("reason")
    return {"type": "object", "required": required, "properties": properties}


def privacy_paths() -> dict[str, Any]:
    return {
        "/v1/users/{user_id}/export": {
            "get": {
                "summary": "GDPR access: everything stored about a user",
                "description": "Scope `privacy:admin`; audited. `records`: the user's records "
                "still held on the `triggers`, `dead-letters` and `exposures` topics (keyed by "
                "the user id; those an erasure's tombstone covers are left out), oldest first, "
                "the newest 200 per topic found among the newest 100,000 records of the user's "
                "partition; `complete` is false when the topics could not be read within 15 s or "
                "a partition holds older records than those (`truncated`: the topics cut "
                "short; `reason`: why, null when complete). "
                "`merged_ids`: every anonymous id an `identify` merged into the user (its "
                "history is in `stored` since the merge), each with `records`, the records "
                "still held under that id's key, as above (null without the topics). "
                "404 when neither a profile nor such records exist. 503 (with Retry-After) "
                "when answered by a process that holds nothing of the user away from its "
                "unreachable owner or while no owner is known (a rebalance): whether anything "
                "is stored is not known there.",
                "parameters": [user_param()],
                "responses": {
                    "200": {
                        "description": "the profile view, the stored fields and cached blocks",
                        "content": _json(
                            {
                                "type": "object",
                                "required": ["user_id", "profile", "stored", "cached_blocks"],
                                "properties": {
                                    "user_id": {"type": "string"},
                                    "profile": _ANY,
                                    "stored": _ANY,
                                    "cached_blocks": {"type": "array"},
                                    "merged_ids": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["user_id", "records"],
                                            "properties": {
                                                "user_id": {"type": "string"},
                                                "records": _ANY,
                                            },
                                        },
                                    },
                                    "records": {
                                        "type": "object",
                                        "properties": {
                                            "triggers": {"type": "array"},
                                            "dead_letters": {"type": "array"},
                                            "exposures": {"type": "array"},
                                            "complete": {"type": "boolean"},
                                            "truncated": {
                                                "type": "array",
                                                "items": {"type": "string"},
                                            },
                                            "reason": {"type": "string", "nullable": True},
                                        },
                                    },
                                },
                            }
                        ),
                    },
                    **_AUTH,
                    "404": _PROBLEM,
                    "503": {
                        "description": "the user's owner unknown or unreachable, nothing of "
                        "the user held here (Retry-After)",
                        "content": {"application/problem+json": {"schema": {"type": "object"}}},
                    },
                },
            }
        },
        "/v1/users/{user_id}": {
            "delete": {
                "summary": "GDPR erasure: the profile (with a changelog tombstone), every cache, "
                "and tombstones for the user's triggers, dead letters and exposures",
                "description": "Scope `privacy:admin`; audited with `request_id`, the "
                "request's `X-Request-Id` (yours when valid; the owner a DELETE is forwarded to "
                "answers and audits under the id the process you called answers with). 202 when "
                "the erasure was queued but not yet applied within 60% of the request timeout "
                "(PERSONA_REQUEST_TIMEOUT; at most 10 s) (or, answered by a process "
                "that holds nothing of the user away from its unreachable owner or while no "
                "owner is known (a rebalance), not known to be: `existed` null; queued all the "
                "same, for whichever worker owns the user's partition); `reason` says why: "
                "`ownership_unknown` (no owner of the user's partition known: a worker before "
                "its first assignment, a rebalance; retry in seconds), `owner_unreachable` "
                "(another worker owns it and could not be reached), `not_applied_yet` (queued "
                "behind its partition's backlog), `ownership_moved` (a rebalance moved the "
                "user's partition to another worker while it was awaited). It is applied in "
                "order: "
                "events of the user produced before it are never folded afterwards (a fence). "
                "An id no event could hold (over 128 characters, a control character) is a 400.",
                "parameters": [user_param()],
                "responses": {
                    "200": {"description": "erased", "content": _json(_erased_schema(False))},
                    "202": {"description": "queued", "content": _json(_erased_schema(True))},
                    "400": _PROBLEM,  # an id no user can hold (over 128 characters, controls)
                    **_AUTH,
                },
            }
        },
    }
