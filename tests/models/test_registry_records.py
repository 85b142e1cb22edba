"""Registry records attacked (models/registry_log.py): anyone holding the cluster secret (a data
scientist's laptop, a compromised CI) signs what they like. Each record below was folded before
and then allocated gigabytes, put a model in the wrong slot, or changed what a version (even the
shipped default) serves without an activation; now the fold logs it, counts it in `refused`
and keeps what it had."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from models.artifacts import ModelLoadError
from models.bundle import Bundle, read_bundle, save_model
from models.recs import Recommender, fit_recommender
from models.registry import DEFAULT_DIR
from models.registry_log import Manifest, RegistryLog, bundle_records
from tests.models.synthetic import T0, basket_events
from tests.models.test_registry_republish import differs


def fold(state: RegistryLog, records: list[tuple[str, bytes | None]]) -> None:
    for key, value in records:
        state.apply(key, value)


def recs_bundle(tmp_path: Path, version: str, k: int = 5) -> Bundle:
    model = fit_recommender(basket_events(), k=k)
    model.version = version
    return read_bundle(save_model(model, tmp_path / f"{version}-{k}"))


def test_a_chunk_count_of_millions_is_refused_without_allocating(tmp_path: Path) -> None:
    """`chunk/v/recs.npz/0/10000000`: the fold allocated a list of 10 million slots (80 MB; a
    count of 10**9 was 8 GB) for one record of one byte."""
    state = RegistryLog(tmp_path / "cache")
    tracemalloc.start()
    try:
        state.apply("chunk/recs-v/recs.npz/0/10000000", b"x")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert state.refused == 1 and not state._pending
    assert peak < 1 << 20


@pytest.mark.parametrize("key", ["chunk/recs-v/recs.npz/-1/2", "chunk/recs-v/recs.npz/2/2"])
def test_a_chunk_outside_its_count_is_refused(tmp_path: Path, key: str) -> None:
    state = RegistryLog(tmp_path / "cache")
    state.apply(key, b"x")
    assert state.refused == 1 and not state._pending


def _relabelled(bundle: Bundle, **change: str) -> list[tuple[str, bytes | None]]:
    records = bundle_records(bundle)
    key, value = records[-1]
    manifest = json.loads(value or b"{}") | change
    return [*records[:-1], (key, json.dumps(manifest).encode())]


def test_a_manifest_naming_another_model_is_refused(tmp_path: Path) -> None:
    """A recs artifact registered as churn: it could be activated as churn, and the worker's
    churn slot held a Recommender (no score_batch: every profile answer failed)."""
    bundle = recs_bundle(tmp_path, "recs-20261206T0000-aaaaaaaa")
    state = RegistryLog(tmp_path / "cache")
    fold(state, _relabelled(bundle, name="churn", kind="logistic_regression"))
    assert state.refused == 1
    with pytest.raises(LookupError):
        state.check("churn", bundle.version)
    # a manifest that got through anyway (folded by an older version, say): the load checks
    # what the artifact in the cache is
    files = {f: {"sha256": bundle.digest(f)} for f in bundle.files}
    manifest = Manifest("churn", "logistic_regression", bundle.version, bundle.created, {}, files)
    state.versions[bundle.version] = manifest
    with pytest.raises(ModelLoadError, match="is a recs model, not churn"):
        state.load(bundle.version)


@pytest.mark.parametrize(
    "change",
    [{"kind": "word2vec"}, {"name": "ltv"}, {"files": {"recs.json": {"sha256": "0"}}}],
)
def test_a_manifest_of_an_unknown_kind_or_files_is_refused(
    tmp_path: Path, change: dict[str, object]
) -> None:
    bundle = recs_bundle(tmp_path, "recs-20261206T0000-bbbbbbbb")
    state = RegistryLog(tmp_path / "cache")
    before = state.listing()
    fold(state, _relabelled(bundle, **change))  # type: ignore[arg-type]
    assert state.refused == 1 and state.listing() == before


def test_a_version_registered_again_with_other_content_keeps_the_first(tmp_path: Path) -> None:
    """The same version published twice with different tables: the cache kept the first files
    (chunks of a file there are skipped) while the manifest said the second, so the version
    turned incomplete (unlisted, not activatable); a cold worker read the second. Now the
    second manifest is refused at the fold and by `conflict` (what `publish` asks first), and so
    is each of its chunks that would change a file the first manifest verified."""
    version = "recs-20261206T0000-cccccccc"
    first, second = recs_bundle(tmp_path, version, k=5), recs_bundle(tmp_path, version, k=1)
    assert first.files != second.files
    state = RegistryLog(tmp_path / "cache")
    fold(state, bundle_records(first))
    assert state.conflict(first) is None  # the same content again is fine
    assert "other content" in (state.conflict(second) or "")
    records = bundle_records(second)
    fold(state, records)
    changed = sum(differs(first, key, value) for key, value in records[:-1])
    assert changed and state.refused == 1 + changed
    assert state.check("recs", version).complete
    assert state.load(version).k == 5


def test_the_shipped_default_version_cannot_be_registered(tmp_path: Path) -> None:
    """A manifest carrying the default recs version replaced the package's manifest: with no
    activation at all, every worker then loaded the publisher's files as the default."""
    default = RegistryLog().active("recs")
    d = tmp_path / "hijack"
    d.mkdir()
    for f in ("recs.json", "recs.npz"):
        shutil.copy(DEFAULT_DIR / f, d / f)
    meta = json.loads((d / "recs.json").read_text())
    meta["popular"] = ["nothing"]  # any other content under the same version
    meta["recency_decay"] = 0.1
    (d / "recs.json").write_text(json.dumps(meta))
    bundle = read_bundle(d)
    assert bundle.version == default
    state = RegistryLog(tmp_path / "cache")
    assert "shipped" in (state.conflict(bundle) or "")
    fold(state, bundle_records(bundle))
    assert state.refused == 1 and state.versions[default].source == "package"
    model = state.load(default)
    assert isinstance(model, Recommender) and model.recency_decay != 0.1
    assert model.recommend([("x", T0)], set(), 3) == Recommender.load(DEFAULT_DIR).recommend(
        [("x", T0)], set(), 3
    )
    assert np.array_equal(model.weights, Recommender.load(DEFAULT_DIR).weights)


