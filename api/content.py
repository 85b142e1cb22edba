"""Content: profiles, scores and blocks for one user, assembled from the state and the models.

Blocks are cached per user, block, format and variant under a stamp of everything they depend on
(profile version and event times, catalog generation, model versions, the hour of the event-time
clock); a request renders only when that stamp changed, so the hot path is a dictionary lookup.

When only the hour moved (every block's stamp does, at once, each hour of event time; a replay
moves it many times a second), the user is scored again (churn follows the clock), but the
recommendations are reused while the items they exclude (every item the profile holds the user
had: purchases, recent items, cart) stand, and the block itself is reused when it shows the same
decision (items, fallback, reason, models): its content cannot differ, as everything else it is
rendered from is in the rest of the stamp.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from engine import consent
from engine.blocks import (
    CONTEXT_BLOCKS,
    UNKNOWN_KEY,
    UNKNOWN_USER,
    Block,
    BlockCache,
    BlockInput,
    BlockPolicy,
    Renderer,
    UnknownBlock,
    assemble,
    block_models,
    decide_ruled,
    decide_similar,
    for_unknown_user,
)
from engine.content_experiments import DEFAULT, HOLDOUT
from engine.memo import SizedMemo
from engine.params import NO_PARAMS, BlockParams
from engine.profile import Profile, history_newest
from engine.rules import Rule
from engine.state_view import StateView
from models.registry import ModelSet
from models.scoring import TOP_RECOMMENDATIONS, Scores, excluded_items, score_profile
from models.similar import similar_items

HOUR_MS = 3_600_000
SCORES_MEMO = 200_000  # users whose scores are memoized
SCORES_MEMO_BYTES = 64 * 1024 * 1024  # accounted: ITEM_BYTES per item id it holds, plus its key
ITEM_BYTES = 100  # an item id in a memoized list or set (<= 128 characters, mostly shared)
HOUR_AT = 2  # the hour's place in `_base_stamp()`
# Blocks with request parameters (engine.params) live in their own LRU, one entry per user, block,
# format, variant and distinct parameter set, bounded by PARAM_BLOCKS entries and
# PARAM_BLOCK_BYTES accounted bytes: a flood of distinct parameter sets evicts only other
# parameterized blocks, never the plain ones the hot path serves.
PARAM_BLOCKS = 20_000
PARAM_BLOCK_BYTES = 64 * 1024 * 1024
ITEM_KEY = "\x00item"  # the user part of an item route's cache key: never a user id
log = logging.getLogger("persona.content")


class ContentService:
    def __init__(
        self,
        state: StateView,
        models: ModelSet,
        renderer: Renderer,
        policy: BlockPolicy,
        cache: BlockCache | None = None,
    ) -> None:
        self.state = state
        self.models = models
        self.renderer = renderer
        renderer.clock = state.now_ms  # sale prices by the event-time clock (engine/blocks.py)
        self.policy = policy
        self._repeat = policy.repeat.window(state.product)  # None: nothing may repeat
        self.cache = cache or BlockCache()
        self.param_cache = BlockCache(PARAM_BLOCKS, PARAM_BLOCK_BYTES)
        # user -> (stamp, scores, what the recommendations were made from)
        self._scores: SizedMemo[str, tuple[tuple[Any, ...], Scores, tuple[Any, ...]]] = SizedMemo(
            SCORES_MEMO, SCORES_MEMO_BYTES
        )
        self.errors = 0  # blocks answered with the fallback because the state or a model failed
        self.reused = 0  # stale blocks kept because only the hour moved and the decision stood

    @property
    def scores_memo(self) -> SizedMemo[str, tuple[tuple[Any, ...], Scores, tuple[Any, ...]]]:
        """The users' memoized scores (its entries and accounted bytes are exported)."""
        return self._scores

    def _allowed(self, item_id: str) -> bool:
        product = self.state.product(item_id)
        return product is not None and product.purchasable

    def _base_stamp(self) -> tuple[Any, ...]:
        """What every user's blocks depend on besides their profile: catalog generation, model
        versions, the hour of the event-time clock, the best-seller list's length."""
        return (
            self.state.catalog_generation,
            self.models.stamp(),
            self.state.now_ms() // HOUR_MS,  # at HOUR_AT
            len(self.state.popular()),
            self.models.rules.phase(self.state.now_ms()),  # a rule started or ended
            self._experiment_phase(),  # a content experiment started or ended
        )

    def _experiment_phase(self) -> int:
        tests = self.models.content_experiments
        return tests.phase(self.state.now_ms()) if tests.experiments else 0

    def arm(self, profile: Profile, block: str, fmt: str = "html") -> str:
        """The variant `block` is shown to this user in, in format `fmt`: the arm of the content
        experiment running on it (engine/content_experiments.py), else of a model A/B test
        (`A`, `B`; models/experiments.py), else `default`, as for a user who did not consent to
        what the format needs (personalization; ads too for json: engine.consent), who gets
        the fallback (never assigned, never logged)."""
        running = self.models.content_experiments.running(block, self.state.now_ms())
        model = self.models.experiment
        if (running is None and model is None) or not self.shows_personal(profile, fmt):
            return DEFAULT
        if running is not None:
            return running.assign(profile.user_id)
        assert model is not None
        return model.variant(profile.user_id) if model.mode == "ab" else DEFAULT

    def _stamp(
        self, profile: Profile | None, base: tuple[Any, ...] | None = None
    ) -> tuple[Any, ...]:
        return (incarnation(profile) if profile else -1, base or self._base_stamp())

    def _rules(self, block: str) -> tuple[Rule, ...]:
        """The merchandising rules live for `block` now (engine/rules.py; none: no cost)."""
        rules = self.models.rules
        return () if not rules.rules else tuple(rules.live(block, self.state.now_ms()))

    def scores(self, profile: Profile) -> Scores:
        stamp = self._stamp(profile)
        hit = self._scores.get(profile.user_id)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        # one reference: swaps are atomic; the A/B variant only with personalization consent
        models = self.models.for_user(profile.user_id) if self.personal(profile) else self.models
        now = self.state.now_ms()
        made_from = (
            incarnation(profile),
            self.state.catalog_generation,
            models.stamp(),
            frozenset(excluded_items(profile, now, self._repeat)),
        )
        recommendations = None
        if hit is not None and hit[2] == made_from:  # only the clock moved, not past a purchase
            recommendations = hit[1].recommendations
        content = getattr(self.state, "content_index", None)  # engine.similarity (issue 17)
        scores = score_profile(
            profile, now, models, self._allowed, recommendations, content, self._repeat
        )
        items = len(scores.recommendations) + len(made_from[3])
        size = sys.getsizeof(profile.user_id) + ITEM_BYTES * items
        self._scores.put(profile.user_id, (stamp, scores, made_from), size)
        return scores

    def personal(self, profile: Profile) -> bool:
        """Whether outputs derived from this profile may be shown (engine.consent.personal)."""
        return consent.personal(profile, self.policy.consent_default)

    def shows_personal(self, profile: Profile, fmt: str) -> bool:
        """Whether a block in format `fmt` may be derived from this profile (engine.consent
        `block_allowed`: personalization, and ads for json); otherwise it is the fallback."""
        return consent.block_allowed(profile, fmt, self.policy.consent_default)

    def forget(self, user_id: str) -> None:
        """Drop everything cached about a user (after an erasure; and whenever a request finds
        their profile gone: an erasure the worker applied, this process never told of it)."""
        self.cache.invalidate_user(user_id)
        self.param_cache.invalidate_user(user_id)
        self._scores.pop(user_id)

    def cached_blocks(self, user_id: str) -> list[list[str]]:
        """The (block, format, variant) entries cached for one user (privacy export); a
        parameterized block's variant is followed by its parameter set."""
        found = self.cache.keys_of(user_id) + self.param_cache.keys_of(user_id)
        return [[b, f, v.replace("\x00", "?", 1).replace("\x00", "&")] for b, f, v in found]

    def popular(self) -> list[str]:
        live = self.state.popular()
        if len(live) >= self.policy.items * 2:
            return live
        seen = set(live)
        return live + [i for i in self.models.recs.popular if i not in seen]

    def block(
        self,
        user_id: str,
        block: str,
        fmt: str,
        variant: str = "default",
        base: tuple[Any, ...] | None = None,
        params: BlockParams = NO_PARAMS,
    ) -> Block:
        """The user's block, personalized or the fallback; never raises for a known block and
        format (a failing state read or model answers the fallback, logged and counted).
        `base` is a `_base_stamp()` the caller took once for many users (a batch); `params` the
        request's parameters (engine.params; without any: the plain, hot path)."""
        try:
            if params is NO_PARAMS and block not in CONTEXT_BLOCKS:
                return self._block(user_id, block, fmt, variant, base)
            return self._param_block(user_id, block, fmt, variant, base, params)
        except UnknownBlock:
            raise
        except Exception:
            self.errors += 1
            log.exception("block %s/%s failed for a user; serving the fallback", block, fmt)
            failed = self.fallback_block(user_id, block, fmt, variant, params)
            return replace(failed, reason="error")  # not "unknown_user": the id may be good

    def fallback_block(
        self,
        user_id: str,
        block: str,
        fmt: str,
        variant: str = "default",
        params: BlockParams = NO_PARAMS,
    ) -> Block:
        """The fallback (best-sellers) version of a block, not derived from the user's profile."""
        inp = BlockInput(
            block=block,
            fmt=fmt,
            user_id=user_id,
            profile=None,
            churn=None,
            recommendations=[],
            models={},
            popular=self.popular(),
            variant=variant,
            params=params,
            rules=self._rules(block),
        )
        return assemble(inp, self.state.product, self.policy, self.renderer)

    def blocks(
        self, user_ids: list[str], block: str, fmt: str, params: BlockParams = NO_PARAMS
    ) -> list[Block]:
        """One block per user (send-time batches): the stamp's shared part is taken once."""
        base = self._base_stamp()
        return [self.block(uid, block, fmt, "default", base, params) for uid in user_ids]

    def stranger_blocks(
        self,
        user_ids: list[str],
        block: str,
        fmt: str,
        params: BlockParams = NO_PARAMS,
        reason: str = "unknown_user",
    ) -> list[Block]:
        """The blocks `user_ids` would get had they no profile (the best-sellers fallback an
        unknown user gets), without reading their profiles: the shared unknown-user block taken
        once (rendered, or from the cache as for unknown users), then one copy per user
        (`for_unknown_user`), their fallback `reason` that one (engine.blocks.REASONS: a batch's
        users left when its deadline passed, api/batch.py, are `deadline`)."""
        base = self._base_stamp()
        if params is NO_PARAMS and block not in CONTEXT_BLOCKS:
            shared = self._shared_unknown(block, fmt, DEFAULT, base)
        else:
            slot = f"{DEFAULT}\x00{params.key}"
            shared = self._shared_param_unknown(
                block, fmt, DEFAULT, slot, self._stamp(None, base), params
            )
        if shared.reason != reason:  # a copy (not cached): its entry and headers built once
            shared = replace(shared, reason=reason)
            shared.entry_json, shared.entry_msgpack  # noqa: B018  (copied to each user's block)
        blocks = [self._as_unknown(shared, uid, block, fmt, DEFAULT, params) for uid in user_ids]
        return [b if b.reason == reason else replace(b, reason=reason) for b in blocks]

    def _block(
        self, user_id: str, block: str, fmt: str, variant: str, base: tuple[Any, ...] | None
    ) -> Block:
        profile = self.state.profile(user_id)
        if profile is None:
            self.forget(user_id)  # erased elsewhere: nothing of the old profile stays here
            return self._unknown(user_id, block, fmt, variant, base)
        testing = self.models.content_experiments.by_block
        if variant == DEFAULT and (block in testing or self.models.experiment is not None):
            variant = self.arm(profile, block, fmt)  # no experiment: a dict lookup, an attribute
        stamp = self._stamp(profile, base)
        key = (user_id, block, fmt, variant)
        cached, stale = self.cache.get_or_stale(key, stamp, self.state.now_ms())
        if cached is not None:
            return cached
        churn: float | None = None
        recs: list[str] = []
        models: dict[str, str] = {}
        if variant != HOLDOUT and consent.block_allowed(profile, fmt, self.policy.consent_default):
            scores = self.scores(profile)  # not scored (nor A/B assigned) for the fallback
            churn, recs, models = scores.churn, scores.recommendations, scores.models
        inp = BlockInput(
            block=block,
            fmt=fmt,
            user_id=user_id,
            profile=profile,
            churn=churn,
            recommendations=recs,
            models=models,
            popular=self.popular(),
            variant=variant,
            rules=self._rules(block),
        )
        if stale is not None and _only_the_hour_moved(stale[0], stamp):
            items, fallback, reason, fired = decide_ruled(inp, self.state.product, self.policy)
            old = stale[1]
            if (
                old.items == tuple(p.item_id for p in items)
                and old.fallback == fallback
                and old.reason == reason
                and old.models == block_models(inp, fallback)
                and old.rules == fired
                and not any(p.sale_price is not None for p in items)  # a sale may start or end
            ):
                result = old
                self.reused += 1
            else:
                result = self.renderer.render(
                    inp, items, fallback, reason, self.state.product, self.policy, fired
                )
        else:
            result = assemble(inp, self.state.product, self.policy, self.renderer)
        self.cache.put(key, stamp, result)
        return result

    def _unknown(
        self, user_id: str, block: str, fmt: str, variant: str, base: tuple[Any, ...] | None
    ) -> Block:
        """An unknown user's block: the fallback, rendered and cached once per block, format and
        variant for every unknown user (`engine.blocks.for_unknown_user`), so ids nobody has
        seen (a sender's typos, or a flood of random ids) cannot fill the block cache."""
        shared = self._shared_unknown(block, fmt, variant, base)
        return self._as_unknown(shared, user_id, block, fmt, variant)

    def _shared_unknown(
        self, block: str, fmt: str, variant: str, base: tuple[Any, ...] | None
    ) -> Block:
        """The block rendered for `UNKNOWN_USER`, cached once for every unknown user."""
        stamp = self._stamp(None, base)
        key = (UNKNOWN_KEY, block, fmt, variant)
        shared = self.cache.get(key, stamp, self.state.now_ms())
        if shared is None:
            shared = self.fallback_block(UNKNOWN_USER, block, fmt, variant)
            self.cache.put(key, stamp, shared)
        return shared

    def _as_unknown(
        self,
        shared: Block,
        user_id: str,
        block: str,
        fmt: str,
        variant: str,
        params: BlockParams = NO_PARAMS,
    ) -> Block:
        """`shared` as the unknown user `user_id`'s block (rendered for them when the template
        writes their id in a way `for_unknown_user` cannot put in)."""
        mine = for_unknown_user(shared, user_id)
        if mine is None:
            return self.fallback_block(user_id, block, fmt, variant, params)
        return mine

    # -- blocks with request parameters (engine.params) ------------------------------------------

    def _param_block(
        self,
        user_id: str,
        block: str,
        fmt: str,
        variant: str,
        base: tuple[Any, ...] | None,
        params: BlockParams,
    ) -> Block:
        """A block for a parameter set, cached in `param_cache` under the stamp a plain block
        has (profile version and `_base_stamp()`), rendered again whenever it changes."""
        profile = self.state.profile(user_id)
        if profile is not None and variant == DEFAULT:
            variant = self.arm(profile, block, fmt)
        stamp = self._stamp(profile, base)
        slot = f"{variant}\x00{params.key}"
        if profile is None:
            self.forget(user_id)
            return self._param_unknown(user_id, block, fmt, variant, slot, stamp, params)
        key = (user_id, block, fmt, slot)
        cached = self.param_cache.get(key, stamp, self.state.now_ms())
        if cached is None:
            inp = self._param_input(profile, block, fmt, variant, params)
            cached = assemble(inp, self.state.product, self.policy, self.renderer)
            self.param_cache.put(key, stamp, cached)
        return cached

    def _param_unknown(
        self,
        user_id: str,
        block: str,
        fmt: str,
        variant: str,
        slot: str,
        stamp: tuple[Any, ...],
        params: BlockParams,
    ) -> Block:
        """`_unknown` for a parameter set: one shared fallback per block, format, variant and
        parameter set."""
        shared = self._shared_param_unknown(block, fmt, variant, slot, stamp, params)
        return self._as_unknown(shared, user_id, block, fmt, variant, params)

    def _shared_param_unknown(
        self,
        block: str,
        fmt: str,
        variant: str,
        slot: str,
        stamp: tuple[Any, ...],
        params: BlockParams,
    ) -> Block:
        key = (UNKNOWN_KEY, block, fmt, slot)
        shared = self.param_cache.get(key, stamp, self.state.now_ms())
        if shared is None:
            shared = self.fallback_block(UNKNOWN_USER, block, fmt, variant, params)
            self.param_cache.put(key, stamp, shared)
        return shared

    def _param_input(
        self, profile: Profile, block: str, fmt: str, variant: str, params: BlockParams
    ) -> BlockInput:
        churn: float | None = None
        candidates: list[str] = []
        models: dict[str, str] = {}
        if consent.block_allowed(profile, fmt, self.policy.consent_default):
            scores = self.scores(profile)  # not scored (nor A/B assigned) for the fallback
            churn, candidates, models = scores.churn, scores.recommendations, scores.models
            chosen = self.models.for_user(profile.user_id)
            if block in CONTEXT_BLOCKS:
                candidates = self.similar_ids(params, chosen)
                models = {"recs": chosen.versions()["recs"]}
            elif _recommend_again(params):
                candidates = self._recommend(profile, params, chosen)
        return BlockInput(
            block=block,
            fmt=fmt,
            user_id=profile.user_id,
            profile=profile,
            churn=churn,
            recommendations=candidates,
            models=models,
            popular=self.popular(),
            variant=variant,
            params=params,
            rules=self._rules(block),
        )

    def _recommend(self, profile: Profile, params: BlockParams, models: ModelSet) -> list[str]:
        """Recommendations for a parameter set: only items that pass its filters, and with a
        `context_item` that item as the newest history item (recency weight 1, the user's own
        items from the model's decay down); never the context item itself."""
        now = self.state.now_ms()
        recent = list(history_newest(profile))
        exclude = excluded_items(profile, now, self._repeat) | params.exclude
        context = params.context_item
        if context is not None:
            newest = recent[0][1] + 1 if recent else now
            recent.insert(0, (context, newest))
            exclude.add(context)
        k = max(TOP_RECOMMENDATIONS, params.n or 0)
        return models.recs.recommend(recent, exclude, k, self._passes(params))

    def _passes(self, params: BlockParams) -> Callable[[str], bool]:
        """Whether an item is in the catalog, purchasable and passes `params`' filters."""

        def passes(item_id: str) -> bool:
            product = self.state.product(item_id)
            return product is not None and product.purchasable and params.matches(product)

        return passes

    def similar_ids(self, params: BlockParams, models: ModelSet | None = None) -> list[str]:
        """Items like `params.context_item`, best first (models.similar.similar_items): its
        co-occurrence neighbours in the recs model (`models`, else the active one), content
        neighbours (the state's `content_index`, where it has one) for an item the model has not
        seen; only purchasable items that pass the filters, never the item itself."""
        item = params.context_item
        if item is None:
            return []
        recs = (models or self.models).recs
        index = getattr(self.state, "content_index", None)
        n = params.n or self.policy.items
        return similar_items(item, n, recs, index, self._passes(params), params.exclude)

    def similar_block(
        self, item_id: str, fmt: str, params: BlockParams = NO_PARAMS
    ) -> Block | None:
        """`GET /v1/items/{item_id}/similar`: the `similar_items` block of a catalog item for no
        user in particular (`user_id` ""), cached per item, format and parameter set; None for
        an item not in the catalog."""
        if self.state.product(item_id) is None:
            return None
        params = replace(params, context_item=item_id)
        stamp = self._base_stamp()
        key = (ITEM_KEY, "similar_items", fmt, params.key)
        cached = self.param_cache.get(key, stamp, self.state.now_ms())
        if cached is None:
            cached = self._similar_render(fmt, params)
            self.param_cache.put(key, stamp, cached)
        return cached

    def _similar_render(self, fmt: str, params: BlockParams) -> Block:
        models = self.models  # one reference: swaps are atomic
        inp = BlockInput(
            block="similar_items",
            fmt=fmt,
            user_id="",
            profile=None,
            churn=None,
            recommendations=self.similar_ids(params, models),
            models={"recs": models.versions()["recs"]},
            popular=self.popular(),
            params=params,
            rules=self._rules("similar_items"),
        )
        items, fallback, reason = decide_similar(inp, self.state.product, self.policy)
        return self.renderer.render(inp, items, fallback, reason, self.state.product, self.policy)

    def profile_view(self, user_id: str) -> dict[str, Any] | None:
        profile = self.state.profile(user_id)
        if profile is None:
            return None
        scores = self.scores(profile) if self.personal(profile) else None
        return {
            "user_id": profile.user_id,
            "events": dict(profile.counts),
            "cart": dict(profile.cart),
            "recent_items": profile.recent_items,
            "consent": consent.current(profile, self.policy.consent_default),
            # without personalization consent: nothing derived from the profile (the fields stay)
            "personalized": scores is not None,
            "scores": {"churn": round(scores.churn, 6) if scores else None},
            "recommendations": scores.recommendations[:20] if scores else [],
            "models": scores.models if scores else {},
            "first_seen": profile.first_seen,
            "last_seen": profile.last_seen,
            "sessions": profile.sessions,
            "orders": profile.orders,
            "monetary": profile.monetary,
            "affinities": {
                "categories": _top(profile.categories) if scores else {},
                "brands": _top(profile.brands) if scores else {},
            },
            "version": profile.version,
        }


