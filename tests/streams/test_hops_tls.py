"""Hops to workers that advertise https (issue 15 item 4): the forwarding worker verifies the
owner's certificate. Two real workers serve HTTPS with a certificate from a throwaway CA; `b`
trusts the CA (`SSL_CERT_FILE`), `a` does not: `b` forwards to `a` over verified TLS, while `a`
refuses `b`'s certificate and answers its requests itself, sending no hop."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker, free_port
from tests.conftest import ROOT, SCOPES, SECRET, wait_until
from tests.streams.test_hops import send_carts
from tests.streams.tls import Pki, make_pki

pytestmark = pytest.mark.integration

USERS = [f"tls-hop-{i}" for i in range(16)]


class TlsWorker:
    def __init__(self, broker: str, data: Path, pki: Pki, trust: bool) -> None:
        port = free_port()
        self.base = f"https://127.0.0.1:{port}"
        env = dict(os.environ)
        env.update(
            PERSONA_API_KEYS=f"test:{SECRET}:{SCOPES}",
            PERSONA_PARTITIONS="4",
            PERSONA_TLS_CERT=str(pki.cert),
            PERSONA_TLS_KEY=str(pki.key),
            PERSONA_ADVERTISED_URL=self.base,
            # what the worker's client trusts: the test CA, or a CA that signed nothing here
            SSL_CERT_FILE=str(pki.ca if trust else data.parent / "other-ca.pem"),
        )
        data.mkdir(parents=True)
        self.log = data / "worker.log"
        cmd = [sys.executable, "-m", "persona", "worker", "--broker", broker,
               "--port", str(port), "--data-dir", str(data)]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.context = ssl.create_default_context(cafile=str(pki.ca))

    def get(self, path: str, key: str | None = SECRET) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.base + path)
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.context) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()
        except OSError:
            return 0, {}, b""

    def metric(self, name: str) -> float:
        for line in self.get("/metrics", None)[2].decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsWorker, TlsWorker]]:
    root = tmp_path_factory.mktemp("hops-tls")
    pki = make_pki(root / "pki")
    pki.key.chmod(0o600)  # PERSONA_TLS_KEY is a secret file
    make_pki(root / "other")  # a CA the untrusting worker trusts instead
    (root / "other-ca.pem").write_bytes((root / "other" / "ca.pem").read_bytes())
    with EmbeddedBroker(log_file=root / "broker.log") as broker:
        a = TlsWorker(broker.url, root / "a", pki, trust=False)
        b = TlsWorker(broker.url, root / "b", pki, trust=True)
        try:
            wait_until(
                lambda: all(w.get("/readyz", None)[0] == 200 for w in (a, b)),
                timeout=180,
                what="both https workers ready after the rebalance",
            )
            asyncio.run(send_carts(broker.url, USERS, "t"))
            wait_until(lambda: _routed(b, a), timeout=90, what="b forwarding to a over https")
            yield a, b
        finally:
            a.stop()
            b.stop()


def _routed(via: TlsWorker, owner: TlsWorker) -> list[str]:
    """Users `via` answered 200 through `owner`."""
    routed = []
    for user in USERS:
        status, headers, _ = via.get(f"/v1/users/{user}/profile")
        if status == 200 and headers.get("X-Persona-Routed") == owner.base:
            routed.append(user)
    return routed


def test_hops_go_only_to_owners_whose_certificate_verifies(
    pair: tuple[TlsWorker, TlsWorker],
) -> None:
    a, b = pair
    assert _routed(b, a)  # b trusts the CA: a's users answered by a, over https
    assert a.metric("persona_hops_accepted_total") > 0
    accepted_by_b = b.metric("persona_hops_accepted_total")
    answers = [a.get(f"/v1/users/{user}/profile") for user in USERS]
    assert all(status in (200, 404) for status, _, _ in answers)  # answered, never a 5xx
    assert not any("X-Persona-Routed" in headers for _, headers, _ in answers)
    assert b.metric("persona_hops_accepted_total") == accepted_by_b  # nothing reached b
    assert "certificate verify failed" in a.log.read_text(errors="replace")  # why: TLS refused
