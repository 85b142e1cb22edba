"""The model contract: what the engine asks of a churn scorer and of a recommender.

Any object with these members can be activated; `models.bundle` builds them from safe artifacts
(JSON, `.npz` without pickles, `.skops` with an explicit trusted-type list).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from typing import Any, Protocol

import numpy as np


class ModelInfo(Protocol):
    """What every model version says about itself (listings, headers, the registry)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def created(self) -> str: ...

    @property
    def metrics(self) -> dict[str, Any]: ...


class ChurnScorer(ModelInfo, Protocol):
    """Feature vector (``engine.features.FEATURE_NAMES`` order, raw values) -> churn probability."""

    def score(self, vec: Sequence[float]) -> float: ...

    def score_batch(self, matrix: np.ndarray) -> np.ndarray: ...


class RecsScorer(ModelInfo, Protocol):
    """A profile's recent items (+ what to exclude, + a catalog filter) -> ranked item ids."""

    @property
    def popular(self) -> list[str]: ...

    def recommend(
        self,
        recent: Sequence[tuple[str, int]],
        exclude: Container[str],
        k: int = 20,
        allowed: Callable[[str], bool] | None = None,
    ) -> list[str]: ...

    def popular_items(
        self,
        k: int,
        allowed: Callable[[str], bool] | None = None,
        exclude: Container[str] = (),
    ) -> list[str]: ...
