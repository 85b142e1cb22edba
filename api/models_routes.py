"""The model registry's HTTP routes (scope models:admin) and the A/B exposure log.

    GET    /v1/models                              every version, oldest first, + the experiment
    POST   /v1/models/{name}/activate              {"version": "..."}; answers once served here
    POST   /v1/models/{name}/rollback              back to the previously active version
    GET    /v1/models/experiment                   the running experiment (or null)
    PUT    /v1/models/experiment                   start {name, model, candidate, mode, share}
    DELETE /v1/models/experiment                   stop it
    GET    /v1/models/experiments/{name}/report    per-variant exposures, conversions, CI

While an experiment runs, every 200 answer of a block or profile read of a known user is logged
as an exposure (variant, versions, the items shown, and in shadow mode the candidate's items); so
is every known user of `POST /v1/blocks:batch` and `POST /v1/render` (`log_exposures`). Users
without personalization consent are never logged (and are scored with the default model set),
nor are json blocks (ads) of users without ads consent (their fallback, in no arm); exports and
explanations are no exposures.

Every change (POST, PUT, DELETE) is audited by the audit middleware (api/limits.py) with its
outcome; the handlers add what was asked and what was done (`DETAILS`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from api.audit import DETAILS
from api.encodings import read_whole
from api.shared import CONTENT, Handler, problem
from engine.content_experiments import ContentExperiment, ContentExperiments
from engine.rules import Rules
from models.artifacts import rfc3339, utc_now
from models.experiments import Experiment, exposures_of, unknown_experiment
from models.scoring import score_profile

log = logging.getLogger("persona.api.models")

NAMES = ("churn", "recs")


class ModelAdmin(Protocol):
    """What the routes need from the registry (streams.registry.RegistryService)."""

    def listing(self) -> list[dict[str, Any]]: ...

    def experiment(self) -> dict[str, Any] | None: ...

    async def activate(self, name: str, version: str | None) -> dict[str, Any]: ...

    async def set_experiment(self, experiment: Experiment | None) -> dict[str, Any] | None: ...

    async def report(self, name: str) -> dict[str, Any]: ...

    def experiment_names(self) -> list[str]:
        """Every experiment the registry has seen started (running or stopped since)."""
        ...

    def rules(self) -> Rules: ...

    async def set_rules(self, rules: Rules) -> bool: ...

    def log_exposure(self, exposure: dict[str, Any]) -> None: ...

    def forget_exposures(
        self, user_ids: list[str], also: Callable[[str], bool] | None = None
    ) -> None:
        """Drop the exposures of `user_ids`, and of the queued ids `also` names, logged here
        and not yet written (an erasure: `engine.erasure.unerased_exposures`)."""
        ...

    # content experiments (api/experiments.py)
    def content_experiments(self) -> ContentExperiments: ...

    async def set_content_experiments(self, experiments: ContentExperiments) -> bool: ...

    def content_experiment(self, name: str) -> ContentExperiment | None: ...

    async def content_report(
        self, experiment: ContentExperiment, window_hours: float
    ) -> dict[str, Any]: ...


ADMIN = web.AppKey("models_admin", ModelAdmin)


def _admin(request: web.Request) -> ModelAdmin:
    admin = request.app.get(ADMIN)
    if admin is None:
        raise web.HTTPServiceUnavailable(reason="No model registry", text="no registry here")
    return admin


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await read_whole(request))
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        raise web.HTTPBadRequest(reason="Bad body", text="expected a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason="Bad body", text="expected a JSON object")
    return body


def _short(value: Any) -> str | None:
    """A field of a request body as the audit record shows it: text of at most 200 characters."""
    return None if value is None else str(value)[:200]


async def list_models(request: web.Request) -> web.Response:
    admin = _admin(request)
    return web.json_response({"models": admin.listing(), "experiment": admin.experiment()})


async def _switch(request: web.Request, version: str | None) -> web.Response:
    name = request.match_info["name"]
    details = request[DETAILS] = {"model": _short(name), "requested": _short(version)}
    if name not in NAMES:
        return problem(404, "Unknown model", f"models are {', '.join(NAMES)}")
    try:
        result = await _admin(request).activate(name, version)
    except LookupError as exc:
        return problem(404, "Unknown version", str(exc))
    except ValueError as exc:
        return problem(409, "Cannot activate", str(exc))
    details["version"] = result["version"]
    log.info("%s activated %s %s", request.get("api_key", "?"), name, result["version"])
    return web.json_response(result)


async def activate(request: web.Request) -> web.Response:
    version = (await _json(request)).get("version")
    if not isinstance(version, str) or not version:
        return problem(400, "Bad body", 'expected {"version": "<version string>"}')
    return await _switch(request, version)


async def rollback(request: web.Request) -> web.Response:
    return await _switch(request, None)


async def get_experiment(request: web.Request) -> web.Response:
    return web.json_response({"experiment": _admin(request).experiment()})


async def put_experiment(request: web.Request) -> web.Response:
    body = await _json(request)
    admin = _admin(request)
    request[DETAILS] = {f: _short(body.get(f)) for f in ("name", "model", "candidate", "mode")}
    try:
        model = _text(body, "model")
        control = next(
            (m["version"] for m in admin.listing() if m["name"] == model and m["active"]), ""
        )
        share = body.get("share", 0.5)
        if isinstance(share, bool) or not isinstance(share, int | float):
            raise TypeError("share is a number between 0 and 1 (the fraction in variant B)")
        experiment = Experiment(
            name=_text(body, "name"),
            model=model,
            control=control,
            candidate=_text(body, "candidate"),
            mode=_text(body, "mode") if "mode" in body else "ab",
            share=float(share),
            started=rfc3339(utc_now()),
        )
        current = await admin.set_experiment(experiment)
    except KeyError as exc:
        return problem(400, "Bad body", f"missing {exc.args[0]}")
    except LookupError as exc:
        return problem(404, "Unknown version", str(exc))
    except (TypeError, ValueError) as exc:
        return problem(400, "Bad experiment", str(exc))
    return web.json_response({"experiment": current})


def _text(body: dict[str, Any], field: str) -> str:
    """A string field of a request body (KeyError when missing, TypeError when not a string):
    `str()` of anything started an experiment named "{'a': 1}" or looked up the version 'None'."""
    value = body[field]
    if not isinstance(value, str):
        raise TypeError(f"{field} is a string")
    return value


async def delete_experiment(request: web.Request) -> web.Response:
    admin = _admin(request)
    request[DETAILS] = {"stopped": (admin.experiment() or {}).get("name")}
    await admin.set_experiment(None)
    return web.json_response({"experiment": None})


async def get_report(request: web.Request) -> web.Response:
    """The report, or 404 for a name no experiment was started with and with no exposure logged:
    a mistyped name answered 200 with every count 0, as an experiment nobody saw. The 404 names
    the experiments there are, and the one meant when one is close (as `persona models report`)."""
    admin = _admin(request)
    name = request.match_info["name"]
    result = await admin.report(name)
    running = (admin.experiment() or {}).get("name")
    known = {*admin.experiment_names(), *([running] if running else [])}
    if name not in known and not exposures_of(result):
        return problem(404, "Unknown experiment", unknown_experiment(name, known))
    return web.json_response(result)


# the reads that show a user what a model made for them: their exposures (not the export, nor
# the preview's explanation, which name the user in their path too)
EXPOSED_ROUTES = frozenset({"/v1/users/{user_id}/blocks/{block}", "/v1/users/{user_id}/profile"})


@web.middleware
async def exposures_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    admin = request.app.get(ADMIN)
    if admin is None or response.status != 200 or request.method != "GET":
        return response
    route = request.match_info.route.resource
    if route is None or route.canonical not in EXPOSED_ROUTES:
        return response
    content = request.app[CONTENT]
    models = content.models
    testing = models.content_experiments.experiments
    if models.experiment is None and not testing:
        return response
    user_id = request.match_info["user_id"]
    block = request.match_info.get("block", "profile")
    fmt = request.query.get("format", "html")  # a block's format (a bad one answered 400)
    try:
        if models.experiment is not None:
            log_exposure(admin, content, user_id, block, fmt)
        if testing:
            log_content_exposure(admin, content, user_id, block, fmt)
    except Exception:  # exposures must never break a read
        log.exception("could not log an exposure for %s", user_id)
    return response


def log_exposures(request: web.Request, user_ids: list[str], block: str, fmt: str = "html") -> None:
    """The exposures of a send-time call (blocks:batch in format `fmt`, render): one per known
    user, while an experiment runs. Never raises: exposures must not break a send."""
    admin = request.app.get(ADMIN)
    content = request.app[CONTENT]
    models = content.models
    testing = block in models.content_experiments.by_block
    if admin is None or (models.experiment is None and not testing):
        return
    for user_id in user_ids:
        try:
            if models.experiment is not None:
                log_exposure(admin, content, user_id, block, fmt)
            if testing:
                log_content_exposure(admin, content, user_id, block, fmt)
        except Exception:
            log.exception("could not log an exposure for %s", user_id)


def log_exposure(
    admin: ModelAdmin, content: Any, user_id: str, block: str, fmt: str = "html"
) -> None:
    models = content.models
    exp = models.experiment
    profile = content.state.profile(user_id)
    if exp is None or profile is None or not content.shows_personal(profile, fmt):
        # no exposure for a user without the consent the format needs (engine.consent): their
        # block is the fallback, made by no model
        return
    scores = content.scores(profile)
    n = content.policy.items
    exposure: dict[str, Any] = {
        "experiment": exp.name,
        "mode": exp.mode,
        "variant": "A" if exp.mode == "shadow" else exp.variant(user_id),
        "user_id": user_id,
        "ts": content.state.now_ms(),
        "block": block,
        "models": scores.models,
        "items": scores.recommendations[:n],
    }
    shadow = models.shadow()
    if shadow is not None:
        candidate = score_profile(profile, content.state.now_ms(), shadow, content._allowed)
        exposure["shadow_items"] = candidate.recommendations[:n]
        exposure["shadow_churn"] = candidate.churn
        exposure["churn"] = scores.churn
    admin.log_exposure(exposure)


def log_shown_blocks(request: web.Request, shown: dict[str, list[str]]) -> None:
    """The content experiments' exposures of `POST /v1/render`: user id -> the blocks their
    message showed. Never raises."""
    admin = request.app.get(ADMIN)
    content = request.app[CONTENT]
    testing = content.models.content_experiments.by_block
    if admin is None or not testing:
        return
    for user_id, blocks in shown.items():
        for block in dict.fromkeys(b for b in blocks if b in testing):
            try:
                log_content_exposure(admin, content, user_id, block)
            except Exception:
                log.exception("could not log an exposure for %s", user_id)


def log_content_exposure(
    admin: ModelAdmin, content: Any, user_id: str, block: str, fmt: str = "html"
) -> None:
    """One exposure of a content experiment (engine/content_experiments.py) running on `block`:
    the variant the user was shown in format `fmt` (`ContentService.arm`, as the block was
    made). Users without the consent the format needs are never assigned, so never logged."""
    running = content.models.content_experiments.running(block, content.state.now_ms())
    profile = content.state.profile(user_id)
    if running is None or profile is None or not content.shows_personal(profile, fmt):
        return
    exposure = {
        "experiment": running.name,
        "kind": "content",
        "variant": content.arm(profile, block, fmt),
        "user_id": user_id,
        "ts": content.state.now_ms(),
        "block": block,
    }
    admin.log_exposure(exposure)


def register(app: web.Application) -> None:
    """Add the routes (api/app.py lists `exposures_middleware` in the stack)."""
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/v1/models/{name}/activate", activate)
    app.router.add_post("/v1/models/{name}/rollback", rollback)
    app.router.add_get("/v1/models/experiment", get_experiment)
    app.router.add_put("/v1/models/experiment", put_experiment)
    app.router.add_delete("/v1/models/experiment", delete_experiment)
    app.router.add_get("/v1/models/experiments/{name}/report", get_report)


__all__ = ["ADMIN", "ModelAdmin", "register"]
