"""Erase, then read from every process (issue 15 item 2): under `persona run` with two readers on
the public port and the worker on its private one, a user's profile, blocks, explanation and
export are personal everywhere before `DELETE /v1/users/{id}`, and afterwards every process
answers 404 for the profile, the explanation and the export and the fallback for every block.
(Erasure with a backlog of the user's events queued: tests/streams/test_pipeline.py.)"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import http, wait_until
from tests.persona.test_run import Running, _children, _kind, _running

pytestmark = pytest.mark.integration

KEY = "erase-everywhere-kkkkkkkkkkkkkk"
SCOPES = "content:read,events:write,privacy:admin"
USER = "erase-me"
TRIES = 24  # requests per check on the public port: with two readers, both answer some
BLOCKS = ("recommendations", "cart_reminder")


def _bases(run: Running) -> list[str]:
    """The worker once and the public port (the readers) TRIES times."""
    return [run.worker] + [run.base] * TRIES


def _statuses(run: Running, path: str) -> set[int]:
    return {http("GET", base + path, key=KEY, timeout=30)[0] for base in _bases(run)}


def _fallbacks(run: Running, block: str, fmt: str) -> set[str]:
    """The X-Persona-Fallback header of every answer (`-` when absent)."""
    path = f"/v1/users/{USER}/blocks/{block}?format={fmt}"
    found = set()
    for base in _bases(run):
        status, headers, _ = http("GET", base + path, key=KEY, timeout=30)
        assert status == 200, (base, path, status)
        found.add(headers.get("X-Persona-Fallback", "-"))
    return found


def _shop(run: Running) -> None:
    now = int(time.time() * 1000) - 60_000
    events = [
        {"event_id": f"{USER}-{n}", "type": kind, "user_id": USER, "ts": now + n, "item_id": item}
        for n, (kind, item) in enumerate(
            [("product_view", "85123A"), ("product_view", "22423"), ("add_to_cart", "85123A")]
        )
    ]
    status, _, body = http("POST", run.base + "/v1/events", events, key=KEY)
    assert status == 202 and json.loads(body)["accepted"] == 3, body


def test_after_an_erasure_every_process_answers_as_for_an_unknown_user(tmp_path: Path) -> None:
    env = {"PERSONA_API_KEYS": f"admin:{KEY}:{SCOPES}", "PERSONA_READERS": "2"}
    with _running(tmp_path / "data", tmp_path / "run.log", env, flag="--demo") as run:
        log = tmp_path / "run.log"  # persona run starts the second reader after the first
        wait_until(lambda: "reader 1 serving on" in log.read_text(), 120, 1, "reader 1")
        kinds = sorted(_kind(pid) for pid in _children(run.proc.pid))
        assert kinds == ["broker", "reader", "reader", "worker"]
        _shop(run)
        profile = f"/v1/users/{USER}/profile"
        wait_until(lambda: _statuses(run, profile) == {200}, 120, 1, "the profile everywhere")
        wait_until(
            lambda: _fallbacks(run, "cart_reminder", "html") == {"-"},
            120,
            1,
            "the personal cart reminder everywhere (the demo catalog loaded)",
        )
        status, _, body = http("GET", f"{run.base}/v1/users/{USER}/export", key=KEY, timeout=30)
        assert status == 200 and json.loads(body)["stored"]["cart"] == {"85123A": 1}

        status, _, body = http("DELETE", f"{run.base}/v1/users/{USER}", key=KEY, timeout=30)
        assert status in (200, 202) and json.loads(body)["request_id"], body
        wait_until(lambda: _statuses(run, profile) == {404}, 60, 1, "404 everywhere")
        for path in (f"/v1/users/{USER}/explain", f"/v1/users/{USER}/export"):
            assert _statuses(run, path) == {404}, path
        for block in BLOCKS:
            for fmt in ("html", "json"):
                assert _fallbacks(run, block, fmt) == {"1"}, (block, fmt)
        for base in (run.worker, run.base):
            _, _, body = http("GET", base + "/v1/users?limit=200", key=KEY)
            assert USER not in [u["user_id"] for u in json.loads(body)["users"]]
