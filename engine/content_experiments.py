"""Content A/B and multivariate tests (issue 18 item 4; `GET`/`PUT /v1/experiments`). Pure.

A content experiment shows one block (`recommendations`, ...) in several designs, each a template
variant: a file next to the block's template, `templates/email/<block>.<variant>.html` and
`templates/ads/<block>.json` (engine/blocks.py `Renderer` finds and checks them at start-up). The
variant `default` is the block's own template. The document is
`{"version", "experiments": [{"name", "block", "arms": [{"variant", "weight"}], "holdout",
"starts"?, "ends"?}]}`; the first arm is the control the report compares every other arm with.

A user's arm is deterministic: the first 8 bytes of SHA-256(experiment name, NUL, user id) read as
a fraction `u` (as models.experiments.assign); `u < holdout` puts the user in the holdout (variant
`holdout`: the block's fallback, the best-sellers), else the rest of the unit interval is cut in
proportion to the arms' weights. The same user gets the same arm on every worker, every time, for
as long as the experiment's name, holdout and arms stay the same.

At most one experiment runs on a block at any time (two on one block must not overlap in time).
Who is assigned at all (personalization consent) is the caller's business (api/content.py).
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from engine.events import InvalidEvent, parse_ts

DEFAULT = "default"  # the block's own template: the control unless the document says otherwise
HOLDOUT = "holdout"  # the arm that gets the block's fallback
MAX_VARIANT = 32  # characters of a template variant's name
VARIANT_NAME = re.compile(rf"[a-z0-9][a-z0-9_-]{{0,{MAX_VARIANT - 1}}}")  # its file name part
EXPERIMENT_BLOCKS = ("recommendations", "cart_reminder", "winback", "similar_items")
MAX_EXPERIMENTS = 50
MAX_ARMS = 20
MAX_NAME = 64  # characters of an experiment name or a version
MAX_WEIGHT = 1000.0
# experiments no longer in the document whose reports may still be asked for (the newest kept)
MAX_PAST = 1000
EXPERIMENT_FIELDS = frozenset({"name", "block", "arms", "holdout", "starts", "ends"})
ARM_FIELDS = frozenset({"variant", "weight"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

# Whether a block has a template variant of this name (engine/blocks.py `Renderer.has_variant`).
HasVariant = Callable[[str, str], bool]


class InvalidExperiments(ValueError):
    """A document that cannot be run; the message names the place and the problem."""


@dataclass(frozen=True)
class Arm:
    variant: str
    weight: float = 1.0


@dataclass(frozen=True)
class ContentExperiment:
    name: str
    block: str
    arms: tuple[Arm, ...]
    holdout: float = 0.0  # the fraction of users who get the fallback
    starts: int | None = None  # epoch ms, included
    ends: int | None = None  # epoch ms, excluded

    def live(self, now_ms: int) -> bool:
        started = self.starts is None or now_ms >= self.starts
        return started and (self.ends is None or now_ms < self.ends)

    def assign(self, user_id: str) -> str:
        """The variant of this user: an arm's, or HOLDOUT."""
        u = share(self.name, user_id)
        if u < self.holdout:
            return HOLDOUT
        point = (u - self.holdout) / (1.0 - self.holdout) * self._bounds[-1]
        return self.arms[min(bisect.bisect_right(self._bounds, point), len(self.arms) - 1)].variant

    @cached_property
    def _bounds(self) -> list[float]:
        total, bounds = 0.0, []
        for arm in self.arms:
            total += arm.weight
            bounds.append(total)
        return bounds

    @property
    def variants(self) -> list[str]:
        """The report's arms: the control first, then the others, then the holdout."""
        return [arm.variant for arm in self.arms] + ([HOLDOUT] if self.holdout > 0 else [])


