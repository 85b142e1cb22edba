"""A version re-published after a publish that died before its manifest (models/registry_log.py,
`RegistryLog._chunk`): every chunk of a file already in the cache was skipped, so the first
content stayed, the manifest's digest check marked the version incomplete on every worker and
reader, and (the cache being kept) for good. Now a file whose manifest has not verified it is
assembled again from a newer chunk set (spooled to `.part`, replaced once complete and, when the
manifest is known, matching it); a file verified against its manifest is never changed by later
chunks (those of other content are refused and counted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import registry_log
from models.bundle import Bundle, read_bundle, save_model
from models.recs import fit_recommender
from models.registry_log import Record, RegistryLog, bundle_records
from tests.models.synthetic import basket_events

VERSION = "recs-20261207T0000-cccccccc"


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_log, "CHUNK_SIZE", 512)  # several chunks a file


def bundle(tmp_path: Path, k: int, version: str = VERSION) -> Bundle:
    model = fit_recommender(basket_events(), k=k)
    model.version = version
    return read_bundle(save_model(model, tmp_path / f"{version}-{k}"))


def chunks(records: list[Record]) -> list[Record]:
    return [r for r in records if r[0].startswith("chunk/")]


def fold(state: RegistryLog, records: list[Record]) -> None:
    for key, value in records:
        state.apply(key, value)


def differs(good: Bundle, key: str, value: bytes | None) -> bool:
    """Whether the chunk `key` holds other bytes than `good`'s file at its offset."""
    file, i, n = key.split("/")[-3:]
    at, size, data = int(i), registry_log.CHUNK_SIZE, good.files[file]
    value = value or b""
    last = at == int(n) - 1
    return data[at * size : at * size + len(value)] != value or (
        last and len(data) != at * size + len(value)
    )


def cached(cache: Path, version: str = VERSION) -> dict[str, bytes]:
    folder = cache / version
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_version_re_published_after_a_publish_died_before_its_manifest_is_the_new_one(
    tmp_path: Path,
) -> None:
    first, second = bundle(tmp_path, 5), bundle(tmp_path, 1)
    assert first.files != second.files
    died = chunks(bundle_records(first))  # every chunk, then the publisher died
    again = bundle_records(second)  # the same version published again, other bytes
    log = died + again

    worker = tmp_path / "worker"
    state = RegistryLog(worker)
    fold(state, died)
    assert cached(worker) == first.files  # assembled: no manifest judges it yet
    fold(state, again)
    assert state.refused == 0
    assert state.versions[VERSION].complete, "the second content was skipped"
    assert cached(worker) == second.files  # no .part left either
    assert state.load(VERSION).k == 1

    # a reader (or a worker with a cold cache) reads the whole topic
    reader = RegistryLog(tmp_path / "reader")
    fold(reader, log)
    assert reader.versions[VERSION].complete and reader.load(VERSION).k == 1
    assert cached(tmp_path / "reader") == second.files

    # the worker restarted: its cache kept, the topic read again from its start
    restarted = RegistryLog(worker)
    fold(restarted, log)
    assert restarted.refused == 0 and restarted.versions[VERSION].complete
    assert cached(worker) == second.files and restarted.load(VERSION).k == 1


def test_a_cache_left_with_the_first_content_is_mended_by_the_chunks_of_the_manifest(
    tmp_path: Path,
) -> None:
    """The state the defect left on disk (the first content cached, the version incomplete): a
    restarted worker folds both chunk sets and the manifest and ends on the second content."""
    first, second = bundle(tmp_path, 5), bundle(tmp_path, 1)
    cache = tmp_path / "cache"
    folder = cache / VERSION
    folder.mkdir(parents=True)
    for file, data in first.files.items():
        (folder / file).write_bytes(data)
    state = RegistryLog(cache)
    fold(state, chunks(bundle_records(first)) + bundle_records(second))
    assert state.refused == 0 and state.versions[VERSION].complete
    assert cached(cache) == second.files


def test_only_a_chunk_set_that_matches_a_known_manifest_replaces_the_cached_file(
    tmp_path: Path,
) -> None:
    """The manifest is known and the cached file does not match it: a chunk set of other
    content is assembled aside and refused (the cached file stays), the manifest's own chunks
    sent again (publishing the same content again is allowed) complete the version."""
    first, second, third = bundle(tmp_path, 5), bundle(tmp_path, 1), bundle(tmp_path, 3)
    cache = tmp_path / "cache"
    state = RegistryLog(cache)
    fold(state, chunks(bundle_records(first)))
    fold(state, bundle_records(second)[-1:])  # its manifest alone: its chunks were lost
    assert not state.versions[VERSION].complete
    fold(state, chunks(bundle_records(third)))
    assert state.refused >= 1
    assert cached(cache) == first.files  # kept, and no .part left
    assert not state.versions[VERSION].complete
    refused = state.refused
    kinds = [state.apply(key, value) for key, value in chunks(bundle_records(second))]
    assert state.refused == refused
    assert state.versions[VERSION].complete and cached(cache) == second.files
    assert kinds[-1] == "version"  # what can be served changed: the worker reloads
    assert state.load(VERSION).k == 1


