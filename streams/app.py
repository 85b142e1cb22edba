"""The Faust application: topics, tables and the thin agents that feed the pure core.

Agents only decode, call `engine`, and write: events are taken in batches, folded with
`engine.profile.apply`, and each touched user's profile is written once per batch (the write runs in
the context of that user's last event, so it lands in the right changelog partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Container, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from faust.sensors.monitor import Monitor

from engine import ownership
from engine.audit import AUDIT_FILE, AuditPseudonyms, audit_consents, erase_from_audit
from engine.catalog import InvalidProduct, Product, catalog_record, item_key_problem
from engine.clock import EventTimeClock, WallClock
from engine.dead_letter import Source, letter, shorten
from engine.erasure import signed_before_erasure
from engine.events import INPUT_TOPICS, Event, InvalidEvent, parse
from engine.fold import (
    NOTHING,
    BatchFold,
    Folded,
    Reads,
    Record,
    Rules,
    Step,
    Writes,
    clock_stale,
    popularity,
    profile_writes,
    seed_times,
    stream_time_key,
)
from engine.pacing import Pacer
from engine.placement import partition as default_partition
from engine.popularity import Score
from engine.popularity import merge as merge_scores
from engine.profile import Profile
from engine.settings import Settings
from engine.signing import Headers, cluster_key
from engine.triggers import Trigger, item_change
from models.registry import ModelSet
from streams import read_side
from streams import tansu as tansu_fix
from streams.admin import (
    COMMANDS_TOPIC,
    COPARTITIONED,
    DEAD_LETTERS,
    ITEM_ACTIVITY_TOPIC,
    KEPT_HEADER,
    REKEYED_TOPIC,
    TRIGGERS_TOPIC,
    partition_counts,
)
from streams.backlog import Backlog, hold_wait
from streams.batched import send_keyed
from streams.changelog import TableWriter
from streams.content_sync import CatalogContent
from streams.corrupt_batches import CorruptBatch
from streams.delivery import (
    Carrier,
    Delivered,
    Fold,
    FoldRecord,
    FoldTopic,
    Turns,
    bulk_drain,
    fast_wait_first,
    record_ms,
    subscribe,
    take,
)
from streams.identity import MERGE_COMMANDS, Identity, check_command
from streams.kafka_security import Broker, as_config
from streams.keys import (
    FAUST_OFFSET_KEY,
    LAYOUT,
    LAYOUT_KEY,
    alias_of,
    alias_target_of,
    fence_of,
    layout_moves,
    merged_ids_of,
    merged_of,
    user_key,
)
from streams.positions import GapReader, parse_position, position_key
from streams.profile_cache import ProfileCache
from streams.read_side import FoldProducts, PartitionMemo, ProductMemo
from streams.registry import EXPOSURES_TOPIC
from streams.rocks_memory import RocksMemory
from streams.signed import RecordGate, RecordSigner
from streams.triggers import Touched, TriggerPorts, TriggerRunner
from streams.webhooks import WebhookSender

log = logging.getLogger("persona.streams")

# Records folded per batch at most (a backlog fills them; a live stream rarely does): each user is
# read and written once per batch, so larger batches fold a session's events with fewer of both.
# benchmarks.ingest (REES46, 4 runs each, alternating): 5,147-7,596 events per busy core at 2,000
# against 4,858-5,198 at 1,000, freshness at 2,500 events/s alike (docs/benchmarks.md). The raw
# fold it is compared with takes up to 2,000 records per poll.
BATCH_MAX = 2000
BATCH_WITHIN = 0.02  # seconds a fold batch may wait to fill while records keep arriving
FOLD_SLICE = 100  # records (or 20 ms) folded between two turns of the event loop (Turns)
POPULAR_REFRESH = 5.0  # seconds between recomputations of the best-seller list, at least
CONTENT_SYNC_EVERY = 0.5  # seconds between checks whether the kept catalog is indexed (readyz)
# Seconds at most between another worker's write to a global table (catalog, popularity) or to a
# partition this worker stands by for, and this worker applying it (`_apply_held_changelogs`).
HELD_APPLY_EVERY = 0.2
POPULAR_STEP = 1000  # items ranked between two yields to the event loop
# Products kept decoded: whole for reads (HTTP routes served by the worker, catalog triggers),
# as fold views for the fold (streams/read_side.FoldProducts: ~830 accounted bytes a view, ~644
# traced by tracemalloc for benchmarks.scale's products; 96 MiB keeps ~120,000 items. At 64 MiB
# it kept ~81,000: a 100,000-item catalog's events missed 20 % of their lookups (11 % at 96 MiB,
# the first sightings; a FoldProducts fed the synthetic load's 900,000 item ids); the one
# 64 MiB memo of whole products before kept ~46,000).
PRODUCT_CACHE_MAX = 50_000  # whole products kept for reads (the oldest go first)
PRODUCT_CACHE_BYTES = 16 * 1024 * 1024  # ... and their accounted bytes (streams/read_side.py)
FOLD_PRODUCTS_MAX = 200_000  # the fold's product views kept
FOLD_PRODUCTS_BYTES = 96 * 1024 * 1024  # ... and their accounted bytes
PARTITION_MEMO = 200_000  # user ids whose murmur2 partition is memoized
PARTITION_MEMO_BYTES = 32 * 1024 * 1024
OWNERSHIP_EVERY = 1.0  # seconds between checks of the partition ownership the readers route by
AUDIT_EVERY = 2.0  # seconds between audits of the positions of partitions that receive nothing
TOPIC_CHECK_EVERY = 15.0  # seconds between checks of the co-partitioned topics' partition counts
READY_POLL = 0.05  # seconds between looks at the first recovery, for readiness
AUDIT_IDLE = 2.0  # seconds without a delivery before a partition's position is audited
IN_HAND_IDLE = 20.0  # seconds Faust may hold handed records without delivering any (audit)
PRODUCER_BUFFER_MAX = 4 * BATCH_MAX  # messages in Faust's buffer before delivery waits for them
PRODUCER_BATCH_BYTES = 512 * 1024
# A stored profile above this is refused (its events dead-lettered): Kafka's default limit on a
# record is 1 MiB, and a changelog record the broker refuses would stop the worker. The bounds of
# engine.events and engine.profile keep real profiles far below it (~0.5 KB typical, ~250 KB with a
# full dedup memory).
MAX_PROFILE_BYTES = 768 * 1024
# A dead letter's key, value and headers at most (engine.dead_letter: a larger one carries the
# original bytes, else no value): the producer refuses a record over 1,000,000 bytes (Faust's
# producer_max_request_size) and the worker would stop on it.
DEAD_LETTER_MAX_BYTES = 900 * 1024
# Each table partition is a RocksDB database whose memtable (and the write-ahead log behind it) is
# flushed to a table file once it holds this much. Faust's default, 64 MiB per database (16 here),
# kept a whole benchmark run of 100,000 users in the logs (~1.2 KB per user on disk against ~280
# once flushed and compacted: every rewrite of a profile stays in the log until the flush) and up
# to 64 MiB of memtable per database in memory.
WRITE_BUFFER_BYTES = 8 * 1024 * 1024


@contextlib.contextmanager
def event_context(event: Carrier) -> Iterator[None]:
    """Make `event` Faust's current event, so table reads/writes use its partition.

    Faust only sets the current event for per-event iteration; batch (`take_events`) code must set
    it itself before touching a table (faust-streaming #261/#497).
    """
    from faust import streams as faust_streams

    token = faust_streams._current_event.set(weakref.ref(cast(Any, event)))
    try:
        yield
    finally:
        faust_streams._current_event.reset(token)


class QuietMonitor(Monitor):
    """Faust's default Monitor does bookkeeping on every message, stream event, table access and
    send, for a web view Persona does not run; Persona keeps its own counters (StreamStats,
    /metrics). The per-message hooks are no-ops; rebalance, commit and assignment ones stay."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_table_get(self, table: Any, key: Any) -> None:
        return None

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        return None

    def on_table_del(self, table: Any, key: Any) -> None:
        return None

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> None:
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        return None


class _App(faust.App):
    """Faust's app, telling the worker when a rebalance has ended: Faust has no signal for it
    (its `on_rebalance_complete` is sent before `rebalancing` drops, at the end of the table
    recovery), and the readers' ownership file was rewritten only at the publishing timer's
    next tick, their DELETEs answered "ownership unknown" meanwhile."""

    rebalance_ended: Callable[[], None] | None = None

    def on_rebalance_end(self) -> None:
        super().on_rebalance_end()
        if self.rebalance_ended is not None:
            self.rebalance_ended()


@dataclass
class Ordered:
    """A batch put in order (`PersonaStreams._in_order`): the records to fold now, and, when it
    stopped at a skipped range too long to put in, that range `(key, start, end)` and the
    records from the one that revealed it on."""

    records: list[Delivered]
    gap: tuple[tuple[str, int], int, int] | None = None
    rest: list[Delivered] = field(default_factory=list)


@dataclass
class StreamStats:
    events: int = 0
    invalid: int = 0
    duplicates: int = 0
    rekeyed: int = 0
    catalog_updates: int = 0
    late: int = 0
    future: int = 0  # events stamped further ahead of the wall clock than the allowed skew
    erased: int = 0
    fenced: int = 0  # events of an erased user produced before the erasure: not folded
    redelivered: int = 0  # records below their partition's stored position: already folded
    unsigned_commands: int = 0  # commands without a valid cluster signature: dead-lettered
    kept_unverified: int = 0  # catalog records marked kept whose mark did not verify: applied
    changelog_unkeyed: int = 0  # table changelog records without a key: passed over
    identity_merged: int = 0  # identity: anonymous profiles merged into a user (streams/identity)
    identity_forwarded: int = 0  # identity: events of a merged anonymous id sent to its user
    identity_repeated: int = 0  # identity: merge records already merged (changed nothing)
    gap_records: int = 0  # records Faust skipped, read straight from the broker and folded
    batches: int = 0  # fold batches: records consumed / batches = the mean batch size
    by_topic: dict[str, int] = field(default_factory=dict)
    triggers: dict[str, int] = field(default_factory=dict)
    # triggers recorded but not sent: older than PERSONA_TRIGGER_MAX_AGE_HOURS (streams/triggers)
    triggers_stale: dict[str, int] = field(default_factory=dict)


class PersonaStreams:
    """Builds the Faust app for the given settings and exposes read access for the API."""

    def __init__(self, settings: Settings, broker_url: Broker, tansu: bool = False) -> None:
        self.settings = settings
        self.wall = WallClock()
        self.clock = EventTimeClock(self.wall)
        self.stats = StreamStats()
        self.catalog_generation = 0
        self._popular: list[str] = []
        self._partition_of = PartitionMemo(
            settings.partitions, PARTITION_MEMO, PARTITION_MEMO_BYTES
        )
        self._products = ProductMemo(PRODUCT_CACHE_MAX, PRODUCT_CACHE_BYTES)
        self._fold_products = FoldProducts(FOLD_PRODUCTS_MAX, FOLD_PRODUCTS_BYTES)
        self._popular_pacer = Pacer(read_side.POPULAR_REST)
        # content similarity of the catalog (issue 17); its pass after a start warms the fold's
        # product memo (a catch-up's first sightings then read nothing)
        self.content = CatalogContent(warm=self._fold_products.warm)
        n = settings.partitions
        kafka = as_config(broker_url)  # the URL and PERSONA_KAFKA_* security of every client
        key = cluster_key(settings.cluster_secret)  # commands are signed (streams/signed.py)
        # erased users' audit records are pseudonymized under it (engine/audit.py)
        self._audit_pseudonyms = AuditPseudonyms(settings.cluster_secret or "")
        self._audit_erased: list[str] = []
        self.signer = None if key is None else RecordSigner(key, f"worker:{settings.own_url}")
        self._cluster = key  # verifies the kept mark of republished catalog records (`_kept`)
        self.command_gate = RecordGate(COMMANDS_TOPIC, key)
        if tansu:
            tansu_fix.install(kafka)
        (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
        self._partitions = list(range(n))
        self.app = _App(
            "persona",
            broker=kafka.url,
            broker_credentials=kafka.faust_credentials(),
            store="rocksdb://",
            datadir=str(settings.data_dir / "faust"),
            topic_partitions=n,
            web_enabled=False,
            key_serializer="raw",
            value_serializer="raw",
            broker_session_timeout=settings.broker_session_timeout,
            broker_heartbeat_interval=min(3.0, settings.broker_session_timeout / 3),
            stream_wait_empty=False,
            consumer_auto_offset_reset="earliest",
            producer_linger=0.005,
            # aiokafka fills one batch per partition at a time and a send waits while it is full;
            # at Faust's 16 KB that is every ~16 changelog records of ~1 KB profiles.
            producer_max_batch_size=PRODUCER_BATCH_BYTES,
            table_standby_replicas=1,
            canonical_url=settings.own_url,
            monitor=QuietMonitor(),  # advertised to the group: routing to owners
            loghandlers=[],
        )
        app = self.app

        def topic(name: str, **kw: Any) -> faust.TopicT:
            return app.topic(name, key_type=bytes, value_type=bytes, partitions=n, **kw)

        # The events fold takes its records straight from the conductor (streams/delivery.py).
        self.input_topic = subscribe(app, [*INPUT_TOPICS, REKEYED_TOPIC, COMMANDS_TOPIC], n)
        self._fold = Fold(app)
        self.rekeyed_topic = topic(REKEYED_TOPIC)
        self.commands_topic = topic(COMMANDS_TOPIC)
        self.event_topics = {name: topic(name) for name in INPUT_TOPICS}
        # The catalog's records are applied in batches too (`_catalog_fold`).
        self.catalog_topic = subscribe(app, ["catalog"], n)
        self._catalog_batches = Fold(app)
        self.dead_letters = topic(DEAD_LETTERS)
        self.item_activity = topic(ITEM_ACTIVITY_TOPIC)
        # The popularity fold takes its records straight from the conductor too.
        self.activity_topic = subscribe(app, [ITEM_ACTIVITY_TOPIC], n)
        self._activity_fold = Fold(app)

        table_kw: dict[str, Any] = dict(
            key_type=bytes,
            value_type=bytes,
            partitions=n,
            options={"driver": "rocksdict", "write_buffer_size": WRITE_BUFFER_BYTES},
        )
        self.profiles = app.Table("profiles", default=None, **table_kw)
        self._profile_writer = TableWriter(self.profiles)  # the fold's batch writes
        # what the fold last wrote or read, decoded; every write goes through _write_profiles
        # PERSONA_PROFILE_CACHE_MB=0: none kept
        self._profile_cache = ProfileCache.within(self.settings.profile_cache_mb * 1024 * 1024)
        self.catalog = app.GlobalTable("catalog", default=None, **table_kw)
        # Catalog updates other workers make reach this one as changelog records of the table.
        cast(Any, self.catalog).apply_changelog_batch = functools.partial(
            self._apply_catalog_changelog, self.catalog.apply_changelog_batch
        )
        self._catalog_writer = TableWriter(self.catalog)  # the catalog fold's writes
        self.popularity = app.GlobalTable("popularity", default=None, **table_kw)
        self._popularity_writer = TableWriter(self.popularity)  # the popularity fold's writes
        # newest event time per partition: the event-time clock survives restarts
        self.clock_table = app.Table("clock", default=None, **table_kw)
        self._unkeyed_logged: set[str] = set()  # tables whose keyless changelog records were logged
        for table in (self.profiles, self.catalog, self.popularity, self.clock_table):
            cast(Any, table).apply_changelog_batch = functools.partial(
                self._keyed_changelog, table.name, table.apply_changelog_batch
            )
        # every partition of every table within one memory budget (streams/rocks_memory.py)
        self.rocks_memory = RocksMemory(settings.rocksdb_memory_mb * 1024 * 1024)
        for table in (self.profiles, self.catalog, self.popularity, self.clock_table):
            self.rocks_memory.bound(table)
        self._clock_seeded = False
        # Stream time per input topic-partition (the newest event time folded from it): lateness
        # is measured against the record's own topic-partition, so the topics and partitions a
        # worker reads at different speeds during a bulk replay do not make each other's events
        # late (engine.fold). "Now" (self.clock) is the newest of them all. Kept in the clock
        # table beside each partition number's newest time (engine.fold.seed_times).
        self._stream_time: dict[tuple[str, int], int] = {}
        self._lateness_ms = int(settings.lateness_days * 86_400_000)
        self._skew_ms = int(settings.max_clock_skew_seconds * 1000)
        self.triggers_topic = topic(TRIGGERS_TOPIC)
        self.exposures_topic = topic(EXPOSURES_TOPIC)  # written by streams.registry; tombstones
        self.models_provider: Callable[[], ModelSet | None] = lambda: None
        self.webhooks: WebhookSender | None = None
        self.triggers = TriggerRunner(self._trigger_ports())  # narrow ports, not this object
        self._fold_rules = Rules(self._lateness_ms, self._skew_ms)  # engine.fold's decisions
        self._fold_reads = self._reads()
        self.identity = Identity(self)  # identity merges (streams/identity.py)
        # Input positions (see streams.positions): the next offset to fold per (topic,
        # partition), loaded from the partition's RocksDB and forgotten on every rebalance.
        self._fold_topics = frozenset(self.input_topic.topics)
        self._positions: dict[tuple[str, int], int] = {}
        # Per input partition: the offset after the last one Faust delivered, and since when
        # (the position audit tells records Faust still holds from records it dropped).
        self._faust_marks: dict[tuple[str, int], tuple[int, float]] = {}
        self.backlog: Backlog | None = None  # POST /v1/events waits for the fold (embedded)
        self._positions_epoch = 0
        self._position_chain: asyncio.Future[None] | None = None
        self._last_delivery: dict[tuple[str, int], float] = {}
        self._sends: list[Any] | None = None  # messages produced by the batch being folded
        self._fold_lock = asyncio.Lock()
        self._layout_checked: set[int] = set()  # profiles partitions known to hold `u:` keys
        self._layout_ready = False  # the partitions assigned at start were checked (readiness)
        self.gaps = GapReader(kafka)
        self._broker_url = broker_url
        # topics whose partition count differs from the tables' since start-up (re-created):
        # {topic: partitions}; start-up refuses them (streams.admin.TopicMismatch)
        self.mismatched_topics: dict[str, int] = {}
        # (monotonic time of the first failed check, why) while the topic check cannot reach
        # the broker: /readyz says so
        self.broker_unreachable: tuple[float, str] | None = None
        app.on_partitions_revoked.connect(self._forget_positions)
        app.on_partitions_assigned.connect(self._forget_positions)
        app.on_partitions_assigned.connect(self._lean_delivery)
        app.on_partitions_assigned.connect(self._assigned)
        app.on_partitions_revoked.connect(self._ownership_revoked)
        app.on_before_shutdown.connect(self._stop_gap_reader)

        app.task(self._events_fold)
        app.task(self._catalog_fold)
        app.task(self._popularity_fold)
        app.timer(POPULAR_REFRESH)(self._refresh_popular)
        app.timer(CONTENT_SYNC_EVERY)(self._sync_content)
        app.timer(HELD_APPLY_EVERY)(self._apply_held_changelogs)
        app.timer(1.0)(self.triggers.check_due)
        app.timer(10.0)(self.triggers.sweep)
        app.timer(AUDIT_EVERY)(self._audit_positions)
        app.timer(TOPIC_CHECK_EVERY)(self._check_topics)
        app.timer(OWNERSHIP_EVERY)(self._publish_ownership)
        self.app.rebalance_ended = self._rebalance_ended
        self._ownership: tuple[str | None, ...] | None = None  # the view last published
        # Two held sets, which differ only after a write of the ownership file failed: `_held`,
        # the last published, tells the next tick to rewrite the file (a held set unlike it;
        # the view may be unchanged and the heartbeat not yet due); `_last_held`, the last taken
        # from the assignment, is what `held_partitions` falls back on when the lookup fails, so
        # that rewrite carries the newer set, not the stale one published. Either alone loses
        # one of the two (tests/streams/test_ownership_publish.py, a failed write retried).
        self._held: frozenset[int] | None = None  # the held partitions last published
        self._ever_assigned = False  # whether an assignment has arrived (`held_partitions`)
        self._last_held: frozenset[int] | None = None  # the held set last taken (`held_partitions`)
        self._held_failures: set[str] = set()  # kinds of lookup failure logged (`held_partitions`)
        self._ownership_at = 0.0  # monotonic time it was written
        self._others = False  # whether the view last taken names another worker (`scaled_out`)
        app.task(self._ready_at_start)

    # -- read side (used by the API, same process) ---------------------------------------------
    def profile(self, user_id: str) -> Profile | None:
        raw = self.profiles.get(user_key(user_id))
        return None if raw is None else Profile.unpack(raw)

    def merged_ids(self, user_id: str) -> list[str]:
        """The ids whose history an identify merged into the user (its `m:` row)."""
        return merged_ids_of(self.profiles.get(merged_of(user_key(user_id))))

    def merged_into(self, user_id: str) -> str | None:
        """The user an identify merged this id into (its `a:` row), as held here."""
        return alias_target_of(self.profiles.get(alias_of(user_key(user_id))))

    def product(self, item_id: str) -> Product | None:
        """A catalog product, through a decoded cache: the catalog changes rarely, events and
        blocks look the same items up over and over. An entry goes whenever its product changes:
        a local catalog update, or a changelog record of the catalog table applied here (how
        updates other workers made arrive)."""
        return self._products.lookup(item_id, self._stored_product)

    def _fold_product(self, item_id: str) -> Product | None:
        """A catalog product as the fold reads it (`Product.fold_view`), through its own memo
        (streams/read_side.FoldProducts); forgotten with `product`'s whenever it changes."""
        return self._fold_products.lookup(item_id, self._stored_product)

    def _forget_product(self, item_id: str) -> None:
        """Drop a changed product from both memos (the reads' and the fold's)."""
        self._products.pop(item_id)
        self._fold_products.pop(item_id)

    def _stored_product(self, key: bytes) -> bytes | None:
        """A catalog row straight from the global table's RocksDB partitions, the one Kafka's
        default partitioner places the key on first (where producers of the catalog topic put
        it), then the others. The table's own `get` took a containment check and a get, each
        over the partitions not yet indexed, and its mapping layers: ~10 % of a folding worker's
        py-spy samples at 100,000 items (the product memo misses in the long tail)."""
        dbs: dict[int, Any] = cast(Any, self.catalog.data)._dbs
        placed = default_partition(key, self.settings.partitions)
        first = dbs.get(placed)
        raw = None if first is None else first.get(key)
        if raw is not None:
            return cast(bytes, raw)
        for number, db in list(dbs.items()):
            if number != placed and db.key_may_exist(key):  # its bloom filters: no read
                raw = db.get(key)
                if raw is not None:
                    return cast(bytes, raw)
        return None

    def _stored_catalog_rows(self) -> Iterator[tuple[bytes, bytes]]:
        """Every catalog row straight from the table's RocksDB partitions. Faust opens a
        partition's database when it first needs it, also while a pass over the table gives the
        stream its turns: the table's `items()` then stopped with "dictionary changed size during
        iteration" and the whole pass began again (measured at a restart with 100,000 items).
        This reads the partitions open when it starts, then any opened meanwhile."""
        dbs: dict[int, Any] = cast(Any, self.catalog.data)._dbs
        done: set[int] = set()
        while fresh := [(n, db) for n, db in list(dbs.items()) if n not in done]:
            for number, db in fresh:
                done.add(number)
                for key, value in db.items():
                    if key != FAUST_OFFSET_KEY:
                        yield key, value

    def _apply_catalog_changelog(self, apply: Callable[[Any], None], batch: Any) -> None:
        """The catalog table's `apply_changelog_batch`: store the records, then forget the cached
        products they change and move `catalog_generation` (cached blocks re-check)."""
        records = list(batch)
        apply(records)
        if not records:
            return
        for record in records:
            key = record.message.key
            if isinstance(key, bytes):
                self._forget_product(key.decode(errors="replace"))
                self.content.apply(key, record.message.value)
        self.catalog_generation += 1

    def _keyed_changelog(self, name: str, apply: Callable[[Any], None], batch: Any) -> None:
        """A table's `apply_changelog_batch` (recovery, standbys, the global tables), passing
        over records without a key: Persona writes none, but anyone who can produce to the
        changelog topic can, and Faust's RocksDB store raised on one, which stopped every table
        recovery of the worker (a restart never became ready). Counted in
        `changelog_unkeyed`, logged once per table."""
        records: list[Any] = []
        unkeyed = 0
        for record in batch:
            if isinstance(record.message.key, bytes):
                records.append(record)
            else:
                unkeyed += 1
        if unkeyed:
            if name not in self._unkeyed_logged:
                self._unkeyed_logged.add(name)
                log.error(
                    "passed over %d record(s) without a key on the changelog of table %s "
                    "(not written by Persona: someone produced to the topic; counted in "
                    "persona_changelog_unkeyed_total)",
                    unkeyed, name,
                )  # fmt: skip
            self.stats.changelog_unkeyed += unkeyed
        apply(records)

    def popular(self) -> list[str]:
        return self._popular

    def ready(self) -> tuple[bool, str]:
        recovered = self._recovered()
        if recovered != "ok":
            return False, recovered
        if not self._clock_seeded:
            self._seed_clock()
        if not self._layout_ready:
            if self._unchecked_partitions():
                return False, "checking the layout of stored profiles"
            self._layout_ready = True  # the fold checked every assigned partition before the audit
        if self.broker_unreachable is not None:  # it answers from the state it has
            return True, "ok; " + self.broker_problem()
        if self.mismatched_topics:  # it answers from what it folds, and says what it cannot read
            return True, "ok; " + self.topics_problem()
        behind = self.lag_records()
        if behind:  # ready: it answers from what it folded, and says how far behind that is
            return True, f"ok; catching up: {behind:,} input records behind"
        return True, "ok"

    def topics_problem(self) -> str:
        """What `mismatched_topics` means, in one line."""
        n = self.settings.partitions
        found = ", ".join(f"{t} has {c}" for t, c in sorted(self.mismatched_topics.items()))
        return (
            f"PERSONA_PARTITIONS is {n} but {found} partitions (re-created?): records on "
            "partitions past it are not read (docs/streams.md)"
        )

    def broker_problem(self) -> str:
        """What `broker_unreachable` means, in one line."""
        since, why = self.broker_unreachable or (time.monotonic(), "")
        url = as_config(self._broker_url).url
        return (
            f"the broker is unreachable (PERSONA_BROKER_URL={url}) for at least "
            f"{time.monotonic() - since:,.0f} s: {why}; answering from the state kept"
        )

    async def _check_topics(self) -> None:
        """Input topics re-created with another partition count while the worker runs (start-up
        refuses them): records on partitions past the tables' were never read, without a word.
        Now said at /readyz, in the log and by `persona_topic_partitions_mismatched`. A broker
        that cannot be reached is said at /readyz and in the log too (it said `ok`)."""
        try:
            counts = await partition_counts(self._broker_url, COPARTITIONED)
        except Exception as exc:  # checked again at the next tick
            log.debug("the topics' partition counts are unavailable", exc_info=True)
            why = (str(exc) or type(exc).__name__)[:300]
            first = self.broker_unreachable is None
            self.broker_unreachable = (
                self.broker_unreachable[0] if self.broker_unreachable else time.monotonic(),
                why,
            )
            if first:
                log.warning("%s", self.broker_problem())
            return
        if self.broker_unreachable is not None:
            log.warning("the broker is reachable again (PERSONA_BROKER_URL)")
            self.broker_unreachable = None
        found = {t: c for t, c in counts.items() if c != self.settings.partitions}
        changed, self.mismatched_topics = found != self.mismatched_topics, found
        if found and changed:
            log.error("%s", self.topics_problem())

    def lag_records(self) -> int:
        """Input records of the partitions this worker folds past the positions its state
        reaches (the high watermarks as the consumer last saw them); 0 when unknown."""
        try:
            consumer: Any = self.app.consumer
            behind = 0
            for tp in cast(Any, self.app.assignor).assigned_actives():
                end = consumer.highwater(tp) if tp.topic in self._fold_topics else None
                if end is not None:
                    at = self._positions.get((tp.topic, tp.partition))
                    if at is None:
                        at = self._stored_position(tp.topic, tp.partition)
                    behind += max(0, int(end) - at)
            return behind
        except Exception:  # not started, rebalancing: no figure this time
            log.debug("worker lag unavailable", exc_info=True)
            return 0

    def _recovered(self) -> str:
        recovery = cast(Any, self.app.tables).recovery
        if not recovery.completed.is_set():
            # the count moves while it reads: `persona run` tells a long recovery from a stuck one
            try:
                if not recovery.active_highwaters and not self.app.assignor.assigned_actives():
                    return (  # the group's join: no figure yet, and "0 to read" looked stuck
                        f"tables recovering: waiting for the consumer group ({self.app.conf.id})"
                        " to assign partitions"
                    )
                # a partition read past the high-water mark taken at the start (the embedded
                # broker under-reports it; records written meanwhile) has none left, not -n
                left = sum(max(0, int(n)) for n in recovery.active_remaining().values())
            except Exception:  # Faust's figures before the assignment: the plain words
                return "tables recovering"
            return f"tables recovering: {left:,} changelog records to read"
        return "rebalancing" if self.app.rebalancing else "ok"

    def _seed_clock(self) -> None:
        """After recovery: restore the event-time clock from the newest time of each partition
        and the stream time of each input topic-partition (engine.fold.seed_times)."""
        rows = self.clock_table.items()
        topics = [*INPUT_TOPICS, REKEYED_TOPIC]  # an earlier version's time seeds each of them
        clock, stream_time = seed_times(rows, topics, self.wall.now_ms())
        for ts in [*clock.values(), *stream_time.values()]:
            self.clock.observe(ts)
        for key, ts in stream_time.items():
            self._stream_time[key] = max(self._stream_time.get(key, ts), ts)
        self._clock_seeded = True

    def owner_url(self, user_id: str) -> str | None:
        """The API URL of the worker that owns this user's partition, or None when it is this
        worker (or ownership is unknown: then this worker answers from what it has)."""
        try:
            url = str(self.app.router.key_store("profiles", user_id.encode())).rstrip("/")
        except Exception:  # no assignment yet, or the owner left the group
            return None
        return None if url == self.settings.own_url else url

    def owner_known(self, user_id: str) -> bool:
        """Whether the group's assignment names an owner of the user's partition (this worker or
        another), as `ownership_view` (what the readers route by) says: not while rebalancing,
        nor before the first assignment (then `owner_url` is None, and this worker holds at
        most a standby copy of the user's partition)."""
        partition = self._partition_of.partition(user_id.encode())
        return self.ownership_view()[partition] is not None

    def scaled_out(self) -> bool:
        """Whether the group's assignment (as last taken for the readers, every
        `OWNERSHIP_EVERY` s) names another worker as the owner of some profiles partition: when
        not, `owner_url` is None for every user and a batch asks it for none (api/fanout.py)."""
        return self._others

    def ownership_view(self) -> tuple[str | None, ...]:
        """Per profiles partition, the API URL of its owner as the group's assignment says;
        None for each while rebalancing or before the first assignment (engine/ownership.py)."""
        n = self.settings.partitions
        owners: list[str | None] = [None] * n
        if self.app.rebalancing:
            return tuple(owners)
        try:
            hosts = self.app.router.table_metadata("profiles")
        except Exception:  # no assignment yet
            return tuple(owners)
        for url, topics in hosts.items():
            for partitions in topics.values():
                for p in partitions:
                    if isinstance(p, int) and 0 <= p < n:
                        owners[p] = str(url).rstrip("/")
        return tuple(owners)

    def held_partitions(self) -> frozenset[int] | None:
        """The profiles partitions this worker holds as its latest assignment says: owned (its
        input partitions, co-partitioned with the table) or stood by for (the table's changelog
        partitions it is a standby of). Its readers answer no other partition's users from the
        tables (engine/ownership.py `held`). None before the first assignment: it cannot tell,
        and the file then says every partition (a restarted lone worker's readers answer what it
        stored, as before `held` existed), an empty assignment once one arrived says none.
        Should looking the assignment up fail, the held set last taken stands (None if none was:
        it cannot tell), and a warning says why, once per kind of failure (an empty set would
        have the readers answer nobody from the tables, silently)."""
        if not self._ever_assigned:
            return None
        try:
            assignor = cast(Any, self.app.assignor)
            tps = assignor.assigned_actives() | assignor.assigned_standbys()
            changelog = self.profiles.changelog_topic.get_topic_name()
            held = frozenset(
                tp.partition
                for tp in tps
                if (tp.topic in INPUT_TOPICS or tp.topic == changelog)
                and 0 <= tp.partition < self.settings.partitions
            )
        except Exception as exc:  # Faust's assignor or the table in a state it should not be in
            kind = type(exc).__name__
            if kind not in self._held_failures:
                self._held_failures.add(kind)
                last = self._last_held
                log.warning(
                    "could not take the held partitions from the assignment (%s: %s): the"
                    " readers keep the last taken (%s)",
                    kind,
                    exc,
                    "none taken: every partition" if last is None else sorted(last),
                )
            return self._last_held
        self._last_held = held
        return held

    async def _publish_ownership(self) -> None:
        """Write the ownership view to the data dir for the readers (streams/readers.py) when it
        changed, and at least every `ownership.HEARTBEAT` s (they stop routing by a stale one)."""
        view, held = self.ownership_view(), self.held_partitions()
        now = time.monotonic()
        fresh = now - self._ownership_at < ownership.HEARTBEAT
        if view == self._ownership and held == self._held and fresh:
            return
        self._write_ownership(view, held)

    async def _apply_held_changelogs(self) -> None:
        """Apply the changelog records Faust holds back outside a table recovery (which applies
        its own buffers when it ends). Faust applies them only once 1,000 are buffered per table
        (`recovery_buffer_size`, `standby_buffer_size`), also after recovery has ended:
        - the global tables (catalog, popularity): every partition of their changelog is
          "active" on every worker (faust/assignor, so that each recovers all of it at start), so
          in a group of several workers the products and scores one worker folded reached the
          others a thousand records at a time, or at the next rebalance (seen: every user of
          worker b got the fallback cart_reminder, `nothing_personal`, for items a folded);
        - standby partitions: in a quiet shop a standby kept what the owner had since changed or
          erased (an erased user's profile) indefinitely, and answered it whenever it answered
          locally (the owner unreachable, a rebalance, a request marked routed) and to its
          readers."""
        recovery: Any = getattr(self.app.tables, "recovery", None)  # faust.tables.Recovery
        if recovery is not None and not recovery.in_recovery and any(recovery.buffers.values()):
            recovery.flush_buffers()

    async def _assigned(self, *args: Any, **kwargs: Any) -> None:
        """An assignment arrived: the held partitions it names at once (the owners stay unknown
        until the rebalance ends, `_rebalance_ended`)."""
        self._ever_assigned = True
        self._rebalance_ended()

    def _rebalance_ended(self) -> None:
        """The readers' view at once when a rebalance ends (`_App`), not at the next tick (and
        when an assignment arrives: `_assigned`)."""
        self._write_ownership(self.ownership_view(), self.held_partitions())

    async def _ownership_revoked(self, *args: Any, **kwargs: Any) -> None:
        """A rebalance began: ownership unknown until it ends (readers answer locally, from the
        partitions held until the next assignment: as current as any copy until it arrives)."""
        self._write_ownership((None,) * self.settings.partitions, self.held_partitions())

    def _write_ownership(self, view: tuple[str | None, ...], held: frozenset[int] | None) -> None:
        own = self.settings.own_url
        self._others = any(url is not None and url != own for url in view)
        try:
            path = self.settings.data_dir / ownership.FILE_NAME
            ownership.write(path, self.settings.own_url, view, held)
        except OSError as exc:  # a full disk: readers stop routing once the file is stale
            log.warning("could not publish partition ownership for the readers: %s", exc)
            return
        if view != self._ownership:
            log.info("partition ownership for the readers: %s", ownership.describe(view))
        self._ownership, self._held, self._ownership_at = view, held, time.monotonic()

    async def erase(self, user_id: str) -> None:
        """Queue the erasure of a user: it runs in the user's partition, in order with events;
        returns once the broker acknowledged the command (streams/read_side.py)."""
        await read_side.erase(self._send_named, self.signer, user_id)

    async def send_command(
        self, key: bytes, body: bytes, partition: int | None = None
    ) -> asyncio.Future[Any]:
        """Produce a command, signed with the cluster secret (the fold refuses unsigned ones)."""
        headers = self.signer.headers(COMMANDS_TOPIC, key, body) if self.signer else None
        return await self.send_raw(
            self.commands_topic, key, body, headers=headers, partition=partition
        )

    async def produce(self, events: list[Event]) -> None:
        """Produce validated events to their input topics, keyed by user id (the direct path);
        with a `backlog` (the embedded broker), return once the fold is close behind them."""
        await read_side.produce(self._send_named, events, self.backlog)

    async def _send_named(
        self, topic: str, key: bytes, value: bytes, headers: Headers | None
    ) -> asyncio.Future[Any]:
        """`read_side.Send` over `send_raw`: the input and command topics, by name."""
        named = self.commands_topic if topic == COMMANDS_TOPIC else self.event_topics[topic]
        return await self.send_raw(named, key, value, headers=headers)

    # -- agents ----------------------------------------------------------------------------------
    async def _dead_letter(self, event: Carrier, reason: str) -> None:
        msg = event.message
        self.stats.invalid += 1
        source = Source(msg.topic, msg.partition, msg.offset, msg.timestamp)
        dead = letter(msg.key, msg.value, source, reason, DEAD_LETTER_MAX_BYTES)
        log.warning(
            "dead-letter %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, shorten(reason)
        )
        self.track(
            await self.send_raw(self.dead_letters, dead.key, dead.value, headers=dead.headers)
        )

    async def dead_letter_batch(self, batch: CorruptBatch) -> None:
        """The dead letter of a record batch the fetch passed over as corrupt: its records cannot
        be read, so the letter names the topic, partition and offsets (the first in the
        source headers, the range in the reason) and carries no value."""
        self.stats.invalid += 1
        source = Source(batch.topic, batch.partition, batch.first, None)
        dead = letter(None, None, source, batch.describe(), DEAD_LETTER_MAX_BYTES)
        self.track(
            await self.send_raw(self.dead_letters, dead.key, dead.value, headers=dead.headers)
        )

    async def send_raw(
        self,
        topic: faust.TopicT,
        key: bytes | None,
        value: bytes | None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> asyncio.Future[Any]:
        """Produce one record through the aiokafka producer under Faust's, without Faust's
        per-message machinery (FutureMessage, serializers, callbacks): measured here, ~10-11k
        sends/s through `topic.send` against 61-92k/s through aiokafka. Placed as Faust places it
        (the default murmur2 partitioner over the key). Returns once queued; the future resolves
        when the broker acknowledges the record. `timestamp_ms`: the record's time (None: now)."""
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        sent = await producer.send(
            topic.get_topic_name(),
            value,
            key=key,
            partition=partition,
            headers=headers,
            timestamp_ms=timestamp_ms,
        )
        return cast("asyncio.Future[Any]", sent)

    def track(self, sent: Any) -> None:
        """Keep a message produced while folding a batch: the batch's positions are stored only
        once every such message is acknowledged, so a crash cannot lose one."""
        if self._sends is not None:
            self._sends.append(sent)

    async def _events_fold(self) -> None:
        """The events fold: batches of records from the input topics, folded and written, then
        acknowledged (offsets are committed only for records whose state is written)."""
        fast_wait_first(self.app.consumer)  # bulk_drain: at each assignment (_lean_delivery)
        # Faust's conductor stops delivering records to flush its producer buffer whenever it
        # holds more than 100 messages. Profiles go to the changelog around it (TableWriter) and
        # produced messages go to aiokafka (send_raw); a batch still queues its input positions
        # and the clock table's changelog records there.
        self.app.producer.buffer.max_messages = PRODUCER_BUFFER_MAX
        await self._consume(self.input_topic, self._fold, self._locked_batch, "stream processing")

    async def _lean_delivery(self, *args: Any, **kwargs: Any) -> None:
        """At an assignment, before the table recovery it starts hands over to the fetcher:
        the fetch loop the fetcher then runs is `bulk_drain`'s (it looks the loop up when it
        starts, which is after the first assignment's recovery)."""
        bulk_drain(self.app.consumer, self.dead_letter_batch)

    async def _locked_batch(self, batch: list[Delivered], epoch: int) -> bool:
        self.stats.batches += 1
        async with self._fold_lock:
            return await self._process_batch(batch, epoch)

    async def _consume(
        self,
        topic: FoldTopic,
        fold: Fold,
        process: Callable[[list[Delivered], int], Awaitable[bool]],
        what: str,
    ) -> None:
        """Take batches of `topic`'s records (streams/delivery.py), `process` each and
        acknowledge it once written (offsets are committed only for records whose state is
        written; a batch not written is read again)."""
        queue = topic.queue
        while not self.app.should_stop:
            batch = fold.accept(await take(queue, BATCH_MAX, BATCH_WITHIN))
            if not batch:
                continue
            try:
                written = await process(batch, fold.epoch)
            except Exception as exc:
                # Bad data never gets here (it is dead-lettered per message); this is the broker
                # or the state store failing. Crash the worker rather than lose or skip events:
                # a supervisor restarts it and it resumes from the last committed offsets.
                log.exception("%s failed; stopping the worker", what)
                await self.app.crash(exc)
                raise
            if written:
                fold.ack(batch)

    def _load(self, user: bytes, fevent: Carrier, touched: Touched) -> Profile | None:
        """The user's current profile; ValueError when the stored value cannot be read."""
        if user in touched:
            return touched[user][0]  # None after an erasure in this batch
        return self._stored_profile(user, fevent.message.partition)

    def hold_for_fold(self, request_timeout: float) -> None:
        """Make `produce` wait for the fold (the embedded broker: streams/backlog.py), at most
        a third of the request timeout, so a request that waited still answers."""
        self.backlog = Backlog(self._stored_position, wait=hold_wait(request_timeout))

    def profile_db(self, partition: int) -> Any:
        """The RocksDB (rocksdict) of one partition of the profiles table: raw keys and values,
        beside Faust's own `__faust` offset keys."""
        return cast(Any, self.profiles.data)._db_for_partition(partition)

    def _ensure_layout(self, partitions: set[int]) -> None:
        """Move the profiles an earlier version stored under plain user ids in these partitions
        under the `u:` key space (`streams.keys.layout_moves`), once per partition and before
        anything else is written there. Synchronous: nothing on the event loop runs in between;
        the changelog records are shipped with the next `ship`."""
        for partition in partitions - self._layout_checked:
            db = self.profile_db(partition)
            if db.get(LAYOUT_KEY) != LAYOUT:
                moves = layout_moves(db.items())
                if len(moves) > 1:
                    log.warning(
                        "partition %d: moving %d profiles stored by an earlier version under "
                        "the u: key space",
                        partition,
                        len(moves) // 2,
                    )
                self._write_profiles(partition, moves)
            self._layout_checked.add(partition)

    def _unchecked_partitions(self) -> set[int]:
        """Assigned input partitions whose stored layout was not checked yet (`_ensure_layout`:
        by the fold, for the partitions of each batch, or by the position audit)."""
        actives = cast(Any, self.app.assignor).assigned_actives()
        return {tp.partition for tp in actives if tp.topic in INPUT_TOPICS} - self._layout_checked

    # -- positions (streams.positions) -----------------------------------------------------------
    async def _forget_positions(self, *args: Any, **kwargs: Any) -> None:
        """On every rebalance: positions are re-read from each partition's RocksDB, and a batch
        that was folding across the rebalance stores none."""
        self._positions.clear()
        self._faust_marks.clear()
        self._positions_epoch += 1
        self._layout_checked.clear()
        self._profile_cache.clear()  # table recovery may rewrite the partitions

    async def _stop_gap_reader(self, *args: Any, **kwargs: Any) -> None:
        try:
            await self.gaps.stop()
        except Exception:  # shutting down: nothing to save
            log.debug("could not stop the gap reader", exc_info=True)

    def _stored_position(self, topic: str, partition: int) -> int:
        """Where the state of a partition reaches: its stored position, or 0 (the start of the
        partition's log) when none is stored yet. Faust's committed offsets may lie past records
        the state lacks even then: a worker killed before its first position write was
        acknowledged had its offsets committed, and its successor, trusting the first record
        delivered, lost every record before it."""
        return parse_position(self.profile_db(partition).get(position_key(topic))) or 0

    async def _in_order(self, batch: list[Delivered], limit: int | None = None) -> Ordered:
        """The batch without records already folded (below their partition's position) and
        with any records skipped before them read from the broker and put in their place.

        With `limit`, at most `limit` skipped records are put in (issue 21 item 2): at a gap
        that would pass it, the batch stops. `Ordered.gap` names that range (folded on its own
        in chunks, `_fold_gap`) and `Ordered.rest` the records from the one that revealed it
        on, whose positions have not moved."""
        positions = self._positions
        out: list[Delivered] = []
        gaps: list[tuple[int, tuple[str, int], int, int]] = []
        room = limit
        now = time.monotonic()
        for at, fevent in enumerate(batch):
            msg = fevent.message
            key = (msg.topic, msg.partition)
            try:
                expected = positions[key]
            except KeyError:
                expected = positions[key] = self._stored_position(msg.topic, msg.partition)
            offset = msg.offset
            if offset < expected:
                self.stats.redelivered += 1
                continue
            if offset > expected:
                if room is not None and offset - expected > room:
                    await self._fill_gaps(out, gaps)
                    return Ordered(out, (key, expected, offset), batch[at:])
                gaps.append((len(out), key, expected, offset))
                room = None if room is None else room - (offset - expected)
            positions[key] = offset + 1
            self._last_delivery[key] = now
            out.append(fevent)
        await self._fill_gaps(out, gaps)
        return Ordered(out)

    async def _fill_gaps(
        self, out: list[Delivered], gaps: list[tuple[int, tuple[str, int], int, int]]
    ) -> None:
        """Read each skipped range from the broker and put its records in their place."""
        for index, key, start, end in reversed(gaps):
            log.warning(
                "%s[%s]: offsets %d..%d lie past the stored position but were not delivered "
                "(committed offsets ran ahead of it); reading them from the broker",
                key[0],
                key[1],
                start,
                end - 1,
            )
            found = (await self.gaps.read({key: (start, end)})).get(key, [])
            self.stats.gap_records += len(found)
            out[index:index] = cast(list[Delivered], found)

    def _commit_positions(self, advanced: dict[tuple[str, int], int], epoch: int) -> None:
        """Store the batch's positions after its profile writes and, when the batch produced
        messages, once all of them are acknowledged (in batch order)."""
        sends, self._sends = self._sends, None
        if not advanced:
            return
        previous = self._position_chain
        if not sends and (previous is None or previous.done()):
            self._send_positions(advanced, epoch)
        else:
            self._position_chain = asyncio.ensure_future(
                self._positions_after(previous, sends or [], advanced, epoch)
            )

    async def _positions_after(
        self,
        previous: asyncio.Future[None] | None,
        sends: list[Any],
        advanced: dict[tuple[str, int], int],
        epoch: int,
    ) -> None:
        try:
            if previous is not None:
                await previous
            if sends:
                await asyncio.gather(*sends)
        except Exception as exc:
            log.exception("a message produced while folding was not delivered; stopping")
            await self.app.crash(exc)
            return
        self._send_positions(advanced, epoch)

    def _send_positions(self, advanced: dict[tuple[str, int], int], epoch: int) -> None:
        if epoch != self._positions_epoch:
            return  # a rebalance came in between: the next owner reads from what is stored
        changelog = self.profiles.changelog_topic
        for (topic, partition), position in advanced.items():
            changelog.send_soon(
                key=position_key(topic),
                value=b"%d" % position,
                partition=partition,
                key_serializer="raw",
                value_serializer="raw",
                callback=functools.partial(
                    self._position_stored, topic, partition, position, epoch
                ),
                eager_partitioning=True,
            )

    def _position_stored(
        self, topic: str, partition: int, position: int, epoch: int, fut: Any
    ) -> None:
        """The changelog holds the position: now the local RocksDB may hold it too."""
        try:
            fut.result()
        except Exception:
            log.warning("could not store the position of %s[%s]", topic, partition, exc_info=True)
            return
        if epoch != self._positions_epoch:
            return
        db = self.profile_db(partition)
        key = position_key(topic)
        stored = parse_position(db.get(key))
        if stored is None or stored < position:
            db.put(key, b"%d" % position)

    async def _check_layout(self) -> None:
        """Check the stored layout of every assigned input partition (before readiness: an
        earlier version's layout moves), then say ready."""
        if unchecked := self._unchecked_partitions():
            async with self._fold_lock:
                self._ensure_layout(unchecked)
                await self._profile_writer.ship()
        self._layout_ready = True

    async def _ready_at_start(self) -> None:
        """Readiness as soon as the first recovery completes, not at the position audit's first
        tick (up to AUDIT_EVERY later): a restarted worker folding its backlog meanwhile says
        it is catching up rather than not ready."""
        try:
            while not self._layout_ready and not self.app.should_stop:
                if self._recovered() == "ok":
                    await self._check_layout()
                    return
                await asyncio.sleep(READY_POLL)
        except Exception:
            log.exception("the layout check at start failed; the position audit retries it")

    async def _audit_positions(self) -> None:
        """Fold what Faust did not deliver to partitions that receive nothing: their position
        lies below their end, and no later record comes to reveal the gap."""
        try:
            if self._recovered() != "ok":
                return
            await self._check_layout()
            if not self.ready()[0]:
                return
            now = time.monotonic()
            consumer: Any = self.app.consumer
            queued = _newest_queued(self.input_topic.queue)
            ranges: dict[tuple[str, int], tuple[int, int | None]] = {}
            for tp in cast(Any, self.app.assignor).assigned_actives():
                key = (tp.topic, tp.partition)
                if (
                    tp.topic not in self._fold_topics
                    or now - self._last_delivery.get(key, 0.0) < AUDIT_IDLE
                ):
                    continue
                if key not in self._positions:
                    self._positions[key] = self._stored_position(tp.topic, tp.partition)
                position = self._positions[key]
                end = consumer.highwater(tp)
                if end is not None and int(end) <= position:
                    continue
                read = consumer._read_offset.get(tp)
                delivered = 0 if read is None else int(read) + 1
                mark = self._faust_marks.get(key)
                if mark is None or mark[0] != delivered:
                    mark = self._faust_marks[key] = (delivered, now)
                if queued.get(key, -1) >= position or _delivery_pending(
                    _handed_offset(consumer, tp, delivered), delivered, end, now - mark[1]
                ):
                    continue  # records of it wait for the fold, or Faust has more to deliver
                ranges[key] = (position, None)
            await self._catch_up(ranges)
        except Exception:
            log.exception("the position audit failed; retrying at the next tick")

    async def _catch_up(self, ranges: dict[tuple[str, int], tuple[int, int | None]]) -> None:
        """Read the records the audit found missing and fold them in bounded chunks (issue 21):
        at most `catch_up_chunk` records read at a time, folded in batches of BATCH_MAX with the
        fold lock released between them (delivered records and the HTTP API go on), reading on
        from the positions that moved while a chunk came full. It read a whole backlog at once
        before: 2.37M records at 1M users, RSS >= 6.8 GB, HTTP unanswered."""
        chunk = self.settings.catch_up_chunk
        while ranges and not self.app.should_stop:
            found = await self.gaps.read(ranges, limit=chunk)
            batch = [event for events in found.values() for event in events]
            if not batch:
                return
            log.warning(
                "%d records were not delivered to partitions that receive nothing; "
                "read them from the broker: %s",
                len(batch),
                {f"{t}[{p}]": len(events) for (t, p), events in found.items() if events},
            )
            self.stats.gap_records += len(batch)
            for start in range(0, len(batch), BATCH_MAX):
                part = cast(list[Delivered], batch[start : start + BATCH_MAX])
                async with self._fold_lock:
                    await self._process_batch(part, self._fold.epoch)
                await asyncio.sleep(0)
            if len(batch) < chunk:
                return
            ranges = {k: (at, None) for k in ranges if (at := self._positions.get(k)) is not None}

    async def _process_batch(self, batch: list[Delivered], fold_epoch: int) -> bool:
        """Fold and write one batch and store its positions; False when a rebalance began
        meanwhile and what was not written is read again. A skipped range longer than
        `catch_up_chunk` is folded on its own, a chunk at a time, where it lies in the batch."""
        while True:
            ordered = await self._in_order(batch, self.settings.catch_up_chunk)
            if not await self._write_ordered(ordered.records, fold_epoch):
                return False
            if ordered.gap is None:
                return True
            if not await self._fold_gap(*ordered.gap, fold_epoch):
                return False
            batch = ordered.rest

    async def _write_ordered(self, batch: list[Delivered], fold_epoch: int) -> bool:
        """Fold and write records in order and store their positions (False: not written)."""
        epoch = self._positions_epoch
        self._sends = []
        # each topic-partition's records lie in offset order: its last one's offset wins (a
        # fetched record is its own message: no property call a record, issue 21 item 5)
        advanced: dict[tuple[str, int], int] = {}
        for f in batch:
            m = f if type(f) is FoldRecord else f.message
            advanced[(m.topic, m.partition)] = m.offset + 1
        self._ensure_layout({partition for _, partition in advanced})
        written = await self._fold_batch(batch, fold_epoch)
        if written:
            self._commit_positions(advanced, epoch)
        else:
            self._sends = None
            for key in advanced:  # read again from what is stored
                self._positions.pop(key, None)
        return written

    async def _fold_gap(self, key: tuple[str, int], start: int, end: int, fold_epoch: int) -> bool:
        """Fold the skipped records `[start, end)` of one partition, `catch_up_chunk` read at a
        time and folded in batches of BATCH_MAX, so memory stays bounded however far behind
        the committed offsets ran (issue 21 item 2). The fold lock stays held (the delivered
        batch waits behind the range); other coroutines, HTTP among them, run between chunks."""
        chunk = max(1, self.settings.catch_up_chunk)
        log.warning(
            "%s[%s]: offsets %d..%d lie past the stored position but were not delivered; "
            "reading them from the broker %d at a time",
            key[0],
            key[1],
            start,
            end - 1,
            chunk,
        )
        for at in range(start, end, chunk):
            upto = min(at + chunk, end)
            found = cast(list[Delivered], (await self.gaps.read({key: (at, upto)})).get(key, []))
            self.stats.gap_records += len(found)
            for first in range(0, len(found), BATCH_MAX):
                if not await self._write_ordered(found[first : first + BATCH_MAX], fold_epoch):
                    return False
            self._positions[key] = upto
            await asyncio.sleep(0)
        return True

    async def _fold_batch(self, batch: list[Delivered], epoch: int) -> bool:
        """Fold and write one batch; False when a rebalance began meanwhile (nothing written).
        The decisions are `engine.fold`'s: this feeds it the records in order, runs the
        commands between them, ships what it says and writes what it folded."""
        fold: BatchFold[Carrier] = BatchFold(
            self._fold_reads, self._fold_rules, self.wall, self._stream_time
        )
        self.identity.begin()
        # partition -> catalog changes (command, signing time, its record)
        item_changes: dict[int, list[tuple[dict[str, Any], int, Carrier]]] = {}
        # A plain loop (no coroutine per record): an await only for a command, for what a
        # record ships (rare) and for the event loop's turns (HTTP answers between slices).
        turns = Turns(FOLD_SLICE)
        fold_event = fold.event
        by_topic = self.stats.by_topic
        for fevent in batch:
            msg = fevent if type(fevent) is FoldRecord else fevent.message
            topic = msg.topic
            by_topic[topic] = by_topic.get(topic, 0) + 1
            if topic == COMMANDS_TOPIC:
                await self._command(fevent, fold, item_changes)
            else:
                # a fetched record is the fold's record too; a gap read's is made one
                step = fold_event(msg if type(msg) is FoldRecord else _record(msg), fevent)
                if step is not NOTHING:
                    await self._ship(step, fevent)
            if turns.due():
                await asyncio.sleep(0)
        folded = fold.result()
        self._took(folded)
        try:  # a trigger must never cost the batch its state
            fired = await self._item_triggers(item_changes, folded.touched)
        except Exception:
            log.exception("item-change triggers failed for a batch; they are skipped")
            fired = []
        try:
            fired += self.triggers.evaluate(folded.touched)
        except Exception:  # a trigger must never cost the batch its state
            log.exception("trigger evaluation failed for a batch; its triggers are skipped")
        writes, refused = profile_writes(folded.touched, _partition_of, MAX_PROFILE_BYTES)
        written = {user: len(value) for items in writes.values() for user, value in items if value}
        for user, (at, partition) in folded.fences.items():
            writes.setdefault(partition, []).append((fence_of(user), b"%d" % at))
        for partition, key, value in self.identity.writes():
            writes.setdefault(partition, []).append((key, value))
        if refused:
            await self._refuse_users(batch, refused)
        # No await from this check to the last write: the writes cannot interleave with the
        # table recovery of a rebalance.
        if not self._fold.current(epoch):
            log.info("a rebalance began during a batch of %d records: read again", len(batch))
            self._profile_cache.clear()  # its loads may have read a partition under recovery
            return False
        self._write_folded(writes, folded.touched, written)
        await self._profile_writer.ship()
        await self._after_write(folded, fired, refused, fold.wall)
        return True

    async def _item_triggers(
        self,
        item_changes: dict[int, list[tuple[dict[str, Any], int, Carrier]]],
        touched: dict[bytes, tuple[Profile | None, Carrier, bool]],
    ) -> list[Trigger]:
        """The batch's catalog-change triggers, per partition over its users as the batch leaves
        them (streams/triggers.py `items_changed`: the firings it marks join `touched`)."""
        fired: list[Trigger] = []
        for partition, changes in item_changes.items():
            mine = {u: e for u, e in touched.items() if _partition_of(e[1]) == partition}
            commands = [(command, signed_ms) for command, signed_ms, _ in changes]
            carrier = changes[-1][2]  # a command of the partition: its profiles' partition
            fired += await self.triggers.items_changed(partition, commands, mine, carrier)
            touched.update(mine)
        return fired

    async def _ship(self, step: Step, fevent: Carrier) -> None:
        """Send what the fold decided for one event record (called for a step other than
        NOTHING: most records ship nothing)."""
        if step.dead is not None:
            await self._dead_letter(fevent, step.dead)
        elif step.rekey is not None:  # produced when the original was: the erasure fence
            value, stamp = fevent.message.value, record_ms(fevent.message)
            self.track(
                await self.send_raw(self.rekeyed_topic, step.rekey, value, timestamp_ms=stamp)
            )
        elif step.forward is not None:
            await self._forward(step.forward, fevent, step.user)
        elif step.identify is not None:  # asked again when redelivered (streams/identity.py)
            await self.identity.identify(step.identify, fevent)

    async def _forward(self, event: Event, fevent: Carrier, user: bytes) -> None:
        """An event of an id merged into a user (identity): it goes to the user."""
        try:
            await self.identity.forward(event, fevent, user)
        except Exception as exc:  # one record must not stop the fold
            log.exception("could not fold event %r", event.event_id)
            await self._dead_letter(fevent, f"processing failed: {type(exc).__name__}: {exc}")

    def _took(self, folded: Folded[Carrier]) -> None:
        """The batch's counts and the event time it folded (clock, topic-partitions' stream
        time)."""
        for name, n in folded.counts.items():
            setattr(self.stats, name, getattr(self.stats, name) + n)
        self._stream_time.update(folded.stream_time)
        for ts, _ in folded.newest.values():
            self.clock.observe(ts)

    async def _after_write(
        self, folded: Folded[Carrier], fired: list[Trigger], refused: dict[bytes, str], wall: int
    ) -> None:
        """What a written batch emits and ships: consent audits, triggers, its partitions'
        clock times and topic-partitions' stream times, and its popularity contributions."""
        audit_consents(e for e in folded.consents if user_key(e.user_id) not in refused)
        await self._erase_from_audit()
        withdrawn = self.triggers.withdrawals(list(folded.consents), folded.touched, refused)
        await self.triggers.emit(*fired, *withdrawn)
        for partition, (ts, fevent) in folded.newest.items():
            with event_context(fevent):
                key = b"%d" % partition
                if clock_stale(_stored_ts(self.clock_table.get(key)), ts, wall, self._skew_ms):
                    self.clock_table[key] = b"%d" % ts
        for (topic, partition), ts in folded.stream_time.items():
            # in the context of an event of the same partition number: its changelog partition
            with event_context(folded.newest[partition][1]):
                key = stream_time_key(topic, partition)
                if clock_stale(_stored_ts(self.clock_table.get(key)), ts, wall, self._skew_ms):
                    self.clock_table[key] = b"%d" % ts
        await self._send_contributions(popularity(folded.activity, refused))

    async def _send_contributions(self, records: list[tuple[bytes, bytes]]) -> None:
        """Send a batch's popularity contributions (item key, packed score) as producer batches
        (streams/batched.py): one aiokafka `send` per item was ~5 % of a worker's samples
        folding a catalog-wide load."""
        await self._send_keyed(self.item_activity, records)

    async def _send_keyed(self, topic: faust.TopicT, records: list[tuple[bytes, bytes]]) -> None:
        """Keyed records to `topic` as producer batches, each tracked with the batch folded."""
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        name = topic.get_topic_name()
        for future in await send_keyed(producer, name, records, self._place):
            self.track(future)

    def _place(self, key: bytes, partitions: int) -> int:
        """Kafka's default partition of `key`, memoized for the co-partitioned topics."""
        if partitions == self.settings.partitions:
            return self._partition_of.partition(key)
        return default_partition(key, partitions)

    async def _refuse_users(self, batch: list[Delivered], refused: dict[bytes, str]) -> None:
        """Dead-letter the batch's events of users whose new profile could not be stored (their
        stored profile stays as it was). Never expected: the bounds on events and profiles keep
        profiles small; this keeps one user from stopping the worker if they ever do not."""
        for fevent in batch:
            msg = fevent.message
            if msg.topic == COMMANDS_TOPIC:
                continue
            try:
                user = user_key(parse(msg.value or b"").user_id)
            except InvalidEvent:
                continue  # dead-lettered already
            if user in refused:
                await self._dead_letter(fevent, refused[user])

    # -- the fold's reads (engine.fold.Reads) and the trigger runner's ports --------------------
    def _reads(self) -> Reads:
        return Reads(
            user_key=user_key,
            profile=self._stored_profile,
            fence=self._fence,
            product=self._fold_product,
            placed=self._placed,
            aliased=self._aliased,
        )

    def _stored_profile(self, user: bytes, partition: int) -> Profile | None:
        """A stored profile; ValueError when it cannot be read. Kept decoded from the last batch
        that wrote or read it (streams/profile_cache.py), else straight from the partition's
        RocksDB: the table's own get costs two lookups and a context switch of the current
        event, about a tenth of the worker's time at full speed (profiled)."""
        cache = self._profile_cache
        kept = cache.kept(user)  # the common case: one dict read, no store looked up
        if kept is not None:
            return kept
        try:
            # not kept on a miss: the batch writes the profile back (and keeps it) at its end
            return cache.read(user, self.profile_db(partition).get, keep=False)
        except Exception as exc:
            raise ValueError(f"the stored profile cannot be read: {type(exc).__name__}") from None

    def _write_folded(self, writes: Writes, touched: Touched, written: dict[bytes, int]) -> None:
        """Write a batch's rows and keep its written profiles decoded (`written`: user -> stored
        size). Those profiles are not dropped from the cache before their write: `keep`
        replaces them after it (one memo entry per user instead of a drop and a put, ~2 % of
        a worker folding new users). A write that fails clears the cache: partitions written
        before it hold profiles the cache may not."""
        cache = self._profile_cache
        try:
            for partition, items in writes.items():
                self._write_profiles(partition, items, kept=written)
        except BaseException:
            cache.clear()
            raise
        cache.keep(touched, written)

    def _write_profiles(
        self,
        partition: int,
        items: list[tuple[bytes, bytes | None]],
        kept: Container[bytes] = (),
    ) -> None:
        """Write rows of the profiles table (the only way the worker writes them): the decoded
        copies of those keys are dropped first, but those in `kept` (the fold's: it keeps them
        right after the write, and clears the cache if a write fails)."""
        self._profile_cache.forget(items, kept)
        self._profile_writer.write(partition, items)

    def _fence(self, user: bytes, partition: int) -> int | None:
        """The user's stored erasure time: none when the profile cache knows there is none, else
        read (~1.5 us when there is none: a RocksDB miss, which the cache then remembers)."""
        cache = self._profile_cache
        if cache.unfenced(user):
            return None
        at = _stored_ts(self.profile_db(partition).get(fence_of(user)))
        if at is None:
            cache.note_unfenced(user)
        return at

    def _placed(self, key: bytes, partition: int) -> bool:
        return self._partition_of.partition(key) == partition

    def _aliased(self, user: bytes, partition: int) -> bool:
        return self.identity.alias(user, partition) is not None

    def _trigger_ports(self) -> TriggerPorts:
        return TriggerPorts(
            clock=self.clock,
            settings=self.settings,
            local_partitions=self._local_partitions,
            local_rows=lambda partition: self.profile_db(partition).items(),
            send=self._send_triggers,
            send_command=self.send_command,
            scorer=lambda: self.models_provider(),
            webhooks=lambda: self.webhooks,
            ready=lambda: self.ready()[0],
            counts=self.stats.triggers,
            wall_clock=self.wall,
            stale=self.stats.triggers_stale,
        )

    def _local_partitions(self) -> list[int]:
        assigned = cast(Any, self.app.assignor).assigned_actives()
        return sorted({tp.partition for tp in assigned if tp.topic in INPUT_TOPICS})

    async def _send_triggers(self, records: list[tuple[bytes, bytes]]) -> None:
        """Trigger records (user id key, message), sent as producer batches."""
        await self._send_keyed(self.triggers_topic, records)

    async def _command(
        self,
        fevent: Carrier,
        fold: BatchFold[Carrier],
        item_changes: dict[int, list[tuple[dict[str, Any], int, Carrier]]],
    ) -> None:
        msg = fevent.message
        signed = self.command_gate.admit(msg.key, msg.value, getattr(msg, "headers", None))
        if isinstance(signed, str):  # anyone who can produce to the topic could erase users
            self.stats.unsigned_commands += 1
            detail = "" if signed.startswith("unsigned") else f": {signed}"
            await self._dead_letter(fevent, "unsigned command" + detail)
            return
        try:
            command = json.loads(fevent.message.value or b"")
            kind = command["command"]
            user_id = "" if kind == "item_changed" else command["user_id"]
            if not isinstance(user_id, str) or kind not in ("item_changed", "erase", "check"):
                if kind not in MERGE_COMMANDS:  # identity: streams/identity.py
                    raise TypeError(kind)
                check_command(command)
            if kind == "item_changed":
                item_change(command)  # checked here: a malformed one stopped the fold later
        except Exception:
            await self._dead_letter(fevent, "malformed command")
            return
        user = user_key(user_id)
        if kind == "erase" or kind in MERGE_COMMANDS:
            erased = fold.fences.get(user)
            at = self._fence(user, msg.partition) if erased is None else erased[0]
            if signed_before_erasure(signed.ts, at):  # a copy: it must not undo the erasure
                await self._dead_letter(
                    fevent,
                    f"replayed {kind} command: signed at {signed.ts}, not after the erasure of "
                    f"its user at {at}",
                )
                return
        if kind in MERGE_COMMANDS:  # identity
            await self.identity.command(command, fevent, fold.touched)
            return
        if kind == "item_changed":
            # collected: one pass over the partition's users per batch for all its changes
            item_changes.setdefault(msg.partition, []).append((command, signed.ts, fevent))
        elif kind == "erase":
            await self._erase(user_id, fevent, fold)
        elif kind == "check" and user not in fold.touched:
            try:
                profile = fold.load(user, fevent.message.partition)
            except ValueError as exc:
                await self._dead_letter(fevent, str(exc))
                return
            if profile is not None:
                fold.touched[user] = (profile, fevent, False)  # written only if a trigger fires

    async def _erase(self, user_id: str, fevent: Carrier, fold: BatchFold[Carrier]) -> None:
        """An erase command: a tombstone for the profile and the user's fence (older events of
        the user that arrive later stay out), its schedule, topic records and merged ids."""
        user, msg = user_key(user_id), fevent.message
        fold.touched[user] = (None, fevent, True)
        erased_ms = int((msg.timestamp or time.time()) * 1000)
        fold.fences[user] = (erased_ms, msg.partition)
        self.triggers.erased(user_id, erased_ms)
        self._audit_erased.append(user_id)  # pseudonymized once the batch is audited
        await self._tombstones(user_id)
        await self.identity.erase(user_id, fevent)
        self.stats.erased += 1

    async def _erase_from_audit(self) -> None:
        """Pseudonymize the records of the users erased so far in the audit log and its
        rotations (engine/audit.py `erase_from_audit`), after the batch's own consent records:
        from then on no record of theirs names them in clear. In a thread: a rewrite reads up
        to the whole log (about 100 MiB), though only files naming a user are rewritten."""
        if not self._audit_erased:
            return
        ids = {u: self._audit_pseudonyms.of(u) for u in self._audit_erased}
        path = self.settings.data_dir / AUDIT_FILE
        try:
            await asyncio.to_thread(erase_from_audit, path, ids)
        except OSError as exc:  # a full disk: kept, tried again after the next batch
            log.error("could not pseudonymize erased users in %s: %s", path, exc.strerror)
            return
        except Exception as exc:  # the log is no input to fold: never the worker's end
            # (MemoryError reading a huge file a symbolic link names): kept, tried again
            log.error("could not pseudonymize erased users in %s: %r", path, exc)
            return
        self._audit_erased = []

    async def _tombstones(self, user_id: str) -> None:
        """An erasure's tombstones (the user id as key, no value) on the topics that hold records
        about the user: their triggers, dead letters and exposures (streams/erasure.py)."""
        try:
            key = user_id.encode()
        except UnicodeEncodeError:
            return  # no record was ever keyed so: events with such ids are refused
        for topic in (self.triggers_topic, self.dead_letters, self.exposures_topic):
            self.track(await self.send_raw(topic, key, None))

    async def _catalog_fold(self) -> None:
        """The catalog fold: batches of `catalog` records (streams/delivery.py) applied by
        `_apply_catalog`, then acknowledged. Through Faust's agent and table each record was a
        stream event, a table write and a changelog message in Faust's producer buffer; with the
        agent busy that buffer never emptied, and an offset commit (which first flushes it)
        waited until the import ended: measured, a 100,000-product import committed nothing for
        its 25 s, and a worker stopped meanwhile applied the whole catalog again."""
        await self._consume(
            self.catalog_topic, self._catalog_batches, self._apply_catalog, "catalog processing"
        )

    async def _apply_catalog(self, batch: list[Delivered], epoch: int) -> bool:
        """Apply one batch of catalog records in order (`engine.catalog.catalog_record`): a
        product is stored in its record's partition (where Faust's table put it), a tombstone
        deletes the key from every partition holding it; both with their changelog records
        (TableWriter). The changed products leave the memos and the content index learns them;
        a record the catalog cannot take is dead-lettered with the reason; price drops and
        products back in stock are broadcast (engine.triggers.catalog_change). A record marked
        kept is a row of this table republished into a new embedded broker's topic for the
        topic's readers (streams/adopt.py): passed over when its mark verifies (`_kept`), applied
        like any other record otherwise. False when a rebalance began meanwhile (nothing written:
        the batch is read again)."""
        after: dict[bytes, Product | None] = {}  # key -> the product as the batch leaves it
        writes: dict[int, dict[bytes, bytes | None]] = {}  # partition -> key -> row (None: gone)
        changes: list[tuple[Product | None, Product]] = []  # (before, after) of stored products
        dead: list[tuple[Delivered, str]] = []
        kept = 0
        for record in batch:
            msg = record.message
            if self._kept(msg):
                kept += 1
                continue
            try:
                key, product = catalog_record(msg.key, msg.value)
                row = None if product is None else product.pack()
                if product is not None:
                    changes.append((self._before(key, product, after), product))
            except InvalidProduct as exc:
                dead.append((record, exc.reason))
                continue
            except Exception as exc:  # one record must not stop the fold
                log.exception("could not apply a catalog record")
                dead.append((record, f"processing failed: {type(exc).__name__}: {exc}"))
                continue
            after[key] = product
            writes.setdefault(msg.partition, {})[key] = row
        # No await from this check to the last write (as the events fold: a rebalance's table
        # recovery cannot interleave).
        if not self._catalog_batches.current(epoch):
            return False
        for partition, rows in writes.items():
            self._catalog_writer.write(partition, list(rows.items()))
        dbs: dict[int, Any] = cast(Any, self.catalog.data)._dbs
        for key, product in after.items():
            if product is None:  # also where another partitioner once put it
                for number, db in list(dbs.items()):
                    if db.key_may_exist(key) and db.get(key) is not None:
                        self._catalog_writer.write(number, [(key, None)])
            self._forget_product(key.decode(errors="replace"))
            try:
                if product is None:
                    self.content.apply(key, None)
                else:
                    self.content.put(product)
            except Exception:  # the index is derived: one product it cannot take stops nothing
                log.exception("could not index catalog item %r", key)
        if after:
            self.catalog_generation += 1
        await self._catalog_writer.ship()
        for record, reason in dead:
            await self._dead_letter(record, reason)
        for before, product in changes:
            await self.triggers.broadcast_item_change(before, product)
        # last: once the count covers a record, its batch is acknowledged with no await between
        self.stats.catalog_updates += len(batch) - len(dead) - kept
        return True

    def _kept(self, msg: Any) -> bool:
        """Whether a catalog record is one of this table's rows republished by the adoption of a
        new embedded broker (streams/adopt.py): its KEPT_HEADER is the cluster key's mark of its
        topic, partition, key and value. Any producer can set the header: a mark that does not
        verify (or no cluster secret to verify it with) is a real update, applied, counted and
        logged (the first time), never passed over."""
        mark = _kept_mark(getattr(msg, "headers", None))
        if mark is None:
            return False
        cluster = self._cluster
        if cluster is not None and cluster.is_kept(
            "catalog", msg.partition, msg.key, msg.value, mark
        ):
            return True
        if not self.stats.kept_unverified:
            log.warning(
                "a catalog record carries %s but its mark does not verify (partition %s, "
                "offset %s): applied as an ordinary catalog record (only Persona's adoption of "
                "a new embedded broker marks records kept; counted in catalog_kept_unverified)",
                KEPT_HEADER, msg.partition, getattr(msg, "offset", "?"),
            )  # fmt: skip
        self.stats.kept_unverified += 1
        return False

    def _before(
        self, key: bytes, product: Product, after: dict[bytes, Product | None]
    ) -> Product | None:
        """The product a catalog record replaces: as this batch left it, else as stored; None
        for a stored row that is not a product (the table's changelog is open to producers
        too): the new product replaces it rather than being refused for it."""
        if key in after:
            return after[key]
        try:
            return self.product(product.item_id)
        except Exception:
            log.warning("replacing an unreadable stored catalog row for %r", key)
            return None

    def products(self) -> Iterator[Product]:
        """Every stored product (the feeds), straight from the catalog's RocksDB partitions,
        skipping rows that are not products (read_side.stored_products, as a reader does)."""
        return read_side.stored_products(self._stored_catalog_rows())

    async def _popularity_fold(self) -> None:
        """The popularity fold: batches of the contributions the events fold sent (summed per
        item and batch there), added to the items' stored scores and written as one batch per
        partition with its changelog records (streams/changelog.py), then acknowledged. Through
        Faust's agent and table (a stream event, a table write and a changelog message per
        item) it took 16 % of a worker's samples folding a catalog-wide load (issue 21 item 5)."""
        await self._consume(
            self.activity_topic, self._activity_fold, self._fold_popularity, "popularity processing"
        )

    async def _fold_popularity(self, batch: list[Delivered], epoch: int) -> bool:
        """Add one batch of contributions to the stored scores; False when a rebalance began
        meanwhile (nothing written: the batch is read again)."""
        deltas: dict[int, dict[bytes, list[Score]]] = {}  # partition -> item -> contributions
        for record in batch:
            msg = record.message
            delta, key = Score.unpack(msg.value), msg.key
            if delta is None or not key:  # not a contribution the fold sent
                await self._dead_letter(record, "not a popularity contribution")
            elif problem := item_key_problem(key):
                # the fold keys them by item ids; other keys may name the table's own rows
                await self._dead_letter(
                    record, f"a popularity contribution keyed by no item id: the key {problem}"
                )
            elif self._partition_of.partition(key) != msg.partition:
                # its score lives in the item's own partition: a copy elsewhere would rank twice
                await self._dead_letter(
                    record, "a popularity contribution off its item's partition"
                )
            else:
                deltas.setdefault(msg.partition, {}).setdefault(key, []).append(delta)
        # No await from this check to the last write (as the events fold: a rebalance's table
        # recovery cannot interleave).
        if not self._activity_fold.current(epoch):
            return False
        for partition, items in deltas.items():
            db = cast(Any, self.popularity.data)._db_for_partition(partition)
            writes: list[tuple[bytes, bytes | None]] = [
                (key, merge_scores(db.get(key), d)) for key, d in items.items()
            ]
            self._popularity_writer.write(partition, writes)
        await self._popularity_writer.ship()
        return True

    async def _sync_content(self) -> None:
        """Once the tables are recovered: index the catalog rows kept from earlier runs, giving
        the stream a turn every 500 rows (~110 us a row on a loaded 2-core machine); records the
        catalog fold or changelog apply meanwhile win. Later changes arrive only through them."""
        if self.content.synced or self._recovered() != "ok":
            return
        try:
            if await self.content.sync(self._stored_catalog_rows()):
                self.catalog_generation += 1
        except Exception:
            log.exception("could not index the catalog's content; retrying")

    async def _refresh_popular(self) -> None:
        """Rank the best-sellers from the popularity table, yielding to the stream every
        POPULAR_STEP items (a catalog of many thousand sold items was one long stall)."""
        if not self._popular_pacer.due():
            return
        try:
            with self._popular_pacer.running():
                ranked = await read_side.best_sellers_stepwise(
                    self.popularity.items(), POPULAR_STEP
                )
        except Exception:
            log.exception("could not refresh the best-seller list")
            return
        self._popular = ranked


def _delivery_pending(handed: int | None, delivered: int, end: int | None, unmoved: float) -> bool:
    """Whether the records of a partition past the fold's position are still on their way to
    it, so the position audit leaves the partition alone.

    `handed` is the next offset the Kafka client hands Faust (None: not known yet, it is about
    to fetch from the committed offset or the start), `delivered` the offset after the last one
    Faust delivered (0: none) and `unmoved` how long `delivered` has stayed where it is.

    On their way: records the client has yet to fetch or hand over (`handed` below the end),
    and records Faust holds, handed but not delivered, while its deliveries move (it feeds a
    full queue as the fold drains it). Faust also drops fetched records, as when its recovery
    resumes the stream: a partition without a committed offset is not sought back (aiokafka
    seeks only to committed offsets above 0), so they never come. Once `delivered` has stayed
    below `handed` for IN_HAND_IDLE seconds they are taken as dropped and the audit reads them.
    Seen: tests/persona/test_keep_state.py's three-kills test waited for 520 of 600 events,
    the client at the partitions' ends, Faust having delivered none of them.

    An audit of a partition whose records are on their way would read from the broker the
    records Faust has fetched or is about to fetch: measured (150,000 REES46 records
    pre-loaded, 4 partitions), 46,000-75,000 of them were read again."""
    if end is None:
        return False
    if handed is None:
        return int(end) > 0
    if handed < int(end):
        return True
    return delivered < handed and unmoved < IN_HAND_IDLE


def _handed_offset(consumer: Any, tp: Any, delivered: int) -> int | None:
    """The next offset Faust's Kafka client (aiokafka, in Faust's consumer thread) hands Faust
    for `tp`: None while it has no position yet. `delivered` stands in where its state cannot
    be read (no client, partition not assigned there)."""
    try:
        client = consumer._thread._ensure_consumer()
        state = client._subscription.subscription.assignment.state_value(tp)
    except Exception:
        return delivered
    if state is None:
        return delivered
    return int(state._position) if state.has_valid_position else None


def _newest_queued(queue: Any) -> dict[tuple[str, int], int]:
    """The newest offset per partition of the records waiting in the fold's queue (delivered by
    Faust, not yet taken): a snapshot, so nothing stale outlives a rebalance."""
    newest: dict[tuple[str, int], int] = {}
    for record in tuple(queue._queue):
        msg = record.message
        key = (msg.topic, msg.partition)
        if msg.offset > newest.get(key, -1):
            newest[key] = msg.offset
    return newest


def _stored_ts(raw: bytes | None) -> int | None:
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


def _kept_mark(headers: Any) -> object | None:
    """The value of a record's first KEPT_HEADER (Kafka headers: (name, bytes) pairs, or None),
    or None without one."""
    if isinstance(headers, Mapping):
        return headers.get(KEPT_HEADER)
    for pair in headers or ():
        if isinstance(pair, tuple | list) and len(pair) == 2 and pair[0] == KEPT_HEADER:
            return cast(object, pair[1])
    return None


def _record(msg: Any) -> Record:
    """A Kafka record as the pure fold takes it (`engine.fold.Record`)."""
    stamp = int((msg.timestamp or 0) * 1000)
    return Record(msg.topic, msg.partition, msg.offset, msg.key, msg.value, stamp)


def _partition_of(carrier: Carrier) -> int:
    return int(carrier.message.partition)
