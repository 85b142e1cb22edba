"""The model registry end to end: train with the CLI, activate through one worker's API, every
worker serves the new version within the contract's 15 s, a restarted worker comes up with it,
and a CLI rollback switches every worker back."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.events import encode
from streams.broker import EmbeddedBroker
from tests.conftest import ROOT, T0, Worker, http, start_worker, wait_until
from tests.models.synthetic import basket_events

pytestmark = pytest.mark.integration
USER = "swap-user"
SWITCH = 15.0  # seconds: the contract's bound for every worker to answer with a new version


def persona(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "persona", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def served(worker: Worker) -> dict[str, Any]:
    status, headers, body = http("GET", worker.base + f"/v1/users/{USER}/profile")
    if status != 200:
        return {}
    models = json.loads(body)["models"]
    assert headers["X-Persona-Model"] == ",".join(f"{k}={v}" for k, v in sorted(models.items()))
    return dict(models)


def listing(worker: Worker) -> dict[str, bool]:
    status, _, body = http("GET", worker.base + "/v1/models")
    assert status == 200, body
    return {m["version"]: m["active"] for m in json.loads(body)["models"]}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of its own: two more workers on the session broker would join the session
    worker's consumer group and take partitions from under the other tests."""
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as own:
        yield own


def test_activate_switches_every_worker_and_rollback_restores(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(encode(e, "json") for e in basket_events()) + b"\n")
    a = start_worker(broker.url, tmp_path / "a")
    b = start_worker(broker.url, tmp_path / "b")
    workers = [a, b]
    try:
        event = {"event_id": "swap-1", "type": "product_view", "user_id": USER, "item_id": "a"}
        event["ts"] = T0  # the shared broker's event-time clock: other tests' events follow
        assert http("POST", a.base + "/v1/events", [event])[0] == 202
        for w in workers:
            wait_until(lambda w=w: served(w), 60, what="the user's profile")
        default = served(a)["recs"]
        trained = persona(
            "models", "train", "recs", "--events", str(events), "--broker", broker.url
        )
        assert trained.returncode == 0, trained.stderr
        version = re.search(r"registered (recs-\S+)", trained.stdout)
        assert version, trained.stdout
        new = version.group(1)
        for w in workers:  # registered, visible everywhere, not active
            assert wait_until(lambda w=w: listing(w).get(new) is False, SWITCH, what="listed")

        status, _, body = http("POST", a.base + "/v1/models/recs/activate", {"version": new})
        assert status == 200, body
        assert json.loads(body)["version"] == new
        for w in workers:
            wait_until(lambda w=w: served(w).get("recs") == new, SWITCH, what=f"{w.base} on {new}")
            assert listing(w)[new] is True

        b.stop()  # a restarted worker is ready only with the active version loaded
        workers[1] = b = start_worker(broker.url, tmp_path / "b")
        assert wait_until(lambda: served(b), 60, what="profile on the restarted worker") == {
            **served(a)
        }
        assert served(b)["recs"] == new

        status, _, body = http("POST", a.base + "/v1/models/recs/activate", {"version": "recs-x"})
        assert status == 404, body
    finally:
        rolled = persona("models", "rollback", "recs", "--broker", broker.url)
        for w in workers:
            if rolled.returncode == 0 and w.proc.poll() is None:
                wait_until(lambda w=w: served(w).get("recs") == default, SWITCH, what="rollback")
            w.stop()
    assert rolled.returncode == 0, rolled.stderr
