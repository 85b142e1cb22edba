"""Item-to-item recommendations: a neighbour table from co-occurrence in users' histories.

Training builds a user x item matrix (each cell the strongest signal the user gave the item:
view 1, cart 3, purchase 5, the row damped by 1/sqrt(items in the history) so that a few
wholesale buyers with thousands of items do not dominate), its item-item co-occurrence `C = X'X`,
and keeps for each item the K best neighbours by shrunk asymmetric cosine

    sim(i, j) = C[i, j] / (C[i, i]**ALPHA * C[j, j]**(1 - ALPHA) + SHRINK)

(ALPHA 0.5 is the cosine; 0.3 divides more by the candidate j's own popularity). The default
table (`TABLE` "ease", issue 17) keeps instead each item's K largest EASE weights, for the 10,000
most popular items, and the shrunk cosine rows for the others (models/ease_table.py). Its lambda is
searched for on the training events themselves unless pinned (`lam`; models/ease_search.py).

Serving (`Recommender.recommend`) sums neighbour similarities over the newest `history` items of
the user's long history (engine.profile: up to 200 distinct items) with the weight
`recency_decay`**rank + `history_floor` (rank 0 = newest; items with the same time stamp share a
rank; the floor gives the whole history a say beside the recent items), drops excluded and
disallowed items, and fills up from the popularity list. Artifacts written before the long
history (no `history` key) read the 30 most recent items without a floor, as they were tuned.
Damping, SHRINK and ALPHA were chosen on the validation part of UCI Online Retail's time split
(the last 30 days before the test period), never on the test period (models/README.md); the
table, decay, history and floor on validation splits of several data sets (benchmarks/tune_recs.py).
Artifacts:
`recs.npz` (numeric arrays, loaded with allow_pickle=False) and `recs.json` (items, metadata).
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction import DictVectorizer

from engine.events import Event
from models.artifacts import (
    NPZ_ERRORS,
    ModelLoadError,
    check_item_ids,
    check_npz,
    json_object,
    make_version,
    read_json,
    require,
    rfc3339,
    utc_now,
)
from models.ease_search import PINNED, Choice, choose_lambda
from models.ease_table import AUTO, Lambda, Table, ease_table, parse_lambda
from models.item_ids import ItemIds
from models.signals import SIGNAL_WEIGHTS as SIGNAL_WEIGHTS  # re-exported

FORMAT = 1
RECENCY_DECAY = 0.7
HISTORY_USED = 200  # newest history items scored (engine.profile.HISTORY_ITEMS)
HISTORY_FLOOR = 0.02  # every history item's weight beside the recency decay's
LEGACY_HISTORY = 30  # what an artifact without `history` reads (the recent items it was tuned on)
MAX_HISTORY = 10_000
MAX_K = 1000  # neighbours kept per item, at most (a loaded artifact's `k`)
SHRINK = 50.0
ALPHA = 0.3
POPULAR = 500
TABLE = "ease"  # the default neighbour table (issue 17: chosen on validation splits)
ROW_CACHE = 20_000  # neighbour rows kept as Python lists per model (~7 KB each at k = 50)
NPZ_NAME = "recs.npz"
JSON_NAME = "recs.json"


def recency_weights(recent: Sequence[tuple[str, int]], decay: float) -> list[float]:
    """The weight of each of `recent` ((item_id, ts), newest first): `decay**rank`, where rank
    counts distinct time stamps (rank 0 = newest), so items seen at the same time (one basket, one
    order) weigh the same and the most recent weigh most."""
    out: list[float] = []
    weight = 1.0
    last: int | None = None
    for _item, ts in recent:
        if last is not None and ts != last:
            weight *= decay
        last = ts
        out.append(weight)
    return out


def history_weights(history: Sequence[tuple[str, int]], decay: float, floor: float) -> list[float]:
    """`recency_weights` plus `floor` for every item: the whole history's part beside the recent
    items' (floor 0: recency alone)."""
    return [w + floor for w in recency_weights(history, decay)]


