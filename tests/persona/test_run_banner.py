"""What `persona run --demo` prints once ready: every line pasteable from where it was started.

A new user reads the README's commands (`persona models list`, `persona catalog import`) after
`make run`, which installs `persona` into `.venv/bin` (not on PATH) and starts the embedded broker
on a new free port at every start: the banner names both, so its lines work as pasted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engine.settings import load_settings
from persona.supervisor import print_examples

BASE = "http://127.0.0.1:8080"
BROKER = "kafka://127.0.0.1:43210"


def _banner(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv0: str,
    data_dir: Path,
    env: dict[str, str] | None = None,
) -> list[str]:
    monkeypatch.setattr(sys, "argv", [argv0, "run", "--demo"])
    settings = load_settings({"data_dir": str(data_dir)}, env or {})
    print_examples(settings, BASE, data_dir, "local:secret:content:read", BROKER)
    return capsys.readouterr().out.splitlines()


def test_banner_names_the_embedded_broker_and_the_command_as_started(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `make run` runs `.venv/bin/persona run --demo` in the checkout, with ./data
    lines = _banner(capsys, monkeypatch, ".venv/bin/persona", Path("data"))
    assert "  .venv/bin/persona models list --broker kafka://127.0.0.1:43210" in lines, lines
    imports = [line for line in lines if " catalog import " in line]
    assert imports and imports[0].strip().startswith(".venv/bin/persona catalog import "), lines
    assert imports[0].endswith(f"--broker {BROKER}"), lines
    # the demo catalog the line imports is where it says, from where `persona run` started
    assert Path(imports[0].split()[3]).is_file(), imports
    # still the last line the tests and users wait for
    assert [line for line in lines if line][-1] == "Stop with Ctrl-C."


def test_banner_names_a_data_dir_other_than_the_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the models commands find `<data dir>/cluster-secret` by PERSONA_DATA_DIR (default ./data)
    lines = _banner(capsys, monkeypatch, "/opt/persona/bin/persona", tmp_path)
    wanted = f"  PERSONA_DATA_DIR={tmp_path} /opt/persona/bin/persona models list --broker {BROKER}"
    assert wanted in lines, lines


def test_banner_run_as_a_module_says_persona(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = _banner(capsys, monkeypatch, "/x/persona/__main__.py", Path("data"))
    assert f"  persona models list --broker {BROKER}" in lines, lines


def test_banner_on_a_configured_broker_names_no_embedded_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "PERSONA_BROKER_URL": "kafka://kafka-1:9092",
        "PERSONA_CLUSTER_SECRET": "s" * 40,
    }
    lines = _banner(capsys, monkeypatch, ".venv/bin/persona", Path("data"), env)
    listed = [line for line in lines if "models list" in line]
    assert listed == ["  .venv/bin/persona models list"], lines


def test_banner_says_the_winback_example_may_be_the_fallback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the demo's busiest customer bought lately: a low churn risk, so win-back shows best-sellers
    lines = _banner(capsys, monkeypatch, ".venv/bin/persona", Path("data"))
    winback = [line for line in lines if "/blocks/winback" in line]
    assert winback and "low_churn_risk" in winback[0], lines


def test_banner_says_persona_when_the_command_is_on_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # an activated venv: `persona` is on PATH, so the banner need not spell out where it lives
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "persona"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    lines = _banner(capsys, monkeypatch, str(script), Path("data"))
    assert f"  persona models list --broker {BROKER}" in lines, lines
