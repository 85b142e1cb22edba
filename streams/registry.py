"""The Kafka side of the model registry: the compacted `models` topic and the `exposures` topic.

`RegistryService` runs in every worker: it folds the `models` topic (from the beginning, then
live) into a `RegistryLog` whose artifacts land in the worker's cache directory, loads the active
versions off the event loop and hands a complete new `ModelSet` to `on_models` (one reference
swap). It also produces A/B exposures. The functions below it serve the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from mode import Service

from engine.audit import OK, audit_log, record
from engine.content_experiments import NO_EXPERIMENTS, ContentExperiment, ContentExperiments
from engine.erasure import live, unerased_exposures
from engine.errors import SettingsError
from engine.events import Event, InvalidEvent, parse
from engine.rules import Rules
from engine.signing import ClusterKey, Signed
from engine.text import BadJson, outside_json
from models.artifacts import ModelLoadError
from models.bundle import META, Bundle
from models.content_report import content_report
from models.experiments import Experiment, exposure_of, report
from models.registry import ModelSet
from models.registry_log import (
    EditLost,
    EditUnsettled,
    Record,
    RegistryLog,
    activation,
    bundle_records,
    document_number,
    experiment_record,
    experiments_record,
    new_publish,
    publish_of,
    rules_record,
)
from streams.admin import ERASABLE_CONFIG
from streams.kafka_security import Broker, as_config
from streams.reading import assign_all, topic_reader
from streams.registry_copy import RegistryCopy
from streams.signed import RecordGate, RecordSigner

log = logging.getLogger("persona.registry")

MODELS_TOPIC = "models"
EXPOSURES_TOPIC = "exposures"
ACTIVATION_WAIT = 12.0  # seconds a worker waits to serve a version it just activated
Progress = Callable[[int], None]


async def ensure_registry_topics(broker_url: Broker) -> None:
    """`models`: one partition (a total order), compacted; `exposures`: one partition."""
    admin = AIOKafkaAdminClient(**as_config(broker_url).aiokafka())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(MODELS_TOPIC, 1, 1, topic_configs={"cleanup.policy": "compact"}),
            NewTopic(EXPOSURES_TOPIC, 1, 1, topic_configs=ERASABLE_CONFIG),  # keyed by user
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


def _producer(broker_url: Broker) -> AIOKafkaProducer:
    # one record per request: Tansu reports end offsets exactly only for single-record batches
    return AIOKafkaProducer(
        **as_config(broker_url).aiokafka(),
        max_request_size=2 * 1024 * 1024,
        linger_ms=0,
        acks=1,
    )


async def _send_all(
    producer: AIOKafkaProducer,
    records: Iterable[Record],
    progress: Any,
    signer: RecordSigner,
    sent: list[str] | None = None,
) -> None:
    """Send `records` one by one, each signed by `signer` (streams/signed.py); the key of each
    one the broker took is appended to `sent`."""
    for n, (key, value) in enumerate(records, 1):
        raw = key.encode()
        headers = signer.headers(MODELS_TOPIC, raw, value)
        await producer.send_and_wait(MODELS_TOPIC, value, key=raw, headers=headers)
        if sent is not None:
            sent.append(key)
        if progress is not None:
            progress(n)


async def read_topic(
    broker_url: Broker, topics: Iterable[str], idle: float = 1.0
) -> AsyncIterator[tuple[bytes | None, bytes | None]]:
    """Every record of `topics` from the beginning to their current end: (key, value)."""
    async for msg in read_messages(broker_url, topics, idle):
        yield msg.key, msg.value


async def read_messages(
    broker_url: Broker, topics: Iterable[str], idle: float = 1.0
) -> AsyncIterator[Any]:
    """Every record of `topics` (aiokafka's ConsumerRecord, headers included) to their end."""
    consumer = topic_reader(broker_url)
    await consumer.start()
    try:
        parts = assign_all(consumer, topics)
        if not parts:
            return
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        while True:
            batch = await consumer.getmany(*parts, timeout_ms=int(idle * 1000))
            for messages in batch.values():
                for msg in messages:
                    yield msg
            done = all([await consumer.position(tp) >= end[tp] for tp in parts])
            if done and not batch:
                return
    finally:
        await consumer.stop()


async def read_registry(
    broker_url: Broker,
    cluster: ClusterKey | None,
    cache_dir: Path | None = None,
    only: str | None = None,
    keys_of: str | None = None,
) -> RegistryLog:
    """The registry's current state (metadata only unless a cache directory is given: then the
    artifacts too, or only version `only`'s), from the records signed with `cluster` (others are
    skipped, as the workers skip them); with `keys_of`, the keys of that version's chunks and
    manifests too (`RegistryLog.keys`).

    A topic holding records of which none verifies with `cluster` (a bad signature each) is
    refused (SettingsError): the secret is not the one the records were signed with, and the
    state it verifies (the shipped models alone) is not the registry the workers serve; a
    publish would write records no worker accepts. Some refused among verified ones (records
    of another cluster or forged) are counted in one warning: one line, not one per record (a
    topic of 10,000 records said 10,000 lines before the refusal)."""
    await ensure_registry_topics(broker_url)
    state = RegistryLog(cache_dir, only, keys_of)
    gate = RecordGate(MODELS_TOPIC, cluster, log_each=False)
    verified = forged = 0
    async for msg in read_messages(broker_url, [MODELS_TOPIC], idle=0.5):
        if msg.key is None:
            continue
        found = gate.admit(msg.key, msg.value, msg.headers, True)
        if isinstance(found, Signed):
            verified += 1
            state.apply(msg.key.decode("utf-8", "replace"), msg.value)
        elif found == "bad signature":
            forged += 1
    if forged and not verified:
        raise SettingsError(
            f"none of the {forged:,} records of the `{MODELS_TOPIC}` topic passes the signature "
            "check with this PERSONA_CLUSTER_SECRET: either it is not the secret the workers "
            "share (`persona run` keeps the embedded default's in <data dir>/cluster-secret: "
            "PERSONA_CLUSTER_SECRET_FILE=<data dir>/cluster-secret), or no record of it was "
            "written by Persona (forged by someone who can write to the topic: no record carries "
            "which secret signed it); nothing was read or written"
        )
    if forged:
        log.warning(
            "%d record(s) of the `%s` topic failed the signature check with this "
            "PERSONA_CLUSTER_SECRET and were skipped (signed with another secret, or forged)",
            forged,
            MODELS_TOPIC,
        )
    others = gate.total_refused - forged  # unsigned, replayed: counted, said once
    if others:
        log.warning(
            "%d other record(s) of the `%s` topic were refused and skipped: %s",
            others,
            MODELS_TOPIC,
            ", ".join(f"{n} {why}" for why, n in gate.refused.items() if why != "bad"),
        )
    return state


async def publish(
    broker_url: Broker, bundle: Bundle, signer: RecordSigner, progress: Progress | None = None
) -> int:
    """Register a version (not active) as one publish (its records' keys hold a new publish id:
    models/registry_log.py). Returns the number of records written. ValueError when the
    registry holds its version with other content (or it is a shipped model's version): the
    workers would refuse the new manifest; and when another publish of the version with other
    content, running at the same time, had its manifest folded first: this publish's records
    are then withdrawn (tombstoned). The publish whose manifest won tombstones the version's
    other chunk sets (a publish that died half way, or lost); one that fails before its
    manifest was sent tombstones the chunks it sent."""
    state = await read_registry(broker_url, signer.key)  # ensures the topics
    problem = state.conflict(bundle)
    if problem:
        raise ValueError(f"refused: {problem}")
    again = bundle.version in state.versions  # the same content sent again: kept (it mends)
    publish_id = new_publish()
    records = bundle_records(bundle, publish_id)
    sent: list[str] = []
    try:
        await write_records(broker_url, records, signer, progress, sent)
    except BaseException:
        if len(sent) < len(records) - 1:  # the manifest not sent: nothing can use the chunks
            await _withdraw(broker_url, sent, signer, f"the failed publish of {bundle.version}")
        raise
    after = await read_registry(broker_url, signer.key, keys_of=bundle.version)
    manifest = after.versions.get(bundle.version)
    if manifest is not None and manifest.publish == publish_id:  # ours decided the content
        others = [k for k in after.keys if publish_of(k) != publish_id]
        await _withdraw(broker_url, others, signer, f"superseded sets of {bundle.version}")
        return len(records)
    ours = [key for key, _ in records]
    if manifest is not None and manifest.source == "registry" and not after.conflict(bundle):
        if not again:  # another publish of the same content won the race: ours is redundant
            await _withdraw(broker_url, ours, signer, f"a redundant publish of {bundle.version}")
        return len(records)
    await _withdraw(broker_url, ours, signer, f"the publish of {bundle.version} that lost")
    by = f"publish {manifest.publish}" if manifest is not None and manifest.publish else "another"
    when = f", registered {manifest.registered}" if manifest and manifest.registered else ""
    raise ValueError(
        f"refused: {bundle.version} was published at the same time by another publish with other "
        f"content, whose manifest was registered first ({by}{when}); this publish's "
        f"{len(records)} records were withdrawn (tombstoned). A version names one artifact: "
        f'remove "version" from its {META[bundle.name]} and publish it again to have a new '
        "version made"
    )


WITHDRAW_TIMEOUT = 30.0  # seconds a publish spends tombstoning records before it gives up


async def _withdraw(broker_url: Broker, keys: list[str], signer: RecordSigner, what: str) -> None:
    """Tombstone `keys` (compaction then drops them); a failure is logged, not raised: the
    records stay, and the next publish of the version that wins tombstones its other chunks."""
    if not keys:
        return
    try:
        await asyncio.wait_for(
            write_records(broker_url, [(k, None) for k in keys], signer), WITHDRAW_TIMEOUT
        )
    except Exception as exc:
        log.warning("could not tombstone %d records of %s: %s", len(keys), what, exc)
    else:
        log.info("tombstoned %d records of %s", len(keys), what)


async def write_records(
    broker_url: Broker,
    records: list[Record],
    signer: RecordSigner,
    progress: Any = None,
    sent: list[str] | None = None,
) -> None:
    producer = _producer(broker_url)
    await producer.start()
    try:
        await _send_all(producer, records, progress, signer, sent)
    finally:
        await producer.stop()


async def experiment_report(
    broker_url: Broker, name: str, share: float | None = None
) -> dict[str, Any]:
    """Per-variant exposures and conversions of one experiment, from the topics; `share` (the
    experiment's, when known) adds the sample-ratio-mismatch check."""
    exposures, events = await _exposed(broker_url, name)
    return await asyncio.to_thread(report, name, exposures, events, share)


async def content_experiment_report(
    broker_url: Broker, experiment: ContentExperiment, window_hours: float
) -> dict[str, Any]:
    """A content experiment's report (models/content_report.py), from the topics."""
    exposures, events = await _exposed(broker_url, experiment.name)
    return await asyncio.to_thread(content_report, experiment, exposures, events, window_hours)


async def _exposed(broker_url: Broker, name: str) -> tuple[list[dict[str, Any]], list[Event]]:
    """The exposures of one experiment, and every event of the users they name."""
    exposures: list[dict[str, Any]] = []
    logged = [r async for r in read_topic(broker_url, [EXPOSURES_TOPIC], idle=0.5)]
    for _key, exposure in live(logged):  # an erased user's are left out (engine.erasure)
        with contextlib.suppress(ValueError, TypeError):
            record = exposure_of(outside_json(exposure))  # any producer can write the topic
            if record is not None and record["experiment"] == name:
                exposures.append(record)
    users = {str(e.get("user_id")) for e in exposures}
    events: list[Event] = []
    async for _key, value in read_topic(broker_url, ["cart", "clickstream"], idle=0.5):
        try:
            event = parse(value or b"")
        except InvalidEvent:
            continue
        if event.user_id in users:
            events.append(event)
    return exposures, events


# -- the worker's service --------------------------------------------------------------------


class RegistryService(Service):
    """Keeps a worker's models in step with the registry (see the module doc)."""

    def __init__(
        self,
        broker_url: Broker,
        cache_dir: Path,
        on_models: Callable[[ModelSet], None],
        *,
        signer: RecordSigner | None = None,
        audit: bool = False,
        copy: Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.broker_url = broker_url
        # the worker keeps every record it folds in the data dir (streams/registry_copy.py)
        # but those the fold refuses
        self._copy_path = copy
        self._copy: RegistryCopy | None = None
        # records are folded only when signed with the cluster secret (None: nothing is)
        self.gate = RecordGate(MODELS_TOPIC, signer.key if signer else None)
        self.signer = signer
        self.audit = audit  # the worker audits the changes it folds live (readers do not)
        self.registry = RegistryLog(cache_dir)
        self.on_models = on_models
        self.models: ModelSet | None = None
        self.loaded = asyncio.Event()
        self._memo: dict[str, Any] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._exposures: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        # the admin document records this process put, by key: won or lost once folded here
        self._edits: dict[str, asyncio.Future[bool]] = {}

    async def on_start(self) -> None:
        self.registry.cache_dir.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
        await ensure_registry_topics(self.broker_url)
        self._producer = _producer(self.broker_url)
        await self._producer.start()
        self._consumer = topic_reader(self.broker_url)
        await self._consumer.start()
        if self._copy_path is not None:
            self._copy = RegistryCopy(self._copy_path)

    async def on_stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._flush_exposures()
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        if self._copy is not None:
            self._copy.close()
            self._copy = None

    # -- following the topic -----------------------------------------------------------------
    @Service.task
    async def _follow(self) -> None:
        assert self._consumer is not None
        tp = TopicPartition(MODELS_TOPIC, 0)
        self._consumer.assign([tp])
        await self._consumer.seek_to_beginning(tp)
        end = (await self._consumer.end_offsets([tp]))[tp]
        caught_up = end == 0
        if caught_up:
            await self._reload()
        while not self.should_stop:
            batch = await self._consumer.getmany(tp, timeout_ms=500)
            changed = False
            for msg in batch.get(tp, []):
                changed |= self._fold(msg, caught_up)
            if not caught_up and await self._consumer.position(tp) >= end:
                caught_up, changed = True, True
            if caught_up and changed:
                await self._reload()

    def _fold(self, msg: Any, live: bool) -> bool:
        """Fold one record of the topic when it is signed (and not older than its key's newest);
        True when it changed what should be served. A bad record is logged and skipped."""
        if msg.key is None:
            return False
        signed = self.gate.admit(msg.key, msg.value, msg.headers, fresh=True)
        if not isinstance(signed, Signed):
            return False
        key = msg.key.decode("utf-8", "replace")
        refused, lost = self.registry.refused, self.registry.lost
        kind = self.registry.apply(key, msg.value)
        edit = self._edits.get(key)
        if edit is not None and not edit.done():  # an edit this process put: settled here
            edit.set_result(self.registry.holds(key))
        # kept with its headers (republished to a new broker) unless the fold refused it: a
        # refused record must not replace the kept one its key had (a restarted worker would
        # fold the refused record alone and lose, say, the rules it served); nor a document
        # edit that lost (models/registry_log.py)
        kept = self.registry.refused == refused and self.registry.lost == lost
        if self._copy is not None and kept:
            self._copy.put(key, msg.value, [(k, bytes(v)) for k, v in msg.headers or ()])
        housekeeping = key.startswith("chunk/") or (key.startswith("doc/") and msg.value is None)
        if self.audit and live and not housekeeping:
            audit_registry(key, msg.value, signed, kind is not None or key.startswith("version/"))
        return kind is not None

    async def _reload(self) -> None:
        """Load what the registry says is active and swap it in (or keep what we have)."""
        try:
            models = await asyncio.to_thread(self._build)
        except Exception:
            log.exception("could not load the active models; keeping the current ones")
            if self.models is None:  # first load failed: serve the shipped defaults
                self.models = ModelSet.default()
                self.on_models(self.models)
        else:
            if self.models is None or models.stamp() != self.models.stamp():
                log.info("serving models %s", models.stamp())
            self.models = models
            self.on_models(models)
        self.loaded.set()
        self._changed.set()
        self._changed = asyncio.Event()

    def _model(self, version: str) -> Any:
        if version not in self._memo:
            self._memo[version] = self.registry.load(version)
        return self._memo[version]

    def _servable(self, name: str) -> Any:
        """The active version of `name`, or when it cannot be loaded (an artifact a newer loader
        refuses, damaged in the cache, or not verified against its manifest yet: its chunks
        complete it later, and the fold then reloads) the newest previously active one that can,
        then the shipped default: a restarted worker serves what was served before, not the
        defaults of both models."""
        active = self.registry.active(name)
        versions = [active, *self.registry.history(name), self.registry.defaults[name]]
        failed: list[str] = []
        for version in dict.fromkeys(versions):
            manifest = self.registry.versions.get(version)
            if manifest is None or manifest.name != name:
                continue
            if not manifest.complete:  # its cached bytes are not the manifest's: never served
                log.error("cannot serve %s %s: its artifact is incomplete here", name, version)
                failed.append(version)
                continue
            try:
                model = self._model(version)
            except ModelLoadError as exc:
                log.error("cannot serve %s %s: %s", name, version, exc)
                failed.append(version)
                continue
            if failed:
                log.error("serving %s %s instead of %s", name, version, ", ".join(failed))
            return model
        raise ModelLoadError(f"no {name} version can be served ({', '.join(failed)})")

    def _build(self) -> ModelSet:
        churn = self._servable("churn")
        recs = self._servable("recs")
        exp = self.registry.experiment
        candidate = None
        if exp is not None:
            try:
                self.registry.check(exp.model, exp.candidate)
                candidate = self._model(exp.candidate)
            except (LookupError, ValueError) as exc:
                log.error("experiment %s not started: %s", exp.name, exc)
                exp = None
        keep = {churn.version, recs.version} | ({candidate.version} if candidate else set())
        self._memo = {v: m for v, m in self._memo.items() if v in keep}
        rules, tests = self.registry.rules, self.registry.content_experiments
        return ModelSet(
            churn, recs, experiment=exp, candidate=candidate, rules=rules, content_experiments=tests
        )

    # -- the admin API (api.models_routes.ModelAdmin) ----------------------------------------
    def listing(self) -> list[dict[str, Any]]:
        return self.registry.listing()

    def experiment(self) -> dict[str, Any] | None:
        exp = self.models.experiment if self.models else None
        return exp.to_dict() if exp else None

    async def _await(self, done: Callable[[], bool]) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ACTIVATION_WAIT
        while not done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    async def activate(self, name: str, version: str | None) -> dict[str, Any]:
        """Activate `version` of `name` (None: roll back); returns once this worker serves it."""
        assert self._producer is not None
        key, value = activation(self.registry, name, version)
        target = json.loads(value or b"{}")["version"]
        # before the record: one that every worker fails to load is refused here (409)
        refused = await asyncio.to_thread(self.registry.unservable, target, self._model)
        if refused is not None:
            raise ValueError(refused)
        await _send_all(self._producer, [(key, value)], None, self._signer())
        served = await self._await(
            lambda: self.models is not None and self.models.versions().get(name) == target
        )
        return {"name": name, "version": target, "active": True, "serving": served}

    async def set_experiment(self, experiment: Experiment | None) -> dict[str, Any] | None:
        assert self._producer is not None
        if experiment is not None:
            self.registry.check_experiment(experiment)
        await _send_all(self._producer, [experiment_record(experiment)], None, self._signer())
        await self._await(lambda: (self.models.experiment if self.models else None) == experiment)
        return self.experiment()

    def rules(self) -> Rules:
        return self.models.rules if self.models else self.registry.rules

    async def set_rules(self, rules: Rules) -> bool:
        """Publish `rules` (engine/rules.py) as version `rules.version`: EditLost when another
        edit of that version was folded first (any process's: they all fold the one topic in
        one order), else True once this process serves them (every other worker and reader
        folds the same record from the topic)."""
        return await self._edit(
            "rules", rules_record(rules), lambda m: m.rules.version, rules.version
        )

    def content_experiments(self) -> ContentExperiments:
        return self.models.content_experiments if self.models else NO_EXPERIMENTS

    async def set_content_experiments(self, experiments: ContentExperiments) -> bool:
        """Publish content experiments (engine/content_experiments.py) as `set_rules` does."""
        return await self._edit(
            "content_experiments",
            experiments_record(experiments),
            lambda m: m.content_experiments.version,
            experiments.version,
        )

    async def _edit(
        self, document: str, record: Record, served: Callable[[ModelSet], str], version: str
    ) -> bool:
        """Put one admin document record and wait until this process has folded it: EditLost
        when another edit was folded first (once the winner is served here, so that the 412
        names it and a GET answers it), else tombstone what the win superseded and return
        whether this process serves the version. EditUnsettled when the record is not folded
        here within ACTIVATION_WAIT (whether it won is then not known)."""
        assert self._producer is not None

        def reached(version: str) -> bool:
            # `version` or a later one served: another process's next edit may be folded here
            # before this one is seen served (waiting for `version` itself then timed out)
            number = document_number(version)
            return self.models is not None and document_number(served(self.models)) >= number

        signer = self._signer()
        key = record[0]
        settled: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._edits[key] = settled
        try:
            await _send_all(self._producer, [record], None, signer)
            try:
                won = await asyncio.wait_for(asyncio.shield(settled), ACTIVATION_WAIT)
            except TimeoutError:
                raise EditUnsettled(document) from None
        finally:
            self._edits.pop(key, None)
        if not won:
            now = self.registry.document_version(document)
            await self._await(lambda: reached(now))
            raise EditLost(document, now)
        await self._tombstone(document, signer)
        return await self._await(lambda: reached(version))

    async def _tombstone(self, document: str, signer: RecordSigner) -> None:
        """Tombstones for the records the won version superseded (older versions, losers
        folded so far): compaction then drops them. A failure is logged: the next winner
        tombstones them again."""
        assert self._producer is not None
        keys = list(self.registry.held[document].superseded)
        try:
            await _send_all(self._producer, [(k, None) for k in keys], None, signer)
        except Exception as exc:
            log.warning(
                "could not tombstone %d superseded %s records: %s", len(keys), document, exc
            )

    async def content_report(
        self, experiment: ContentExperiment, window_hours: float
    ) -> dict[str, Any]:
        await self._flush_exposures()
        return await content_experiment_report(self.broker_url, experiment, window_hours)

    def content_experiment(self, name: str) -> ContentExperiment | None:
        """A content experiment running or run before (of the newest MAX_PAST put)."""
        return self.registry.content_seen.get(name)

    def _signer(self) -> RecordSigner:
        if self.signer is None:
            raise ValueError("this process has no PERSONA_CLUSTER_SECRET to sign registry records")
        return self.signer

    def experiment_names(self) -> list[str]:
        return sorted(self.registry.experiments)

    async def report(self, name: str) -> dict[str, Any]:
        await self._flush_exposures()
        known = self.registry.experiments.get(name)
        return await experiment_report(
            self.broker_url, name, None if known is None else known.share
        )

    # -- exposures ---------------------------------------------------------------------------
    def log_exposure(self, exposure: dict[str, Any]) -> None:
        if len(self._exposures) < 100_000:
            self._exposures.append(exposure)

    def forget_exposures(
        self, user_ids: list[str], also: Callable[[str], bool] | None = None
    ) -> None:
        """An erasure seen here (answered or forwarded): the users' exposures still queued, and
        those of the queued ids `also` names, are never written (one flushed after the
        erasure's tombstone would outlive it on the topic)."""
        self._exposures = unerased_exposures(self._exposures, user_ids, also)

    @Service.timer(0.5)
    async def _exposure_flusher(self) -> None:
        await self._flush_exposures()

    async def _flush_exposures(self) -> None:
        if not self._exposures or self._producer is None:
            return
        batch, self._exposures = self._exposures, []
        futures = [
            await self._producer.send(
                EXPOSURES_TOPIC, json.dumps(e).encode(), key=str(e["user_id"]).encode()
            )
            for e in batch
        ]
        await asyncio.gather(*futures, return_exceptions=True)


def audit_registry(key: str, value: bytes | None, signed: Signed, applied: bool) -> None:
    """A `model_change_folded` audit record: a version registered, an activation or an
    experiment change folded from the `models` topic, with who signed it and when."""
    fields: dict[str, Any] = {"record": key[:200], "signed_ms": signed.ts}
    try:
        data = outside_json(value) if value else None
    except BadJson:
        data = None
    if isinstance(data, dict):
        fields.update({f: str(data[f])[:200] for f in ("version", "name", "model") if f in data})
    outcome = OK if applied else "ignored"
    audit_log.info(record("model_change_folded", signed.signer[:200], outcome, **fields))
