"""`GET`/`PUT /v1/rules` (scope `rules:admin`): the merchandising rules (issue 18 item 3).

The document is CONTRACT v1's `{"version", "rules": [...]}`; engine/rules.py checks it (a 400
problem names the place of the first problem) and says what each rule does. The server numbers
the versions (1, 2, ...: a `version` in the body is ignored) and answers `ETag: "<version>"`; a
PUT with `If-Match` of another version is refused 412, so two merchandisers cannot overwrite
each other's change unseen. A new version travels as one signed record on the `models` topic
(models/registry_log.py `rules_record`): every worker and reader folds it and serves it with its
models within seconds; the PUT answers once this process serves it. Every change is audited
(`rules_change`, with the version and the number of rules; api/limits.py).
"""

from __future__ import annotations

from aiohttp import web

from api.audit import DETAILS
from api.documents import answer, read_document, save_if_current, stale, too_large
from api.models_routes import ADMIN, ModelAdmin
from api.shared import problem
from engine.rules import InvalidRules, Rules, parse_rules, to_document

RULES_PATH = "/v1/rules"


def _admin(request: web.Request) -> ModelAdmin | None:
    return request.app.get(ADMIN)


async def get_rules(request: web.Request) -> web.Response:
    admin = _admin(request)
    if admin is None:
        return problem(503, "No registry", "this process does not follow the rules")
    rules = admin.rules()
    return answer(to_document(rules), rules.version)


async def put_rules(request: web.Request) -> web.Response:
    admin = _admin(request)
    if admin is None:
        return problem(503, "No registry", "this process does not follow the rules")
    refused = too_large(request)
    if refused is not None:
        return refused
    current = admin.rules()
    refused = stale(request, current.version, "rules")
    if refused is not None:
        return refused
    document = await read_document(request, "rules")
    if isinstance(document, web.Response):
        return document
    try:
        parsed = parse_rules(document)
    except InvalidRules as exc:
        return problem(400, "Invalid rules", str(exc))

    async def save(version: str) -> tuple[Rules, object]:
        rules = Rules(version, parsed.rules)
        return rules, await admin.set_rules(rules)

    saved = await save_if_current(request, admin, "rules", lambda: admin.rules().version, save)
    if isinstance(saved, web.Response):
        return saved  # another edit was put while this body came
    rules, serving = saved
    request[DETAILS] = {"version": rules.version, "rules": len(rules.rules), "serving": serving}
    return answer(to_document(rules), rules.version)


def register(app: web.Application) -> None:
    app.router.add_get(RULES_PATH, get_rules)
    app.router.add_put(RULES_PATH, put_rules)
