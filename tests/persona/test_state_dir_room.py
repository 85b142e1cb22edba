"""A data dir without room is refused at start-up by `persona worker` as by `persona run`, and a
failed write of state-format.json names the file and leaves no temporary file behind.

Probed before on a full tmpfs: `persona worker` said "persona: No space left on device" (no path),
exit code 1, and left an empty `.state-format.json.<pid>.tmp` in the data dir."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from persona import state_dir
from persona.state_dir import FORMAT_FILE, MIN_FREE, StateFormatError, prepare
from tests.conftest import CLUSTER_SECRET, ROOT


def test_prepare_refuses_a_data_dir_without_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_dir, "free_bytes", lambda path: MIN_FREE - 1)
    with pytest.raises(StateFormatError, match=f"the data dir {tmp_path} has 16383 KiB free"):
        prepare(tmp_path)
    assert list(tmp_path.iterdir()) == [], "nothing written"


WRITE = """
import resource, signal, sys
from pathlib import Path
from persona.state_dir import current, write_format
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
try:
    write_format(Path(sys.argv[1]), current())
except OSError as exc:
    print(exc.filename, exc.strerror)
"""


def test_a_failed_format_write_names_the_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WRITE, str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{tmp_path / FORMAT_FILE} File too large"), done.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 20 MiB tmpfs with 1 MiB free (root and mount needed)."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a small file system needs root and mount")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"mount refused: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        info = os.statvfs(where)
        filler = where / "filler"
        with filler.open("wb") as out:
            os.posix_fallocate(out.fileno(), 0, info.f_bavail * info.f_frsize - (1 << 20))
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def test_persona_worker_refuses_a_full_disk_naming_the_data_dir(full_disk: Path) -> None:
    data = full_disk / "data"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_")}
    done = subprocess.run(
        [sys.executable, "-m", "persona", "worker", "--broker", "kafka://127.0.0.1:1",
         "--data-dir", str(data), "--port", "0"],
        cwd=ROOT, env={**clean, "PERSONA_CLUSTER_SECRET": CLUSTER_SECRET},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"the data dir {data} has 1024 KiB free" in done.stderr
    assert list(data.iterdir()) == []
