"""How every Kafka client Persona makes connects: one value, built from the settings at start-up.

`KafkaClientConfig` carries the broker URL and the security settings (PERSONA_KAFKA_SECURITY and
its files and credentials) and renders them for each client library: Faust's
`broker_credentials`, aiokafka's keyword arguments and librdkafka's configuration. Functions in
`streams` take a `KafkaClientConfig` or a bare broker URL (plaintext: the embedded broker, tests).
`client_config` builds the value at an entry point and, for TLS, shakes hands with a bootstrap
server first, so a wrong CA or an unreachable TLS port stops start-up with a message naming the
setting instead of a retry loop deep inside a client.
"""

from __future__ import annotations

import socket
import ssl
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
    if config.tls:
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
    assert config.ssl_context is not None
    where = f"{host}:{port}"
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise KafkaConnectError(
            f"cannot reach the Kafka broker at {where} (PERSONA_BROKER_URL): {reason}"
        ) from None
    with raw:
        try:
            config.ssl_context.wrap_socket(raw, server_hostname=host).close()
        except ssl.SSLCertVerificationError as exc:
            raise KafkaConnectError(_untrusted(config, where, exc)) from None
        except OSError as exc:  # ssl.SSLError included
            reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
            raise KafkaConnectError(
                f"TLS handshake with the Kafka broker at {where} failed "
                f"(PERSONA_KAFKA_SECURITY={config.protocol}; is it a TLS listener?): {reason}"
            ) from None


def _untrusted(config: KafkaClientConfig, where: str, exc: ssl.SSLCertVerificationError) -> str:
    trusted = (
        f"PERSONA_KAFKA_CA_FILE={str(config.ca_file)!r}" if config.ca_file else "the system's CAs"
    )
    return (
        f"the Kafka broker at {where} (PERSONA_BROKER_URL) presented a certificate that "
        f"{trusted} does not trust: {exc.verify_message}"
    )
