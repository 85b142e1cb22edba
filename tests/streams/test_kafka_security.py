"""streams/kafka_security.py: one configuration rendered for Faust, aiokafka and librdkafka, and the
start-up TLS check against a real TLS server (no broker needed)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from engine.settings import Settings, SettingsError, load_settings
from streams.broker import EmbeddedBroker, free_port
from streams.kafka_security import (
    KafkaClientConfig,
    KafkaConnectError,
    as_config,
    check_sasl,
    check_tls,
    client_config,
    from_settings,
)
from tests.streams.tls import Pki, make_pki

PASSWORD = "s3cret-kafka-password-value"
URL = "kafka://127.0.0.1:9093;kafka://127.0.0.2:9093"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _settings(**env: str) -> Settings:
    return load_settings({}, {f"PERSONA_KAFKA_{k.upper()}": v for k, v in env.items()})


def _sasl_ssl(pki: Pki) -> Settings:
    return _settings(security="sasl_ssl", ca_file=str(pki.ca), sasl_mechanism="SCRAM-SHA-512",
                     username="persona-worker", password=PASSWORD)  # fmt: skip


def test_a_bare_url_is_plaintext() -> None:
    config = as_config(URL)
    assert config.aiokafka() == {
        "bootstrap_servers": "127.0.0.1:9093,127.0.0.2:9093",
        "security_protocol": "PLAINTEXT",
    }
    assert config.faust_credentials() is None
    assert config.librdkafka() == {
        "bootstrap.servers": "127.0.0.1:9093,127.0.0.2:9093",
        "security.protocol": "plaintext",
    }
    assert as_config(config) is config


def test_ssl_renders_one_verifying_context_for_every_client(pki: Pki) -> None:
    config = from_settings(_settings(security="ssl", ca_file=str(pki.ca)), URL)
    context = config.ssl_context
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert config.aiokafka()["ssl_context"] is context
    assert config.aiokafka()["security_protocol"] == "SSL"
    faust_auth = credentials_to_aiokafka_auth(config.faust_credentials())
    assert faust_auth == {"security_protocol": "SSL", "ssl_context": context}
    assert config.librdkafka()["ssl.ca.location"] == str(pki.ca)
    assert config.librdkafka()["security.protocol"] == "ssl"


def test_sasl_ssl_scram_for_faust_aiokafka_and_librdkafka(pki: Pki) -> None:
    config = from_settings(_sasl_ssl(pki), URL)
    expected = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "persona-worker",
        "sasl_plain_password": PASSWORD,
        "ssl_context": config.ssl_context,
    }
    assert credentials_to_aiokafka_auth(config.faust_credentials()) == expected
    assert config.aiokafka() == {"bootstrap_servers": config.bootstrap, **expected}
    rdkafka = config.librdkafka()
    assert rdkafka["sasl.mechanism"] == "SCRAM-SHA-512" and rdkafka["sasl.password"] == PASSWORD
    assert rdkafka["security.protocol"] == "sasl_ssl"


def test_sasl_plaintext_has_no_tls(pki: Pki) -> None:
    settings = _settings(security="sasl_plaintext", sasl_mechanism="PLAIN", username="u",
                         password=PASSWORD)  # fmt: skip
    config = from_settings(settings, URL)
    assert config.ssl_context is None and "ssl_context" not in config.aiokafka()
    auth = credentials_to_aiokafka_auth(config.faust_credentials())
    assert auth["security_protocol"] == "SASL_PLAINTEXT" and auth["sasl_mechanism"] == "PLAIN"


def test_aiokafka_accepts_the_configuration(pki: Pki) -> None:
    """A real aiokafka client is built from the keyword arguments (its own checks run)."""

    async def build() -> dict[str, Any]:
        producer = AIOKafkaProducer(**from_settings(_sasl_ssl(pki), URL).aiokafka())
        client = producer.client
        await client.close()
        return {"protocol": client._security_protocol, "mechanism": client._sasl_mechanism}

    assert asyncio.run(build()) == {"protocol": "SASL_SSL", "mechanism": "SCRAM-SHA-512"}


def test_the_password_is_never_shown(pki: Pki) -> None:
    config = from_settings(_sasl_ssl(pki), URL)
    assert PASSWORD not in repr(config)
    assert PASSWORD not in repr(config.faust_credentials())


def test_a_file_that_is_not_a_certificate_names_the_setting(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(SettingsError, match="PERSONA_KAFKA_CA_FILE"):
        from_settings(_settings(security="ssl", ca_file=str(bogus)), URL)


def test_a_client_key_that_does_not_match_names_the_settings(pki: Pki, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    settings = _settings(security="ssl", ca_file=str(pki.ca), cert_file=str(pki.cert),
                         key_file=str(other.key))  # fmt: skip
    with pytest.raises(SettingsError, match="PERSONA_KAFKA_CERT_FILE / PERSONA_KAFKA_KEY_FILE"):
        from_settings(settings, URL)


# -- the start-up check against a real TLS server ------------------------------------------------
@pytest.fixture
def tls_server(pki: Pki) -> Iterator[int]:
    """A TLS listener on loopback with the PKI's certificate; completes handshakes until closed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pki.cert), str(pki.key))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):  # the client gave up: a wrong CA
                    context.wrap_socket(conn, server_side=True).close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    listener.close()
    thread.join(5)


