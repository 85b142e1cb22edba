"""Local conditions `persona run` must refuse clearly, before it starts any child: a data dir in
use by another `persona run` (two engines on one data dir would corrupt it: `--fresh` would
remove the tables under the running worker), and an HTTP port another process holds."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from engine.files import DataDirInUse, lock_data_dir
from streams.broker import free_port
from tests.conftest import persona_bare
from tests.persona.test_run import _running

pytestmark = pytest.mark.integration


def test_the_data_dir_lock_is_exclusive_and_ends_with_its_holder(tmp_path: Path) -> None:
    held = lock_data_dir(tmp_path)
    with pytest.raises(DataDirInUse, match=f"{tmp_path} is in use by another"):
        lock_data_dir(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no lock file: a restore target stays empty
    os.close(held)
    os.close(lock_data_dir(tmp_path))


def test_a_second_run_on_a_data_dir_in_use_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with _running(data, tmp_path / "first.log", {}) as first:
        before = sorted(p.name for p in data.iterdir())
        for extra in ([], ["--fresh"]):
            second = persona_bare(
                "run", "--no-demo", "--port", str(free_port()), "--data-dir", str(data), *extra,
                timeout=60,
            )  # fmt: skip
            assert second.returncode == 2, second.stderr
            assert "is in use by another" in second.stderr, second.stderr
            assert "embedded broker" not in second.stdout  # refused before any child
            assert sorted(p.name for p in data.iterdir()) == before  # restarts.json kept too
            assert any((data / "faust").rglob("CURRENT"))  # --fresh removed nothing
        assert first.proc.poll() is None


def test_a_taken_http_port_is_refused_before_any_child(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = persona_bare(
            "run", "--no-demo", "--port", str(port), "--data-dir", str(tmp_path / "d"),
            timeout=60,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"127.0.0.1:{port} is in use" in result.stderr
    assert "Traceback" not in result.stderr and "embedded broker" not in result.stdout


def test_an_http_host_that_is_no_address_here_is_refused(tmp_path: Path) -> None:
    result = persona_bare(
        "run", "--no-demo", "--host", "192.0.2.1", "--port", str(free_port()),
        "--data-dir", str(tmp_path / "d"), timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "PERSONA_HTTP_HOST" in result.stderr and "Traceback" not in result.stderr
