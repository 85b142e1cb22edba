"""The open-file limit: raised to the hard limit at start, and a limit too low for the partition
count refused at once with what to do.

Probed before: `ulimit -n 256` and PERSONA_PARTITIONS=64 had the worker die at each start on
"IO error: While opendir: .../profiles-54.db: Too many open files" until `persona run` gave up
(exit code 1, about 90 s); a worker keeps 24 descriptors per partition open (1,559 measured at
64 partitions), a reader 12 (777)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from persona.runtime import (
    READER_FILES_PER_PARTITION,
    WORKER_FILES_PER_PARTITION,
    files_needed,
)
from tests.conftest import CLUSTER_SECRET, ROOT


def _limited(soft: int, hard: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return limit


def _python(code: str, soft: int, hard: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        preexec_fn=_limited(soft, hard),
    )  # fmt: skip


def test_the_measured_needs_grow_with_the_partitions() -> None:
    assert files_needed(64, WORKER_FILES_PER_PARTITION) > 1_559  # measured at 64 partitions
    assert files_needed(64, READER_FILES_PER_PARTITION) > 777
    assert files_needed(8, WORKER_FILES_PER_PARTITION) < 1_024  # the common soft default


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    done = _python(
        "from persona.runtime import raise_open_files; print(raise_open_files())", 256, 4096
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["4096"]


def test_persona_run_refuses_a_limit_too_low_for_the_partitions(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_")}
    data = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, "-m", "persona", "run", "--no-demo", "--data-dir", str(data),
         "--port", "1"],
        cwd=ROOT, env={**clean, "PERSONA_PARTITIONS": "64"}, capture_output=True, text=True,
        timeout=300, preexec_fn=_limited(256, 256),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    needed = files_needed(64, WORKER_FILES_PER_PARTITION)
    assert "the open-file limit is 256" in done.stderr
    assert "PERSONA_PARTITIONS=64 the worker keeps at least" in done.stderr
    assert f"raise the limit to {needed} or more" in done.stderr
    assert not data.exists(), "refused before the data dir or the broker"


def test_persona_reader_refuses_a_limit_too_low_for_the_partitions(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_")}
    env = {**clean, "PERSONA_PARTITIONS": "64", "PERSONA_CLUSTER_SECRET": CLUSTER_SECRET}
    done = subprocess.run(
        [sys.executable, "-m", "persona", "reader", "--broker", "kafka://127.0.0.1:1",
         "--data-dir", str(tmp_path / "data"), "--port", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        preexec_fn=_limited(256, 256),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "PERSONA_PARTITIONS=64 reader 0 keeps at least" in done.stderr
