"""Readers: a worker's RocksDB tables read as secondaries (primaries written here as Faust does)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from rocksdict import Options, Rdict

from engine.catalog import Product
from engine.events import validate
from engine.popularity import Score
from engine.profile import apply
from streams.keys import user_key
from streams.readers import CONTENT_SYNC_DELAY, OFFSET_KEY, SecondaryState, table_dir

PARTITIONS = 4
T0 = 1_300_000_000_000


class Primary:
    """The worker's side: one raw-mode RocksDB per table and partition, like Faust's store."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = table_dir(data_dir)
        self.dir.mkdir(parents=True)
        self.dbs: dict[tuple[str, int], Rdict] = {}
        for name in ("profiles", "catalog", "popularity", "clock"):
            for p in range(PARTITIONS):
                options = Options(raw_mode=True)
                options.create_if_missing(True)
                db = Rdict(str(self.dir / f"{name}-{p}.db"), options)
                db[OFFSET_KEY] = b"42"
                self.dbs[(name, p)] = db

    def put(self, name: str, partition: int, key: bytes, value: bytes) -> None:
        self.dbs[(name, partition)][key] = value

    def close(self) -> None:
        for db in self.dbs.values():
            db.close()


def partition(user: str) -> int:
    return int(
        DefaultPartitioner()(user.encode(), list(range(PARTITIONS)), list(range(PARTITIONS)))
    )


def product(item_id: str) -> Product:
    return Product(
        item_id, item_id, f"https://s.example/{item_id}", "https://s.example/i.jpg", 1.0, "EUR"
    )


@pytest.fixture
def primary(tmp_path: Path):
    p = Primary(tmp_path)
    yield p
    p.close()


def test_reader_sees_the_workers_writes_after_a_catch_up(primary: Primary, tmp_path: Path) -> None:
    event = validate(
        {"event_id": "e1", "type": "add_to_cart", "user_id": "u1", "ts": T0, "item_id": "A"}
    )
    profile = apply(None, event, None)
    primary.put("profiles", partition("u1"), user_key("u1"), profile.pack())
    primary.put("catalog", 2, b"A", product("A").pack())
    primary.put("popularity", 1, b"A", Score(3.5, T0).pack())
    primary.put("popularity", 3, b"B", Score(7.0, T0).pack())
    primary.put("clock", 0, b"0", b"%d" % T0)

    state = SecondaryState(tmp_path, PARTITIONS, tmp_path / "secondary")
    state.refresh(popular=True)
    state.content.synced = True  # the content index: test_reader_is_ready_once_...
    assert state.ready() == (True, "ok")
    assert state.profile("u1").cart == {"A": 1}
    assert state.profile("u1") is state.profile("u1")  # memoized while the bytes are unchanged
    assert state.profile("nobody") is None
    assert state.product("A") == product("A") and state.product("Z") is None
    assert [p.item_id for p in state.products()] == ["A"]
    assert state.popular() == ["B", "A"]
    assert state.now_ms() == T0
    generation = state.catalog_generation

    # the worker writes on: nothing shows until the next catch-up
    later = validate(
        {
            "event_id": "e2",
            "type": "remove_from_cart",
            "user_id": "u1",
            "ts": T0 + 5,
            "item_id": "A",
        }
    )
    primary.put("profiles", partition("u1"), user_key("u1"), apply(profile, later, None).pack())
    primary.put("catalog", 0, b"C", product("C").pack())
    primary.put("clock", 1, b"1", b"%d" % (T0 + 5))
    state.refresh()
    assert state.profile("u1").cart == {}
    assert state.catalog_generation > generation
    assert {p.item_id for p in state.products()} == {"A", "C"}
    assert state.now_ms() == T0 + 5


