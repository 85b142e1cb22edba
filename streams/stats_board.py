"""The stats board: every worker and reader publishes its figures for the others' dashboards
(issue 18 item 7).

The dashboard of one process showed that process only: a reader (the public port) had no stream
figures, a worker's private port no cache or API ones. Now each process publishes a small stats
snapshot (engine/process_stats.py, cumulative counts) to the `persona-stats` topic, keyed by its
process id and signed like the registry's records (streams/signed.py), every `PUBLISH_EVERY`
seconds while its figures change and every `HEARTBEAT` seconds when they do not; a process that
stops cleanly leaves a tombstone. Every process follows the topic's tail and keeps each other
process's two newest snapshots (their difference gives its rates), and `peers()` hands the live
ones (a snapshot newer than `LIVE_FOR` seconds) to the API (api/fleet.py merges them).

One partition, `compact,delete` with a day's retention: on Kafka only each process's newest
record is kept; the embedded broker neither compacts nor deletes, so there the topic grows by one
record of about 1-2 KB per process every `PUBLISH_EVERY` seconds while it is busy (every
`HEARTBEAT` seconds when idle), and a process reads only the newest `TAIL` records when it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from mode import Service

from engine.process_stats import BadSnapshot, decode
from engine.signing import Signed
from streams.admin import ensure_topics
from streams.kafka_security import Broker, as_config
from streams.reading import topic_reader
from streams.signed import RecordGate, RecordSigner

log = logging.getLogger("persona.stats")

STATS_TOPIC = "persona-stats"
STATS_CONFIG = {"cleanup.policy": "compact,delete", "retention.ms": str(86_400_000)}
PUBLISH_EVERY = 2.0  # seconds between two snapshots while the figures change
HEARTBEAT = 30.0  # seconds between two snapshots of a process whose figures stand still
LIVE_FOR = 75.0  # seconds a process counts as live after its newest snapshot
FORGET_AFTER = 3600.0  # seconds after which a silent process is forgotten
TAIL = 2000  # records read back from the topic's end at start
STOP_WAIT = 2.0  # seconds a stopping process waits for its tombstone's acknowledgement
Pair = tuple[dict[str, Any] | None, dict[str, Any]]  # a process's previous and newest snapshot


class StatsBoard(Service):
    """Publishes `own()` as `process` and follows every other process's snapshots."""

    def __init__(
        self,
        broker_url: Broker,
        process: str,
        own: Callable[[], dict[str, Any]],
        signer: RecordSigner | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.broker_url = broker_url
        self.process = process
        self.own = own
        self.signer = signer
        self.gate = RecordGate(STATS_TOPIC, signer.key if signer else None)
        self.snapshots: dict[str, Pair] = {}
        self.refused = 0  # records that were signed but not a snapshot
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._published: dict[str, Any] | None = None
        self._published_at = 0.0

    async def on_start(self) -> None:
        await ensure_topics(self.broker_url, 1, [STATS_TOPIC], STATS_CONFIG)
        self._producer = AIOKafkaProducer(**as_config(self.broker_url).aiokafka(), acks=1)
        await self._producer.start()
        self._consumer = topic_reader(self.broker_url)
        await self._consumer.start()

    async def on_stop(self) -> None:
        with contextlib.suppress(Exception):  # gone: the others drop this process at once
            await asyncio.wait_for(self._send(None), STOP_WAIT)  # a dead broker: not for long
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()

    # -- publishing ------------------------------------------------------------------------------
    @Service.timer(PUBLISH_EVERY)
    async def _publish(self) -> None:
        try:
            await self.publish()
        except Exception:
            log.warning("could not publish this process's stats", exc_info=True)

    async def publish(self, force: bool = False) -> bool:
        """Send this process's snapshot when its figures changed (or a heartbeat is due)."""
        snapshot = self.own()
        figures = {k: v for k, v in snapshot.items() if k != "t"}
        due = time.monotonic() - self._published_at >= HEARTBEAT
        if not force and not due and figures == self._published:
            return False
        await self._send(json.dumps(snapshot, separators=(",", ":")).encode())
        self._published, self._published_at = figures, time.monotonic()
        return True

    async def _send(self, value: bytes | None) -> None:
        if self._producer is None or self.signer is None:
            return  # no cluster secret: nothing this process writes would be accepted
        key = self.process.encode()
        headers = self.signer.headers(STATS_TOPIC, key, value)
        await self._producer.send_and_wait(STATS_TOPIC, value, key=key, headers=headers)

    # -- following ---------------------------------------------------------------------------------
    @Service.task
    async def _follow(self) -> None:
        assert self._consumer is not None
        tp = TopicPartition(STATS_TOPIC, 0)
        self._consumer.assign([tp])
        end = (await self._consumer.end_offsets([tp]))[tp]
        self._consumer.seek(tp, max(0, end - TAIL))
        while not self.should_stop:
            try:
                batch = await self._consumer.getmany(tp, timeout_ms=500)
            except Exception:
                log.warning("could not read the stats topic; retrying", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            for msg in batch.get(tp, []):
                self.fold(msg.key, msg.value, msg.headers)

    def fold(self, key: bytes | None, value: bytes | None, headers: Any) -> None:
        """One record of the topic: a signed snapshot of another process, or its tombstone."""
        if key is None or not isinstance(self.gate.admit(key, value, headers), Signed):
            return
        process = key.decode("utf-8", "replace")
        if process == self.process:
            return
        if value is None:
            self.snapshots.pop(process, None)
            return
        try:
            snapshot = decode(value)
        except BadSnapshot as exc:
            self.refused += 1
            log.warning("skipped the stats of %r: %s", process[:200], exc)
            return
        previous = self.snapshots.get(process)
        if previous is None or snapshot["t"] > previous[1]["t"]:
            self.snapshots[process] = (previous[1] if previous else None, snapshot)

    def peers(self, now: float | None = None) -> list[Pair]:
        """The other processes whose newest snapshot is at most LIVE_FOR seconds old."""
        now = time.time() if now is None else now
        for process, (_, last) in list(self.snapshots.items()):
            if now - last["t"] > FORGET_AFTER:  # stopped without a tombstone (killed)
                del self.snapshots[process]
        return [pair for pair in self.snapshots.values() if now - pair[1]["t"] <= LIVE_FOR]
