"""Safe artifacts, the registry log's fold (chunks, activation, rollback), experiments."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import models.registry_log as registry_log
from engine.features import FEATURE_NAMES
from models.artifacts import ModelLoadError
from models.bundle import load_model, read_bundle, save_model
from models.experiments import Experiment, assign, report
from models.recs import fit_recommender
from models.registry import DEFAULT_DIR, ModelSet
from models.registry_log import RegistryLog, bundle_records, experiment_record
from models.sklearn_churn import SklearnChurnModel, train_gbm_churn
from streams.registry import activation
from tests.models.synthetic import T0, basket_events, churn_events, purchase, view


def default_recs_dir(tmp_path: Path) -> Path:
    d = tmp_path / "recs"
    d.mkdir()
    for f in ("recs.json", "recs.npz"):
        shutil.copy(DEFAULT_DIR / f, d / f)
    return d


def new_recs_dir(tmp_path: Path) -> Path:
    return save_model(fit_recommender(basket_events(), k=5), tmp_path / "new-recs")


def test_bundle_refuses_pickles_and_unknown_files(tmp_path: Path) -> None:
    d = tmp_path / "churn"
    d.mkdir()
    shutil.copy(DEFAULT_DIR / "churn.json", d / "churn.json")
    (d / "model.pkl").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelLoadError, match=r"churn holds model\.pkl: .*never loaded") as exc:
        read_bundle(d)
    assert not str(exc.value).startswith("refused")  # the CLI says "persona: refused: ..."
    (d / "model.pkl").unlink()
    assert read_bundle(d).name == "churn"
    (d / "churn.json").write_bytes(pickle.dumps({"kind": "logistic_regression"}))
    with pytest.raises(ModelLoadError, match="not a JSON"):
        read_bundle(d)


def test_gbm_churn_round_trips_through_skops(tmp_path: Path) -> None:
    model = train_gbm_churn(churn_events(120))
    d = save_model(model, tmp_path / "gbm")
    bundle = read_bundle(d)
    assert (bundle.name, bundle.kind) == ("churn", "sklearn")
    loaded = load_model(d)
    assert isinstance(loaded, SklearnChurnModel)
    rows = np.abs(np.random.default_rng(1).normal(size=(5, len(FEATURE_NAMES)))) * 10
    batch = loaded.score_batch(rows)
    assert all(0.0 <= p <= 1.0 for p in batch)
    assert loaded.score(list(rows[0])) == pytest.approx(batch[0])


def _double(x: np.ndarray) -> np.ndarray:  # arbitrary code an artifact must not smuggle in
    return x * 2


def test_skops_types_outside_the_trusted_list_are_refused(tmp_path: Path) -> None:
    model = train_gbm_churn(churn_events(60))
    d = save_model(model, tmp_path / "churn")
    x = np.random.default_rng(0).random((40, len(FEATURE_NAMES)))
    y = (x[:, 0] > 0.5).astype(int)
    risky = make_pipeline(FunctionTransformer(_double), LogisticRegression()).fit(x, y)
    sio.dump(risky, d / "churn.skops")
    with pytest.raises(ModelLoadError, match=r"trusted list: tests\.models\.test_registry\._dou"):
        load_model(d)
    (d / "churn.skops").write_bytes(pickle.dumps(risky))
    with pytest.raises(ModelLoadError, match="not a skops file"):
        load_model(d)


def fold(state: RegistryLog, records: list[tuple[str, bytes | None]]) -> list[str | None]:
    return [state.apply(key, value) for key, value in records]


def test_registry_log_assembles_chunks_activates_and_rolls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_log, "CHUNK_SIZE", 4096)
    bundle = read_bundle(new_recs_dir(tmp_path))
    records = bundle_records(bundle)
    assert sum(k.startswith("chunk/") for k, _ in records) > 1
    state = RegistryLog(tmp_path / "cache")
    default = state.active("recs")
    fold(state, list(reversed(records[:-1])) + records[-1:])  # chunks in any order, manifest last
    listed = {m["version"]: m["active"] for m in state.listing()}
    assert listed[bundle.version] is False and listed[default] is True
    assert state.load(bundle.version).recommend([("a", T0)], set(), 1) == ["a2"]

    assert state.apply(*activation(state, "recs", bundle.version)) == "active"
    assert state.active("recs") == bundle.version
    assert state.history("recs") == [default]
    with pytest.raises(ValueError, match="not churn"):
        activation(state, "churn", bundle.version)
    with pytest.raises(LookupError):
        activation(state, "recs", "recs-unknown")

    state.apply(*activation(state, "recs", None))  # rollback
    assert state.active("recs") == default
    with pytest.raises(ValueError, match="roll back"):
        activation(state, "recs", None)

    # a worker with a cold cache folds the same records to the same state
    other = RegistryLog(tmp_path / "cache2")
    fold(other, records)
    assert other.listing() == state.listing()


def test_a_corrupt_artifact_cannot_be_activated(tmp_path: Path) -> None:
    bundle = read_bundle(new_recs_dir(tmp_path))
    records = bundle_records(bundle)
    damaged = [(k, b"x" + (v or b"")) if k.startswith("chunk/") else (k, v) for k, v in records]
    state = RegistryLog(tmp_path / "cache")
    fold(state, damaged)
    assert bundle.version not in {m["version"] for m in state.listing()}
    with pytest.raises(ValueError, match="incomplete"):
        state.check("recs", bundle.version)


def test_split_is_deterministic_and_near_the_share() -> None:
    users = [f"user-{i}" for i in range(20_000)]
    first = [assign(u, "exp1") for u in users]
    assert first == [assign(u, "exp1") for u in users]
    assert 0.48 < first.count("B") / len(users) < 0.52
    assert first != [assign(u, "exp2") for u in users]
    assert 0.08 < [assign(u, "exp1", 0.1) for u in users].count("B") / len(users) < 0.12


def test_model_set_scores_variant_b_with_the_candidate(tmp_path: Path) -> None:
    base = ModelSet.default()
    candidate = fit_recommender(basket_events(), k=5)
    exp = Experiment("t", "recs", base.recs.version, candidate.version)
    with_exp = ModelSet(base.churn, base.recs, experiment=exp, candidate=candidate)
    assert with_exp.stamp() != base.stamp()
    users = [f"u{i}" for i in range(50)]
    for user in users:
        chosen = with_exp.for_user(user)
        expected = candidate.version if exp.variant(user) == "B" else base.recs.version
        assert chosen.recs.version == expected and chosen.churn is base.churn
    shadow = ModelSet(
        base.churn,
        base.recs,
        experiment=Experiment("s", "recs", base.recs.version, candidate.version, mode="shadow"),
        candidate=candidate,
    )
    assert all(shadow.for_user(u) is shadow for u in users)
    assert shadow.shadow() is not None and shadow.shadow().recs is candidate  # type: ignore[union-attr]


def test_experiment_records_fold() -> None:
    state = RegistryLog()
    exp = Experiment("t", "recs", "recs-a", "recs-b", share=0.2)
    assert state.apply(*experiment_record(exp)) == "experiment"
    assert state.experiment == exp
    assert state.apply(*experiment_record(None)) == "experiment"
    assert state.experiment is None and state.experiments["t"] == exp


def test_report_attributes_later_purchases_to_the_variant() -> None:
    exposures = [
        {"experiment": "e", "variant": "A", "user_id": f"a{i}", "ts": T0, "items": ["x"]}
        for i in range(100)
    ] + [
        {"experiment": "e", "variant": "B", "user_id": f"b{i}", "ts": T0, "items": ["y"]}
        for i in range(100)
    ]
    events = [purchase(f"a{i}", "z", T0 + 1) for i in range(10)]  # 10% of A convert
    events += [purchase(f"b{i}", "y", T0 + 1) for i in range(30)]  # 30% of B, with the rec
    events += [purchase(f"b{i}", "y", T0 - 1) for i in range(30, 60)]  # before exposure: ignored
    events += [view("a50", "x", T0 + 5)]  # a recommendation click in A
    result = report("e", exposures, events)
    assert result["variants"]["A"]["conversions"] == 10
    assert result["variants"]["B"]["conversions"] == 30
    assert result["variants"]["A"]["recommendation_hits"] == 1
    assert result["variants"]["B"]["recommendation_hits"] == 30
    diff = result["conversion"]
    assert diff["difference"] == pytest.approx(0.2)
    low, high = diff["ci95"]
    assert 0.0 < low < 0.2 < high


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("active/recs", b"[1, 2]"),
        ("active/recs", b'{"version": 5}'),
        ("version/x", b"not json"),
        ("version/x", b'{"name": "recs", "kind": "recs", "version": "..", "created": "x"}'),
        (
            "version/x",
            b'{"name": "recs", "kind": "recs", "version": "v1", "created": "x",'
            b' "files": {"../../outside": {"sha256": "0"}}}',
        ),
        ("chunk/../recs.npz/0/1", b"payload"),
        ("chunk/..", b"payload"),
        ("experiment", b'"just a string"'),
        ("\udcff", b"{}"),
    ],
)
def test_hostile_registry_records_are_ignored_and_write_nothing_outside_the_cache(
    tmp_path: Path, key: str, value: bytes
) -> None:
    cache = tmp_path / "sub" / "cache"
    state = RegistryLog(cache)
    before = state.listing()
    assert state.apply(key, value) is None
    assert state.listing() == before
    outside = [p for p in tmp_path.rglob("*") if cache not in (p, *p.parents)]
    assert all(p.is_dir() for p in outside), outside


def test_the_rules_record_folds_and_a_bad_one_changes_nothing() -> None:
    """Merchandising rules ride the `models` topic (models/registry_log.py `rules_record`): a
    good record replaces the rules, a tombstone clears them, and a bad record (anyone who can
    produce to the topic can write one; signed ones are checked too) is logged and skipped."""
    from engine.rules import NO_RULES, parse_rules
    from models.registry_log import RegistryLog, rules_record

    log = RegistryLog()
    rules = parse_rules(
        {"version": "3", "rules": [{"id": "x", "action": "exclude", "match": {"brand": "b"}}]}
    )
    assert log.apply(*rules_record(rules)) == "rules" and log.rules == rules
    assert log.apply(*rules_record(rules)) is None  # the same again: nothing to serve anew
    assert log.apply("rules", b'{"rules": [{"id": "x", "action": "nuke"}]}') is None
    assert log.apply("rules", b"\xff not json") is None
    assert log.rules == rules
    assert log.apply("rules", None) == "rules" and log.rules == NO_RULES


def test_a_content_experiments_exposures_of_the_same_name_are_not_counted() -> None:
    ours = {"experiment": "e", "variant": "A", "user_id": "a1", "ts": T0, "items": ["x"]}
    content = {**ours, "user_id": "c1", "kind": "content"}
    result = report("e", [ours, content], [])
    assert result["variants"]["A"]["users"] == 1


def test_bundle_refuses_symbolic_links(tmp_path: Path) -> None:
    """A directory handed over (an unpacked archive) whose churn.json is a link: publishing read
    whatever file it named on the publisher's machine into the registry."""
    elsewhere = tmp_path / "elsewhere.json"
    shutil.copy(DEFAULT_DIR / "churn.json", elsewhere)
    d = tmp_path / "churn"
    d.mkdir()
    (d / "churn.json").symlink_to(elsewhere)
    with pytest.raises(ModelLoadError, match="symbolic link"):
        read_bundle(d)


