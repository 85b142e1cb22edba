"""persona/runtime.py: asking for a short CPU slice; the bounded stop."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading

import pytest

from persona.runtime import SHORT_SLICE, current_slice, request_slice
from tests.conftest import ROOT

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


@pytest.mark.skipif(
    sys.platform != "linux" or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and two CPUs",
)
def test_place_puts_every_thread_of_the_process_on_the_cpus() -> None:
    cpu = max(os.sched_getaffinity(0))
    script = f"""
import os, threading, time
from pathlib import Path
from persona.runtime import place
ready = threading.Event()
before = threading.Thread(target=lambda: (ready.set(), time.sleep(2)), daemon=True)
before.start(); ready.wait()
place(frozenset({{{cpu}}}))
after = []
later = threading.Thread(target=lambda: after.append(os.sched_getaffinity(0)))
later.start(); later.join()
lists = set()
for task in Path("/proc/self/task").iterdir():
    for line in (task / "status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            lists.add(line.split(":", 1)[1].strip())
print(sorted(lists), sorted(after[0]))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.strip() == f"['{cpu}'] [{cpu}]"  # threads started before and after


@pytest.mark.skipif(
    sys.platform != "linux" or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and two CPUs",
)
def test_place_puts_another_process_on_the_cpus() -> None:
    from persona.runtime import place

    cpu = max(os.sched_getaffinity(0))
    child = subprocess.Popen(["sleep", "5"])
    try:
        place(frozenset({cpu}), child.pid)
        assert os.sched_getaffinity(child.pid) == {cpu}
        assert os.sched_getaffinity(0) != {cpu}  # the caller keeps its own
    finally:
        child.kill()
        child.wait()


STUCK = """
import logging, sys, threading, time
from persona.runtime import StopBound
logging.basicConfig(stream=sys.stderr, level=logging.INFO)
threading.Thread(target=lambda: time.sleep(3600), name="kafka-retrying").start()  # not daemon
StopBound(0.5, logging.getLogger("persona.test")).start("signal SIGTERM")
# the main thread returns: the interpreter joins the thread above, for an hour
"""


def test_stop_bound_ends_a_process_that_a_thread_keeps_up() -> None:
    """The live case: the loop closed, the interpreter's join of a non-daemon thread that kept
    retrying the broker held the process for ever. The bound ends it, naming the thread."""
    done = subprocess.run(
        [sys.executable, "-c", STUCK], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert "did not stop within 0.5 s of the signal SIGTERM" in done.stderr
    assert "threads left: MainThread, kafka-retrying" in done.stderr


def test_stop_bound_leaves_a_process_that_stops_in_time() -> None:
    code = "import logging\nfrom persona.runtime import StopBound\n"
    code += "StopBound(30, logging.getLogger('t')).start('signal SIGTERM')\n"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stderr) == (0, "")
