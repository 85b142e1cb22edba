"""One worker process: the Faust stream worker plus the HTTP API on the same event loop."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import faust
from aiohttp import web
from mode import Service

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from engine.blocks import BlockPolicy, Renderer
from engine.settings import Settings
from models.registry import ModelSet
from streams.admin import prepare_broker
from streams.app import PersonaStreams

log = logging.getLogger("persona.worker")


class StreamState:
    """Adapts `PersonaStreams` (Faust tables) to the API's `StateView`."""

    def __init__(self, streams: PersonaStreams, models: ModelSet) -> None:
        self.streams = streams
        self.models = models
        self.profile = streams.profile
        self.product = streams.product
        self.popular = streams.popular
        self.produce = streams.produce
        self.owner_url = streams.owner_url
        self.erase = streams.erase

    @property
    def catalog_generation(self) -> int:
        return self.streams.catalog_generation

    def now_ms(self) -> int:
        return self.streams.clock.now_ms()

    def ready(self) -> tuple[bool, str]:
        if self.models is None:
            return False, "models loading"
        return self.streams.ready()

    def metrics(self) -> list[str]:
        stats = self.streams.stats
        lines = [
            "# HELP persona_events_processed_total Events folded into profiles.",
            "# TYPE persona_events_processed_total counter",
            f"persona_events_processed_total {stats.events}",
            "# HELP persona_events_duplicate_total Events ignored as repeats of a seen event_id.",
            "# TYPE persona_events_duplicate_total counter",
            f"persona_events_duplicate_total {stats.duplicates}",
            "# HELP persona_events_dead_lettered_total Messages sent to dead-letters.",
            "# TYPE persona_events_dead_lettered_total counter",
            f"persona_events_dead_lettered_total {stats.invalid}",
            "# HELP persona_events_rekeyed_total Events re-keyed through the repartition topic.",
            "# TYPE persona_events_rekeyed_total counter",
            f"persona_events_rekeyed_total {stats.rekeyed}",
            "# HELP persona_events_late_total Events beyond the lateness bound (dead-lettered).",
            "# TYPE persona_events_late_total counter",
            f"persona_events_late_total {stats.late}",
            "# HELP persona_users_erased_total Erasures applied.",
            "# TYPE persona_users_erased_total counter",
            f"persona_users_erased_total {stats.erased}",
            "# HELP persona_catalog_updates_total Catalog updates applied.",
            "# TYPE persona_catalog_updates_total counter",
            f"persona_catalog_updates_total {stats.catalog_updates}",
            "# HELP persona_messages_consumed_total Messages consumed per input topic.",
            "# TYPE persona_messages_consumed_total counter",
        ]
        for topic, count in sorted(stats.by_topic.items()):
            lines.append(f'persona_messages_consumed_total{{topic="{topic}"}} {count}')
        return lines


class HttpService(Service):
    """Runs the aiohttp application as a mode service beside the Faust app."""

    def __init__(self, app: web.Application, host: str, port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.web_app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def on_start(self) -> None:
        self._runner = web.AppRunner(self.web_app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        log.info("HTTP API on http://%s:%s", self.host, self.port)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def build_worker(settings: Settings, broker_url: str) -> tuple[faust.Worker, PersonaStreams]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    keys = KeyRing.from_settings(settings.api_keys, settings.api_keys_file)
    if not len(keys):
        log.warning("no API key configured: every route but the public ones answers 401")
    models = ModelSet.default()
    probe = asyncio.new_event_loop()  # not the worker's loop: Faust creates its own
    try:
        tansu = probe.run_until_complete(prepare_broker(broker_url, settings.partitions))
    finally:
        probe.close()
    streams = PersonaStreams(settings, broker_url, tansu=tansu)
    state = StreamState(streams, models)
    policy = BlockPolicy(
        items=settings.block_items,
        churn_threshold=settings.churn_threshold,
        consent_default=settings.consent_granted_by_default,
    )
    renderer = Renderer(template_dir=settings.template_dir)
    content = ContentService(state, models, renderer, policy)
    http = HttpService(create_app(content, keys), settings.http_host, settings.http_port)
    worker = faust.Worker(
        streams.app,
        http,
        loglevel=settings.log_level,
        quiet=True,
        stdout=sys.stdout,
        stderr=sys.stderr,
    )
    return worker, streams


def run_worker(settings: Settings, broker_url: str) -> None:
    worker, _ = build_worker(settings, broker_url)
    # Faust logs every producer back-pressure wait (several per second under load): keep errors.
    logging.getLogger("faust.transport.producer").setLevel(logging.ERROR)
    audit_file = logging.FileHandler(settings.data_dir / "audit.log")
    audit_file.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("persona.audit").addHandler(audit_file)
    worker.execute_from_commandline()
