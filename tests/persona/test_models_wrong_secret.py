"""`persona models` with another PERSONA_CLUSTER_SECRET than the one the registry's records were
signed with (a data scientist's wrong secret file or environment). Before, every record was
skipped quietly (one log line each): `list` printed the shipped models alone as active and
exited 0, `activate` said the version was not in the registry, and `publish` wrote records no
worker would ever accept and said "registered". Now a registry whose records all fail the
signature check is refused with a message naming the secret (exit 2), and nothing is written.
On an embedded broker of the test's own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.bundle import save_model
from models.recs import fit_recommender
from persona.cli import main
from streams.broker import EmbeddedBroker
from tests.models.synthetic import basket_events
from tests.persona.conftest import models_records, publish_recs

pytestmark = pytest.mark.integration

OTHER_SECRET = "another-secret-than-the-workers-0123456789"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_file=log) as own:
        yield own


@pytest.fixture(scope="module")
def published(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The version of a recs model published under the workers' secret."""
    return publish_recs(broker, tmp_path_factory.mktemp("recs") / "recs", k=5)


def _wrong_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSONA_CLUSTER_SECRET", OTHER_SECRET)
    monkeypatch.delenv("PERSONA_CLUSTER_SECRET_FILE", raising=False)


@pytest.fixture
def wrong_secret(published: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """`published` (made first, under the workers' secret), then the CLI's secret another."""
    _wrong_secret(monkeypatch)
    return published


def _said_secret(err: str) -> None:
    assert "PERSONA_CLUSTER_SECRET" in err and "signature" in err, err
    assert "Traceback" not in err


def test_list_with_the_wrong_secret_is_refused_not_a_registry_of_shipped_models(
    broker: EmbeddedBroker,
    published: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["models", "list", "--broker", broker.url]) == 0  # the right secret
    assert published in capsys.readouterr().out
    _wrong_secret(monkeypatch)
    assert main(["models", "list", "--broker", broker.url]) == 2
    captured = capsys.readouterr()
    _said_secret(captured.err)
    assert "active" not in captured.out  # no table of what this secret happens to verify


def test_activate_with_the_wrong_secret_names_the_secret_not_a_missing_version(
    broker: EmbeddedBroker, wrong_secret: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "activate", "recs", wrong_secret, "--broker", broker.url]) == 2
    err = capsys.readouterr().err
    _said_secret(err)
    assert "no recs version" not in err


def test_publish_with_the_wrong_secret_writes_nothing(
    broker: EmbeddedBroker, wrong_secret: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = save_model(fit_recommender(basket_events(), k=9), tmp_path / "recs")
    before = models_records(broker)
    assert main(["models", "publish", str(folder), "--broker", broker.url]) == 2
    captured = capsys.readouterr()
    _said_secret(captured.err)
    assert "registered" not in captured.out
    assert models_records(broker) == before


def test_the_wrong_secret_logs_one_summary_not_a_line_per_record(
    broker: EmbeddedBroker,
    wrong_secret: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each refused record logged an ERROR line (up to 10,000 of them) before the one-line
    refusal: the refusal counts them instead."""
    records = models_records(broker)
    assert records > 1  # a version's chunks and its manifest
    with caplog.at_level("INFO"):
        assert main(["models", "list", "--broker", broker.url]) == 2
    err = capsys.readouterr().err
    _said_secret(err)
    assert f"none of the {records:,} records" in err, err
    # one record written without the secret on a registry never published to looks the same:
    # the message says so rather than only blaming the secret
    assert "forged by someone who can write to the topic" in err, err
    per_record = [r for r in caplog.records if "refused a models record" in r.getMessage()]
    assert per_record == []


def test_without_a_secret_set_the_embedded_defaults_file_in_the_data_dir_is_used(
    broker: EmbeddedBroker,
    published: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`persona run` keeps the embedded default's secret in <data dir>/cluster-secret: beside it,
    `persona models` with no secret set reads that file (and says so) rather than refusing."""
    secret = os.environ["PERSONA_CLUSTER_SECRET"]
    monkeypatch.delenv("PERSONA_CLUSTER_SECRET")
    monkeypatch.delenv("PERSONA_CLUSTER_SECRET_FILE", raising=False)
    monkeypatch.setenv("PERSONA_DATA_DIR", str(tmp_path / "data"))
    assert main(["models", "list", "--broker", broker.url]) == 2  # no file there: refused
    assert "PERSONA_CLUSTER_SECRET" in capsys.readouterr().err
    (tmp_path / "data").mkdir()
    kept = tmp_path / "data" / "cluster-secret"
    kept.write_text(secret + "\n")
    kept.chmod(0o600)
    assert main(["models", "list", "--broker", broker.url]) == 0
    captured = capsys.readouterr()
    assert published in captured.out
    assert str(kept) in captured.err and secret not in captured.err
