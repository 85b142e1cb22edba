"""Triggers in the stream: the adapter around the pure decisions of `engine.triggers`.

`evaluate` runs inside each event batch (in the users' partitions, before their profiles are
written, so a firing is stored with the state that caused it); timers schedule abandoned-cart
checks and sweep this worker's users as event time passes; catalog changes are broadcast to every
partition as a command. Emitted triggers go to the `triggers` topic and, optionally, to webhooks.

Consent (`engine.consent.trigger_allowed`): a trigger fires only for a user who consents to its
purposes (the e-mail triggers: personalization and email). A user without them has no
abandoned-cart check scheduled (a withdrawal cancels the pending one, and takes back their queued
webhooks); a churn crossing while withdrawn is recorded but never sent, later or otherwise; a
cart still abandoned when consent is given again is checked then (its delay has passed: at once).

The runner sees the worker only through `TriggerPorts` (its clock, settings, local profiles,
sends, scorer and webhooks), never the streams object: `streams.app` builds the ports.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, cast

import numpy as np

from engine.catalog import Product
from engine.clock import Clock, WallClock
from engine.consent import EMAIL_TRIGGER, allows, trigger_allowed
from engine.events import Event
from engine.features import FEATURE_NAMES, features
from engine.pacing import Pacer
from engine.profile import Profile
from engine.settings import Settings
from engine.triggers import (
    ABANDONED_CART,
    CHURN_RISK,
    Trigger,
    abandoned_cart,
    abandoned_cart_due,
    catalog_change,
    churn_risk,
    consent_withdrawn,
    item_change,
    item_triggers,
    stale,
    user_erased,
)
from models.registry import ModelSet
from streams.delivery import Carrier
from streams.keys import is_profile_key, user_key
from streams.webhooks import WebhookSender

# Profiles scored per step of the sweep; the stream runs between steps, so a step is a short stall.
SWEEP_CHUNK = 250

log = logging.getLogger("persona.triggers")

Touched = dict[bytes, tuple[Profile | None, Carrier, bool]]  # user -> (profile, event, dirty)
SWEEP_EVERY_MS = 3_600_000  # event time between sweeps of all local users
# A sweep reads every local profile (~1M unpacks at 1M users); while the worker catches up, an hour
# of event time passes every few seconds. After a sweep that took T seconds the next waits at least
# SWEEP_REST * T seconds: sweeps take at most 1 / (1 + SWEEP_REST) of the worker's time.
SWEEP_REST = 19.0
# Users whose abandoned-cart check a worker schedules in memory: PERSONA_ABANDONED_CART_PENDING_MAX
# (engine/settings.py, default 200,000). Beyond it the checks due last are shed (a flood of
# distinct users with carts must not grow the worker without bound); a sweep of the stored
# profiles schedules them again once the earliest of them is due, so none is lost.


# Sends trigger records: (user id key, message) each.
SendTriggers = Callable[[list[tuple[bytes, bytes]]], Awaitable[None]]


@dataclass(frozen=True)
class TriggerPorts:
    """What the trigger runner uses of the worker, and nothing more."""

    clock: Clock  # event time
    settings: Settings
    local_partitions: Callable[[], list[int]]  # the input partitions this worker folds
    local_rows: Callable[[int], Iterable[tuple[bytes, bytes]]]  # a profiles partition's rows
    send: SendTriggers
    send_command: Callable[[bytes, bytes, int | None], Awaitable[Any]]  # signed, to a partition
    scorer: Callable[[], ModelSet | None]  # the models in use (churn), if any
    webhooks: Callable[[], WebhookSender | None]
    ready: Callable[[], bool]  # the worker's state is recovered (the sweep waits for it)
    counts: dict[str, int] = field(default_factory=dict)  # triggers emitted, by name
    wall: Callable[[], float] = time.monotonic  # seconds, for pacing the sweeps
    wall_clock: Clock = field(default_factory=WallClock)  # the bound on a trigger's age
    stale: dict[str, int] = field(default_factory=dict)  # triggers recorded, not sent (too old)


class TriggerRunner:
    def __init__(self, ports: TriggerPorts) -> None:
        self.ports = ports
        self._pending: dict[str, int] = {}  # user -> event time their cart counts as abandoned
        # the schedule's bound (`_schedule`): PERSONA_ABANDONED_CART_PENDING_MAX, 1..10,000,000
        self._pending_max = max(1, ports.settings.abandoned_cart_pending_max)
        self._shed_due: int | None = None  # the earliest due time of a shed check, if any
        self._consent_default: bool = ports.settings.consent_granted_by_default
        self._cart_delay_ms = int(ports.settings.abandoned_cart_minutes * 60_000)
        self._sweep_every_ms = SWEEP_EVERY_MS
        self._last_sweep = 0
        self._pacer = Pacer(SWEEP_REST, ports.wall)
        # rounded up: a bound under a millisecond is 1 ms, not 0 (which `stale` reads as none)
        self._max_age_ms = math.ceil(ports.settings.trigger_max_age_hours * 3_600_000)

    def _fresh(self, trigger: Trigger, profile: Profile) -> bool:
        """Whether to send a trigger whose firing is recorded: not when what it is about is older
        than PERSONA_TRIGGER_MAX_AGE_HOURS against the wall clock (engine.triggers.stale: a
        replay of old events makes old carts due in event time); those are counted and logged."""
        if not stale(trigger, profile, self.ports.wall_clock.now_ms(), self._max_age_ms):
            return True
        counts = self.ports.stale
        counts[trigger.trigger] = n = counts.get(trigger.trigger, 0) + 1
        if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th ...: a replay does not flood the log
            log.info(
                "not sending %s for %s: what it is about is older than %g hours "
                "(PERSONA_TRIGGER_MAX_AGE_HOURS); %d not sent so far",
                trigger.trigger,
                trigger.user_id,
                self._max_age_ms / 3_600_000,
                n,
            )
        return False

    def forget(self, user_id: str) -> None:
        """Drop a user's schedule and queued webhooks (erasure, an id merged into a user)."""
        self._pending.pop(user_id, None)
        hooks = self.ports.webhooks()
        if hooks is not None:
            hooks.cancel(user_id)

    def erased(self, user_id: str, erased_ms: int) -> None:
        """An erasure: `forget` the user, then queue the `user_erased` notice for every webhook
        URL (engine.triggers.user_erased), signed like every trigger, so receivers delete the
        copies of the user's triggers they keep. It needs no consent (it is no use of the data)
        and goes to the webhooks only, never to the `triggers` topic (the tombstone's)."""
        self.forget(user_id)
        hooks = self.ports.webhooks()
        if hooks is not None:
            notice = user_erased(user_id, erased_ms)
            hooks.submit(json.dumps(notice.to_message()).encode(), user_id, notice.trigger)

    def _schedule(self, user: str, due: int) -> None:
        """Schedule the user's abandoned-cart check at `due`, within the bound (the setting
        PERSONA_ABANDONED_CART_PENDING_MAX): when over, the tenth of the schedule due last is
        shed (amortized O(log n) a call) and the earliest shed due time kept, at which a sweep
        schedules them again; until then a check due after it is shed at once."""
        pending = self._pending
        if self._shed_due is not None and due >= self._shed_due:
            pending.pop(user, None)  # due after a shed one: that one's sweep schedules it
            return
        pending[user] = due
        if len(pending) <= self._pending_max:
            return
        order = sorted(pending.items(), key=lambda entry: entry[1])
        keep = self._pending_max - self._pending_max // 10
        shed = order[keep:]
        self._pending = dict(order[:keep])
        first = shed[0][1]
        self._shed_due = first if self._shed_due is None else min(self._shed_due, first)

    def allowed(self, profile: Profile, trigger: str) -> bool:
        """Whether `trigger` may fire for this user (engine.consent)."""
        return trigger_allowed(profile, trigger, self._consent_default)

    def _cancel_withdrawn(self, hooks: WebhookSender, profile: Profile) -> None:
        """Take back the queued webhooks of a user without the e-mail purposes
        (`engine.consent.triggers_withdrawn`) whose trigger they no longer consent to (cheap with
        none queued)."""
        hooks.cancel(profile.user_id, lambda trigger: self.allowed(profile, trigger))

    def _cart_due(self, profile: Profile) -> int | None:
        """When the user's abandoned-cart check is due (None: nothing to check, or no consent)."""
        if not self.allowed(profile, ABANDONED_CART):
            return None
        return abandoned_cart_due(profile, self._cart_delay_ms)

    def evaluate(self, touched: Touched) -> list[Trigger]:
        """Evaluate the triggers of every user of the batch (marking firings in their profiles)
        and keep the abandoned-cart schedule up to date.

        Per user: the abandoned cart (with consent), the churn crossing (recorded always, sent
        with consent), the webhooks taken back (without consent), the cart's check scheduled
        (with consent). One consent check answers all of them: both triggers need the e-mail
        purposes (`engine.consent.EMAIL_TRIGGER`), the withdrawal check is their absence, and
        marking a firing changes nothing but `fired`. A user without a cart has no cart work."""
        now = self.ports.clock.now_ms()
        live = [(user, entry) for user, entry in touched.items() if entry[0] is not None]
        scores = self.churn_scores([cast(Profile, entry[0]) for _, entry in live], now)
        fired: list[Trigger] = []
        default = self._consent_default
        delay = self._cart_delay_ms
        threshold = self.ports.settings.churn_threshold
        hooks = self.ports.webhooks()
        for (user, (profile, fevent, _)), score in zip(live, scores, strict=True):
            assert profile is not None
            before = profile
            consents = allows(profile, EMAIL_TRIGGER, default)
            if consents and profile.cart:
                trigger, profile = abandoned_cart(profile, now, delay)
                if trigger and self._fresh(trigger, profile):
                    fired.append(trigger)
            if score is not None:
                trigger, profile = churn_risk(profile, score, threshold, now)
                if trigger and consents and self._fresh(trigger, profile):
                    fired.append(trigger)
            if hooks is not None and not consents:
                self._cancel_withdrawn(hooks, profile)
            due = abandoned_cart_due(profile, delay) if consents and profile.cart else None
            if due is None:
                self._pending.pop(profile.user_id, None)
            else:
                self._schedule(profile.user_id, due)
            if profile is not before:  # a firing or a baseline marked: to be written
                touched[user] = (profile, fevent, True)
        return fired

    def withdrawals(self, consents: list[Event], touched: Touched, refused: Any) -> list[Trigger]:
        """The `consent_withdrawn` notices of a batch's folded consent events, for the users
        whose profiles were written (engine.triggers.consent_withdrawn; an erased user gets
        none: their profile is gone)."""
        notices: list[Trigger] = []
        for event in consents:
            user = user_key(event.user_id)
            profile = touched[user][0] if user in touched else None
            notice = (
                None if profile is None or user in refused else consent_withdrawn(profile, event)
            )
            if notice is not None:
                notices.append(notice)
        return notices

    def churn_scores(self, profiles: list[Profile], now: int) -> list[float | None]:
        models = self.ports.scorer()
        if models is None or not profiles:
            return [None] * len(profiles)
        rows = chain.from_iterable(features(p, now) for p in profiles)  # one row per profile
        matrix = np.fromiter(rows, np.float64, len(profiles) * len(FEATURE_NAMES))
        matrix = matrix.reshape(len(profiles), len(FEATURE_NAMES))
        return [float(s) for s in models.churn.score_batch(matrix)]

    async def emit(self, *triggers: Trigger) -> None:
        """Send `triggers` to the triggers topic (one call of the port for all of them) and
        queue their webhooks."""
        if not triggers:
            return
        records: list[tuple[bytes, bytes]] = []
        counts = self.ports.counts
        hooks = self.ports.webhooks()
        for trigger in triggers:
            message = json.dumps(trigger.to_message()).encode()
            counts[trigger.trigger] = counts.get(trigger.trigger, 0) + 1
            records.append((trigger.user_id.encode(), message))
            if hooks is not None:
                hooks.submit(message, trigger.user_id, trigger.trigger)
        await self.ports.send(records)

    async def check_due(self) -> None:
        try:
            await self._check_due_once()
        except Exception:
            log.exception("the abandoned-cart check failed; retrying at the next tick")

    async def _check_due_once(self) -> None:
        """Ask the owning partition to check users whose abandoned-cart delay has passed (the
        check runs in order with the user's events, so a purchase in between cancels it)."""
        now = self.ports.clock.now_ms()
        due = [user for user, when in self._pending.items() if when <= now]
        for user in due:
            if self._pending.pop(user, None) is not None:  # still scheduled (not shed meanwhile)
                await self.send_check(user)

    async def send_check(self, user: str) -> None:
        body = json.dumps({"command": "check", "user_id": user}).encode()
        await self.ports.send_command(user.encode(), body, None)

    def _local_profiles(self, partition: int) -> Iterator[Profile]:
        for key, raw in self.ports.local_rows(partition):
            if raw and is_profile_key(key):  # not Faust's offsets, not input positions
                try:
                    yield Profile.unpack(raw)
                except Exception:  # one unreadable row must not stop the sweep of the others
                    log.warning("skipping an unreadable stored profile in partition %d", partition)

    async def sweep(self) -> None:
        try:
            await self._sweep_once()
        except Exception:  # a timer must never take the worker down
            log.exception("the trigger sweep failed; retrying at the next tick")

    async def _sweep_once(self) -> None:
        """Periodically, over this worker's users: rebuild the abandoned-cart schedule (after a
        restart it is empty) and find users whose churn score crossed upward as time passed."""
        now = self.ports.clock.now_ms()
        shed = self._shed_due is not None and now >= self._shed_due  # schedule them again
        if not self.ports.ready() or (now - self._last_sweep < self._sweep_every_ms and not shed):
            return
        if not self._pacer.due():
            return
        self._last_sweep = now
        self._shed_due = None  # the sweep sheds again what does not fit
        with self._pacer.running():
            await self._sweep_partitions(now)

    async def _sweep_partitions(self, now: int) -> None:
        models = self.ports.scorer()
        for partition in self.ports.local_partitions():
            chunk: list[Profile] = []
            for profile in self._local_profiles(partition):
                due = self._cart_due(profile)
                if due is not None:
                    self._schedule(profile.user_id, due)
                chunk.append(profile)
                if len(chunk) >= SWEEP_CHUNK:
                    await self._sweep_churn(chunk, now, models)
                    chunk = []
            await self._sweep_churn(chunk, now, models)

    async def _sweep_churn(self, chunk: list[Profile], now: int, models: ModelSet | None) -> None:
        if not chunk or models is None:
            return
        scores = self.churn_scores(chunk, now)
        threshold = self.ports.settings.churn_threshold
        for profile, score in zip(chunk, scores, strict=True):
            high = profile.fired.get(CHURN_RISK, 0) > 0
            if score is not None and (score >= threshold) != high:
                await self.send_check(profile.user_id)
        await asyncio.sleep(0)  # let the stream breathe between chunks

    async def items_changed(
        self,
        partition: int,
        changes: list[tuple[dict[str, Any], int]],
        touched: Touched,
        carrier: Carrier,
    ) -> list[Trigger]:
        """Catalog changes broadcast to every partition, each with its command's signing time:
        the triggers for this partition's users who have a changed item in their cart or recent
        views. All the changes of one batch share one pass over the partition's users (a feed
        update changing many items costs one scan, not one per item), yielding to the event loop
        every SWEEP_CHUNK users.

        The users are taken as the batch leaves them: `touched` holds the batch's users of this
        partition (None: erased in the batch), over the stored rows, so a user erased or whose
        consent was withdrawn in the batch gets nothing and one new in it is included. A firing
        is recorded in the user's profile (engine.triggers.item_triggers: a replayed or
        redelivered command fires nothing again), entered in `touched` to be written (with
        `carrier`, a command of the partition, for a user the batch had not touched). The
        triggers are returned: the batch emits them after its writes, as its other triggers."""
        parsed: dict[str, list[tuple[Product, list[str], float, int]]] = {}
        for command, signed_ms in changes:
            try:  # the fold dead-letters malformed ones before they get here
                product, kinds, old_price = item_change(command)
            except ValueError:
                log.error("ignoring a malformed item_changed command: %.200r", command)
                continue
            parsed.setdefault(product.item_id, []).append((product, kinds, old_price, signed_ms))
        if not parsed:
            return []
        now = self.ports.clock.now_ms()
        fired: list[Trigger] = []
        for n, (user, profile) in enumerate(self._batch_profiles(partition, touched), 1):
            hits = [item for item in profile.cart if item in parsed] + [
                item for item, _ in profile.recent if item in parsed and item not in profile.cart
            ]
            updated = profile
            for item in hits:
                for product, kinds, old_price, signed_ms in parsed[item]:
                    allowed = [kind for kind in kinds if self.allowed(updated, kind)]
                    triggers, updated = item_triggers(
                        updated, product, allowed, old_price, now, signed_ms
                    )
                    fired.extend(t for t in triggers if self._fresh(t, updated))
            if updated is not profile:
                entry = touched.get(user)
                touched[user] = (updated, carrier if entry is None else entry[1], True)
            if n % SWEEP_CHUNK == 0:
                await asyncio.sleep(0)
        return fired

    def _batch_profiles(self, partition: int, touched: Touched) -> Iterator[tuple[bytes, Profile]]:
        """The partition's users as the batch leaves them: the stored ones the batch did not
        touch, then the batch's own (the erased left out)."""
        batch = [(user, p) for user, (p, _, _) in touched.items() if p is not None]
        taken = set(touched)  # as at the start: the pass enters the users it marks
        for profile in self._local_profiles(partition):
            user = user_key(profile.user_id)
            if user not in taken:
                yield user, profile
        yield from batch

    async def broadcast_item_change(self, old: Product | None, new: Product) -> None:
        kinds = catalog_change(old, new)
        if not kinds or old is None:
            return
        body = json.dumps(
            {
                "command": "item_changed",
                "product": new.to_dict(),
                "kinds": kinds,
                "old_price": old.price,
            }
        ).encode()
        for partition in range(self.ports.settings.partitions):
            await self.ports.send_command(new.item_id.encode(), body, partition)
