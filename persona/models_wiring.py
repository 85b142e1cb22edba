"""Wires the model registry into a worker: the registry service, hot swaps, readiness, the API."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.content import ContentService
from api.models_routes import ADMIN
from api.observability import TELEMETRY
from engine.settings import Settings
from engine.signing import cluster_key
from models.registry import ModelSet
from models.registry_log import MAX_PENDING
from streams.kafka_security import Broker
from streams.registry import RegistryService
from streams.registry_copy import REGISTRY_COPY_DIR
from streams.signed import REFUSAL_REASONS, RecordSigner


def attach_registry(
    settings: Settings,
    broker_url: Broker,
    content: ContentService,
    state: Any,
    web_app: web.Application,
) -> RegistryService:
    """A `RegistryService` that swaps `content.models` (one reference) whenever the registry's
    active versions change. Until the first load `state.models` is None, so /readyz answers 503
    ("models loading"): a new worker is ready only with the active versions in place."""

    def swap(models: ModelSet) -> None:
        content.models = models
        state.models = models

    state.models = None
    registry = RegistryService(
        broker_url,
        settings.data_dir / "models",
        swap,
        signer=process_signer(settings, f"worker:{settings.own_url}"),
        audit=True,  # the worker audits the model changes it folds (docs/security.md)
        copy=settings.data_dir / REGISTRY_COPY_DIR,  # kept across a new embedded broker
    )
    web_app[ADMIN] = registry
    count_refusals(web_app, registry)
    return registry


def process_signer(settings: Settings, name: str) -> RecordSigner | None:
    """How this process signs its registry and command records (None: no cluster secret)."""
    key = cluster_key(settings.cluster_secret)
    return None if key is None else RecordSigner(key, name)


def count_refusals(web_app: web.Application, registry: RegistryService) -> None:
    """`persona_registry_records_refused_total{reason}` on /metrics: records of the `models`
    topic skipped as unsigned, badly signed or replayed; and
    `persona_registry_chunks_dropped_total`: incomplete artifact files whose spooled chunks the
    fold dropped to keep within MAX_PENDING (models/registry_log.py, abandoned publishes);
    `persona_registry_artifacts_mismatched_total`: loads refused because a cached artifact file
    did not match the digest recorded at publish."""

    def lines() -> list[str]:
        name = "persona_registry_records_refused_total"
        refused = registry.gate.refused
        dropped = "persona_registry_chunks_dropped_total"
        mismatched = "persona_registry_artifacts_mismatched_total"
        return [
            f"# TYPE {name} counter",
            *(f'{name}{{reason="{r}"}} {refused.get(r, 0)}' for r in REFUSAL_REASONS),
            f"# HELP {dropped} Incomplete model artifact files dropped with the chunks spooled "
            f"so far: over {MAX_PENDING} were being assembled at once.",
            f"# TYPE {dropped} counter",
            f"{dropped} {registry.registry.dropped}",
            f"# HELP {mismatched} Model versions not loaded: a cached artifact file did not "
            "match the digest recorded at publish.",
            f"# TYPE {mismatched} counter",
            f"{mismatched} {registry.registry.mismatched}",
        ]

    web_app[TELEMETRY].text_sources.append(lines)
