"""`POST /v1/render`: a sender's whole e-mail template, rendered once per recipient.

Request (JSON or msgpack): `{"template": "<html>... {{ blocks.recommendations }} ...",
"user_ids": ["u1", ...], "data": {"u1": {"first_name": "Ada"}}}` (`data` is optional: per-user merge
fields the sender owns, available as `user.*`).
Response: `{"results": {user_id: {"content": str, "fallback": bool, "fallback_blocks": [names],
"error": str | null}}, "errors": n}` (JSON, or msgpack by `Accept`).

The template runs in a sandboxed, autoescaping Jinja2 environment (no file system, no attribute
access to internals, no mutation of the context). `blocks.<name>` is the e-mail HTML of that block
for the recipient (computed only when the template uses it, marked safe so it is not escaped
twice); `user` holds `user_id`, `known`, `orders`, `monetary`, `first_seen`, `last_seen`,
`cart_items` and the sender's `data`. A template that does not compile is a 400 before anything
renders; a
template that fails for one recipient is logged and counted, and that recipient gets the template
rendered with the fallback blocks and only `user.user_id`; if even that fails, `content` is null and
`error` says why. Undefined variables render empty (senders' templates are not ours to police).
"""

from __future__ import annotations

import logging
from typing import Any

import jinja2
from aiohttp import web
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from api.app import CONTENT, problem
from api.batch import BadRequest, read_body, respond, user_ids
from api.content import ContentService
from api.limits import MAX_TEMPLATE, MAX_USERS
from api.models_routes import log_exposures
from engine.blocks import BLOCKS

log = logging.getLogger("persona.render")


ENV = ImmutableSandboxedEnvironment(autoescape=True, undefined=jinja2.Undefined)
RENDER_ERRORS = web.AppKey("render_errors", list)


class LazyBlocks(dict[str, Any]):
    """`blocks.<name>`: each block rendered (or taken from the cache) on first use."""

    def __init__(self, content: ContentService, user_id: str, personal: bool) -> None:
        super().__init__()
        self.content = content
        self.user_id = user_id
        self.personal = personal
        self.fallbacks: list[str] = []

    def __missing__(self, name: str) -> Any:
        if name not in BLOCKS:
            raise KeyError(name)
        if self.personal:
            block = self.content.block(self.user_id, name, "html")
        else:
            block = self.content.fallback_block(self.user_id, name, "html")
        if block.fallback:
            self.fallbacks.append(name)
        value = Markup(block.content)
        self[name] = value
        return value


def user_context(content: ContentService, user_id: str, data: Any) -> dict[str, Any]:
    user: dict[str, Any] = dict(data) if isinstance(data, dict) else {}
    profile = content.state.profile(user_id)
    user.update(
        {
            "user_id": user_id,
            "known": profile is not None,
            "orders": profile.orders if profile else 0,
            "monetary": profile.monetary if profile else 0.0,
            "first_seen": profile.first_seen if profile else None,
            "last_seen": profile.last_seen if profile else None,
            "cart_items": sum(profile.cart.values()) if profile else 0,
        }
    )
    return user


def render_one(
    template: jinja2.Template, content: ContentService, user_id: str, data: Any
) -> tuple[dict[str, Any], bool]:
    """One recipient's message; the bool says whether the template failed for them."""
    try:
        blocks = LazyBlocks(content, user_id, personal=True)
        text = template.render(blocks=blocks, user=user_context(content, user_id, data))
        return _result(text, blocks, None), False
    except Exception as exc:
        log.warning("render: the template failed for a recipient: %r; sending fallbacks", exc)
        reason = f"{type(exc).__name__}: {exc}"
    try:
        blocks = LazyBlocks(content, user_id, personal=False)
        text = template.render(blocks=blocks, user={"user_id": user_id})
        return _result(text, blocks, reason), True
    except Exception as exc:
        return {
            "content": None,
            "fallback": True,
            "fallback_blocks": [],
            "error": f"{type(exc).__name__}: {exc}",
        }, True


def _result(text: str, blocks: LazyBlocks, error: str | None) -> dict[str, Any]:
    return {
        "content": text,
        "fallback": bool(blocks.fallbacks) or error is not None,
        "fallback_blocks": blocks.fallbacks,
        "error": error,
    }


def parse(body: Any) -> tuple[jinja2.Template, list[str], dict[str, Any]]:
    if not isinstance(body, dict):
        raise BadRequest("the body is an object with template and user_ids")
    source = body.get("template")
    if not isinstance(source, str) or not source:
        raise BadRequest("template must be a non-empty string")
    if len(source) > MAX_TEMPLATE:
        raise BadRequest(f"the template is longer than {MAX_TEMPLATE} characters")
    data = body.get("data", {})
    if not isinstance(data, dict):
        raise BadRequest("data must be an object of user_id -> object")
    ids = user_ids(body, MAX_USERS)
    try:
        template = ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        where = f"line {exc.lineno}: {exc.message}"
        raise BadRequest(f"the template does not compile: {where}") from None
    return template, ids, data


async def post_render(request: web.Request) -> web.Response:
    try:
        template, ids, data = parse(await read_body(request))
    except BadRequest as exc:
        return problem(400, "Bad request", str(exc))
    content = request.app[CONTENT]
    results: dict[str, dict[str, Any]] = {}
    errors = 0
    for uid in ids:
        results[uid], failed = render_one(template, content, uid, data.get(uid))
        errors += failed
    if errors:
        request.app[RENDER_ERRORS][0] += errors
    log_exposures(request, ids, "render")
    return respond(request, {"results": results, "errors": errors})


def register(app: web.Application) -> None:
    app[RENDER_ERRORS] = [0]
    app.router.add_post("/v1/render", post_render)


def metrics_lines(app: web.Application) -> list[str]:
    return [
        "# HELP persona_render_errors_total Recipients whose message template failed.",
        "# TYPE persona_render_errors_total counter",
        f"persona_render_errors_total {app[RENDER_ERRORS][0]}",
    ]