async def test_reader_is_ready_once_the_stored_catalog_is_in_the_content_index(
    primary: Primary, tmp_path: Path
) -> None:
    """A restarted reader finds a catalog in the worker's tables: until its first pass over it,
    content neighbours would be missing from recommendations, so /readyz says it is not ready;
    that first pass is due at once, not after the delay that gathers later changes."""
    for n, item in enumerate("ABC"):
        primary.put("catalog", n, item.encode(), product(item).pack())
    primary.put("profiles", partition("u1"), user_key("u1"), b"")
    state = SecondaryState(tmp_path, PARTITIONS, tmp_path / "secondary")
    state.refresh()
    assert state.ready() == (False, "indexing the catalog's content: 0 rows read, 0 applied")
    assert "A" not in state.content_index
    generation = state.catalog_generation
    await state._sync_content(time.monotonic())
    assert state.ready() == (True, "ok")
    assert state.content.indexing().endswith(": 3 rows read, 3 applied")  # the pass's progress
    assert all(item in state.content_index for item in "ABC")
    assert state.catalog_generation > generation  # blocks and scores are made again

    primary.put("catalog", 3, b"D", product("D").pack())  # a later change: gathered
    state.refresh()
    await state._sync_content(time.monotonic())
    assert "D" not in state.content_index and state.ready() == (True, "ok")
    await state._sync_content(time.monotonic() + 2 * CONTENT_SYNC_DELAY)
    assert "D" in state.content_index


def test_reader_without_a_catalog_table_is_ready(tmp_path: Path) -> None:
    """No catalog partition exists (no worker stored one yet): nothing to index, no wait."""
    for p in range(PARTITIONS):
        db = Rdict(str(table_dir(tmp_path) / f"profiles-{p}.db"), _created())
        db.close()
    state = SecondaryState(tmp_path, PARTITIONS, tmp_path / "secondary")
    state.refresh()
    assert state.ready() == (True, "ok")


def _created() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    return options


def test_reader_waits_for_the_tables(tmp_path: Path) -> None:
    state = SecondaryState(tmp_path, PARTITIONS, tmp_path / "secondary")
    state.refresh()
    assert state.ready()[0] is False
    assert state.profile("u1") is None and state.popular() == []


