"""`persona run` on the embedded broker keeps its state across restarts (issue 16): profiles,
catalog, popularity, the clock and the model registry (versions, active ones, the experiment)
are the same after a stop and a start, new events fold on top without counting anything twice,
a SIGKILLed worker loses nothing, and `--fresh` starts empty on purpose."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rocksdict import Options, Rdict

from streams.adopt import partition_dbs
from streams.broker import free_port
from streams.keys import FAUST_OFFSET_KEY
from streams.positions import is_position_key
from tests.conftest import ROOT, http, wait_until
from tests.persona.test_run import Running, _children, _kind, _running, _start_run, _stop

pytestmark = pytest.mark.integration

USERS = tuple(f"keep-{i}" for i in range(6))
ITEMS = tuple(f"keep-item-{i}" for i in range(4))
NOW = int(time.time() * 1000) - 3_600_000  # event time: an hour ago, within the clock's skew
CATALOG = "item_id,title,url,image_url,price,currency,availability,category,brand\n" + "".join(
    f"{item},Thing {n},https://s.example.com/{n},https://s.example.com/{n}.jpg,{n + 1}.5,EUR,"
    f"in_stock,{'Light' if n % 2 else 'Home'},Acme\n"
    for n, item in enumerate(ITEMS)
)


def _secret(data: Path) -> str:
    return (data / "local-api-key").read_text().split(":")[1]


def _broker_url(log: Path) -> str:
    found = re.search(r"embedded broker on (\S+)", log.read_text())
    assert found, log.read_text()
    return f"kafka://{found.group(1)}"


def _cli(data: Path, *args: str) -> str:
    """`persona ...` as a user of this `persona run` would call it; its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_")}
    env["PERSONA_PARTITIONS"] = "2"
    if (data / "cluster-secret").exists():
        env["PERSONA_CLUSTER_SECRET_FILE"] = str(data / "cluster-secret")
    done = subprocess.run(
        [sys.executable, "-m", "persona", *args], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def _event(n: int, kind: str = "add_to_cart", user: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"keep-{kind}-{n}",
        "type": kind,
        "user_id": user or USERS[n % len(USERS)],
        "ts": NOW + n * 1000,
    }
    if kind != "consent":
        event["item_id"] = ITEMS[n % len(ITEMS)]
    else:
        event["props"] = {"email": n % 2 == 0}
    return event


def _post(run: Running, secret: str, events: list[dict[str, Any]]) -> None:
    status, _, body = http("POST", run.base + "/v1/events", events, key=secret, timeout=30)
    assert status == 202 and json.loads(body)["accepted"] == len(events), body


def _profiles(run: Running, secret: str) -> dict[str, Any]:
    out = {}
    for user in USERS:
        status, _, body = http("GET", f"{run.base}/v1/users/{user}/profile", key=secret)
        out[user] = json.loads(body) if status == 200 else status
    return out


def _carts_counted(run: Running, secret: str, sent: int) -> bool:
    """Whether every add_to_cart of events 0 .. sent - 1 is folded, exactly once."""
    expected = {u: 0 for u in USERS}
    for n in range(sent):
        expected[USERS[n % len(USERS)]] += 1
    found = _profiles(run, secret)
    return all(
        isinstance(p, dict) and p["events"].get("add_to_cart", 0) == expected[u]
        for u, p in found.items()
    )


def _models(run: Running, secret: str) -> Any:
    """Every version (which ones are active) and the running experiment."""
    _, _, body = http("GET", run.base + "/v1/models", key=secret)
    return json.loads(body)


def _rules(run: Running, secret: str) -> Any:
    """The merchandising rules served, with their version."""
    _, _, body = http("GET", run.base + "/v1/rules", key=secret)
    return json.loads(body)


def _tables(data: Path) -> dict[str, dict[bytes, bytes]]:
    """Every row of every table partition but the broker's bookkeeping (offsets, positions)."""
    out = {}
    for path in partition_dbs(data):
        db = Rdict(str(path), Options(raw_mode=True))
        out[path.name] = {
            k: v for k, v in db.items() if k != FAUST_OFFSET_KEY and not is_position_key(k)
        }
        db.close()
    return out


def _train(data: Path, broker: str, events: Path, horizon: str) -> str:
    out = _cli(data, "models", "train", "churn", "--events", str(events),
               "--horizon-days", horizon, "--broker", broker)  # fmt: skip
    found = re.search(r"registered (\S+) \(not active", out)
    assert found, out
    return found.group(1)


def _training_events(path: Path) -> Path:
    day, lines = 86_400_000, []
    for u in range(60):
        for k in range(4 if u % 3 else 1):
            ts = 1_600_000_000_000 + (u % 7) * day + k * 30 * day
            lines.append({"event_id": f"{u}-{k}", "type": "purchase", "user_id": f"u{u}",
                          "ts": ts, "item_id": f"i{(u + k) % 9}", "price": 3.0,
                          "props": {"order_id": f"{u}-{k}"}})  # fmt: skip
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def _fill(run: Running, data: Path, log: Path, tmp: Path) -> tuple[str, str]:
    """Catalog, events (carts, views, consent), two churn versions, one active, an experiment."""
    secret, broker = _secret(data), _broker_url(log)
    (tmp / "catalog.csv").write_text(CATALOG)
    assert "catalog import: 4" in _cli(data, "catalog", "import", str(tmp / "catalog.csv"),
                                       "--broker", broker)  # fmt: skip
    time.sleep(1.0)  # the catalog first, so the profiles get categories
    _post(run, secret, [_event(n) for n in range(60)])
    _post(run, secret, [_event(n, "product_view") for n in range(30)])
    _post(run, secret, [_event(n, "consent") for n in range(len(USERS))])
    wait_until(lambda: _carts_counted(run, secret, 60), 120, what="60 carts folded")
    training = _training_events(tmp / "train.jsonl")
    first, second = _train(data, broker, training, "30"), _train(data, broker, training, "20")
    status, _, body = http("POST", run.base + "/v1/models/churn/activate",
                           {"version": first}, key=secret, timeout=60)  # fmt: skip
    assert status == 200, body
    experiment = {"name": "keep-exp", "model": "churn", "candidate": second, "share": 0.5}
    status, _, body = http("PUT", run.base + "/v1/models/experiment", experiment,
                           key=secret, timeout=60)  # fmt: skip
    assert status == 200, body
    for n, etag in enumerate(('"0"', '"1"')):  # two versions: the second tombstones the first
        rules = {"rules": [{"id": f"keep-{n}", "action": "exclude", "match": {"brand": "No"}}]}
        status, _, body = http("PUT", run.base + "/v1/rules", rules, key=secret, timeout=60,
                               headers={"If-Match": etag})  # fmt: skip
        assert status == 200, body
    return first, second


def _settled(run: Running, secret: str) -> dict[str, Any]:
    """Profiles and models once two reads a second apart agree (the reader caught up)."""

    def same() -> dict[str, Any] | None:
        first = {"profiles": _profiles(run, secret), "models": _models(run, secret),
                 "rules": _rules(run, secret)}  # fmt: skip
        time.sleep(1.0)
        again = {"profiles": _profiles(run, secret), "models": _models(run, secret),
                 "rules": _rules(run, secret)}  # fmt: skip
        return first if first == again else None

    return wait_until(same, 60, what="a settled state")


def test_state_is_kept_across_a_stop_and_a_start(tmp_path: Path) -> None:
    data, env = tmp_path / "data", {"PERSONA_PARTITIONS": "2"}
    with _running(data, tmp_path / "first.log", env) as run:
        first, second = _fill(run, data, tmp_path / "first.log", tmp_path)
        before = _settled(run, _secret(data))
    tables = _tables(data)
    assert {name.rsplit("-", 1)[0] for name in tables} >= {
        "profiles", "clock", "catalog", "popularity",
    }  # fmt: skip
    models = before["models"]
    assert {(m["version"], m["active"]) for m in models["models"]} >= {
        (first, True), (second, False),
    }  # fmt: skip
    assert models["experiment"]["candidate"] == second

    with _running(data, tmp_path / "second.log", env) as run:
        assert "kept state: " in (tmp_path / "second.log").read_text()
        secret = _secret(data)
        assert before["rules"]["version"] == "2"
        assert _settled(run, secret) == before  # profiles, catalog, models, experiment, rules
        _post(run, secret, [_event(n) for n in range(90)])  # 0..59 again: repeats, not counted
        wait_until(lambda: _carts_counted(run, secret, 90), 120, what="90 carts folded")
    after = _tables(data)
    assert after["catalog-0.db"] == tables["catalog-0.db"]

    with _running(data, tmp_path / "fresh.log", env, flag="--fresh") as run:
        out = (tmp_path / "fresh.log").read_text()
        assert "--fresh: starting from empty state" in out
        assert "no state kept in the data dir: starting empty" in out
        assert set(_profiles(run, _secret(data)).values()) == {404}
        models = _models(run, _secret(data))
        assert {m["version"] for m in models["models"]}.isdisjoint({first, second})
        assert models["experiment"] is None


def test_the_kept_tables_are_the_same_after_a_restart(tmp_path: Path) -> None:
    data, env = tmp_path / "data", {"PERSONA_PARTITIONS": "2"}
    with _running(data, tmp_path / "first.log", env) as run:
        secret = _secret(data)
        _post(run, secret, [_event(n) for n in range(40)])
        wait_until(lambda: _carts_counted(run, secret, 40), 120, what="40 carts folded")
    tables = _tables(data)
    with _running(data, tmp_path / "second.log", env) as run:
        assert _carts_counted(run, _secret(data), 40)
    assert _tables(data) == tables  # every row of every table, byte for byte


def _kill_worker(run: Running) -> None:
    (pid,) = [p for p in _children(run.proc.pid) if _kind(p) == "worker"]
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: [p for p in _children(run.proc.pid) if _kind(p) == "worker" and p != pid],
        60,
        what="a new worker",
    )


