"""`POST /v1/render`: a sender's whole e-mail template, rendered once per recipient.

Request (JSON or msgpack): `{"template": "<html>... {{ blocks.recommendations }} ...",
"user_ids": ["u1", ...], "data": {"u1": {"first_name": "Ada"}}}` (`data` is optional: per-user merge
fields the sender owns, JSON values only, available as `user.*`). Block parameters
(engine.params: `n`, `category`, `brand`, `min_price`, `max_price`, `exclude`, `context_item`,
`locale`, as in `POST /v1/blocks:batch`) are further fields and apply to every block the template
uses; any other field is a 400 naming it.
Response: `{"results": {user_id: {"content": str, "fallback": bool, "fallback_blocks": [names],
"error": str | null}}, "errors": n}` (JSON, or msgpack by `Accept`).

The template runs in `engine.sandbox.StrictEnvironment` (autoescaping, no file system, an
allow-list of attributes, filters and callables) and sees data, never objects: `blocks.<name>` is
the e-mail HTML of that block for the recipient (computed only when the template uses it, marked
safe so it is not escaped twice); `user` holds `user_id`, `known`, `orders`, `monetary`,
`first_seen`, `last_seen`, `cart_items` and the sender's `data`. A recipient without
personalization consent (`engine.consent`) gets the values of an unknown user (`known` false,
zeros, nulls) besides their `user_id` and the sender's `data`, and the fallback blocks. A
template that does not compile is a 400 before anything renders, and so is one that reads a
block that does not exist by its name (`template_names_checked`); a template that fails for one
recipient is logged and counted, and that recipient gets the template rendered with the
fallback blocks and only `user.user_id`; if even that fails, `content` is null and `error` says
why. Other undefined variables render empty (senders' templates are not ours to police).

The message is e-mail HTML: its lines are kept within SMTP's 998 octets as a block's are
(`engine.email_lines.wrap_html`: broken only where a line break means what is there, between
attributes, before a tag's `>`, at a space of collapsible text), so a line of the sender's own
markup around a block, or a long merge field, does not go out thousands of octets long. A line
with nowhere to break (a long URL, a run of wide characters) is the recipient's template error,
as a block's is: the fallback render, else `content: null` with the reason in `error`.

Budgets (`engine.sandbox`; a recipient past one gets `content: null` and the reason in `error`,
without a second try; recipients after the request's budget is spent get the same):
- per message (`MESSAGE_LIMITS`): 50 ms of CPU, 20,000 loop iterations and calls, 1 MiB of
  output, 16 MiB of intermediate strings, calls nested 32 deep; operations a deadline cannot
  interrupt (huge powers, string or list products, format widths, `center`, `indent`, ...) are
  refused before they run;
- per request (`REQUEST_LIMITS`): 4 s of CPU, 2,000,000 steps, 32 MiB of output, 256 MiB of
  intermediate strings, and `REQUEST_TIME_SHARE` (60 %) of the request timeout
  (`PERSONA_REQUEST_TIMEOUT`, 10 s by default) of wall time for rendering, or the body's
  `deadline_ms` (an integer 1..10000, as a batch's; anything else a 400 naming it) when that is
  sooner, counted from when the body was read: a sender with a client timeout of its own gets
  the messages rendered by then, the recipients left `content: null` and why in `error`.
With several workers in a group, the recipients whose `profiles` partition another worker owns
are rendered by that worker (api/fanout.py, as a batch's users: one signed sub-request per owner
with the template, the parameters, their `data` only and a share of the time left as its
`deadline_ms`), while this process renders its own; the messages are merged back in the
request's order and `errors` counts theirs too. The owner renders them under a request
budget sent as `render_budget`: its recipients' share of what is left of this request's, taken
from it (this process renders its own within the rest), so a request split over N workers costs
one budget, not N; it counts its own template errors and logs their exposures. An owner that
fails, answers something unusable or runs out of time has its recipients rendered here (by what
is left of this request's budget, and its deadline; the share of an owner never reached comes
back first), counted in
`persona_http_batch_owner_fallbacks_total{route="/v1/render"}`.
A forwarded request is rendered here whole.
Recipients are rendered one at a time with a yield to the event loop between them, so the
process keeps answering other requests (`/healthz`, block GETs) while a render runs; a client
that went away stops the render at the next yield (api/batch.py `client_gone`: a 499 in the
logs and metrics, nothing sent, no exposure logged). Compiling
happens in a worker thread; the last `COMPILED_TEMPLATES` compiled templates are kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import jinja2
import jinja2.nodes
from aiohttp import web
from markupsafe import Markup

from api import fanout
from api.batch import (
    BadRequest,
    ClientGone,
    abandoned,
    block_params,
    client_gone,
    deadline_ms,
    read_body,
    respond,
)
from api.bodies import recipient_ids
from api.content import ContentService
from api.encodings import gzipped, label
from api.limits import MAX_TEMPLATE, MAX_USERS, OPTIONS, shape_check
from api.models_routes import log_exposures, log_shown_blocks
from api.shared import CONTENT
from engine.blocks import ALL_BLOCKS
from engine.email_lines import wrap_html
from engine.fanout import merge
from engine.params import NO_PARAMS, BlockParams, InvalidParam
from engine.sandbox import (
    MESSAGE_LIMITS,
    REQUEST_LIMITS,
    REQUEST_TIME_SHARE,
    Budget,
    BudgetExceeded,
    LazyMapping,
    Limits,
    RequestBudget,
    StrictEnvironment,
    describe_error,
    plain_data,
    request_spent,
)
from engine.suggest import did_you_mean

log = logging.getLogger("persona.render")

COMPILED_TEMPLATES = 32

ENV = StrictEnvironment(MESSAGE_LIMITS, autoescape=True, undefined=jinja2.Undefined)
RENDER_ERRORS = web.AppKey("render_errors", list)  # [template failures, recipients cut]
FAILED, CUT = "failed", "cut"  # render_one's outcomes besides "" (rendered)
_COMPILED: OrderedDict[str, jinja2.Template] = OrderedDict()


def lazy_blocks(
    content: ContentService,
    user_id: str,
    personal: bool,
    fallbacks: list[str],
    params: BlockParams = NO_PARAMS,
    shown: list[str] | None = None,
) -> LazyMapping:
    """`blocks.<name>`: each block rendered (or taken from the cache) on first use, as Markup,
    with the request's block parameters; the names of those that are fallbacks are appended to
    `fallbacks`, and of every block used to `shown` (content experiments' exposures)."""

    def compute(name: str) -> Markup:
        if personal:
            block = content.block(user_id, name, "html", params=params)
        else:
            block = content.fallback_block(user_id, name, "html", params=params)
        if block.fallback:
            fallbacks.append(name)
        if shown is not None:
            shown.append(name)
        return Markup(block.content)

    return LazyMapping(ALL_BLOCKS, compute)


def user_context(content: ContentService, user_id: str, data: Any) -> dict[str, Any]:
    user: dict[str, Any] = dict(data) if isinstance(data, dict) else {}
    profile = content.state.profile(user_id)
    if profile is not None and not content.personal(profile):
        profile = None  # nothing from the profile: rendered as for an unknown user
    user.update(
        {
            "user_id": user_id,
            "known": profile is not None,
            "orders": int(profile.orders) if profile else 0,
            "monetary": float(profile.monetary) if profile else 0.0,
            "first_seen": int(profile.first_seen) if profile else None,
            "last_seen": int(profile.last_seen) if profile else None,
            "cart_items": int(sum(profile.cart.values())) if profile else 0,
        }
    )
    return user


WRAP_INLINE = 64 * 1024  # characters of a message wrapped on the event loop; longer: a thread


async def _render(
    template: jinja2.Template, blocks: LazyMapping, user: dict[str, Any], budget: RequestBudget
) -> str:
    """The message, its lines within SMTP's limit as a block's are (engine/email_lines.py);
    `LineTooLong` for a line with nowhere to break: the recipient's template error. Wrapping is
    trusted code (linear: ~0.7 s for a message of 1 MiB of breakable long lines at worst), not
    bounded by the message's CPU limit, but its CPU is charged to the request's, and a long
    message is wrapped in a worker thread, so the loop keeps answering meanwhile."""
    message = budget.message()
    try:
        text = ENV.render(template, {"blocks": blocks, "user": user}, message)
        if len(text) <= WRAP_INLINE:
            return _wrap(text, message)
        return await asyncio.to_thread(_wrap, text, message)
    finally:
        budget.spend(message)


def _wrap(text: str, message: Budget) -> str:
    """`wrap_html(text)`, its CPU (of the thread it runs in) charged to `message`."""
    started = time.thread_time()
    try:
        return wrap_html(text)
    finally:
        message.cpu_used += time.thread_time() - started


async def render_one(
    template: jinja2.Template,
    content: ContentService,
    user_id: str,
    data: Any,
    budget: RequestBudget,
    params: BlockParams = NO_PARAMS,
    shown: list[str] | None = None,
) -> tuple[dict[str, Any], str]:
    """One recipient's message and the outcome: "" (rendered), `FAILED` (the template failed
    for them) or `CUT` (not rendered: the request's deadline or rendering budget was spent
    before them, engine.sandbox `request_spent`). The names of the personal blocks the message
    shows are appended to `shown`."""
    fallbacks: list[str] = []
    used: list[str] = []
    try:
        blocks = lazy_blocks(content, user_id, True, fallbacks, params, used)
        text = await _render(template, blocks, user_context(content, user_id, data), budget)
        if shown is not None:
            shown.extend(used)
        return _result(text, fallbacks, None), ""
    except BudgetExceeded as exc:
        return _failed(exc), CUT if request_spent(exc) else FAILED
    except Exception as exc:
        log.warning("render: the template failed for a recipient: %r; sending fallbacks", exc)
        reason = describe_error(exc)
    fallbacks = []
    try:
        blocks = lazy_blocks(content, user_id, False, fallbacks, params)
        text = await _render(template, blocks, {"user_id": user_id}, budget)
        return _result(text, fallbacks, reason), FAILED
    except Exception as exc:  # the template failed first, whatever stopped its fallback render
        return _failed(exc), FAILED


def _result(text: str, fallbacks: list[str], error: str | None) -> dict[str, Any]:
    return {
        "content": text,
        "fallback": bool(fallbacks) or error is not None,
        "fallback_blocks": fallbacks,
        "error": error,
    }


def _failed(exc: Exception) -> dict[str, Any]:
    return {"content": None, "fallback": True, "fallback_blocks": [], "error": describe_error(exc)}


# the render's own fields; the rest: block parameters
RENDER_FIELDS = ("template", "user_ids", "data", "deadline_ms", "render_budget")
# `render_budget`'s fields and their largest values (REQUEST_LIMITS): what an owner may spend
BUDGET_MOST = {
    "cpu_ms": int(REQUEST_LIMITS.cpu_seconds * 1000),
    "steps": REQUEST_LIMITS.steps,
    "output_bytes": REQUEST_LIMITS.output_bytes,
    "built_chars": REQUEST_LIMITS.built_chars,
}
clock: Callable[[], float] = time.monotonic  # seconds: the request's deadline (tests replace it)


def parse(body: Any) -> tuple[str, list[str], dict[str, Any], BlockParams, int | None]:
    """(template, user ids, data, block parameters, deadline_ms): the parameters
    (engine.params) are the body's other fields and apply to every block the template uses."""
    if not isinstance(body, dict):
        raise BadRequest("the body is an object with template and user_ids")
    params = block_params(body, RENDER_FIELDS)  # first: a misspelled `tempalte` is named so
    source = body.get("template")
    if not isinstance(source, str) or not source:
        raise BadRequest("template must be a non-empty string")
    if len(source) > MAX_TEMPLATE:
        raise BadRequest(f"the template is longer than {MAX_TEMPLATE} characters")
    data = body.get("data", {})
    if not isinstance(data, dict):
        raise BadRequest("data must be an object of user_id -> object")
    ids = recipient_ids(body, MAX_USERS)
    try:
        data = plain_data(data)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"data holds JSON values only: {exc}") from None
    return source, ids, data, params, deadline_ms(body)


