"""Issue 15 item 3: Persona on a Kafka cluster that requires TLS.

The embedded broker's own TLS options do not work in the shipped build (tansu 0.6 refuses `--cert`
with `--key`), so a real TLS terminator stands in front of it, as on many clusters: Debian's
stunnel4 accepts TLS on one loopback port with a certificate from a throwaway CA and forwards to
the broker, which advertises the TLS port, so every client connection (bootstrap and metadata
alike) goes through TLS. A worker and the CLI connect with PERSONA_KAFKA_SECURITY=ssl and events
fold; a wrong CA or a port nobody listens on stops them at start-up with a message naming the
setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streams.broker import EmbeddedBroker, free_port
from tests.conftest import (
    CLUSTER_SECRET,
    ROOT,
    SCOPES,
    SECRET,
    T0,
    http,
    start_worker,
    wait_until,
)
from tests.persona.test_run import _stop
from tests.streams.tls import Pki, Stunnel, make_pki, stunnel_binary

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class TlsCluster:
    url: str  # kafka://127.0.0.1:<the TLS port>
    pki: Pki
    directory: Path

    def env(self, ca: Path | None = None) -> dict[str, str]:
        ca = ca or self.pki.ca
        return {
            "PERSONA_KAFKA_SECURITY": "ssl",
            "PERSONA_KAFKA_CA_FILE": str(ca),
            "PERSONA_CLUSTER_SECRET": CLUSTER_SECRET,  # a broker URL needs it
        }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    stunnel_binary()  # skips with the reason when stunnel4 is missing
    directory = tmp_path_factory.mktemp("kafka-tls")
    pki = make_pki(directory / "pki")
    tls_port = free_port()
    log = directory / "broker.log"
    with (
        EmbeddedBroker(log_file=log, advertised_port=tls_port) as broker,
        Stunnel(directory, pki, accept=tls_port, connect=broker.port),
    ):
        yield TlsCluster(f"kafka://127.0.0.1:{tls_port}", pki, directory)


def persona(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """Run the `persona` command line; (exit code, stderr)."""
    full = {**os.environ, "PERSONA_PARTITIONS": "4", **env}
    done = subprocess.run(
        [sys.executable, "-m", "persona", *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        timeout=timeout,
    )
    return done.returncode, done.stderr.decode(errors="replace")


def events(user: str, n: int) -> list[dict[str, Any]]:
    return [
        {"event_id": f"tls-{user}-{i}", "type": "product_view", "user_id": user,
         "ts": T0 + i * 1000, "item_id": f"tls-item-{i}"}
        for i in range(n)
    ]  # fmt: skip


def write_events(path: Path, user: str, n: int) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in events(user, n)))
    return path


def profile(base: str, user: str) -> dict[str, Any] | None:
    status, _, body = http("GET", f"{base}/v1/users/{user}/profile")
    return json.loads(body) if status == 200 else None


def test_worker_and_cli_fold_events_over_tls(cluster: TlsCluster, tmp_path: Path) -> None:
    worker = start_worker(cluster.url, tmp_path / "worker", cluster.env())
    try:
        path = write_events(tmp_path / "events.jsonl", "tls-user", 5)
        code, err = persona(["replay", str(path), "--broker", cluster.url], cluster.env())
        assert code == 0, err
        folded = wait_until(
            lambda: (
                (p := profile(worker.base, "tls-user"))
                and p["events"].get("product_view") == 5
                and p
            ),
            timeout=60,
            what="the replayed events folded over TLS",
        )
        assert folded["recent_items"][0] == "tls-item-4"
    finally:
        worker.stop()


def test_run_with_a_reader_over_tls(cluster: TlsCluster, tmp_path: Path) -> None:
    """`persona run --broker`: the reader's own producer (`POST /v1/events`) and model registry
    and the worker's fold all go through TLS."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_")}
    env.update(cluster.env(), PERSONA_PARTITIONS="4", PERSONA_READERS="1",
               PERSONA_API_KEYS=f"test:{SECRET}:{SCOPES}")  # fmt: skip
    cmd = [sys.executable, "-m", "persona", "run", "--no-demo", "--broker", cluster.url,
           "--port", str(port), "--data-dir", str(tmp_path / "data")]  # fmt: skip
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: proc.poll() is not None or http("GET", base + "/readyz", key=None)[0] == 200,
            timeout=120,
            what="persona run /readyz",
        )
        assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
        assert http("POST", base + "/v1/events", events("tls-run-user", 3))[0] == 202
        wait_until(
            lambda: (p := profile(base, "tls-run-user")) and p["events"].get("product_view") == 3,
            timeout=60,
            what="events posted to the reader folded over TLS",
        )
    finally:
        _stop(proc, grace=30)