def test_catch_up_skips_unchanged_partitions_but_sees_every_write(
    primary: Primary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rocksdict import Rdict as RdictClass

    state = SecondaryState(tmp_path, PARTITIONS, tmp_path / "secondary")
    state.refresh()
    calls: list[int] = []
    original = RdictClass.try_catch_up_with_primary

    def counting(self: RdictClass) -> None:
        calls.append(1)
        original(self)

    monkeypatch.setattr(RdictClass, "try_catch_up_with_primary", counting)
    state.refresh()
    assert calls == []  # nothing was written since the last round: no catch-up at all

    user = "u-later"
    event = validate(
        {"event_id": "e9", "type": "add_to_cart", "user_id": user, "ts": T0, "item_id": "A"}
    )
    primary.put("profiles", partition(user), user_key(user), apply(None, event, None).pack())
    state.refresh()
    assert len(calls) == 1  # only the written partition
    profile = state.profile(user)
    assert profile is not None and profile.cart == {"A": 1}


def test_an_unchanged_partition_is_answered_from_the_memo_without_a_read(
    primary: Primary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams.readers import SecondaryTables

    user = "u-memo"
    first = apply(
        None,
        validate(
            {"event_id": "m1", "type": "add_to_cart", "user_id": user, "ts": T0, "item_id": "A"}
        ),
        None,
    )
    primary.put("profiles", partition(user), user_key(user), first.pack())
    state = SecondaryState(tmp_path, PARTITIONS, tmp_path / "secondary")
    state.refresh()
    reads: list[bytes] = []
    original = SecondaryTables.get

    def counting(self: SecondaryTables, p: int, key: bytes) -> bytes | None:
        reads.append(key)
        return original(self, p, key)

    monkeypatch.setattr(SecondaryTables, "get", counting)
    assert state.profile(user).cart == {"A": 1} and state.profile("nobody") is None
    assert state.profile(user).cart == {"A": 1} and state.profile("nobody") is None
    assert reads == [user_key(user), user_key("nobody")]  # the second round: no read at all

    # a write to another partition leaves this one's memo standing
    other_partition = next(p for p in range(PARTITIONS) if p != partition(user))
    primary.put("profiles", other_partition, b"x", b"y")
    state.refresh()
    kept = state.profile(user)
    assert kept is not None and reads.count(user_key(user)) == 1

    # the user's own partition moves: read again, and the new value shows
    later = apply(
        first,
        validate(
            {"event_id": "m2", "type": "remove_from_cart", "user_id": user, "ts": T0 + 1,
             "item_id": "A"}
        ),
        None,
    )  # fmt: skip
    primary.put("profiles", partition(user), user_key(user), later.pack())
    state.refresh()
    assert state.profile(user).cart == {} and reads.count(user_key(user)) == 2
    # another write to the partition that leaves the user's bytes alone keeps the unpacked profile
    primary.put("profiles", partition(user), b"someone-else", b"z")
    state.refresh()
    assert state.profile(user) is state.profile(user) and reads.count(user_key(user)) == 3


def test_a_round_with_nothing_changed_stays_on_the_event_loop(
    primary: Primary, tmp_path: Path
) -> None:
    state = SecondaryState(tmp_path, PARTITIONS, tmp_path / "secondary")
    state.refresh()
    rounds = state.catch_ups
    assert state._round(popular=False) is None  # nothing to hand to a thread
    assert state.catch_ups == rounds + 1
    assert state._round(popular=True) == {name: [] for name in state.tables}
    primary.put("clock", 2, b"2", b"%d" % (T0 + 9))
    stale = state._round(popular=False)
    assert stale is not None and [p for p, _ in stale["clock"]] == [2] and not stale["profiles"]
    state.refresh(False, stale)
    assert state.now_ms() == T0 + 9
    assert state._round(popular=False) is None


def test_products_are_memoized_until_the_catalog_changes(
    primary: Primary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams.readers import SecondaryTables

    primary.put("catalog", 1, b"A", product("A").pack())
    state = SecondaryState(tmp_path, PARTITIONS, tmp_path / "secondary")
    state.refresh()
    reads: list[bytes] = []
    original = SecondaryTables.get_any

    def counting(self: SecondaryTables, key: bytes) -> bytes | None:
        reads.append(key)
        return original(self, key)

    monkeypatch.setattr(SecondaryTables, "get_any", counting)
    assert state.product("A") == product("A") and state.product("B") is None
    assert state.product("A") == product("A") and state.product("B") is None
    assert reads == [b"A", b"B"]  # the second round: answered from the memo

    # a write elsewhere (profiles) leaves the catalog memo standing
    primary.put("profiles", 0, b"u", b"x")
    state.refresh()
    assert state.product("B") is None and reads == [b"A", b"B"]

    # the catalog changes: the next catch-up shows the new and the changed product at once
    changed = Product("A", "A v2", "https://s.example/A", "https://s.example/i.jpg", 2.0, "EUR")
    primary.put("catalog", 1, b"A", changed.pack())
    primary.put("catalog", 3, b"B", product("B").pack())
    assert state.product("B") is None  # not caught up yet
    state.refresh()
    assert state.product("A") == changed and state.product("B") == product("B")


def test_popularity_is_caught_up_only_when_the_popular_list_is_due(
    primary: Primary, tmp_path: Path
) -> None:
    primary.put("popularity", 0, b"A", Score(1.0, T0).pack())
    state = SecondaryState(tmp_path, PARTITIONS, tmp_path / "secondary")
    state.refresh(popular=True)
    assert state.popular() == ["A"]

    primary.put("popularity", 2, b"B", Score(5.0, T0).pack())
    assert state._round(popular=False) is None  # nothing a request reads has changed
    primary.put("profiles", 1, b"u", b"x")
    stale = state._round(popular=False)
    assert (
        stale is not None and "popularity" not in stale and [p for p, _ in stale["profiles"]] == [1]
    )
    state.refresh(False, stale)
    assert state.popular() == ["A"]

    stale = state._round(popular=True)
    assert stale is not None and [p for p, _ in stale["popularity"]] == [2]
    state.refresh(True, stale)
    assert state.popular() == ["B", "A"]


def test_secondaries_open_table_files_with_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """RocksDB starts and joins max_file_opening_threads - 1 threads whenever a catch-up builds a
    version (the default 16: ~0.7 ms per catch-up with nothing new, all of it with the GIL held);
    the readers' secondaries use one."""
    import streams.readers as readers

    calls: list[tuple[str, object]] = []

    class Recording:
        def __init__(self, raw_mode: bool) -> None:
            calls.append(("raw_mode", raw_mode))

        def __getattr__(self, name: str) -> Callable[[object], None]:
            return lambda value: calls.append((name, value))

    monkeypatch.setattr(readers, "Options", Recording)
    readers._options()
    assert ("set_max_file_opening_threads", 1) in calls
    assert ("set_max_open_files", -1) in calls


async def test_a_stepwise_catch_up_gives_the_loop_a_turn_between_databases(
    primary: Primary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from rocksdict import Rdict as RdictClass

    state = SecondaryState(tmp_path, PARTITIONS, tmp_path / "secondary")
    state.refresh(popular=True)
    order: list[str] = []
    original = RdictClass.try_catch_up_with_primary

    def logged(self: RdictClass) -> None:
        order.append("catch-up")
        original(self)

    monkeypatch.setattr(RdictClass, "try_catch_up_with_primary", logged)
    ticking = True

    async def ticker() -> None:  # stands for requests waiting on the loop
        while ticking:
            order.append("tick")
            await asyncio.sleep(0)

    users = [u for u in (f"u{n}" for n in range(40)) if partition(u) in (0, 2)][:4]
    for user in users:
        event = validate(
            {"event_id": user, "type": "add_to_cart", "user_id": user, "ts": T0, "item_id": "A"}
        )
        primary.put("profiles", partition(user), user_key(user), apply(None, event, None).pack())
    primary.put("catalog", 3, b"B", product("B").pack())
    primary.put("clock", 1, b"1", b"%d" % (T0 + 5))
    primary.put("popularity", 0, b"B", Score(7.0, T0).pack())
    generation, rounds, steps = state.catalog_generation, state.catch_ups, sum(state.catch_up_steps)
    stale = state._round(popular=True)
    assert stale is not None
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await state.catch_up_stepwise(True, stale)
    ticking = False
    await task

    caught = [n for n, x in enumerate(order) if x == "catch-up"]
    assert len(caught) == 5  # profiles 0 and 2, catalog 3, clock 1, popularity 0
    assert all(order[n + 1] == "tick" for n in caught)  # the loop's turn after each database
    assert sum(state.catch_up_steps) == steps + 5 and state.catch_ups == rounds + 1
    for user in users:
        profile = state.profile(user)
        assert profile is not None and profile.cart == {"A": 1}
    assert state.catalog_generation == generation + 1 and state.product("B") == product("B")
    assert state.now_ms() == T0 + 5 and state.popular() == ["B"]
    text = "\n".join(state.metrics())
    assert f'persona_reader_catch_up_step_seconds_bucket{{le="+Inf"}} {steps + 5}' in text


def test_a_partition_that_opens_is_read_whatever_its_sequence_number(tmp_path: Path) -> None:
    """A table's partitions open one by one as the worker creates them. The change a catch-up
    finds was the sum of the partitions' sequence numbers (-1 for one not open), compared with
    the sum before, which started at -1: a first partition opening at sequence 2 of 4 left the
    sum at -1, and the reader never read that partition's clock."""
    tables = table_dir(tmp_path)
    tables.mkdir(parents=True)
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    db = Rdict(str(tables / "clock-2.db"), options)
    db[OFFSET_KEY] = b"42"
    db[b"2"] = b"%d" % T0
    try:
        assert db.latest_sequence_number() == PARTITIONS - 2  # the sum of the numbers: -1
        state = SecondaryState(tmp_path, PARTITIONS, tmp_path / "secondary")
        state.refresh()
        assert state.now_ms() == T0
    finally:
        db.close()


async def test_stop_waits_for_a_read_running_in_a_thread_before_closing_the_tables(
    primary: Primary, tmp_path: Path
) -> None:
    """Stopping cancels the follow task, but not a thread already reading the tables (the
    catalog's content pass): the databases close only once it has ended. Closed under a
    running iteration, rocksdict crashed the whole process (a segfault seen at a test run's
    end)."""
    for n, item in enumerate("ABC"):
        primary.put("catalog", n, item.encode(), product(item).pack())
    state = SecondaryState(tmp_path, PARTITIONS, tmp_path / "secondary")
    state.refresh()
    reading, go_on = threading.Event(), threading.Event()
    diff = state.content.diff
    read: list[int] = []

    def slow_diff(rows: Any) -> Any:
        reading.set()
        go_on.wait(10)
        rows = list(rows)  # the tables are read here, after stop() was asked
        read.append(len(rows))
        return diff(rows)

    state.content.diff = slow_diff  # type: ignore[method-assign]
    state._task = asyncio.create_task(state._sync_content(time.monotonic()))
    await asyncio.to_thread(reading.wait, 10)
    stopping = asyncio.create_task(state.stop())
    await asyncio.sleep(0.2)
    assert not stopping.done()  # waiting for the thread
    assert any(db is not None for db in state.tables["catalog"].dbs)  # still open
    go_on.set()
    await asyncio.wait_for(stopping, 10)
    assert read == [3]  # the thread read every row of the open tables
    assert all(db is None for db in state.tables["catalog"].dbs)  # closed after it


def test_reader_routes_by_its_workers_ownership_file(
    primary: Primary, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reader's `owner_url` follows the view its worker publishes (engine/ownership.py):
    another worker's partition goes there, its own worker's is answered here, and without a
    usable view (missing, refused, stale) every user is answered here, each problem logged once;
    /readyz says so once the view had named another worker."""
    from engine import ownership

    own, other = "http://127.0.0.1:8081", "http://10.0.0.2:8080"
    users = {partition(u): u for u in (f"route-{n}" for n in range(64))}
    mine, theirs = users[0], users[1]
    path = tmp_path / ownership.FILE_NAME
    state = SecondaryState(tmp_path, PARTITIONS, tmp_path / "secondary")
    state.refresh()
    state.content.synced = True
    caplog.set_level("INFO", logger="persona.readers")

    assert not state.owner_known(mine)  # nothing looked at yet
    state.check_ownership()  # no file (a lone worker of an older version): answered here
    assert state.owner_url(theirs) is None and state.ready() == (True, "ok")
    assert state.owner_known(theirs)  # that worker owns every partition

    ownership.write(path, own, [own, other, own, other])
    state.check_ownership()
    assert state.owner_url(theirs) == other and state.owner_url(mine) is None
    assert state.ready() == (True, "ok")
    assert state.owner_known(theirs) and state.owner_known(mine)

    caplog.clear()
    path.write_bytes(b'{"v": 1, "own": "http://x", "owners": ["file:///etc/passwd"]}')
    for _ in range(3):
        state.check_ownership()
    assert state.owner_url(theirs) is None and not state.owner_known(mine)
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelname == "WARNING"
    assert state.ready()[0] is False and "partition ownership unknown" in state.ready()[1]
    assert state.ready()[1].startswith(f"partition ownership unknown (refused: {path} refused: ")

    ownership.write(path, own, [None] * PARTITIONS)  # the worker is rebalancing
    state.check_ownership()
    assert state.owner_url(theirs) is None
    assert not state.owner_known(theirs) and not state.owner_known(mine)  # no erasure claimed
    assert state.ready() == (False, "partition ownership unknown (rebalancing)")

    ownership.write(path, own, [own, other, own, other])
    state.check_ownership()
    assert state.owner_url(theirs) == other and state.ready() == (True, "ok")
    caplog.clear()
    later = path.stat().st_mtime + ownership.STALE + 1  # the worker stopped touching it
    for _ in range(3):
        state.check_ownership(wall=later)
    assert state.owner_url(theirs) is None and "stale" in state.ready()[1]
    assert not state.owner_known(mine)
    assert state.ready()[1].startswith(f"partition ownership unknown (stale: {path} not refresh")
    assert len([r for r in caplog.records if "not refreshed" in r.getMessage()]) == 1
    state.check_ownership()  # touched again (here: the clock back to the file's time)
    assert state.owner_url(theirs) == other and state.owner_known(theirs)
    path.unlink()  # gone after the view named another worker: not a lone worker's
    state.check_ownership()
    assert not state.owner_known(mine)
    assert state.ready() == (False, f"partition ownership unknown (missing: {path} is missing)")


def test_a_bad_peer_url_in_the_ownership_file_costs_only_its_partitions(
    primary: Primary, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One bad peer URL refused the reader's whole view before: every user was answered from
    the worker's tables (the good peer's users from a standby copy), logged as a refused file.
    Now its partition alone is answered here, the good peer's users are still forwarded, and
    the bad entry is logged once and shown on /metrics, not per request or per touch of the
    file (the worker rewrites it every 5 s)."""
    from engine import ownership

    own, other = "http://127.0.0.1:8081", "http://10.0.0.2:8080"
    users = {partition(u): u for u in (f"route-{n}" for n in range(64))}
    path = tmp_path / ownership.FILE_NAME
    state = SecondaryState(tmp_path, PARTITIONS, tmp_path / "secondary")
    state.refresh()
    state.content.synced = True
    caplog.set_level("INFO", logger="persona.readers")
    raw = ownership.render(own, [own, other, own, other]).replace(
        other.encode(), b"http://u:p@10.0.0.3:8080", 1
    )
    for _ in range(3):  # the worker touching the file: a new file each time, the same view
        (tmp_path / "tmp").write_bytes(raw)
        (tmp_path / "tmp").replace(path)
        for _ in range(3):
            state.check_ownership()
    assert state.owner_url(users[1]) is None  # the bad peer's partition: answered here
    assert state.owner_url(users[3]) == other  # the good peer's: still forwarded
    assert state.owner_url(users[0]) is None and state.ready() == (True, "ok")
    said = [r for r in caplog.records if "partition 1" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING", [r.getMessage() for r in said]
    assert "u:p" not in caplog.text
    assert "persona_reader_ownership_entries_refused 1" in state.metrics()
    ownership.write(path, own, [own, other, own, other])  # mended
    state.check_ownership()
    assert state.owner_url(users[1]) == other
    assert "persona_reader_ownership_entries_refused 0" in state.metrics()


def test_an_ownership_file_dated_ahead_of_the_clock_is_not_trusted(
    primary: Primary, tmp_path: Path
) -> None:
    """A file whose time is ahead of the clock (the clock stepped back after the worker wrote it,
    then the worker died) never aged: the reader routed by a dead worker's view until the clock
    caught up, an hour for a one-hour step. More than `STALE` s ahead is stale too (a running
    worker rewrites it within `HEARTBEAT` s, dated by the new clock)."""
    from engine import ownership

    own, other = "http://127.0.0.1:8081", "http://10.0.0.2:8080"
    theirs = {partition(u): u for u in (f"route-{n}" for n in range(64))}[1]
    path = tmp_path / ownership.FILE_NAME
    state = SecondaryState(tmp_path, PARTITIONS, tmp_path / "secondary")
    state.refresh()
    state.content.synced = True
    ownership.write(path, own, [own, other, own, other])
    written = path.stat().st_mtime
    state.check_ownership(wall=written - ownership.STALE / 2)  # a small step back: still used
    assert state.owner_url(theirs) == other
    state.check_ownership(wall=written - 3600)  # the clock an hour behind the file's time
    assert state.owner_url(theirs) is None
    assert "ahead of the clock" in state.ready()[1], state.ready()


def test_a_partition_its_worker_no_longer_holds_is_never_answered_from_its_old_copy(
    primary: Primary, tmp_path: Path
) -> None:
    """With three or more workers a worker holds (owns or stands by for) only some partitions;
    the databases of the others stay in its data dir from an earlier assignment, no longer
    written. A reader answered their users from them: stale profiles served as current (and a
    DELETE claimed an erasure it could not see). Now only the partitions the worker's view
    says it holds are read; another's user is forwarded, or (owner unknown or unreachable)
    answered with no profile, and an erasure is not confirmed from here."""
    from engine import ownership

    own, other = "http://127.0.0.1:8081", "http://10.0.0.2:8080"
    users = {partition(u): u for u in (f"held-{n}" for n in range(64))}
    event = validate(
        {"event_id": "h1", "type": "add_to_cart", "user_id": "x", "ts": T0, "item_id": "A"}
    )
    for p, user in users.items():
        primary.put("profiles", p, user_key(user), apply(None, event, None).pack())
    path = tmp_path / ownership.FILE_NAME
    state = SecondaryState(tmp_path, PARTITIONS, tmp_path / "secondary")
    state.refresh()
    state.content.synced = True
    # partition 0 owned, 1 stood by for, 2 and 3 left over (2's owner unknown: a rebalance)
    ownership.write(path, own, [own, other, None, other], held=[0, 1])
    state.check_ownership()
    assert state.profile(users[0]) is not None and state.profile(users[1]) is not None
    assert state.profile(users[2]) is None and state.profile(users[3]) is None
    assert state.owner_url(users[3]) == other  # forwarded; answered without it if unreachable
    assert not state.owner_known(users[2])  # DELETE: 202, erased false
    assert len(state.sample_profiles(10)) == 2  # the picker reads held partitions only
    ownership.write(path, own, [own, other, own, other], held=[0, 1, 2])  # 2 assigned here
    state.check_ownership()
    assert state.profile(users[2]) is not None and state.owner_known(users[2])
    later = path.stat().st_mtime + ownership.STALE + 1  # the worker stopped touching the file
    state.check_ownership(wall=later)
    assert all(state.profile(u) is None for u in users.values())  # nothing vouched for


def test_a_reader_whose_worker_holds_only_some_partitions_is_not_ready_without_owners(
    primary: Primary, tmp_path: Path
) -> None:
    """A reader started while its worker rebalances (the file: every owner unknown) took itself
    for a lone worker's and said ready, though the file's `held` names only some partitions (a
    worker holding fewer than all has peers): the users of the others got the fallback, neither
    their profile nor a hop to their owner. Held partitions short of all mark the group as
    scaled out, as a view naming another worker does: not ready until the owners are known."""
    from engine import ownership

    own, other = "http://127.0.0.1:8081", "http://10.0.0.2:8080"
    event = validate(
        {"event_id": "r1", "type": "add_to_cart", "user_id": "x", "ts": T0, "item_id": "A"}
    )
    for p in range(PARTITIONS):
        primary.put("profiles", p, user_key(f"seed-{p}"), apply(None, event, None).pack())
    path = tmp_path / ownership.FILE_NAME
    state = SecondaryState(tmp_path, PARTITIONS, tmp_path / "secondary")
    state.refresh()
    state.content.synced = True
    ownership.write(path, own, [None] * PARTITIONS, held=[0])  # rebalancing; holds 0 alone
    state.check_ownership()
    assert state.ready()[0] is False and "partition ownership unknown" in state.ready()[1]
    ownership.write(path, own, [own] + [other] * (PARTITIONS - 1), held=[0])  # owners known
    state.check_ownership()
    assert state.ready() == (True, "ok")
    lone = SecondaryState(tmp_path, PARTITIONS, tmp_path / "secondary-lone")
    lone.refresh()
    lone.content.synced = True
    ownership.write(path, own, [None] * PARTITIONS)  # a lone worker before its assignment
    lone.check_ownership()
    assert lone.ready() == (True, "ok")
