"""Recs training from an events file streamed into compact arrays (issue 21 item 4): the same
model as the event-list training where no user passes the cap, and a bounded co-occurrence for a
heavy user."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np

from engine.events import Event
from models import compact_splits, splits
from models.compact import read_signals, signals_of
from models.ease_search import AUTO_HOLDOUT, AUTO_MIN_USERS
from models.ease_table import TABLE_LAMBDA, ease_table
from models.recs import _histories, _popularity, _split_last_order, fit_recommender, neighbour_table
from models.recs_stream import CO_ITEMS, fit_signals, split_last_order, user_item_matrix
from tests.models.synthetic import DAY, T0

IGNORE = frozenset({"POST"})
KINDS = ("product_view", "add_to_cart", "purchase", "like", "page_view", "search")


def varied_events(users: int = 80, seed: int = 5, per_user: int = 12) -> list[Event]:
    """Views, carts, purchases in orders (some sharing a time stamp), likes without an item,
    a fee item to ignore, non-signal events; users interleaved, some times out of file order."""
    rng = random.Random(seed)
    out: list[Event] = []
    for n in range(users * per_user):
        user, kind = f"u{rng.randrange(users)}", rng.choice(KINDS)
        item = f"i{min(int(rng.paretovariate(1.2)), 60)}" if kind != "like" or n % 2 else None
        item = "POST" if kind == "purchase" and n % 17 == 0 else item
        ts = T0 + rng.randrange(90) * DAY + rng.choice((0, 0, 1000, rng.randrange(DAY)))
        props = {"order_id": f"o{ts // DAY}-{user}"} if kind == "purchase" and n % 3 else {}
        out.append(Event(f"e{n}", kind, user, ts, item if kind != "page_view" else None,
                         props=props, session_id=f"s{n % 7}"))  # fmt: skip
    return out


def write_jsonl(path: Path, events: list[Event]) -> Path:
    with gzip.open(path, "wt") as f:
        for e in events:
            f.write(json.dumps(e.to_dict()) + "\n")
    return path


def test_the_file_read_as_a_stream_holds_the_events_signals(tmp_path: Path) -> None:
    events = varied_events()
    streamed = read_signals(write_jsonl(tmp_path / "events.jsonl.gz", events))
    listed = signals_of(events)
    assert streamed.users == listed.users and streamed.items == listed.items
    for name in ("user", "item", "kind", "ts", "order"):
        assert np.array_equal(getattr(streamed, name), getattr(listed, name)), name
    with_items = [e for e in events if e.item_id and e.type in ("product_view", "add_to_cart",
                                                                  "purchase", "like")]  # fmt: skip
    assert len(streamed) == len(with_items) > 0


def test_uncapped_the_model_is_the_event_trainings_to_the_bit(tmp_path: Path) -> None:
    events = varied_events()
    s = read_signals(write_jsonl(tmp_path / "events.jsonl.gz", events))
    cosine = fit_signals(s, 5, IGNORE, table="cosine")
    before = fit_recommender(events, 5, IGNORE, table="cosine")
    assert cosine.version.rsplit("-", 1)[1] == before.version.rsplit("-", 1)[1]  # the digest
    assert cosine.items == before.items and cosine.popular == before.popular
    ease = fit_signals(s, 5, IGNORE, table="ease", lam=TABLE_LAMBDA)
    table = ease_table(events, 5, IGNORE, neighbour_table(_histories(events, IGNORE), 5))
    assert ease.items == table[0]
    for mine, theirs in zip((ease.indptr, ease.neighbours, ease.weights), table[1:], strict=True):
        assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs)
    assert ease.popular == _popularity(events, IGNORE)[: len(ease.popular)]
    assert not np.array_equal(ease.weights, cosine.weights)  # two different tables compared


def test_the_evaluation_split_is_the_event_splits() -> None:
    events = varied_events()
    train, cases = _split_last_order(events)
    s_train, s_cases = split_last_order(signals_of(events))
    assert s_cases == cases and len(cases) > 10
    again = fit_recommender(train, 5, IGNORE, table="cosine")
    mine = fit_signals(s_train, 5, IGNORE, table="cosine")
    assert (mine.items, mine.popular) == (again.items, again.popular)
    assert np.array_equal(mine.weights, again.weights)


def heavy_and_light(heavy_items: int) -> list[Event]:
    """One user viewing `heavy_items` distinct items a minute apart, and 30 light users."""
    out = [Event(f"h{n}", "product_view", "heavy", T0 + n * 60_000, f"i{n}")
           for n in range(heavy_items)]  # fmt: skip
    for u in range(30):
        out += [Event(f"l{u}-{j}", "product_view", f"l{u}", T0 + u, f"i{(u + j) % 50}")
                for j in range(4)]  # fmt: skip
    return out


def test_a_heavy_user_adds_at_most_cap_squared_pairs() -> None:
    s = signals_of(heavy_and_light(1_000))
    m = user_item_matrix(s, (), cap=50)
    x = m.x.tocsr()
    heavy_row = x[[0]]  # the heavy user's events come first
    kept = {m.items[c] for c in heavy_row.indices.tolist()}
    assert kept == {f"i{n}" for n in range(950, 1_000)}  # the 50 newest
    assert m.capped_users == 1
    assert (heavy_row.T @ heavy_row).nnz == 50 * 50
    light = x[1:]
    assert (light.T @ light).nnz <= 30 * 4 * 4
    assert (x.T @ x).nnz <= 50 * 50 + 30 * 4 * 4
    uncapped = user_item_matrix(s, (), cap=10_000).x.tocsr()
    assert (uncapped[[0]].T @ uncapped[[0]]).nnz == 1_000 * 1_000
    assert np.array_equal(uncapped[1:].toarray(), light.toarray())  # light users: untouched


def test_the_default_cap_keeps_the_newest_items_and_serves_them() -> None:
    s = signals_of(heavy_and_light(CO_ITEMS + 100))
    model = fit_signals(s, 5, (), table="cosine")
    assert model.metrics == {"co_items_cap": CO_ITEMS, "capped_users": 1}
    oldest, newest = model.neighbours_of("i0"), model.neighbours_of(f"i{CO_ITEMS + 99}")
    assert newest and all(int(j[1:]) >= 100 for j, _w in newest)  # the heavy user's newest
    assert all(int(j[1:]) < 50 for j, _w in oldest)  # i0 co-occurs with light users' items only


def test_the_lambda_search_splits_and_picks_as_the_event_search() -> None:
    events = varied_events(users=120, seed=8, per_user=30)
    s = signals_of(events)
    train, cases = splits.leave_last_n(events, AUTO_HOLDOUT, IGNORE)
    s_train, s_cases = compact_splits.leave_last_n(s, AUTO_HOLDOUT, IGNORE)
    assert s_cases == cases and len(cases) >= AUTO_MIN_USERS
    a, b = s_train, signals_of(train)
    assert [a.users[u] for u in a.user] == [b.users[u] for u in b.user]
    assert [a.items[i] for i in a.item] == [b.items[i] for i in b.item]
    assert np.array_equal(a.ts, b.ts) and np.array_equal(a.kind, b.kind)
    mine_model, their_model = fit_signals(s, 5, IGNORE), fit_recommender(events, 5, IGNORE)
    assert (
        mine_model.metrics["ease_lambda_by"] == their_model.metrics["ease_lambda_by"] == "searched"
    )
    mine_hr = mine_model.metrics["ease_lambda_search"]["hr@10"]
    assert mine_hr == their_model.metrics["ease_lambda_search"]["hr@10"]
    assert mine_model.metrics["ease_lambda"] == their_model.metrics["ease_lambda"]
    assert np.array_equal(mine_model.weights, their_model.weights)
    assert mine_model.version.rsplit("-", 1)[1] == their_model.version.rsplit("-", 1)[1]
