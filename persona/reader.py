"""Reader processes: the HTTP API served from a worker's RocksDB tables, read-only, outside the
stream worker, so heavy read traffic cannot starve ingestion.

`persona run` starts `PERSONA_READERS` readers (default 1) beside its worker. Every reader binds
the public host and port with SO_REUSEPORT (the kernel spreads connections over them); the worker
then listens on a private loopback port of its own (stream metrics, supervisor checks), so no send
traffic lands on the process that folds events. With `PERSONA_READERS=0` the worker serves the
public port itself, as before. Readers follow the model registry like workers do, produce
`POST /v1/events` with their own Kafka producer, and see the worker's writes within about
`catch_up_interval` (150 ms).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import signal
import ssl
import subprocess
import time
from collections.abc import Awaitable
from pathlib import Path

from aiohttp import web

from api.app import create_app
from api.audit import attach_file
from api.auth import KeyRing
from api.content import ContentService
from api.event_routes import watch_data_dir
from api.hot import HotRunner
from api.key_reload import reload_on_hangup
from api.limits import ServingOptions
from api.models_routes import ADMIN
from api.observability import configure_json_logging, follow_restarts
from api.privacy import RECORDS
from engine.blocks import BlockPolicy, Renderer
from engine.clicks import Links, click_key, link_maker
from engine.files import private_dir
from engine.repeat import parse_repeat
from engine.settings import Settings, parse_origins, require_cluster_secret
from models.registry import ModelSet
from persona.models_wiring import count_refusals, process_signer
from persona.runtime import (
    READER_FILES_PER_PARTITION,
    StopBound,
    check_open_files,
    place,
    tune_gc,
)
from persona.state_dir import MIN_FREE, free_bytes
from persona.stats_wiring import stats_board
from streams.backlog import EMBEDDED_ENV
from streams.erasure import HeldRecords, read_wait
from streams.kafka_security import Broker
from streams.readers import SecondaryState
from streams.registry import RegistryService
from streams.rocks_memory import RocksMemory

log = logging.getLogger("persona.reader")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """HTTPS when PERSONA_TLS_CERT / PERSONA_TLS_KEY are set (deployments without a proxy)."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    return context


def serving_options(settings: Settings) -> ServingOptions:
    options = ServingOptions.from_settings(settings.rate_limits, settings.request_timeout)
    return dataclasses.replace(
        options,
        feed_title=settings.feed_title,
        feed_link=settings.feed_link,
        feed_timeout=settings.feed_timeout,
        feed_streams_per_key=settings.feed_streams_per_key,
        max_clock_skew_ms=int(settings.max_clock_skew_seconds * 1000),
        cluster_secret=settings.cluster_secret,
        collect_origins=parse_origins(settings.collect_origins or ""),
        collect_per_minute=settings.collect_per_minute,
        identify_secret=settings.identify_secret,
        utm=settings.utm or "",
    )


def click_links(settings: Settings) -> Links | None:
    """Item links through the click redirect when PERSONA_CLICK_URL is set (and the cluster
    secret, which signs them, is known); None: blocks link to products directly."""
    if settings.click_url is None or settings.cluster_secret is None:
        return None
    key = click_key(settings.cluster_secret)
    return link_maker(key, settings.click_url, lambda: int(time.time() * 1000))


def build_content(settings: Settings, state: SecondaryState) -> ContentService:
    policy = BlockPolicy(
        items=settings.block_items,
        churn_threshold=settings.churn_threshold,
        consent_default=settings.consent_granted_by_default,
        repeat=parse_repeat(settings.repeat_items or ""),
    )
    renderer = Renderer(template_dir=settings.template_dir)
    renderer.links = click_links(settings)  # PERSONA_CLICK_URL (engine/clicks.py)
    renderer.shop_url, renderer.cart_url = settings.feed_link, settings.cart_url  # buttons
    renderer.utm = settings.utm or ""  # PERSONA_UTM (engine/utm.py)
    return ContentService(state, ModelSet.default(), renderer, policy)


STOP_WAIT = 2.0  # seconds each of a reader's services may take to stop