def test_a_sklearn_churn_model_scoring_nan_is_refused(tmp_path: Path) -> None:
    """A logistic regression whose coefficients are NaN (skops' default-trusted types) loaded
    and scored every user NaN."""
    x = np.random.default_rng(0).random((40, len(FEATURE_NAMES)))
    y = (x[:, 0] > 0.5).astype(int)
    estimator = LogisticRegression().fit(x, y)
    estimator.coef_[0, 0] = np.nan
    model = SklearnChurnModel("churn-nan", "2026-12-04T00:00:00Z", estimator)
    d = save_model(model, tmp_path / "c")
    with pytest.raises(ModelLoadError, match="probabilit"):
        load_model(d)


def test_a_sklearn_churn_score_that_is_no_probability_is_no_risk() -> None:
    """Coefficients of +-1e300 on spend and order value pass the load-time rows, then score NaN
    (inf - inf) for a big spender: a NaN answered as churn (not JSON) and compared with the
    trigger's threshold. Such scores are 0.0 (no risk); the others are left as they are."""
    x = np.random.default_rng(0).random((40, len(FEATURE_NAMES)))
    y = (x[:, 0] > 0.5).astype(int)
    estimator = LogisticRegression().fit(x, y)
    estimator.coef_[0, :] = 0.0
    spend, value = FEATURE_NAMES.index("monetary"), FEATURE_NAMES.index("avg_order_value")
    estimator.coef_[0, spend], estimator.coef_[0, value] = 1e300, -1e300
    estimator.intercept_[:] = 0.0
    model = SklearnChurnModel("churn-huge", "2026-12-06T00:00:00Z", estimator)
    rows = np.zeros((2, len(FEATURE_NAMES)))
    rows[1, spend] = rows[1, value] = 2e8
    scores = model.score_batch(rows)
    assert scores[0] == 0.5 and scores[1] == 0.0
    assert model.score(list(rows[1])) == 0.0


