"""`DELETE /v1/users/{id}` while the group rebalances: two workers of one group (each with a
reader beside it) hold users' profiles; a third worker joins, then leaves, and erasures are sent
to every process (the workers and the readers) throughout. Each answer is either 200
`erased: true` (applied) or 202 `erased: false` (queued: carried out once ownership settles),
never a 5xx; and once the group has settled every erased user's profile is gone from every worker
and every reader, whichever answer was given. Timing only decides which answers come, never
whether the test passes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from api.privacy import REASONS
from engine.ownership import FILE_NAME, parse
from streams.broker import free_port
from tests.conftest import (
    Worker,
    hop_headers,
    http,
    owners_via,
    send_carts,
    start_worker,
    two_workers,
    wait_until,
)
from tests.streams.test_reader_process import start_reader

pytestmark = pytest.mark.integration

USERS = [f"rebalance-erase-{i}" for i in range(24)]
T0 = 1_291_190_000_000
SPACING = 0.4  # seconds between DELETEs sent (a driver's pace, asserted on nothing)


def _local(base: str, user: str) -> int:
    """The status of the user's profile from that process's own tables (a signed hop: no
    forward)."""
    path = f"/v1/users/{user}/profile"
    return http("GET", base + path, key=None, headers=hop_headers("GET", path), timeout=10)[0]


def _delete(base: str, user: str) -> tuple[str, str, int, Any]:
    status, _, body = http("DELETE", f"{base}/v1/users/{user}", timeout=60)
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = body[:200]
    return base, user, status, parsed


def _rebalancing(worker: Worker) -> bool:
    """Whether the worker's published view says no owner is known (a rebalance under way)."""
    try:
        return None in parse((worker.data_dir / FILE_NAME).read_bytes(), 4).owners
    except (OSError, ValueError):
        return False


def _while(
    change: Callable[[], None], watch: Worker, users: list[str], targets: list[str]
) -> list[tuple[str, str, int, Any]]:
    """Start `change` (a worker joining or leaving) in a thread and, once `watch` says a
    rebalance began (or the change is done), send one DELETE per user, each to the next of
    `targets`, every SPACING s; their answers."""
    done = threading.Thread(target=change)
    done.start()
    wait_until(
        lambda: _rebalancing(watch) or not done.is_alive(),
        timeout=180,
        interval=0.05,
        what="a rebalance beginning",
    )
    futures: list[Future[tuple[str, str, int, Any]]] = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        for n, user in enumerate(users):
            futures.append(pool.submit(_delete, targets[n % len(targets)], user))
            time.sleep(SPACING)
        answers = [f.result() for f in futures]
    done.join(180)
    assert not done.is_alive()
    return answers


def _settled(workers: list[Worker]) -> bool:
    """Every worker ready, their published views alike, naming one of them as the owner of
    every partition."""
    views = set()
    for w in workers:
        if http("GET", w.base + "/readyz", key=None)[0] != 200:
            return False
        try:
            views.add(parse((w.data_dir / FILE_NAME).read_bytes(), 4).owners)
        except (OSError, ValueError):
            return False
    bases = {w.base for w in workers}
    return len(views) == 1 and all(url in bases for url in views.pop())


def test_erasures_during_a_rebalance_are_applied_or_said_to_be_queued(tmp_path: Path) -> None:
    with two_workers(tmp_path) as (broker, a, b):
        ports = [free_port(), free_port()]
        readers = [start_reader(w, port, 0) for w, port in zip((a, b), ports, strict=True)]
        reader_bases = [f"http://127.0.0.1:{p}" for p in ports]
        joined: list[Worker] = []
        try:
            for base in reader_bases:
                wait_until(
                    lambda base=base: http("GET", base + "/readyz")[0] == 200,
                    timeout=90,
                    what="reader ready",
                )
            send_carts(broker.url, {u: "i1" for u in USERS}, "rebalance-erase", T0)

            def folded(user: str) -> tuple[bool, str | None]:
                status, headers, _ = http("GET", f"{a.base}/v1/users/{user}/profile", timeout=10)
                return status == 200, headers.get("X-Persona-Routed")

            owned = owners_via(a, USERS, folded, "every user folded, seen via worker a")
            assert set(owned.values()) == {a.base, b.base}, owned
            everywhere = [a.base, b.base, *reader_bases]
            # each process holds the user's profile (owner or standby copy) before the erasures
            wait_until(
                lambda: all(_local(p, u) == 200 for p in everywhere for u in USERS),
                timeout=90,
                what="every profile on every worker and reader",
            )

            def join() -> None:
                joined.append(start_worker(broker.url, tmp_path / "c"))

            half = len(USERS) // 2
            answers = _while(join, a, USERS[:half], everywhere)
            c = joined[0]
            wait_until(
                lambda: _settled([a, b, c]),
                timeout=120,
                interval=0.5,
                what="the group settled with the third worker",
            )
            # b leaves: its partitions move; its reader stays (and stops vouching for b's
            # tables once b's view goes stale)
            everywhere = [a.base, c.base, *reader_bases]
            answers += _while(b.stop, a, USERS[half:], everywhere)
            wait_until(
                lambda: _settled([a, c]),
                timeout=120,
                interval=0.5,
                what="the group settled without worker b",
            )

            for base, user, status, body in answers:
                where = f"DELETE {user} at {base}: {status} {body!r}"
                assert status in (200, 202), where
                assert isinstance(body, dict) and body["user_id"] == user, where
                assert body["erased"] is (status == 200), where
                if status == 200:  # applied where it was answered: known to have existed
                    assert body["existed"] in (True, False), where
                    assert "reason" not in body, where
                else:  # queued: why, said
                    assert body["existed"] in (True, None), where
                    assert body["reason"] in REASONS, where

            left: list[tuple[str, str, int]] = []

            def gone() -> bool:
                found = [(p, u, _local(p, u)) for p in everywhere for u in USERS]
                left[:] = [x for x in found if x[2] != 404]
                return not left

            # whatever each answer said, the erasure is carried out everywhere once settled
            try:
                wait_until(gone, timeout=120, interval=1.0, what="every profile erased")
            except AssertionError as exc:
                raise AssertionError(
                    f"{exc}; still there: {left[:10]}; answers: {answers}"
                ) from None
        finally:
            for worker in joined:
                worker.stop()
            for reader in readers:
                reader.terminate()
                reader.wait(15)
