"""`persona models ...` with no broker answering: aiokafka logged its own ERROR line ("Unable
connect to ...", with or without a traceback) before Persona's message; the terminal shows the
CLI's message alone, and aiokafka's lines only with PERSONA_LOG_LEVEL=debug. A subprocess: the
logging the CLI sets up is what is asserted."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streams.broker import free_port
from tests.conftest import ROOT


def _models(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "PERSONA_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-m", "persona", "models", *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("command", [["list"], ["activate", "recs", "recs-20260101T0000-00000000"]])
def test_a_broker_that_does_not_answer_is_said_once_by_persona(command: list[str]) -> None:
    broker = f"kafka://127.0.0.1:{free_port()}"  # nothing listens there
    result = _models(*command, "--broker", broker)
    assert result.returncode == 1, result.stderr
    assert "persona: broker error" in result.stderr, result.stderr
    assert "aiokafka" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # the CLI's one line


def test_debug_logging_still_shows_the_kafka_clients_lines() -> None:
    broker = f"kafka://127.0.0.1:{free_port()}"
    result = _models("list", "--broker", broker, env={"PERSONA_LOG_LEVEL": "debug"})
    assert result.returncode == 1, result.stderr
    assert "aiokafka" in result.stderr and "persona: broker error" in result.stderr
