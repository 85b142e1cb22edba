"""Wires the model registry into a worker: the registry service, hot swaps, readiness, the API."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.content import ContentService
from api.models_routes import ADMIN
from engine.settings import Settings
from models.registry import ModelSet
from streams.kafka_security import Broker
from streams.registry import RegistryService


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
    registry = RegistryService(broker_url, settings.data_dir / "models", swap)
    web_app[ADMIN] = registry
    return registry
