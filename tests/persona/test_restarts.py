"""The restart policy of `persona run` (back-off, new streaks, giving up), driven by a manual clock,
and the restart figures it leaves for `/metrics`."""

from __future__ import annotations

import signal
from pathlib import Path

from aiohttp import web
from prometheus_client import generate_latest

from api.app import create_app
from api.auth import KeyRing
from api.content import ContentService
from api.observability import TELEMETRY, follow_restarts
from api.testing import MemoryState
from engine.blocks import BlockPolicy, Renderer
from engine.clock import ManualClock
from models.registry import ModelSet
from persona.children import RestartStatus
from persona.restarts import GiveUp, Restart, RestartPolicy, describe_exit


def _policy(max_restarts: int = 5) -> tuple[ManualClock, RestartPolicy]:
    clock = ManualClock()
    return clock, RestartPolicy(clock, max_restarts=max_restarts)


def _fail_quickly(clock: ManualClock, policy: RestartPolicy, up_ms: int = 1_000) -> object:
    policy.started()
    clock.advance(up_ms)
    return policy.failed("exited with code 1")


def test_delays_double_from_half_a_second_up_to_thirty() -> None:
    clock, policy = _policy(max_restarts=10)
    decisions = [_fail_quickly(clock, policy) for _ in range(9)]
    assert [d.delay for d in decisions if isinstance(d, Restart)] == [
        0.5, 1, 2, 4, 8, 16, 30, 30, 30,
    ]  # fmt: skip
    assert [d.attempt for d in decisions if isinstance(d, Restart)] == list(range(1, 10))


def test_gives_up_after_max_restarts_failures_in_a_row_with_every_exit() -> None:
    clock, policy = _policy(max_restarts=3)
    for _ in range(3):
        assert isinstance(_fail_quickly(clock, policy), Restart)
    policy.started()
    clock.advance(10)
    decision = policy.failed("was killed by SIGKILL")
    assert decision == GiveUp(("exited with code 1",) * 3 + ("was killed by SIGKILL",))


def test_a_child_that_stayed_up_a_minute_starts_a_new_streak() -> None:
    clock, policy = _policy(max_restarts=2)
    assert _fail_quickly(clock, policy) == Restart(1, 0.5)
    assert _fail_quickly(clock, policy) == Restart(2, 1.0)
    assert _fail_quickly(clock, policy, up_ms=60_000) == Restart(1, 0.5)
    assert _fail_quickly(clock, policy, up_ms=59_999) == Restart(2, 1.0)
    assert isinstance(_fail_quickly(clock, policy), GiveUp)


def test_the_time_spent_backing_off_does_not_count_as_up_time() -> None:
    clock, policy = _policy(max_restarts=1)
    assert _fail_quickly(clock, policy) == Restart(1, 0.5)
    clock.advance(120_000)  # a long wait between the death and the next start
    assert isinstance(_fail_quickly(clock, policy), GiveUp)


def test_zero_restarts_gives_up_on_the_first_death() -> None:
    clock, policy = _policy(max_restarts=0)
    assert _fail_quickly(clock, policy) == GiveUp(("exited with code 1",))


def test_exits_are_described_with_their_code_or_signal() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"
    assert describe_exit(-200) == "was killed by signal 200"


def _scrape(app: web.Application) -> str:
    return generate_latest(app[TELEMETRY].registry).decode()


def _app_following(data_dir: Path) -> web.Application:
    content = ContentService(MemoryState(), ModelSet.default(), Renderer(), BlockPolicy())
    app = create_app(content, KeyRing.from_settings(None, None))
    follow_restarts(app, data_dir)
    return app


def test_restarts_recorded_by_the_supervisor_appear_on_metrics(tmp_path: Path) -> None:
    app = _app_following(tmp_path)
    assert "persona_process_restarts_total" not in _scrape(app)  # not under `persona run`
    status = RestartStatus(tmp_path / "restarts.json", ["broker", "worker", "reader"])
    assert 'persona_process_restarts_total{process="worker"} 0.0' in _scrape(app)
    status.record("worker", -signal.SIGKILL, restarted=True)
    status.record("reader", 1, restarted=True)
    status.record("reader", 1, restarted=False)  # the death that gave up: no restart
    text = _scrape(app)
    assert 'persona_process_restarts_total{process="worker"} 1.0' in text
    assert 'persona_process_restarts_total{process="reader"} 1.0' in text
    assert 'persona_process_restarts_total{process="broker"} 0.0' in text
    assert 'persona_process_last_exit_code{process="worker"} -9.0' in text
    status.remove()
    assert "persona_process_restarts_total" not in _scrape(app)


def test_a_damaged_status_file_never_breaks_metrics(tmp_path: Path) -> None:
    app = _app_following(tmp_path)
    path = tmp_path / "restarts.json"
    for damaged in (b"{", b"[1]", b'{"restarts": {"worker": "x", "evil\\n": 3}}', b"\xff"):
        path.write_bytes(damaged)
        text = _scrape(app)
        assert "persona_ready" in text and "evil" not in text
        assert 'process="worker"' not in text