def test_the_right_ca_passes(pki: Pki, tls_server: int) -> None:
    settings = _settings(security="ssl", ca_file=str(pki.ca))
    config = client_config(settings, f"kafka://127.0.0.1:{free_port()};127.0.0.1:{tls_server}")
    assert config.tls  # the first server is down, the second answers: start-up goes on


def test_a_wrong_ca_is_a_clear_error(tls_server: int, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    config = from_settings(
        _settings(security="ssl", ca_file=str(other.ca)), f"127.0.0.1:{tls_server}"
    )
    with pytest.raises(KafkaConnectError) as info:
        check_tls(config, timeout=10)
    message = str(info.value)
    assert "PERSONA_KAFKA_CA_FILE" in message and str(other.ca) in message
    assert "does not trust" in message


def test_a_plaintext_port_is_a_clear_error(pki: Pki) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts, never speaks TLS
    port = listener.getsockname()[1]

    def close_first() -> None:
        conn, _ = listener.accept()
        conn.recv(4096)  # the ClientHello
        conn.sendall(b"\x00\x00\x00\x00not tls")
        conn.close()

    thread = threading.Thread(target=close_first, daemon=True)
    thread.start()
    try:
        config = from_settings(_settings(security="ssl", ca_file=str(pki.ca)), f"127.0.0.1:{port}")
        with pytest.raises(KafkaConnectError, match=r"TLS handshake .* failed"):
            check_tls(config, timeout=10)
    finally:
        thread.join(5)
        listener.close()


def test_an_unreachable_port_names_the_broker_url(pki: Pki) -> None:
    config = from_settings(
        _settings(security="ssl", ca_file=str(pki.ca)), f"127.0.0.1:{free_port()}"
    )
    with pytest.raises(
        KafkaConnectError, match=r"cannot reach .* \(PERSONA_BROKER_URL\): Connection refused"
    ):
        check_tls(config, timeout=5)


def test_plaintext_is_not_checked() -> None:
    """No handshake for plaintext: the embedded broker may still be starting."""
    url = f"kafka://127.0.0.1:{free_port()}"  # nobody listens there
    assert client_config(Settings(), url) == KafkaClientConfig(url)


def _sasl_plaintext(mechanism: str) -> Settings:
    return _settings(security="sasl_plaintext", sasl_mechanism=mechanism,
                     username="persona-worker", password=PASSWORD)  # fmt: skip


def test_a_mechanism_the_broker_refuses_names_the_setting(broker: EmbeddedBroker) -> None:
    """The real broker refusing the SASL mechanism stops start-up naming
    PERSONA_KAFKA_SASL_MECHANISM: before, every entry point ended in aiokafka's "Unable to
    bootstrap" and a generic "do PERSONA_KAFKA_SECURITY and its credentials match"."""
    with pytest.raises(KafkaConnectError) as refused:
        client_config(_sasl_plaintext("PLAIN"), broker.url)
    message = str(refused.value)
    assert "PERSONA_KAFKA_SASL_MECHANISM=PLAIN" in message, message
    assert f"127.0.0.1:{broker.port}" in message and PASSWORD not in message, message


class _SaslListener:
    """A loopback socket that reads one request and answers it with `reply(request)` (None:
    closes the connection), for the answers the embedded broker cannot give."""

    def __init__(self, reply: Any) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, args=(reply,), daemon=True)
        self.thread.start()

    def _serve(self, reply: Any) -> None:
        conn, _ = self.listener.accept()
        with conn:
            size = int.from_bytes(conn.recv(4), "big")
            request = b""
            while len(request) < size:
                request += conn.recv(size - len(request))
            self.requests.append(request)
            answer = reply(request)
            if answer is not None:
                conn.sendall(len(answer).to_bytes(4, "big") + answer)

    def close(self) -> None:
        self.thread.join(5)
        self.listener.close()


def _sasl_answer(error: int, *mechanisms: str) -> Any:
    def reply(request: bytes) -> bytes:
        listed = b"".join(len(m).to_bytes(2, "big") + m.encode() for m in mechanisms)
        count = len(mechanisms).to_bytes(4, "big")
        return request[4:8] + error.to_bytes(2, "big") + count + listed  # its correlation id

    return reply


