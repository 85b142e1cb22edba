"""`make help` (the README's way to list the Makefile targets) lines every description up in
one column, however long a target's name (`bench-ingest` ran into its description)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_help_lists_every_target_with_its_description_in_one_column() -> None:
    out = subprocess.run(
        ["make", "--no-print-directory", "-s", "help"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    documented = re.findall(r"^([a-zA-Z_-]+):.*## ", (ROOT / "Makefile").read_text(), re.M)
    lines = out.splitlines()
    assert len(lines) == len(documented) and len(documented) >= 10, out
    columns = set()
    for target, line in zip(documented, lines, strict=True):
        match = re.match(rf"^  make ({re.escape(target)}) +(\S)", line)
        assert match, (target, line)
        columns.add(match.start(2))
    assert len(columns) == 1, out  # every description starts in the same column
    assert min(columns) >= len("  make ") + max(map(len, documented)) + 1, out
