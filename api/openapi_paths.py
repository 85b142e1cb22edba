"""OpenAPI entries of the observability and UI routes (api/observability.py, api/ui.py)."""

from __future__ import annotations

from typing import Any

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_JSON = {"application/json": {"schema": {"type": "object"}}}


def _page(summary: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "description": (
                "Answers 200 with a content:read key and 401 without one; both bodies are the same "
                "data-free page with a sign-in form that keeps the key in the tab's sessionStorage "
                "and sends it as `Authorization: Bearer` on the data routes it calls. Its assets "
                "(`/ui/static/*`) are public and hold no data."
            ),
            "responses": {
                "200": {"description": "the page", "content": {"text/html": {}}},
                "401": {"description": "the same page, showing the sign-in form"},
            },
        }
    }


def extra_paths() -> dict[str, Any]:
    return {
        "/ui/preview": _page(
            "Preview: a user's blocks as e-mail (sandboxed iframe) and ad JSON, the profile, why"
        ),
        "/ui/dashboard": _page(
            "Live dashboard: events/s, lag, dead letters, cache and fallback rates, requests/s, "
            "latency, churn histogram, triggers, A/B results (polls /v1/stats every second)"
        ),
        "/v1/users/{user_id}/explain": {
            "get": {
                "summary": "Why a user gets their content: recent items and the neighbours behind "
                "each recommendation, churn score and its main features, blocks' variants, models",
                "description": "403 (`No consent`) for a user without personalization consent: "
                "nothing is derived from their profile.",
                "parameters": [
                    {
                        "name": "user_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                    }
                ],
                "responses": {
                    "200": {"description": "the explanation", "content": _JSON},
                    "404": _PROBLEM,
                    "401": _PROBLEM,
                    "403": _PROBLEM,
                },
            }
        },
        "/v1/users": {
            "get": {
                "summary": "The most active users of a sample of the profiles this process reads "
                "(a worker's or its reader's; for the preview's user picker)",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 20},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "{users: [{user_id, events, last_seen}]}",
                        "content": _JSON,
                    },
                    "400": _PROBLEM,
                    "401": _PROBLEM,
                },
            }
        },
        "/v1/stats": {
            "get": {
                "summary": "The dashboard's figures of the whole engine (this process's merged "
                "with every live worker's and reader's): a point a second for the last 5 minutes "
                "(events/s per topic, lag, dead letters, cache hit and fallback rates, requests/s, "
                "latency percentiles, triggers), totals, churn histogram, the triggers emitted "
                "by name (`triggers`) and those recorded but not sent for being older than "
                "PERSONA_TRIGGER_MAX_AGE_HOURS (`triggers_stale`), experiments, and the "
                "processes they come from (`process`: its id on the stats board; `label`: "
                "a readable name, e.g. `reader 1 (pid 15995) on :8080`; kind, host, age of "
                "their figures)",
                "responses": {
                    "200": {"description": "the figures", "content": _JSON},
                    "401": _PROBLEM,
                },
            }
        },
    }