def test_client_certificates_over_mutual_tls(tmp_path: Path) -> None:
    """A listener that requires client certificates: the CLI with PERSONA_KAFKA_CERT_FILE and
    PERSONA_KAFKA_KEY_FILE produces; without them the broker cannot be used."""
    stunnel_binary()
    pki = make_pki(tmp_path / "pki")
    tls_port = free_port()
    url = f"kafka://127.0.0.1:{tls_port}"
    env = {"PERSONA_KAFKA_SECURITY": "ssl", "PERSONA_KAFKA_CA_FILE": str(pki.ca)}
    client = {"PERSONA_KAFKA_CERT_FILE": str(pki.cert), "PERSONA_KAFKA_KEY_FILE": str(pki.key)}
    path = write_events(tmp_path / "events.jsonl", "mtls-user", 2)
    with (
        EmbeddedBroker(log_file=tmp_path / "broker.log", advertised_port=tls_port) as broker,
        Stunnel(tmp_path, pki, accept=tls_port, connect=broker.port, client_ca=pki.ca),
    ):
        code, err = persona(["replay", str(path), "--broker", url], {**env, **client})
        assert code == 0, err
        code, err = persona(["replay", str(path), "--broker", url], env, timeout=180)
        assert code == 1 and "broker error" in err, err
    assert "peer did not return a certificate" in (tmp_path / "stunnel.log").read_text()


def test_plaintext_client_cannot_use_the_tls_port(cluster: TlsCluster, tmp_path: Path) -> None:
    """The port really is TLS: without PERSONA_KAFKA_SECURITY the CLI gets nowhere."""
    path = write_events(tmp_path / "events.jsonl", "plain-user", 1)
    code, err = persona(["replay", str(path), "--broker", cluster.url], {}, timeout=180)
    assert code == 1 and "broker error" in err and "PERSONA_KAFKA_SECURITY" in err, err
    assert "Traceback" not in err


def test_wrong_ca_stops_worker_and_cli_at_start(cluster: TlsCluster, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other-ca")
    env = cluster.env(ca=other.ca)
    worker_args = ["worker", "--broker", cluster.url, "--port", str(free_port()),
                   "--data-dir", str(tmp_path / "w")]  # fmt: skip
    path = write_events(tmp_path / "events.jsonl", "never", 1)
    for args in (worker_args, ["replay", str(path), "--broker", cluster.url]):
        code, err = persona(args, env, timeout=60)
        assert code == 2, err
        assert "PERSONA_KAFKA_CA_FILE" in err and "does not trust" in err, err
        assert str(other.ca) in err and "Traceback" not in err


def test_unreachable_tls_port_stops_the_worker_at_start(
    cluster: TlsCluster, tmp_path: Path
) -> None:
    nobody = f"kafka://127.0.0.1:{free_port()}"
    args = ["worker", "--broker", nobody, "--port", str(free_port()),
            "--data-dir", str(tmp_path / "w")]  # fmt: skip
    code, err = persona(args, cluster.env(), timeout=60)
    assert code == 2, err
    assert "cannot reach" in err and "PERSONA_BROKER_URL" in err, err
    assert "Traceback" not in err
