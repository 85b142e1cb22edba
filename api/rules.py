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

import json
from typing import Any

from aiohttp import web

from api.audit import DETAILS
from api.models_routes import ADMIN, ModelAdmin
from api.shared import problem
from engine.rules import InvalidRules, Rules, parse_rules, to_document

RULES_PATH = "/v1/rules"
MAX_RULES_BODY = 512 * 1024  # bytes of a PUT body


def _admin(request: web.Request) -> ModelAdmin | None:
    return request.app.get(ADMIN)


def _answer(rules: Rules, status: int = 200) -> web.Response:
    response = web.json_response(to_document(rules), status=status)
    response.headers["ETag"] = f'"{rules.version}"'
    return response


async def get_rules(request: web.Request) -> web.Response:
    admin = _admin(request)
    if admin is None:
        return problem(503, "No registry", "this process does not follow the rules")
    return _answer(admin.rules())


async def put_rules(request: web.Request) -> web.Response:
    admin = _admin(request)
    if admin is None:
        return problem(503, "No registry", "this process does not follow the rules")
    if (request.content_length or 0) > MAX_RULES_BODY:
        return problem(413, "Body too large", f"at most {MAX_RULES_BODY} bytes")
    current = admin.rules()
    if not _matches(request.headers.get("If-Match"), current.version):
        return problem(
            412, "Precondition Failed", f"the rules are at version {current.version!r} now"
        )
    document = await _document(request)
    if isinstance(document, web.Response):
        return document
    try:
        rules = parse_rules(document)
    except InvalidRules as exc:
        return problem(400, "Invalid rules", str(exc))
    rules = Rules(_next_version(current.version), rules.rules)
    serving = await admin.set_rules(rules)
    request[DETAILS] = {"version": rules.version, "rules": len(rules.rules), "serving": serving}
    return _answer(rules)


async def _document(request: web.Request) -> Any:
    body = await request.content.read(MAX_RULES_BODY + 1)
    if len(body) > MAX_RULES_BODY:
        return problem(413, "Body too large", f"at most {MAX_RULES_BODY} bytes")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return problem(400, "Bad body", "expected a JSON object with `rules`")


def _matches(if_match: str | None, version: str) -> bool:
    if if_match is None or if_match.strip() == "*":
        return True
    tags = {tag.strip().removeprefix("W/").strip('"') for tag in if_match.split(",")}
    return version in tags


def _next_version(version: str) -> str:
    return str(int(version) + 1) if version.isdigit() else "1"


def register(app: web.Application) -> None:
    app.router.add_get(RULES_PATH, get_rules)
    app.router.add_put(RULES_PATH, put_rules)
