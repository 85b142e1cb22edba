"""Shared fixtures: the real embedded broker on a free loopback port and a real worker process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.catalog import Product
from engine.events import validate
from engine.signing import HOP_HEADER, ClusterKey
from streams.broker import EmbeddedBroker, free_port
from streams.produce import ALL_INPUTS, Producer, ensure_topics

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
SECRET = "test-secret-all-scopes-k"
# Event time of everything sent to the shared session worker (Dec 2010, the demo data's era): its
# event-time clock is shared, and events more than 7 days behind it are dead-lettered as late.
T0 = 1_291_190_000_000
SCOPES = "content:read,events:write,feeds:read,models:admin,privacy:admin"
# Every process started on a broker signs hops and records with the cluster secret; the
# subprocesses the tests start inherit it (`persona run` on its embedded broker makes its own).
CLUSTER_SECRET = "test-cluster-secret-shared-by-every-process"
os.environ.setdefault("PERSONA_CLUSTER_SECRET", CLUSTER_SECRET)


def persona_bare(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m persona ARGS` with no PERSONA_* setting from this environment (only `env`'s)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_")}
    return subprocess.run(
        [sys.executable, "-m", "persona", *args],
        cwd=ROOT, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def http(
    method: str,
    url: str,
    body: Any = None,
    key: str | None = SECRET,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}, b""


def hop_headers(method: str, target: str, body: bytes = b"") -> dict[str, str]:
    """Headers that make a request a signed hop (api/hops.py) of the test key, as another
    Persona process forwards one: the process answers it from its own tables, routing nothing.
    (A caller's own `X-Persona-Routed` no longer does: any content:read caller could send it.)"""
    key = ClusterKey(os.environ.get("PERSONA_CLUSTER_SECRET", CLUSTER_SECRET))
    scopes = frozenset(SCOPES.split(","))
    return {HOP_HEADER: key.hop(method, target, "test", scopes, body, int(time.time() * 1000))}


METRICS_PATIENCE = 30.0  # seconds /metrics may keep not answering before a test fails


def metric(base: str, name: str) -> float:
    """One unlabelled sample of the worker's /metrics (0 when the page lacks it). A page that does
    not answer is asked again, then fails the test: read as 0, it ended waits for a counter to
    reach 0 and gave baselines of 0 to waits for growth."""
    deadline = time.monotonic() + METRICS_PATIENCE
    while True:
        status, _, body = http("GET", base + "/metrics", key=None)
        if status == 200:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"{base}/metrics did not answer 200 (last: {status})")
        time.sleep(0.2)
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.2, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout:.0f} s waiting for {what or predicate}: {last!r}"
    )


@dataclass
class Worker:
    base: str
    broker_url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# The session broker's address: its one worker is the session `worker`. Another worker there would
# join that worker's consumer group and take partitions (and their events, and the metrics
# counting them) from under whichever test runs: a test needing its own worker brings its own
# broker. Enforced, so the mistake fails at once rather than only when the session worker runs.
_SESSION_BROKERS: set[str] = set()