def render_budget(body: dict[str, Any]) -> Limits | None:
    """The body's `render_budget` as the request's totals (None without one): what a process
    that split a render (api/fanout.py) left to this owner of some of its recipients. It can
    only lower REQUEST_LIMITS; BadRequest naming it unless an object of exactly BUDGET_MOST's
    integers, each 0..its largest."""
    if "render_budget" not in body:
        return None
    value = body["render_budget"]
    if (
        not isinstance(value, dict)
        or set(value) != set(BUDGET_MOST)
        or any(type(value[k]) is not int or not 0 <= value[k] <= m for k, m in BUDGET_MOST.items())
    ):
        most = ", ".join(f"{k} 0..{m}" for k, m in BUDGET_MOST.items())
        raise BadRequest.of(InvalidParam("render_budget", f"must be an object of integers: {most}"))
    return Limits(
        cpu_seconds=value["cpu_ms"] / 1000,
        steps=value["steps"],
        output_bytes=value["output_bytes"],
        built_chars=value["built_chars"],
        depth=REQUEST_LIMITS.depth,
    )


def budget_body(share: Limits) -> dict[str, int]:
    """`share` as an owner's `render_budget`."""
    return {
        "cpu_ms": int(share.cpu_seconds * 1000),
        "steps": share.steps,
        "output_bytes": share.output_bytes,
        "built_chars": share.built_chars,
    }


