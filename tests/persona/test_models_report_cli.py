"""`persona models report NAME --share F`: the CLI reads no registry, so it knows no share and
printed `sample_ratio: null`; given the experiment's share of variant B it checks the split as the
HTTP report does (models/experiments.py `report`, `sample_ratio`). A share outside (0, 1) is
refused by argparse before any broker is asked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.signing import ClusterKey
from models.experiments import Experiment, sample_ratio
from models.registry_log import experiment_record
from persona.cli import main
from streams import registry
from streams.broker import EmbeddedBroker
from streams.signed import RecordSigner, cli_signer
from tests.conftest import CLUSTER_SECRET

T0 = 1_765_000_000_000


def _exposures() -> list[dict[str, Any]]:
    arms = ["A"] * 70 + ["B"] * 30  # a split of 70/30 in an experiment whose share is 0.5
    return [
        {"experiment": "t1", "variant": v, "user_id": f"u{i}", "ts": T0 + i, "items": ["lamp"]}
        for i, v in enumerate(arms)
    ]


@pytest.fixture
def topics(monkeypatch: pytest.MonkeyPatch) -> None:
    async def exposed(broker_url: Any, name: str) -> tuple[list[dict[str, Any]], list[Any]]:
        return _exposures(), []

    monkeypatch.setattr(registry, "_exposed", exposed)


def _report(capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    assert main(["models", "report", "t1", "--broker", "kafka://127.0.0.1:9", *extra]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


@pytest.mark.usefixtures("topics")
def test_the_share_given_checks_the_sample_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    result = _report(capsys, "--share", "0.5")
    expected = sample_ratio({"A": 70, "B": 30}, {"A": 0.5, "B": 0.5})
    assert result["sample_ratio"] == expected and expected["mismatch"] is True
    assert _report(capsys, "--share", "0.3")["sample_ratio"]["mismatch"] is False


@pytest.mark.usefixtures("topics")
def test_without_a_share_there_is_no_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert _report(capsys)["sample_ratio"] is None


@pytest.mark.parametrize("share", ["0", "1", "1.5", "-0.2", "nan", "inf", "half"])
def test_a_share_outside_zero_to_one_is_refused_before_any_broker(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], share: str
) -> None:
    async def exposed(broker_url: Any, name: str) -> Any:
        raise AssertionError("the broker was asked")

    monkeypatch.setattr(registry, "_exposed", exposed)
    with pytest.raises(SystemExit) as exit:
        main(["models", "report", "t1", "--broker", "kafka://127.0.0.1:9", "--share", share])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "--share" in err and "between 0 and 1" in err and "Traceback" not in err


def test_the_help_names_the_share(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["models", "report", "--help"])
    assert "--share" in capsys.readouterr().out


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker of its own whose registry has seen two experiments (started, then stopped; no
    exposure logged): the URL. Its own, so no worker of the session runs these experiments."""
    log: Path = tmp_path_factory.mktemp("report-broker") / "broker.log"
    with EmbeddedBroker(log_file=log) as broker:
        signer = RecordSigner(ClusterKey(CLUSTER_SECRET), cli_signer())
        records = [
            experiment_record(Experiment(name, "recs", "recs-a", "recs-b"))
            for name in ("spring-sale", "homepage-v2")
        ]
        records.append(experiment_record(None))
        asyncio.run(registry.write_records(broker.url, records, signer))
        yield broker.url


@pytest.mark.integration
def test_a_mistyped_name_fails_naming_the_experiments_there_are(
    started: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo printed a report with every count 0 and exited 0 (a warning on stderr aside),
    as for an experiment nobody saw."""
    monkeypatch.setenv("PERSONA_CLUSTER_SECRET", CLUSTER_SECRET)
    assert main(["models", "report", "spring-sal", "--broker", started]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert "'spring-sal'" in err and "did you mean 'spring-sale'?" in err, err
    assert "'homepage-v2'" in err, err
    # started and stopped before anyone was exposed: a report of zeros, not an error
    assert main(["models", "report", "spring-sale", "--broker", started]) == 0
    assert json.loads(capsys.readouterr().out)["experiment"] == "spring-sale"
