"""Model artifacts attacked byte by byte (issue: hostile-input probe of artifacts and publishing).

Each test is an artifact that loaded before and then crashed, wedged or fed garbage to serving;
now the loader (and so `persona models publish`, which test-loads) refuses it with a reason.
The size attacks (headers declaring terabytes, zip bombs, foreign members) are in
tests/models/test_artifacts.py."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.features import FEATURE_NAMES
from models.artifacts import ModelLoadError
from models.bundle import load_model, read_bundle
from models.churn import ChurnModel
from models.embedding import EmbeddingRecommender
from models.recs import Recommender
from models.registry import DEFAULT_DIR
from tests.models.test_artifacts import npy_bytes, recs_dir

GOOD_TABLE = {
    "indptr": np.array([0, 1, 2, 2], np.int64),
    "neighbours": np.array([1, 0], np.int32),
    "weights": np.array([0.5, 0.5], np.float32),
}


def knn_dir(tmp_path: Path, **arrays: np.ndarray) -> Path:
    return recs_dir(tmp_path, **{n: npy_bytes(a) for n, a in (GOOD_TABLE | arrays).items()})


# -- item-kNN (CSR) tables ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "indptr",
    [
        # decreasing offsets that np.diff wraps to positive numbers: row 1 read as -2 entries,
        # np.repeat raised ValueError for every user holding item i1
        np.array([0, 5, 3, 5], np.uint64),
        np.array([0, 100, -100, 2], np.int8),
        np.array([0, 30000, -30000, 2], np.int16),
    ],
)
def test_an_indptr_whose_dtype_hides_a_decrease_is_refused(
    tmp_path: Path, indptr: np.ndarray
) -> None:
    neighbours = np.zeros(int(indptr[-1]), np.int32)
    d = knn_dir(tmp_path, indptr=indptr, neighbours=neighbours, weights=neighbours.astype("f4"))
    with pytest.raises(ModelLoadError, match="indptr"):
        Recommender.load(d)


def test_big_endian_and_small_integer_tables_that_are_sound_still_load(tmp_path: Path) -> None:
    d = knn_dir(
        tmp_path,
        indptr=np.array([0, 1, 2, 2], ">u2"),
        neighbours=np.array([1, 0], ">i8"),
        weights=np.array([0.5, 0.5], ">f2"),
    )
    assert Recommender.load(d).recommend([("i0", 1)], {"i0"}, 2) == ["i1", "i2"]


def test_weights_that_overflow_float32_are_refused(tmp_path: Path) -> None:
    """float64 weights of 1e300 are finite but became inf when cast to the served float32
    (and inf - inf = NaN in a sum of positive and negative weights)."""
    d = knn_dir(tmp_path, weights=np.array([1e300, -1e300], np.float64))
    with pytest.raises(ModelLoadError, match="weights"):
        Recommender.load(d)


def test_a_popular_list_that_repeats_an_item_is_refused(tmp_path: Path) -> None:
    """The popular fill appended i0 three times: a user with no known history got [i0, i0, i0]."""
    d = knn_dir(tmp_path, popular=np.array([0, 0, 0], np.int64))
    with pytest.raises(ModelLoadError, match="popular"):
        Recommender.load(d)


# -- item ids (both recs kinds) -----------------------------------------------------------------


def _with_items(d: Path, items: list[object]) -> Path:
    meta = json.loads((d / "recs.json").read_text())
    (d / "recs.json").write_text(json.dumps(meta | {"items": items}))
    return d


BAD_IDS = [
    pytest.param("", id="empty"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("a\nb", id="newline"),
    pytest.param("\x1b[31mred", id="escape"),
    pytest.param("\ud800", id="lone-surrogate"),
    pytest.param("x" * 129, id="longer-than-an-event-id"),
    pytest.param(None, id="null"),
    pytest.param(["i"], id="list"),
    pytest.param(1.5, id="float"),
    pytest.param(True, id="bool"),
]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_item_knn_item_ids_that_no_event_could_name_are_refused(
    tmp_path: Path, bad: object
) -> None:
    """Such an id never matches a history (events refuse it) and is served to everyone through
    the popular fill: a 10 MB id, a terminal escape or a NUL in every fallback answer; a lone
    surrogate made the load raise UnicodeEncodeError instead of ModelLoadError."""
    d = _with_items(knn_dir(tmp_path), ["i0", bad, "i2"])
    with pytest.raises(ModelLoadError, match="item id"):
        Recommender.load(d)


def test_item_knn_numeric_ids_still_load_as_text(tmp_path: Path) -> None:
    d = _with_items(knn_dir(tmp_path), [10, 11, "i2"])
    assert list(Recommender.load(d).items) == ["10", "11", "i2"]


def emb_dir(tmp_path: Path, items: list[object], vectors: np.ndarray | None = None) -> Path:
    d = tmp_path / "emb"
    d.mkdir(parents=True, exist_ok=True)
    meta = {"format": 1, "name": "recs", "kind": "embedding", "version": "recs-e"}
    meta |= {"created": "2026-12-04T00:00:00Z", "items": items}
    (d / "recs.json").write_text(json.dumps(meta))
    if vectors is None:
        vectors = np.eye(len(items), 2, dtype=np.float32)
    np.savez(d / "recs.npz", vectors=vectors, popular=np.arange(len(items)))
    return d


@pytest.mark.parametrize("bad", BAD_IDS)
def test_embedding_item_ids_that_no_event_could_name_are_refused(
    tmp_path: Path, bad: object
) -> None:
    d = emb_dir(tmp_path, ["x", bad, "z"])
    with pytest.raises(ModelLoadError, match="item id"):
        EmbeddingRecommender.load(d)


# -- embedding values ---------------------------------------------------------------------------


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_embedding_vectors_so_large_their_scores_overflow_are_refused(
    tmp_path: Path, similarity: str
) -> None:
    """Finite float32 vectors of 1e30: the user vector's norm overflowed to inf, every score
    was NaN, and NaN passes `score <= EPSILON` as evidence: arbitrary items ranked first."""
    vectors = np.full((3, 4), 1e30, np.float32)
    vectors[1] *= -1
    d = emb_dir(tmp_path, ["x", "y", "z"], vectors)
    meta = json.loads((d / "recs.json").read_text()) | {"similarity": similarity}
    (d / "recs.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="vectors"):
        EmbeddingRecommender.load(d)


def test_denormal_and_zero_embedding_vectors_load_and_serve_only_evidence(tmp_path: Path) -> None:
    vectors = np.array([[1e-45, 0], [0, 0], [0, 1]], np.float32)
    for similarity in ("dot", "cosine"):
        d = emb_dir(tmp_path / similarity, ["x", "y", "z"], vectors)
        meta = json.loads((d / "recs.json").read_text()) | {"similarity": similarity}
        (d / "recs.json").write_text(json.dumps(meta))
        model = EmbeddingRecommender.load(d)
        got = model.recommend([("x", 1), ("y", 1)], set(), 3)
        assert sorted(got) == ["x", "y", "z"] and len(set(got)) == 3


# -- churn ----------------------------------------------------------------------------------------


def churn_file(tmp_path: Path, **change: object) -> Path:
    meta = json.loads((DEFAULT_DIR / "churn.json").read_text()) | change
    path = tmp_path / "churn.json"
    path.write_text(json.dumps(meta))
    return path


def _extreme(n: int, value: float) -> list[float]:
    return [value if i % 2 == 0 else -value for i in range(n)]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"coef": "huge"}, id="huge-coef"),  # 1e308, -1e308, ...: inf - inf = NaN
        pytest.param({"scale": 5e-324}, id="denormal-scale"),  # 710 / 5e-324 = inf
        pytest.param({"mean": 1e308}, id="huge-mean"),
    ],
)
def test_churn_numbers_that_overflow_a_score_are_refused(
    tmp_path: Path, change: dict[str, object]
) -> None:
    """Finite coefficients whose score overflows for some profile: inf - inf = NaN churn, which
    the profile answered as `NaN` (not JSON) and every churn trigger compared as False."""
    meta = json.loads((DEFAULT_DIR / "churn.json").read_text())
    n = len(meta["feature_names"])
    key, value = next(iter(change.items()))
    numbers = _extreme(n, 1e308) if value == "huge" else [float(value)] * n  # type: ignore[arg-type]
    path = churn_file(tmp_path, **{key: numbers})
    try:
        model = ChurnModel.load(path)
    except ModelLoadError as exc:
        assert "overflow" in str(exc)
        return
    rows = np.array([[0.0] * len(FEATURE_NAMES), [1e3] * len(FEATURE_NAMES)])
    scores = [*model.score_batch(rows), model.score(list(rows[1]))]
    pytest.fail(f"loaded and scored {scores}")


def test_a_churn_model_without_features_is_refused(tmp_path: Path) -> None:
    """`feature_names: []` loaded: the same churn score for every user, whatever they did."""
    path = churn_file(tmp_path, feature_names=[], mean=[], scale=[], coef=[])
    with pytest.raises(ModelLoadError, match="at least one feature"):
        ChurnModel.load(path)


def test_the_default_models_still_load_and_score_in_range(tmp_path: Path) -> None:
    churn = ChurnModel.load(DEFAULT_DIR / "churn.json")
    rows = np.array([[0.0] * len(FEATURE_NAMES), [1e300] * len(FEATURE_NAMES)])
    assert all(0.0 <= p <= 1.0 and math.isfinite(p) for p in churn.score_batch(rows))
    d = tmp_path / "recs"
    d.mkdir()
    for f in ("recs.json", "recs.npz"):
        shutil.copy(DEFAULT_DIR / f, d / f)
    assert read_bundle(d).name == "recs" and load_model(d).name == "recs"


def test_a_truncated_table_is_refused_naming_the_users_file_not_a_temporary_copy(
    tmp_path: Path,
) -> None:
    """`persona models publish DIR` with a cut-off recs.npz said `/tmp/tmpXXXX/recs.npz is not a
    valid .npz`: the test-load's temporary copy, a path the user never had."""
    d = knn_dir(tmp_path)
    npz = d / "recs.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    with pytest.raises(ModelLoadError) as refused:
        read_bundle(d)
    assert str(npz) in str(refused.value) and "not a valid .npz" in str(refused.value)


