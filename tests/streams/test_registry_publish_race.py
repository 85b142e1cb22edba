"""Publishes of one model version on a real broker (an EmbeddedBroker of this module's own).

Two publishes of the same version with other content, running at once (two data scientists, or
a retried publish racing the first), sent their chunks under the same keys
(`chunk/{version}/{file}/{i}/{n}`): the fold assembled one file from both sets, so the version
was incomplete on every worker and reader, and compaction kept a mix of both sets for good. Now
each publish sends its chunks and its manifest under keys of its own (a publish id): a reader
assembles each publish's set apart and serves the one the first manifest of the version verifies;
the publish whose manifest lost is refused with a message naming the race, and its records are
tombstoned. A publish that fails half way tombstones what it sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models import registry_log
from models.bundle import Bundle, read_bundle, save_model
from models.recs import fit_recommender
from models.registry_log import RegistryLog, bundle_records, publish_of
from streams.broker import EmbeddedBroker
from streams.registry import (
    MODELS_TOPIC,
    ensure_registry_topics,
    publish,
    read_messages,
    read_registry,
    write_records,
)
from tests.models.synthetic import basket_events
from tests.streams.test_registry_rules import SIGNER

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("race-broker") / "broker.log"
    with EmbeddedBroker(log_file=log) as running:
        asyncio.run(ensure_registry_topics(running.url))
        yield running


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_log, "CHUNK_SIZE", 512)  # many chunks a file: they interleave


def bundle(tmp_path: Path, version: str, k: int) -> Bundle:
    model = fit_recommender(basket_events(), k=k)
    model.version = version
    return read_bundle(save_model(model, tmp_path / f"{version}-{k}"))


def topic(broker: EmbeddedBroker) -> list[tuple[str, bytes | None]]:
    async def run() -> list[tuple[str, bytes | None]]:
        return [
            (msg.key.decode(), msg.value)
            async for msg in read_messages(broker.url, [MODELS_TOPIC], idle=0.5)
        ]

    return asyncio.run(run())


def compacted(records: list[tuple[str, bytes | None]]) -> dict[str, bytes | None]:
    """What compaction leaves of `records`: the latest value per key (None: a tombstone)."""
    latest: dict[str, bytes | None] = {}
    for key, value in records:
        latest[key] = value
    return latest


async def race(url: str, first: Bundle, second: Bundle) -> list[Any]:
    """Both publishes at once: their records interleave on the topic."""
    return await asyncio.gather(
        publish(url, first, SIGNER), publish(url, second, SIGNER), return_exceptions=True
    )


def test_two_publishes_of_one_version_at_once_never_mix_their_chunks(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    version = "recs-20261208T0000-aaaaaaaa"
    first, second = bundle(tmp_path, version, 5), bundle(tmp_path, version, 1)
    assert first.files != second.files
    outcomes = asyncio.run(race(own_broker.url, first, second))
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(refused) == 1, f"one of the two publishes must be refused: {outcomes}"
    assert isinstance(refused[0], ValueError)
    message = str(refused[0])
    # at once, or (the machine slow enough that one finished before the other checked) one
    # after the other: either way the loser is told, naming the version
    said = ("published at the same time", "is registered already with other content")
    assert any(s in message for s in said) and version in message, message
    winner = second if outcomes[0] is refused[0] else first

    depth = 5 if winner is first else 1
    # a reader with a cold cache: one complete set, the winner's, never a mix
    state = asyncio.run(read_registry(own_broker.url, SIGNER.key, tmp_path / "reader"))
    assert state.versions[version].complete, "the two chunk sets were mixed"
    assert state.load(version).k == depth

    # the loser's records are tombstoned: compaction leaves the winner's set alone, and a
    # reader of the compacted topic (a restart, a cold cache) loads the same content
    log = topic(own_broker)
    kept = {k: v for k, v in compacted(log).items() if v is not None}
    after = RegistryLog(tmp_path / "after-compaction")
    for key, value in log:
        if kept.get(key) is value:  # the key's latest record, at its place in the log
            after.apply(key, value)
    assert after.refused == 0 and after.versions[version].complete
    assert after.load(version).k == depth
    ours = [k for k in kept if k.startswith((f"chunk/{version}/", f"version/{version}"))]
    manifests = [k for k in ours if k.startswith("version/")]
    assert len(manifests) == 1
    publish_id = manifests[0].split("/")[2]
    assert all(k.split("/")[2] == publish_id for k in ours), ours


def live_keys(broker: EmbeddedBroker, version: str) -> list[str]:
    """The keys of `version`'s chunks and manifests that compaction keeps (not tombstoned)."""
    kept = compacted(topic(broker))
    prefixes = (f"chunk/{version}/", f"version/{version}")
    return [k for k, v in kept.items() if v is not None and k.startswith(prefixes)]


