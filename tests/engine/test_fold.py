"""The events fold's decisions (engine/fold.py) on plain records, with a controllable clock: what
each record ships, what the batch writes, emits and ships, and how stream time moves."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from engine.catalog import Product
from engine.clock import ManualClock
from engine.events import validate
from engine.fold import (
    NOTHING,
    BatchFold,
    Reads,
    Record,
    Rules,
    clock_stale,
    pack_profile,
    popularity,
    profile_writes,
    seed_times,
    stream_time_key,
)
from engine.popularity import CART_WEIGHT, PURCHASE_WEIGHT, Score
from engine.profile import Profile, apply

T0 = 1_700_000_000_000
HOUR = 3_600_000
DAY = 24 * HOUR
RULES = Rules(lateness_ms=7 * DAY, skew_ms=300_000)


@dataclass
class Store:
    """Stored state as plain dicts: the fold's `Reads` over them."""

    profiles: dict[bytes, Profile] = field(default_factory=dict)
    fences: dict[bytes, int] = field(default_factory=dict)
    products: dict[str, Product] = field(default_factory=dict)
    placement: dict[bytes, int] = field(default_factory=dict)  # default partition 0
    aliases: set[bytes] = field(default_factory=set)
    unreadable: set[bytes] = field(default_factory=set)

    def reads(self) -> Reads:
        return Reads(
            user_key=lambda user_id: b"u:" + user_id.encode(),
            profile=self._profile,
            fence=lambda user, partition: self.fences.get(user),
            product=self.products.get,
            placed=lambda key, partition: self.placement.get(key, 0) == partition,
            aliased=lambda user, partition: user in self.aliases,
        )

    def _profile(self, user: bytes, partition: int) -> Profile | None:
        if user in self.unreadable:
            raise ValueError("the stored profile cannot be read: ExtraData")
        return self.profiles.get(user)


def event(n: int, kind: str = "product_view", user: str = "ann", ts: int = T0, **kw: Any) -> dict:
    return {"event_id": f"e{n}", "type": kind, "user_id": user, "ts": ts, "item_id": "lamp", **kw}


def record(
    body: dict | bytes,
    partition: int = 0,
    key: bytes | None = None,
    at: int = 0,
    topic: str = "clickstream",
) -> Record:
    value = body if isinstance(body, bytes) else json.dumps(body).encode()
    if key is None and isinstance(body, dict):
        key = body["user_id"].encode()
    return Record(topic, partition, 7, key, value, at)


def fold(
    store: Store,
    wall: int = T0,
    stream_time: dict[tuple[str, int], int] | None = None,
    rules: Rules = RULES,
) -> BatchFold[str]:
    return BatchFold(store.reads(), rules, ManualClock(wall), stream_time or {})


def test_an_event_is_folded_into_the_touched_profile_to_write() -> None:
    batch = fold(Store())
    assert batch.event(record(event(1)), "carrier-1") is NOTHING
    out = batch.result()
    profile, carrier, dirty = out.touched[b"u:ann"]
    assert profile is not None and profile.user_id == "ann" and dirty and carrier == "carrier-1"
    assert out.counts == {"events": 1}
    assert out.newest == {0: (T0, "carrier-1")} and out.stream_time == {("clickstream", 0): T0}


def test_a_value_that_is_no_event_is_dead_lettered_with_the_parsers_reason() -> None:
    batch = fold(Store())
    step = batch.event(record(b"\xff not json", key=b"ann"), "c")
    assert step.dead is not None and step.dead.startswith("neither JSON nor msgpack")
    step = batch.event(record({"event_id": "e1", "type": "nonsense", "user_id": "ann"}), "c")
    assert step.dead is not None and "type" in step.dead
    assert batch.result().touched == {} and batch.result().counts == {}


def test_an_event_ahead_of_the_wall_clock_beyond_the_skew_is_refused_as_future() -> None:
    clock_ahead = T0 + RULES.skew_ms + 1000
    batch = fold(Store(), wall=T0)
    step = batch.event(record(event(1, ts=clock_ahead)), "c")
    assert step.dead is not None and step.dead.startswith("future")
    assert batch.event(record(event(2, ts=T0 + RULES.skew_ms)), "c") is NOTHING  # at the bound
    assert batch.result().counts == {"future": 1, "events": 1}


