"""models.artifacts.check_npz attacked: model .npz files whose headers or zip entries promise more
than their metadata allows are refused before numpy allocates or inflates anything (a header
declaring terabytes, a zip bomb, a member larger than its model could need), through both recs
loaders."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy

from models.artifacts import ModelLoadError, check_npz
from models.bundle import read_bundle
from models.embedding import EmbeddingRecommender
from models.recs import Recommender


def npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    npy.write_array(out, array)
    return out.getvalue()


def header_only(shape: tuple[int, ...], dtype: str = "<i8") -> bytes:
    """A .npy header declaring `shape` followed by 8 bytes of data."""
    out = io.BytesIO()
    npy.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False, "shape": shape})
    return out.getvalue() + b"\0" * 8


def write_zip(path: Path, members: dict[str, bytes], deflate: bool = False) -> Path:
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name + ".npy", data)
    return path


def recs_dir(tmp_path: Path, items: int = 3, k: int = 2, **arrays: bytes) -> Path:
    """A recs (item-kNN) artifact of `items` items whose .npz members are `arrays` (raw .npy
    bytes) over valid defaults."""
    d = tmp_path / "recs"
    d.mkdir(exist_ok=True)
    meta = {"format": 1, "name": "recs", "version": "recs-x", "created": "2026-12-04T00:00:00Z"}
    meta |= {"items": [f"i{n}" for n in range(items)], "k": k}
    (d / "recs.json").write_text(json.dumps(meta))
    good = {
        "indptr": npy_bytes(np.zeros(items + 1, np.int64)),
        "neighbours": npy_bytes(np.zeros(0, np.int32)),
        "weights": npy_bytes(np.zeros(0, np.float32)),
        "popular": npy_bytes(np.arange(items, dtype=np.int64)),
    }
    write_zip(d / "recs.npz", good | arrays)
    return d


def test_a_valid_npz_passes_and_reports_shapes(tmp_path: Path) -> None:
    path = tmp_path / "a.npz"
    np.savez(path, a=np.zeros((4, 3), np.float32), b=np.arange(5))
    assert check_npz(path, {"a": 48, "b": 40}) == {"a": ((4, 3), "<f4"), "b": ((5,), "<i8")}


def test_a_header_declaring_terabytes_is_refused_without_allocating(tmp_path: Path) -> None:
    """np.load would allocate the declared 8 TB before reading a byte (MemoryError, not a
    ModelLoadError: the loader's caller would see a crash)."""
    d = recs_dir(tmp_path, indptr=header_only((10**12,)))
    tracemalloc.start()
    try:
        # its length is not the items list's: said so first (the metadata and the table
        # are not of one artifact), from the header alone
        with pytest.raises(ModelLoadError, match=r"no longer matches .* 999,999,999,999"):
            Recommender.load(d)
        with pytest.raises(ModelLoadError, match="indptr declares 8,000,000,000,000 bytes"):
            check_npz(d / "recs.npz", {"indptr": 32, "neighbours": 0, "weights": 0, "popular": 24})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20


def test_a_zip_bomb_is_refused_before_it_inflates(tmp_path: Path) -> None:
    """A 3-item model whose `weights` entry is 64 MiB of float32 zeros (~64 KB deflated), header
    and entry in agreement: np.load would inflate all of it; its metadata allows 48 bytes."""
    bomb = npy_bytes(np.zeros(16 << 20, np.float32))
    d = recs_dir(tmp_path)
    write_zip(d / "recs.npz", {**_members(d / "recs.npz"), "weights": bomb}, deflate=True)
    assert (d / "recs.npz").stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ModelLoadError, match="weights declares 67,108,864 bytes, more than"):
            read_bundle(d)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_an_entry_longer_than_its_header_declares_is_refused(tmp_path: Path) -> None:
    """The header says 2 floats, the zip entry holds 1 MiB more: not an array numpy wrote."""
    padded = npy_bytes(np.zeros(2, np.float32)) + b"\0" * (1 << 20)
    d = recs_dir(tmp_path, weights=padded)
    with pytest.raises(ModelLoadError, match="weights declares 8 bytes of data in an entry"):
        Recommender.load(d)


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename.removesuffix(".npy"): zf.read(i) for i in zf.infolist()}


