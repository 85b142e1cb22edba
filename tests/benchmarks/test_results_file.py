"""benchmarks.results_file: every benchmark keeps its raw figures the same way."""

from __future__ import annotations

import json
import re
from pathlib import Path

from benchmarks.results_file import save


def test_save_writes_the_figures_to_a_timestamped_json_file(tmp_path: Path) -> None:
    figures = {"events_per_s": 12_345.6, "runs": [1, 2]}
    out = save("ingest", figures, tmp_path / "results")
    assert out.parent == tmp_path / "results"
    assert re.fullmatch(r"ingest-\d{8}-\d{6}\.json", out.name)
    assert json.loads(out.read_text()) == figures
