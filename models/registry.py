"""Where the models live. For now: the default models shipped in `models/default/`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.churn import ChurnModel
from models.recs import Recommender

DEFAULT_DIR = Path(__file__).resolve().parent / "default"
CHURN_FILE = "churn.json"


def load_dir(directory: str | Path) -> tuple[ChurnModel, Recommender]:
    """Both models from a directory holding churn.json, recs.npz and recs.json."""
    d = Path(directory)
    return ChurnModel.load(d / CHURN_FILE), Recommender.load(d)


def load_default() -> tuple[ChurnModel, Recommender]:
    return load_dir(DEFAULT_DIR)


@dataclass(frozen=True)
class ModelSet:
    """The active models a worker scores with."""

    churn: ChurnModel
    recs: Recommender

    def versions(self) -> dict[str, str]:
        return {"churn": self.churn.version, "recs": self.recs.version}

    @classmethod
    def from_dir(cls, directory: str | Path) -> ModelSet:
        return cls(*load_dir(directory))

    @classmethod
    def default(cls) -> ModelSet:
        return cls(*load_default())
