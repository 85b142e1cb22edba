"""Scheduled retraining end to end (issue 17 item 5): a worker with PERSONA_RETRAIN_HOURS and
PERSONA_RETRAIN_PROMOTE on a real embedded broker trains from the events it has seen, registers
the new recommender with its evaluation beside the active one's, promotes it because it beats the
shipped model on the held-out window, and every worker answers with it; the next run's version,
no better than the one it would replace, stays registered and inactive. An erased user's events
stay out of training."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.broker import EmbeddedBroker
from tests.conftest import Worker, http, start_worker, wait_until
from tests.models.test_retrain import cluster_events

# two worker starts and two runs of a child that imports scikit-learn, on a shared machine
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
SCHEDULE = {"PERSONA_RETRAIN_HOURS": "0.003", "PERSONA_RETRAIN_PROMOTE": "true"}  # 10.8 s
RUNS = 300.0  # seconds: a run is a child process that imports scikit-learn on a shared machine


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of its own: the retrained versions would otherwise reach the session worker."""
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as own:
        yield own


def retrained(worker: Worker) -> list[dict[str, Any]]:
    """The retrained recommenders this worker lists, oldest first."""
    status, _, body = http("GET", worker.base + "/v1/models")
    if status != 200:
        return []
    rows = json.loads(body)["models"]
    return [m for m in rows if m["name"] == "recs" and "retrain" in m["metrics"]]


def served(worker: Worker, user: str) -> str | None:
    status, _, body = http("GET", worker.base + f"/v1/users/{user}/profile")
    return json.loads(body)["models"]["recs"] if status == 200 else None


def active_recs(worker: Worker) -> str:
    status, _, body = http("GET", worker.base + "/v1/models")
    assert status == 200, body
    return next(
        m["version"] for m in json.loads(body)["models"] if m["name"] == "recs" and m["active"]
    )


def runs(worker: Worker) -> dict[str, float]:
    _, _, body = http("GET", worker.base + "/metrics", key=None)
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("persona_retrain_runs_total{"):
            out[line.split('"')[1]] = float(line.split()[-1])
    return out


def test_a_scheduled_retrain_registers_evaluates_and_promotes_a_better_recommender(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    b = start_worker(broker.url, tmp_path / "b")  # no schedule: it follows the registry
    workers = [b]
    try:
        shipped = active_recs(b)
        start = int(time.time() * 1000) - 86_400_000
        events = [e.to_dict() for e in cluster_events(start=start)]
        assert http("POST", b.base + "/v1/events", events)[0] == 202
        wait_until(lambda: served(b, "c59"), 60, what="the events folded")
        erased = http("DELETE", b.base + "/v1/users/c1")  # its events must not train
        assert erased[0] in (200, 202), erased
        # started after the events are in: its first run (10.8 s on) reads all of them
        a = start_worker(broker.url, tmp_path / "a", SCHEDULE)
        workers.append(a)

        promoted = wait_until(lambda: [m for m in retrained(b) if m["active"]], RUNS, 1.0)[0]
        mark = promoted["metrics"]["retrain"]
        assert mark["events"] == len(events) - 16  # c1's 16 events left out
        assert mark["test_users"] == 59  # everyone else: 8 distinct items, 5 held out
        assert mark["active"]["version"] == shipped  # evaluated against what it replaced
        assert mark["new"]["hr@10"] > mark["active"]["hr@10"] == 0.0
        version = promoted["version"]
        for worker in (a, b):
            wait_until(lambda w=worker: served(w, "c0") == version, 60, what="the new version")
        # written once the activation is sent: the workers may fold it first
        audit = wait_until(
            lambda: "model_promoted" in (text := (a.data_dir / "audit.log").read_text()) and text,
            30,
            what="the promotion audited",
        )
        assert '"action": "model_promoted"' in audit and version in audit

        # the next run's version (a run within the same minute makes the same version id and
        # registers nothing) ties with the active one on the same window: not promoted
        later = wait_until(lambda: retrained(b)[1:], RUNS, 1.0, what="a second run")[-1]
        assert later["active"] is False
        assert later["metrics"]["retrain"]["active"]["version"] == version
        assert served(b, "c0") == version
        counted = wait_until(lambda: runs(a).get("published", 0) >= 1 and runs(a), 30)
        assert counted["promoted"] == 1 and counted["failed"] == 0
    finally:
        for worker in workers:
            worker.stop()
    log = a.log.read_text()
    assert "retrain promoted" in log and "churn skipped (needs over 180 days" in log
