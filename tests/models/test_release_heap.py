"""models.artifacts.release_heap: the heap a model's load freed goes back to the system instead of
staying in the process's RSS (issue 21 item 3: memory per process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.artifacts import _libc, release_heap


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(_libc() is None, reason="no glibc malloc_trim here")
def test_freed_heap_below_the_mmap_threshold_leaves_the_rss() -> None:
    # 400 arrays of 64 KiB (below glibc's mmap threshold: they come from the heap); the last
    # one stays alive above the others, so freeing them does not shrink the heap's top
    arrays = [np.ones(8_192) for _ in range(400)]
    last = arrays[-1]
    del arrays
    held = _rss_mb()
    assert release_heap()
    assert held - _rss_mb() >= 15  # of the ~25 MB freed
    assert last.sum() == 8_192