def check_history_settings(history: Any, floor: Any, where: str) -> tuple[int, float]:
    """An artifact's `history` and `history_floor`, or ModelLoadError saying what is wrong."""
    if not isinstance(history, int) or isinstance(history, bool) or not 1 <= history <= MAX_HISTORY:
        raise ModelLoadError(f"{where}: history must be an integer in 1..{MAX_HISTORY}")
    if not isinstance(floor, int | float) or isinstance(floor, bool) or not 0 <= floor <= 100:
        raise ModelLoadError(f"{where}: history_floor must be a number in 0..100")
    return history, float(floor)


def fill_popular(
    out: list[str],
    taken: set[str],
    popular: Sequence[str],
    k: int,
    exclude: Container[str],
    allowed: Callable[[str], bool] | None,
) -> list[str]:
    """Top `out` up to k items from `popular` (best first), skipping items already taken,
    excluded, or not allowed; every recommender kind ends with this fill."""
    for candidate in popular:
        if len(out) >= k:
            break
        if candidate in taken or candidate in exclude:
            continue
        if allowed is not None and not allowed(candidate):
            continue
        out.append(candidate)
    return out


@dataclass
class Recommender:
    version: str
    created: str
    items: Sequence[str]  # row order; held as ItemIds once built
    indptr: np.ndarray  # int64, len(items)+1: neighbours of item i are [indptr[i], indptr[i+1])
    neighbours: np.ndarray  # int32 item indices, best first within each row
    weights: np.ndarray  # float32 similarities, aligned with neighbours
    popular: list[str]  # best first
    metrics: dict[str, Any] = field(default_factory=dict)
    k: int = 50
    recency_decay: float = RECENCY_DECAY
    history: int = HISTORY_USED
    history_floor: float = HISTORY_FLOOR
    name: str = "recs"

    def __post_init__(self) -> None:
        # ids as one buffer with a hash index (models.item_ids): ~20 bytes per id beside its own
        # bytes, against ~90 bytes as a list and a dict of Python strings
        self._ids = ItemIds.of(self.items)
        self.items = self._ids
        # Neighbours stay in the arrays (8 bytes per entry); the rows asked for are kept as
        # Python lists, which the serving loop reads faster than numpy scalars, up to ROW_CACHE
        # rows (as lists, ~145 bytes per entry: all of them cost ~7 GB at 1M items).
        self._rows: dict[int, list[tuple[int, float]]] = {}

    def _row(self, i: int) -> list[tuple[int, float]]:
        row = self._rows.get(i)
        if row is None:
            start, end = int(self.indptr[i]), int(self.indptr[i + 1])
            nbrs, wts = self.neighbours[start:end].tolist(), self.weights[start:end].tolist()
            row = list(zip(nbrs, wts, strict=True))
            if len(self._rows) >= ROW_CACHE:
                del self._rows[next(iter(self._rows))]  # the oldest row asked for
            self._rows[i] = row
        return row

    def neighbours_of(self, item: str) -> list[tuple[str, float]]:
        i = self._ids.get(item)
        if i is None:
            return []
        return [(self.items[j], w) for j, w in self._row(i)]

    def recommend(
        self,
        recent: Sequence[tuple[str, int]],
        exclude: Container[str],
        k: int = 20,
        allowed: Callable[[str], bool] | None = None,
    ) -> list[str]:
        """Up to k item ids, best first. `recent` is the user's history, (item_id, ts) newest
        first, of which the newest `history` count; excluded items and items with allowed(item)
        False are never returned; popular items fill what the neighbours of the history do not.
        Ties go to the item earlier in `items` (sorted ids)."""
        recent = recent[: self.history]
        weights = history_weights(recent, self.recency_decay, self.history_floor)
        out: list[str] = []
        taken: set[str] = set()
        for j in self._ranked(recent, weights):
            candidate = self.items[j]
            if candidate in exclude or (allowed is not None and not allowed(candidate)):
                continue
            out.append(candidate)
            taken.add(candidate)
            if len(out) >= k:
                return out
        return fill_popular(out, taken, self.popular, k, exclude, allowed)

    def _ranked(self, recent: Sequence[tuple[str, int]], weights: list[float]) -> list[int]:
        """The neighbours of the history's items, best summed weight first (ties: lower index).

        Summed with numpy over the rows' slices of the arrays, in the order a loop over the
        history and each row would add them (float64 throughout), so the scores are the loop's
        to the bit (200 history items: ~2.6 -> under 1 ms on the default model, noisy)."""
        rows_of = self._ids.rows_of([item for item, _ts in recent])
        found = [(i, w) for i, w in zip(rows_of, weights, strict=True) if i is not None]
        if not found:
            return []
        rows = np.array([i for i, _w in found], dtype=np.int64)
        starts = self.indptr[rows].astype(np.int64)
        lengths = self.indptr[rows + 1].astype(np.int64) - starts
        total = int(lengths.sum())
        if not total:
            return []
        # every entry of the rows, row after row: start of its row + its place in the row
        begins = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        at = begins + np.arange(total)
        js = self.neighbours[at]
        ws = self.weights[at].astype(np.float64) * np.repeat([w for _i, w in found], lengths)
        ids, where = np.unique(js, return_inverse=True)
        sums = np.bincount(where, weights=ws)
        ranked: list[int] = ids[np.lexsort((ids, -sums))].tolist()
        return ranked

    def popular_items(
        self,
        k: int,
        allowed: Callable[[str], bool] | None = None,
        exclude: Container[str] = (),
    ) -> list[str]:
        """The k most purchased items that pass the filters (best-sellers)."""
        return self.recommend((), exclude, k, allowed)

    # -- artifacts -------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        index = self._ids
        # stored, not deflated: every process that serves the model reads the arrays, and
        # inflating them was most of a 1M-item load (5.3 of 14 s; deflate saved 13 %)
        np.savez(
            d / NPZ_NAME,
            indptr=self.indptr.astype(np.int64),
            neighbours=self.neighbours.astype(np.int32),
            weights=self.weights.astype(np.float32),
            popular=np.array([index.index(p) for p in self.popular], dtype=np.int32),
        )
        meta = {
            "format": FORMAT,
            "name": self.name,
            "kind": "item_knn",
            "version": self.version,
            "created": self.created,
            "k": self.k,
            "recency_decay": self.recency_decay,
            "history": self.history,
            "history_floor": self.history_floor,
            "metrics": self.metrics,
            "items": list(self.items),
        }
        (d / JSON_NAME).write_text(json.dumps(meta, separators=(",", ":")) + "\n", "utf-8")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Recommender:
        d = Path(directory)
        meta = read_json(d / JSON_NAME, "recs")
        require(meta, d / JSON_NAME, "version", "created", "items")
        if meta.get("name", "recs") != "recs" or meta.get("format") != FORMAT:
            raise ModelLoadError(f"{d / JSON_NAME}: not a format-{FORMAT} recs artifact")
        items = check_item_ids(meta["items"], str(d / JSON_NAME), numbers=True)
        k = meta.get("k", 50)
        if type(k) is not int or not 1 <= k <= MAX_K:
            raise ModelLoadError(f"{d / JSON_NAME}: k must be an integer in 1..{MAX_K}")
        n = len(items)
        entries = n * k * 8  # neighbours and weights: at most k per item, 8-byte numbers at most
        limits = {"indptr": (n + 1) * 8, "neighbours": entries, "weights": entries}
        try:
            check_npz(
                d / NPZ_NAME,
                {**limits, "popular": n * 8},
                {"indptr": n + 1},
                lambda _, found: (
                    f"{d / JSON_NAME} no longer matches {d / NPZ_NAME}: its items list "
                    f"holds {n:,} items, the table in {NPZ_NAME} is of {found - 1:,} "
                    "(the two files "
                    "are written together by training: an items list edited by hand, or "
                    "files of two versions)"
                ),
            )
            with np.load(d / NPZ_NAME, allow_pickle=False) as npz:
                arrays = {a: npz[a] for a in ("indptr", "neighbours", "weights", "popular")}
        except FileNotFoundError:
            raise ModelLoadError(f"missing recs artifact {d / NPZ_NAME}") from None
        except ModelLoadError:
            raise
        except NPZ_ERRORS as exc:
            raise ModelLoadError(f"{d / NPZ_NAME} is not a valid recs .npz: {exc}") from None
        check_table(arrays, n, d)
        indptr, neighbours, weights = arrays["indptr"], arrays["neighbours"], arrays["weights"]
        popular = arrays["popular"]
        decay = meta.get("recency_decay", RECENCY_DECAY)
        if type(decay) not in (int, float) or not 0.0 <= decay <= 1.0:  # NaN fails both
            raise ModelLoadError(f"{d / JSON_NAME}: recency_decay must be a number in 0..1")
        history, floor = check_history_settings(
            meta.get("history", LEGACY_HISTORY), meta.get("history_floor", 0.0), str(d / JSON_NAME)
        )
        return cls(
            version=str(meta["version"]),
            created=str(meta["created"]),
            items=items,
            indptr=indptr.astype(np.int64, copy=False),
            neighbours=neighbours.astype(np.int32, copy=False),
            weights=weights.astype(np.float32, copy=False),
            popular=[items[i] for i in popular.tolist()],
            metrics=json_object(meta, "metrics", d / JSON_NAME),
            k=k,
            recency_decay=float(decay),
            history=history,
            history_floor=floor,
        )