def start_worker(
    broker_url: str,
    data_dir: Path,
    extra_env: dict[str, str] | None = None,
    port: int = 0,
    *,
    session: bool = False,
) -> Worker:
    """A `persona worker` once its /readyz answers 200; on `port` when given (a caller can
    then poll it from before it is ready). Refused on the session broker but for the session
    worker (`session`)."""
    if broker_url in _SESSION_BROKERS and not session:
        raise AssertionError(
            "a second worker on the session broker would share the session worker's consumer "
            "group: start an EmbeddedBroker of the test's own"
        )
    chosen = port
    env = dict(os.environ)
    env.update(
        {
            "PERSONA_API_KEYS": (
                f"test:{SECRET}:{SCOPES};reader:reader-secret-kkkkkkkkkk:content:read"
            ),
            "PERSONA_PARTITIONS": "4",
            "PERSONA_LOG_LEVEL": "info",
            **(extra_env or {}),
        }
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "worker.log"
    # A port of free_port's choosing can be taken by any process in the seconds before the
    # worker binds it (the worker then exits at once saying so): another is tried.
    for _ in range(PORT_TRIES if not chosen else 1):
        port = chosen or free_port()
        logged = log.stat().st_size if log.exists() else 0
        worker = _launch(broker_url, data_dir, env, port, log)
        if worker.proc.poll() is None:
            return worker
        said = log.read_bytes()[logged:].decode(errors="replace")
        if chosen or f":{port} is in use by another process" not in said:
            break
    raise AssertionError(f"worker exited {worker.proc.returncode}:\n{log.read_text()[-4000:]}")


PORT_TRIES = 3
# Every worker launched: one a failing test left running (`a` started, then `b` failed to) is
# stopped when the session ends, not left behind its broker for good.
_LAUNCHED: list[Worker] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for worker in _LAUNCHED:
        worker.stop()


def _launch(broker_url: str, data_dir: Path, env: dict[str, str], port: int, log: Path) -> Worker:
    """A `persona worker` once its /readyz answers 200 or it has exited."""
    cmd = [
        sys.executable,
        "-m",
        "persona",
        "worker",
        "--broker",
        broker_url,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    worker = Worker(f"http://127.0.0.1:{port}", broker_url, data_dir, proc, log)
    _LAUNCHED.append(worker)
    try:
        wait_until(
            lambda: proc.poll() is not None or http("GET", worker.base + "/readyz")[0] == 200,
            timeout=120,
            what="worker /readyz",
        )
    except BaseException:
        worker.stop()
        raise
    return worker


@contextlib.contextmanager
def worker_of_its_own(tmp: Path, extra_env: dict[str, str] | None = None) -> Iterator[Worker]:
    """A worker (data dir `tmp/w`) on an embedded broker of its own (`tmp/broker.log`): for tests
    that need a worker other than the session's (see `start_worker`)."""
    with EmbeddedBroker(log_file=tmp / "broker.log") as broker:
        worker = start_worker(broker.url, tmp / "w", extra_env)
        try:
            yield worker
        finally:
            worker.stop()


@contextlib.contextmanager
def two_workers(tmp: Path) -> Iterator[tuple[EmbeddedBroker, Worker, Worker]]:
    """(broker, a, b): two workers in one group (data dirs `tmp/a`, `tmp/b`) on an embedded broker
    of their own (`tmp/broker.log`, its input topics made first), once both answer /readyz 200
    after the rebalance; both are stopped when the block ends."""
    with EmbeddedBroker(log_file=tmp / "broker.log") as broker:
        asyncio.run(ensure_topics(broker.url, 4, ALL_INPUTS))  # start_worker's PERSONA_PARTITIONS
        a = start_worker(broker.url, tmp / "a")
        try:
            b = start_worker(broker.url, tmp / "b")
            try:
                wait_until(
                    lambda: all(
                        http("GET", w.base + "/readyz", key=None)[0] == 200 for w in (a, b)
                    ),
                    timeout=90,
                    what="both workers ready after the rebalance",
                )
                yield broker, a, b
            finally:
                b.stop()
        finally:
            a.stop()


def owners_via(
    worker: Worker,
    users: Iterable[str],
    look: Callable[[str], tuple[bool, str | None]],
    what: str,
) -> dict[str, str]:
    """Each user's owning worker (its base URL) as `worker` answers: the `X-Persona-Routed` of its
    answer for the user, or `worker` itself; once `look(user)` -> (folded, routed) says every
    user was folded (within 90 s)."""

    def owners() -> dict[str, str] | None:
        out = {}
        for user in users:
            folded, routed = look(user)
            if not folded:
                return None
            out[user] = routed or worker.base
        return out

    return wait_until(owners, timeout=90, what=what)


def send_carts(
    broker_url: str,
    carts: Mapping[str, str],
    prefix: str,
    ts: int,
    products: Sequence[Product] = (),
) -> None:
    """Produce `products` (when any), then one add_to_cart of each user of `carts` (user ->
    item), event ids `prefix`-user, at event time `ts`."""

    async def send() -> None:
        async with Producer(broker_url) as producer:
            if products:
                await producer.send_products(products)
            await producer.send_events(
                validate(
                    {
                        "event_id": f"{prefix}-{user}",
                        "type": "add_to_cart",
                        "user_id": user,
                        "ts": ts,
                        "item_id": item,
                    }
                )
                for user, item in carts.items()
            )

    asyncio.run(send())


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_file=log) as running:
        _SESSION_BROKERS.add(running.url)
        try:
            yield running
        finally:
            _SESSION_BROKERS.discard(running.url)


@pytest.fixture(scope="session")
def worker(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    running = start_worker(broker.url, tmp_path_factory.mktemp("worker"), session=True)
    yield running
    running.stop()