def test_an_accepted_mechanism_passes_the_check() -> None:
    """A SASL handshake the broker accepts passes (the credentials are the broker's to judge
    when the clients authenticate); the request names the configured mechanism."""
    server = _SaslListener(_sasl_answer(0, "SCRAM-SHA-512", "PLAIN"))
    try:
        check_sasl(from_settings(_sasl_plaintext("SCRAM-SHA-512"), f"127.0.0.1:{server.port}"))
    finally:
        server.close()
    assert server.requests[0][:4] == (17).to_bytes(2, "big") + (1).to_bytes(2, "big")
    assert server.requests[0].endswith(b"\x00\x0dSCRAM-SHA-512")


def test_a_refused_mechanism_lists_what_the_broker_offers() -> None:
    server = _SaslListener(_sasl_answer(33, "SCRAM-SHA-256", "SCRAM-SHA-512"))
    try:
        with pytest.raises(KafkaConnectError) as refused:
            check_sasl(from_settings(_sasl_plaintext("PLAIN"), f"127.0.0.1:{server.port}"))
    finally:
        server.close()
    message = str(refused.value)
    assert "PERSONA_KAFKA_SASL_MECHANISM=PLAIN" in message, message
    assert "SCRAM-SHA-256, SCRAM-SHA-512" in message, message


def test_a_listener_without_sasl_names_the_protocol() -> None:
    """Kafka answers a SASL handshake on a PLAINTEXT listener with ILLEGAL_SASL_STATE (34)."""
    server = _SaslListener(_sasl_answer(34))
    try:
        with pytest.raises(KafkaConnectError, match=r"PERSONA_KAFKA_SECURITY=sasl_plaintext"):
            check_sasl(from_settings(_sasl_plaintext("PLAIN"), f"127.0.0.1:{server.port}"))
    finally:
        server.close()


def test_a_listener_that_hangs_up_names_the_protocol() -> None:
    server = _SaslListener(lambda request: None)
    try:
        with pytest.raises(KafkaConnectError, match=r"closed the connection .*SECURITY=sasl_pl"):
            check_sasl(from_settings(_sasl_plaintext("PLAIN"), f"127.0.0.1:{server.port}"))
    finally:
        server.close()


def _trickled(head: bytes, check: Callable[[int], None]) -> BaseException | None:
    """What `check(port)` raised against a listener that reads the client's first bytes, sends
    `head` and then a byte every 0.2 s (each read well within the check's 1 s timeout); fails
    when the check still runs after 60 s (its bound is 1 s: a loaded machine, a wide margin)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(head)
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    conn.sendall(b"\x00")
                stop.wait(0.2)

    server = threading.Thread(target=trickle, daemon=True)
    server.start()
    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            check(port)
            outcome.append(None)
        except BaseException as exc:  # what the check raised: the caller asserts it
            outcome.append(exc)

    client = threading.Thread(target=probe, daemon=True)
    client.start()
    client.join(60)
    gave_up = not client.is_alive()
    stop.set()
    server.join(5)
    listener.close()
    client.join(5)
    assert gave_up, "the check still reads a trickled answer after 60 s"
    return outcome[0]


def test_a_broker_that_trickles_its_answer_is_given_up_on_in_time() -> None:
    """The check's timeout bounds the whole SASL answer, not each read: a listener that announces
    64 KiB and sends a byte every 0.2 s held start-up for hours (65,536 reads of 0.2 s)."""
    settings = _sasl_plaintext("PLAIN")
    raised = _trickled(
        (64 * 1024).to_bytes(4, "big"),
        lambda port: check_sasl(from_settings(settings, f"127.0.0.1:{port}"), timeout=1.0),
    )
    assert isinstance(raised, KafkaConnectError), raised
    assert "did not answer a SASL handshake within 1 s" in str(raised), raised


def test_a_tls_listener_that_trickles_its_handshake_is_given_up_on_in_time(pki: Pki) -> None:
    """The check's timeout bounds the whole TLS handshake, not each read: a listener that starts
    a 16 KiB handshake record and sends a byte every 0.2 s would hold start-up for about an hour
    otherwise. (CPython's ssl module keeps one deadline for a handshake on a socket with a
    timeout: a guard, which passed when it was written.)"""
    settings = _settings(security="ssl", ca_file=str(pki.ca))
    raised = _trickled(
        b"\x16\x03\x03\x40\x00",  # a handshake record of 16,384 bytes follows
        lambda port: check_tls(from_settings(settings, f"127.0.0.1:{port}"), timeout=1.0),
    )
    assert isinstance(raised, KafkaConnectError), raised
    assert "TLS handshake" in str(raised) and "timed out" in str(raised), raised
