"""The pages show the whole engine from any process (issue 18 item 7): `persona run` with a reader
on its embedded broker; events posted to the public port (the reader) are folded by the worker,
and the reader's dashboard figures carry the worker's event counts (the stats board,
streams/stats_board.py), the worker's carry the reader's API requests, and the reader's user
picker lists the users the worker folded."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.broker import EmbeddedBroker, free_port
from tests.conftest import Worker, http, start_worker, wait_until
from tests.persona.runs import Run, persona_run

pytestmark = pytest.mark.integration
KEY = "dashboard-kkkkkkkkkkkkkkkkkkkkkkkk"
KEYS = f"all:{KEY}:content:read,events:write"
USERS = ("dash-ann", "dash-bob", "dash-cy")


WORKER_PORT = free_port()  # PERSONA_WORKER_PORT: the worker's private port, fixed


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    env = {"PERSONA_WORKER_PORT": str(WORKER_PORT)}
    with persona_run(tmp_path_factory.mktemp("dashboard"), 1, KEYS, env) as started:
        yield started


def test_the_worker_behind_the_readers_listens_on_the_port_set(run: Run) -> None:
    """Its /metrics has the stream counters (the readers' have none): a free port chosen at each
    start could not be scraped; PERSONA_WORKER_PORT fixes it."""
    assert run.worker == f"http://127.0.0.1:{WORKER_PORT}"
    status, _, body = http("GET", run.worker + "/metrics", key=None)
    assert status == 200 and b"persona_events_processed_total" in body


def stats(url: str) -> dict[str, Any]:
    status, _, body = http("GET", url + "/v1/stats", key=KEY)
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def events() -> list[dict[str, Any]]:
    now = int(time.time() * 1000) - 60_000
    return [
        {"event_id": f"{user}-{n}", "type": "product_view", "user_id": user, "item_id": f"I{n}",
         "ts": now + n}
        for user in USERS for n in range(4)
    ]  # fmt: skip


def test_the_readers_dashboard_shows_the_workers_events_and_the_worker_the_readers_requests(
    run: Run,
) -> None:
    reader_own = stats(run.base)["processes"]
    assert [(p["kind"], p["this"]) for p in reader_own][:1] == [("reader", True)]
    status, _, body = http("POST", run.base + "/v1/events", events(), key=KEY)
    assert status == 202 and json.loads(body)["accepted"] == 12, body
    # the reader itself folds nothing: what it shows of the stream is the worker's
    seen = wait_until(
        lambda: (s := stats(run.base))["totals"]["events"] >= 12 and s,
        60,
        what="the worker's folded events on the reader's dashboard",
    )
    kinds = {p["kind"]: p for p in seen["processes"]}
    assert set(kinds) == {"reader", "worker"} and kinds["reader"]["this"]
    assert kinds["worker"]["events"] >= 12 and kinds["worker"]["age_s"] < 60
    assert sum(seen["totals"]["consumed"].values()) >= 12
    for _ in range(5):  # requests the reader answers, and only it
        http("GET", run.base + f"/v1/users/{USERS[0]}/blocks/recommendations", key=KEY)
    worker = wait_until(
        lambda: (s := stats(run.worker))["totals"]["blocks"] >= 5 and s,
        60,
        what="the reader's blocks on the worker's dashboard",
    )
    assert {p["kind"] for p in worker["processes"]} == {"reader", "worker"}
    assert worker["totals"]["events"] >= 12 and worker["totals"]["cache_hit_rate"] is not None


def test_the_readers_user_picker_lists_the_folded_users(run: Run) -> None:
    http("POST", run.base + "/v1/events", events(), key=KEY)

    def listed() -> set[str]:
        status, _, body = http("GET", run.base + "/v1/users?limit=50", key=KEY)
        return {u["user_id"] for u in json.loads(body)["users"]} if status == 200 else set()

    assert wait_until(lambda: set(USERS) <= listed(), 60, what="the users in the reader's picker")


def test_two_workers_on_one_broker_each_show_both(tmp_path: Path) -> None:
    """Several workers against one cluster (here the embedded broker as the cluster): each folds
    its partitions' share, and each one's dashboard adds up both."""
    users = [f"split-{n}" for n in range(24)]
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        a = start_worker(broker.url, tmp_path / "a")
        b = start_worker(broker.url, tmp_path / "b")
        try:
            both = (a, b)
            wait_until(
                lambda: all(http("GET", w.base + "/readyz", key=None)[0] == 200 for w in both),
                120,
                what="both workers ready after the rebalance",
            )
            now = int(time.time() * 1000) - 60_000
            batch = [
                {"event_id": f"{u}-0", "type": "product_view", "user_id": u, "item_id": "I1",
                 "ts": now}
                for u in users
            ]  # fmt: skip
            status, _, body = http("POST", a.base + "/v1/events", batch)
            assert status == 202 and json.loads(body)["accepted"] == len(users), body

            def whole(w: Worker) -> dict[str, Any] | None:
                _, _, raw = http("GET", w.base + "/v1/stats")
                s: dict[str, Any] = json.loads(raw or b"{}")
                workers = [p for p in s.get("processes", []) if p["kind"] == "worker"]
                shares = sum(p["events"] for p in workers)
                done = s["totals"]["events"] == shares == len(users) and len(workers) == 2
                return s if done else None

            own = []  # what each page's own process folded
            for w in both:
                seen = wait_until(lambda w=w: whole(w), 90, what=f"both workers on {w.base}")
                own.append(next(p["events"] for p in seen["processes"] if p["this"]))
            # the partitions are split (or, if one worker folded all before the rebalance, the
            # other's page still shows every event): some page shows events it did not fold
            assert min(own) < len(users)
        finally:
            a.stop()
            b.stop()


def test_the_readers_logs_are_json_lines(run: Run) -> None:
    """operations.md: `persona.*` logs are JSON lines. A reader's were plain text (`INFO
    persona.access: GET ...`): it never set up the JSON handler the worker sets up."""
    path = f"/v1/users/{USERS[1]}/blocks/no-such-block"  # an error: logged unsampled
    assert http("GET", run.base + path, key=KEY)[0] == 404

    def access() -> list[dict[str, Any]]:
        found = []
        for line in run.log.read_text(errors="replace").splitlines():
            if "persona.access" in line and path in line:
                assert line.startswith("{"), line  # a plain-text access line
                found.append(json.loads(line))
        return found

    (line, *_) = wait_until(access, 30, what="the reader's access log line")
    assert line["logger"] == "persona.access" and line["request_id"]
