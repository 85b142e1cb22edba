"""`persona run`: the embedded broker (when no broker URL is set), a worker child process, the demo.

Stop order on SIGTERM/SIGINT: the worker (SIGTERM, then SIGKILL after a grace period), then the
broker. Both children also die with this process if it is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from api.auth import KeyRing, ensure_local_key
from engine.settings import Settings
from persona.reader import cleanup_secondaries, start_readers, stop_processes
from streams.broker import EmbeddedBroker, _die_with_parent, free_port

WORKER_GRACE = 6.0  # seconds the worker gets to stop before SIGKILL
READER_GRACE = 2.0
DEMO_DIR = Path(__file__).parent / "demo"


class Stop(Exception):
    pass


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


def wait_ready(
    base: str, proc: subprocess.Popen[bytes], stop: threading.Event, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stop.is_set():
            raise Stop
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with code {proc.returncode} while starting")
        status, _ = _http_get(f"{base}/readyz", timeout=1.0)
        if status == 200:
            return
        time.sleep(0.25)
    raise RuntimeError(f"the worker was not ready within {timeout:.0f} s")


def _processed(base: str) -> int:
    status, body = _http_get(f"{base}/metrics")
    if status != 200:
        return -1
    total = 0  # every event accounted for: folded, ignored as a repeat, or dead-lettered
    counted = (
        "persona_events_processed_total ",
        "persona_events_duplicate_total ",
        "persona_events_dead_lettered_total ",
    )
    for line in body.decode().splitlines():
        if line.startswith(counted):
            total += int(float(line.split()[1]))
    return total


def run(settings: Settings, demo: bool = False) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    KeyRing.from_settings(settings.api_keys, settings.api_keys_file)  # fail fast on bad keys
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    key_line: str | None = None
    if not settings.api_keys and not settings.api_keys_file:
        key_path, key_line = ensure_local_key(data_dir)
        env["PERSONA_API_KEYS_FILE"] = str(key_path)
        print(f"persona: no API key configured; created a local key with every scope in {key_path}")

    broker: EmbeddedBroker | None = None
    worker: subprocess.Popen[bytes] | None = None
    readers: list[subprocess.Popen[bytes]] = []
    try:
        if settings.broker_url is None:
            # The embedded broker keeps everything in memory: state from an earlier run would
            # disagree with its empty changelogs, so the worker starts from a clean state dir.
            shutil.rmtree(data_dir / "faust", ignore_errors=True)
            broker = EmbeddedBroker(
                log_file=data_dir / "broker.log", cpus=settings.worker_cpus
            ).start()
            broker_url = broker.url
            print(
                f"persona: embedded broker on {broker.bootstrap} "
                f"(in memory; log {data_dir}/broker.log)"
            )
        else:
            broker_url = settings.broker_url
        # With readers (persona/reader.py) the public port is theirs and the worker listens on a
        # private loopback port (plain HTTP): send traffic never lands on the stream process.
        worker_env, worker_host, worker_port = env, settings.http_host, settings.http_port
        if settings.readers:
            worker_host, worker_port = "127.0.0.1", free_port()
            worker_env = {**env, "PERSONA_TLS_CERT": "", "PERSONA_TLS_KEY": ""}
        cmd = [
            sys.executable,
            "-m",
            "persona",
            "worker",
            "--broker",
            broker_url,
            "--host",
            worker_host,
            "--port",
            str(worker_port),
            "--data-dir",
            str(data_dir),
        ]
        worker = subprocess.Popen(cmd, env=worker_env, preexec_fn=_die_with_parent)
        scheme = "https" if settings.tls_cert and not settings.readers else "http"
        worker_base = f"{scheme}://{worker_host}:{worker_port}"
        wait_ready(worker_base, worker, stop, timeout=180)
        base = f"{'https' if settings.tls_cert else 'http'}://{settings.http_host}:{settings.http_port}"
        if settings.readers:
            cleanup_secondaries(data_dir)
            readers = start_readers(settings, broker_url, env, settings.readers)
            for proc in readers:
                wait_ready(base, proc, stop, timeout=120)
            print(f"persona: worker on {worker_base} (private), {len(readers)} reader(s)")
        print(f"persona: ready on {base}")
        if demo:
            load_demo(settings, broker_url, worker_base, stop)
            print_examples(settings, base, data_dir, key_line)
        while not stop.is_set():
            if worker.poll() is not None:
                print(f"persona: the worker exited with code {worker.returncode}", file=sys.stderr)
                return 1
            if any(proc.poll() is not None for proc in readers):
                print("persona: a reader exited", file=sys.stderr)
                return 1
            stop.wait(0.5)
        return 0
    except Stop:
        return 0
    except RuntimeError as exc:
        print(f"persona: {exc}", file=sys.stderr)
        return 1
    finally:
        print("persona: stopping", file=sys.stderr)
        stop_processes(readers, READER_GRACE)
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(WORKER_GRACE)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(2)
        if broker is not None:
            broker.stop(timeout=2)
        print("persona: stopped", file=sys.stderr)


def load_demo(settings: Settings, broker_url: str, base: str, stop: threading.Event) -> None:
    from engine.sources import read_catalog, read_events
    from persona.cli import import_catalog, replay

    catalog = DEMO_DIR / "catalog.jsonl.gz"
    orders = DEMO_DIR / "orders.csv.gz"
    before = _processed(base)
    asyncio.run(import_catalog(broker_url, settings.partitions, read_catalog(catalog)))
    time.sleep(1.0)  # let the catalog land first, so profiles get categories
    sent = asyncio.run(replay(broker_url, settings.partitions, read_events(orders)))
    target = max(before, 0) + sent
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not stop.is_set():
        done = _processed(base)
        if done >= target:
            break
        sys.stderr.write(f"\rprocessing demo events: {max(done, 0)}/{target}   ")
        stop.wait(0.5)
    sys.stderr.write("\n")


def _demo_users(n: int = 3) -> tuple[list[str], int]:
    """Customers of the demo orders with the most order lines (real ids from the sample), and the
    newest event time of the sample."""
    from engine.sources import read_events

    counts: dict[str, int] = {}
    newest = 0
    for event in read_events(DEMO_DIR / "orders.csv.gz"):
        counts[event.user_id] = counts.get(event.user_id, 0) + 1
        newest = max(newest, event.ts)
    users = [u for u, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]
    return users, newest


def print_examples(settings: Settings, base: str, data_dir: Path, key_line: str | None) -> None:
    users, newest = _demo_users()
    key_file = data_dir / "local-api-key"
    lines = ["", "Persona is running with the demo data. Try:", ""]
    if key_line:
        lines.append(f"  export PERSONA_KEY=$(cut -d: -f2 {key_file})")
    else:
        lines.append("  export PERSONA_KEY=<a secret from PERSONA_API_KEYS with content:read>")
    auth = '-H "Authorization: Bearer $PERSONA_KEY"'
    for user in users:
        lines.append(f"  curl {auth} {base}/v1/users/{user}/blocks/recommendations")
    if users:
        u = users[0]
        lines.append(f"  curl {auth} '{base}/v1/users/{u}/blocks/recommendations?format=json'")
        lines.append(f"  curl {auth} {base}/v1/users/{u}/profile")
        lines.append(f"  curl {auth} {base}/v1/users/{u}/blocks/winback")
    lines.append(f"  curl {auth} {base}/v1/users/someone-new/blocks/recommendations  # fallback")
    event = json.dumps(
        {
            "event_id": "demo-1",
            "type": "add_to_cart",
            "user_id": users[0] if users else "u1",
            "ts": newest + 60_000,
            "item_id": "85123A",
        }
    )
    lines.append(f"  curl {auth} -X POST {base}/v1/events -d '[{event}]'")
    who = f"?user={users[0]}" if users else ""
    lines += [
        "",
        "In a browser (sign in with the key's secret, or paste the whole line of "
        f"{key_file if key_line else 'your key entry'}):",
        f"  {base}/ui/preview{who}",
        f"  {base}/ui/dashboard",
        "",
        "Stop with Ctrl-C.",
        "",
    ]
    print("\n".join(lines), flush=True)
