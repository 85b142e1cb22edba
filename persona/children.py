"""The child processes of `persona run`, watched and restarted when they die.

Children: the embedded broker (only when no broker URL is set), the worker, and the readers. A
worker or reader that dies while no stop was requested is started again after a back-off
(`persona/restarts.py`: 0.5 s doubling to 30 s; a child that stayed up 60 s starts a new streak);
`persona run` logs one line per restart and counts it in `<data dir>/restarts.json`, which the
worker and the readers export on `/metrics` as `persona_process_restarts_total{process}`. More than
`PERSONA_MAX_RESTARTS` failures of one child in a row stop everything (`GaveUp`).

A worker or reader that dies while the data dir's file system has less than `MIN_FREE` bytes free
(a full disk: RocksDB fails on ENOSPC, and cannot even open a table to start again) is not counted
and not restarted: `persona run` says so, naming the data dir, and waits until there is room again,
then starts it. Giving up would stop the embedded broker, and with it every accepted event the
worker had not folded yet (they are in its memory only); waiting keeps them, and the worker
restarted on a disk with room folds them from its stored positions.

A stop (SIGTERM/SIGINT) is bounded as a whole, not child by child: the worker and the readers get
SIGTERM at once and `WORKER_GRACE` seconds to exit (the worker writes its state meanwhile; a
reader only reads), what remains is killed; the broker, kept up until then so the worker can
still write to it, gets SIGTERM next and is killed at `STOP_DEADLINE` seconds from the start.
Sequential grace periods (readers 2 s, worker 6 s, broker 2 s) added up past the contract's 10 s.

The embedded broker keeps topics and consumer offsets in memory: when it dies they are gone. So
a broker death stops the readers and the worker, and starts all three again as `persona run` does
at start-up: the new broker adopts the state kept in the data dir (the worker's tables, the model
registry's copy: streams/adopt.py) before the worker starts. Its back-off and give-up are the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from api.observability import RESTARTS_FILE
from engine.clock import Clock
from engine.settings import Settings, require_cluster_secret
from engine.signing import ClusterKey
from persona.reader import cleanup_secondaries, remove_secondary
from persona.restarts import GiveUp, MonotonicClock, RestartPolicy, describe_exit
from persona.state_dir import MIN_FREE, free_bytes
from streams.backlog import EMBEDDED_ENV
from streams.broker import BrokerError, EmbeddedBroker, _die_with_parent, free_port

STOP_DEADLINE = 8.0  # seconds from a stop to every child gone (the contract says 10 s)
WORKER_GRACE = 6.0  # of which the worker and the readers get this before SIGKILL
READER_GRACE = 2.0  # a reader that never became ready, stopped before the next try
BROKER_GRACE = 2.0
KILL_WAIT = 1.0  # seconds to reap a process after SIGKILL
WORKER_READY = 180.0  # seconds a starting worker may take to answer /readyz 200 ...
READER_READY = 120.0
# ... counted again from each change of what its /readyz says (a long recovery or catalog index
# moves on: slow, not stuck), up to READY_CAP seconds from its launch
READY_CAP = 3600.0
ROOM_POLL = 2.0  # seconds between two looks at the free space of a full data dir
ROOM_REMIND = 300.0  # seconds between two reminders that `persona run` still waits for room


class Stop(Exception):
    """A stop was requested (SIGTERM/SIGINT) while starting or backing off."""


class GaveUp(Exception):
    """A child kept failing; the message names it, how it ended each time and where its log is."""


class StartFailed(Exception):
    def __init__(self, what: str, code: int | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.code = code  # the return code (negative: the signal), None when it did not exit


def _http_get(url: str, key: str | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        # the local TLS certificate may be self-signed: this only checks our own children
        context = ssl._create_unverified_context() if url.startswith("https:") else None
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def _ready_detail(body: bytes) -> str:
    """What a /readyz answer said it waits for, for a message (bounded: it is a child's output)."""
    if not body:
        return "its /readyz never answered"
    try:
        detail = str(json.loads(body)["detail"])
    except (ValueError, KeyError, TypeError):
        detail = body.decode(errors="replace")
    return "its /readyz said: " + detail[:200]


@dataclass(eq=False)  # a child is itself: two readers never compare equal
class Child:
    kind: str  # worker | reader | broker: the `process` label of the restart metric
    name: str  # for messages: "the worker", "reader 0", "the embedded broker"
    launch: Callable[[], subprocess.Popen[bytes]]
    policy: RestartPolicy
    ready_url: str | None = None  # a base URL whose /readyz answers 200 once up (None: at launch)
    ready_timeout: float = 0.0
    grace: float = 2.0  # seconds between SIGTERM and SIGKILL when stopping it
    log: str = "the output of `persona run`"  # where its output goes, for the give-up message
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.policy.started()
        self.proc = self.launch()

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        if self.proc is not None:
            stop_by([self.proc], time.monotonic() + self.grace)


class RestartStatus:
    """Restarts per child kind and the last exit codes, in a small JSON file of the data dir that
    the worker's and the readers' `/metrics` read (api/observability.py)."""

    def __init__(self, path: Path, kinds: list[str]) -> None:
        self.path = path
        self.restarts = dict.fromkeys(kinds, 0)
        self.last_exit: dict[str, int] = {}
        self.write()

    def record(self, kind: str, code: int | None, restarted: bool) -> None:
        if code is not None:
            self.last_exit[kind] = code
        self.restarts[kind] += int(restarted)
        self.write()

    def write(self) -> None:
        """Best effort: a full disk or a data dir gone read-only must not end the supervisor
        that restarts and stops the children (only /metrics misses the figures meanwhile)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"restarts": self.restarts, "last_exit": self.last_exit}))
            os.replace(tmp, self.path)  # readers of the file never see half of it
        except OSError as exc:
            _say(f"cannot write {self.path} ({exc.strerror or exc}): restarts not exported")

    def remove(self) -> None:
        with contextlib.suppress(OSError):  # as write: never the end of the supervisor
            self.path.unlink(missing_ok=True)


class Children:
    """Start, watch, restart and stop the children of `persona run`."""

    def __init__(
        self,
        settings: Settings,
        env: dict[str, str],
        stop: threading.Event,
        clock: Clock | None = None,
        keep_fds: tuple[int, ...] = (),
    ) -> None:
        self.settings = settings
        # descriptors the worker inherits: the data dir's lock (engine/files.py), held until the
        # process that writes the tables is gone (the worker finds it by the number the
        # supervisor puts in its environment, LOCK_FD_ENV, and checks it: hold_data_dir)
        self.keep_fds = keep_fds
        self.stop = stop
        self.clock = clock or MonotonicClock()
        self.broker_port = free_port() if settings.embedded else 0
        # the embedded broker keeps its port across restarts: the URL printed at start stays valid
        self.broker_url = settings.broker_url or f"kafka://127.0.0.1:{self.broker_port}"
        self.broker = self._broker_child() if settings.embedded else None
        if settings.embedded:  # POST /v1/events waits for the fold (streams/backlog.py)
            env = {**env, EMBEDDED_ENV: "1"}
        self.worker_base, self.worker = self._worker_child(env)
        self.readers = [self._reader_child(env, i) for i in range(settings.readers)]
        kinds = ["broker"] * bool(self.broker) + ["worker"] + ["reader"] * bool(self.readers)
        self.status = RestartStatus(settings.data_dir / RESTARTS_FILE, kinds)
        self.free_bytes: Callable[[Path], int] = free_bytes  # tests fill the disk with it

    @property
    def all(self) -> list[Child]:
        """Every child, the broker first (its death is handled before the others')."""
        return [*([self.broker] if self.broker else []), self.worker, *self.readers]

    def _policy(self) -> RestartPolicy:
        return RestartPolicy(self.clock, self.settings.max_restarts)

    def _broker_child(self) -> Child:
        data_dir = self.settings.data_dir

        def launch() -> subprocess.Popen[bytes]:
            log_file, cpus = data_dir / "broker.log", self.settings.worker_cpus
            broker = EmbeddedBroker(port=self.broker_port, log_file=log_file, cpus=cpus)
            try:
                broker.start()
            except BrokerError as exc:
                raise StartFailed(f"could not start ({exc})") from None
            assert broker.proc is not None
            return broker.proc

        return Child(
            "broker", "the embedded broker", launch, self._policy(),
            grace=BROKER_GRACE, log=f"{data_dir}/broker.log",
        )  # fmt: skip

    def _worker_child(self, env: dict[str, str]) -> tuple[str, Child]:
        s = self.settings
        # With readers (persona/reader.py) the public port is theirs and the worker listens on a
        # private loopback port (plain HTTP): send traffic never lands on the stream process.
        host, port, worker_env = s.http_host, s.http_port, env
        if s.readers:
            host, port = "127.0.0.1", s.worker_port or free_port()
            worker_env = {**env, "PERSONA_TLS_CERT": "", "PERSONA_TLS_KEY": ""}
        cmd = [sys.executable, "-m", "persona", "worker", "--broker", self.broker_url,
               "--host", host, "--port", str(port), "--data-dir", str(s.data_dir)]  # fmt: skip
        scheme = "https" if s.tls_cert and not s.readers else "http"
        base = f"{scheme}://{host}:{port}"

        def launch() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                cmd, env=worker_env, preexec_fn=serving_child, pass_fds=self.keep_fds
            )

        child = Child(
            "worker", "the worker", launch, self._policy(),
            ready_url=base, ready_timeout=WORKER_READY, grace=WORKER_GRACE,
        )  # fmt: skip
        return base, child

    def _reader_child(self, env: dict[str, str], index: int) -> Child:
        s = self.settings
        cmd = [sys.executable, "-m", "persona", "reader", "--broker", self.broker_url,
               "--host", s.http_host, "--port", str(s.http_port), "--data-dir", str(s.data_dir),
               "--index", str(index)]  # fmt: skip

        def launch() -> subprocess.Popen[bytes]:
            # no lock for a reader: it writes nothing in the data dir but its own secondary
            # (readers/<index>-<pid>) and audit.log lines (each under audit.log.lock)
            return subprocess.Popen(cmd, env=env, preexec_fn=serving_child)

        return Child(
            "reader", f"reader {index}", launch, self._policy(),
            ready_url=self.public_base, ready_timeout=READER_READY, grace=READER_GRACE,
        )  # fmt: skip

    @property
    def public_base(self) -> str:
        s = self.settings
        return f"{'https' if s.tls_cert else 'http'}://{s.http_host}:{s.http_port}"

    # -- starting ----------------------------------------------------------------------------

    def start_all(self) -> None:
        """Broker (a new one adopts the kept state), worker, readers, each ready."""
        if self.broker is not None:
            self._bring_up(self.broker)
            self._adopt()
        self._bring_up(self.worker)
        cleanup_secondaries(self.settings.data_dir)
        for reader in self.readers:
            self._bring_up(reader)

    def _adopt(self) -> None:
        """The new embedded broker's topics are empty; the data dir holds the state (tables,
        registry copy): make the worker start on it (streams/adopt.py). No worker runs now."""
        from streams.adopt import adopt

        data_dir = self.settings.data_dir
        # the secret the worker verifies kept marks with (supervisor.py `_cluster_secret`)
        cluster = ClusterKey(require_cluster_secret(self.settings))
        try:
            adopted = adopt(data_dir, self.broker_url, self.settings.partitions, cluster)
        except Exception as exc:  # a damaged database, a broker that went away: one message
            raise GaveUp(
                f"could not bring the state kept in {data_dir} to the new embedded broker "
                f"({type(exc).__name__}: {exc}); `persona run --fresh` starts from empty state "
                "(it removes the kept state)"
            ) from None
        _say(adopted.describe())

    def _bring_up(self, child: Child) -> None:
        """Start `child` and wait until it is ready, backing off and retrying while it fails."""
        while True:
            try:
                child.start()
                self._wait_ready(child)
                return
            except StartFailed as exc:
                child.stop()  # one that never became ready is stopped before the next try
                self._back_off(child, exc.what, exc.code)

    def _wait_ready(self, child: Child) -> None:
        """Until the child's /readyz answers 200. It fails when the child exits, or when
        `ready_timeout` seconds pass with no change in what its /readyz says (each change, such
        as the rows its catalog index has read, counts the time again: a start that moves on is
        slow, not stuck), and at the latest READY_CAP seconds after the launch."""
        if child.ready_url is None:
            return
        assert child.proc is not None
        started = time.monotonic()
        deadline, said = started + child.ready_timeout, b""
        while time.monotonic() < deadline:
            if self.stop.is_set():
                raise Stop
            code = child.proc.poll()
            if code is not None:
                raise StartFailed(f"{describe_exit(code)} while starting", code)
            status, body = _http_get(f"{child.ready_url}/readyz", timeout=1.0)
            if status == 200:
                return
            if status and body != said:  # it answers, and something moved on
                said = body
                deadline = min(
                    max(deadline, time.monotonic() + child.ready_timeout), started + READY_CAP
                )
            time.sleep(0.25)
        took = time.monotonic() - started
        raise StartFailed(f"was not ready within {took:.0f} s ({_ready_detail(said)})")

    # -- watching ----------------------------------------------------------------------------

    def watch(self) -> None:
        """Until a stop is requested: restart whichever child died (raises `GaveUp`, `Stop`)."""
        while not self.stop.wait(0.5):
            dead = next((c for c in self.all if c.exited() is not None), None)
            if dead is not None:
                self._recover(dead)

    def _recover(self, child: Child) -> None:
        assert child.proc is not None
        code, pid = child.proc.returncode, child.proc.pid
        what = f"(pid {pid}) {describe_exit(code)}"
        if child is self.broker:
            self._recover_broker(child, what, code)
            return
        self._back_off(child, what, code)
        if child.kind == "reader":
            remove_secondary(self.settings.data_dir, self.readers.index(child), pid)
        self._bring_up(child)

    def _recover_broker(self, broker: Child, what: str, code: int) -> None:
        note = (
            "its topics and consumer offsets were in memory and are gone: stopping the worker "
            "and the readers to start all of them again on the state kept in the data dir"
        )
        delay = self._decide(broker, what, code, note)
        self.stop_all(broker=False)
        self._sleep(delay)
        self.start_all()

    def _back_off(self, child: Child, what: str, code: int | None) -> None:
        if self._wait_for_room(child, what, code):
            return
        self._sleep(self._decide(child, what, code, "restarting it"))

    def _wait_for_room(self, child: Child, what: str, code: int | None) -> bool:
        """True when the data dir was full as `child` died: said, waited until it has room
        (`MIN_FREE`), not counted as a failure. False when there is room (a failure as any)."""
        data_dir = self.settings.data_dir
        free = self._free(data_dir)
        if free is None or free >= MIN_FREE:
            return False
        self.status.record(child.kind, code, restarted=False)
        _say(
            f"{child.name} {what}: the data dir {data_dir} is full ({free // 1024} KiB free, "
            f"No space left on device); its tables cannot be written. Not restarting it until "
            f"{MIN_FREE >> 20} MiB are free: free some space there (events already accepted wait "
            "in the broker and are folded then)"
        )
        said = time.monotonic()
        while free is None or free < MIN_FREE:
            self._sleep(ROOM_POLL)
            free = self._free(data_dir)
            if time.monotonic() - said >= ROOM_REMIND:
                shown = "?" if free is None else str(free // 1024)
                _say(f"still waiting for room in the data dir {data_dir} ({shown} KiB free)")
                said = time.monotonic()
        assert free is not None
        _say(
            f"the data dir {data_dir} has room again ({free >> 20} MiB free): starting {child.name}"
        )
        return True

    def _free(self, path: Path) -> int | None:
        try:
            return self.free_bytes(path)
        except OSError:  # the data dir went away or cannot be read: not a matter of room
            return None

    def _decide(self, child: Child, what: str, code: int | None, note: str) -> float:
        """Count the failure, log one line and return the delay, or raise `GaveUp`."""
        decision = child.policy.failed(what)
        self.status.record(child.kind, code, restarted=not isinstance(decision, GiveUp))
        if isinstance(decision, GiveUp):
            raise GaveUp(self._give_up_message(child, decision))
        _say(
            f"{child.name} {what}; {note} in {decision.delay:g} s "
            f"(attempt {decision.attempt} of {child.policy.max_restarts})"
        )
        return decision.delay

    def _give_up_message(self, child: Child, decision: GiveUp) -> str:
        n = len(decision.exits)
        exits = "; ".join(decision.exits)
        return (
            f"giving up: {child.name} failed {n} time(s) in a row ({exits}); see {child.log}. "
            f"PERSONA_MAX_RESTARTS={self.settings.max_restarts} restarts are allowed while a "
            "child stays up less than 60 s; stopping everything"
        )

    def _sleep(self, delay: float) -> None:
        if self.stop.wait(delay):
            raise Stop

    # -- signals -----------------------------------------------------------------------------

    def hang_up(self) -> None:
        """Pass a SIGHUP on to the worker and the readers: they read PERSONA_API_KEYS_FILE
        again (api/key_reload.py). The broker has no keys."""
        hang_up([c.proc for c in (self.worker, *self.readers) if c.proc is not None])

    # -- stopping ----------------------------------------------------------------------------

    def stop_all(self, broker: bool = True) -> None:
        """The worker and the readers at once (SIGKILL after WORKER_GRACE), then the broker
        (SIGKILL at STOP_DEADLINE from the start): see the module doc."""
        started = time.monotonic()
        procs = [c.proc for c in (self.worker, *self.readers) if c.proc is not None]
        stop_by(procs, started + WORKER_GRACE)
        if broker and self.broker is not None and self.broker.proc is not None:
            stop_by([self.broker.proc], started + STOP_DEADLINE)


def serving_child() -> None:  # the worker's and the readers' preexec_fn: between fork and exec
    _die_with_parent()
    # SIGHUP ignored until the child installs its handler (api/key_reload.py reload_on_hangup):
    # a SIGHUP passed on while it starts does not end it (the default action)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def hang_up(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGHUP every process still running (safe in a signal handler: no waiting)."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGHUP)  # nothing when it was reaped already


def stop_by(procs: list[subprocess.Popen[bytes]], deadline: float) -> None:
    """SIGTERM every process at once, wait for all of them until `deadline` (monotonic
    seconds), SIGKILL those still running then."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(KILL_WAIT)


def _say(line: str) -> None:
    print(f"persona: {line}", file=sys.stderr, flush=True)
