"""The events fold's decisions over plain records. Pure: no Faust, no I/O, time from a `Clock`.

`streams.app` hands each input record of a batch, in order, to a `BatchFold` as a `Record`
`(topic, partition, offset, key, value, timestamp_ms)`; the fold reads stored state only through
`Reads` (callables the adapter supplies) and answers with a `Step`: what to ship for that record
(a dead letter and its reason, a re-keyed copy, a forward along an identity alias, a merge
request). At the end of the batch `result()` says what to write (the touched profiles), what
to emit (the folded consent events), where the event-time clock moved and which popularity
contributions to ship. The decisions it makes, in order, per event record:

1. the value parses as an event, else a dead letter with the parser's reason;
2. lateness and the future rule (`engine.admission`): lateness is measured against the stream
   time of the record's own topic-partition (its newest folded event time), which the batch moves
   as it folds. Each topic-partition log is roughly in time order by itself, but nothing orders
   the topics of one partition number against each other: a worker reads them at different
   speeds, and during a replay one runs weeks of event time ahead of another;
3. key placement: a record not keyed by its user id, or keyed so but on another partition than
   the murmur2 placement of that id, is re-keyed (sent again, keyed by the user id);
4. the erasure fence: a record produced at or before its user's erasure is not folded (a click
   counts as produced when its link was made, if earlier: `engine.erasure.produced_ms`);
5. an id without a profile but with an identity alias is forwarded to the alias's user;
6. `engine.profile.apply`; a repeat (the same profile back) is a duplicate, and a stored one is
   written again (the state may have been lost with its changelog record before a crash);
7. the popularity contributions of the change (`engine.popularity.contributions`).

The per-batch state (`touched`, `fences`) is shared with the adapter's commands (erasure,
identity), which run in the same order between the events. bytewax's `StatefulLogic` is the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, NamedTuple, Protocol, TypeVar

from engine.admission import admit
from engine.catalog import Product
from engine.clock import Clock
from engine.erasure import produced_ms
from engine.events import Event, InvalidEvent, parse
from engine.popularity import STAKE_TYPES, Contribution, Tally, contributions
from engine.profile import Profile, apply

log = logging.getLogger("persona.fold")

C = TypeVar("C")  # what the adapter carries with a record (its Faust event): opaque here
Touched = dict[bytes, tuple[Profile | None, C, bool]]  # user -> (profile, carrier, dirty)
Writes = dict[int, list[tuple[bytes, bytes | None]]]  # partition -> (key, value or tombstone)
TopicPartition = tuple[str, int]


class Record(NamedTuple):
    """One input record, as plain values (`timestamp_ms`: the broker's record time)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0


class Incoming(Protocol):
    """What the fold reads of an input record: a `Record`, or the adapter's own record object
    with the same fields (streams.delivery.FoldRecord: no copy a record)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp_ms(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Reads:
    """What the fold reads of stored state (the adapter's lookups)."""

    user_key: Callable[[str], bytes]  # the profiles-table key of a user id
    profile: Callable[[bytes, int], Profile | None]  # ValueError when it cannot be read
    fence: Callable[[bytes, int], int | None]  # the user's erasure time (ms), if any
    product: Callable[[str], Product | None]
    placed: Callable[[bytes, int], bool]  # a message key's placement is that partition
    aliased: Callable[[bytes, int], bool]  # the id was merged into another user (identity)


@dataclass(frozen=True, slots=True)
class Rules:
    lateness_ms: int
    skew_ms: int


@dataclass(frozen=True, slots=True)
class Step:
    """What to ship for one record; all None: nothing (folded, a duplicate or fenced)."""

    dead: str | None = None  # dead-letter the record with this reason
    rekey: bytes | None = None  # send the record again under this key
    forward: Event | None = None  # identity: forward this event of an aliased id to its user
    identify: Event | None = None  # identity: a folded `identify`: ask for the merge
    user: bytes = b""  # the profiles-table key of the event's user (forward, identify)


NOTHING = Step()
_UNREAD = object()  # a user's stored fence not read yet in this batch (`_fenced_at`)


@dataclass(frozen=True)
class Folded(Generic[C]):
    """What a batch folded: what to write, emit and ship once the records are through."""

    touched: Touched[C]  # written when dirty (None: a tombstone); triggers may still mark them
    fences: dict[bytes, tuple[int, int]]  # erasures: user -> (time ms, partition)
    activity: dict[bytes, list[Contribution]]  # user -> popularity contributions
    consents: tuple[Event, ...]  # folded consent events (audited, maybe withdrawal notices)
    newest: dict[int, tuple[int, C]]  # partition -> (newest event time folded, its carrier)
    stream_time: dict[TopicPartition, int]  # topic-partitions whose stream time moved -> the time
    counts: dict[str, int]  # events, duplicates, late, future, rekeyed, fenced


class BatchFold(Generic[C]):
    """The decisions of one batch, fed its records in order (`event`); `result()` at the end."""

    def __init__(
        self,
        reads: Reads,
        rules: Rules,
        clock: Clock,
        stream_time: Mapping[TopicPartition, int],
    ) -> None:
        self.reads = reads
        self.rules = rules
        self.wall = clock.now_ms()
        self._base_time = stream_time
        self.touched: Touched[C] = {}
        self.fences: dict[bytes, tuple[int, int]] = {}
        self._stored_fences: dict[bytes, int | None] = {}  # read once per user and batch
        self._activity: dict[bytes, list[Contribution]] = {}
        self._consents: list[Event] = []
        self._newest: dict[int, tuple[int, C]] = {}
        self._moved: dict[TopicPartition, int] = {}
        self._counts: dict[str, int] = {}

    def event(self, record: Incoming, carrier: C) -> Step:
        """Fold one event record (`carrier` is kept with the user's profile and clock time).

        One straight path per record (issue 21 item 5): the batch's per-user state is looked up
        once, admission's common case (neither late nor future) is two comparisons, and the
        popularity contributions are asked only of the event types that move a stake. The
        decisions and their order are the module doc's."""
        try:
            event = parse(record.value or b"")
        except InvalidEvent as exc:
            return Step(dead=exc.reason)
        topic, partition = record.topic, record.partition
        tp = (topic, partition)
        moved = self._moved
        stream_time = moved.get(tp)
        if stream_time is None:
            stream_time = self._base_time.get(tp)
        ts, wall = event.ts, self.wall
        rules = self.rules
        if ts - wall > rules.skew_ms or (
            stream_time is not None and min(stream_time, wall) - ts > rules.lateness_ms
        ):
            refusal = admit(ts, stream_time, wall, rules.lateness_ms, rules.skew_ms)
            if refusal is not None:
                self._count("future" if refusal.startswith("future") else "late")
                return Step(dead=refusal)
        reads = self.reads
        raw_id = event.user_id.encode()
        if record.key != raw_id or not reads.placed(raw_id, partition):
            self._count("rekeyed")
            return Step(rekey=raw_id)
        user = reads.user_key(event.user_id)
        try:  # one record's data (or stored state) must not stop the fold
            entry = self.touched.get(user)
            current = reads.profile(user, partition) if entry is None else entry[0]
            if self._fenced_at(user, partition, record.timestamp_ms, event):
                self._count("fenced")
                return NOTHING
            if current is None and reads.aliased(user, partition):
                return Step(forward=event, user=user)
            product = reads.product(event.item_id) if event.item_id else None
            updated = apply(current, event, product)
            stakes = (
                list(contributions(current, updated, event))
                if event.type in STAKE_TYPES and updated is not current
                else None
            )
        except Exception as exc:
            log.exception("could not fold event %r", event.event_id)
            return Step(dead=f"processing failed: {type(exc).__name__}: {exc}")
        counts = self._counts
        if updated is current:
            counts["duplicates"] = counts.get("duplicates", 0) + 1
            if current is not None:  # a redelivery: write the state again (see the docstring)
                self.touched[user] = (current, carrier, True)
        else:
            self._took(event, updated, carrier, user, tp, stream_time, stakes)
        # an identify asks for its merge again when redelivered (streams/identity.py)
        return Step(identify=event, user=user) if event.type == "identify" else NOTHING

    def _took(
        self,
        event: Event,
        updated: Profile,
        carrier: C,
        user: bytes,
        tp: TopicPartition,
        stream_time: int | None,
        stakes: list[Contribution] | None,
    ) -> None:
        """What a folded (new) event leaves in the batch's state."""
        ts, counts = event.ts, self._counts
        counts["events"] = counts.get("events", 0) + 1
        if event.type == "consent":
            self._consents.append(event)
        if ts > (stream_time or 0):
            self._moved[tp] = ts
        self.touched[user] = (updated, carrier, True)
        partition = tp[1]
        newest = self._newest.get(partition)
        if ts > (0 if newest is None else newest[0]):
            self._newest[partition] = (ts, carrier)
        if stakes:
            self._activity.setdefault(user, []).extend(stakes)

    def load(self, user: bytes, partition: int) -> Profile | None:
        """The user's profile as the batch left it, else as stored (ValueError: unreadable)."""
        if user in self.touched:
            return self.touched[user][0]  # None after an erasure in this batch
        return self.reads.profile(user, partition)

    def stream_time(self, topic: str, partition: int) -> int | None:
        """The newest event time folded from the topic-partition (this batch's included)."""
        moved = self._moved.get((topic, partition))
        return self._base_time.get((topic, partition)) if moved is None else moved

    def result(self) -> Folded[C]:
        return Folded(
            self.touched,
            self.fences,
            self._activity,
            tuple(self._consents),
            self._newest,
            self._moved,
            self._counts,
        )

    def _count(self, name: str) -> None:
        self._counts[name] = self._counts.get(name, 0) + 1

    def _fenced_at(self, user: bytes, partition: int, record_ms: int, event: Event) -> bool:
        """Whether the user was erased after this record was produced (the erase command
        travels on its own topic, so older events may arrive after it; `engine.erasure.
        produced_ms`, worked out only for a user with a fence): asked for every event, with or
        without a profile, as a later event may have started the new history. The stored fence
        is read once per user and batch (it changes only after the batch is written; an erasure
        within the batch is in `fences`)."""
        fence = self.fences.get(user)
        if fence is not None:
            return produced_ms(record_ms, event) <= fence[0]
        stored = self._stored_fences
        at = stored.get(user, _UNREAD)
        if at is _UNREAD:
            at = stored[user] = self.reads.fence(user, partition)
        return isinstance(at, int) and produced_ms(record_ms, event) <= at


def pack_profile(profile: Profile, bound: int) -> bytes | str:
    """The stored form of a profile, or the reason it cannot be stored (above `bound` bytes)."""
    try:
        value = profile.pack()
    except Exception as exc:
        return f"could not store the profile: {type(exc).__name__}: {exc}"
    if len(value) > bound:
        return f"could not store the profile: {len(value)} bytes (bound {bound})"
    return value


def profile_writes(
    touched: Touched[C], where: Callable[[C], int], bound: int
) -> tuple[Writes, dict[bytes, str]]:
    """The dirty profiles' writes per partition (`where` a carrier's partition; an erased user
    is a tombstone) and the users whose profile cannot be stored, with the reason."""
    writes: Writes = {}
    refused: dict[bytes, str] = {}
    for user, (profile, carrier, dirty) in touched.items():
        if not dirty:
            continue
        value = None if profile is None else pack_profile(profile, bound)
        if isinstance(value, str):
            refused[user] = value
            continue
        writes.setdefault(where(carrier), []).append((user, value))
    return writes, refused


def popularity(
    activity: Mapping[bytes, Iterable[Contribution]], refused: Iterable[bytes]
) -> list[tuple[bytes, bytes]]:
    """The batch's contributions summed per item, as (item key, packed score) records to ship;
    users whose state was refused changed no stake."""
    tally = Tally()
    skip = set(refused)
    for user, moved in activity.items():
        if user not in skip:
            tally.add(moved)
    return [(item.encode(), score.pack()) for item, score in tally.items()]


def clock_stale(stored: int | None, ts: int, wall_ms: int, skew_ms: int) -> bool:
    """Whether a partition's stored clock time is rewritten with `ts`: it is missing, older, or
    ahead of the wall clock beyond the skew (written so by earlier versions: it heals)."""
    return stored is None or stored < ts or stored > wall_ms + skew_ms


def stream_time_key(topic: str, partition: int) -> bytes:
    """The clock-table key of a topic-partition's stream time (`b"<partition>:<topic>"`), beside
    the partition number's newest event time under `b"<partition>"`."""
    return b"%d:%s" % (partition, topic.encode())


def seed_times(
    rows: Iterable[tuple[bytes, bytes | None]], topics: Collection[str], wall_ms: int
) -> tuple[dict[int, int], dict[TopicPartition, int]]:
    """What a restart takes from the clock table's rows: the newest event time per partition
    number (the event-time clock) and the stream time per topic-partition (lateness). A time
    ahead of the wall clock counts as now (an earlier version stored it: it heals); a row that
    cannot be read is skipped. A partition number without any topic-partition row was kept by a
    version that measured lateness per partition number: its time seeds every topic in
    `topics` of that number (as strict as that version was, until each topic moves it)."""
    clock: dict[int, int] = {}
    stream: dict[TopicPartition, int] = {}
    for key, raw in rows:
        try:
            ts = min(int(raw or b""), wall_ms)
            number, _, topic = key.partition(b":")
            partition = int(number)
            name = topic.decode() if topic else None
        except ValueError:  # no row Persona writes (UnicodeDecodeError is a ValueError)
            continue
        if name is None:
            clock[partition] = max(clock.get(partition, ts), ts)
        else:
            stream[(name, partition)] = max(stream.get((name, partition), ts), ts)
    kept = {partition for _, partition in stream}
    for partition, ts in clock.items():
        if partition not in kept:
            stream.update({(topic, partition): ts for topic in topics})
    return clock, stream
