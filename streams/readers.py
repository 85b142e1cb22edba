"""Read-only access to a worker's RocksDB tables from another process (a reader), for the API.

Faust keeps one RocksDB database per table and partition under `<data_dir>/faust/v1/tables/`
(`profiles-3.db`, `catalog-0.db`, ...; `catalog`, `popularity` are global tables whose rows are
spread over their partitions' databases, `clock` holds the newest event time of each partition).
A reader opens every one of them as a RocksDB *secondary* instance (its own small directory for
the secondary's info log) and calls `try_catch_up_with_primary()` every `catch_up_interval`
seconds, so it sees what the worker wrote within about that interval plus the worker's write
buffer. Nothing here writes to the worker's files, and no Faust is involved: a reader never slows
the stream but by the CPU it uses.

`SecondaryState` implements the API's `StateView` (engine/state_view.py):
- `profile(user_id)`: the user's partition is Kafka's default (murmur2) partition of the user id,
  as the worker keys its table; unpacked profiles are memoized with the sequence number their
  partition was caught up to, so a hot user costs no RocksDB read until that partition changes
  (then one get and one bytes comparison).
- `product` (memoized while `catalog_generation` stands: scoring asks for every candidate
  item, and each uncached lookup is up to one RocksDB get per partition), `products()` (for the
  feeds), `popular()` (recomputed every `popular_interval` s from the popularity table, as the
  worker does; that table is caught up only then, as nothing else reads it),
  `catalog_generation` (changes whenever a catch-up moved the catalog databases' sequence
  numbers).
- `now_ms()`: the event-time clock is the newest value of the worker's `clock` table (the newest
  event time per partition, and per topic-partition the stream time lateness is measured against,
  never newer: the worker keeps both for its own restarts), capped at the wall clock.
- `produce(events)` / `erase(user_id)`: plain aiokafka producer into the input / command topics,
  keyed by user id like the worker's own API.
- `holds(partition)`: whether the worker keeps the partition current (owned or standby, as its
  ownership file's `held` says); the users of any other partition get no profile here (its
  database is left over from an earlier assignment: with three or more workers, not every
  worker holds every partition), never a stale copy served as current.
- `owner_url(user_id)`: routing as the worker routes (api/routing.py forwards the request), by the
  partition ownership the worker publishes in its data dir (engine/ownership.py), read again
  when the file changed (`check_ownership`, once per catch-up round).

The partition memo, the product memo, the best-seller ranking, produce and erase are the worker's
own (streams/read_side.py): only where the rows come from differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from aiokafka import AIOKafkaProducer
from rocksdict import AccessType, Options, Rdict

from engine import ownership
from engine.catalog import Product
from engine.clock import Clock, WallClock
from engine.events import Event
from engine.memo import SizedMemo
from engine.pacing import Pacer
from engine.profile import Profile, readable_profiles
from engine.signing import Headers
from streams import read_side
from streams.backlog import Backlog, hold_wait
from streams.content_sync import CatalogContent
from streams.kafka_security import Broker, as_config
from streams.keys import (
    alias_of,
    alias_target_of,
    is_profile_key,
    merged_ids_of,
    merged_of,
    user_key,
)
from streams.positions import parse_position, position_key
from streams.profile_cache import profile_cost
from streams.read_side import PartitionMemo, ProductMemo
from streams.rocks_memory import RocksMemory
from streams.signed import RecordSigner

T = TypeVar("T")
log = logging.getLogger("persona.readers")

OFFSET_KEY = b"__faust\x00offset__"
TABLES = ("profiles", "catalog", "popularity", "clock")
# tables only the popular list reads: caught up when it is recomputed, not every round
POPULAR_TABLES = frozenset({"popularity"})
# The memos below are keyed by what callers send (user ids, item ids) and bounded by entries and
# by accounted bytes (engine.memo.SizedMemo): a profile entry as `memo_cost` says, a product as
# read_side.PRODUCT_FACTOR times its stored row.
PROFILE_MEMO = 200_000
PROFILE_MEMO_BYTES = 128 * 1024 * 1024
PARTITION_MEMO_BYTES = 32 * 1024 * 1024
PRODUCT_MEMO_BYTES = 64 * 1024 * 1024
STEP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1)  # seconds
PRODUCT_MEMO = 100_000
CONTENT_SYNC_DELAY = 1.0  # seconds from a catalog change to reading the catalog again


def memo_cost(user_id: str, raw: bytes | None) -> int:
    """The accounted bytes of a profile memo entry: the id, the stored row it keeps (to tell
    an unchanged row after a catch-up) and the decoded profile, counted as the worker's profile
    cache counts one (streams.profile_cache.profile_cost: at or above what tracemalloc measured).
    Before 2026-12-05 an entry counted 6x the row in all: under half of what it takes."""
    if raw is None:
        return sys.getsizeof(user_id)
    return sys.getsizeof(user_id) + sys.getsizeof(raw) + profile_cost(len(raw))


def table_dir(data_dir: Path) -> Path:
    """Where Faust keeps the worker's tables (`tabledir` of an app with datadir data_dir/faust)."""
    return data_dir / "faust" / "v1" / "tables"