def test_a_verified_version_is_not_changed_by_a_later_chunk_set(tmp_path: Path) -> None:
    good, forged = bundle(tmp_path, 5), bundle(tmp_path, 1)
    records = bundle_records(good)
    late = chunks(bundle_records(forged))
    cache = tmp_path / "cache"
    state = RegistryLog(cache)
    fold(state, records)
    assert state.versions[VERSION].complete
    target = cache / VERSION / "recs.npz"
    before = target.stat()

    fold(state, late)
    assert state.refused == sum(differs(good, key, value) for key, value in late), (
        "every chunk of other content is refused and counted"
    )
    assert state.refused > 0
    assert cached(cache) == good.files and not state._pending
    assert state.versions[VERSION].complete and state.load(VERSION).k == 5
    refused = state.refused
    fold(state, records)  # the same content sent again: nothing refused, nothing written
    assert state.refused == refused
    after = target.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    # restarted (cache kept, the topic read again) and a cold cache: the good content
    for folder in (cache, tmp_path / "cold"):
        again = RegistryLog(folder)
        fold(again, records + late)
        assert again.versions[VERSION].complete and cached(folder) == good.files
        assert again.load(VERSION).k == 5
    after = target.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_restart_does_not_write_the_cached_files_again(tmp_path: Path) -> None:
    """A cached file whose chunks come again (every restart reads the topic from its start) is
    compared, not spooled and written anew."""
    good = bundle(tmp_path, 5)
    cache = tmp_path / "cache"
    fold(RegistryLog(cache), bundle_records(good))
    stats = {p.name: p.stat() for p in (cache / VERSION).iterdir()}
    state = RegistryLog(cache)
    records = bundle_records(good)
    fold(state, chunks(records))
    assert not list((cache / VERSION).glob("*.part")) and not state._pending
    fold(state, records[-1:])
    assert state.versions[VERSION].complete
    for p in (cache / VERSION).iterdir():
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == (
            stats[p.name].st_ino,
            stats[p.name].st_mtime_ns,
        )


def test_a_restart_folding_an_older_chunk_set_first_keeps_the_verified_file(
    tmp_path: Path,
) -> None:
    """The topic compacted (the re-published chunks' keys later overwritten by a late set of
    other content): a restarted worker folds the died publish's chunks, the manifest, then the
    late set. The older set must not replace the file the manifest then verifies."""
    first, second, late = bundle(tmp_path, 5), bundle(tmp_path, 1), bundle(tmp_path, 3)
    cache = tmp_path / "cache"
    fold(RegistryLog(cache), chunks(bundle_records(first)) + bundle_records(second))
    assert cached(cache) == second.files
    state = RegistryLog(cache)
    compacted = chunks(bundle_records(first)) + bundle_records(second)[-1:]
    fold(state, compacted + chunks(bundle_records(late)))
    assert state.versions[VERSION].complete and state.load(VERSION).k == 1
    assert cached(cache) == second.files  # no .next or .part left


@pytest.mark.parametrize("winner", [0, 1])
def test_two_publishes_interleaved_are_assembled_apart_and_the_first_manifest_decides(
    tmp_path: Path, winner: int
) -> None:
    """Two publishes of one version at once: their chunks alternate on the topic, then both
    manifests. Each set is assembled apart (its publish id); the first manifest's content is
    served, on a live fold, a restart on the kept cache and a cold cache alike."""
    bundles = [bundle(tmp_path, 5), bundle(tmp_path, 1)]
    sets = [bundle_records(b, p) for b, p in zip(bundles, ("a" * 16, "b" * 16), strict=True)]
    mixed = [r for pair in zip(chunks(sets[0]), chunks(sets[1]), strict=False) for r in pair]
    mixed += chunks(sets[0])[len(mixed) // 2 :] + chunks(sets[1])[len(mixed) // 2 :]
    log = [*mixed, sets[winner][-1], sets[1 - winner][-1]]
    cache = tmp_path / "cache"
    for folder in (cache, cache, tmp_path / "cold"):
        state = RegistryLog(folder)
        fold(state, log)
        assert state.versions[VERSION].complete, "the two sets were mixed"
        assert state.versions[VERSION].publish == ("a", "b")[winner] * 16
        assert cached(folder) == bundles[winner].files  # no .part or .next left
        assert state.load(VERSION).k == (5, 1)[winner]
