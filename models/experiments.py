"""A/B tests and shadow runs between two versions of one model, and their report.

Users are split deterministically: a user is in variant B when the first 8 bytes of
SHA-256(experiment name, NUL, user id) read as a fraction fall below `share`. In `ab` mode variant B
is scored with the candidate; in `shadow` mode everyone sees the active model (A) and the candidate
is scored beside it for comparison only.

The report joins exposures (what was shown to whom, when) with later events: a user converts when
they purchase after their first exposure; a recommendation hit is a later product view or purchase
of an item that was recommended to them (for shadow exposures: of an item the candidate would have
recommended). The difference B - A comes with a 95% normal-approximation confidence interval.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.events import Event
from engine.profile import is_reversal

MODES = ("ab", "shadow")
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Experiment:
    name: str
    model: str  # "churn" or "recs"
    control: str  # version shown to variant A (the active one when the experiment started)
    candidate: str  # version under test
    mode: str = "ab"
    share: float = 0.5
    started: str = ""

    def __post_init__(self) -> None:
        if self.model not in ("churn", "recs"):
            raise ValueError("an experiment compares two churn or two recs versions")
        if self.mode not in MODES:
            raise ValueError(f"mode is one of {', '.join(MODES)}")
        if not 0.0 < self.share < 1.0:
            raise ValueError("share (the fraction of users in variant B) is between 0 and 1")

    def variant(self, user_id: str) -> str:
        return assign(user_id, self.name, self.share)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "control": self.control,
            "candidate": self.candidate,
            "mode": self.mode,
            "share": self.share,
            "started": self.started,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        return cls(
            name=str(data["name"]),
            model=str(data["model"]),
            control=str(data["control"]),
            candidate=str(data["candidate"]),
            mode=str(data.get("mode", "ab")),
            share=float(data.get("share", 0.5)),
            started=str(data.get("started", "")),
        )


def assign(user_id: str, experiment: str, share: float = 0.5) -> str:
    """'A' or 'B' for this user in this experiment; the same answer on every worker, every time."""
    digest = hashlib.sha256(f"{experiment}\0{user_id}".encode()).digest()
    return "B" if int.from_bytes(digest[:8], "big") / 2**64 < share else "A"


@dataclass
class _Arm:
    users: set[str] = field(default_factory=set)
    exposures: int = 0
    converted: set[str] = field(default_factory=set)
    hit: set[str] = field(default_factory=set)

    def summary(self) -> dict[str, Any]:
        n = len(self.users)
        return {
            "users": n,
            "exposures": self.exposures,
            "conversions": len(self.converted),
            "conversion_rate": round(len(self.converted) / n, 6) if n else None,
            "recommendation_hits": len(self.hit),
            "hit_rate": round(len(self.hit) / n, 6) if n else None,
        }


def difference(x_a: int, n_a: int, x_b: int, n_b: int) -> dict[str, Any]:
    """B - A of two proportions with a 95% (Wald) confidence interval."""
    if not n_a or not n_b:
        return {"difference": None, "ci95": None}
    pa, pb = x_a / n_a, x_b / n_b
    se = math.sqrt(pa * (1 - pa) / n_a + pb * (1 - pb) / n_b)
    d = pb - pa
    return {"difference": round(d, 6), "ci95": [round(d - Z95 * se, 6), round(d + Z95 * se, 6)]}


_EXPOSURE_TEXT = ("experiment", "variant", "user_id")
_EXPOSURE_OPTIONAL_TEXT = ("kind", "mode")
_EXPOSURE_ITEMS = ("items", "shadow_items")


def exposure_of(record: Any) -> dict[str, Any] | None:
    """A record of the `exposures` topic as the reports read it (this one's and
    models.content_report's), or None when it is not one: `experiment`, `variant` and `user_id`
    text, `ts` integer epoch milliseconds, `kind` and `mode` text when present, `items` and
    `shadow_items` lists of text when present. Any producer can write the topic, and the
    reports read every record of it: one record of another shape failed them (a KeyError, an
    int() of a string or of infinity)."""
    if not isinstance(record, dict):
        return None
    if not all(isinstance(record.get(name), str) for name in _EXPOSURE_TEXT):
        return None
    ts = record.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int) or abs(ts) > 2**53:
        return None
    for name in _EXPOSURE_OPTIONAL_TEXT:
        if record.get(name) is not None and not isinstance(record[name], str):
            return None
    for name in _EXPOSURE_ITEMS:
        items = record.get(name)
        if items is not None and not (
            isinstance(items, list) and all(isinstance(i, str) for i in items)
        ):
            return None
    return record


def report(
    experiment: str, exposures: Iterable[dict[str, Any]], events: Iterable[Event]
) -> dict[str, Any]:
    """Per-variant exposures, conversions and recommendation hits of one experiment.

    An exposure is `{"experiment", "variant", "user_id", "ts", "items", "shadow_items"?}`."""
    first: dict[str, tuple[int, str]] = {}
    shown: dict[tuple[str, str], set[str]] = {}
    arms: dict[str, _Arm] = {"A": _Arm(), "B": _Arm()}
    mode = "ab"
    for exp in exposures:
        if exp.get("experiment") != experiment or exp.get("kind") == "content":
            continue  # a content experiment's exposures (models/content_report.py) are not ours
        user, variant, ts = str(exp["user_id"]), str(exp["variant"]), int(exp["ts"])
        if variant not in arms:
            continue
        if exp.get("mode") == "shadow":
            mode = "shadow"
        if user not in first or ts < first[user][0]:
            first[user] = (ts, variant)
        if mode == "shadow":
            # everyone saw A; B is what the candidate would have shown to the same user
            for side, key in (("A", "items"), ("B", "shadow_items")):
                arms[side].users.add(user)
                arms[side].exposures += 1
                shown.setdefault((side, user), set()).update(exp.get(key) or ())
        else:
            arms[variant].users.add(user)
            arms[variant].exposures += 1
            shown.setdefault((variant, user), set()).update(exp.get("items") or ())
    for event in events:
        start = first.get(event.user_id)
        if start is None or event.ts < start[0] or is_reversal(event):
            continue  # a cancellation or return is no conversion
        for arm_name in ("A", "B") if mode == "shadow" else (start[1],):
            arm = arms[arm_name]
            if event.type == "purchase":
                arm.converted.add(event.user_id)
            if (
                event.type in ("purchase", "product_view", "add_to_cart")
                and event.item_id
                and event.item_id in shown.get((arm_name, event.user_id), ())
            ):
                arm.hit.add(event.user_id)
    a, b = arms["A"], arms["B"]
    return {
        "experiment": experiment,
        "mode": mode,
        "variants": {"A": a.summary(), "B": b.summary()},
        "conversion": difference(len(a.converted), len(a.users), len(b.converted), len(b.users)),
        "recommendation_hits": difference(len(a.hit), len(a.users), len(b.hit), len(b.users)),
        "note": "shadow: conversions are the same users' (nothing differed); compare hits"
        if mode == "shadow"
        else "B - A with a 95% normal-approximation interval",
    }
