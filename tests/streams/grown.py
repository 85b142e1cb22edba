"""Profiles grown by real folds, for the tests that weigh decoded profiles against what their
caches account (the worker's profile cache, the reader's profile memo)."""

from __future__ import annotations

from engine.events import validate
from engine.profile import Profile, apply, new_profile


def grown(user: str, events: int) -> Profile:
    """A profile of `events` views, carts and purchases of up to 97 items, in two categories."""
    profile = new_profile(user)
    for n in range(events):
        event = validate(
            {
                "event_id": f"{user}-{n}",
                "user_id": user,
                "type": ("product_view", "add_to_cart", "purchase")[n % 3],
                "item_id": f"p{n % 97}",
                "ts": 1_700_000_000_000 + n * 60_000,
                "quantity": 1,
                "price": 9.5,
                "currency": "GBP",
                "props": {"category": f"c{n % 2}"},
            }
        )
        profile = apply(profile, event)
    return profile
