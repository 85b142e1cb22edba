"""A/B tests and shadow runs between two versions of one model, and their report.

Users are split deterministically: a user is in variant B when the first 8 bytes of
SHA-256(experiment name, NUL, user id) read as a fraction fall below `share`. In `ab` mode variant B
is scored with the candidate; in `shadow` mode everyone sees the active model (A) and the candidate
is scored beside it for comparison only.

The report joins exposures (what was shown to whom, when) with later events: a user converts when
they purchase after their first exposure; a recommendation hit is a later product view or purchase
of an item that was recommended to them (for shadow exposures: of an item the candidate would have
recommended). Each user counts once, in the arm of their first exposure, and a hit counts only
from the time the item was first shown to them. The difference B - A comes with a 95% interval:
Newcombe's hybrid score interval for two independent proportions (`ab`; sound on small counts
and at 0% or 100%, where the Wald interval collapses to a point), a paired (McNemar) Wald
interval in `shadow` mode, where both arms are the same users. Given the configured share, the
report checks the users per arm against it (a chi-square sample-ratio-mismatch test, flagged
below p = 0.001: then the split itself is broken and no difference can be trusted).
"""

from __future__ import annotations

import difflib
import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.content_experiments import NAME_RULE, valid_name
from engine.events import Event
from engine.profile import is_reversal

MODES = ("ab", "shadow")
Z95 = 1.959963984540054
SRM_ALPHA = 0.001  # a sample ratio mismatch is flagged below this p-value


@dataclass(frozen=True)
class Experiment:
    name: str
    model: str  # "churn" or "recs"
    control: str  # version shown to variant A (the active one when the experiment started)
    candidate: str  # version under test
    mode: str = "ab"
    share: float = 0.5
    started: str = ""
    # a record an earlier version wrote, whose name that version allowed (a space, say): loaded as
    # it is, so an upgrade does not end a running experiment; new experiments follow NAME_RULE
    legacy_name: bool = field(default=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (valid_name(self.name) or (self.legacy_name and self.name.strip())):
            raise ValueError(f"an experiment's name is {NAME_RULE}, not {str(self.name)[:80]!r}")
        if not isinstance(self.candidate, str) or not self.candidate:
            raise ValueError("the candidate is the version string under test")
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
        name = str(data["name"])
        return cls(
            name=name,
            legacy_name=not valid_name(name),
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
    """B - A of two independent proportions with Newcombe's (1998, method 10) hybrid score 95%
    interval, built from each arm's Wilson interval: it stays inside [-1, 1] and does not
    shrink to a point when an arm has 0% or 100% (the Wald interval did: 0/10 against 0/10
    was [0, 0])."""
    if not n_a or not n_b:
        return {"difference": None, "ci95": None}
    pa, pb = x_a / n_a, x_b / n_b
    la, ua = wilson(x_a, n_a)
    lb, ub = wilson(x_b, n_b)
    d = pb - pa
    low = d - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)
    high = d + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)
    return {"difference": round(d, 6), "ci95": [round(low, 6), round(high, 6)]}