def check_table(arrays: dict[str, np.ndarray], n: int, d: Path) -> None:
    """ModelLoadError unless the arrays are a neighbour table of `n` items that serving can walk:
    integer `indptr` of n+1 offsets from 0, never decreasing, ending at the number of neighbours
    (a decreasing or huge one made serving fail or allocate terabytes for a user), integer
    neighbour and popular row indices in 0..n-1, popular items not repeated (the fill served them
    as often as listed), weights finite as the float32 they are served as (NaN scores rank
    nothing; a float64 1e300 became inf)."""
    indptr, neighbours, weights = arrays["indptr"], arrays["neighbours"], arrays["weights"]
    popular = arrays["popular"]
    for name in ("indptr", "neighbours", "popular"):
        if arrays[name].ndim != 1 or arrays[name].dtype.kind not in "iu":
            raise ModelLoadError(f"{d}: recs {name} must be a 1-d array of integers")
    if weights.ndim != 1 or weights.dtype.kind not in "fiu":
        raise ModelLoadError(f"{d}: recs weights must be a 1-d array of numbers")
    with np.errstate(over="ignore"):
        if not np.isfinite(weights.astype(np.float32, copy=False)).all():
            raise ModelLoadError(f"{d}: recs weights must be finite float32 numbers")
    if (
        indptr.shape != (n + 1,)
        or int(indptr[0]) != 0
        # compared, not subtracted: np.diff of small or unsigned integers wraps a decrease
        # around to a positive step
        or (n and bool((indptr[1:] < indptr[:-1]).any()))
        or int(indptr[-1]) != len(neighbours)
    ):
        raise ModelLoadError(
            f"{d}: recs indptr must be {n + 1} offsets from 0, never decreasing, ending at "
            f"the {len(neighbours)} neighbours"
        )
    if (
        neighbours.shape != weights.shape
        or (len(neighbours) and not 0 <= int(neighbours.min()) <= int(neighbours.max()) < n)
        or (len(popular) and not 0 <= int(popular.min()) <= int(popular.max()) < n)
    ):
        raise ModelLoadError(f"{d}: recs arrays do not match the item list")
    if len(np.unique(popular)) != len(popular):
        raise ModelLoadError(f"{d}: recs popular must not repeat an item")


