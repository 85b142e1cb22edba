"""`persona models experiment` against a registry: a start whose candidate is the active
version (an A/B test of a model against itself, every difference noise) and a stop naming an
experiment that is not the one running (it stopped whichever ran) are refused with exit status
2, a message and nothing written. On an embedded broker of the test's own (an experiment on the
session broker would change what the session worker serves)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.signing import ClusterKey
from persona.cli import main
from streams.broker import EmbeddedBroker
from streams.registry import read_registry
from tests.persona.conftest import cli_signer, models_records, publish_recs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_file=log) as own:
        yield own


def _key() -> ClusterKey:
    return cli_signer().key


def _running(broker: EmbeddedBroker) -> str | None:
    experiment = asyncio.run(read_registry(broker.url, _key())).experiment
    return experiment.name if experiment else None


def _candidate(broker: EmbeddedBroker, tmp_path: Path, k: int = 6) -> str:
    return publish_recs(broker, tmp_path / f"k{k}", k)


def _experiment(broker: EmbeddedBroker, *argv: str) -> int:
    return main(["models", "experiment", *argv, "--broker", broker.url])


def test_an_experiment_of_the_active_version_against_itself_is_refused(
    broker: EmbeddedBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    active = asyncio.run(read_registry(broker.url, _key())).active("recs")
    assert _experiment(broker, "start", "self", "--model", "recs", "--candidate", active) == 2
    err = capsys.readouterr().err
    assert f"{active} is the active recs version" in err and "Traceback" not in err
    assert _running(broker) is None  # no experiment record was written


def test_stop_with_the_name_of_another_experiment_stops_nothing(
    broker: EmbeddedBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate = _candidate(broker, tmp_path)
    assert _experiment(broker, "start", "ab-1", "--model", "recs", "--candidate", candidate) == 0
    assert _running(broker) == "ab-1"
    capsys.readouterr()

    assert _experiment(broker, "stop", "ab-typo") == 2
    err = capsys.readouterr().err
    assert "'ab-typo' is not running" in err and "'ab-1'" in err and "Traceback" not in err
    assert _running(broker) == "ab-1"

    assert _experiment(broker, "stop", "ab-1") == 0  # its own name stops it
    assert _running(broker) is None
    assert _experiment(broker, "start", "ab-2", "--model", "recs", "--candidate", candidate) == 0
    assert _experiment(broker, "stop") == 0  # no name: whichever runs, as documented
    assert _running(broker) is None


def test_stop_says_which_one_stopped_and_when_none_runs_writes_nothing(
    broker: EmbeddedBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`experiment stop` with no experiment running printed `experiment: stopped` (as if one
    had) and wrote a stop record; a stop of a running one did not say which."""
    candidate = _candidate(broker, tmp_path, k=8)  # another version than the test above's
    assert _experiment(broker, "start", "ab-3", "--model", "recs", "--candidate", candidate) == 0
    capsys.readouterr()
    assert _experiment(broker, "stop") == 0
    assert "stopped 'ab-3'" in capsys.readouterr().out
    assert _running(broker) is None

    before = models_records(broker)
    assert _experiment(broker, "stop") == 0  # nothing to stop is no error (a script may repeat)
    out = capsys.readouterr().out
    assert "no experiment is running" in out and "stopped" not in out
    assert models_records(broker) == before  # no record written
