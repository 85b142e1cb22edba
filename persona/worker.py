"""One worker process: the Faust stream worker plus the HTTP API on the same event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

import faust
from aiohttp import web
from mode import Service

from api.app import create_app
from api.audit import attach_file
from api.auth import KeyRing
from api.content import ContentService
from api.event_routes import watch_data_dir
from api.hot import HotRunner
from api.key_reload import reload_on_hangup
from api.observability import TELEMETRY, configure_json_logging, follow_restarts
from api.privacy import RECORDS
from engine.blocks import BlockPolicy, Renderer
from engine.events import INPUT_TOPICS
from engine.files import LOCK_FD_ENV, hold_data_dir, private_dir
from engine.profile import Profile, readable_profiles
from engine.repeat import parse_repeat
from engine.settings import Settings, require_cluster_secret
from models.registry import ModelSet
from persona.catalog_sync import catalog_services
from persona.models_wiring import attach_registry
from persona.reader import click_links, serving_options, ssl_context
from persona.retrain import retrain_services
from persona.runtime import (
    WORKER_FILES_PER_PARTITION,
    StopBound,
    check_open_files,
    place,
    tune_gc,
)
from persona.state_dir import MIN_FREE, free_bytes
from persona.state_dir import prepare as prepare_state_dir
from persona.stats_wiring import stats_board
from streams.admin import REKEYED_TOPIC, prepare_broker
from streams.app import PersonaStreams
from streams.backlog import EMBEDDED_ENV
from streams.corrupt_batches import install as pass_corrupt_batches
from streams.erasure import HeldRecords, read_wait
from streams.fetch_limit import install as bound_fetches
from streams.kafka_security import Broker
from streams.observe import consumer_lag, sample_profile_values
from streams.read_committed import install as read_committed
from streams.webhooks import WebhookSender

log = logging.getLogger("persona.worker")
LAG_TOPICS = {*INPUT_TOPICS, REKEYED_TOPIC, "catalog"}


class StreamState:
    """Adapts `PersonaStreams` (Faust tables) to the API's `StateView`."""

    def __init__(self, streams: PersonaStreams, models: ModelSet) -> None:
        self.streams = streams
        self.models = models
        self.profile = streams.profile
        self.merged_ids = streams.merged_ids
        self.merged_into = streams.merged_into
        self.product = streams.product
        self.popular = streams.popular
        self.produce = streams.produce
        self.owner_url = streams.owner_url
        self.owner_known = streams.owner_known
        self.scaled_out = streams.scaled_out
        self.products = streams.products
        self.erase = streams.erase
        self.content_index = streams.content.index  # engine.similarity, kept by the streams

    @property
    def catalog_generation(self) -> int:
        return self.streams.catalog_generation

    def now_ms(self) -> int:
        return self.streams.clock.now_ms()

    def ready(self) -> tuple[bool, str]:
        if self.models is None:
            return False, "models loading"
        ready = self.streams.ready()
        if ready[0] and not self.streams.content.synced:
            # the catalog kept from earlier runs is not in the content index yet: content
            # neighbours would be missing from recommendations and similar items
            return False, self.streams.content.indexing()
        return ready

    def figures(self) -> dict[str, Any]:
        """The stream's counters, per-topic consumption and lag (`api.observability` exports them
        as `persona_<counter>_total` and the dashboard draws them)."""
        stats = self.streams.stats
        return {
            "counters": {
                "events_processed": stats.events,
                "events_duplicate": stats.duplicates,
                "events_dead_lettered": stats.invalid,
                "events_rekeyed": stats.rekeyed,
                "events_late": stats.late,
                "events_future": stats.future,
                "events_redelivered": stats.redelivered,
                "commands_unsigned": stats.unsigned_commands,
                "events_gap_read": stats.gap_records,
                "users_erased": stats.erased,
                "events_fenced": stats.fenced,
                "identity_merged": stats.identity_merged,
                "identity_repeated": stats.identity_repeated,
                "identity_forwarded": stats.identity_forwarded,
                "catalog_updates": stats.catalog_updates,
                "catalog_kept_unverified": stats.kept_unverified,
                "changelog_unkeyed": stats.changelog_unkeyed,
                "fold_batches": stats.batches,
                **self._webhook_counters(),
            },
            "consumed": dict(stats.by_topic),
            "lag": consumer_lag(self.streams.app, LAG_TOPICS),
            "worker_lag_records": self.streams.lag_records(),
            "topics_mismatched": dict(self.streams.mismatched_topics),
            "triggers": dict(getattr(stats, "triggers", {})),
            "triggers_stale": dict(stats.triggers_stale),
        }

    def _webhook_counters(self) -> dict[str, int]:
        hooks = self.streams.webhooks
        if hooks is None:
            return {}
        s = hooks.stats
        return {
            "webhooks_delivered": s.delivered,
            "webhooks_failed": s.failed,
            "webhooks_retried": s.retries,
            "webhooks_dropped": s.dropped,
            "webhooks_cancelled": s.cancelled,
        }

    def sample_profiles(self, n: int) -> list[Profile]:
        return readable_profiles(sample_profile_values(self.streams.profiles, n), n)


