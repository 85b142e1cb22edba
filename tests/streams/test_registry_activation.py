"""Activating a version that cannot be served (an artifact an older loader accepted, a record
signed by hand): the worker's registry service test-loads it before it writes the activation
record, so POST /v1/models/{name}/activate answers 409 with the loader's reason and nothing
changes anywhere. Before, the record was written, the API answered 200 `serving: false` after
12 s, the registry listed the version active while every worker kept the previous one, and a
restarted worker fell back to the shipped defaults. No broker: the producer is a stand-in."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from models.bundle import read_bundle, save_model
from models.recs import fit_recommender
from models.registry import ModelSet
from models.registry_log import bundle_records
from streams.registry import RegistryService, activation
from tests.models.synthetic import basket_events
from tests.streams.test_registry_rules import worker


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None]] = []

    async def send_and_wait(self, topic: str, value: bytes | None, **kw: Any) -> None:
        self.sent.append((kw["key"].decode(), value))


def _service(tmp_path: Path) -> tuple[RegistryService, Producer, str]:
    """A worker's registry service holding one registered recs version whose cached table was
    damaged on disk after it was folded (as a loader change would make it unloadable)."""
    bundle = read_bundle(save_model(fit_recommender(basket_events(), k=5), tmp_path / "new"))
    service = worker(tmp_path, [])
    for key, value in bundle_records(bundle):
        service.registry.apply(key, value)
    service.models = ModelSet.default()
    producer = Producer()
    service._producer = producer  # type: ignore[assignment]
    return service, producer, bundle.version


def test_a_version_that_does_not_load_is_refused_before_its_activation_is_written(
    tmp_path: Path,
) -> None:
    service, producer, version = _service(tmp_path)
    try:
        meta = tmp_path / "models" / version / "recs.json"
        data = json.loads(meta.read_text())
        meta.write_text(json.dumps(data | {"items": ["a"] * len(data["items"])}))
        # published so (an older loader took it): its manifest records the digest of these bytes
        digest = hashlib.sha256(meta.read_bytes()).hexdigest()
        service.registry.versions[version].files["recs.json"]["sha256"] = digest
        with pytest.raises(ValueError, match=f"{version} cannot be served: .*unique"):
            asyncio.run(service.activate("recs", version))
        assert producer.sent == []
        assert service.registry.active("recs") != version
    finally:
        assert service._copy is not None
        service._copy.close()


def test_a_version_that_loads_is_activated(tmp_path: Path) -> None:
    service, producer, version = _service(tmp_path)
    try:
        service.models = None  # nothing serves it here: the answer says so without waiting
        service._await = _no_wait  # type: ignore[method-assign]
        result = asyncio.run(service.activate("recs", version))
        assert result == {"name": "recs", "version": version, "active": True, "serving": False}
        assert [key for key, _ in producer.sent] == ["active/recs"]
        assert version in service._memo  # loaded once: the swap that follows reuses it
    finally:
        assert service._copy is not None
        service._copy.close()


def test_a_restarted_worker_whose_active_version_fails_serves_the_one_before(
    tmp_path: Path,
) -> None:
    """recs B active (activated by the CLI, which cannot test-load), A before it; B's cached
    artifact no longer loads. A restarted worker's first load raised, and it served the shipped
    defaults of both models; now it serves A, the last version that was served."""
    service, _producer, before = _service(tmp_path)
    try:
        service.registry.apply(*activation(service.registry, "recs", before))
        model = fit_recommender(basket_events(), k=2)
        model.version = before[:-8] + "bbbbbbbb"
        bundle = read_bundle(save_model(model, tmp_path / "b"))
        for key, value in bundle_records(bundle):
            service.registry.apply(key, value)
        service.registry.apply(*activation(service.registry, "recs", bundle.version))
        assert service.registry.history("recs")[0] == before
        meta = tmp_path / "models" / bundle.version / "recs.json"
        meta.write_text(json.dumps(json.loads(meta.read_text()) | {"k": 0}))
        built = service._build()
        assert built.recs.version == before
        assert built.churn.version == service.registry.active("churn")
    finally:
        assert service._copy is not None
        service._copy.close()


async def _no_wait(done: Any) -> bool:
    return bool(done())


@pytest.mark.integration
def test_publish_refuses_a_version_registered_with_other_content(
    broker: Any, tmp_path: Path
) -> None:
    """`persona models publish` of a directory whose recs.json names a version the registry
    holds with other files: refused before a record is written (the workers would refuse the
    manifest). The same content again is fine; the shipped default's version is refused."""
    from engine.signing import ClusterKey
    from models.bundle import Bundle
    from models.registry_log import RegistryLog
    from streams.registry import publish
    from streams.signed import RecordSigner

    signer = RecordSigner(ClusterKey(uuid.uuid4().hex * 2), "cli:test")
    version = f"recs-20261206T0000-{uuid.uuid4().hex[:8]}"

    def bundle(k: int, name: str = version) -> Bundle:
        model = fit_recommender(basket_events(), k=k)
        model.version = name
        return read_bundle(save_model(model, tmp_path / f"{name}-{k}"))

    first = bundle(5)
    assert asyncio.run(publish(broker.url, first, signer)) > 1
    assert asyncio.run(publish(broker.url, first, signer)) > 1  # the same content again
    with pytest.raises(ValueError, match="registered already with other content"):
        asyncio.run(publish(broker.url, bundle(1), signer))
    default = RegistryLog().active("recs")
    with pytest.raises(ValueError, match="shipped with Persona"):
        asyncio.run(publish(broker.url, bundle(5, default), signer))
