"""The loss window of the embedded broker (issue 16 item 2): how many events `POST /v1/events`
accepted (202) are gone after a SIGKILL of the whole `persona run` process group.

The embedded broker keeps its topics in memory. `POST /v1/events` answers 202 only once the broker
has acknowledged every event of the request, and the worker folds them into RocksDB within
milliseconds; an event the broker acknowledged but the worker had not folded and written when
everything was killed is lost with the broker's memory. This starts `persona run --no-demo` in a
process group of its own, posts batches of add_to_cart events as fast as one client can, kills
the group mid-stream, starts `persona run` again on the same data dir and counts what the
profiles hold against what was accepted.

    .venv/bin/python -m benchmarks.kill_window [--rounds 3] [--seconds 8] [--batch 100]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from streams.broker import free_port

ROOT = Path(__file__).resolve().parent.parent
USERS = 20


def _http(method: str, url: str, key: str, body: Any = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def _start(data: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_")}
    env["PERSONA_PARTITIONS"] = "2"
    cmd = [sys.executable, "-m", "persona", "run", "--no-demo", "--port", str(port),
           "--data-dir", str(data)]  # fmt: skip
    log = (data.parent / "run.log").open("ab")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)


def _ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if _http("GET", base + "/readyz", "")[0] == 200:
            return
        time.sleep(0.25)
    raise SystemExit(f"persona run was not ready (exit {proc.poll()})")


class Sender(threading.Thread):
    """Posts batches of events until stopped; counts what was accepted (202) and in flight."""

    def __init__(self, base: str, key: str, batch: int, prefix: str) -> None:
        super().__init__(daemon=True)
        self.base, self.key, self.batch, self.prefix = base, key, batch, prefix
        self.accepted = self.in_flight = 0
        self.stop = threading.Event()

    def run(self) -> None:
        n, ts = 0, int(time.time() * 1000) - 60_000
        while not self.stop.is_set():
            events = [{"event_id": f"{self.prefix}-{n + i}", "type": "add_to_cart",
                       "user_id": f"w{(n + i) % USERS}", "ts": ts, "item_id": "i1"}
                      for i in range(self.batch)]  # fmt: skip
            self.in_flight = self.batch
            status, _ = _http("POST", self.base + "/v1/events", self.key, events)
            if status != 202:
                return  # the kill: this request's events may or may not have reached the broker
            self.in_flight = 0
            self.accepted += self.batch
            n += self.batch


def _folded(base: str, key: str) -> int:
    total = 0
    for u in range(USERS):
        status, body = _http("GET", f"{base}/v1/users/w{u}/profile", key)
        if status == 200:
            total += int(json.loads(body)["events"].get("add_to_cart", 0))
    return total


def _round(data: Path, seconds: float, batch: int, index: int) -> dict[str, int]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start(data, port)
    _ready(base, proc)
    key = (data / "local-api-key").read_text().split(":")[1]
    before = _folded(base, key)
    sender = Sender(base, key, batch, f"r{index}")
    sender.start()
    time.sleep(seconds)
    os.killpg(proc.pid, signal.SIGKILL)  # the broker, the worker, the readers, `persona run`
    proc.wait()
    sender.join(60)
    accepted, in_flight = sender.accepted, sender.in_flight
    proc = _start(data, port)
    _ready(base, proc)
    time.sleep(3.0)  # let the readers catch up with the worker's tables
    folded = _folded(base, key) - before
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)
    return {"accepted": accepted, "in_flight": in_flight, "kept": folded,
            "lost": max(0, accepted - folded)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="sending before the kill")
    parser.add_argument("--batch", type=int, default=100, help="events per POST")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        rows = [_round(data, args.seconds, args.batch, i) for i in range(args.rounds)]
    print(f"{'round':>5} {'accepted':>9} {'in flight':>9} {'kept':>7} {'lost':>5}")
    for i, r in enumerate(rows):
        print(f"{i:>5} {r['accepted']:>9} {r['in_flight']:>9} {r['kept']:>7} {r['lost']:>5}")
    print(f"at most {max(r['lost'] for r in rows)} accepted events lost per SIGKILL of everything")


if __name__ == "__main__":
    main()
