"""A data dir with a piece this user cannot read or write is refused at start-up with its path.

Probed before (`persona run` without the privileges that let root ignore file modes): a
`chmod 000` on `readers/` had reader 0 die at each start until `persona run` gave up; on
`registry/` it stopped with "PermissionError: Permission denied (os error 13)", no path, and the
advice to start over with `--fresh` (which removes the kept state); a `broker.log` owned by another
user ended in "Permission denied" after "persona: stopped", exit code 1.

Root ignores file modes (CAP_DAC_OVERRIDE): as root the commands run under `setpriv` without
those capabilities, as an ordinary user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from persona.state_dir import FORMAT_FILE, prepare
from tests.conftest import ROOT

CAPS = "-dac_override,-dac_read_search,-fowner,-chown"


def _command(*args: str) -> list[str]:
    command = [sys.executable, *args]
    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("root ignores file modes and setpriv is not there to drop that privilege")
    return ["setpriv", "--bounding-set", CAPS, "--inh-caps", CAPS, *command]


def _run(data_dir: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_")}
    args = ("-m", "persona", "run", "--no-demo", "--data-dir", str(data_dir), "--port", "1")
    return subprocess.run(
        _command(*args), cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


def _data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "registry").mkdir(parents=True)
    (data / "readers" / "0-123").mkdir(parents=True)
    (data / "faust" / "v1" / "tables" / "profiles-0.db").mkdir(parents=True)
    (data / "faust" / "v1" / "tables" / "profiles-0.db" / "CURRENT").write_text("MANIFEST-1\n")
    (data / "registry" / "CURRENT").write_text("MANIFEST-1\n")
    (data / "broker.log").write_text("")
    data.chmod(0o700)
    prepare(data)
    return data


@pytest.mark.parametrize(
    ("piece", "mode"),
    [
        ("readers", 0o000),
        ("registry", 0o500),
        ("faust/v1/tables/profiles-0.db/CURRENT", 0o400),
        ("broker.log", 0o444),
        (FORMAT_FILE, 0o000),
    ],
)
def test_persona_run_refuses_a_piece_it_cannot_write_naming_it(
    tmp_path: Path, piece: str, mode: int
) -> None:
    data = _data_dir(tmp_path)
    (data / piece).chmod(mode)
    try:
        done = _run(data)
    finally:
        (data / piece).chmod(0o700)
    assert done.returncode == 2, done.stderr
    assert "cannot read" in done.stderr and f"{data / piece} (mode {mode:04o}" in done.stderr
    assert "chmod -R u+rwX" in done.stderr and "--fresh" not in done.stderr
    assert not (data / "local-api-key").exists(), "refused before anything was written"


def test_a_data_dir_this_user_can_use_passes(tmp_path: Path) -> None:
    data = _data_dir(tmp_path)
    done = subprocess.run(
        _command("-c", "import sys; from pathlib import Path; "
                 "from persona.state_dir import check_access; check_access(Path(sys.argv[1]))",
                 str(data)),
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
