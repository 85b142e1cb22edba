"""Throwaway certificates (the `openssl` command line) and Debian's stunnel4 as a TLS terminator in
front of the embedded broker, for the Kafka security tests."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest

from streams.broker import wait_for_port

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
LEAF_EXTENSIONS = (
    "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    "basicConstraints=critical,CA:FALSE\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=serverAuth,clientAuth\n"
)


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate (what clients trust)
    cert: Path  # a certificate for 127.0.0.1 / localhost signed by the CA
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.skip("needs the openssl command line to make a throwaway CA")
    subprocess.run([binary, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(directory: Path) -> Pki:
    """A new CA and a leaf certificate for 127.0.0.1 signed by it (valid for two days)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_subject = f"/CN=Persona test CA {directory.name}"
    _openssl("req", "-x509", *EC_KEY, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", ca_subject, "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)  # fmt: skip
    _openssl("req", *EC_KEY, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost",
             cwd=directory)  # fmt: skip
    (directory / "leaf.ext").write_text(LEAF_EXTENSIONS)
    _openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext",
             cwd=directory)  # fmt: skip
    return Pki(directory / "ca.pem", directory / "leaf.pem", directory / "leaf.key")


def stunnel_binary() -> str:
    """Debian's stunnel4 (`make test` installs it when root with apt-get), or skip."""
    binary = shutil.which("stunnel4") or shutil.which("stunnel")
    if binary is None:
        pytest.skip(
            "stunnel4 is not installed: `make test` installs it when run as root with apt-get "
            "(or: apt-get install stunnel4)"
        )
    return binary


class Stunnel:
    """Accepts TLS on 127.0.0.1:`accept` with the PKI's certificate, forwards to `connect`; with
    `client_ca`, only clients presenting a certificate that CA signed."""

    def __init__(
        self, directory: Path, pki: Pki, accept: int, connect: int, client_ca: Path | None = None
    ) -> None:
        self.binary = stunnel_binary()
        self.directory = directory
        self.config = directory / "stunnel.conf"
        self.log = directory / "stunnel.log"
        self.accept = accept
        # client_ca: clients must present a certificate this CA signed (mutual TLS)
        mutual = (
            f"requireCert = yes\nverifyChain = yes\nCAfile = {client_ca}\n" if client_ca else ""
        )
        self.config.write_text(
            "foreground = yes\npid =\ndebug = warning\n[kafka]\n"
            f"accept = 127.0.0.1:{accept}\nconnect = 127.0.0.1:{connect}\n"
            f"cert = {pki.cert}\nkey = {pki.key}\n{mutual}"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Stunnel:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, str(self.config)], stdout=out, stderr=subprocess.STDOUT
            )
        wait_for_port("127.0.0.1", self.accept, 20.0, self.proc)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
