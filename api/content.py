"""Content: profiles, scores and blocks for one user, assembled from the state and the models.

Blocks are cached per user, block, format and variant under a stamp of everything they depend on
(profile version, catalog generation, model versions, the hour of the event-time clock); a request
renders only when that stamp changed, so the hot path is a dictionary lookup.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from engine.blocks import (
    Block,
    BlockCache,
    BlockInput,
    BlockPolicy,
    Renderer,
    UnknownBlock,
    assemble,
)
from engine.catalog import Product
from engine.events import Event
from engine.profile import Profile
from models.registry import ModelSet
from models.scoring import Scores, score_profile

HOUR_MS = 3_600_000
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
        self.policy = policy
        self.cache = cache or BlockCache()
        self._scores: dict[str, tuple[tuple[Any, ...], Scores]] = {}
        self.errors = 0  # blocks answered with the fallback because the state or a model failed

    def _allowed(self, item_id: str) -> bool:
        product = self.state.product(item_id)
        return product is not None and product.purchasable

    def _base_stamp(self) -> tuple[Any, ...]:
        """What every user's blocks depend on besides their profile: catalog generation, model
        versions, the hour of the event-time clock, the best-seller list's length."""
        return (
            self.state.catalog_generation,
            self.models.stamp(),
            self.state.now_ms() // HOUR_MS,
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
        models = self.models.for_user(profile.user_id)  # one reference: swaps are atomic
        scores = score_profile(profile, self.state.now_ms(), models, self._allowed)
        if len(self._scores) > 200_000:
            self._scores.clear()
        self._scores[profile.user_id] = (stamp, scores)
        return scores

    def forget(self, user_id: str) -> None:
        """Drop everything cached about a user (after an erasure)."""
        self.cache.invalidate_user(user_id)
        self._scores.pop(user_id, None)

    def popular(self) -> list[str]:
        live = self.state.popular()
        if len(live) >= self.policy.items * 2:
            return live
        return live + [i for i in self.models.recs.popular if i not in set(live)]

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
        stamp = self._stamp(profile, base)
        key = (user_id, block, fmt, variant)
        cached = self.cache.get(key, stamp)
        if cached is not None:
            return cached
        if profile is not None:
            scores = self.scores(profile)
            churn: float | None = scores.churn
            recs = scores.recommendations
            models = scores.models
        else:
            churn, recs, models = None, [], self.models.versions()
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
        result = assemble(inp, self.state.product, self.policy, self.renderer)
        self.cache.put(key, stamp, result)
        return result

    def profile_view(self, user_id: str) -> dict[str, Any] | None:
        profile = self.state.profile(user_id)
        if profile is None:
            return None
        scores = self.scores(profile)
        default = self.policy.consent_default
        return {
            "user_id": profile.user_id,
            "events": dict(profile.counts),
            "cart": dict(profile.cart),
            "recent_items": profile.recent_items,
            "consent": {
                purpose: profile.consents_to(purpose, default)
                for purpose in ("personalization", "email", "ads")
            },
            "scores": {"churn": round(scores.churn, 6)},
            "recommendations": scores.recommendations[:20],
            "models": scores.models,
            "first_seen": profile.first_seen,
            "last_seen": profile.last_seen,
            "sessions": profile.sessions,
            "orders": profile.orders,
            "monetary": profile.monetary,
            "affinities": {
                "categories": _top(profile.categories),
                "brands": _top(profile.brands),
            },
            "version": profile.version,
        }


def _top(scores: dict[str, float], n: int = 10) -> dict[str, float]:
    return dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:n])