def _options(memory: RocksMemory | None = None) -> Options:
    options = Options(raw_mode=True) if memory is None else memory.within(Options(raw_mode=True))
    options.set_max_open_files(-1)  # secondaries must keep every file open
    # RocksDB opens a version's table files with this many threads, and a secondary builds a
    # version on every catch-up that finds something new: with the default (16) each catch-up
    # started and joined 15 threads, whether there was one new file or none, while rocksdict
    # holds the GIL (measured alone: 0.77 ms per catch-up of an unchanged database, 0.75-0.98 ms
    # after 100 writes, 1.7-1.9 ms after a flush; with 1 thread: 0.03, 0.19-0.20 and 0.25-0.39 ms;
    # on a busy machine the joins wait for CPU, and the event loop waits for the joins)
    options.set_max_file_opening_threads(1)
    return options


def _files_signature(path: Path) -> tuple[tuple[str, int, int], ...] | None:
    """Name, size and mtime of a database's files (its info LOGs aside); None if unreadable."""
    try:
        entries = []
        for entry in os.scandir(path):
            if not entry.name.startswith("LOG"):
                st = entry.stat()
                entries.append((entry.name, st.st_size, st.st_mtime_ns))
    except OSError:
        return None
    entries.sort()
    return tuple(entries)


# Why a reader has no ownership view to route by (`check_ownership`).
OwnershipKind = Literal["missing", "unreadable", "stale", "refused"]


@dataclass(frozen=True)
class OwnershipProblem:
    """Why a reader has no view of the worker's partition ownership: its kind, and the detail
    logged. Shown (`ready`) as "kind: detail"."""

    kind: OwnershipKind
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


