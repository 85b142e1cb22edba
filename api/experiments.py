"""`GET`/`PUT /v1/experiments` and `GET /v1/experiments/{name}/report` (scope `models:admin`):
content A/B and multivariate tests over block template variants (issue 18 items 4 and 5).

A route of its own beside `/v1/models/experiment` (a model A/B test: one experiment, two versions
of a model) because a content test is another thing: any number of experiments, one a block,
each over template variants with weights and a holdout. The document and its checks are
engine/content_experiments.py; an arm naming a variant with no template file is a 400 naming it.
Like the merchandising rules (api/rules.py): server-numbered versions with `ETag` and `If-Match`
(412 on a stale edit), one signed record on the `models` topic that every worker and reader folds
and serves with its models, every change audited (`content_experiments_change`). The report is
models/content_report.py over the `exposures` topic and the users' events.
"""

from __future__ import annotations

from aiohttp import web

from api.audit import DETAILS
from api.documents import answer, read_document, save_if_current, stale, too_large
from api.models_routes import ADMIN, ModelAdmin
from api.shared import CONTENT, bad_param, problem, single
from engine.content_experiments import (
    ContentExperiments,
    InvalidExperiments,
    parse_experiments,
    to_document,
)
from engine.params import InvalidParam
from models.content_report import DEFAULT_WINDOW_HOURS, MAX_WINDOW_HOURS

EXPERIMENTS_PATH = "/v1/experiments"


def _admin(request: web.Request) -> ModelAdmin | None:
    return request.app.get(ADMIN)


def _no_registry() -> web.Response:
    return problem(503, "No registry", "this process does not follow the experiments")


def _answer(experiments: ContentExperiments) -> web.Response:
    return answer(to_document(experiments), experiments.version)


async def get_experiments(request: web.Request) -> web.Response:
    admin = _admin(request)
    return _no_registry() if admin is None else _answer(admin.content_experiments())


async def put_experiments(request: web.Request) -> web.Response:
    admin = _admin(request)
    if admin is None:
        return _no_registry()
    current = admin.content_experiments()
    refused = stale(request, current.version, "experiments")
    if refused is not None:
        return refused
    refused = too_large(request)
    if refused is not None:
        return refused
    document = await read_document(request, "experiments")
    if isinstance(document, web.Response):
        return document
    renderer = request.app[CONTENT].renderer
    try:
        parsed = parse_experiments(document, renderer.has_variant)
    except InvalidExperiments as exc:
        return problem(400, "Invalid experiments", str(exc))

    async def save(version: str) -> tuple[ContentExperiments, object]:
        experiments = ContentExperiments(version, parsed.experiments)
        return experiments, await admin.set_content_experiments(experiments)

    saved = await save_if_current(
        request, admin, "experiments", lambda: admin.content_experiments().version, save
    )
    if isinstance(saved, web.Response):
        return saved  # another edit came in while this body did
    experiments, serving = saved
    names = [exp.name for exp in experiments.experiments]
    request[DETAILS] = {"version": experiments.version, "experiments": names, "serving": serving}
    return _answer(experiments)


async def get_report(request: web.Request) -> web.Response:
    admin = _admin(request)
    if admin is None:
        return _no_registry()
    try:
        window = _window(single(request.query, "window_hours"))
    except InvalidParam as exc:  # given twice
        return bad_param(exc)
    if window is None:
        return problem(
            400,
            "Bad parameter",
            f"window_hours is a number of hours, more than 0 and at most {MAX_WINDOW_HOURS:g}",
            parameter="window_hours",
        )
    name = request.match_info["name"]
    experiment = admin.content_experiment(name)
    if experiment is None:
        return problem(404, "Unknown experiment", f"no content experiment {name[:64]!r}")
    return web.json_response(await admin.content_report(experiment, window))


def _window(value: str | None) -> float | None:
    if value is None:
        return DEFAULT_WINDOW_HOURS
    try:
        hours = float(value)
    except ValueError:
        return None
    return hours if 0 < hours <= MAX_WINDOW_HOURS else None  # NaN fails both


def register(app: web.Application) -> None:
    app.router.add_get(EXPERIMENTS_PATH, get_experiments)
    app.router.add_put(EXPERIMENTS_PATH, put_experiments)
    app.router.add_get(EXPERIMENTS_PATH + "/{name}/report", get_report)
