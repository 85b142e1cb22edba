"""The registry fold's incomplete artifacts (models/registry_log.py, `RegistryLog._chunk`): their
chunks are spooled to `cache_dir/{version}/{file}.part`, not held in memory, and at most
`MAX_PENDING` of them stay. They were all held, bytes and all, in every process (worker and each
reader) for the life of the process: an abandoned publish of a large artifact was hundreds of MB
of RAM in each, and abandoned or interleaved publishes added up without bound."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from models import registry_log
from models.bundle import Bundle, read_bundle, save_model
from models.recs import fit_recommender
from models.registry_log import CHUNK_SIZE, MAX_PENDING, RegistryLog, bundle_records
from tests.models.synthetic import basket_events

VERSION = "recs-20261207T0000-aaaaaaaa"


def recs_bundle(tmp_path: Path, version: str = VERSION) -> Bundle:
    model = fit_recommender(basket_events(), k=5)
    model.version = version
    return read_bundle(save_model(model, tmp_path / version))


def test_an_incomplete_artifact_is_not_held_in_memory(tmp_path: Path) -> None:
    """200 chunks of 256 KiB (50 MiB) of a file of 201, the last one missing: they were all held
    in the fold's memory; now memory holds which chunks arrived, the bytes are on disk."""
    state = RegistryLog(tmp_path / "cache")
    fed = 0
    tracemalloc.start()
    try:
        for i in range(200):
            chunk = bytes([i % 251]) * CHUNK_SIZE  # a new object each time, dropped after
            state.apply(f"chunk/{VERSION}/recs.npz/{i}/201", chunk)
            fed += len(chunk)
            del chunk
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert state.refused == 0 and len(state._pending) == 1
    assert fed == 200 * CHUNK_SIZE
    assert current < 1 << 20, f"{current} bytes still traced after {fed} fed"
    assert peak < 4 * CHUNK_SIZE
    part = tmp_path / "cache" / VERSION / "recs.npz.part"
    assert part.stat().st_size == fed  # spooled at the chunks' offsets
    assert not (tmp_path / "cache" / VERSION / "recs.npz").exists()


def test_chunks_spooled_in_any_order_assemble_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_log, "CHUNK_SIZE", 256)
    bundle = recs_bundle(tmp_path)
    records = bundle_records(bundle)
    chunks = [r for r in records if r[0].startswith("chunk/")]
    assert len(chunks) > 3
    state = RegistryLog(tmp_path / "cache")
    # out of order, and the last chunk twice: once longer (a bad resend), then right
    last = max((r for r in chunks if "/recs.npz/" in r[0]), key=lambda r: int(r[0].split("/")[-2]))
    state.apply(last[0], (last[1] or b"") + b"junk")
    for key, value in reversed(chunks):
        state.apply(key, value)
    state.apply(*records[-1])
    assert state.refused == 0 and not state._pending
    assert state.versions[bundle.version].complete
    folder = tmp_path / "cache" / bundle.version
    for file, data in bundle.files.items():
        assert (folder / file).read_bytes() == data
    assert not list(folder.glob("*.part"))


@pytest.mark.parametrize(
    ("key", "size", "why"),
    [
        (f"chunk/{VERSION}/recs.npz/0/3", CHUNK_SIZE + 1, "longer than a chunk"),
        (f"chunk/{VERSION}/recs.npz/2/3", CHUNK_SIZE + 1, "longer than a chunk"),
        (f"chunk/{VERSION}/recs.npz/0/3", CHUNK_SIZE - 1, "shorter than a chunk"),
        (f"chunk/{VERSION}/recs.npz/1/3", 1, "shorter than a chunk"),
    ],
)
def test_a_chunk_of_the_wrong_length_is_refused(
    tmp_path: Path, key: str, size: int, why: str
) -> None:
    """A chunk longer than CHUNK_SIZE (it wrote over the next one's bytes), or a chunk that is
    not the last and shorter (the file's bytes would not be at their offsets)."""
    state = RegistryLog(tmp_path / "cache")
    state.apply(key, b"x" * size)
    assert state.refused == 1, why
    assert not state._pending
    assert not (tmp_path / "cache" / VERSION / "recs.npz.part").exists()


def test_a_chunk_count_other_than_the_first_seen_is_refused(tmp_path: Path) -> None:
    state = RegistryLog(tmp_path / "cache")
    state.apply(f"chunk/{VERSION}/recs.npz/0/3", b"x" * CHUNK_SIZE)
    state.apply(f"chunk/{VERSION}/recs.npz/1/4", b"x" * CHUNK_SIZE)
    assert state.refused == 1 and len(state._pending) == 1


def test_at_most_max_pending_incomplete_artifacts_stay(tmp_path: Path) -> None:
    """Abandoned publishes (a publisher that died mid-way): each one's chunks stayed for the
    life of the process. Now the least recently fed set is dropped, its .part file removed."""
    cache = tmp_path / "cache"
    state = RegistryLog(cache)
    versions = [f"recs-20261207T0000-{i:08x}" for i in range(MAX_PENDING + 3)]
    first, rest = versions[0], versions[1:]
    state.apply(f"chunk/{first}/recs.npz/0/3", b"x" * CHUNK_SIZE)
    for version in rest[: MAX_PENDING - 1]:
        state.apply(f"chunk/{version}/recs.npz/0/3", b"x" * CHUNK_SIZE)
    state.apply(f"chunk/{first}/recs.npz/1/3", b"x" * CHUNK_SIZE)  # fed again: the most recent now
    for version in rest[MAX_PENDING - 1 :]:
        state.apply(f"chunk/{version}/recs.npz/0/3", b"x" * CHUNK_SIZE)
    assert state.refused == 0
    assert len(state._pending) == MAX_PENDING
    parts = sorted(p.parent.name for p in cache.glob("*/*.part"))
    dropped = rest[:3]  # the three least recently fed
    assert parts == sorted(v for v in versions if v not in dropped)
    # a dropped set that goes on is spooled again from what arrives (its manifest judges)
    state.apply(f"chunk/{dropped[0]}/recs.npz/1/3", b"y" * CHUNK_SIZE)
    assert (cache / dropped[0] / "recs.npz.part").exists()
    assert len(state._pending) == MAX_PENDING


def test_part_files_left_by_a_crash_are_removed_at_start(tmp_path: Path) -> None:
    """A process that died mid-assembly left `{file}.part` files: the next fold (which reads the
    topic from its start again) removes them and spools afresh, so stale bytes never count."""
    cache = tmp_path / "cache"
    bundle = recs_bundle(tmp_path)
    stale = cache / bundle.version / "recs.npz.part"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\xff" * (3 * CHUNK_SIZE))  # longer than the file, other bytes
    other = cache / "recs-20261207T0000-bbbbbbbb" / "recs.json.part"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"{")
    kept = cache / bundle.version / "notes.txt"
    kept.write_text("not ours")

    state = RegistryLog(cache)
    assert not stale.exists() and not other.exists() and kept.exists()
    for key, value in bundle_records(bundle):
        state.apply(key, value)
    assert state.refused == 0 and state.versions[bundle.version].complete
    assert (cache / bundle.version / "recs.npz").read_bytes() == bundle.files["recs.npz"]


def test_a_registry_view_without_a_cache_touches_no_disk(tmp_path: Path) -> None:
    state = RegistryLog(None)
    state.apply(f"chunk/{VERSION}/recs.npz/0/3", b"x" * CHUNK_SIZE)
    assert state.refused == 0 and not state._pending