class SecondaryTables:
    """One table's partition databases opened as RocksDB secondaries."""

    def __init__(
        self,
        tables: Path,
        name: str,
        partitions: int,
        secondary_root: Path,
        memory: RocksMemory | None = None,  # the process's RocksDB budget (rocks_memory.py)
    ) -> None:
        self.name = name
        self._memory = memory
        self.dbs: list[Rdict | None] = [None] * partitions
        self._tables = tables
        self._secondary = secondary_root / name
        # per partition: the sequence number the secondary has caught up to (-1: not open); the
        # partition's contents as seen here change only when it moves
        self.sequences: list[int] = [-1] * partitions
        self._signatures: list[tuple[tuple[str, int, int], ...] | None] = [None] * partitions

    def open_missing(self) -> int:
        """Open the partitions whose database exists by now; returns how many are open."""
        for p, db in enumerate(self.dbs):
            if db is not None:
                continue
            path = self._tables / f"{self.name}-{p}.db"
            if not (path / "CURRENT").exists():
                continue
            secondary = self._secondary / str(p)
            secondary.mkdir(parents=True, exist_ok=True)
            options = _options(self._memory)
            try:
                self.dbs[p] = Rdict(
                    str(path),
                    options,
                    column_families={"default": options},  # else the files' options win
                    access_type=AccessType.secondary(str(secondary)),
                )
            except Exception as exc:  # the worker may be creating it right now
                log.debug("cannot open %s yet: %s", path, exc)
        return sum(db is not None for db in self.dbs)

    def stale(self) -> list[tuple[int, tuple[tuple[str, int, int], ...] | None]]:
        """(partition, files signature) of the open partitions whose primary's files changed
        since they were last caught up (a write grows the WAL; a flush or compaction adds files
        and rewrites the MANIFEST). One directory listing per partition: cheap enough for the
        event loop, where it belongs (in a thread, each stat() handed the GIL back and forth
        with the loop: ~10% of a reader's CPU under load, for a check that finds nothing)."""
        out = []
        for p, db in enumerate(self.dbs):
            if db is not None:
                signature = _files_signature(self._tables / f"{self.name}-{p}.db")
                if signature is None or signature != self._signatures[p]:
                    out.append((p, signature))
        return out

    def catch_up(
        self, stale: list[tuple[int, tuple[tuple[str, int, int], ...] | None]] | None = None
    ) -> bool:
        """Catch up with the worker the partitions `stale` names (by default: `self.stale()`);
        True when anything changed.

        `try_catch_up_with_primary` costs ~2 ms per database even when nothing changed, and holds
        the GIL meanwhile, so only the partitions whose files changed are caught up. Changed: any
        partition's sequence number moved (their sum, compared before, missed a partition that
        opened at the number the sum started from: a reader never read that clock row)."""
        before = list(self.sequences)
        for p, signature in self.stale() if stale is None else stale:
            db = self.dbs[p]
            if db is not None:
                db.try_catch_up_with_primary()
                self._signatures[p] = signature
                self.sequences[p] = db.latest_sequence_number()
        return self.sequences != before

    def get(self, partition: int, key: bytes) -> bytes | None:
        db = self.dbs[partition]
        if db is None:
            return None
        value = db.get(key)
        return value if isinstance(value, bytes) else None

    def get_any(self, key: bytes) -> bytes | None:
        """A row of a global table: whichever partition holds it."""
        for db in self.dbs:
            if db is not None:
                value = db.get(key)
                if isinstance(value, bytes):
                    return value
        return None

    def items(
        self, partitions: Callable[[int], bool] | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Every row of the open partitions (those `partitions` accepts, when given)."""
        for p, db in enumerate(self.dbs):
            if db is None or (partitions is not None and not partitions(p)):
                continue
            for key, value in db.items():
                if (
                    isinstance(key, bytes)
                    and key != OFFSET_KEY
                    and isinstance(value, bytes)
                    and value
                ):
                    yield key, value

    def close(self) -> None:
        for db in self.dbs:
            if db is not None:
                with contextlib.suppress(Exception):
                    db.close()
        self.dbs = [None] * len(self.dbs)


class SecondaryState:
    """The API's `StateView` over a worker's tables, read-only (see the module doc)."""

    def __init__(
        self,
        data_dir: Path,
        partitions: int,
        secondary_dir: Path,
        broker_url: Broker | None = None,
        wall: Clock | None = None,
        catch_up_interval: float = 0.15,
        popular_interval: float = 5.0,
        signer: RecordSigner | None = None,  # signs the erase commands (streams/signed.py)
        memory: RocksMemory | None = None,  # every secondary within one RocksDB budget
    ) -> None:
        self.data_dir = data_dir
        self.signer = signer
        self.partitions = partitions
        self.secondary_dir = secondary_dir
        self.broker_url = broker_url
        self.catch_up_interval = catch_up_interval
        self.popular_interval = popular_interval
        self.models: Any = True  # set to None by a model registry until it has loaded
        self._wall = wall or WallClock()
        tables = table_dir(data_dir)
        self.tables = {
            n: SecondaryTables(tables, n, partitions, secondary_dir, memory) for n in TABLES
        }
        self.catalog_generation = 0
        self.content = CatalogContent()  # content similarity of the catalog (issue 17)
        self.content_index = self.content.index
        self._content_due = 0.0  # monotonic time from which the index is read again; 0: not due
        self._popular: list[str] = []
        self._newest_event = 0
        self._memo: SizedMemo[str, tuple[int, bytes | None, Profile | None]] = SizedMemo(
            PROFILE_MEMO, PROFILE_MEMO_BYTES
        )
        self._products = ProductMemo(PRODUCT_MEMO, PRODUCT_MEMO_BYTES)
        self._popular_pacer = Pacer(read_side.POPULAR_REST)
        self._products_generation = -1
        self._partition_memo = PartitionMemo(partitions, PROFILE_MEMO, PARTITION_MEMO_BYTES)
        self._producer: AIOKafkaProducer | None = None
        self.backlog: Backlog | None = None  # set by `hold_for_fold`
        self._task: asyncio.Task[None] | None = None
        self._threads: set[asyncio.Future[Any]] = set()  # reads of the tables in a thread
        self._opened = False
        self.catch_ups = 0
        self.catch_up_seconds = 0.0
        self.catch_up_steps = [0] * (len(STEP_BUCKETS) + 1)  # one database's catch-up: counts
        self.catch_up_steps_seconds = 0.0
        # the worker's view of who owns each profiles partition (engine/ownership.py)
        self.ownership_path = data_dir / ownership.FILE_NAME
        self.ownership: ownership.Ownership | None = None  # None: answer every user here
        self._ownership_key: tuple[int, int, int] | None = None  # the file last parsed
        self._parsed: ownership.Ownership | str | None = None  # its view, or why it was refused
        self._ownership_problem: OwnershipProblem | None = None  # why no view (logged once)
        self._refused_said: tuple[str, ...] = ()  # the view's refused entries last logged
        self._scaled_out = False  # a view ever named another worker (or held fewer than all)
        self._others = False  # the current view names another worker (`scaled_out`)

    # -- lifecycle -------------------------------------------------------------------------------
    def refresh(
        self,
        popular: bool = False,
        stale: dict[str, list[tuple[int, Any]]] | None = None,
    ) -> None:
        """Open new partitions, catch up, and recompute what derives from the tables. `stale`:
        per table, the partitions to catch up (`SecondaryTables.stale`), if the caller checked."""
        started = time.perf_counter()
        opened = [t.open_missing() for t in self.tables.values()]
        self._opened = opened[0] == self.partitions  # every profiles partition
        for name, table in self.tables.items():
            if table.catch_up(None if stale is None else stale.get(name, [])):
                self._changed(name)
        if popular:
            self._refresh_popular()
        self.catch_ups += 1
        self.catch_up_seconds += time.perf_counter() - started

    def _round(self, popular: bool) -> dict[str, list[tuple[int, Any]]] | None:
        """One catch-up round's cheap part, on the event loop: None when there is nothing to do
        (every partition open, no files changed, no popular list due), else what `refresh`
        should catch up (in a thread). The popularity table is looked at only when the popular
        list is due: while events stream in, its four databases change every round, and each
        catch-up holds the GIL (the event loop waits) for nothing any request reads."""
        started = time.perf_counter()
        missing = any(db is None for t in self.tables.values() for db in t.dbs)
        stale = {
            name: t.stale()
            for name, t in self.tables.items()
            if popular or name not in POPULAR_TABLES
        }
        if missing:
            return {}  # a partition may open: refresh checks every table itself
        if popular or any(stale.values()):
            return stale
        self.catch_ups += 1
        self.catch_up_seconds += time.perf_counter() - started
        return None

    async def start(self) -> None:
        self.check_ownership()
        self.refresh(popular=True)
        self._task = asyncio.create_task(self._follow())

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a thread, tracked: cancelling the caller cannot stop the thread, and
        `stop` must not close the databases while it still reads them (a closed rocksdict
        under a running iteration crashed the process with a segfault)."""
        future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        self._threads.add(future)
        future.add_done_callback(self._threads.discard)
        return await asyncio.shield(future)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._threads:  # let reads already running in a thread end before closing
            await asyncio.wait(set(self._threads))
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
        for table in self.tables.values():
            table.close()
        shutil.rmtree(self.secondary_dir, ignore_errors=True)

    async def _follow(self) -> None:
        last_popular = time.monotonic()
        while True:
            await asyncio.sleep(self.catch_up_interval)
            now = time.monotonic()
            popular = now - last_popular >= self.popular_interval and self._popular_pacer.due()
            if popular:
                last_popular = now
            try:
                self.check_ownership()
                stale = self._round(popular)
                if stale:
                    await self.catch_up_stepwise(popular, stale)
                elif stale is not None:
                    # a partition may open (start-up, a new worker): the whole refresh, in a
                    # thread. RocksDB allows reads on a secondary while it catches up; the
                    # derived figures it sets are single reference assignments.
                    await self._in_thread(self.refresh, popular, None)
            except Exception:
                log.exception("catching up with the worker's tables failed; retrying")
            await self._sync_content(now)

    async def catch_up_stepwise(
        self, popular: bool, stale: dict[str, list[tuple[int, Any]]]
    ) -> None:
        """`refresh` for the partitions `stale` names, on the event loop, one database at a
        time, with the loop's turn between two: requests that arrived meanwhile are answered
        before the next database is caught up.

        Catching up replays the primary's new WAL records into the secondary's memtable, and
        rocksdict holds the GIL throughout (measured), so the event loop waits for the call
        whether it runs here or in a thread. While events stream in, a round over the four
        profile partitions took ~5 ms (catch-up share ~0.03 at ~6 rounds/s), every request in
        flight waiting behind it; one database at a time, a request waits behind one of them
        (most steps take under 1 ms: `persona_reader_catch_up_step_seconds`). The GET p99 while
        streaming did not move beyond the benchmark's noise with this: the wait for a core
        dominates it (README, "Block GETs from the wire")."""
        busy = 0.0
        for name, partitions in stale.items():
            table = self.tables[name]
            changed = False
            for item in partitions:
                started = time.perf_counter()
                changed = table.catch_up([item]) or changed
                step = time.perf_counter() - started
                busy += step
                self.catch_up_steps[bisect_left(STEP_BUCKETS, step)] += 1
                self.catch_up_steps_seconds += step
                await asyncio.sleep(0)  # the loop's turn
            if changed:
                self._changed(name)
        if popular:
            started = time.perf_counter()
            await self._in_thread(self._refresh_popular)  # Python: the GIL changes hands
            busy += time.perf_counter() - started
        self.catch_ups += 1
        self.catch_up_seconds += busy

    # -- routing -----------------------------------------------------------------------------------
    def check_ownership(self, wall: float | None = None) -> None:
        """Load the worker's ownership file when it changed (one stat per catch-up round, none
        per request); without a usable one (missing, unreadable, refused, not touched for
        `ownership.STALE` s: the worker is gone or stuck; or dated more than that ahead of the
        clock, whose age cannot be told) every user is answered here. A view whose peer URLs
        are partly refused (engine/ownership.py) is used for the rest: those partitions are
        answered here, said once per view (a warning, and
        `persona_reader_ownership_entries_refused`)."""
        try:
            st = os.stat(self.ownership_path)
        except FileNotFoundError:
            self._no_ownership("missing", f"{self.ownership_path} is missing")
            return
        except OSError as exc:
            self._no_ownership("unreadable", f"{self.ownership_path} is unreadable: {exc}")
            return
        age = (time.time() if wall is None else wall) - st.st_mtime
        if age > ownership.STALE:
            self._no_ownership(
                "stale", f"{self.ownership_path} not refreshed for {age:.0f} s (worker down?)"
            )
            return
        if age < -ownership.STALE:  # the clock stepped back: its age unknown until rewritten
            self._no_ownership(
                "stale",
                f"{self.ownership_path} is dated {-age:.0f} s ahead of the clock (the clock "
                "stepped back? a running worker rewrites it within seconds)",
            )
            return
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        # a new file (each write renames one in place; a change missed by a reused inode of the
        # same size within the clock's tick shows at the next touch, `ownership.HEARTBEAT` s on)
        if key != self._ownership_key:
            self._ownership_key = key
            try:
                self._parsed = ownership.read(self.ownership_path, self.partitions)
            except (OSError, ownership.OwnershipError) as exc:
                self._parsed = f"{self.ownership_path} refused: {exc}"
        view = self._parsed
        if not isinstance(view, ownership.Ownership):
            self._no_ownership("refused", str(view))
            return
        if view.refused != self._refused_said:  # once per view, not per touch of the file
            self._refused_said = view.refused
            if view.refused:
                log.warning(
                    "%s: the owner URL of %d partitions refused (%s); their users are answered "
                    "from this worker's tables, the other partitions routed",
                    self.ownership_path,
                    len(view.refused),
                    "; ".join(view.refused[:5]) + ("; ..." if len(view.refused) > 5 else ""),
                )
        if view is not self.ownership:
            if self.ownership != view or self._ownership_problem is not None:
                log.info(
                    "routing by the worker's partition ownership: %s",
                    ownership.describe(view.owners),
                )
            # a worker holding fewer than every partition has peers, whatever `owners` says
            # (all unknown while it rebalances): its other partitions are theirs
            some = view.held is not None and len(view.held) < self.partitions
            self._scaled_out = self._scaled_out or view.others or some
        self.ownership, self._ownership_problem = view, None
        self._others = view.others

    def _no_ownership(self, kind: OwnershipKind, detail: str) -> None:
        """No view to route by; said once per kind of problem (a refused file: once per file)."""
        self.ownership, self._others, self._refused_said = None, False, ()
        said = self._ownership_problem
        if said is None or said.kind != kind or (kind == "refused" and detail not in said.detail):
            (log.warning if self._scaled_out or kind == "refused" else log.info)(
                "%s: answering every user from this worker's tables", detail
            )
        self._ownership_problem = OwnershipProblem(kind, detail)

    def owner_url(self, user_id: str) -> str | None:
        """The API URL of the worker owning the user's profiles partition as this reader's worker
        sees it (streams/app.py `owner_url`), or None: that worker's own partition, or no usable
        view of the group (then answered from the tables here, as a lone worker's reader does)."""
        view = self.ownership
        return None if view is None else view.owner_url(self.partition_of(user_id))

    def owner_known(self, user_id: str) -> bool:
        """Whether the worker's view names the owner of the user's partition (the worker or
        another). Not while the view says "unknown" (a rebalance), nor without a usable view
        but a missing file (a lone worker of an older version: it owns every partition)."""
        view = self.ownership
        if view is None:
            said = self._ownership_problem
            return said is not None and said.kind == "missing" and not self._scaled_out
        partition = self.partition_of(user_id)
        return 0 <= partition < len(view.owners) and view.owners[partition] is not None

    def scaled_out(self) -> bool:
        """Whether the view names another worker as the owner of some partition."""
        return self._others

    def _changed(self, name: str) -> None:
        """What derives from table `name` once a catch-up moved its sequence numbers."""
        if name == "catalog":
            self.catalog_generation += 1
            # the first pass at once (readiness waits for it), later ones gathered for a while
            delay = CONTENT_SYNC_DELAY if self.content.synced else 0.0
            self._content_due = self._content_due or time.monotonic() + delay
        elif name == "clock":
            self._read_clock()

    async def _sync_content(self, now: float) -> None:
        """The content index after the catalog changed, at most every CONTENT_SYNC_DELAY s
        (streams/content_sync.py): the table read in a thread, the changes applied here, where
        requests read the index; `catalog_generation` moves when the index changed."""
        if not self._content_due or now < self._content_due:
            return
        self._content_due = 0.0
        try:
            changes = await self._in_thread(self.content.diff, self.tables["catalog"].items())
            if await self.content.apply_async(changes):  # the loop's turn every 500
                self.catalog_generation += 1
        except Exception:
            log.exception("could not index the catalog's content; retrying")
            self._content_due = now + CONTENT_SYNC_DELAY

    def _read_clock(self) -> None:
        for _, raw in self.tables["clock"].items():
            with contextlib.suppress(ValueError):
                self._newest_event = max(self._newest_event, int(raw))

    def _refresh_popular(self) -> None:
        with self._popular_pacer.running():
            self._popular = read_side.best_sellers(self.tables["popularity"].items())

    # -- StateView ---------------------------------------------------------------------------------
    def partition_of(self, user_id: str) -> int:
        """The user's partition (murmur2, as producers key events), memoized."""
        return self._partition_memo.partition(user_id.encode())

    def holds(self, partition: int) -> bool:
        """Whether this reader's worker keeps `partition` current (owns it or stands by for it)
        as its view says (engine/ownership.py `held`): only then are its users answered from
        the tables here. Without a view: every partition while no view ever named another
        worker or held fewer than all (a lone worker, or one of an older version), none once
        one did (the worker is gone or stuck and the group moved its partitions: nothing here
        is vouched for)."""
        view = self.ownership
        if view is None:
            return not self._scaled_out
        return view.holds(partition)

    def profile(self, user_id: str) -> Profile | None:
        """The user's profile (None too when the worker does not hold its partition: `holds`,
        a copy left over from an earlier assignment is never served). Memoized with the sequence
        number its partition was caught up to: a secondary's contents change only when it
        catches up, so while that number stands the memo is the answer without a RocksDB read;
        after it moved, one read (and one bytes comparison, which keeps the unpacked profile
        when the user's row did not change)."""
        partition = self.partition_of(user_id)
        if not self.holds(partition):
            return None
        table = self.tables["profiles"]
        sequence = table.sequences[partition]  # taken before the read: never newer than it
        hit = self._memo.get(user_id)
        if hit is not None and hit[0] == sequence:
            return hit[2]
        raw = table.get(partition, user_key(user_id))
        if raw is None:
            profile = None
        elif hit is not None and hit[1] == raw:
            profile = hit[2]
        else:
            profile = Profile.unpack(raw)
        self._memo.put(user_id, (sequence, raw, profile), memo_cost(user_id, raw))
        return profile

    def merged_ids(self, user_id: str) -> list[str]:
        """The ids whose history an identify merged into the user (its `m:` row)."""
        key = merged_of(user_key(user_id))
        partition = self.partition_of(user_id)
        if not self.holds(partition):
            return []
        return merged_ids_of(self.tables["profiles"].get(partition, key))

    def merged_into(self, user_id: str) -> str | None:
        """The user an identify merged this id into (its `a:` row), where the worker holds the
        id's partition (an erasure of that user, answered here though its own partition is
        not held, learns of the id so: api/privacy.py)."""
        partition = self.partition_of(user_id)
        if not self.holds(partition):
            return None
        return alias_target_of(self.tables["profiles"].get(partition, alias_of(user_key(user_id))))

    def product(self, item_id: str) -> Product | None:
        """The catalog's product (None: unknown). Memoized while `catalog_generation` stands (it
        moves with every catch-up that changed a catalog database): scoring a profile asks for
        every candidate item, each a get in up to every partition and an unpack otherwise."""
        generation = self.catalog_generation  # taken before the read: never newer than it
        if generation != self._products_generation:
            self._products.clear()
            self._products_generation = generation
        return self._products.lookup(item_id, self.tables["catalog"].get_any)

    def products(self) -> Iterator[Product]:
        return read_side.stored_products(self.tables["catalog"].items())

    def popular(self) -> list[str]:
        return self._popular

    def sample_profiles(self, n: int) -> list[Profile]:
        """Up to `n` profiles of the worker's tables, read from this reader's secondaries (the
        preview's user picker, the churn histogram): profile rows only, never bookkeeping."""
        rows = (v for k, v in self.tables["profiles"].items(self.holds) if is_profile_key(k))
        return readable_profiles(rows, n)  # a row that does not unpack is left out

    def now_ms(self) -> int:
        wall = self._wall.now_ms()
        return min(self._newest_event, wall) if self._newest_event else wall

    def ready(self) -> tuple[bool, str]:
        if not self._opened:
            return False, "waiting for the worker's tables"
        if self._scaled_out and (self.ownership is None or not any(self.ownership.owners)):
            # the worker's peers own some users: without its view they would get a standby copy
            why = self._ownership_problem or "rebalancing"  # "kind: detail"
            return False, f"partition ownership unknown ({why})"
        if self.models is None:
            return False, "models loading"
        if not self.content.synced and any(db is not None for db in self.tables["catalog"].dbs):
            # until then content neighbours were missing from recommendations and similar items
            return False, self.content.indexing()
        return True, "ok"

    async def _send(
        self, topic: str, key: bytes, value: bytes, headers: Headers | None = None
    ) -> Any:
        if self.broker_url is None:
            raise RuntimeError("this reader has no broker to produce to")
        if self._producer is None:
            producer = AIOKafkaProducer(
                **as_config(self.broker_url).aiokafka(), linger_ms=5, acks=1
            )
            try:
                await producer.start()
            except BaseException:  # the broker away: closed now, another tried next request
                await producer.stop()
                raise
            self._producer = producer
        return await self._producer.send(topic, value, key=key, headers=headers)

    async def produce(self, events: list[Event]) -> None:
        """Produce events; with a `backlog` (the embedded broker: `hold_for_fold`), return once
        the worker's fold is close behind them (streams/backlog.py)."""
        await read_side.produce(self._send, events, self.backlog)

    def hold_for_fold(self, request_timeout: float) -> None:
        """Make `produce` wait for the fold, read from the input positions in the worker's
        profiles partitions (caught up every `catch_up_interval`)."""
        profiles = self.tables["profiles"]
        self.backlog = Backlog(
            lambda t, p: parse_position(profiles.get(p, position_key(t))),
            wait=hold_wait(request_timeout),
        )

    async def erase(self, user_id: str) -> None:
        await read_side.erase(self._send, self.signer, user_id)
        self._memo.pop(user_id)

    def metrics(self) -> list[str]:
        return [
            "# HELP persona_reader_catch_ups_total Catch-ups with the worker's RocksDB tables.",
            "# TYPE persona_reader_catch_ups_total counter",
            f"persona_reader_catch_ups_total {self.catch_ups}",
            "# HELP persona_reader_catch_up_seconds_total Time spent catching up.",
            "# TYPE persona_reader_catch_up_seconds_total counter",
            f"persona_reader_catch_up_seconds_total {self.catch_up_seconds:.6f}",
            "# HELP persona_reader_catch_up_step_seconds One database's catch-up on the event"
            " loop (requests wait for it).",
            "# TYPE persona_reader_catch_up_step_seconds histogram",
            *self._step_lines(),
            "# HELP persona_reader_ownership_entries_refused Partitions whose owner URL in the"
            " worker's ownership file was refused (answered from this worker's tables).",
            "# TYPE persona_reader_ownership_entries_refused gauge",
            f"persona_reader_ownership_entries_refused {self._refused_count()}",
        ]

    def _refused_count(self) -> int:
        view = self.ownership
        return 0 if view is None else len(view.refused)

    def _step_lines(self) -> list[str]:
        lines, total = [], 0
        for bound, count in zip((*STEP_BUCKETS, float("inf")), self.catch_up_steps, strict=True):
            total += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            lines.append(f'persona_reader_catch_up_step_seconds_bucket{{le="{le}"}} {total}')
        lines.append(f"persona_reader_catch_up_step_seconds_count {total}")
        lines.append(f"persona_reader_catch_up_step_seconds_sum {self.catch_up_steps_seconds:.6f}")
        return lines
