"""How every Kafka client Persona makes connects: one value, built from the settings at start-up.

`KafkaClientConfig` carries the broker URL and the security settings (PERSONA_KAFKA_SECURITY and
its files and credentials) and renders them for each client library: Faust's
`broker_credentials`, aiokafka's keyword arguments and librdkafka's configuration. Functions in
`streams` take a `KafkaClientConfig` or a bare broker URL (plaintext: the embedded broker, tests).
`client_config` builds the value at an entry point and, for TLS, shakes hands with a bootstrap
server first, so a wrong CA or an unreachable TLS port stops start-up with a message naming the
setting instead of a retry loop deep inside a client; with SASL it also asks that server whether
it takes the configured mechanism (Kafka's SaslHandshake), so a wrong mechanism or a listener
without SASL is named too.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.settings import Settings, SettingsError

HANDSHAKE_TIMEOUT = 10.0  # seconds the start-up check waits for a TLS bootstrap server


class KafkaConnectError(SettingsError):
    """The configured cluster cannot be reached with the configured security (start-up)."""


def bootstrap_servers(broker_url: str) -> str:
    """`kafka://a:9092;kafka://b:9092` -> `a:9092,b:9092` (a bare `host:port` stays as it is)."""
    return ",".join(part.split("://", 1)[-1] for part in broker_url.split(";") if part)


@dataclass(frozen=True)
class KafkaClientConfig:
    url: str  # kafka://host:port, several separated by ';'
    protocol: str = "plaintext"  # engine.settings.KAFKA_PROTOCOLS
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    mechanism: str | None = None  # engine.settings.KAFKA_MECHANISMS
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    @property
    def bootstrap(self) -> str:
        return bootstrap_servers(self.url)

    @property
    def tls(self) -> bool:
        return self.protocol in ("ssl", "sasl_ssl")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("sasl_")

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer / AIOKafkaConsumer / AIOKafkaAdminClient."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.protocol.upper(),
        }
        if self.tls:
            kwargs["ssl_context"] = self.ssl_context
        if self.sasl:
            kwargs["sasl_mechanism"] = self.mechanism
            kwargs["sasl_plain_username"] = self.username
            kwargs["sasl_plain_password"] = self.password
        return kwargs

    def faust_credentials(self) -> Any:
        """`broker_credentials` for faust.App (None: plaintext)."""
        import faust

        if self.sasl:
            return faust.SASLCredentials(
                username=self.username,
                password=self.password,
                mechanism=self.mechanism,
                ssl_context=self.ssl_context if self.tls else None,
            )
        if self.tls:
            return faust.SSLCredentials(self.ssl_context)
        return None

    def librdkafka(self) -> dict[str, str]:
        """Configuration for confluent-kafka (librdkafka) clients."""
        conf = {"bootstrap.servers": self.bootstrap, "security.protocol": self.protocol}
        optional = {
            "ssl.ca.location": self.ca_file,
            "ssl.certificate.location": self.cert_file,
            "ssl.key.location": self.key_file,
            "sasl.mechanism": self.mechanism,
            "sasl.username": self.username,
            "sasl.password": self.password,
        }
        conf.update({k: str(v) for k, v in optional.items() if v is not None})
        return conf


Broker = KafkaClientConfig | str  # a bare URL (or host:port list) means plaintext


def as_config(broker: Broker) -> KafkaClientConfig:
    return broker if isinstance(broker, KafkaClientConfig) else KafkaClientConfig(broker)


def from_settings(settings: Settings, broker_url: str) -> KafkaClientConfig:
    """The client configuration for `broker_url` under the settings (no network)."""
    return KafkaClientConfig(
        url=broker_url,
        protocol=settings.kafka_security,
        ca_file=settings.kafka_ca_file,
        cert_file=settings.kafka_cert_file,
        key_file=settings.kafka_key_file,
        mechanism=settings.kafka_sasl_mechanism,
        username=settings.kafka_username,
        password=settings.kafka_password,
        ssl_context=_ssl_context(settings) if settings.kafka_security.endswith("ssl") else None,
    )


def client_config(settings: Settings, broker_url: str) -> KafkaClientConfig:
    """`from_settings`, then (TLS) a handshake with a bootstrap server: entry points call this."""
    config = from_settings(settings, broker_url)
    if config.sasl:
        check_sasl(config)  # over TLS with sasl_ssl: the TLS check comes with it
    elif config.tls:
        check_tls(config)
    return config


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    """Verifies brokers against PERSONA_KAFKA_CA_FILE (or the system's CAs when unset)."""
    ca = settings.kafka_ca_file
    try:
        context = ssl.create_default_context(cafile=None if ca is None else str(ca))
    except ssl.SSLError as exc:
        raise SettingsError(
            f"PERSONA_KAFKA_CA_FILE={str(ca)!r} holds no usable PEM certificate: {exc}"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.kafka_cert_file is not None and settings.kafka_key_file is not None:
        try:
            context.load_cert_chain(
                str(settings.kafka_cert_file),
                str(settings.kafka_key_file),
                password=lambda: b"",  # an encrypted key fails here instead of prompting
            )
        except ssl.SSLError as exc:
            raise SettingsError(
                "PERSONA_KAFKA_CERT_FILE / PERSONA_KAFKA_KEY_FILE are not a PEM certificate "
                f"and its unencrypted private key: {exc}"
            ) from None
    return context


def check_tls(config: KafkaClientConfig, timeout: float = HANDSHAKE_TIMEOUT) -> None:
    """A TLS handshake with the first bootstrap server that answers; KafkaConnectError naming
    the setting to look at when none does."""
    errors = []
    for server in config.bootstrap.split(","):
        host, _, port = server.rpartition(":")
        try:
            _handshake(config, host.strip("[]"), int(port), timeout)
            return
        except KafkaConnectError as exc:
            errors.append(str(exc))
    raise KafkaConnectError("; ".join(errors))


def _handshake(config: KafkaClientConfig, host: str, port: int, timeout: float) -> None:
    _connect(config, host, port, timeout).close()


def _connect(config: KafkaClientConfig, host: str, port: int, timeout: float) -> socket.socket:
    """A connection to one bootstrap server, TLS-wrapped under ssl/sasl_ssl; KafkaConnectError
    naming the setting when it cannot be made."""
    where = f"{host}:{port}"
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise KafkaConnectError(
            f"cannot reach the Kafka broker at {where} (PERSONA_BROKER_URL): {reason}"
        ) from None
    if not config.tls:
        return raw
    assert config.ssl_context is not None
    try:
        return config.ssl_context.wrap_socket(raw, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raw.close()
        raise KafkaConnectError(_untrusted(config, where, exc)) from None
    except OSError as exc:  # ssl.SSLError included
        raw.close()
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise KafkaConnectError(
            f"TLS handshake with the Kafka broker at {where} failed "
            f"(PERSONA_KAFKA_SECURITY={config.protocol}; is it a TLS listener?): {reason}"
        ) from None


SASL_HANDSHAKE = 17  # Kafka's API key; version 1 answers the broker's enabled mechanisms
UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE = 33, 34
SASL_ANSWER_MAX = 64 * 1024  # bytes of a handshake answer read (a list of mechanism names)


def check_sasl(config: KafkaClientConfig, timeout: float = HANDSHAKE_TIMEOUT) -> None:
    """A SASL handshake (the mechanism only; no credentials are sent) with the first bootstrap
    server that answers; KafkaConnectError naming the setting to look at when none takes it.
    The user and password are the broker's to judge when the clients authenticate."""
    errors = []
    for server in config.bootstrap.split(","):
        host, _, port = server.rpartition(":")
        try:
            with _connect(config, host.strip("[]"), int(port), timeout) as sock:
                _sasl_handshake(config, sock, f"{host}:{port}", timeout)
            return
        except KafkaConnectError as exc:
            errors.append(str(exc))
    raise KafkaConnectError("; ".join(errors))


def _sasl_handshake(
    config: KafkaClientConfig, sock: socket.socket, where: str, timeout: float
) -> None:
    """Send the handshake and judge its answer, all of it within `timeout` seconds (each read
    is given what is left: a broker trickling its answer a byte at a time is given up on)."""
    deadline = time.monotonic() + timeout
    mechanism = config.mechanism or ""
    client, name = b"persona-check", mechanism.encode()
    request = struct.pack(">hhih", SASL_HANDSHAKE, 1, 1, len(client)) + client
    request += struct.pack(">h", len(name)) + name
    protocol = f"PERSONA_KAFKA_SECURITY={config.protocol}"
    try:
        sock.sendall(struct.pack(">i", len(request)) + request)
        error, offered = _parse_answer(_read_answer(sock, deadline))
    except TimeoutError:
        raise KafkaConnectError(
            f"the Kafka broker at {where} did not answer a SASL handshake within "
            f"{timeout:.0f} s ({protocol}; is it a Kafka SASL listener?)"
        ) from None
    except (OSError, ValueError) as exc:
        reason = f": {exc.strerror or exc}" if isinstance(exc, OSError) else ""
        raise KafkaConnectError(
            f"the Kafka broker at {where} closed the connection at the SASL handshake "
            f"({protocol}; is it a SASL listener, and TLS only with sasl_ssl?){reason}"
        ) from None
    if error == 0:
        return
    if error == UNSUPPORTED_SASL_MECHANISM:
        offers = (
            f" (it offers {', '.join(offered)})" if offered and mechanism not in offered else ""
        )
        raise KafkaConnectError(
            f"the Kafka broker at {where} does not accept PERSONA_KAFKA_SASL_MECHANISM="
            f"{mechanism}{offers}: set the mechanism its listener enables"
        )
    if error == ILLEGAL_SASL_STATE:
        raise KafkaConnectError(
            f"the Kafka broker at {where} does not use SASL on this listener ({protocol}): "
            "set PERSONA_KAFKA_SECURITY to the listener's protocol (plaintext or ssl)"
        )
    raise KafkaConnectError(
        f"the Kafka broker at {where} answered the SASL handshake with error {error} "
        f"({protocol}, PERSONA_KAFKA_SASL_MECHANISM={mechanism})"
    )


def _read_answer(sock: socket.socket, deadline: float) -> bytes:
    """One size-prefixed Kafka answer, read by `deadline` (a `time.monotonic()` time; else
    TimeoutError); ValueError when the connection closes first or the size is out of bounds."""
    size = struct.unpack(">i", _read_exactly(sock, 4, deadline))[0]
    if not 4 <= size <= SASL_ANSWER_MAX:
        raise ValueError(f"an answer of {size} bytes")
    return _read_exactly(sock, size, deadline)


def _read_exactly(sock: socket.socket, n: int, deadline: float) -> bytes:
    data = b""
    while len(data) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ValueError("closed")
        data += chunk
    return data


def _parse_answer(answer: bytes) -> tuple[int, list[str]]:
    """(error code, mechanisms) of a SaslHandshake v1 answer (after its correlation id); an
    answer too short for the list gives what it holds (the error code decides); ValueError when
    it has no error code."""
    if len(answer) < 6:
        raise ValueError("no error code")
    error = struct.unpack_from(">h", answer, 4)[0]
    offered: list[str] = []
    with contextlib.suppress(struct.error):  # a list cut short: what it holds
        (count,) = struct.unpack_from(">i", answer, 6)
        at = 10
        for _ in range(min(max(count, 0), 64)):
            (length,) = struct.unpack_from(">h", answer, at)
            name = answer[at + 2 : at + 2 + max(length, 0)]
            text = name.decode("ascii", errors="replace")[:64]  # the broker's: printed as seen
            offered.append("".join(c if c.isprintable() else "?" for c in text))
            at += 2 + max(length, 0)
    return error, offered


def _untrusted(config: KafkaClientConfig, where: str, exc: ssl.SSLCertVerificationError) -> str:
    trusted = (
        f"PERSONA_KAFKA_CA_FILE={str(config.ca_file)!r}" if config.ca_file else "the system's CAs"
    )
    return (
        f"the Kafka broker at {where} (PERSONA_BROKER_URL) presented a certificate that "
        f"{trusted} does not trust: {exc.verify_message}"
    )
