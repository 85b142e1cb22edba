"""The command line with PERSONA_KAFKA_* settings (issue 15 item 3): refusals before any process or
connection starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from persona.cli import main


def test_run_refuses_tls_on_the_embedded_broker(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("PERSONA_BROKER_URL", raising=False)
    monkeypatch.delenv("PERSONA_CONFIG", raising=False)
    monkeypatch.setenv("PERSONA_KAFKA_SECURITY", "ssl")
    assert main(["run", "--no-demo", "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "PERSONA_KAFKA_SECURITY=ssl needs PERSONA_BROKER_URL" in err
    assert not (tmp_path / "data").exists()  # refused before anything started


def test_a_sasl_setting_error_names_the_setting_and_hides_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    password = "a-password-nobody-may-read"
    monkeypatch.setenv("PERSONA_KAFKA_SECURITY", "sasl_ssl")
    monkeypatch.setenv("PERSONA_KAFKA_PASSWORD", password)
    events = tmp_path / "events.jsonl"
    events.write_text("")
    assert main(["replay", str(events), "--broker", "kafka://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "PERSONA_KAFKA_SASL_MECHANISM" in err and "PERSONA_KAFKA_USERNAME" in err
    assert password not in err
