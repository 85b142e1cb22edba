"""The registry fold assembling one large artifact file from its chunks (models/registry_log.py,
`RegistryLog._chunk`): seconds and throughput of folding every chunk into the cache, and the
memory the fold still holds for a file that is missing one chunk (an abandoned publish). Not a
test: figures on a shared machine are noisy.

Each chunk is a new bytes object, as a consumer hands them over (a slice of one random buffer),
dropped once folded. Run it against another checkout's code to compare (the script's folder
holds no `models` package, so PYTHONPATH decides which one is measured):

    PYTHONPATH=. .venv/bin/python benchmarks/registry_assembly.py [--mib 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

from models.registry_log import CHUNK_SIZE, RegistryLog

VERSION = "recs-20261207T0000-0123abcd"


def fold(cache: Path, data: bytes, skip: int | None = None) -> RegistryLog:
    state = RegistryLog(cache)
    n = -(-len(data) // CHUNK_SIZE)
    for i in range(n):
        if i != skip:
            state.apply(
                f"chunk/{VERSION}/recs.npz/{i}/{n}", data[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]
            )
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=128, help="size of the artifact file")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data = os.urandom(args.mib << 20)
    digest = hashlib.sha256(data).hexdigest()
    n = -(-len(data) // CHUNK_SIZE)
    print(f"artifact: {args.mib} MiB in {n} chunks of {CHUNK_SIZE // 1024} KiB")
    times = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            state = fold(Path(tmp), data)
            times.append(time.perf_counter() - start)
            target = Path(tmp) / VERSION / "recs.npz"
            ok = hashlib.sha256(target.read_bytes()).hexdigest() == digest
            assert ok and state.refused == 0, "assembled file differs"
    best = min(times)
    print(
        f"assemble: best {best:.3f} s ({args.mib / best:.0f} MiB/s), "
        f"runs {', '.join(f'{t:.3f}' for t in times)}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tracemalloc.start()
        state = fold(Path(tmp), data, skip=n - 1)
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(
            f"incomplete (last chunk missing): {held / 2**20:.2f} MiB held by the fold after "
            f"{(n - 1) * CHUNK_SIZE / 2**20:.0f} MiB fed, peak {peak / 2**20:.2f} MiB"
        )
        del state


if __name__ == "__main__":
    main()