def edit_items(d: Path, change: int) -> int:
    """Shorten (`change` < 0) or lengthen the `items` list of the artifact's recs.json by hand;
    the number of items it had."""
    meta = json.loads((d / "recs.json").read_text())
    n = len(meta["items"])
    meta["items"] = (
        meta["items"][: n + change]
        if change < 0
        else meta["items"] + [f"added-{i}" for i in range(change)]
    )
    (d / "recs.json").write_text(json.dumps(meta))
    return n


def said_no_longer_matches(error: BaseException, n: int, change: int) -> str:
    """The refusal's text, checked to say that recs.json no longer matches recs.npz, with both
    item counts."""
    said = str(error)
    assert "recs.json no longer matches" in said and "recs.npz" in said, said
    assert f"{n + change:,} items" in said and f"{n:,}" in said, said
    return said


@pytest.mark.parametrize("change", [-1, -7, 3])
def test_an_items_list_edited_by_hand_is_said_to_no_longer_match_the_table(
    tmp_path: Path, change: int
) -> None:
    """A `recs.json` whose `items` list was shortened by hand was refused as "indptr declares
    21,056 bytes, more than the 88 its metadata allows": the refusal says first that recs.json
    no longer matches recs.npz, with both item counts."""
    from models.bundle import save_model
    from models.recs import fit_recommender
    from tests.models.synthetic import basket_events

    d = save_model(fit_recommender(basket_events(), k=5), tmp_path / "recs")
    n = edit_items(d, change)
    with pytest.raises(ModelLoadError) as refused:
        Recommender.load(d)
    said = said_no_longer_matches(refused.value, n, change)
    assert said.index("no longer matches") < len(said) // 2, said  # said first


@pytest.mark.parametrize("change", [-1, -5, 3])
def test_an_embedding_items_list_edited_by_hand_is_said_to_no_longer_match_the_table(
    tmp_path: Path, change: int
) -> None:
    """The embedding kind's `recs.json` with an `items` list shortened or lengthened by hand
    (what `persona models publish DIR` reads): refused as "recs.npz: vectors must be 6 x dim
    (...), not 7 x 3", never saying that the two files are no longer of one artifact as the
    item-kNN kind does. Now the same message, first, with both counts."""
    from models.bundle import save_model
    from tests.models.test_embedding import table

    d = save_model(table(), tmp_path / "emb")
    n = edit_items(d, change)
    with pytest.raises(ModelLoadError) as refused:
        read_bundle(d)
    said = said_no_longer_matches(refused.value, n, change)
    assert said.index("no longer matches") < len(said) // 2, said  # said first
