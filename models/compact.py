"""The item signals of an events file as compact arrays: what recs training reads (issue 21 item 4).

Training used to hold every `Event` of the file in a list (~0.8 KB each: 1.7 GB for 2M events
before any model work). `read_signals` streams the file once and keeps, per signal event (the
kinds of `models.signals.SIGNAL_WEIGHTS` with an item), the interned user and item, the kind, the
time and, for purchases, the interned order key: 21 bytes an event in numpy arrays, plus one
string per distinct user, item and order. The rows keep the file's order, which training's
results depend on (the first appearance of each user orders the co-occurrence sums).
"""

from __future__ import annotations

from array import array
from collections.abc import Container, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.events import Event
from engine.profile import is_reversal
from engine.sources import ReadStats, read_events
from models.signals import SIGNAL_WEIGHTS

KINDS = tuple(SIGNAL_WEIGHTS)  # kind code -> event type
KIND_WEIGHTS = np.array([SIGNAL_WEIGHTS[k] for k in KINDS], dtype=np.float64)
PURCHASE = KINDS.index("purchase")
NO_ORDER = -1


@dataclass
class Signals:
    """Signal events in file order: row r is user `users[user[r]]` giving item `items[item[r]]`
    a signal of kind `KINDS[kind[r]]` at `ts[r]`; `order[r]` is the purchase's interned order key
    (`order_id`, else the session, else the time, as the evaluation's split keys orders), or
    NO_ORDER. `users` also holds users whose signals named no item (they count as users)."""

    users: list[str]
    items: list[str]
    user: np.ndarray  # int32
    item: np.ndarray  # int32
    kind: np.ndarray  # int8
    ts: np.ndarray  # int64
    order: np.ndarray  # int32

    def __len__(self) -> int:
        return len(self.ts)

    def subset(self, rows: np.ndarray) -> Signals:
        """The rows where the boolean mask `rows` is true (same users, items and order)."""
        return Signals(self.users, self.items, self.user[rows], self.item[rows],
                       self.kind[rows], self.ts[rows], self.order[rows])  # fmt: skip

    def ignored(self, ignore: Container[str]) -> np.ndarray:
        """Boolean mask of the rows whose item is in `ignore` (fees, postage)."""
        flags = np.fromiter((i in ignore for i in self.items), dtype=bool, count=len(self.items))
        return np.asarray(flags[self.item]) if len(self.items) else np.zeros(len(self), bool)

    def weights(self) -> np.ndarray:
        """Each row's signal weight (float64)."""
        return np.asarray(KIND_WEIGHTS[self.kind])


class _Builder:
    """Appends events to growing typed arrays, interning the strings."""

    def __init__(self) -> None:
        self.users: dict[str, int] = {}
        self.items: dict[str, int] = {}
        self.orders: dict[str, int] = {}
        self.kinds = {k: n for n, k in enumerate(KINDS)}
        self.cols = (array("i"), array("i"), array("b"), array("q"), array("i"))

    def add(self, e: Event) -> None:
        kind = self.kinds.get(e.type)
        if kind is None:
            return
        user = self.users.setdefault(e.user_id, len(self.users))
        if not e.item_id:
            return
        order = NO_ORDER
        if kind == PURCHASE:
            key = str(e.props.get("order_id") or e.session_id or e.ts)
            order = self.orders.setdefault(key, len(self.orders))
        item = self.items.setdefault(e.item_id, len(self.items))
        for col, value in zip(self.cols, (user, item, kind, e.ts, order), strict=True):
            col.append(value)

    def done(self) -> Signals:
        u, i, k, t, o = (np.frombuffer(c, dtype=c.typecode) if len(c) else c for c in self.cols)
        return Signals(
            list(self.users), list(self.items), np.asarray(u, np.int32), np.asarray(i, np.int32),
            np.asarray(k, np.int8), np.asarray(t, np.int64), np.asarray(o, np.int32),
        )  # fmt: skip


def signals_of(events: Iterable[Event]) -> Signals:
    """The signals of `events` (an iterable read once; cancellations are the caller's)."""
    builder = _Builder()
    for e in events:
        builder.add(e)
    return builder.done()


def read_signals(path: str | Path, stats: ReadStats | None = None) -> Signals:
    """The signals of an events file in one streaming pass, cancellations (UCI's `C` invoices)
    left out as training always left them out."""
    events = read_events(path, stats=stats, history=True)
    return signals_of(e for e in events if not is_reversal(e))