def test_a_worker_killed_three_times_mid_stream_loses_and_repeats_nothing(tmp_path: Path) -> None:
    data, env = tmp_path / "data", {"PERSONA_PARTITIONS": "2"}
    with _running(data, tmp_path / "run.log", env) as run:
        secret, sent = _secret(data), 0
        for _ in range(3):
            for _ in range(5):
                _post(run, secret, [_event(n) for n in range(sent, sent + 40)])
                sent += 40
            _kill_worker(run)  # mid-stream: the batches just accepted are still being folded
        wait_until(lambda: _carts_counted(run, secret, sent), 240, what=f"{sent} carts folded")
        assert run.proc.poll() is None


def test_what_was_folded_before_a_kill_of_everything_is_kept(tmp_path: Path) -> None:
    data, env = tmp_path / "data", {"PERSONA_PARTITIONS": "2"}
    with _running(data, tmp_path / "first.log", env) as run:
        secret = _secret(data)
        _post(run, secret, [_event(n) for n in range(120)])
        wait_until(lambda: _carts_counted(run, secret, 120), 120, what="120 carts folded")
        everything = [*_children(run.proc.pid), run.proc.pid]  # broker, worker, reader, run
        for pid in everything:
            os.kill(pid, signal.SIGKILL)
        run.proc.wait(30)
    with _running(data, tmp_path / "second.log", env) as run:
        assert "kept state: " in (tmp_path / "second.log").read_text()
        wait_until(lambda: _carts_counted(run, secret, 120), 60, what="the 120 kept carts")
        _post(run, secret, [_event(n) for n in range(100, 160)])  # 100..119 again: repeats
        wait_until(lambda: _carts_counted(run, secret, 160), 120, what="160 carts folded")


def test_a_kept_table_that_cannot_be_opened_stops_run_with_a_message(tmp_path: Path) -> None:
    damaged = tmp_path / "data" / "faust" / "v1" / "tables" / "profiles-0.db"
    damaged.mkdir(parents=True)
    (damaged / "CURRENT").write_text("MANIFEST-000099\n")  # names a manifest that is not there
    port, log = free_port(), tmp_path / "run.log"
    with log.open("w") as out:
        proc = _start_run(tmp_path / "data", port, "--no-demo", 2, subprocess.STDOUT, {},
                          out.fileno())  # fmt: skip
    try:
        assert proc.wait(120) == 1
    finally:
        _stop(proc)
    text = log.read_text()
    assert "could not bring the state kept in" in text and "--fresh" in text
    assert "Traceback" not in text


def test_fresh_is_refused_with_a_broker_url(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_")}
    done = subprocess.run(
        [sys.executable, "-m", "persona", "run", "--fresh", "--broker", "kafka://127.0.0.1:1",
         "--data-dir", str(tmp_path / "data")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--fresh" in done.stderr and "Kafka changelogs are the state" in done.stderr
    assert not (tmp_path / "data" / "faust").exists()