@pytest.mark.parametrize(
    "version",
    ["recs-a/b", "recs-../../x", "recs-a\x00b", "recs-x\n", "recs-" + "x" * 200, "recs- x"],
)
def test_a_version_that_cannot_name_a_cache_folder_is_refused_at_publish(
    tmp_path: Path, version: str
) -> None:
    """read_bundle took any version starting with `recs-`: the records went out and every worker
    refused them (a version with '/' made chunk keys of more parts). "recs-x\\n" also passed the
    fold's pattern (`$` matches before a final newline) and named a cache folder."""
    d = save_model(fit_recommender(basket_events(), k=2), tmp_path / "r")
    meta = json.loads((d / "recs.json").read_text()) | {"version": version}
    (d / "recs.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="a version is at most 128 letters"):
        read_bundle(d)
    manifest = {"name": "recs", "kind": "item_knn", "version": version, "created": "x"}
    state = RegistryLog(tmp_path / "cache")
    state.apply(f"version/{version}", json.dumps(manifest).encode())
    assert state.refused == 1


@pytest.mark.parametrize("created", [5, "x" * 10_000_000, "2026\x1b[2J"])
def test_a_created_time_that_is_not_one_is_refused_at_publish(
    tmp_path: Path, created: object
) -> None:
    """A 10 MB `created` was listed in every GET /v1/models answer."""
    d = save_model(fit_recommender(basket_events(), k=2), tmp_path / "r")
    meta = json.loads((d / "recs.json").read_text()) | {"created": created}
    (d / "recs.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="created must be an RFC 3339 time"):
        read_bundle(d)


def test_a_json_file_of_more_chunks_than_its_bound_is_refused(tmp_path: Path) -> None:
    """A recs.json announced in 1,025 chunks (over 256 MiB, parsed whole at load): refused at
    its first chunk instead of held in memory up to the 4 GiB of any file; a table of as many
    chunks is still taken."""
    from models.registry_log import CHUNK_SIZE, MAX_JSON_CHUNKS

    state = RegistryLog(tmp_path / "cache")
    state.apply(f"chunk/recs-v/recs.json/0/{MAX_JSON_CHUNKS + 1}", b"x")
    assert state.refused == 1 and not state._pending
    state.apply(f"chunk/recs-v/recs.npz/0/{MAX_JSON_CHUNKS + 1}", b"x" * CHUNK_SIZE)
    assert state.refused == 1 and len(state._pending) == 1


def test_a_json_artifact_over_its_bound_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """read_json reads at most MAX_JSON_BYTES (+1 to tell): at load, and at publish before the
    whole file is parsed. The bound is lowered to the file's size - 1 here."""
    import models.artifacts
    import models.bundle
    from models.bundle import load_model

    directory = save_model(fit_recommender(basket_events(), k=5), tmp_path / "m")
    size = (directory / "recs.json").stat().st_size
    assert load_model(directory).name == "recs"
    for module in (models.artifacts, models.bundle):
        monkeypatch.setattr(module, "MAX_JSON_BYTES", size - 1)
    with pytest.raises(ModelLoadError, match="at most"):
        load_model(directory)
    with pytest.raises(ModelLoadError, match="at most"):
        read_bundle(directory)