def test_lateness_is_measured_against_the_partitions_own_stream_time() -> None:
    store = Store(placement={b"bob": 1})
    batch = fold(store, wall=T0 + 30 * DAY, stream_time={("clickstream", 0): T0 + 20 * DAY})
    late = batch.event(record(event(1, ts=T0 + 12 * DAY)), "c")
    assert late.dead is not None and late.dead.startswith("late")
    assert batch.event(record(event(2, ts=T0 + 14 * DAY)), "c") is NOTHING  # within the bound
    # the same time on partition 1, which has folded nothing yet, is not late
    assert batch.event(record(event(3, user="bob", ts=T0 + 12 * DAY), partition=1), "c") is NOTHING
    assert batch.result().counts == {"late": 1, "events": 2}


def test_stream_time_moves_within_the_batch_and_makes_later_events_late() -> None:
    batch = fold(Store(), wall=T0 + 30 * DAY)
    assert batch.event(record(event(1, ts=T0 + 20 * DAY)), "c") is NOTHING
    step = batch.event(record(event(2, ts=T0 + 12 * DAY)), "c")
    assert step.dead is not None and step.dead.startswith("late")
    out = batch.result()
    assert out.stream_time == {("clickstream", 0): T0 + 20 * DAY}
    assert out.counts == {"events": 1, "late": 1}


def test_topics_of_one_partition_number_running_weeks_apart_make_nothing_late() -> None:
    """A replay: the worker reads partition 0 of `cart` 30 days of event time ahead of partition
    0 of `clickstream` (each log in time order by itself). Measured per partition number, every
    clickstream event below was late."""
    batch = fold(Store(placement={b"bob": 0}), wall=T0 + 90 * DAY)
    for day in range(30, 40):
        cart = event(day, "add_to_cart", ts=T0 + day * DAY)
        assert batch.event(record(cart, topic="cart"), "c") is NOTHING
    for day in range(10):
        view = event(100 + day, user="bob", ts=T0 + day * DAY)
        assert batch.event(record(view), "c") is NOTHING
    out = batch.result()
    assert out.counts == {"events": 20}
    assert out.stream_time == {("cart", 0): T0 + 39 * DAY, ("clickstream", 0): T0 + 9 * DAY}
    assert out.newest[0][0] == T0 + 39 * DAY  # "now" is the newest of every topic


def test_an_event_8_days_behind_its_own_topic_partitions_time_is_late() -> None:
    times = {("cart", 0): T0 + 40 * DAY, ("clickstream", 0): T0 + 10 * DAY}
    batch = fold(Store(), wall=T0 + 90 * DAY, stream_time=times)
    step = batch.event(record(event(1, ts=T0 + 2 * DAY)), "c")  # 8 days behind clickstream 0
    assert step.dead is not None and step.dead.startswith("late: 192.0 h")
    step = batch.event(record(event(2, "add_to_cart", ts=T0 + 32 * DAY), topic="cart"), "c")
    assert step.dead is not None and step.dead.startswith("late: 192.0 h")
    assert batch.event(record(event(3, ts=T0 + 4 * DAY)), "c") is NOTHING  # 6 days behind
    assert batch.result().counts == {"late": 2, "events": 1}


def test_restart_seeds_stream_times_per_topic_partition_from_the_clock_table() -> None:
    rows = [
        (b"0", b"%d" % (T0 + 40 * DAY)),
        (stream_time_key("cart", 0), b"%d" % (T0 + 40 * DAY)),
        (stream_time_key("clickstream", 0), b"%d" % (T0 + 10 * DAY)),
        (b"1", b"%d" % (T0 + 99 * DAY)),  # ahead of the wall clock: counts as now
        (b"x", b"1"),  # no row Persona writes: skipped
        (b"2", b""),
    ]
    clock, times = seed_times(rows, ("cart", "clickstream", "social"), T0 + 90 * DAY)
    assert clock == {0: T0 + 40 * DAY, 1: T0 + 90 * DAY}
    # partition 1 was kept by a version with one stream time per partition number: it seeds
    # every topic of that number; partition 0 has its own per topic (social: none yet)
    assert times == {
        ("cart", 0): T0 + 40 * DAY,
        ("clickstream", 0): T0 + 10 * DAY,
        ("cart", 1): T0 + 90 * DAY,
        ("clickstream", 1): T0 + 90 * DAY,
        ("social", 1): T0 + 90 * DAY,
    }
    assert stream_time_key("cart", 3) == b"3:cart"


