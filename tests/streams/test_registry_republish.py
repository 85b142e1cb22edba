"""A version published again after a publish that died before its manifest (models/registry_log.py,
`RegistryLog._chunk`), as the worker's registry service folds it: the service never serves the
unverified bytes of an incomplete version, and swaps the version in once its chunks complete it.
The integration test runs the real sequence on a broker: every process that reads the registry
(a worker following it live, a reader with a cold cache, the worker restarted on its kept cache)
loads the second content, and a late chunk set of other content changes nothing."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from models.bundle import Bundle, read_bundle, save_model
from models.recs import fit_recommender
from models.registry_log import RegistryLog, activation_record, bundle_records
from streams.registry import (
    MODELS_TOPIC,
    RegistryService,
    activation,
    ensure_registry_topics,
    publish,
    read_messages,
    read_registry,
    write_records,
)
from tests.models.synthetic import basket_events
from tests.streams.test_registry_rules import SIGNER, message, worker


def bundle(tmp_path: Path, version: str, k: int) -> Bundle:
    model = fit_recommender(basket_events(), k=k)
    model.version = version
    return read_bundle(save_model(model, tmp_path / f"{version}-{k}"))


def test_an_incomplete_active_version_is_not_served_until_its_chunks_complete_it(
    tmp_path: Path,
) -> None:
    """The version active (activated where it was complete) but incomplete here: its cached
    bytes are the died publish's, not the manifest's. They were loaded and served under the
    version's name; now the version before it is served until the manifest's chunks arrive,
    and then the worker reloads (the fold says what can be served changed)."""
    version = "recs-20261207T0000-dddddddd"
    first, second = bundle(tmp_path, version, 5), bundle(tmp_path, version, 1)
    service = worker(tmp_path, [])
    try:
        default = service.registry.active("recs")
        records = bundle_records(second)
        for key, value in [r for r in bundle_records(first) if r[0].startswith("chunk/")]:
            service._fold(message(key, value), True)
        service._fold(message(*records[-1]), True)  # the manifest; its chunks come later
        service._fold(message(*activation_record("recs", version, [default])), True)
        assert not service.registry.versions[version].complete
        assert service._build().recs.version == default, "the unverified bytes were served"
        changed = [service._fold(message(key, value), True) for key, value in records[:-1]]
        assert changed[-1] is True  # the worker reloads
        built = service._build()
        assert built.recs.version == version and built.recs.k == 1
    finally:
        assert service._copy is not None
        service._copy.close()


def _follow(service: RegistryService, broker: Any, seen: int) -> int:
    """Fold the records of the `models` topic past offset `seen` as the service follows it;
    returns the last offset folded."""

    async def run() -> int:
        last = seen
        async for msg in read_messages(broker.url, [MODELS_TOPIC], idle=0.5):
            if msg.offset > last:
                service._fold(msg, True)
                last = msg.offset
        return last

    return asyncio.run(run())


@pytest.mark.integration
def test_a_version_published_again_after_a_publish_died_is_loaded_everywhere(
    broker: Any, tmp_path: Path
) -> None:
    version = f"recs-20261207T0000-{uuid.uuid4().hex[:8]}"
    first, second = bundle(tmp_path, version, 5), bundle(tmp_path, version, 1)
    live = worker(tmp_path / "live", [])
    restarted = None
    try:
        asyncio.run(ensure_registry_topics(broker.url))
        seen = _follow(live, broker, -1)
        # the publisher sent every chunk, then died before the manifest
        died = [r for r in bundle_records(first) if r[0].startswith("chunk/")]
        asyncio.run(write_records(broker.url, died, SIGNER))
        seen = _follow(live, broker, seen)
        asyncio.run(publish(broker.url, second, SIGNER))  # the same version, other bytes
        seen = _follow(live, broker, seen)
        assert live.registry.versions[version].complete, "the second content was skipped"
        asyncio.run(write_records(broker.url, [activation(live.registry, "recs", version)], SIGNER))
        seen = _follow(live, broker, seen)
        assert live._build().recs.k == 1

        # a reader (a cold cache) and the CLI's activation read (only that version)
        for only in (None, version):
            folder = tmp_path / f"reader-{only}"
            state = asyncio.run(read_registry(broker.url, SIGNER.key, folder, only))
            assert state.versions[version].complete and state.load(version).k == 1

        # a late chunk set of other content: refused and counted, nothing changes
        late = bundle(tmp_path, version, 3)
        refused = live.registry.refused
        chunks = [r for r in bundle_records(late) if r[0].startswith("chunk/")]
        asyncio.run(write_records(broker.url, chunks, SIGNER))
        seen = _follow(live, broker, seen)
        assert live.registry.refused > refused
        assert live.registry.versions[version].complete
        assert RegistryLog.load(live.registry, version).k == 1

        # the worker restarted: its cache kept, the topic read again from its start
        assert live._copy is not None
        live._copy.close()
        live._copy = None
        restarted = worker(tmp_path / "live", [])
        _follow(restarted, broker, -1)
        assert restarted.registry.versions[version].complete
        built = restarted._build()
        assert built.recs.version == version and built.recs.k == 1
    finally:
        for service in (live, restarted):
            if service is not None and service._copy is not None:
                service._copy.close()


def test_a_cached_artifact_changed_after_its_verification_is_not_loaded(tmp_path: Path) -> None:
    """The cache's copy of a verified version replaced by other bytes (another process, a
    hand, a disk fault) after its manifest verified it: loading checks the files against the
    digests recorded at publish, refuses them (logged, counted) and keeps the previous one."""
    version = "recs-20261208T0000-eeeeeeee"
    good, other = bundle(tmp_path, version, 5), bundle(tmp_path, version, 1)
    service = worker(tmp_path, [])
    try:
        default = service.registry.active("recs")
        for key, value in bundle_records(good):
            service._fold(message(key, value), True)
        service._fold(message(*activation_record("recs", version, [default])), True)
        assert service.registry.versions[version].complete
        (tmp_path / "models" / version / "recs.npz").write_bytes(other.files["recs.npz"])
        built = service._build()
        assert built.recs.version == default, "bytes other than the verified ones were served"
        assert service.registry.mismatched == 1
    finally:
        assert service._copy is not None
        service._copy.close()