shape_check("/v1/render", lambda body: parse(body)[1])  # the rate limit's check (api/limits.py)


MAPPING_METHODS = frozenset({"get", "items", "keys", "values"})  # what `blocks` has besides names


def _unknown_blocks(tree: jinja2.nodes.Template) -> list[str]:
    """The names a template reads from `blocks` by a literal (`blocks.name`, `blocks['name']`)
    that are no block, in the template's order; none when the template binds a `blocks` of its
    own (`set`, a loop, a macro's argument): it may then mean its own."""
    names = jinja2.nodes.Name
    if any(n.name == "blocks" and n.ctx != "load" for n in tree.find_all(names)):
        return []
    unknown: list[str] = []
    for node in tree.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        if isinstance(node, jinja2.nodes.Getattr):
            source, name = node.node, node.attr
            if name in MAPPING_METHODS:
                continue
        else:
            assert isinstance(node, jinja2.nodes.Getitem)
            source, key = node.node, node.arg
            if not (isinstance(key, jinja2.nodes.Const) and isinstance(key.value, str)):
                continue  # a name known when it renders (`blocks[name]`)
            name = key.value
        if not (isinstance(source, names) and source.name == "blocks"):
            continue
        if name.startswith("_"):
            continue  # a probe of the mapping's insides, not a misspelling: the sandbox's
        if name not in ALL_BLOCKS and name not in unknown:
            unknown.append(name)
    return unknown