def share(name: str, user_id: str) -> float:
    """Where a user falls in [0, 1) for one experiment (models.experiments.assign's hash)."""
    digest = hashlib.sha256(f"{name}\0{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class ContentExperiments:
    version: str
    experiments: tuple[ContentExperiment, ...] = ()

    @cached_property
    def by_block(self) -> dict[str, tuple[ContentExperiment, ...]]:
        """Block -> its experiments; a block without one is not a key (the hot path's lookup)."""
        out: dict[str, tuple[ContentExperiment, ...]] = {}
        for exp in self.experiments:
            out[exp.block] = (*out.get(exp.block, ()), exp)
        return out

    def running(self, block: str, now_ms: int) -> ContentExperiment | None:
        """The experiment live on `block` at `now_ms`, if any."""
        for exp in self.by_block.get(block, ()):
            if exp.live(now_ms):
                return exp
        return None

    def named(self, name: str) -> ContentExperiment | None:
        return next((exp for exp in self.experiments if exp.name == name), None)

    def phase(self, now_ms: int) -> int:
        """How many start and end times have passed at `now_ms` (a cached block's stamp: an
        experiment starting or ending changes which variant a user is shown)."""
        return bisect.bisect_right(self._times, now_ms)

    @cached_property
    def _times(self) -> list[int]:
        found = [t for e in self.experiments for t in (e.starts, e.ends) if t is not None]
        return sorted(found)


NO_EXPERIMENTS = ContentExperiments("0")


# -- the document ----------------------------------------------------------------------------


def parse_experiments(document: Any, has_variant: HasVariant | None = None) -> ContentExperiments:
    """The experiments of a `PUT /v1/experiments` body, or InvalidExperiments naming the first
    problem. `has_variant` checks that each arm's template variant exists (None: not checked,
    as when a worker folds a record another process checked)."""
    if not isinstance(document, dict):
        raise InvalidExperiments("the body must be an object with `experiments` (a list)")
    unknown = sorted(set(document) - {"version", "experiments"})
    if unknown:
        raise InvalidExperiments(f"unknown field {unknown[0]!r} (allowed: version, experiments)")
    items = document.get("experiments")
    if not isinstance(items, list) or len(items) > MAX_EXPERIMENTS:
        raise InvalidExperiments(f"experiments: must be a list of at most {MAX_EXPERIMENTS}")
    version = document.get("version", "0")
    _check_name(version, "version")
    found = tuple(
        _experiment(item, f"experiments[{n}]", has_variant) for n, item in enumerate(items)
    )
    _check_unique(found)
    return ContentExperiments(str(version), found)


def _experiment(data: Any, where: str, has_variant: HasVariant | None) -> ContentExperiment:
    if not isinstance(data, dict):
        raise InvalidExperiments(f"{where}: must be an object")
    unknown = sorted(set(data) - EXPERIMENT_FIELDS)
    if unknown:
        raise InvalidExperiments(f"{where}: unknown field {unknown[0]!r}")
    _check_name(data.get("name"), f"{where}.name")
    block = data.get("block")
    if block not in EXPERIMENT_BLOCKS:
        raise InvalidExperiments(f"{where}.block: must be one of {', '.join(EXPERIMENT_BLOCKS)}")
    holdout = _holdout(data.get("holdout", 0.0), f"{where}.holdout")
    arms = _arms(data.get("arms"), f"{where}.arms", block, has_variant)
    if len(arms) < 2 and holdout == 0:
        raise InvalidExperiments(f"{where}.arms: one arm needs a holdout to compare it with")
    starts, ends = _time(data, "starts", where), _time(data, "ends", where)
    if starts is not None and ends is not None and ends <= starts:
        raise InvalidExperiments(f"{where}.ends: must be after starts")
    return ContentExperiment(data["name"], block, arms, holdout, starts, ends)


def _arms(value: Any, where: str, block: str, has_variant: HasVariant | None) -> tuple[Arm, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_ARMS:
        raise InvalidExperiments(f"{where}: must be a list of 1..{MAX_ARMS} arms")
    arms = tuple(_arm(item, f"{where}[{n}]", block, has_variant) for n, item in enumerate(value))
    names = [arm.variant for arm in arms]
    twice = next((v for n, v in enumerate(names) if v in names[:n]), None)
    if twice is not None:
        raise InvalidExperiments(f"{where}: the variant {twice!r} is used twice")
    return arms


def _arm(data: Any, where: str, block: str, has_variant: HasVariant | None) -> Arm:
    if not isinstance(data, dict):
        raise InvalidExperiments(f"{where}: must be an object with `variant` and `weight`")
    unknown = sorted(set(data) - ARM_FIELDS)
    if unknown:
        raise InvalidExperiments(f"{where}: unknown field {unknown[0]!r}")
    variant = data.get("variant")
    if not isinstance(variant, str) or not VARIANT_NAME.fullmatch(variant) or variant == HOLDOUT:
        raise InvalidExperiments(
            f"{where}.variant: a template variant name ({VARIANT_NAME.pattern}, not {HOLDOUT!r})"
        )
    if variant != DEFAULT and has_variant is not None and not has_variant(block, variant):
        raise InvalidExperiments(
            f"{where}.variant: no template variant {variant!r} for {block} "
            f"(templates/email/{block}.{variant}.html or templates/ads/{block}.{variant}.json)"
        )
    weight = data.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise InvalidExperiments(f"{where}.weight: must be a number")
    if not 0 < weight <= MAX_WEIGHT:
        raise InvalidExperiments(f"{where}.weight: must be more than 0 and at most {MAX_WEIGHT:g}")
    return Arm(variant, float(weight))


def _holdout(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise InvalidExperiments(f"{where}: must be a fraction from 0 up to (not including) 1")
    return float(value)


def _time(data: dict[str, Any], name: str, where: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    try:
        return parse_ts(value)
    except InvalidEvent as exc:
        raise InvalidExperiments(f"{where}.{name}: {exc}") from None


NAME_RULE = f"1..{MAX_NAME} letters, digits, '.', '_' or '-' (not first)"


def valid_name(value: Any) -> bool:
    """Whether `value` may name an experiment (content or model: models/experiments.py) or a
    version: it keys a report's URL and every exposure record."""
    return isinstance(value, str) and len(value) <= MAX_NAME and bool(_NAME.fullmatch(value))


def _check_name(value: Any, where: str) -> None:
    if not valid_name(value):
        raise InvalidExperiments(f"{where}: must be {NAME_RULE}")


def _check_unique(found: tuple[ContentExperiment, ...]) -> None:
    for n, exp in enumerate(found):
        for other in found[:n]:
            if other.name == exp.name:
                raise InvalidExperiments(f"experiments[{n}].name: {exp.name!r} is used twice")
            if other.block == exp.block and _overlap(other, exp):
                raise InvalidExperiments(
                    f"experiments[{n}]: {other.name!r} runs on {exp.block} at the same time "
                    "(one experiment a block at a time: set starts and ends apart)"
                )


def _overlap(a: ContentExperiment, b: ContentExperiment) -> bool:
    far = 2**63
    a0, a1 = a.starts or -far, a.ends or far
    b0, b1 = b.starts or -far, b.ends or far
    return a0 < b1 and b0 < a1


def to_document(experiments: ContentExperiments) -> dict[str, Any]:
    """The document `GET /v1/experiments` answers: what was put."""
    return {
        "version": experiments.version,
        "experiments": [_document(exp) for exp in experiments.experiments],
    }


def _document(exp: ContentExperiment) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": exp.name,
        "block": exp.block,
        "arms": [{"variant": arm.variant, "weight": arm.weight} for arm in exp.arms],
        "holdout": exp.holdout,
    }
    for name in ("starts", "ends"):
        value = getattr(exp, name)
        if value is not None:
            out[name] = value
    return out