def test_the_publish_that_wins_tombstones_the_chunks_of_a_publish_that_died(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    version = "recs-20261208T0000-bbbbbbbb"
    died, again = bundle(tmp_path, version, 5), bundle(tmp_path, version, 1)
    chunks = [r for r in bundle_records(died) if r[0].startswith("chunk/")]
    asyncio.run(write_records(own_broker.url, chunks, SIGNER))  # then the publisher died
    asyncio.run(publish(own_broker.url, again, SIGNER))
    kept = live_keys(own_broker, version)
    assert len({publish_of(k) for k in kept}) == 1 and not {k for k, _ in chunks} & set(kept)
    state = asyncio.run(read_registry(own_broker.url, SIGNER.key, tmp_path / "reader"))
    assert state.versions[version].complete and state.load(version).k == 1


def test_a_publish_that_fails_before_its_manifest_tombstones_the_chunks_it_sent(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    version = "recs-20261208T0000-cccccccc"
    failing = bundle(tmp_path, version, 5)

    def progress(n: int) -> None:
        if n == 3:
            raise ConnectionError("the broker went away")

    with pytest.raises(ConnectionError):
        asyncio.run(publish(own_broker.url, failing, SIGNER, progress))
    sent = compacted(topic(own_broker))
    assert [k for k in sent if k.startswith(f"chunk/{version}/")], "nothing was sent"
    assert live_keys(own_broker, version) == []
    state = asyncio.run(read_registry(own_broker.url, SIGNER.key))
    assert version not in state.versions


def test_a_chunk_forged_under_a_verified_versions_keys_is_never_loaded(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """A signed chunk produced under the keys of a published version after its publish (one who
    holds the secret): compaction then keeps it in place of the genuine one. The live fold
    refuses it, and a reader of the compacted topic (a cold cache) finds the version incomplete
    and refuses to load it: the bytes that were verified, or none."""
    version = "recs-20261208T0000-dddddddd"
    good, forged = bundle(tmp_path, version, 5), bundle(tmp_path, version, 1)
    asyncio.run(publish(own_broker.url, good, SIGNER))
    live = asyncio.run(read_registry(own_broker.url, SIGNER.key, tmp_path / "live"))
    assert live.versions[version].complete
    ours = publish_of(live_keys(own_broker, version)[0])
    fake = [(k, v) for k, v in bundle_records(forged, ours) if k.startswith("chunk/")]
    asyncio.run(write_records(own_broker.url, fake, SIGNER))
    log = topic(own_broker)
    kept = compacted(log)
    for folder in ("live", "cold"):
        state = RegistryLog(tmp_path / folder)
        for key, value in log:
            if kept.get(key) is value:
                state.apply(key, value)
        if folder == "live":  # the kept cache: verified by the manifest, forged chunks refused
            assert state.versions[version].complete and state.load(version).k == 5
        else:
            assert not state.versions[version].complete
            assert state.unservable(version) is not None
