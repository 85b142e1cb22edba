"""Content: profiles, scores and blocks for one user, assembled from the state and the models.

Blocks are cached per user, block, format and variant under a stamp of everything they depend on
(profile version, catalog generation, model versions, the hour of the event-time clock); a request
renders only when that stamp changed, so the hot path is a dictionary lookup.

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
from typing import Any, Protocol

from engine import consent
from engine.blocks import (
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
    decide,
    for_unknown_user,
)
from engine.catalog import Product
from engine.events import Event
from engine.memo import SizedMemo
from engine.profile import Profile
from models.registry import ModelSet
from models.scoring import Scores, excluded_items, score_profile

HOUR_MS = 3_600_000
SCORES_MEMO = 200_000  # users whose scores are memoized
SCORES_MEMO_BYTES = 64 * 1024 * 1024  # accounted: ITEM_BYTES per item id it holds, plus its key
ITEM_BYTES = 100  # an item id in a memoized list or set (<= 128 characters, mostly shared)
HOUR_AT = 2  # the hour's place in `_base_stamp()`
log = logging.getLogger("persona.content")


class StateView(Protocol):
    """What the API needs from the stream state (the Faust tables, or a fake in tests)."""

    @property
    def catalog_generation(self) -> int: ...

    def profile(self, user_id: str) -> Profile | None: ...

    def product(self, item_id: str) -> Product | None: ...

    def popular(self) -> list[str]: ...

    def now_ms(self) -> int: ...

    def ready(self) -> tuple[bool, str]: ...

    def owner_url(self, user_id: str) -> str | None: ...

    async def produce(self, events: list[Event]) -> None: ...

    async def erase(self, user_id: str) -> None: ...


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
        self.cache = cache or BlockCache()
        # user -> (stamp, scores, what the recommendations were made from)
        self._scores: SizedMemo[str, tuple[tuple[Any, ...], Scores, tuple[Any, ...]]] = SizedMemo(
            SCORES_MEMO, SCORES_MEMO_BYTES
        )
        self.errors = 0  # blocks answered with the fallback because the state or a model failed
        self.reused = 0  # stale blocks kept because only the hour moved and the decision stood

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
        )

    def _stamp(
        self, profile: Profile | None, base: tuple[Any, ...] | None = None
    ) -> tuple[Any, ...]:
        return (profile.version if profile else -1, base or self._base_stamp())

    def scores(self, profile: Profile) -> Scores:
        stamp = self._stamp(profile)
        hit = self._scores.get(profile.user_id)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        # one reference: swaps are atomic; the A/B variant only with personalization consent
        models = self.models.for_user(profile.user_id) if self.personal(profile) else self.models
        now = self.state.now_ms()
        made_from = (
            profile.version,
            self.state.catalog_generation,
            models.stamp(),
            frozenset(excluded_items(profile, now)),
        )
        recommendations = None
        if hit is not None and hit[2] == made_from:  # only the clock moved, not past a purchase
            recommendations = hit[1].recommendations
        content = getattr(self.state, "content_index", None)  # engine.similarity (issue 17)
        scores = score_profile(profile, now, models, self._allowed, recommendations, content)
        items = len(scores.recommendations) + len(made_from[3])
        size = sys.getsizeof(profile.user_id) + ITEM_BYTES * items
        self._scores.put(profile.user_id, (stamp, scores, made_from), size)
        return scores

    def personal(self, profile: Profile) -> bool:
        """Whether outputs derived from this profile may be shown (engine.consent.personal)."""
        return consent.personal(profile, self.policy.consent_default)

    def forget(self, user_id: str) -> None:
        """Drop everything cached about a user (after an erasure)."""
        self.cache.invalidate_user(user_id)
        self._scores.pop(user_id)

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
    ) -> Block:
        """The user's block, personalized or the fallback; never raises for a known block and
        format (a failing state read or model answers the fallback, logged and counted).
        `base` is a `_base_stamp()` the caller took once for many users (a batch)."""
        try:
            return self._block(user_id, block, fmt, variant, base)
        except UnknownBlock:
            raise
        except Exception:
            self.errors += 1
            log.exception("block %s/%s failed for a user; serving the fallback", block, fmt)
            return self.fallback_block(user_id, block, fmt, variant)

    def fallback_block(self, user_id: str, block: str, fmt: str, variant: str = "default") -> Block:
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
        )
        return assemble(inp, self.state.product, self.policy, self.renderer)

    def blocks(self, user_ids: list[str], block: str, fmt: str) -> list[Block]:
        """One block per user (send-time batches): the stamp's shared part is taken once."""
        base = self._base_stamp()
        return [self.block(uid, block, fmt, "default", base) for uid in user_ids]

    def _block(
        self, user_id: str, block: str, fmt: str, variant: str, base: tuple[Any, ...] | None
    ) -> Block:
        profile = self.state.profile(user_id)
        if profile is None:
            return self._unknown(user_id, block, fmt, variant, base)
        stamp = self._stamp(profile, base)
        key = (user_id, block, fmt, variant)
        cached, stale = self.cache.get_or_stale(key, stamp)
        if cached is not None:
            return cached
        churn: float | None = None
        recs: list[str] = []
        models: dict[str, str] = {}
        if consent.block_allowed(profile, fmt, self.policy.consent_default):
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
        )
        if stale is not None and _only_the_hour_moved(stale[0], stamp):
            items, fallback, reason = decide(inp, self.state.product, self.policy)
            old = stale[1]
            if (
                old.items == tuple(p.item_id for p in items)
                and old.fallback == fallback
                and old.reason == reason
                and old.models == block_models(inp, fallback)
                and not any(p.sale_price is not None for p in items)  # a sale may start or end
            ):
                result = old
                self.reused += 1
            else:
                result = self.renderer.render(
                    inp, items, fallback, reason, self.state.product, self.policy
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
        stamp = self._stamp(None, base)
        key = (UNKNOWN_KEY, block, fmt, variant)
        shared = self.cache.get(key, stamp)
        if shared is None:
            shared = self.fallback_block(UNKNOWN_USER, block, fmt, variant)
            self.cache.put(key, stamp, shared)
        mine = for_unknown_user(shared, user_id)
        return mine if mine is not None else self.fallback_block(user_id, block, fmt, variant)

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


def _only_the_hour_moved(old: Any, new: tuple[Any, ...]) -> bool:
    """Whether two block stamps (`_stamp`: profile version, `_base_stamp()`) differ at most in
    the hour of the event-time clock."""
    if not (isinstance(old, tuple) and len(old) == 2 and old[0] == new[0]):
        return False
    before, after = old[1], new[1]
    return before[:HOUR_AT] == after[:HOUR_AT] and before[HOUR_AT + 1 :] == after[HOUR_AT + 1 :]


def _top(scores: dict[str, float], n: int = 10) -> dict[str, float]:
    return dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n])
