"""Where the benchmarks keep their raw figures: `benchmarks/results/<name>-<UTC time>.json` (not
committed; docs/benchmarks.md quotes them with the command and the commit)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def save(name: str, figures: Any, directory: Path = RESULTS) -> Path:
    """Write `figures` as indented JSON to a new timestamped file and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    return out