async def serve(settings: Settings, broker_url: Broker, index: int, stop: asyncio.Event) -> None:
    secondary = settings.data_dir / "readers" / f"{index}-{os.getpid()}"
    signer = process_signer(settings, f"reader:{settings.own_url}:{index}")
    state = SecondaryState(
        settings.data_dir,
        settings.partitions,
        secondary,
        broker_url,
        signer=signer,
        memory=RocksMemory(settings.rocksdb_memory_mb * 1024 * 1024),
    )
    if os.environ.get(EMBEDDED_ENV) == "1":  # persona run's embedded broker: topics in memory
        state.hold_for_fold(settings.request_timeout)
    content = build_content(settings, state)
    keys = KeyRing.from_settings(settings.api_keys, settings.api_keys_file)
    app = create_app(content, keys, serving_options(settings))
    # the export's records on the output topics, read within half the request timeout
    app[RECORDS] = HeldRecords(broker_url, read_wait(settings.request_timeout))
    follow_restarts(app, settings.data_dir)  # `persona run`'s restarts on /metrics
    # events refused (503) while the data dir is full; its free bytes on /metrics
    watch_data_dir(app, settings.data_dir, free_bytes, MIN_FREE)

    def swap(models: ModelSet) -> None:
        content.models = models
        state.models = models

    state.models = None
    registry = RegistryService(broker_url, secondary / "models", swap, signer=signer)
    app[ADMIN] = registry
    count_refusals(app, registry)
    process = f"reader:{settings.own_url}:{index}:{os.getpid()}"
    board = stats_board(settings, broker_url, app, "reader", process, index)  # every process's
    await state.start()
    await registry.start()
    await board.start()
    runner = HotRunner(app, access_log=None, shutdown_timeout=2.0)  # block GETs before routing
    await runner.setup()
    site = web.TCPSite(
        runner,
        settings.http_host,
        settings.http_port,
        reuse_port=True,
        ssl_context=ssl_context(settings),
    )
    await site.start()
    reload_on_hangup(app)  # SIGHUP: PERSONA_API_KEYS_FILE read again (else polled only)
    log.info("reader %d serving on %s:%s", index, settings.http_host, settings.http_port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()  # the port first: a successor may bind it at once
        # Each stop is bounded: with the broker gone (a SIGKILLed `persona run`: every child
        # gets SIGTERM at once), aiokafka's consumers retried their fetches for ~40 s while the
        # reader lingered, holding its secondary and the process slot.
        # And each is stopped whatever the one before raised (see `stop_within`).
        await stop_within(board.stop(), "the stats board")
        await stop_within(registry.stop(), "the model registry")
        await stop_within(state.stop(), "the tables' readers")


async def stop_within(stopping: Awaitable[object], what: str) -> None:
    """Await `stopping` at most STOP_WAIT seconds; what it raises is logged, not raised. With the
    broker gone, aiokafka's consumer `stop()` raised CancelledError (its fetcher awaits the fetch
    tasks it has just cancelled): let through, it skipped the services after it and ended the
    reader with a traceback and exit code 1. A cancellation of this task itself goes on up."""
    try:
        await asyncio.wait_for(stopping, STOP_WAIT)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("%s stopped with its tasks cancelled (the broker away?)", what)
    except TimeoutError:
        log.warning("%s did not stop within %g s (the broker away?)", what, STOP_WAIT)
    except Exception as exc:
        log.warning("%s did not stop cleanly: %r", what, exc)


def run_reader(settings: Settings, broker_url: Broker, index: int) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s"
    )  # the libraries' (aiokafka, aiohttp)
    configure_json_logging(settings.log_level)  # persona.* (the access log too): JSON lines
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    require_cluster_secret(settings)  # hops and records are signed (engine/signing.py)
    check_open_files(settings.partitions, READER_FILES_PER_PARTITION, f"reader {index}")
    tightened = private_dir(settings.data_dir)  # 0700 (engine/files.py)
    if tightened:
        log.warning("%s", tightened)
    attach_file(settings.data_dir)  # audit.log: 0600, rotated (api/audit.py)
    tune_gc()
    place(settings.reader_cpus)  # PERSONA_READER_CPUS

    bound = StopBound(settings.stop_timeout, log)  # PERSONA_STOP_TIMEOUT

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(sig: signal.Signals) -> None:
            bound.start(f"signal {sig.name}")
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        await serve(settings, broker_url, index, stop)

    asyncio.run(main())


def stop_processes(procs: list[subprocess.Popen[bytes]], grace: float) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(2)


SECONDARY_NAME = re.compile(r"(0|[1-9][0-9]{0,5})-([1-9][0-9]{0,9})")  # <index>-<pid>


def _pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists (a zombie counts; it is weeded out by its cmdline)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except OverflowError:  # beyond pid_t: no such process
        return False
    return True


def _may_be_reader(pid: int) -> bool:
    """Whether live process `pid` may be a persona reader: its command line names "persona"
    and has a "reader" argument (`persona reader ...`, `python -m persona reader ...`). When
    the command line cannot be read (no /proc, another user's process under hidepid) it may be
    one. An empty command line (a zombie, a kernel thread) is no reader."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:  # it exited meanwhile; or there is no /proc: cannot tell
        return not Path("/proc/self").exists()
    except OSError:
        return True
    return b"reader" in argv and any(b"persona" in arg for arg in argv)


def cleanup_secondaries(data_dir: Path) -> list[Path]:
    """Remove the secondary directories of readers that are gone; return the removed ones.

    A reader keeps its RocksDB secondary in `<data_dir>/readers/<index>-<pid>` (`serve`). At a
    start of `persona run` the directories of readers that died (a SIGKILLed `persona run` takes
    its readers with it) are left behind; a standalone `persona reader` may be running against
    the same data dir and still uses its own, so only directories whose owner is gone go:
    - `<index>-<pid>` whose pid is no process: removed;
    - whose pid is a live process that is no persona reader by its /proc/<pid>/cmdline (the pid
      was reused, or the reader is a zombie): removed;
    - whose pid is a live persona reader, or a live process whose command line cannot be read:
      kept (a stale directory costs a little disk; removing a live reader's breaks it);
    - anything else under `readers/` (no name of ours, not a directory, a symlink): left alone,
      as nothing here made it.
    A reader in another pid namespace (a container sharing the data dir) is not seen as alive
    here: readers of one data dir are expected to run on one host, in one namespace.
    """
    import shutil

    root = data_dir / "readers"
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:  # no readers/ yet (or unreadable: nothing to do then either)
        return removed
    for entry in entries:
        match = SECONDARY_NAME.fullmatch(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        pid = int(match.group(2))
        if _pid_alive(pid) and _may_be_reader(pid):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


def remove_secondary(data_dir: Path, index: int, pid: int) -> None:
    """Remove the secondary directory of reader `index` that ran as `pid` (it died)."""
    import shutil

    shutil.rmtree(data_dir / "readers" / f"{index}-{pid}", ignore_errors=True)