# -- training --------------------------------------------------------------------------------


def _histories(events: Iterable[Event], ignore: Container[str]) -> dict[str, dict[str, float]]:
    """user -> item -> strongest signal weight."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for e in events:
        w = SIGNAL_WEIGHTS.get(e.type)
        if w is None or not e.item_id or e.item_id in ignore:
            continue
        row = out[e.user_id]
        if w > row.get(e.item_id, 0.0):
            row[e.item_id] = w
    return out


def _popularity(events: Iterable[Event], ignore: Container[str]) -> list[str]:
    """Items by distinct buyers (then any signal), most first; ties by item id."""
    buyers: dict[str, set[str]] = defaultdict(set)
    signals: dict[str, int] = defaultdict(int)
    for e in events:
        if not e.item_id or e.item_id in ignore or e.type not in SIGNAL_WEIGHTS:
            continue
        signals[e.item_id] += 1
        if e.type == "purchase":
            buyers[e.item_id].add(e.user_id)
    ranked = sorted(signals, key=lambda i: (-len(buyers.get(i, ())), -signals[i], i))
    return ranked[:POPULAR]


def neighbour_table(
    histories: dict[str, dict[str, float]], k: int
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(items sorted, indptr, neighbours, weights) of the K most similar items of each item."""
    rows = []
    for history in histories.values():
        damp = 1.0 / math.sqrt(len(history))
        rows.append({item: w * damp for item, w in history.items()})
    vectorizer = DictVectorizer(dtype=np.float64, sparse=True, sort=True)
    x = vectorizer.fit_transform(rows)  # users x items, sparse
    items = [str(n) for n in vectorizer.get_feature_names_out()]
    return cooccurrence_table(x, items, k)