def template_names_checked(source: str) -> jinja2.nodes.Template:
    """The template's (guarded) tree; BadRequest when it reads a block that does not exist:
    `{{ blocks.recomendations }}` rendered nothing, answered 200 without an error, and the
    e-mails went out without their recommendations (user.* is the sender's own data and stays
    free: an undefined one renders empty)."""
    tree = ENV.parse(source)
    unknown = _unknown_blocks(tree)
    if unknown:
        name = unknown[0][:64]
        meant = did_you_mean(name, ALL_BLOCKS, shown=lambda block: f"blocks.{block}")
        there = ", ".join(f"blocks.{block}" for block in ALL_BLOCKS)
        raise BadRequest(
            f"the template uses blocks.{name}, which is no block: {meant}(the blocks are {there})"
        )
    return tree


def _compile(source: str) -> jinja2.Template:
    try:
        return ENV.from_string(template_names_checked(source))
    except BadRequest:
        raise
    except jinja2.TemplateSyntaxError as exc:
        where = f"line {exc.lineno}: {exc.message}"
        raise BadRequest(f"the template does not compile: {where}") from None
    except Exception as exc:  # too deeply nested, too many blocks, ...
        raise BadRequest(f"the template does not compile: {describe_error(exc)}") from None


async def compile_template(source: str) -> jinja2.Template:
    """The compiled template (in a worker thread: compiling a large one takes a while)."""
    template = _COMPILED.get(source)
    if template is None:
        template = await asyncio.to_thread(_compile, source)
        _COMPILED[source] = template
        while len(_COMPILED) > COMPILED_TEMPLATES:
            _COMPILED.popitem(last=False)
    _COMPILED.move_to_end(source)
    return template