def test_a_sklearn_churn_model_fitted_on_other_columns_is_refused(tmp_path: Path) -> None:
    """Fitted on 3 columns but saved with the engine's feature names: it loaded, then every
    score raised."""
    x = np.random.default_rng(0).random((40, 3))
    y = (x[:, 0] > 0.5).astype(int)
    estimator = LogisticRegression().fit(x, y)
    d = save_model(SklearnChurnModel("churn-3", "2026-12-04T00:00:00Z", estimator), tmp_path / "c")
    with pytest.raises(ModelLoadError, match="cannot score"):
        load_model(d)


def test_metrics_that_are_not_json_are_listed_as_null(tmp_path: Path) -> None:
    """A bundle's churn.json with `"metrics": {"roc_auc": NaN}` (Python's json reads it): GET
    /v1/models answered `NaN`, which is not JSON (a dashboard's JSON.parse fails on the whole
    list)."""
    d = tmp_path / "churn"
    d.mkdir()
    meta = json.loads((DEFAULT_DIR / "churn.json").read_text())
    meta |= {"version": "churn-nan-metrics", "created": "2026-12-04T00:00:00Z"}
    meta["metrics"] = {"roc_auc": float("nan"), "lift": float("inf"), "n": 3}
    (d / "churn.json").write_text(json.dumps(meta))
    state = RegistryLog(tmp_path / "cache")
    fold(state, bundle_records(read_bundle(d)))
    [listed] = [m for m in state.listing() if m["version"] == "churn-nan-metrics"]
    assert listed["metrics"]["roc_auc"] is None and listed["metrics"]["n"] == 3
    json.dumps(state.listing(), allow_nan=False)


def test_a_version_held_with_other_content_says_how_to_publish_this_one(tmp_path: Path) -> None:
    """The same model trained twice in one minute (`train` registered it, `train --out` wrote
    it) has one version with another `created`: publish was refused with `publish the new one
    without a version to have one made`, which no flag or file named. It now names the field
    and the file to drop it from, and that publish then gets a version of its own."""
    model = fit_recommender(basket_events(), k=5)
    first = read_bundle(save_model(model, tmp_path / "first"))
    state = RegistryLog()
    for key, value in bundle_records(first):
        state.apply(key, value)
    again = tmp_path / "again"
    save_model(model, again)
    meta = json.loads((again / "recs.json").read_text())
    (again / "recs.json").write_text(json.dumps(meta | {"created": "2026-12-07T00:00:59Z"}))
    problem = state.conflict(read_bundle(again))
    assert problem is not None and 'remove "version" from its recs.json' in problem
    del meta["version"]
    (again / "recs.json").write_text(json.dumps(meta))
    assert state.conflict(read_bundle(again)) is None
