"""Content blocks: decide what a user's block shows, render it, cache it. Pure (no I/O but reading
the templates once at start-up).

`decide` is the contract's fallback logic as a pure function; `Renderer` turns a decision into
HTML (e-mail safe) or JSON (ads) with the sandboxed Jinja2 templates of the `templates` package and
never raises; `BlockCache` is an in-memory LRU keyed by (user_id, block, fmt, variant) whose entries
are only served while the caller's `stamp` (what the block depends on) is unchanged.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import stat
import sys
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2
import msgpack
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import escape

import templates
from engine.catalog import Product, shown_safely
from engine.clicks import Links
from engine.consent import block_allowed
from engine.content_experiments import DEFAULT, HOLDOUT, VARIANT_NAME
from engine.email_lines import EMAIL_ROOM, EMAIL_URL_MAX, SMTP_LINE_MAX, octets, wrap_html
from engine.feeds import feed_url
from engine.locales import (
    Messages,
    MessagesError,
    currency_of,
    direction,
    format_price,
    line_total,
    local_price,
    total,
)
from engine.params import NO_PARAMS, BlockParams
from engine.profile import Profile, held_items
from engine.repeat import NO_REPEATS, RepeatPolicy
from engine.rules import Rule, apply_rules
from engine.sandbox import StrictEnvironment, output_too_large
from engine.text import isolated
from engine.utm import with_utm

log = logging.getLogger("persona.blocks")

BLOCKS = ("recommendations", "cart_reminder", "winback")
# Blocks about an item rather than a user's history: `similar_items` shows the neighbours of the
# request's `context_item` (engine.params), for a user or for the item alone (the item route).
CONTEXT_BLOCKS = ("similar_items",)
ALL_BLOCKS = BLOCKS + CONTEXT_BLOCKS
FORMATS = ("html", "json")
CONTENT_TYPES = {"html": "text/html; charset=utf-8", "json": "application/json"}
# Why a block is a fallback ("" when personalized).
REASONS = (
    "unknown_user",
    "no_consent",
    "empty_cart",
    "low_churn_risk",
    "nothing_personal",
    "template_error",
    "nothing_similar",
    "holdout",  # the user is in a content experiment's holdout (engine/content_experiments.py)
    "deadline",  # a batch's deadline passed before the user's block was computed (api/batch.py)
    "error",  # reading the user's state or a model failed (api/content.py: logged, counted)
)
DEFAULT_TEMPLATE_DIR = Path(templates.__file__).parent

Lookup = Callable[[str], Product | None]
Keep = Callable[[Product], bool]


class UnknownBlock(ValueError):
    """A block name or format that is not in BLOCKS / FORMATS (the API answers 404/400)."""


class TemplateSetupError(RuntimeError):
    """A block template is missing or does not compile; the message names the file."""


# bytes of one file in a template directory (the packaged ones are a few KiB; a rendered block
# is bounded at 1 MiB by the sandbox)
MAX_TEMPLATE_FILE = 1 << 20


def check_template_dir(directory: Path) -> None:
    """Refuse (TemplateSetupError naming the file) a file in the shop's template directory that
    Persona must not read: a FIFO, socket or device (a read would wait forever or never end), a
    symbolic link out of the directory (its target would be served in blocks; a link to a
    directory out of it is refused as a whole, its files unread), a symbolic link loop, a file
    larger than MAX_TEMPLATE_FILE. Links within the directory are taken; the walk follows no
    link (a linked subdirectory within the directory is walked as itself), so a link up the
    tree cannot make it loop."""
    root = directory.resolve()
    for where, dirs, names in os.walk(directory, followlinks=False):
        for name in dirs + names:
            path = Path(where) / name
            info, target = _template_file(path)
            if target is not None and not target.is_relative_to(root):
                what = "directory" if stat.S_ISDIR(info.st_mode) else "file"
                raise TemplateSetupError(
                    f"template file {path} is a symbolic link to a {what} out of {directory} "
                    f"(to {target}): copy the {what} into the directory instead"
                )
            if stat.S_ISDIR(info.st_mode):
                continue
            if not stat.S_ISREG(info.st_mode):
                raise TemplateSetupError(
                    f"template file {path} is not a regular file (a FIFO, socket or device)"
                )
            if info.st_size > MAX_TEMPLATE_FILE:
                raise TemplateSetupError(
                    f"template file {path} is larger than {MAX_TEMPLATE_FILE} bytes: not a "
                    "block template"
                )


def _template_file(path: Path) -> tuple[os.stat_result, Path | None]:
    """What `path` in a template directory is (through a symbolic link) and, for a link, the
    path it resolves to; TemplateSetupError naming it when it cannot be read or is a link loop
    (Path.resolve raised RuntimeError for one, a traceback at start)."""
    loop = f"template file {path} is a symbolic link loop (it leads back to itself)"
    try:
        info = path.lstat()
        if not stat.S_ISLNK(info.st_mode):
            return info, None
        target = path.resolve(strict=True)
        return target.stat(), target
    except RuntimeError:  # "Symlink loop from ..." (Python < 3.13)
        raise TemplateSetupError(loop) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TemplateSetupError(loop) from None
        raise TemplateSetupError(f"template file {path} cannot be read: {exc}") from None


class _CheckedLoader(jinja2.FileSystemLoader):
    """Jinja's file system loader, each file checked as it is opened as `check_template_dir`
    checks the directory at start: a template is loaded at its first render (an include, a
    macro file), after that check, so a file replaced meanwhile by a symbolic link out of the
    directory was served in blocks. The file is opened without blocking and read through that
    descriptor; what it is (a regular file of at most MAX_TEMPLATE_FILE bytes) and where it is
    (the opened file's own path, so no swap between check and open passes: within the
    directory) are told from the descriptor. Anything else is not found (a FIFO, a directory:
    the next directory's file is taken, as Jinja's `isfile` did) or TemplateSetupError naming
    the file (the render fails; the block falls back)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(str(directory))
        self._root = directory.resolve()

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        filename = os.path.join(self.searchpath[0], *jinja2.loaders.split_template_path(template))
        try:
            fd = os.open(filename, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise jinja2.TemplateNotFound(template) from None
        except OSError as exc:
            raise TemplateSetupError(f"template file {filename} cannot be read: {exc}") from None
        with os.fdopen(fd, "rb") as src:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise jinja2.TemplateNotFound(template)
            target = _opened_path(fd, filename)
            if not target.is_relative_to(self._root):
                raise TemplateSetupError(
                    f"template file {filename} is a symbolic link to a file out of "
                    f"{self.searchpath[0]} (to {target}): not read"
                )
            if info.st_size > MAX_TEMPLATE_FILE:
                raise TemplateSetupError(
                    f"template file {filename} is larger than {MAX_TEMPLATE_FILE} bytes"
                )
            raw = src.read(MAX_TEMPLATE_FILE + 1)
        if len(raw) > MAX_TEMPLATE_FILE:
            raise TemplateSetupError(
                f"template file {filename} is larger than {MAX_TEMPLATE_FILE} bytes"
            )
        mtime = info.st_mtime_ns

        def uptodate() -> bool:
            try:
                return os.stat(filename).st_mtime_ns == mtime
            except OSError:
                return False

        return raw.decode(self.encoding), os.path.normpath(filename), uptodate


def _opened_path(fd: int, filename: str) -> Path:
    """Where the file open as `fd` is (Linux: its /proc link, whatever was swapped since);
    where `filename` resolves to now without /proc."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return Path(filename).resolve()


@dataclass(frozen=True)
class BlockInput:
    block: str
    fmt: str
    user_id: str
    profile: Profile | None
    churn: float | None
    recommendations: list[str]  # item ids, best first, from the models
    models: dict[str, str]  # model name -> version that produced the recommendations / churn
    popular: list[str]  # best-sellers, best first
    variant: str = "default"
    # the request's parameters (engine.params): filters, exclusions, item count, locale; for
    # `similar_items`, `recommendations` holds the context item's neighbours
    params: BlockParams = NO_PARAMS
    # the merchandising rules live for this block now (engine/rules.py `Rules.live`)
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class BlockPolicy:
    items: int = 6
    churn_threshold: float = 0.5
    consent_default: bool = True  # PERSONA_CONSENT_DEFAULT: granted -> True, required -> False
    repeat: RepeatPolicy = NO_REPEATS  # PERSONA_REPEAT_ITEMS (engine/repeat.py)


@dataclass(frozen=True)
class Block:
    block: str
    fmt: str
    user_id: str
    content: str
    fallback: bool
    reason: str  # one of REASONS when fallback, "" when personalized
    items: tuple[str, ...]
    variant: str
    models: dict[str, str]
    etag: str  # strong ETag: the quoted hex digest of content
    content_type: str
    rules: tuple[str, ...] = ()  # ids of the merchandising rules that changed the items
    # The event time (epoch ms) from which the content is out of date by the clock alone: the next
    # start or end of a sale of an item it shows (`price_change_after`); None: never.
    until: int | None = None
    # What the serving side derives from the block once and keeps with it (api/block_headers.py:
    # its HTTP headers); never part of equality, never copied by `replace`.
    memo: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    # Computed once per block: a cached block is served many times (send time is the hot path).
    @cached_property
    def body(self) -> bytes:
        """`content` as UTF-8."""
        return self.content.encode()

    def entry(self) -> dict[str, Any]:
        """The block as one entry of a send-time batch: content, fallback, etag, and for a
        fallback `fallback_reason` (one of REASONS)."""
        entry: dict[str, Any] = {
            "content": self.content,
            "fallback": self.fallback,
            "etag": self.etag,
        }
        if self.fallback and self.reason:
            entry["fallback_reason"] = self.reason
        return entry

    @cached_property
    def entry_msgpack(self) -> bytes:
        packed: bytes = msgpack.packb(self.entry(), use_bin_type=True)
        return packed

    @cached_property
    def entry_json(self) -> str:
        return json.dumps(self.entry(), ensure_ascii=False, separators=(",", ":"))

    @cached_property
    def models_header(self) -> str:
        return models_header(self.models)


def models_header(models: dict[str, str]) -> str:
    """Model versions as `name=version,...` sorted by name (the X-Persona-Model header)."""
    return ",".join(f"{k}={v}" for k, v in sorted(models.items()))


_INDENT = re.compile(r"\n[ \t]+")
_PREFORMATTED = re.compile(r"<(pre|textarea)\b", re.IGNORECASE)


def squeeze_html(html: str) -> str:
    """Drop the templates' indentation (whitespace after a line break), which e-mail clients
    ignore and which made a block ~15% larger (Gmail clips messages over ~100 KB; senders fetch
    thousands of blocks per call). Left alone when the HTML has whitespace-sensitive elements."""
    if _PREFORMATTED.search(html):
        return html
    return _INDENT.sub("\n", html).strip()


def template_path(block: str, fmt: str, variant: str = "default") -> str:
    """The template file of a block (of a template variant: `email/<block>.<variant>.html`,
    engine/content_experiments.py), relative to the template directory."""
    stem = block if variant == "default" else f"{block}.{variant}"
    return f"email/{stem}.html" if fmt == "html" else f"ads/{stem}.json"


def variant_files(directory: Path, block: str, fmt: str) -> dict[str, Path]:
    """The template variants of a block in a directory: variant name -> file."""
    folder, ext = ("email", "html") if fmt == "html" else ("ads", "json")
    found: dict[str, Path] = {}
    for path in sorted((directory / folder).glob(f"{block}.*.{ext}")):
        name = path.name[len(block) + 1 : -len(ext) - 1]
        if VARIANT_NAME.fullmatch(name) and name not in (DEFAULT, HOLDOUT):
            found[name] = path
    return found


def etag_of(content: str) -> str:
    return '"' + hashlib.blake2b(content.encode(), digest_size=16).hexdigest() + '"'


# -- decision --------------------------------------------------------------------------------------


def price_change_after(products: list[Product], now_ms: int | None) -> int | None:
    """The first event time after `now_ms` at which the price one of `products` shows changes
    (a sale starts or ends); None: none does (or no clock: list prices)."""
    if now_ms is None:
        return None
    times = [
        t
        for p in products
        if p.sale_price is not None
        for t in (p.sale_starts, p.sale_ends)
        if t is not None and t > now_ms
    ]
    return min(times, default=None)


def shown_price(product: Product, now_ms: int | None) -> float:
    """The price a block shows: the sale price while it is effective at `now_ms`."""
    return product.price if now_ms is None else product.effective_price(now_ms)


def _showable(product: Product) -> bool:
    """Products with URLs an e-mail client and an ad platform can use (absolute http(s), no
    userinfo: engine.catalog `shown_safely`, which reports such a product once)."""
    return (
        product.url.startswith(("https://", "http://"))
        and product.image_url.startswith(("https://", "http://"))
        and shown_safely(product)
    )


# An e-mail block writes an item's link and image link (percent-encoded, HTML-escaped) and its
# title (HTML-escaped, as the image's alt text) each as one token no line break may split
# (engine/email_lines.py). The catalog takes URLs of 2,048 characters (up to 12 octets each once
# encoded) and titles of 500 (up to 5 octets each once escaped), so an item whose tokens could
# not fit a line of SMTP_LINE_MAX octets is not shown in an e-mail block (`fits_email`); ads
# (json) show it. Room is left for the attribute's name and quotes, the next tag's end, and the
# link's campaign parameters (PERSONA_UTM, bounded by engine/utm.py: EMAIL_UTM_MAX).
EMAIL_TITLE_MAX = SMTP_LINE_MAX - EMAIL_ROOM  # octets of an item's title, escaped


def fits_email(product: Product) -> bool:
    """Whether an e-mail block can write `product`'s links and title within SMTP's line limit
    (the title as `item_view` writes it: isolated when it holds direction controls)."""
    title = isolated(product.title)
    if len(title) * 5 > EMAIL_TITLE_MAX and octets(str(escape(title))) > EMAIL_TITLE_MAX:
        return False
    # an ASCII URL's character takes at most 5 octets written (`&` escaped), any other 12
    # (percent-encoded UTF-8): most links are settled by their length, without encoding them
    return all(
        len(url) * (5 if url.isascii() else 12) <= EMAIL_URL_MAX or link_fits(feed_url(url))
        for url in (product.url, product.image_url)
    )


def link_fits(link: str) -> bool:
    """Whether an e-mail block can write `link` (encoded already) in an attribute: at most
    EMAIL_URL_MAX octets once HTML-escaped."""
    return octets(str(escape(link))) <= EMAIL_URL_MAX


def _pick(
    item_ids: list[str],
    lookup: Lookup,
    limit: int,
    purchasable_only: bool = True,
    keep: Keep | None = None,
    per_group: bool = True,
) -> list[Product]:
    """The first `limit` distinct items of `item_ids` that exist in the catalog, can be shown
    and pass `keep` (the request's filters); with `per_group`, one per `item_group_id` (the
    first: variants of one product do not fill a block, except a cart's, which the user chose)."""
    out: list[Product] = []
    seen: set[str] = set()
    groups: set[str] = set()  # item_group_id: one variant of a product per block
    for item_id in item_ids:
        if len(out) >= limit:
            break
        if item_id in seen:
            continue
        seen.add(item_id)
        product = lookup(item_id)
        if product is None or not _showable(product):
            continue
        if per_group and product.item_group_id and product.item_group_id in groups:
            continue
        if purchasable_only and not product.purchasable:
            continue
        if keep is not None and not keep(product):
            continue
        out.append(product)
        groups.add(product.item_group_id)
    return out


def fallback_items(
    popular: list[str], lookup: Lookup, policy: BlockPolicy, inp: BlockInput | None = None
) -> list[Product]:
    """The fallback content: best-sellers that are purchasable catalog items (and pass the
    filters of `inp`'s parameters, as many as they ask for; in an e-mail block, fit it)."""
    if inp is None:
        return _pick(popular, lookup, policy.items)
    return _pick(popular, lookup, item_count(inp, policy), keep=keeper(inp))


def item_count(inp: BlockInput, policy: BlockPolicy) -> int:
    """How many items the block shows: the request's `n`, else the policy's."""
    return inp.params.n or policy.items


def keeper(inp: BlockInput) -> Keep | None:
    """The request's filter on candidate items (None: no filter): catalog fields, exclusions,
    never the context item itself in a `similar_items` block, and in an e-mail (html) block
    only items whose links and title fit a line (`fits_email`)."""
    params = inp.params
    email = inp.fmt == "html"
    if params is NO_PARAMS:
        return fits_email if email else None
    context = params.context_item if inp.block in CONTEXT_BLOCKS else None
    if context is None and not params.filtered and not params.exclude:
        return fits_email if email else None
    if email:
        return lambda p: p.item_id != context and params.matches(p) and fits_email(p)
    return lambda product: product.item_id != context and params.matches(product)


def _favourite_categories(
    profile: Profile, popular: list[str], lookup: Lookup, limit: int, keep: Keep | None = None
) -> list[Product]:
    """Best-sellers from the user's favourite categories, strongest category first."""
    ranked = sorted(profile.categories.items(), key=lambda kv: (-kv[1], kv[0]))
    favourites = {name: rank for rank, (name, _) in enumerate(ranked)}
    if not favourites:
        return []
    candidates = _pick(popular, lookup, len(popular), keep=keep)
    chosen = [p for p in candidates if p.category in favourites]
    chosen.sort(key=lambda p: favourites[p.category])  # stable: best-seller order within one
    return chosen[:limit]


def decide(inp: BlockInput, lookup: Lookup, policy: BlockPolicy) -> tuple[list[Product], bool, str]:
    """What `inp`'s block shows: (items, fallback, reason); `decide_ruled` says which rules
    changed it too."""
    items, fallback, reason, _fired = decide_ruled(inp, lookup, policy)
    return items, fallback, reason


Decision = tuple[list[Product], bool, str, tuple[str, ...]]


def decide_ruled(inp: BlockInput, lookup: Lookup, policy: BlockPolicy) -> Decision:
    """(items, fallback, reason, the ids of the rules that changed the items). Pure.
    Merchandising rules (`inp.rules`) re-rank every list but a cart's: recommendations, winback,
    similar items and every fallback; they never change whether a block is the fallback.

    Fallback (best-sellers) for an unknown user, missing consent (`personalization`; and `ads` for
    json blocks), or nothing personal to show. `cart_reminder` keeps out-of-stock cart items in
    html (the template marks them) but leaves them out of json (ads for what cannot be bought waste
    money); unknown items are always skipped.
    """
    _check(inp)
    profile = inp.profile
    limit, keep = item_count(inp, policy), keeper(inp)
    wide = limit * RULES_WIDTH if inp.rules else limit  # room for exclusions and filters

    def fallback(reason: str) -> Decision:
        items = fallback_items(inp.popular, lookup, replace(policy, items=wide), inp)
        ruled, fired = _ruled(items, inp, lookup, limit, keep, frozenset())
        return ruled, True, reason, fired

    if profile is None:
        return fallback("unknown_user")
    if inp.variant == HOLDOUT:
        return fallback("holdout")
    if not block_allowed(profile, inp.fmt, policy.consent_default):
        return fallback("no_consent")
    fired: tuple[str, ...] = ()
    if inp.block in ("recommendations", "similar_items"):
        items = _pick(inp.recommendations, lookup, wide, keep=keep)
        items, fired = _ruled(items, inp, lookup, limit, keep, _held(profile))
    elif inp.block == "cart_reminder":
        if not profile.cart:
            return fallback("empty_cart")
        html = inp.fmt == "html"
        cart = list(profile.cart)
        items = _pick(cart, lookup, limit, purchasable_only=not html, keep=keep, per_group=False)
    else:  # winback
        if inp.churn is None or inp.churn < policy.churn_threshold:
            return fallback("low_churn_risk")
        items = _pick(inp.recommendations, lookup, wide, keep=keep)
        if not items:
            items = _favourite_categories(profile, inp.popular, lookup, wide, keep)
        items, fired = _ruled(items, inp, lookup, limit, keep, _held(profile))
    if not items:
        return fallback("nothing_similar" if inp.block in CONTEXT_BLOCKS else "nothing_personal")
    return items, False, "", fired


RULES_WIDTH = 3  # candidates picked per shown item when rules may exclude or filter some


def _held(profile: Profile) -> frozenset[str]:
    """Items a pin must not bring into the user's block: what they bought, carted or looked at
    (as the recommendations leave out)."""
    return frozenset(held_items(profile))


def _ruled(
    items: list[Product],
    inp: BlockInput,
    lookup: Lookup,
    limit: int,
    keep: Keep | None,
    held: frozenset[str],
) -> tuple[list[Product], tuple[str, ...]]:
    """`items` as the block's rules re-rank them (engine/rules.py), at most `limit`; an item a
    pin brings in passes what `_pick` checks, the request's filters, and is not `held`."""
    if not inp.rules:
        return items[:limit], ()

    def may_show(item_id: str) -> bool:
        product = lookup(item_id)
        if product is None or item_id in held or not _showable(product):
            return False
        return product.purchasable and (keep is None or keep(product))

    by_id = {p.item_id: p for p in items}
    ids = [p.item_id for p in items]
    applied = apply_rules(ids, lookup, list(inp.rules), limit, may_show)
    chosen = [by_id.get(i) or lookup(i) for i in applied.items]
    return [p for p in chosen if p is not None], tuple(applied.fired)


def decide_similar(
    inp: BlockInput, lookup: Lookup, policy: BlockPolicy
) -> tuple[list[Product], bool, str]:
    """What an item's `similar_items` block shows without a user (the item route): its
    neighbours (`inp.recommendations`) that pass the filters, never the item itself; the
    best-sellers (reason `nothing_similar`) when none does. Pure."""
    _check(inp)
    limit, keep = item_count(inp, policy), keeper(inp)
    wide = limit * RULES_WIDTH if inp.rules else limit
    items, _fired = _ruled(
        _pick(inp.recommendations, lookup, wide, keep=keep), inp, lookup, limit, keep, frozenset()
    )
    if items:
        return items, False, ""
    fallback = fallback_items(inp.popular, lookup, replace(policy, items=wide), inp)
    return _ruled(fallback, inp, lookup, limit, keep, frozenset())[0], True, "nothing_similar"


def _check(inp: BlockInput) -> None:
    if inp.block not in ALL_BLOCKS:
        raise UnknownBlock(f"unknown block {inp.block!r}; expected one of {', '.join(ALL_BLOCKS)}")
    if inp.fmt not in FORMATS:
        raise UnknownBlock(f"unknown format {inp.fmt!r}; expected one of {', '.join(FORMATS)}")


# -- rendering -------------------------------------------------------------------------------------


def _safe_fallback(inp: BlockInput) -> str:
    """The last resort when even the fallback template fails: valid, empty, hard-coded."""
    if inp.fmt == "json":
        return json.dumps(
            {
                "block": inp.block,
                "user_id": inp.user_id,
                "items": [],
                "variant": inp.variant,
                "models": {},
                "fallback": True,
            }
        )
    return (
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0">'
        "<tr><td>&nbsp;</td></tr></table>"
    )


class Renderer:
    """Renders blocks with one sandboxed Jinja2 environment. `render` never raises.

    `errors` counts render failures (each served a fallback); `oversized` the blocks whose
    rendering passed the sandbox's output budget (`Limits.output_bytes`, 1 MiB: the largest
    items the catalog takes, 50 of them), each served as the fallback with the items that fit."""

    def __init__(self, template_dir: Path | str | None = None) -> None:
        directory = Path(template_dir) if template_dir is not None else DEFAULT_TEMPLATE_DIR
        # the event-time clock (epoch ms) that decides which sale prices apply; None: list prices
        self.clock: Callable[[], int] | None = None
        # item links through the click redirect (engine/clicks.py; PERSONA_CLICK_URL), or None
        self.links: Links | None = None
        # the blocks' buttons: the shop (PERSONA_FEED_LINK) and the cart (PERSONA_CART_URL)
        self.shop_url: str | None = None
        self.cart_url: str | None = None
        self.utm = ""  # PERSONA_UTM on e-mail blocks' product links (engine/utm.py)
        self.template_dir = directory
        if template_dir is not None and directory.is_dir():
            check_template_dir(directory)
        self.errors = 0
        self.oversized = 0
        # a directory of the six files from before `similar_items` takes the packaged one
        loader = jinja2.ChoiceLoader(
            [
                _CheckedLoader(directory),
                jinja2.FileSystemLoader(str(DEFAULT_TEMPLATE_DIR)),
            ]
        )
        self.env = StrictEnvironment(
            loader=loader,
            autoescape=jinja2.select_autoescape(["html"]),
            undefined=jinja2.StrictUndefined,
            auto_reload=False,
        )
        # (block, fmt) -> its template variants (content experiments), the directory's first
        self.variants: dict[tuple[str, str], frozenset[str]] = {}
        for block in ALL_BLOCKS:
            for fmt in FORMATS:
                name = template_path(block, fmt)
                if block in BLOCKS and not (directory / name).is_file():
                    raise TemplateSetupError(f"block template {directory / name} is missing")
                self._check_template(name, directory / name)
                self._find_variants(block, fmt, directory)
        try:  # texts per language (engine.locales): the directory's i18n/, then the packaged
            self.messages = Messages.load(directory, DEFAULT_TEMPLATE_DIR)
        except (MessagesError, OSError) as exc:
            raise TemplateSetupError(str(exc)) from None

    def _check_template(self, name: str, path: Path) -> None:
        """Compile a template once (start-up): TemplateSetupError naming the file if it fails."""
        try:
            self.env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateSetupError(
                f"block template {path} does not compile: line {exc.lineno}: {exc.message}"
            ) from None
        except Exception as exc:
            raise TemplateSetupError(f"block template {path} cannot be loaded: {exc}") from None

    def _find_variants(self, block: str, fmt: str, directory: Path) -> None:
        """The block's template variants in the shop's directory and the packaged one (the
        shop's file wins, as for the block's own template), each checked as it is."""
        found = variant_files(DEFAULT_TEMPLATE_DIR, block, fmt) | variant_files(
            directory, block, fmt
        )
        for variant, path in found.items():
            self._check_template(template_path(block, fmt, variant), path)
        if found:
            self.variants[(block, fmt)] = frozenset(found)

    def has_variant(self, block: str, variant: str) -> bool:
        """Whether `block` has a template variant `variant` in either format."""
        return any(variant in self.variants.get((block, fmt), ()) for fmt in FORMATS)

    def template_of(self, inp: BlockInput) -> str:
        """The template a block is rendered with: its variant's file, where it has one."""
        if inp.variant in self.variants.get((inp.block, inp.fmt), ()):
            return template_path(inp.block, inp.fmt, inp.variant)
        return template_path(inp.block, inp.fmt)

    def _context(
        self, inp: BlockInput, items: list[Product], fallback: bool, reason: str, now: int | None
    ) -> dict[str, Any]:
        cart = inp.profile.cart if inp.profile is not None else {}
        with_quantity = inp.block == "cart_reminder" and not fallback
        locale = block_locale(inp, reason)
        currency = currency_of(locale)
        link = self._link(inp, reason)
        views = [
            item_view(p, now, locale, currency)
            | {"quantity": int(cart.get(p.item_id, 0)) if with_quantity else None}
            | self._urls(inp, p, link)
            for p in items
        ]
        if with_quantity:
            add_line_totals(views, locale)
        return {
            "block": inp.block,
            "fmt": inp.fmt,
            "user_id": inp.user_id,
            "variant": inp.variant,
            "models": {} if fallback else dict(inp.models),
            "fallback": fallback,
            "reason": reason,
            "locale": locale,
            # the language of the block's texts: English where `locale` has none (lang_of)
            "lang": (lang := self.messages.lang_of(locale)),
            "dir": direction(lang),
            "messages": dict(self.messages.for_locale(locale)),
            "items": views,
            "subtotal_text": subtotal_text(views, locale) if with_quantity else "",
            "cta_url": self._cta_url(inp, items, with_quantity),
        }

    def _urls(
        self, inp: BlockInput, p: Product, link: Callable[[str], str] | None
    ) -> dict[str, str]:
        """An e-mail item's links: campaign parameters on the product's URL, and the click
        redirect as `url` when links go through it (`product_url` keeps the product's), unless
        the redirect is longer than an e-mail line can hold (EMAIL_URL_MAX)."""
        if inp.fmt != "html" or not (self.utm or link):
            return {}
        product = with_utm(feed_url(p.url), self.utm, inp.block, inp.variant)
        if link is None:
            return {"url": product}
        tracked = link(p.item_id)
        if not link_fits(tracked):
            # the click token carries the user and item ids (512 octets each at most): a link
            # no line could hold would fail the block and its fallback; the product's instead
            return {"url": product}
        return {"url": tracked, "product_url": product}

    def _cta_url(self, inp: BlockInput, items: list[Product], to_cart: bool) -> str:
        """Where a block's button leads: the cart (PERSONA_CART_URL, `{user_id}` filled in) for
        a user's cart reminder, else the shop (PERSONA_FEED_LINK, else the first item's site)."""
        if to_cart and self.cart_url and inp.user_id and inp.user_id != UNKNOWN_USER:
            cart = self.cart_url.replace("{user_id}", urllib.parse.quote(inp.user_id, safe=""))
            # a user id of 128 emoji is 1,536 octets encoded: a link no e-mail line could hold
            # would fail an e-mail block; the shop's link below instead
            if inp.fmt != "html" or link_fits(cart):
                return cart
        if self.shop_url:
            return self.shop_url
        return site_of(items[0].url) if items else ""

    def _link(self, inp: BlockInput, reason: str) -> Callable[[str], str] | None:
        """Item links through the click redirect: e-mail (html) blocks of a known user who did
        not refuse personalization (a click is recorded for them); None: the product's URL."""
        links = self.links
        if links is None or inp.fmt != "html" or reason == "no_consent":
            return None
        if not inp.user_id or inp.user_id == UNKNOWN_USER:  # one block shared by every stranger
            return None
        return lambda item_id: links(inp.user_id, inp.block, inp.variant, item_id)

    def _render(
        self,
        inp: BlockInput,
        items: list[Product],
        fallback: bool,
        reason: str,
        fired: tuple[str, ...] = (),
    ) -> Block:
        now = self.clock() if self.clock is not None else None  # the prices' time
        context = self._context(inp, items, fallback, reason, now)
        content = self.env.get_template(self.template_of(inp)).render(context)
        if inp.fmt == "json":
            json.loads(content)  # a template that emits invalid JSON is a template error
        else:  # lines within SMTP's limit (engine/email_lines.py); LineTooLong: a template error
            content = wrap_html(squeeze_html(content))
        ids = tuple(p.item_id for p in items)
        block = self._block(inp, content, fallback, reason, ids, fired)
        until = price_change_after(items, now)
        return block if until is None else replace(block, until=until)

    def _block(
        self,
        inp: BlockInput,
        content: str,
        fallback: bool,
        reason: str,
        items: tuple[str, ...],
        fired: tuple[str, ...] = (),
    ) -> Block:
        return Block(
            block=inp.block,
            fmt=inp.fmt,
            user_id=inp.user_id,
            content=content,
            fallback=fallback,
            reason=reason,
            items=items,
            variant=inp.variant,
            models=block_models(inp, fallback),
            etag=etag_of(content),
            content_type=CONTENT_TYPES.get(inp.fmt, "text/plain; charset=utf-8"),
            rules=fired,
        )

    def render(
        self,
        inp: BlockInput,
        items: list[Product],
        fallback: bool,
        reason: str,
        lookup: Lookup,
        policy: BlockPolicy | None = None,
        fired: tuple[str, ...] = (),
    ) -> Block:
        """Render a decision (`fired`: the rules that changed it). A failing personalized render
        falls back to the best-sellers (reason `template_error`); a fallback larger than the
        output budget keeps half its items at a time until it fits (`_fitting`); a failing
        fallback render falls back to a hard-coded empty block."""
        too_large = 0  # the items of a render past the output budget (0: none was)
        if not fallback:
            try:
                return self._render(inp, items, False, "", fired)
            except Exception as exc:
                if output_too_large(exc):
                    too_large = len(items)
                else:
                    self.errors += 1
                    log.warning(
                        "block %s/%s failed to render for a user; serving the fallback",
                        inp.block,
                        inp.fmt,
                        exc_info=True,
                    )
            items = fallback_items(inp.popular, lookup, policy or BlockPolicy(), inp)
            fallback, reason = True, "template_error"
        try:
            return self._fitting(
                inp, items, reason, fired if reason != "template_error" else (), too_large
            )
        except Exception:
            self.errors += 1
            log.error(
                "fallback block %s/%s failed to render; serving the empty safe block",
                inp.block,
                inp.fmt,
                exc_info=True,
            )
        return self._block(inp, _safe_fallback(inp), True, "template_error", ())

    def _fitting(
        self,
        inp: BlockInput,
        items: list[Product],
        reason: str,
        fired: tuple[str, ...],
        too_large: int,
    ) -> Block:
        """The fallback of `items`, or of the first half of them, a quarter, ... down to none:
        the first that renders within the output budget (at most 7 renders for 50 items),
        counted and logged when a render (`too_large`: the personalized one's items) did not."""
        while True:
            try:
                block = self._render(inp, items, True, reason, fired)
            except Exception as exc:
                if not (items and output_too_large(exc)):
                    raise
                too_large = too_large or len(items)
                items = items[: len(items) // 2]
                continue
            if too_large:
                self.oversized += 1
                log.warning(
                    "block %s/%s of %d items renders past the output budget (%d bytes: the "
                    "catalog's titles and URLs are that large); serving the fallback with %d",
                    inp.block,
                    inp.fmt,
                    too_large,
                    self.env.limits.output_bytes,
                    len(items),
                )
            return block


def block_locale(inp: BlockInput, reason: str) -> str:
    """The locale a block is written in: the request's `locale`, else the user's (the newest
    `props.locale` of their events; not without their consent to personalization), else ""."""
    if inp.params.locale:
        return inp.params.locale
    profile = inp.profile
    return profile.locale if profile is not None and reason != "no_consent" else ""


def item_view(p: Product, now: int | None, locale: str, currency: str | None) -> dict[str, Any]:
    """One item as the templates see it (templates/README.md), priced in `currency` when the
    catalog gives the product a price in it (engine.locales.local_price). Its words come isolated
    when they hold direction controls (engine.text.isolated): a right-to-left override in a
    title cannot reorder the price written after it."""
    price, code = local_price(p, shown_price(p, now), currency)
    return {
        "item_id": p.item_id,
        "title": isolated(p.title),
        # percent-encoded as the ad feeds write them: no raw space, non-ASCII or control in an
        # href, a src or an ad's URL (`%` sequences the catalog wrote are kept)
        "url": feed_url(p.url),
        "image_url": feed_url(p.image_url),
        "price": price,
        "currency": code,
        "price_text": format_price(price, code, locale),
        "regular_price": p.price if code == p.currency else price,  # above `price` in a sale
        "availability": p.availability,
        "purchasable": p.purchasable,
        "category": isolated(p.category),
        "brand": isolated(p.brand),
    }


def add_line_totals(views: list[dict[str, Any]], locale: str) -> None:
    """A cart line's total (`line_total`, `line_total_text`): its price times its quantity."""
    for view in views:
        amount = line_total(view["price"], view["quantity"] or 0, view["currency"])
        view["line_total"] = amount
        view["line_total_text"] = format_price(amount, view["currency"], locale)


def subtotal_text(views: list[dict[str, Any]], locale: str) -> str:
    """The cart's subtotal over the lines that can be bought, when they share one currency
    (amounts in different currencies are never added); "" otherwise."""
    lines = [v for v in views if v["purchasable"]]
    currencies = {v["currency"] for v in lines}
    if len(currencies) != 1:
        return ""
    currency = currencies.pop()
    return format_price(total((v["line_total"] for v in lines), currency), currency, locale)


def site_of(url: str) -> str:
    """`https://shop.example.com/` of a product URL ("" when it names none, or one urllib
    cannot split: an unbalanced bracket in the host)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return ""
    return f"{parts.scheme}://{parts.netloc}/" if parts.scheme and parts.netloc else ""


def block_models(inp: BlockInput, fallback: bool) -> dict[str, str]:
    """The models a block reports (`X-Persona-Model`): none for the fallback."""
    return {} if fallback else dict(inp.models)


def assemble(inp: BlockInput, lookup: Lookup, policy: BlockPolicy, renderer: Renderer) -> Block:
    """decide + render."""
    items, fallback, reason, fired = decide_ruled(inp, lookup, policy)
    return renderer.render(inp, items, fallback, reason, lookup, policy, fired)


# -- unknown users ---------------------------------------------------------------------------------

# The user id an unknown user's block is rendered for once, shared by every unknown user (the
# cache keeps one entry per block, format and variant, not one per id a caller sends). Plain
# characters: autoescaping and `tojson` write it unchanged.
UNKNOWN_USER = "persona-unknown-user-5f0c2a"
UNKNOWN_KEY = ""  # the cache key's user part for the shared block: never a user id (1..128)
_DERIVED = (
    "body",
    "entry_msgpack",
    "entry_json",
    "models_header",
)


def for_unknown_user(shared: Block, user_id: str) -> Block | None:
    """`shared` (a block rendered for `UNKNOWN_USER`) as the block of the unknown user `user_id`:
    the same content when the template does not write the user id (the e-mail templates); the id
    put in where a json template writes it with `tojson` (the ads templates); None when the id
    appears any other way (the caller renders for the user, without caching)."""
    content = shared.content
    found = content.count(UNKNOWN_USER)
    if not found:
        block = replace(shared, user_id=user_id)
        derived = vars(shared)
        vars(block).update({name: derived[name] for name in _DERIVED if name in derived})
        object.__setattr__(block, "memo", shared.memo)  # the same headers: built once for all
        return block
    quoted = str(htmlsafe_json_dumps(UNKNOWN_USER))
    if shared.fmt != "json" or content.count(quoted) != found:
        return None
    content = content.replace(quoted, str(htmlsafe_json_dumps(user_id)))
    return replace(shared, user_id=user_id, content=content, etag=etag_of(content))


# -- cache -----------------------------------------------------------------------------------------


def _expired(block: Block, now: int | None) -> bool:
    """Whether a price `block` shows has changed by the event time `now` (a sale started or
    ended since it was rendered: catalog data that moves no stamp)."""
    return block.until is not None and now is not None and now >= block.until


CacheKey = tuple[str, str, str, str]  # (user_id, block, fmt, variant)


CACHE_BYTES = 256 * 1024 * 1024  # accounted bytes of the block cache (`block_bytes`)
BLOCK_OVERHEAD = 2048  # bytes of a cached block besides its texts: headers, key, stamp, object


def block_bytes(block: Block) -> int:
    """What a cached block is accounted for, once served in every form (tracemalloc,
    tests/api/test_block_cache_memory.py): its text twice (the text, and `entry_json`, the same
    characters quoted), its UTF-8 bytes four times (`body`, `entry_msgpack`, the UTF-8 copy
    CPython keeps of a non-ASCII text once msgpack packed it, and the quoting), plus
    BLOCK_OVERHEAD. Counted once, when the block is stored: the cache gives back what it
    counted (the text's size grows by that UTF-8 copy while it is held)."""
    return 2 * sys.getsizeof(block.content) + 4 * len(block.body) + BLOCK_OVERHEAD


class BlockCache:
    """In-memory LRU of rendered blocks, bounded by entries and by accounted bytes
    (`block_bytes`, counted when a block is stored and given back as counted). An entry is
    served only while the caller's `stamp` (an opaque hashable of profile version, catalog
    generation, model versions, consent, ...) equals the one it was stored with. Not
    thread-safe (one event loop)."""

    def __init__(self, max_entries: int = 100_000, max_bytes: int = CACHE_BYTES) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be >= 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0  # accounted bytes of the blocks held
        self._entries: OrderedDict[CacheKey, tuple[Hashable, Block, int]] = OrderedDict()
        self._by_user: dict[str, set[CacheKey]] = {}
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey, stamp: Hashable, now: int | None = None) -> Block | None:
        """The block cached under `key` while its stamp is `stamp` and, at the event time
        `now`, no price it shows has changed (`Block.until`)."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if entry[0] != stamp or _expired(entry[1], now):
            self.misses += 1
            self._remove(key)  # stale: whatever the block depended on has changed
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def get_or_stale(
        self, key: CacheKey, stamp: Hashable, now: int | None = None
    ) -> tuple[Block | None, tuple[Hashable, Block] | None]:
        """`get`, and on a stale entry also (its stamp, its block), removed as `get` removes it:
        the caller may find the block still right for the new stamp (and `put` it again)."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] == stamp and not _expired(entry[1], now):
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1], None
        self.misses += 1
        if entry is None:
            return None, None
        self._remove(key)
        return None, (entry[0], entry[1])

    def put(self, key: CacheKey, stamp: Hashable, block: Block) -> None:
        self._remove(key)
        cost = block_bytes(block)
        self._entries[key] = (stamp, block, cost)
        self.bytes += cost
        self._by_user.setdefault(key[0], set()).add(key)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.evictions += 1

    def keys_of(self, user_id: str) -> list[list[str]]:
        """The (block, format, variant) entries cached for one user (privacy export)."""
        return sorted([key[1], key[2], key[3]] for key in self._by_user.get(user_id, ()))

    def invalidate_user(self, user_id: str) -> int:
        """Drop every block of one user (erasure, consent change); returns how many."""
        keys = self._by_user.pop(user_id, set())
        for key in keys:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self.bytes -= entry[2]
        return len(keys)

    def clear(self) -> None:
        self._entries.clear()
        self._by_user.clear()
        self.bytes = 0

    def _remove(self, key: CacheKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.bytes -= entry[2]
        keys = self._by_user.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_user[key[0]]