def test_a_record_not_keyed_by_its_user_or_on_another_partition_is_rekeyed() -> None:
    store = Store(placement={b"ann": 2})
    batch = fold(store)
    assert batch.event(record(event(1), partition=0, key=b"someone"), "c").rekey == b"ann"
    assert batch.event(record(event(2), partition=0, key=None), "c").rekey == b"ann"
    assert batch.event(record(event(3), partition=0), "c").rekey == b"ann"  # wrong partition
    assert batch.event(record(event(4), partition=2), "c") is NOTHING
    assert batch.result().counts == {"rekeyed": 3, "events": 1}


def test_an_event_produced_before_its_users_erasure_is_fenced() -> None:
    store = Store(fences={b"u:ann": 5_000})
    batch = fold(store)
    assert batch.event(record(event(1), at=5_000), "c") is NOTHING
    assert batch.event(record(event(2), at=5_001), "c") is NOTHING  # after it: folded
    out = batch.result()
    assert out.counts == {"fenced": 1, "events": 1}
    profile = out.touched[b"u:ann"][0]
    assert profile is not None and profile.version == 1


def test_a_users_stored_fence_is_read_once_per_batch() -> None:
    """Issue 21 item 5: a RocksDB read per event was ~2% of the worker's time; the stored
    fence changes only when a batch is written, so one read per user and batch decides."""
    store = Store(fences={b"u:ann": 5_000})
    asked: list[bytes] = []
    reads = store.reads()
    counted = replace(reads, fence=lambda user, p: asked.append(user) or reads.fence(user, p))
    batch = BatchFold(counted, RULES, ManualClock(T0), {})
    for n, at in enumerate([4_000, 5_000, 6_000, 4_500]):
        batch.event(record(event(n), at=at), "c")
    batch.event(record(event(9, user="bob"), at=1), "c")
    assert asked == [b"u:ann", b"u:bob"]
    assert batch.result().counts == {"fenced": 3, "events": 2}  # 4,000, 5,000, 4,500: fenced


def test_an_erasure_earlier_in_the_batch_fences_too() -> None:
    stored = apply(None, validate(event(0)))
    batch = fold(Store(profiles={b"u:ann": stored}))
    batch.touched[b"u:ann"] = (None, "erase", True)  # as the adapter's erase command does
    batch.fences[b"u:ann"] = (9_000, 0)
    assert batch.event(record(event(1), at=8_999), "c") is NOTHING
    out = batch.result()
    assert out.touched[b"u:ann"] == (None, "erase", True) and out.counts == {"fenced": 1}


def test_an_aliased_id_without_a_profile_is_forwarded_and_with_one_folded() -> None:
    store = Store(aliases={b"u:ann"})
    step = fold(store).event(record(event(1)), "c")
    assert step.forward is not None and step.forward.event_id == "e1" and step.user == b"u:ann"
    store.profiles[b"u:ann"] = apply(None, validate(event(0)))
    assert fold(store).event(record(event(1)), "c") is NOTHING


def test_a_folded_identify_asks_for_the_merge() -> None:
    body = event(1, "identify", props={"previous_id": "anon-1"})
    del body["item_id"]
    step = fold(Store()).event(record(body), "c")
    assert step.identify is not None and step.identify.user_id == "ann" and step.user == b"u:ann"


def test_a_duplicate_of_a_stored_profile_is_written_again_unchanged() -> None:
    stored = apply(None, validate(event(1)))
    batch = fold(Store(profiles={b"u:ann": stored}))
    assert batch.event(record(event(1)), "redelivered") is NOTHING
    out = batch.result()
    assert out.touched[b"u:ann"] == (stored, "redelivered", True)
    assert out.counts == {"duplicates": 1} and out.newest == {} and out.stream_time == {}


def test_a_duplicate_within_the_batch_is_counted_once_folded() -> None:
    batch = fold(Store())
    batch.event(record(event(1)), "first")
    batch.event(record(event(1)), "again")
    out = batch.result()
    profile = out.touched[b"u:ann"][0]
    assert profile is not None and profile.version == 1
    assert out.counts == {"events": 1, "duplicates": 1}


def test_an_unreadable_stored_profile_dead_letters_the_event_and_the_fold_goes_on() -> None:
    batch = fold(Store(unreadable={b"u:ann"}))
    step = batch.event(record(event(1)), "c")
    reason = "processing failed: ValueError: the stored profile cannot be read: ExtraData"
    assert step.dead == reason
    assert batch.event(record(event(2, user="bob")), "c") is NOTHING
    assert list(batch.result().touched) == [b"u:bob"]


