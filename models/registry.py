"""The active models a worker scores with, and the default models shipped in `models/default/`.

A `ModelSet` is immutable: a hot swap builds a new one off to the side and replaces the single
reference the content service holds, so a request sees either the old set or the new one, never a
mix. With an experiment running it also holds the candidate and answers `for_user`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from engine.content_experiments import NO_EXPERIMENTS, ContentExperiments
from engine.rules import NO_RULES, Rules
from models.churn import ChurnModel
from models.contract import ChurnScorer, RecsScorer
from models.experiments import Experiment
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
    """The active models a worker scores with (plus an experiment's candidate, if any)."""

    churn: ChurnScorer
    recs: RecsScorer
    experiment: Experiment | None = None
    candidate: Any = None  # ChurnScorer | RecsScorer: the experiment's candidate version
    rules: Rules = NO_RULES  # merchandising rules (engine/rules.py), served with the models
    # content A/B tests (engine/content_experiments.py), served with the models
    content_experiments: ContentExperiments = NO_EXPERIMENTS
    _alternate: ModelSet | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.experiment is None:
            return
        if self.candidate is None or self.candidate.version != self.experiment.candidate:
            raise ValueError("an experiment needs its candidate model loaded")
        alternate = replace(self, experiment=None, candidate=None, _alternate=None)
        alternate = replace(alternate, **{self.experiment.model: self.candidate})
        object.__setattr__(self, "_alternate", alternate)

    def versions(self) -> dict[str, str]:
        return {"churn": self.churn.version, "recs": self.recs.version}

    @cached_property
    def _stamp(self) -> tuple[Any, ...]:
        exp = self.experiment
        extra = (exp.name, exp.candidate, exp.mode, exp.share) if exp else ()
        rules = () if self.rules == NO_RULES else (("rules", self.rules.version),)
        content = self.content_experiments
        tests = () if content == NO_EXPERIMENTS else (("experiments", content.version),)
        return (*sorted(self.versions().items()), *extra, *rules, *tests)

    def stamp(self) -> tuple[Any, ...]:
        """Changes whenever what any user is scored with changes (cache stamps use it). A set is
        immutable (a swap installs a new one), so this is computed once per set."""
        return self._stamp

    def variant(self, user_id: str) -> str | None:
        return None if self.experiment is None else self.experiment.variant(user_id)

    def for_user(self, user_id: str) -> ModelSet:
        """The set this user is scored with: the candidate's for variant B of an A/B test."""
        exp = self.experiment
        if exp is None or exp.mode != "ab" or exp.variant(user_id) != "B":
            return self
        assert self._alternate is not None
        return self._alternate

    def shadow(self) -> ModelSet | None:
        """The set with the candidate in place, while a shadow run is going on."""
        exp = self.experiment
        return self._alternate if exp is not None and exp.mode == "shadow" else None

    @classmethod
    def from_dir(cls, directory: str | Path) -> ModelSet:
        return cls(*load_dir(directory))

    @classmethod
    def default(cls) -> ModelSet:
        return cls(*load_default())