def request_budget(
    request: web.Request, read: float, budget_ms: int | None = None, totals: Limits | None = None
) -> RequestBudget:
    """The request's budget, its time counted from `read` (a `clock()` time: when the body was
    read, as a batch's): `REQUEST_TIME_SHARE` of the request timeout, or `budget_ms` (the
    body's `deadline_ms`) when that is sooner; its totals REQUEST_LIMITS, or `totals` (the
    body's `render_budget`)."""
    options = request.app.get(OPTIONS)
    timeout = options.request_timeout if options is not None else 10.0
    seconds = REQUEST_TIME_SHARE * timeout
    late = "the request's time for rendering is spent"
    if budget_ms is not None and budget_ms / 1000 < seconds:
        seconds = budget_ms / 1000
        late = f"not rendered: the request's deadline_ms ({budget_ms}) had passed"
    left = seconds - (clock() - read)
    limits = REQUEST_LIMITS if totals is None else totals
    return RequestBudget(MESSAGE_LIMITS, limits, left, clock=clock, late=late)


class Rendered:
    """The messages a request renders here, their template failures and cuts, and the blocks
    each shows (content experiments' exposures)."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}
        self.counts = {FAILED: 0, CUT: 0}
        self.shown: dict[str, list[str]] = {}

    @property
    def errors(self) -> int:
        return self.counts[FAILED] + self.counts[CUT]


async def render_here(
    request: web.Request,
    template: jinja2.Template,
    ids: list[str],
    data: dict[str, Any],
    budget: RequestBudget,
    params: BlockParams,
    into: Rendered,
) -> None:
    """`ids`' messages into `into`, one at a time with a yield between two (ClientGone, with the
    number rendered so far, when the client went away)."""
    content = request.app[CONTENT]
    for uid in ids:
        shown = into.shown[uid] = []
        into.results[uid], outcome = await render_one(
            template, content, uid, data.get(uid), budget, params, shown
        )
        if outcome:
            into.counts[outcome] += 1
        await asyncio.sleep(0)  # let the loop answer other requests between two messages
        if client_gone(request):  # nobody will read the rest (api/batch.py `client_gone`)
            raise ClientGone(len(into.results))


def owner_body(body: dict[str, Any], data: dict[str, Any], users: list[str]) -> dict[str, Any]:
    """The render `body` an owner is sent for `users`: the sender's `data` of them only."""
    if "data" not in body:
        return body
    return {**body, "data": {uid: data[uid] for uid in users if uid in data}}


