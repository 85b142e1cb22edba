"""`persona models activate` / `rollback` test-load the version they would make active, as
POST /v1/models/{name}/activate does (409): a version no worker can load (an artifact an older
loader accepted, records signed by hand) is refused before its activation record is written.
Before, the CLI wrote the record: the registry listed the version active while every worker
kept serving the previous one. On an embedded broker of the test's own (an activation on the
session broker would switch the session worker's model)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.bundle import Bundle, read_bundle, save_model
from models.recs import fit_recommender
from models.registry_log import RegistryLog, bundle_records
from persona.cli import main
from streams.broker import EmbeddedBroker
from streams.registry import publish, read_registry, write_records
from tests.models.synthetic import basket_events
from tests.persona.conftest import cli_signer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_file=log) as own:
        yield own


def _bundle(tmp_path: Path, k: int) -> Bundle:
    return read_bundle(save_model(fit_recommender(basket_events(), k=k), tmp_path / f"k{k}"))


def _unloadable(bundle: Bundle) -> Bundle:
    """`bundle` with its item list repeated: publish's own check refuses it, a hand-signed
    record (or a loader stricter than the one that accepted it) gets it into the registry."""
    meta = json.loads(bundle.files["recs.json"])
    meta["items"] = ["a"] * len(meta["items"])
    return dataclasses.replace(
        bundle, files={**bundle.files, "recs.json": json.dumps(meta).encode()}
    )


def _active(broker: EmbeddedBroker) -> str:
    return asyncio.run(read_registry(broker.url, cli_signer().key)).active("recs")


def test_activate_refuses_a_version_that_does_not_load_and_writes_nothing(
    broker: EmbeddedBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _bundle(tmp_path, 5)
    bad = _unloadable(_bundle(tmp_path, 7))
    asyncio.run(publish(broker.url, good, cli_signer()))
    asyncio.run(write_records(broker.url, bundle_records(bad), cli_signer()))
    before = _active(broker)

    assert main(["models", "activate", "recs", bad.version, "--broker", broker.url]) == 2
    err = capsys.readouterr().err
    assert f"{bad.version} cannot be served" in err and "unique" in err
    assert _active(broker) == before  # no activation record was written

    assert main(["models", "activate", "recs", good.version, "--broker", broker.url]) == 0
    assert _active(broker) == good.version
    assert main(["models", "rollback", "recs", "--broker", broker.url]) == 0
    assert _active(broker) == before


def test_only_assembles_one_versions_artifact(tmp_path: Path) -> None:
    """The CLI's read for an activation assembles only the version it activates (the others
    keep their metadata): the registry may hold many large versions."""
    one, other = _bundle(tmp_path, 5), _bundle(tmp_path, 7)
    cache = tmp_path / "cache"
    state = RegistryLog(cache, only=one.version)
    for key, value in bundle_records(one) + bundle_records(other):
        state.apply(key, value)
    assert sorted(p.name for p in cache.iterdir()) == [one.version]
    assert state.versions[one.version].complete and state.versions[other.version].complete
    assert state.load(one.version).version == one.version


def test_activate_of_an_unknown_version_says_how_versions_get_into_the_registry(
    broker: EmbeddedBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A version trained with `train --out DIR` and never published was said only "no recs
    version ... in the registry": the message names the publish that puts it there."""
    local = save_model(fit_recommender(basket_events(), k=11), tmp_path / "out" / "recs")
    version = read_bundle(local).version
    assert main(["models", "activate", "recs", version, "--broker", broker.url]) == 2
    err = capsys.readouterr().err
    assert f"no recs version {version!r} in the registry" in err, err
    assert "persona models publish" in err and "--out" in err, err