def wilson(x: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of the proportion x / n (n > 0)."""
    p, z2 = x / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(only_a: int, only_b: int, n: int) -> dict[str, Any]:
    """B - A of two proportions measured on the same n users (only_a: users with the outcome
    in A and not in B; only_b: the reverse), with a 95% Wald interval on the paired (McNemar)
    variance ((b + c) / n - d^2) / n."""
    if not n:
        return {"difference": None, "ci95": None}
    d = (only_b - only_a) / n
    se = math.sqrt(max(0.0, (only_a + only_b) / n - d * d) / n)
    return {"difference": round(d, 6), "ci95": [round(d - Z95 * se, 6), round(d + Z95 * se, 6)]}


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X chi-square with df degrees of freedom (df >= 1), in closed form: the
    regularized upper incomplete gamma function Q(df / 2, x / 2) at integer and half-integer
    orders."""
    if x <= 0:
        return 1.0
    y = x / 2
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for i in range(1, df // 2):
            term *= y / i
            total += term
        return min(1.0, math.exp(-y) * total)
    total = 0.0
    term = math.sqrt(y) / math.gamma(1.5)
    for j in range(1, (df - 1) // 2 + 1):
        total += term
        term *= y / (j + 0.5)
    return min(1.0, math.erfc(math.sqrt(y)) + math.exp(-y) * total)


def sample_ratio(observed: dict[str, int], expected: dict[str, float]) -> dict[str, Any]:
    """Pearson's chi-square goodness-of-fit test of the users per arm against the configured
    shares (`expected`, summing to 1); `mismatch` below p = SRM_ALPHA."""
    n = sum(observed.get(arm, 0) for arm in expected)
    out: dict[str, Any] = {
        "expected": dict(expected),
        "observed": {a: observed.get(a, 0) for a in expected},
    }
    if not n or len(expected) < 2:
        return out | {"chi2": None, "df": None, "p_value": None, "mismatch": None}
    chi2 = sum(
        (observed.get(arm, 0) - n * share) ** 2 / (n * share) for arm, share in expected.items()
    )
    p = chi2_sf(chi2, len(expected) - 1)
    return out | {
        "chi2": round(chi2, 6),
        "df": len(expected) - 1,
        "p_value": float(f"{p:.6g}"),
        "mismatch": p < SRM_ALPHA,
    }


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


def exposures_of(result: dict[str, Any]) -> int:
    """The exposures a report of `report` counts, over both arms."""
    return sum(int(arm["exposures"]) for arm in result["variants"].values())


def unknown_experiment(name: str, known: Iterable[str], shown: int = 20) -> str:
    """What a report of `name` says when no experiment of that name was started and no exposure
    is logged for it (a typo, most likely): the experiments there are (the first `shown`, names
    as the registry holds them), and the closest name when one is close."""
    names = sorted({str(k) for k in known})
    said = f"no experiment {name[:64]!r} was started and no exposure is logged for it"
    if not names:
        return f"{said}; no experiment was started"
    listed = ", ".join(repr(n[:64]) for n in names[:shown])
    more = f" (the first {shown} of {len(names)} experiments)" if len(names) > shown else ""
    close = difflib.get_close_matches(name[:64], names, n=1, cutoff=0.6)
    meant = f"; did you mean {close[0]!r}?" if close else ""
    return f"{said}; experiments: {listed}{more}{meant}"


def report(
    experiment: str,
    exposures: Iterable[dict[str, Any]],
    events: Iterable[Event],
    share: float | None = None,
) -> dict[str, Any]:
    """Per-variant exposures, conversions and recommendation hits of one experiment; `share`
    (variant B's configured fraction), when known, adds the sample-ratio-mismatch check.

    An exposure is `{"experiment", "variant", "user_id", "ts", "items", "shadow_items"?}`."""
    ours = [
        exp
        for exp in exposures
        if exp.get("experiment") == experiment
        and exp.get("kind") != "content"  # a content experiment's (models/content_report.py)
        and str(exp["variant"]) in ("A", "B")
    ]
    mode = "shadow" if any(exp.get("mode") == "shadow" for exp in ours) else "ab"
    first: dict[str, tuple[int, str]] = {}
    for exp in ours:
        user, ts = str(exp["user_id"]), int(exp["ts"])
        if user not in first or ts < first[user][0]:
            first[user] = (ts, str(exp["variant"]))
    # (arm, user) -> item -> when it was first shown to the user in that arm
    shown: dict[tuple[str, str], dict[str, int]] = {}
    arms: dict[str, _Arm] = {"A": _Arm(), "B": _Arm()}
    for exp in ours:
        user, ts = str(exp["user_id"]), int(exp["ts"])
        # shadow: everyone saw A; B is what the candidate would have shown to the same user.
        # ab: a user counts in the arm of their first exposure (a later one in the other arm,
        # after a restart with another share, would put them in both arms' denominators)
        sides = (
            (("A", "items"), ("B", "shadow_items"))
            if mode == "shadow"
            else ((first[user][1], "items"),)
        )
        for side, key in sides:
            arms[side].users.add(user)
            arms[side].exposures += 1
            seen = shown.setdefault((side, user), {})
            for item in exp.get(key) or ():
                if item not in seen or ts < seen[item]:
                    seen[item] = ts
    for event in events:
        start = first.get(event.user_id)
        if start is None or event.ts < start[0] or is_reversal(event):
            continue  # a cancellation or return is no conversion
        for arm_name in ("A", "B") if mode == "shadow" else (start[1],):
            arm = arms[arm_name]
            if event.type == "purchase":
                arm.converted.add(event.user_id)
            if event.type in ("purchase", "product_view", "add_to_cart") and event.item_id:
                since = shown.get((arm_name, event.user_id), {}).get(event.item_id)
                if since is not None and event.ts >= since:  # seen after it was shown
                    arm.hit.add(event.user_id)
    a, b = arms["A"], arms["B"]
    if mode == "shadow":
        n = len(a.users | b.users)
        conversion = paired_difference(
            len(a.converted - b.converted), len(b.converted - a.converted), n
        )
        hits = paired_difference(len(a.hit - b.hit), len(b.hit - a.hit), n)
        srm = None  # everyone is in both arms
    else:
        conversion = difference(len(a.converted), len(a.users), len(b.converted), len(b.users))
        hits = difference(len(a.hit), len(a.users), len(b.hit), len(b.users))
        srm = (
            None
            if share is None
            else sample_ratio({"A": len(a.users), "B": len(b.users)}, {"A": 1 - share, "B": share})
        )
    return {
        "experiment": experiment,
        "mode": mode,
        "variants": {"A": a.summary(), "B": b.summary()},
        "conversion": conversion,
        "recommendation_hits": hits,
        "sample_ratio": srm,
        "note": "shadow: conversions are the same users' (nothing differed); compare hits, B - A "
        "with a 95% paired (McNemar) interval"
        if mode == "shadow"
        else "B - A with a 95% Newcombe hybrid score interval; sample_ratio checks users per arm "
        "against the share (mismatch: p < 0.001, the split is broken)",
    }