def cooccurrence_table(
    x: Any, items: list[str], k: int
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """`neighbour_table` of the users x `items` matrix `x` (scipy sparse, damped weights):
    models/recs_stream.py builds `x` from compact arrays."""
    co = (x.T @ x).tocsr()  # items x items
    diag = np.asarray(co.diagonal(), dtype=np.float64)
    source = diag**ALPHA  # the recent item's side
    target = diag ** (1.0 - ALPHA)  # the candidate's side
    indptr = [0]
    neighbours: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for i in range(len(items)):
        start, end = co.indptr[i], co.indptr[i + 1]
        cols = co.indices[start:end]
        vals = co.data[start:end]
        keep = cols != i
        cols, vals = cols[keep], vals[keep]
        sims = vals / (source[i] * target[cols] + SHRINK)
        if len(sims) > k:
            top = np.argpartition(-sims, k - 1)[:k]
            cols, sims = cols[top], sims[top]
        order = np.lexsort((cols, -sims))  # best first, ties by item index
        neighbours.append(cols[order].astype(np.int32))
        weights.append(sims[order].astype(np.float32))
        indptr.append(indptr[-1] + len(order))
    return (
        items,
        np.array(indptr, dtype=np.int64),
        np.concatenate(neighbours) if neighbours else np.zeros(0, np.int32),
        np.concatenate(weights) if weights else np.zeros(0, np.float32),
    )


def fit_recommender(
    events: Sequence[Event],
    k: int = 50,
    ignore: Container[str] = (),
    table: str = TABLE,
    lam: Lambda = AUTO,
) -> Recommender:
    """A recommender from events, without evaluation (see `train_recs`). `table` "ease": EASE's
    weights as the neighbour table (models/ease_table.py) with the lambda `lam`, by default AUTO:
    searched for on `events` alone (models/ease_search.py), the choice in the model's metrics;
    "cosine": the shrunk cosine."""
    if table not in ("ease", "cosine"):
        raise ValueError(f"unknown neighbour table {table!r}: ease or cosine")
    lam = parse_lambda(lam)
    cosine = neighbour_table(_histories(events, ignore), k)
    if table == "cosine":
        return _recommender(events, ignore, cosine, k)
    choice = search_lambda(events, k, ignore) if lam == AUTO else Choice(float(lam), how=PINNED)
    model = _recommender(events, ignore, ease_table(events, k, ignore, cosine, choice.lam), k)
    model.metrics = choice.metrics()
    return model


def search_lambda(events: Sequence[Event], k: int = 50, ignore: Container[str] = ()) -> Choice:
    """The EASE lambda the default training picks on `events` (models.ease_search)."""
    return choose_lambda(events, k, lambda part: fit_recommender(part, k, ignore, "cosine"), ignore)


def _recommender(
    events: Sequence[Event], ignore: Container[str], table: Table, k: int
) -> Recommender:
    """The recommender of a neighbour table, its popular items from `events`."""
    items, indptr, neighbours, weights = table
    when = utc_now()
    popular = [p for p in _popularity(events, ignore) if p in set(items)]
    content = b"".join([indptr.tobytes(), neighbours.tobytes(), weights.tobytes()])
    content += json.dumps([items, popular]).encode()
    return Recommender(
        version=make_version("recs", when, content),
        created=rfc3339(when),
        items=items,
        indptr=indptr,
        neighbours=neighbours,
        weights=weights,
        popular=popular,
        k=k,
    )


def _split_last_order(
    events: Sequence[Event],
) -> tuple[list[Event], dict[str, tuple[list[tuple[str, int]], set[str], set[str]]]]:
    """Hold out each user's last order (the purchases at their last purchase time or order id).

    Returns the training events and, per evaluated user, (recent items newest first, items they
    had bought before, held-out items they had never bought before)."""
    last: dict[str, tuple[int, str]] = {}
    for e in events:
        if e.type == "purchase" and e.item_id:
            order = str(e.props.get("order_id") or e.session_id or e.ts)
            if e.user_id not in last or e.ts >= last[e.user_id][0]:
                last[e.user_id] = (e.ts, order)
    train: list[Event] = []
    held: dict[str, set[str]] = defaultdict(set)
    for e in events:
        cut = last.get(e.user_id)
        if cut is None:
            train.append(e)
            continue
        order = str(e.props.get("order_id") or e.session_id or e.ts)
        if e.type == "purchase" and e.item_id and e.ts == cut[0] and order == cut[1]:
            held[e.user_id].add(e.item_id)
        elif e.ts < cut[0]:
            train.append(e)
    recent: dict[str, dict[str, int]] = defaultdict(dict)
    bought: dict[str, set[str]] = defaultdict(set)
    for e in train:
        if e.user_id in held and e.item_id and e.type in SIGNAL_WEIGHTS:
            recent[e.user_id][e.item_id] = max(e.ts, recent[e.user_id].get(e.item_id, 0))
            if e.type == "purchase":
                bought[e.user_id].add(e.item_id)
    cases = {}
    for user, targets in held.items():
        new = targets - bought[user]
        if not recent[user] or not new:
            continue
        history = sorted(recent[user].items(), key=lambda x: (-x[1], x[0]))[:HISTORY_USED]
        cases[user] = (history, bought[user], new)
    return train, cases


def evaluate(
    events: Sequence[Event],
    k: int = 50,
    ignore: Container[str] = (),
    at: int = 10,
    lam: Lambda = AUTO,
) -> dict[str, Any]:
    """HR@`at` of the neighbour model vs popularity with each user's last order held out: a hit
    when a top-`at` list (excluding what the user had bought before) holds an item of that order
    that the user had never bought. The model's lambda (AUTO: searched for on the training part
    alone, never on the held-out orders) is `eval_ease_lambda`."""
    train, cases = _split_last_order(events)
    return last_order_metrics(fit_recommender(train, k, ignore, lam=lam), cases, at)


HeldOut = Mapping[str, tuple[list[tuple[str, int]], set[str], set[str]]]


def last_order_metrics(model: Recommender, cases: HeldOut, at: int = 10) -> dict[str, Any]:
    """HR@`at` of `model` and of popularity over the held-out last orders (per user: recent
    items newest first, items bought before, held-out items new to the user)."""
    hits = pop_hits = 0
    for history, bought, targets in cases.values():
        if set(model.recommend(history, bought, at)) & targets:
            hits += 1
        if set(model.popular_items(at, exclude=bought)) & targets:
            pop_hits += 1
    n = len(cases)
    return {
        f"hr@{at}": round(hits / n, 4) if n else None,
        f"popularity_hr@{at}": round(pop_hits / n, 4) if n else None,
        "eval_users": n,
        "eval": "each user's last order held out; only items new to the user count",
        "eval_ease_lambda": model.metrics.get("ease_lambda"),
    }


def train_recs(
    events: Iterable[Event],
    k: int = 50,
    ignore: Container[str] = (),
    evaluate_split: bool = True,
    lam: Lambda = AUTO,
) -> Recommender:
    """Train on all events; metrics from `evaluate` (a model trained without the held-out
    orders) and the EASE lambda's choice (`lam`: AUTO, the default, searches for it on the
    events; a number pins it). `ignore` drops item ids that are not products (fees, postage)."""
    data = events if isinstance(events, list) else list(events)
    lam = parse_lambda(lam)  # a bad lambda fails before the evaluation's training
    metrics: dict[str, Any] = {}
    if evaluate_split:
        metrics.update(evaluate(data, k, ignore, lam=lam))
        print(f"recs: {metrics}", file=sys.stderr)
    model = fit_recommender(data, k, ignore, lam=lam)
    users = len({e.user_id for e in data if e.type in SIGNAL_WEIGHTS})
    metrics.update(model.metrics)  # the lambda's choice
    metrics.update({"n_items": len(model.items), "n_users": users, "k": k, "table": TABLE})
    model.metrics = metrics
    return model
