"""An in-memory `StateView` shipped with the code: the API without Kafka, for tests and notebooks.

`produce` folds events straight into profiles with the same pure core the stream uses, and the clock
is a `ManualClock` the caller controls. `MemoryRegistry` is the model registry's admin side
(`api.models_routes.ModelAdmin`) over the same registry log the workers fold, without the topic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from engine.catalog import Product
from engine.clock import EventTimeClock, ManualClock
from engine.content_experiments import ContentExperiment, ContentExperiments
from engine.erasure import unerased_exposures
from engine.events import Event
from engine.profile import Profile, apply
from engine.rules import Rules
from models.bundle import Bundle
from models.content_report import content_report
from models.experiments import Experiment, report
from models.registry import ModelSet
from models.registry_log import (
    EditLost,
    Record,
    RegistryLog,
    activation,
    bundle_records,
    experiment_record,
    experiments_record,
    rules_record,
)

MAX_EXPOSURES = 100_000


class MemoryState:
    def __init__(self, wall: ManualClock | None = None) -> None:
        self.wall = wall or ManualClock(2_000_000_000_000)
        self.clock = EventTimeClock(self.wall)
        self.profiles: dict[str, Profile] = {}
        self.catalog: dict[str, Product] = {}
        self.popular_items: list[str] = []
        self.catalog_generation = 0
        self.is_ready = True
        self.erased: list[str] = []  # the user ids `erase` was asked for, in order
        self.merged: dict[str, list[str]] = {}  # user id -> ids merged into it (identity)
        self.aliases: dict[str, str] = {}  # merged id -> the user it was merged into (identity)
        self.produced: list[Event] = []

    def profile(self, user_id: str) -> Profile | None:
        return self.profiles.get(user_id)

    def merged_ids(self, user_id: str) -> list[str]:
        return list(self.merged.get(user_id, ()))

    def merged_into(self, user_id: str) -> str | None:
        return self.aliases.get(user_id)

    def product(self, item_id: str) -> Product | None:
        return self.catalog.get(item_id)

    def popular(self) -> list[str]:
        return self.popular_items

    def products(self) -> Iterator[Product]:
        """Every catalog product (the ad feeds stream these)."""
        return iter(list(self.catalog.values()))

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def ready(self) -> tuple[bool, str]:
        return (True, "ok") if self.is_ready else (False, "starting")

    def put_product(self, product: Product) -> None:
        self.catalog[product.item_id] = product
        self.catalog_generation += 1

    def apply(self, event: Event) -> None:
        product = self.catalog.get(event.item_id) if event.item_id else None
        self.profiles[event.user_id] = apply(self.profiles.get(event.user_id), event, product)
        self.clock.observe(event.ts)

    def figures(self) -> dict[str, Any]:
        """Stream figures as the worker reports them (see api.observability)."""
        return {
            "counters": {
                "events_processed": len(self.produced),
                "events_duplicate": 0,
                "events_dead_lettered": 0,
                "catalog_updates": self.catalog_generation,
            },
            "consumed": {"clickstream": len(self.produced)},
            "lag": {"clickstream": 0},
        }

    def sample_profiles(self, n: int) -> list[Profile]:
        return list(self.profiles.values())[:n]

    def owner_url(self, user_id: str) -> str | None:
        return None

    def scaled_out(self) -> bool:
        return False

    def owner_known(self, user_id: str) -> bool:
        return True

    async def erase(self, user_id: str) -> None:
        self.erased.append(user_id)
        self.profiles.pop(user_id, None)
        for merged in self.merged.pop(user_id, ()):  # erased with the user, alias and all
            self.profiles.pop(merged, None)
            self.aliases.pop(merged, None)

    async def produce(self, events: list[Event]) -> None:
        for event in events:
            self.produced.append(event)
            self.apply(event)


class MemoryRegistry:
    """`api.models_routes.ModelAdmin` in memory: the records a worker would read from the `models`
    topic are folded straight into a `RegistryLog`, and the models it names are swapped into
    `content` (an `api.content.ContentService`) at once. Versions are the shipped defaults plus
    what `publish` registers (which needs a `cache_dir` for the artifacts)."""

    def __init__(self, content: Any, state: MemoryState, cache_dir: Path | None = None) -> None:
        self.content = content
        self.state = state
        self.registry = RegistryLog(cache_dir)
        self.exposures: list[dict[str, Any]] = []

    def publish(self, bundle: Bundle) -> None:
        for key, value in bundle_records(bundle):
            self.registry.apply(key, value)

    def listing(self) -> list[dict[str, Any]]:
        return self.registry.listing()

    def experiment(self) -> dict[str, Any] | None:
        exp = self.content.models.experiment
        return exp.to_dict() if exp else None

    async def activate(self, name: str, version: str | None) -> dict[str, Any]:
        key, value = activation(self.registry, name, version)
        self.registry.apply(key, value)
        self._serve()
        active = self.registry.active(name)
        return {"name": name, "version": active, "active": True, "serving": True}

    async def set_experiment(self, experiment: Experiment | None) -> dict[str, Any] | None:
        if experiment is not None:
            self.registry.check_experiment(experiment)
        self.registry.apply(*experiment_record(experiment))
        self._serve()
        return self.experiment()

    def rules(self) -> Rules:
        rules: Rules = self.content.models.rules
        return rules

    def _edit(self, document: str, record: Record) -> None:
        """Fold an admin document record; EditLost when it did not win (the fold's rule)."""
        self.registry.apply(*record)
        if not self.registry.holds(record[0]):
            raise EditLost(document, self.registry.document_version(document))

    async def set_rules(self, rules: Rules) -> bool:
        """Fold the rules record; the models served stay as they are (only the rules change)."""
        self._edit("rules", rules_record(rules))
        self.content.models = dataclasses.replace(self.content.models, rules=self.registry.rules)
        return True

    def experiment_names(self) -> list[str]:
        return sorted(self.registry.experiments)

    async def report(self, name: str) -> dict[str, Any]:
        known = self.registry.experiments.get(name)
        return report(
            name, self.exposures, self.state.produced, None if known is None else known.share
        )

    def log_exposure(self, exposure: dict[str, Any]) -> None:
        if len(self.exposures) < MAX_EXPOSURES:
            self.exposures.append(exposure)

    def forget_exposures(
        self, user_ids: list[str], also: Callable[[str], bool] | None = None
    ) -> None:
        """An erasure: the users' exposures go, and those of the ids `also` names (here they
        are the topic, and its tombstone)."""
        self.exposures = unerased_exposures(self.exposures, user_ids, also)

    def content_experiments(self) -> ContentExperiments:
        tests: ContentExperiments = self.content.models.content_experiments
        return tests

    async def set_content_experiments(self, experiments: ContentExperiments) -> bool:
        """Fold the record; the models served stay as they are (only the experiments change)."""
        self._edit("content_experiments", experiments_record(experiments))
        tests = self.registry.content_experiments
        self.content.models = dataclasses.replace(self.content.models, content_experiments=tests)
        return True

    def content_experiment(self, name: str) -> ContentExperiment | None:
        return self.registry.content_seen.get(name)

    async def content_report(
        self, experiment: ContentExperiment, window_hours: float
    ) -> dict[str, Any]:
        return content_report(experiment, self.exposures, self.state.produced, window_hours)

    def _serve(self) -> None:
        """Swap in what the log says is active (as streams.registry.RegistryService does)."""
        registry = self.registry
        exp = registry.experiment
        candidate = registry.load(exp.candidate) if exp is not None else None
        self.content.models = ModelSet(
            registry.load(registry.active("churn")),
            registry.load(registry.active("recs")),
            experiment=exp,
            candidate=candidate,
            rules=registry.rules,
            content_experiments=registry.content_experiments,
        )
