"""A reader process beside a real worker: it serves the worker's tables read-only, produces events,
and shares its port with another reader (SO_REUSEPORT)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker, free_port
from tests.conftest import ROOT, SCOPES, SECRET, Worker, http, start_worker, wait_until

pytestmark = pytest.mark.integration


def start_reader(worker: Worker, port: int, index: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        {
            "PERSONA_API_KEYS": f"test:{SECRET}:{SCOPES}",
            "PERSONA_PARTITIONS": "4",
            "PERSONA_LOG_LEVEL": "info",
        }
    )
    cmd = [
        sys.executable,
        "-m",
        "persona",
        "reader",
        "--broker",
        worker.broker_url,
        "--port",
        str(port),
        "--data-dir",
        str(worker.data_dir),
        "--index",
        str(index),
    ]
    log = (worker.data_dir / f"reader-{index}.log").open("ab")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of its own: another worker on the session broker would join the session worker's
    consumer group and take partitions from under the other tests."""
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as own:
        yield own


def test_readers_serve_the_workers_state(broker: EmbeddedBroker, tmp_path: Path) -> None:
    worker = start_worker(broker.url, tmp_path / "w")
    port = free_port()
    readers = [start_reader(worker, port, i) for i in range(2)]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http("GET", base + "/readyz")[0] == 200, timeout=90, what="reader")
        # one ready reader answers the shared port: wait for the other too, or it may still be
        # starting (no signal handler yet) when the teardown stops it
        logs = [worker.data_dir / f"reader-{i}.log" for i in range(2)]
        wait_until(
            lambda: all(b"serving on" in log.read_bytes() for log in logs),
            timeout=120,
            what="both readers serving",
        )
        product = {
            "item_id": "R1",
            "title": "Reader mug",
            "url": "https://s.example/R1",
            "image_url": "https://s.example/R1.jpg",
            "price": 3.5,
            "currency": "EUR",
        }
        import asyncio

        from engine.catalog import validate_product
        from persona.cli import import_catalog

        asyncio.run(import_catalog(broker.url, 4, [validate_product(product)]))
        events = [
            {
                "event_id": "rp-1",
                "type": "add_to_cart",
                "user_id": "reader-user",
                "ts": 1_700_000_000_000,
                "item_id": "R1",
            },
        ]
        status, _, body = http("POST", base + "/v1/events", events)
        assert status == 202 and json.loads(body)["accepted"] == 1

        def personal() -> bool:
            s, headers, b = http(
                "GET", base + "/v1/users/reader-user/blocks/cart_reminder?format=json"
            )
            return s == 200 and "X-Persona-Fallback" not in headers and b"R1" in b

        wait_until(personal, timeout=60, what="the reader to see the worker's write")
        # Both readers answer on the one port and each catches up on its own round (0.15 s), so
        # the first personal answer may come from one of them only: wait until ten answers in a
        # row are personal, i.e. both readers see the same state.
        wait_until(
            lambda: all(personal() for _ in range(10)),
            timeout=10,
            what="both readers to see the worker's write",
        )
        status, _, body = http("GET", base + "/v1/feeds/google.tsv")
        assert status == 200 and b"R1\tReader mug" in body
        status, _, body = http(
            "POST",
            base + "/v1/blocks:batch",
            {"block": "cart_reminder", "format": "json", "user_ids": ["reader-user", "x"]},
        )
        results = json.loads(body)["results"]
        assert results["reader-user"]["fallback"] is False and results["x"]["fallback"] is True
        status, _, body = http("GET", base + "/v1/users/reader-user/profile")
        assert status == 200 and json.loads(body)["cart"] == {"R1": 1}
    finally:
        for proc in readers:
            proc.terminate()
        for proc in readers:
            proc.wait(10)
        worker.stop()
    assert all(proc.returncode == 0 for proc in readers)
    assert not (worker.data_dir / "readers").exists() or not any(
        (worker.data_dir / "readers").iterdir()
    )


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_reader_serves_https_with_the_configured_certificate(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl
    import urllib.error
    import urllib.request

    cert, key = _self_signed(tmp_path)
    worker = start_worker(broker.url, tmp_path / "w")
    port = free_port()
    monkeypatch.setenv("PERSONA_TLS_CERT", str(cert))
    monkeypatch.setenv("PERSONA_TLS_KEY", str(key))
    reader = start_reader(worker, port, 0)
    trusted = ssl.create_default_context(cafile=str(cert))
    headers = {"Authorization": f"Bearer {SECRET}"}

    def get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def ready() -> bool:
        try:
            return get(f"https://127.0.0.1:{port}/readyz", trusted)[0] == 200
        except OSError:
            return False

    try:
        wait_until(ready, timeout=90, what="the TLS reader")
        status, body = get(
            f"https://127.0.0.1:{port}/v1/users/nobody/blocks/recommendations?format=json", trusted
        )
        assert status == 200 and json.loads(body)
        with pytest.raises(OSError):  # plain HTTP is not served on the TLS port
            get(f"http://127.0.0.1:{port}/readyz")
        with pytest.raises(urllib.error.URLError) as refused:  # the certificate is ours
            get(f"https://127.0.0.1:{port}/readyz", ssl.create_default_context())
        assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
    finally:
        reader.terminate()
        reader.wait(10)
        worker.stop()