def test_an_array_larger_than_the_metadata_allows_is_refused(tmp_path: Path) -> None:
    """3 items with k=2 have at most 6 neighbours: 1,000,000 zeros (8 MB, a few KB deflated) are
    refused, whatever their header and entry agree on."""
    big = npy_bytes(np.zeros(1_000_000, np.int64))
    d = recs_dir(tmp_path, neighbours=big)
    with pytest.raises(ModelLoadError, match="neighbours declares 8,000,000 bytes, more than"):
        Recommender.load(d)


@pytest.mark.parametrize("k", [0, 10**9, "50", 2.5])
def test_k_is_bounded(tmp_path: Path, k: object) -> None:
    d = recs_dir(tmp_path)
    meta = json.loads((d / "recs.json").read_text()) | {"k": k}
    (d / "recs.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="k must be an integer"):
        Recommender.load(d)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"indptr.npy": b"not an npy"}, "not a valid .npz"),
        ({"../../etc/passwd": b"x"}, "holds only the arrays"),
        ({"indptr.npy": b"\x93NUMPY\x03\x00" + b"\0" * 20}, "format"),
    ],
)
def test_foreign_members_are_refused(
    tmp_path: Path, members: dict[str, bytes], message: str
) -> None:
    path = tmp_path / "x.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(ModelLoadError, match=message):
        check_npz(path, {"indptr": 1 << 20})


def test_embedding_vectors_beyond_their_rows_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "emb"
    d.mkdir()
    meta = {"format": 1, "name": "recs", "kind": "embedding", "version": "recs-e"}
    meta |= {"created": "2026-12-04T00:00:00Z", "items": ["x", "y", "z"]}
    (d / "recs.json").write_text(json.dumps(meta))
    members = {
        "vectors": header_only((3, 10**9), "<f4"),
        "popular": npy_bytes(np.array([0, 1], np.int64)),
    }
    write_zip(d / "recs.npz", members)
    with pytest.raises(ModelLoadError, match="vectors declares 12,000,000,000 bytes"):
        EmbeddingRecommender.load(d)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        # rows of negative length: np.repeat raised ValueError for every user with item i1
        ({"indptr": np.array([0, 2, 0, 2], np.int64)}, "indptr"),
        # a row of 2**40 entries: serving allocated 8 TB for a user with item i0
        ({"indptr": np.array([0, 2**40, 2**40, 2], np.int64)}, "indptr"),
        ({"indptr": np.array([1, 1, 2, 2], np.int64)}, "indptr"),
        ({"neighbours": np.array([1.0, np.nan], np.float64)}, "neighbours"),
        ({"weights": np.array([np.nan, 1.0], np.float32)}, "weights"),
        ({"weights": np.array([np.inf, 1.0], np.float32)}, "weights"),
        ({"popular": np.array([0.5], np.float64)}, "popular"),
    ],
)
def test_item_knn_arrays_that_would_break_serving_are_refused(
    tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    good = {
        "indptr": np.array([0, 1, 2, 2], np.int64),
        "neighbours": np.array([1, 0], np.int32),
        "weights": np.array([0.5, 0.5], np.float32),
    }
    members = {name: npy_bytes(a) for name, a in (good | arrays).items()}
    d = recs_dir(tmp_path, **members)
    with pytest.raises(ModelLoadError, match=message):
        Recommender.load(d)


def test_a_valid_item_knn_table_serves(tmp_path: Path) -> None:
    members = {
        "indptr": npy_bytes(np.array([0, 1, 2, 2], np.int64)),
        "neighbours": npy_bytes(np.array([1, 0], np.int32)),
        "weights": npy_bytes(np.array([0.5, 0.5], np.float32)),
    }
    model = Recommender.load(recs_dir(tmp_path, **members))
    assert model.recommend([("i0", 1)], exclude={"i0"}, k=2) == ["i1", "i2"]


@pytest.mark.parametrize("decay", [float("nan"), float("inf"), -1.0, 2.0, "0.5", None])
def test_item_knn_recency_decay_is_a_number_in_0_1(tmp_path: Path, decay: object) -> None:
    d = recs_dir(tmp_path)
    meta = json.loads((d / "recs.json").read_text()) | {"recency_decay": decay}
    (d / "recs.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="recency_decay"):
        Recommender.load(d)


def test_item_knn_item_ids_are_unique(tmp_path: Path) -> None:
    d = recs_dir(tmp_path)
    meta = json.loads((d / "recs.json").read_text()) | {"items": ["a", "b", "a"]}
    (d / "recs.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="unique"):
        Recommender.load(d)
