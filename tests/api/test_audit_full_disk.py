"""The audit log on a disk that cannot take a record: whole JSON lines only, the loss said in one
line without the record, never a user id in the process's output.

Probed before on a full tmpfs under `persona run`: the audit log ended in half a record (a short
write), the next record would have been glued to it once there was room, and each lost record
was printed on stderr by logging's error dump ("--- Logging error ---", a 40-line call stack and
`Message: '{... "user_id": "w26"}'`) although audit records are kept out of the output.

A file size limit (RLIMIT_FSIZE, SIGXFSZ ignored) stands in for the full disk: the kernel writes
up to the limit (a short write), then refuses (EFBIG), as it does with ENOSPC."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

WRITE = """
import logging, resource, signal, sys
from pathlib import Path
from api.audit import attach_file, write
from engine.audit import record
handler = attach_file(Path(sys.argv[1]))
write(record("export", "ops", "ok", user_id="first-user"))  # room for this one
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
size = (Path(sys.argv[1]) / "audit.log").stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 60, resource.RLIM_INFINITY))
for n in range(20):
    write(record("export", "ops", "ok", user_id=f"secret-user-{n}"))
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
write(record("export", "ops", "ok", user_id="after-room"))  # room again
print(handler.lost)
"""


def test_a_record_the_disk_cannot_take_leaves_whole_lines_and_no_user_id_in_the_output(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WRITE, str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "audit.log").read_text().splitlines()
    users = [json.loads(line)["user_id"] for line in lines]  # every line whole JSON
    assert users == ["first-user", "after-room"]
    assert "secret-user" not in done.stderr and "Logging error" not in done.stderr
    assert done.stderr.count("cannot write the audit log") == 1, done.stderr
    assert f"{tmp_path / 'audit.log'} (File too large): 1 audit record(s) lost" in done.stderr
    assert done.stdout.split() == ["20"]