def incarnation(profile: Profile) -> tuple[int, int, int]:
    """What names one state of a profile in a stamp: its version (events applied) alone does not,
    as an erased user who comes back counts from 0 again (and the process that cached the old
    profile's blocks may never be told of the erasure: a reader, or the worker when a reader took
    the DELETE); with the first and last event times, the new profile's stamp differs."""
    return (profile.version, profile.first_seen, profile.last_seen)


def _recommend_again(params: BlockParams) -> bool:
    """Whether a parameter set needs recommendations of its own (the memoized top
    TOP_RECOMMENDATIONS were made without its filters, exclusions and context item)."""
    more = params.n is not None and params.n > TOP_RECOMMENDATIONS
    return more or params.filtered or bool(params.exclude) or params.context_item is not None


def _only_the_hour_moved(old: Any, new: tuple[Any, ...]) -> bool:
    """Whether two block stamps (`_stamp`: `incarnation`, `_base_stamp()`) differ at most in
    the hour of the event-time clock."""
    if not (isinstance(old, tuple) and len(old) == 2 and old[0] == new[0]):
        return False
    before, after = old[1], new[1]
    return before[:HOUR_AT] == after[:HOUR_AT] and before[HOUR_AT + 1 :] == after[HOUR_AT + 1 :]


def _top(scores: dict[str, float], n: int = 10) -> dict[str, float]:
    return dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n])
