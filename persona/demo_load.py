"""`persona run --demo`: the bundled demo loaded once per data dir, resumed where a stop left it.

The demo orders are produced in segments, at most `AHEAD` of them not yet folded at any time: a
segment is known folded once the worker's input positions (`streams.positions`, read here from
its RocksDB through secondaries, as the readers read it) reach the offsets the broker acknowledged
for it. After each folded segment `<data dir>/demo-progress.json` records how many events of the
demo file, in file order, the kept state holds. A stop (Ctrl-C, SIGTERM, a kill) part-way through
the load leaves that count; the next `persona run --demo` on the data dir produces from there,
and `demo-loaded` (`streams.adopt.DEMO_MARK`) is written once the last segment is folded.

Why segments bounded in event time: the kept event-time clock of each partition is the newest
event time folded there, and the fold dead-letters an event more than the lateness bound
(`PERSONA_LATENESS_DAYS`) behind it as late. Replaying the whole demo after a stop at 14k of 89k
events did exactly that to the events already folded (seen: "late: 168 h behind"). A resumed load
replays only the segments that were in flight, and those never span more than 90% of the lateness
bound (nor of the 30 days the dedup memory surely keeps) from their oldest event to the newest
event produced: a replayed event lies at most that far behind any partition's clock, so none is
late, and those already folded are recognised as duplicates. The catalog is imported again on
every load (products are upserts).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from engine.events import Event, encode
from engine.profile import DEDUP_WINDOW_MS
from engine.settings import Settings
from persona.progress import Progress
from streams.adopt import DEMO_PROGRESS, partition_dbs
from streams.kafka_security import Broker, as_config
from streams.positions import parse_position, position_key
from streams.readers import SecondaryTables, table_dir

DEMO_DIR = Path(__file__).parent / "demo"
ORDERS = DEMO_DIR / "orders.csv.gz"
CATALOG = DEMO_DIR / "catalog.jsonl.gz"
SEGMENT_EVENTS = 10_000  # events of one segment at most
AHEAD = 2  # segments produced and not known folded, at most
# Share of the lateness bound the segments in flight may span: under 1, so no replayed event
# is late; the larger, the fewer segments (each one's tail waits for the fold: measured, the
# demo loaded in 533 s with a half against 443 s for the old unsegmented load, run side by side
# on the busy machine, noisy)
SPAN_SHARE = 0.9
SEGMENT_WAIT = 300.0  # seconds a segment may take to be folded before the load gives up
POLL = 0.1  # seconds between two looks at the positions
STOP_EVERY = 500  # events produced between two looks at the stop request
SECONDARY_DIR = "demo-secondary"  # <data dir>/demo-secondary: this process's RocksDB secondaries

Ends = dict[tuple[str, int], int]  # (topic, partition) -> the offset after the last produced


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_progress(data_dir: Path, digest: str) -> int:
    """How many demo events (file order) the kept state holds: 0 without a progress file, for
    another demo file, or without kept tables."""
    try:
        data = json.loads((data_dir / DEMO_PROGRESS).read_text())
    except (OSError, ValueError):
        return 0
    if not isinstance(data, dict) or data.get("orders_sha256") != digest:
        return 0
    events = data.get("events")
    if not isinstance(events, int) or isinstance(events, bool) or events < 0:
        return 0
    return events if partition_dbs(data_dir) else 0


def write_progress(data_dir: Path, events: int, digest: str) -> None:
    """Record the count atomically (0600): a stop never leaves half a file."""
    path = data_dir / DEMO_PROGRESS
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps({"events": events, "orders_sha256": digest}) + "\n")
    os.replace(tmp, path)


@dataclass(frozen=True)
class Segment:
    first: int  # index of its first event in the demo file
    events: list[Event]
    oldest: int  # its oldest event time
    newest: int  # the newest event time of the file up to its end

    @property
    def end(self) -> int:
        return self.first + len(self.events)


def segments(
    events: Iterable[Event], start: int, max_events: int, max_span_ms: int
) -> Iterator[Segment]:
    """The demo file's events from event `start` on, in file order, in segments of at most
    `max_events` events whose oldest lies at most `max_span_ms` behind the newest event time up
    to their end (the events before `start` count for the newest; a single event further behind
    than that makes a segment alone)."""
    newest = oldest = 0
    first, batch = start, list[Event]()
    for index, event in enumerate(events):
        if index >= start:
            top, low = max(newest, event.ts), min(oldest, event.ts)
            if batch and (len(batch) >= max_events or top - low > max_span_ms):
                yield Segment(first, batch, oldest, newest)
                first, batch = index, []
            oldest = min(oldest, event.ts) if batch else event.ts
            batch.append(event)
        newest = max(newest, event.ts)
    if batch:
        yield Segment(first, batch, oldest, newest)


class FoldedPositions:
    """The worker's stored input positions, read from its profiles partitions as RocksDB
    secondaries (nothing is written to the worker's files)."""

    def __init__(self, data_dir: Path, partitions: int) -> None:
        self.root = data_dir / SECONDARY_DIR / str(os.getpid())
        self.tables = SecondaryTables(table_dir(data_dir), "profiles", partitions, self.root)

    def reached(self, ends: Ends) -> bool:
        """Whether the fold has stored every record below `ends`."""
        self.tables.open_missing()
        self.tables.catch_up()
        return all(
            (parse_position(self.tables.get(p, position_key(t))) or 0) >= end
            for (t, p), end in ends.items()
        )

    def close(self) -> None:
        self.tables.close()
        shutil.rmtree(self.root.parent, ignore_errors=True)


@dataclass(frozen=True)
class Flight:
    """A produced segment not known to be folded yet."""

    end: int  # the index after its last event
    ends: Ends
    oldest: int


class Stopped(Exception):
    """The load ended before the demo was folded; the message says why (empty: a stop)."""


@dataclass
class DemoLoad:
    """One load of the demo orders into a running worker (see the module doc)."""

    settings: Settings
    broker: Broker
    stop: threading.Event
    worker_alive: Callable[[], bool]
    digest: str = ""
    done: int = 0  # demo events known folded
    progress: Progress = field(init=False)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def check(self) -> None:
        if self.stop.is_set():
            raise Stopped("")
        if not self.worker_alive():
            raise Stopped("the worker exited during the demo load")

    async def produce(self, producer: AIOKafkaProducer, events: list[Event]) -> Ends:
        """Produce one segment; the end offset of each partition it went to, acknowledged."""
        pending: list[asyncio.Future[Any]] = []
        for n, event in enumerate(events, 1):
            key = event.user_id.encode()
            pending.append(await producer.send(event.topic(), encode(event), key=key))
            if n % STOP_EVERY == 0:
                self.check()
        ends: Ends = {}
        for meta in await asyncio.gather(*pending):
            where = (meta.topic, meta.partition)
            ends[where] = max(ends.get(where, 0), meta.offset + 1)
        return ends

    async def folded(self, positions: FoldedPositions, ends: Ends) -> None:
        deadline = time.monotonic() + SEGMENT_WAIT
        while not positions.reached(ends):
            self.check()
            if time.monotonic() > deadline:
                raise Stopped(f"a segment of the demo was not folded within {SEGMENT_WAIT:.0f} s")
            await asyncio.sleep(POLL)

    async def settle(self, positions: FoldedPositions, flight: Flight) -> None:
        """Wait until `flight` is folded, then record the progress it makes."""
        await self.folded(positions, flight.ends)
        self.done = flight.end
        write_progress(self.data_dir, self.done, self.digest)
        self.progress(self.done)

    async def run(self, start: int) -> int:
        """Produce and fold the demo from event `start`; returns how many events it holds."""
        from engine.sources import read_events

        span = max_span(self.settings)
        parts = segments(read_events(ORDERS), start, SEGMENT_EVENTS, span // AHEAD)
        positions = FoldedPositions(self.data_dir, self.settings.partitions)
        self.progress, self.done = Progress("demo events folded"), start
        producer = AIOKafkaProducer(
            **as_config(self.broker).aiokafka(), linger_ms=5, max_batch_size=256 * 1024, acks=1
        )
        await producer.start()
        try:
            flights: deque[Flight] = deque()
            for segment in parts:
                while flights and not may_fly(flights, segment, span):
                    await self.settle(positions, flights.popleft())
                ends = await self.produce(producer, segment.events)
                flights.append(Flight(segment.end, ends, segment.oldest))
            while flights:
                await self.settle(positions, flights.popleft())
        finally:
            self.progress.close(self.done)
            positions.close()
            with contextlib.suppress(Exception):
                await producer.stop()
        return self.done


def max_span(settings: Settings) -> int:
    """Milliseconds of event time the segments in flight may span: SPAN_SHARE of the lateness
    bound, and of the dedup memory's window (replayed duplicates must still be recognised)."""
    return int(min(settings.lateness_days * 86_400_000, DEDUP_WINDOW_MS) * SPAN_SHARE)


def may_fly(flights: Iterable[Flight], segment: Segment, span: int) -> bool:
    """Whether `segment` may be produced while `flights` are not folded yet: at most AHEAD
    segments in flight, and all of them within `span` of the newest event time produced (what a
    resumed load replays after a stop)."""
    flying = list(flights)
    if len(flying) >= AHEAD:
        return False
    return segment.newest - min([segment.oldest, *(f.oldest for f in flying)]) <= span


async def _import_catalog(settings: Settings, broker: Broker, stop: threading.Event) -> None:
    """The demo catalog (products are upserts: imported again on every load); a stop ends it."""
    from engine.sources import read_catalog
    from persona.loading import import_catalog

    products = itertools.takewhile(lambda _: not stop.is_set(), read_catalog(CATALOG))
    await import_catalog(broker, settings.partitions, products)


def load_demo(
    settings: Settings, broker: Broker, stop: threading.Event, worker_alive: Callable[[], bool]
) -> bool:
    """Load the demo orders (resuming a load a stop interrupted); True once all are folded."""
    load = DemoLoad(settings, broker, stop, worker_alive, file_digest(ORDERS))
    start = read_progress(settings.data_dir, load.digest)
    if start:
        _say(
            f"resuming the demo load at event {start:,}: the first {start:,} are in the kept "
            "state (a previous load was stopped part-way)"
        )
    try:
        asyncio.run(_import_catalog(settings, broker, stop))
        stop.wait(1.0)  # let the catalog land first, so profiles get categories
        load.check()
        asyncio.run(load.run(start))
    except Stopped as exc:
        if str(exc):
            _say(f"{exc}; `persona run --demo` resumes the load")
        return False
    return True


def _say(line: str) -> None:
    print(f"persona: {line}", file=sys.stderr, flush=True)
