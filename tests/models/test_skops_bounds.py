"""A skops file is checked like an .npz before skops reads it: its members inflate to at most
MAX_SKOPS_BYTES in all, and each .npy member's header declares exactly the data its zip entry
holds, no objects. skops inflated every member whole: a 417 KB churn.skops whose array member
inflates to 400 MB took 2.4 GB of RSS and 8.7 s before the load was refused (probe script,
maxrss), so a few MB of file took a worker or `persona models publish` past any machine's
memory. (Lying headers were refused before too, by numpy or the probe score, after skops had
started: those tests guard the new check's refusals.)"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from engine.features import FEATURE_NAMES
from models.artifacts import ModelLoadError
from models.bundle import load_model
from models.sklearn_churn import MAX_SKOPS_BYTES, SklearnChurnModel


def _model_dir(tmp_path: Path) -> Path:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    x = rng.random((40, len(FEATURE_NAMES)))
    estimator = LogisticRegression().fit(x, np.arange(40) % 2)
    model = SklearnChurnModel("churn-sk", "2026-01-01T00:00:00Z", estimator)
    return SklearnChurnModel.save(model, tmp_path / "sk")


def _npy_member(d: Path) -> str:
    with zipfile.ZipFile(d / "churn.skops") as zf:
        return next(i.filename for i in zf.infolist() if i.filename.endswith(".npy"))


def _rewrite(d: Path, name: str, header: dict[str, object], data_bytes: int) -> None:
    """Replace member `name` of the skops file with an .npy `header` and `data_bytes` zeros."""
    path = d / "churn.skops"
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, header)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members.items():
            if member != name:
                zf.writestr(member, data)
                continue
            with zf.open(member, "w", force_zip64=True) as w:
                w.write(head.getvalue())
                block = bytes(1 << 20)
                left = data_bytes
                while left > 0:
                    w.write(block[: min(left, len(block))])
                    left -= len(block)
    path.write_bytes(out.getvalue())


def test_a_member_that_inflates_past_the_bound_is_refused_before_skops_reads_it(
    tmp_path: Path,
) -> None:
    d = _model_dir(tmp_path)
    size = MAX_SKOPS_BYTES + (1 << 20)
    _rewrite(
        d, _npy_member(d), {"descr": "<f8", "fortran_order": False, "shape": (size // 8,)}, size
    )
    assert (d / "churn.skops").stat().st_size < size // 100  # a zip bomb: tiny on disk
    with pytest.raises(ModelLoadError, match="inflate"):
        load_model(d)


@pytest.mark.parametrize(
    "header",
    [
        {"descr": "<f8", "fortran_order": False, "shape": (10**12,)},  # promises 8 TB
        {"descr": "<f8", "fortran_order": False, "shape": (2,)},  # 16 bytes, the entry has more
        {"descr": "|O", "fortran_order": False, "shape": (8,)},  # objects: pickles
    ],
    ids=["terabytes", "mismatch", "objects"],
)
def test_an_npy_member_whose_header_lies_is_refused(
    tmp_path: Path, header: dict[str, object]
) -> None:
    d = _model_dir(tmp_path)
    _rewrite(d, _npy_member(d), header, 64)
    with pytest.raises(ModelLoadError):  # refused before skops allocates or unpickles anything
        load_model(d)


def test_a_sound_skops_model_still_loads(tmp_path: Path) -> None:
    assert load_model(_model_dir(tmp_path)).name == "churn"
