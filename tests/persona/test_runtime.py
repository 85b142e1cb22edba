"""persona/runtime.py: asking for a short CPU slice."""

from __future__ import annotations

import platform
import sys
import threading

import pytest

from persona.runtime import SHORT_SLICE, current_slice, request_slice

linux = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"),
    reason="sched_setattr is asked only on Linux x86_64/aarch64",
)


def _in_a_thread(seconds: float) -> tuple[bool, float | None, float | None]:
    """(asked, the slice before, the slice after) in a thread of its own, so the test's thread
    keeps its slice."""
    out: list[tuple[bool, float | None, float | None]] = []

    def run() -> None:
        before = current_slice()
        asked = request_slice(seconds)
        out.append((asked, before, current_slice()))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return out[0]


@linux
def test_the_slice_asked_for_is_the_threads_slice() -> None:
    asked, before, after = _in_a_thread(SHORT_SLICE)
    if not asked:
        pytest.skip("this kernel or sandbox refuses sched_setattr")
    assert before is not None and after is not None
    release = tuple(int(x) for x in platform.release().split(".")[:2] if x.isdigit())
    if release < (6, 12):
        pytest.skip(f"kernel {platform.release()} keeps its default slice for normal tasks")
    assert after == pytest.approx(SHORT_SLICE)
    assert current_slice() == before  # only the calling thread's slice changed


@pytest.mark.skipif(sys.platform == "linux", reason="the refusal path is for other systems")
def test_elsewhere_nothing_is_asked() -> None:
    assert request_slice(SHORT_SLICE) is False
    assert current_slice() is None
