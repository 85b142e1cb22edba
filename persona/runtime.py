"""Process-wide runtime settings of the long-running processes (worker, reader)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import platform
import struct
import sys
import threading
import time
from collections.abc import Callable

from engine.settings import SettingsError

# CPython's default thresholds (700, 10, 10) ran a full (oldest-generation) collection every few
# seconds in a worker under load, each scanning every live object: 130-160 ms pauses, measured
# 26 times in a 70 s ingestion run, each one a stall of the stream and of the API (they collected
# almost nothing: the state is acyclic). With these
# thresholds young collections run every 50,000 net allocations and full ones ~1,400x less
# often; cyclic garbage is still found by the young collections, which is where it dies.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Call once at start-up, after the imports: the objects alive by then (modules, the models,
    the app) are moved out of the collector's view (`gc.freeze`), and the thresholds set."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# -- the CPU scheduler's slice -------------------------------------------------------------------
# Linux's EEVDF scheduler (6.6+; custom slices for normal tasks from 6.12) picks the runnable task
# with the earliest virtual deadline, its eligible time plus its slice: a task with a shorter slice
# is picked sooner after it wakes and may preempt a task with a longer one, at no gain in CPU
# share (the weight, i.e. nice, sets that). The benchmarks run wrk so (benchmarks/serving.py). A
# reader asking for it measured no difference (a stand-in server beside two CPU hogs, 2 runs
# each: wrk's p99 4.50-4.74 ms with the reader's default slice, 4.91-4.96 ms with 0.1 ms): busy,
# a reader seldom sleeps, and the short slice helps only on wake-up; readers keep the default.
SHORT_SLICE = 0.0001  # seconds: the shortest the kernel accepts
_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
_SCHED_ATTR = struct.Struct("IIQiIQQQ")  # sched_attr, SCHED_ATTR_SIZE_VER0 (48 bytes)
SCHED_OTHER = 0


def request_slice(seconds: float) -> bool:
    """Ask the kernel to run the calling thread with slices of `seconds` (its policy and nice
    value kept). False where that cannot be asked: not Linux, an unknown architecture, or a
    kernel or sandbox that refuses `sched_setattr`. A kernel before 6.12 accepts the call and
    keeps its default slice."""
    number = _SCHED_SETATTR.get(platform.machine())
    if sys.platform != "linux" or number is None or os.sched_getscheduler(0) != SCHED_OTHER:
        return False
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    attr = _SCHED_ATTR.pack(_SCHED_ATTR.size, SCHED_OTHER, 0, nice, 0, int(seconds * 1e9), 0, 0)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.syscall(number, 0, ctypes.create_string_buffer(attr, len(attr)), 0)) == 0
    except (OSError, AttributeError):
        return False


def current_slice() -> float | None:
    """The calling thread's slice in seconds (`sched_getattr`), None where it cannot be read."""
    number = _SCHED_SETATTR.get(platform.machine())
    if sys.platform != "linux" or number is None:
        return None
    buf = ctypes.create_string_buffer(_SCHED_ATTR.size)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if int(libc.syscall(number + 1, 0, buf, _SCHED_ATTR.size, 0)) != 0:  # sched_getattr
            return None
    except (OSError, AttributeError):
        return None
    return float(_SCHED_ATTR.unpack(buf.raw)[5]) / 1e9


# -- CPU placement ---------------------------------------------------------------------------------


def place(cpus: frozenset[int] | None, pid: int | None = None) -> None:
    """Run every thread of this process (or of process `pid`) on `cpus` (threads started later
    inherit it); None leaves the kernel's placement. Call once at start-up (PERSONA_WORKER_CPUS,
    PERSONA_READER_CPUS): measured on 2 cores with a worker folding ~4,700 events/s, the worker
    and broker on one core and a reader (with its load) on the other answered block GETs at
    p99 3.94-4.33 ms against 7.96-10.27 ms with everything placed by the kernel, the worker keeping
    up (README, Serving at send time)."""
    if cpus is None:
        return
    for tid in os.listdir(f"/proc/{'self' if pid is None else pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(tid), cpus)


# -- open files ------------------------------------------------------------------------------------
# Descriptors a process keeps open beyond its connections, measured in /proc/<pid>/fd right after
# start-up on empty tables (`persona run`, 8 and 64 partitions: worker 215 and 1,559, reader 106
# and 777): each RocksDB table partition holds its directory, LOCK, LOG, MANIFEST, WAL and
# OPTIONS open, 6 per table and 4 tables per partition in the worker, 3 tables as secondaries in a
# reader. SST files add more as the tables grow: these are floors. Below them a worker died at
# start on "Too many open files" (ulimit -n 256, PERSONA_PARTITIONS=64) at every restart until
# `persona run` gave up.
WORKER_FILES_PER_PARTITION = 24
READER_FILES_PER_PARTITION = 12
BASE_FILES = 64  # Python, the broker connections, logs, the models
MIN_CONNECTIONS = 64  # connections a process must have room for beyond its tables
NOFILE_CAP = 1 << 20  # the soft limit asked for when the hard limit is unlimited


class OpenFilesError(SettingsError):
    """The open-file limit is too low for the partition count (a SettingsError: the command line
    prints it and exits 2)."""


def raise_open_files() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (children inherit it), as the
    soft default (often 1,024) is a guard for select()-based programs, which Persona is not; the
    soft limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):  # a kernel cap (fs.nr_open) lower still
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return NOFILE_CAP if soft == resource.RLIM_INFINITY else soft


