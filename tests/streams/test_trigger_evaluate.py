"""The trigger runner's per-batch evaluation (streams/triggers.py `evaluate`) with a churn scorer:
the rows it scores, churn crossings with and without consent, and which touched entries it
rewrites. Consent withdrawals and abandoned carts: test_consent_withdrawal.py; the whole pipeline:
test_triggers.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import numpy as np

from engine.clock import ManualClock
from engine.consent import EMAIL_TRIGGER, TRIGGER_PURPOSES
from engine.events import validate
from engine.features import features
from engine.profile import Profile, apply
from engine.triggers import ABANDONED_CART, CHURN_RISK
from streams.triggers import TriggerPorts, TriggerRunner

T0 = 1_300_000_000_000
MIN = 60_000


def _event(user: str, n: int, kind: str, ts: int, **extra: Any) -> Any:
    return validate({"event_id": f"{user}-{n}", "type": kind, "user_id": user, "ts": ts, **extra})


class Hooks:
    def __init__(self) -> None:
        self.cancelled: list[tuple[str, list[bool]]] = []

    def cancel(self, user_id: str, keep: Any) -> int:
        kinds = [ABANDONED_CART, CHURN_RISK, "consent_withdrawn"]
        self.cancelled.append((user_id, [keep(kind) for kind in kinds]))
        return 0


def test_both_triggers_need_the_purposes_whose_lack_takes_webhooks_back() -> None:
    # evaluate checks consent once per user for all three questions: this is why it may
    assert TRIGGER_PURPOSES[ABANDONED_CART] == TRIGGER_PURPOSES[CHURN_RISK] == EMAIL_TRIGGER


def test_churn_crossings_consent_and_the_rewritten_entries() -> None:
    now = T0 + 30 * MIN
    scores = {"newcomer": 0.9, "crosses": 0.9, "withdrawn": 0.9, "calm": 0.1, "cart": 0.1}
    seen: list[np.ndarray] = []

    def score_batch(matrix: np.ndarray) -> np.ndarray:
        seen.append(matrix.copy())
        return np.array([scores[user] for user in order])

    profiles = {u: apply(None, _event(u, 1, "product_view", T0, item_id="lamp")) for u in scores}
    profiles["cart"] = apply(profiles["cart"], _event("cart", 2, "add_to_cart", T0, item_id="a"))
    profiles["withdrawn"] = apply(
        profiles["withdrawn"], _event("withdrawn", 2, "consent", T0, props={"email": False})
    )
    for user in ("crosses", "withdrawn", "calm", "cart"):
        profiles[user].fired[CHURN_RISK] = 0  # scored before, below the threshold
    order = list(scores)
    hooks = Hooks()
    settings = SimpleNamespace(
        abandoned_cart_minutes=60,
        trigger_max_age_hours=0,  # 2010-11 event times: no bound on their age
        abandoned_cart_pending_max=200_000,
        churn_threshold=0.5,
        consent_granted_by_default=True,
    )
    never: Any = None
    runner = TriggerRunner(
        TriggerPorts(
            clock=ManualClock(now),
            settings=cast(Any, settings),
            local_partitions=never,
            local_rows=never,
            send=never,
            send_command=never,
            scorer=lambda: cast(
                Any, SimpleNamespace(churn=SimpleNamespace(score_batch=score_batch))
            ),
            webhooks=lambda: cast(Any, hooks),
            ready=never,
        )
    )
    entries = {u.encode(): (profiles[u], cast(Any, u), False) for u in order}
    touched = {**entries, b"erased": (None, cast(Any, "erased"), True)}
    fired = runner.evaluate(cast(Any, touched))

    (matrix,) = seen  # one call for the batch, a row per live profile, in the batch's order
    want = np.array([features(profiles[u], now) for u in order], dtype=np.float64)
    assert matrix.shape == want.shape and matrix.tobytes() == want.tobytes()
    assert [(t.trigger, t.user_id) for t in fired] == [(CHURN_RISK, "crosses")]
    after = {u.decode(): entry[0] for u, entry in touched.items()}
    for user in ("newcomer", "crosses", "withdrawn"):  # a marker recorded: rewritten, dirty
        profile = cast(Profile, after[user])
        assert profile is not profiles[user] and touched[user.encode()][1:] == (user, True)
    assert cast(Profile, after["newcomer"]).fired[CHURN_RISK] == now  # the baseline: no trigger
    assert cast(Profile, after["withdrawn"]).fired[CHURN_RISK] == now  # recorded, never sent
    for user in ("calm", "cart"):  # nothing changed: the same profile, still clean
        assert touched[user.encode()] == entries[user.encode()]
        assert touched[user.encode()][0] is profiles[user]
    assert touched[b"erased"] == (None, "erased", True)
    assert hooks.cancelled == [("withdrawn", [False, False, True])]
    assert runner._pending == {"cart": T0 + 60 * MIN}  # only a user with a cart is scheduled