def test_popularity_weights_of_a_cart_and_a_purchase() -> None:
    batch = fold(Store(), wall=T0 + DAY)
    batch.event(record(event(1, "add_to_cart", ts=T0)), "c")
    batch.event(record(event(2, "purchase", ts=T0 + HOUR, user="bob", price=3.0)), "c")
    batch.event(record(event(3, "product_view", user="cy")), "c")  # views carry no stake
    activity = batch.result().activity
    assert activity == {
        b"u:ann": [("lamp", CART_WEIGHT, T0)],
        b"u:bob": [("lamp", PURCHASE_WEIGHT, T0 + HOUR)],
    }
    (item, packed), *rest = popularity(activity, refused=[])
    total = Score().plus(CART_WEIGHT, T0).plus(PURCHASE_WEIGHT, T0 + HOUR)
    assert item == b"lamp" and rest == [] and Score.unpack(packed) == total
    # a user whose state could not be stored changed no stake
    only_ann = popularity(activity, refused=[b"u:bob"])
    assert only_ann == [(b"lamp", Score().plus(CART_WEIGHT, T0).pack())]


def test_consent_events_are_collected_for_the_audit() -> None:
    body = event(1, "consent", props={"email": False})
    del body["item_id"]
    batch = fold(Store())
    batch.event(record(body), "c")
    batch.event(record(event(2)), "c")
    assert [e.event_id for e in batch.result().consents] == ["e1"]


def test_the_writes_tombstone_erased_users_skip_clean_ones_and_refuse_oversized_ones() -> None:
    small = apply(None, validate(event(1)))
    big = apply(apply(None, validate(event(2, user="bob"))), validate(event(3, user="bob")))
    touched = {
        b"u:ann": (small, 3, True),
        b"u:bob": (big, 3, True),
        b"u:cy": (small, 1, False),  # a check that fired nothing: not written
        b"u:dee": (None, 1, True),  # erased
    }
    bound = len(small.pack())
    writes, refused = profile_writes(touched, lambda partition: partition, bound)
    assert {p: [key for key, _ in items] for p, items in writes.items()} == {
        3: [b"u:ann"],
        1: [b"u:dee"],
    }
    stored, tombstone = writes[3][0][1], writes[1][0][1]
    assert stored is not None and Profile.unpack(stored).to_dict() == small.to_dict()
    assert tombstone is None
    assert list(refused) == [b"u:bob"] and "bytes (bound" in refused[b"u:bob"]
    assert isinstance(pack_profile(small, bound), bytes)
    assert pack_profile(big, bound) == refused[b"u:bob"]


def test_the_stored_clock_time_is_rewritten_when_missing_older_or_ahead_of_the_wall() -> None:
    wall, skew = T0, 300_000
    assert clock_stale(None, T0 - 5, wall, skew)
    assert clock_stale(T0 - 10, T0 - 5, wall, skew)
    assert not clock_stale(T0 - 5, T0 - 5, wall, skew)
    assert not clock_stale(T0 + skew, T0 - 5, wall, skew)  # ahead, but within the skew
    assert clock_stale(T0 + skew + 1, T0 - 5, wall, skew)  # healed


def test_a_click_on_a_link_made_before_the_users_erasure_is_fenced() -> None:
    """A link mailed before the erasure and followed after it: the click's record is produced
    after the fence, but its link was made before (`props.link_ms`): it must not start a new
    profile for the erased user. A link made after the erasure is a new history's."""
    store = Store(fences={b"u:ann": 5_000})
    batch = fold(store)
    old_link = event(
        1, "click", item_id="A", props={"block": "b", "variant": "v", "link_ms": 4_000}
    )
    assert batch.event(record(old_link, at=9_000), "c") is NOTHING
    assert batch.result().counts == {"fenced": 1}
    new_link = event(
        2, "click", item_id="A", props={"block": "b", "variant": "v", "link_ms": 6_000}
    )
    assert batch.event(record(new_link, at=9_000), "c") is NOTHING
    assert batch.result().counts == {"fenced": 1, "events": 1}
    # a link time after the record's, or one that is no integer, changes nothing
    odd = event(3, "click", item_id="A", props={"block": "b", "variant": "v", "link_ms": "1"})
    later = event(4, "click", item_id="A", props={"block": "b", "variant": "v", "link_ms": 99_000})
    batch.event(record(odd, at=9_000), "c")
    batch.event(record(later, at=4_000), "c")  # produced before the fence: fenced as any event
    assert batch.result().counts == {"fenced": 2, "events": 2}