class HttpService(Service):
    """Runs the aiohttp application as a mode service beside the Faust app."""

    def __init__(
        self, app: web.Application, host: str, port: int, ssl: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.ssl = ssl  # an ssl.SSLContext when PERSONA_TLS_CERT/KEY are set
        self.web_app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def on_start(self) -> None:
        # block GETs answered before aiohttp's routing, as in the readers (api/hot.py)
        self._runner = HotRunner(self.web_app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, reuse_address=True, ssl_context=self.ssl
        )
        await site.start()
        reload_on_hangup(self.web_app)  # SIGHUP: PERSONA_API_KEYS_FILE read again
        log.info("HTTP API on http://%s:%s", self.host, self.port)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class BoundedWorker(faust.Worker):
    """Faust's worker, its stop bounded (`PERSONA_STOP_TIMEOUT`, persona/runtime.StopBound):
    counted from the stop signal, or from the loop's shutdown when the worker stops otherwise."""

    def __init__(self, *services: Any, stop_bound: StopBound, **kwargs: Any) -> None:
        super().__init__(*services, **kwargs)
        self.stop_bound = stop_bound

    def _schedule_shutdown(self, signal: signal.Signals) -> None:
        self.stop_bound.start(f"signal {signal.name}")
        super()._schedule_shutdown(signal)

    def on_worker_shutdown(self) -> None:
        self.stop_bound.start("worker's shutdown")
        super().on_worker_shutdown()


def build_worker(settings: Settings, broker_url: Broker) -> tuple[faust.Worker, PersonaStreams]:
    require_cluster_secret(settings)  # hops and records are signed: said before the data dir is
    # made or marked (a refused start left state-format.json behind)
    check_open_files(settings.partitions, WORKER_FILES_PER_PARTITION, "the worker")
    tightened = private_dir(settings.data_dir)  # 0700 (engine/files.py)
    if tightened:
        log.warning("%s", tightened)
    # One engine per data dir, before anything is written there: the lock `persona run` passed
    # down, else this worker's own (DataDirInUse: one line, exit 2). Held until the process ends.
    hold_data_dir(settings.data_dir, os.environ.get(LOCK_FD_ENV))
    taken_over = prepare_state_dir(settings.data_dir)  # state-format.json (persona/state_dir.py)
    if taken_over:
        log.warning("%s", taken_over)
    keys = KeyRing.from_settings(settings.api_keys, settings.api_keys_file)
    if not len(keys):
        log.warning("no API key configured: every route but the public ones answers 401")
    models = ModelSet.default()
    # the block templates and their variants compile, before anything is started
    renderer = Renderer(template_dir=settings.template_dir)
    renderer.links = click_links(settings)  # PERSONA_CLICK_URL (engine/clicks.py)
    renderer.shop_url, renderer.cart_url = settings.feed_link, settings.cart_url  # buttons
    renderer.utm = settings.utm or ""  # PERSONA_UTM (engine/utm.py)
    probe = asyncio.new_event_loop()  # not the worker's loop: Faust creates its own
    try:
        tansu = probe.run_until_complete(prepare_broker(broker_url, settings.partitions))
    finally:
        probe.close()
    bound_fetches()  # what the consumer holds of fetched records (streams/fetch_limit.py)
    read_committed()  # no event of an aborted transaction is folded (streams/read_committed.py)
    pass_corrupt_batches()  # dead-lettered, not fatal (streams/corrupt_batches.py)
    streams = PersonaStreams(settings, broker_url, tansu=tansu)
    if os.environ.get(EMBEDDED_ENV) == "1":  # persona run's embedded broker: topics in memory
        streams.hold_for_fold(settings.request_timeout)
    state = StreamState(streams, models)
    streams.models_provider = lambda: state.models
    services: list[Service] = []
    if settings.webhook_urls and settings.webhook_secret:
        streams.webhooks = WebhookSender(settings.webhook_urls.split(","), settings.webhook_secret)
        services.append(streams.webhooks)
    policy = BlockPolicy(
        items=settings.block_items,
        churn_threshold=settings.churn_threshold,
        consent_default=settings.consent_granted_by_default,
        repeat=parse_repeat(settings.repeat_items or ""),
    )
    content = ContentService(state, models, renderer, policy)
    app = create_app(content, keys, serving_options(settings))
    # the export's records on the output topics, read within half the request timeout
    app[RECORDS] = HeldRecords(broker_url, read_wait(settings.request_timeout))
    follow_restarts(app, settings.data_dir)  # `persona run`'s restarts on /metrics
    # events refused (503) while the data dir is full; its free bytes on /metrics
    watch_data_dir(app, settings.data_dir, free_bytes, MIN_FREE)
    http = HttpService(app, settings.http_host, settings.http_port, ssl_context(settings))
    services += catalog_services(settings, broker_url, http.web_app)  # PERSONA_CATALOG_FEEDS
    app[TELEMETRY].text_sources.append(streams.rocks_memory.metric_lines)  # persona_rocksdb_*
    registry = attach_registry(settings, broker_url, content, state, http.web_app)
    services += retrain_services(settings, registry, http.web_app)  # PERSONA_RETRAIN_HOURS
    process = f"worker:{settings.own_url}"  # the dashboard's figures of every process
    services.append(stats_board(settings, broker_url, http.web_app, "worker", process))
    worker = BoundedWorker(
        streams.app,
        http,
        registry,
        *services,
        stop_bound=StopBound(settings.stop_timeout, log),
        loglevel=settings.log_level,
        quiet=True,
        stdout=sys.stdout,
        stderr=sys.stderr,
    )
    without_spinner(worker)
    return worker, streams


def without_spinner(worker: faust.Worker) -> None:
    """No terminal spinner: at a log level of warning or above Faust installs one on the root
    logger and sets the root to DEBUG so that every record spins it, and then every debug call
    of aiokafka and Faust built a LogRecord (6.6 % of a folding worker's py-spy samples with
    PERSONA_LOG_LEVEL=warning). A worker's output is a log, not a terminal."""
    worker.spinner = None


def run_worker(settings: Settings, broker_url: Broker) -> None:
    worker, _ = build_worker(settings, broker_url)
    # Faust logs every producer back-pressure wait (several per second under load): keep errors.
    logging.getLogger("faust.transport.producer").setLevel(logging.ERROR)
    configure_json_logging(settings.log_level)  # persona.* logs: JSON lines with request ids
    attach_file(settings.data_dir)  # audit.log: 0600, rotated (api/audit.py)
    tune_gc()
    place(settings.worker_cpus)  # PERSONA_WORKER_CPUS
    worker.execute_from_commandline()