async def post_render(request: web.Request) -> web.Response:
    try:
        body = await read_body(request)
        read = clock()
        source, ids, data, params, budget_ms = parse(body)
        totals = render_budget(body)
        template = await compile_template(source)
    except BadRequest as exc:
        return exc.answer()
    budget = request_budget(request, read, budget_ms, totals)
    groups = fanout.split(request, ids)  # None: every recipient rendered here (one worker)
    here = Rendered()
    try:
        if groups is None:
            await render_here(request, template, ids, data, budget, params, here)
            results, errors = here.results, here.errors
        else:
            results, errors = await fanned_renders(
                request, (body, data, params), template, groups, ids, budget, here
            )
    except ClientGone as gone:
        return abandoned(request, gone.done, len(ids))
    if here.errors:
        request.app[RENDER_ERRORS][0] += here.counts[FAILED]
        request.app[RENDER_ERRORS][1] += here.counts[CUT]
    log_exposures(request, list(here.results), "render")
    log_shown_blocks(request, here.shown)
    response = respond(request, {"results": results, "errors": errors})
    assert isinstance(response.body, bytes)
    packed = await gzipped(request, response.body)
    if packed is not None:
        response.body = packed
    label(response, packed is not None)
    return response


async def fanned_renders(
    request: web.Request,
    what: tuple[dict[str, Any], dict[str, Any], BlockParams],
    template: jinja2.Template,
    groups: fanout.Groups,
    ids: list[str],
    budget: RequestBudget,
    here: Rendered,
) -> tuple[dict[str, dict[str, Any]], int]:
    """The messages of `ids` (in their order) and their errors when some recipients' partitions
    other workers own (api/fanout.py): each owner asked once for its recipients while this
    process renders its own (into `here`); the recipients of an owner that fails are then
    rendered here too, by the same budget and deadline."""
    body, data, params = what
    deadline = time.perf_counter() + budget.left()  # api/fanout.py counts in perf_counter time
    # Each owner renders under its recipients' share of what is left of this request's budget
    # (`render_budget`), taken from it: the request as a whole stays within one budget.
    shares: dict[str, Limits] = {}
    unshared = len(ids)
    for owner, users in groups.remote.items():
        shares[owner] = budget.give(len(users) / unshared)
        unshared -= len(users)
    asked = [
        asyncio.create_task(
            fanout.ask(
                request,
                {**owner_body(body, data, users), "render_budget": budget_body(shares[owner])},
                owner,
                users,
                deadline,
                fanout.RENDER,
            )
        )
        for owner, users in groups.remote.items()
    ]
    try:
        await render_here(request, template, groups.local, data, budget, params, here)
        answers = await asyncio.gather(*asked)
        failed = [answer for answer in answers if answer.entries is None]
        fanout.answered_here(request.app, failed, fanout.RENDER)
        for answer in failed:
            if not answer.reached:  # it spent nothing: its recipients are rendered here by it
                budget.take_back(shares[answer.owner])
        extra = [uid for answer in failed for uid in answer.users]
        await render_here(request, template, extra, data, budget, params, here)
    finally:
        for task in asked:
            task.cancel()
    theirs = [
        {uid: entry.entry for uid, entry in answer.entries.items()}
        for answer in answers
        if answer.entries is not None
    ]
    errors = here.errors + sum(
        entry["error"] is not None for entries in theirs for entry in entries.values()
    )
    return dict(zip(ids, merge(ids, here.results, *theirs), strict=True)), errors


def register(app: web.Application) -> None:
    app[RENDER_ERRORS] = [0, 0]
    app.router.add_post("/v1/render", post_render)


def metrics_lines(app: web.Application) -> list[str]:
    return [
        "# HELP persona_render_errors_total Recipients whose message template failed.",
        "# TYPE persona_render_errors_total counter",
        f"persona_render_errors_total {app[RENDER_ERRORS][0]}",
        "# HELP persona_render_cut_total Recipients of POST /v1/render not rendered because the"
        " request's deadline_ms, its share of the request timeout or its rendering budget was"
        " spent before them (not a template failure).",
        "# TYPE persona_render_cut_total counter",
        f"persona_render_cut_total {app[RENDER_ERRORS][1]}",
    ]
