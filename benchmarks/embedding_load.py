"""Load time of a large embedding artifact with its index layout stored (format 2) against the
same artifact rewritten as format 1 (the index built at load), each load in a fresh process
(`benchmarks.model_memory`'s `load` child), alternating (issue 21 item 3). Noisy on a shared
machine: compare the two formats within one run.

    PYTHONPATH=. nice -n 10 .venv/bin/python -m benchmarks.embedding_load [ITEMS] [ROUNDS]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.model_memory import run_child, write_embedding


def as_format_1(source: Path, target: Path) -> None:
    """`source`'s artifact without the stored layout, as artifacts were before format 2."""
    target.mkdir(parents=True, exist_ok=True)
    meta = json.loads((source / "recs.json").read_text())
    (target / "recs.json").write_text(json.dumps({**meta, "format": 1}))
    with np.load(source / "recs.npz") as npz:
        np.savez_compressed(target / "recs.npz", vectors=npz["vectors"], popular=npz["popular"])


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 1_000_000
    rounds = int(argv[1]) if len(argv) > 1 else 2
    with tempfile.TemporaryDirectory() as tmp:
        stored, built = Path(tmp) / "format2", Path(tmp) / "format1"
        began = time.perf_counter()
        write_embedding(stored, n, 1)
        print(f"made the model (index built once): {time.perf_counter() - began:.1f} s", flush=True)
        as_format_1(stored, built)
        for r in range(rounds):
            for name, d in (("format 2", stored), ("format 1", built)):
                print(json.dumps({"round": r, "artifact": name, **run_child("load", str(d))}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
