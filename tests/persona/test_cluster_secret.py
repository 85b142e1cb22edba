"""PERSONA_CLUSTER_SECRET at start-up (issue 15 item 4): required with a broker URL, made once
(0600) for the embedded default, never shown."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from engine.settings import SettingsError, load_settings
from persona.supervisor import CLUSTER_SECRET_FILE, _cluster_secret
from tests.conftest import persona_bare


def _persona(
    *args: str, secret: str | None = None, data_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {} if secret is None else {"PERSONA_CLUSTER_SECRET": secret}
    if data_dir is not None:  # `persona models` reads <data dir>/cluster-secret when it exists
        env["PERSONA_DATA_DIR"] = str(data_dir)
    return persona_bare(*args, env=env)


@pytest.mark.parametrize(
    "args",
    [
        ("worker", "--broker", "kafka://127.0.0.1:9"),
        ("reader", "--broker", "kafka://127.0.0.1:9"),
        ("run", "--broker", "kafka://127.0.0.1:9"),
        ("models", "list", "--broker", "kafka://127.0.0.1:9"),
        ("models", "rollback", "recs", "--broker", "kafka://127.0.0.1:9"),
    ],
)
def test_a_process_on_a_broker_needs_the_cluster_secret(tmp_path: Path, args: tuple[str]) -> None:
    data = ("--data-dir", str(tmp_path / "data")) if args[0] != "models" else ()
    done = _persona(*args, *data, data_dir=tmp_path / "data")
    assert done.returncode == 2, done.stderr
    assert "PERSONA_CLUSTER_SECRET" in done.stderr and "Traceback" not in done.stderr
    # refused before anything is made: `persona run` left <data dir>/state-format.json behind
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_a_short_secret_is_refused_without_showing_it(tmp_path: Path) -> None:
    short = "short-secret-" + "x" * 10
    done = _persona("worker", "--broker", "kafka://127.0.0.1:9", secret=short)
    assert done.returncode == 2 and "at least 32" in done.stderr
    assert short not in done.stderr + done.stdout


def test_the_embedded_default_makes_one_secret_and_keeps_it(tmp_path: Path) -> None:
    settings = load_settings(env={"PERSONA_DATA_DIR": str(tmp_path)})
    env: dict[str, str] = {}
    _cluster_secret(settings, env)
    path = tmp_path / CLUSTER_SECRET_FILE
    assert env["PERSONA_CLUSTER_SECRET_FILE"] == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    assert len(secret) >= 32
    _cluster_secret(settings, {})
    assert path.read_text().strip() == secret  # kept across runs: the registry stays valid
    child = load_settings(env={"PERSONA_CLUSTER_SECRET_FILE": env["PERSONA_CLUSTER_SECRET_FILE"]})
    assert child.cluster_secret == secret and secret not in repr(child)
    path.chmod(0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        _cluster_secret(settings, {})


def test_a_broker_url_without_a_secret_stops_persona_run_before_any_child(tmp_path: Path) -> None:
    settings = load_settings(
        env={"PERSONA_DATA_DIR": str(tmp_path), "PERSONA_BROKER_URL": "kafka://127.0.0.1:9"}
    )
    with pytest.raises(SettingsError, match="PERSONA_CLUSTER_SECRET"):
        _cluster_secret(settings, {})
    assert not (tmp_path / CLUSTER_SECRET_FILE).exists()