def files_needed(partitions: int, per_partition: int) -> int:
    """The fewest descriptors a process with `per_partition` files per table partition needs to
    start on `partitions` partitions and take MIN_CONNECTIONS connections."""
    return BASE_FILES + per_partition * partitions + MIN_CONNECTIONS


def check_open_files(partitions: int, per_partition: int, what: str) -> None:
    """OpenFilesError unless the open-file limit (raised to the hard limit first) leaves `what`
    (the worker, a reader) room for its tables on `partitions` partitions and some connections."""
    limit = raise_open_files()
    needed = files_needed(partitions, per_partition)
    roomy = max(65536, 4 * needed)
    if limit < needed:
        raise OpenFilesError(
            f"the open-file limit is {limit} (`ulimit -n`, hard limit included), but with "
            f"PERSONA_PARTITIONS={partitions} {what} keeps at least "
            f"{needed - MIN_CONNECTIONS} files open (RocksDB: {per_partition} per partition) "
            f"and needs room for connections: raise the limit to {needed} or more, better "
            f"{roomy} for the tables' growth (`ulimit -n {roomy}`; systemd: "
            f"LimitNOFILE={roomy}), or run with fewer partitions"
        )


# -- a bounded stop --------------------------------------------------------------------------------
# With its broker gone, a worker's stop waited for ever: Faust's App flushed a producer that could
# not send (`Flush producer buffer...`), or, its loop closed, the interpreter joined Faust's
# consumer thread (non-daemon), which kept retrying the broker; found live after 14 minutes.
EXIT_STOP_FORCED = 1
STOP_BOUND_THREAD = "persona-stop-bound"


class StopBound:
    """Ends the process `seconds` after `start()` (a stop signal, or the loop's shutdown: the
    first counts) if it is still alive then: a warning names the threads left, the log handlers
    are flushed, and `os._exit(EXIT_STOP_FORCED)`. RocksDB's writes are in its WAL before they
    return (Faust's stores keep the WAL on), so a table not yet closed opens whole next time.
    A daemon thread: it neither keeps the process up nor waits for the interpreter's joins."""

    def __init__(
        self, seconds: float, log: logging.Logger, exit: Callable[[int], object] = os._exit
    ) -> None:
        self.seconds = seconds
        self.log = log
        self._exit = exit
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.started_at: float | None = None

    def start(self, why: str) -> None:
        """Start the count (again: no effect). Safe to call from a signal handler's callback."""
        with self._lock:
            if self._thread is not None:
                return
            self.started_at = time.monotonic()
            self._thread = threading.Thread(
                target=self._run, args=(why,), name=STOP_BOUND_THREAD, daemon=True
            )
            self._thread.start()

    def _run(self, why: str) -> None:
        time.sleep(self.seconds)
        left = [
            f"{t.name}{' (daemon)' if t.daemon else ''}"
            for t in threading.enumerate()
            if t is not threading.current_thread()
        ]
        self.log.warning(
            "did not stop within %g s of the %s: exiting now (exit code %d); threads left: %s",
            self.seconds,
            why,
            EXIT_STOP_FORCED,
            ", ".join(left) or "none",
        )
        flush_logs()
        self._exit(EXIT_STOP_FORCED)


def flush_logs() -> None:
    """Flush every logging handler and the standard streams, whatever fails (a stuck handler's
    lock is not waited for)."""
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if handler.lock is not None and not handler.lock.acquire(timeout=1.0):
                continue
            try:
                with contextlib.suppress(Exception):  # exiting: nothing more to do about it
                    handler.flush()
            finally:
                if handler.lock is not None:
                    handler.lock.release()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
