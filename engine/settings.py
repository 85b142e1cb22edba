"""One typed settings object, read only at entry points.

Precedence (highest first): command-line flags, `PERSONA_*` environment variables, the TOML file
named by `PERSONA_CONFIG`, defaults. An invalid value raises `SettingsError` naming the setting.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from engine.errors import SettingsError as SettingsError  # re-exported: callers import it here
from engine.files import check_secret_file

MIN_SECRET = 24  # characters of every secret (API keys: api/auth.py; the webhook secret)
KAFKA_PROTOCOLS = ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")
KAFKA_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
KAFKA_FILES = ("kafka_ca_file", "kafka_cert_file", "kafka_key_file", "kafka_password_file")
_SECRETS = frozenset(
    {"api_keys", "webhook_secret", "kafka_password", "cluster_secret", "catalog_feeds"}
)  # hidden
MIN_CLUSTER_SECRET = 32  # characters of PERSONA_CLUSTER_SECRET (engine/signing.py)


@dataclass(frozen=True)
class Settings:
    broker_url: str | None = None  # unset: `persona run` starts the embedded broker
    data_dir: Path = Path("data")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    api_keys: str | None = field(default=None, repr=False)  # holds secrets: never printed
    api_keys_file: Path | None = None
    rate_limits: str | None = None
    consent_default: str = "granted"  # or "required"
    partitions: int = 8  # partitions of the input topics and tables
    block_items: int = 6
    churn_threshold: float = 0.5
    template_dir: Path | None = None  # None: the templates shipped with the package
    log_level: str = "info"
    broker_session_timeout: float = 10.0  # seconds; Tansu delays joins by half of it
    abandoned_cart_minutes: float = 60.0  # event time before a cart counts as abandoned
    webhook_urls: str | None = None  # comma-separated URLs that receive every trigger
    # HMAC-SHA256 key for the X-Persona-Signature header; never printed
    webhook_secret: str | None = field(default=None, repr=False)
    lateness_days: float = 7.0  # events further behind the event-time clock are dead-lettered
    max_clock_skew_seconds: float = 300.0  # events further ahead of the wall clock: `future`
    advertised_url: str | None = None  # how other workers reach this one's API (routing)
    readers: int = 1  # read-only API processes beside the worker in `persona run` (0: none)
    max_restarts: int = 5  # `persona run` restarts a failing child this often in a row, then stops
    request_timeout: float = 10.0  # seconds a request may take before 503
    # browser collection (api/collect.py): the origins whose pages may send events with a
    # publishable key (`;`-separated), and POST /v1/collect requests per minute per client address
    collect_origins: str | None = None
    collect_per_minute: float = 600.0
    tls_cert: Path | None = None  # PEM certificate chain: serve HTTPS (with tls_key)
    tls_key: Path | None = None
    # CPU placement (Linux CPU lists such as "0" or "2-3,6"; None: the kernel places): the
    # worker and the embedded broker (the ingestion side), and the readers (the serving side)
    worker_cpus: frozenset[int] | None = None
    reader_cpus: frozenset[int] | None = None
    # Security of every Kafka client Persona makes (streams/kafka_security.py builds them)
    kafka_security: str = "plaintext"  # KAFKA_PROTOCOLS
    kafka_ca_file: Path | None = None  # PEM CAs that sign the brokers' certificates
    kafka_cert_file: Path | None = None  # a client certificate (PEM), with kafka_key_file
    kafka_key_file: Path | None = None
    kafka_sasl_mechanism: str | None = None  # KAFKA_MECHANISMS
    kafka_username: str | None = None
    kafka_password: str | None = field(default=None, repr=False)  # never printed
    kafka_password_file: Path | None = None  # or the password from this file
    # signs hops and registry/command records between Persona processes (engine/signing.py)
    cluster_secret: str | None = field(default=None, repr=False)  # never printed
    cluster_secret_file: Path | None = None  # or the secret from this file (0600, ours)
    # scheduled retraining (persona/retrain.py): every this many hours (fractions allowed; None:
    # never); promote a retrained version that beats the active one on the held-out window
    retrain_hours: float | None = None
    retrain_promote: bool = False
    # catalog feeds pulled on a schedule (persona/catalog_sync.py): `url@minutes;...`; feed URLs
    # often carry a token, so never printed
    catalog_feeds: str | None = field(default=None, repr=False)
    # the ad feeds' channel (engine/feeds.py): its title and the shop's home page
    feed_title: str = "Persona product feed"
    feed_link: str | None = None

    @property
    def consent_granted_by_default(self) -> bool:
        return self.consent_default == "granted"

    @property
    def embedded(self) -> bool:
        return self.broker_url is None

    @property
    def own_url(self) -> str:
        """The URL other workers use to reach this worker's API."""
        if self.advertised_url:
            return self.advertised_url
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "::", "") else self.http_host
        return f"http://{host}:{self.http_port}"


_ENV = {f.name: f"PERSONA_{f.name.upper()}" for f in fields(Settings)}


def _convert(name: str, value: Any) -> Any:
    """Turn a raw value from env/TOML/flags into the field's type, or raise SettingsError."""
    env = _ENV[name]
    if value is None or value == "":
        return None if name in _OPTIONAL else getattr(Settings, name)
    try:
        if name.startswith("kafka_"):
            return _kafka_value(name, value)
        if name in ("http_port", "partitions", "block_items"):
            number = int(value)
            if name == "http_port" and not 0 <= number <= 65535:
                raise ValueError("must be 0..65535")
            if name != "http_port" and not 1 <= number <= 1024:
                raise ValueError("must be 1..1024")
            return number
        if name in ("collect_origins", "collect_per_minute"):
            return _collect_value(name, value)
        if name == "readers":
            number = int(value)
            if not 0 <= number <= 64:
                raise ValueError("must be 0..64")
            return number
        if name == "max_restarts":
            number = int(value)
            if not 0 <= number <= 1000:
                raise ValueError("must be 0..1000")
            return number
        if name == "request_timeout":
            real = float(value)
            if not 0.1 <= real <= 600.0:
                raise ValueError("must be 0.1..600 seconds")
            return real
        if name in ("retrain_hours", "retrain_promote"):
            return _retrain_value(name, value)
        if name in ("catalog_feeds", "feed_link"):
            return _feed_value(name, str(value))
        if name == "rate_limits":
            parse_rate_limits(str(value))
            return str(value)
        if name in (
            "churn_threshold",
            "broker_session_timeout",
            "lateness_days",
            "abandoned_cart_minutes",
            "max_clock_skew_seconds",
        ):
            real = float(value)
            if name == "max_clock_skew_seconds" and not 0.0 <= real <= 86_400.0:
                raise ValueError("must be 0..86400 seconds")
            if name == "abandoned_cart_minutes" and not 0.0 < real <= 525_600.0:
                raise ValueError("must be more than 0 minutes and at most a year")
            if name == "lateness_days" and not 0.0 < real <= 3650.0:
                raise ValueError("must be more than 0 and at most 3650 days")
            if name == "churn_threshold" and not 0.0 <= real <= 1.0:
                raise ValueError("must be between 0 and 1")
            if name == "broker_session_timeout" and not 1.0 <= real <= 300.0:
                raise ValueError("must be 1..300 seconds")
            return real
        if name in ("data_dir", "api_keys_file", "template_dir", "tls_cert", "tls_key"):
            return Path(str(value)).expanduser()
        if name == "cluster_secret_file":
            return Path(str(value)).expanduser()
        if name == "consent_default":
            if value not in ("granted", "required"):
                raise ValueError("must be 'granted' or 'required'")
            return value
        if name == "log_level":
            level = str(value).lower()
            if level not in ("debug", "info", "warning", "error"):
                raise ValueError("must be debug, info, warning or error")
            return level
        if name == "broker_url":
            return _broker_url(str(value))
        if name in ("worker_cpus", "reader_cpus"):
            return parse_cpus(str(value))
        if name == "webhook_urls":
            urls = [u.strip() for u in str(value).split(",") if u.strip()]
            if not all(u.startswith(("http://", "https://")) for u in urls):
                raise ValueError("must be comma-separated http(s) URLs")
            return ",".join(urls)
        if name == "advertised_url":
            url = str(value).rstrip("/")
            if not url.startswith(("http://", "https://")):
                raise ValueError("must be an http(s) URL such as http://10.0.0.5:8080")
            return url
        return str(value)
    except (TypeError, ValueError) as exc:
        shown = "(hidden)" if name in _SECRETS else repr(value)
        raise SettingsError(f"invalid setting {env}={shown}: {exc}") from None


def _feed_value(name: str, value: str) -> str:
    if name == "catalog_feeds":
        parse_catalog_feeds(value)
        return value.strip()
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be the shop's http(s) URL, such as https://shop.example.com/")
    return value


def parse_catalog_feeds(text: str) -> list[tuple[str, float]]:
    """`url@minutes;...` -> [(url, minutes)]; ValueError (never quoting a URL) when malformed."""
    feeds: list[tuple[str, float]] = []
    for number, entry in enumerate((e.strip() for e in text.split(";") if e.strip()), 1):
        url, sep, minutes_text = entry.rpartition("@")
        try:
            minutes = float(minutes_text)
        except ValueError:
            minutes = -1.0
        if not sep or not url.startswith(("http://", "https://")):
            raise ValueError(f"entry {number} is not an http(s) URL@minutes")
        if not 0.01 <= minutes <= 10_080.0:  # nan fails too
            raise ValueError(f"entry {number}: minutes must be 0.01..10080 (a week)")
        feeds.append((url, minutes))
    return feeds


def _retrain_value(name: str, value: Any) -> Any:
    if name == "retrain_promote":
        text = str(value).lower()
        if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ValueError("must be true or false (1/0, yes/no, on/off)")
        return text in ("1", "true", "yes", "on")
    hours = float(value)
    if not 0.0 < hours <= 8760.0:  # nan fails too
        raise ValueError("must be more than 0 and at most 8760 hours (fractions allowed)")
    return hours


def _kafka_value(name: str, value: Any) -> Any:
    if name == "kafka_security":
        protocol = str(value).lower()
        if protocol not in KAFKA_PROTOCOLS:
            raise ValueError(f"must be one of {', '.join(KAFKA_PROTOCOLS)}")
        return protocol
    if name == "kafka_sasl_mechanism":
        mechanism = str(value).upper()
        if mechanism not in KAFKA_MECHANISMS:
            raise ValueError(f"must be one of {', '.join(KAFKA_MECHANISMS)}")
        return mechanism
    if name in KAFKA_FILES:
        return _readable_file(Path(str(value)).expanduser())
    return str(value)


def _readable_file(path: Path) -> Path:
    """`path` when it is a regular file this process can read; ValueError saying why not."""
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except IsADirectoryError:
        raise ValueError("is a directory, not a file") from None
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror or exc})") from None
    return path


_OPTIONAL = frozenset(
    {"broker_url", "api_keys", "api_keys_file", "rate_limits", "template_dir"}
    | {"tls_cert", "tls_key", "advertised_url", "webhook_urls", "webhook_secret"}
    | {"worker_cpus", "reader_cpus"}
    | {"collect_origins"}
    | {"kafka_ca_file", "kafka_cert_file", "kafka_key_file", "kafka_sasl_mechanism"}
    | {"kafka_username", "kafka_password", "kafka_password_file"}
    | {"cluster_secret", "cluster_secret_file"}
    | {"retrain_hours"}
    | {"catalog_feeds", "feed_link"}
)


def parse_cpus(text: str) -> frozenset[int]:
    """A Linux CPU list (`0-2,5`) -> {0, 1, 2, 5}; ValueError when malformed or when it names a
    CPU this process may not run on."""
    cpus: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"{part!r} is not a CPU number or range (a CPU list: 0-2,5)")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise ValueError(f"range {part!r} runs backwards")
        cpus.update(range(first, last + 1))
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if usable is None:
        raise ValueError("CPU placement needs Linux (sched_setaffinity)")
    missing = sorted(cpus - usable)
    if missing:
        raise ValueError(
            f"CPU(s) {','.join(map(str, missing))} not available here "
            f"(available: {','.join(map(str, sorted(usable)))})"
        )
    return frozenset(cpus)


def parse_rate_limits(text: str) -> dict[str, float]:
    """`name:requests_per_second;...` -> {key name: rate}; ValueError when malformed."""
    limits: dict[str, float] = {}
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        name, sep, rate_text = entry.rpartition(":")
        try:
            rate = float(rate_text)
        except ValueError:
            rate = -1.0
        if not sep or not name.strip() or not rate > 0 or rate == float("inf"):
            raise ValueError(f"entry {entry!r} is not name:requests_per_second (a number > 0)")
        limits[name.strip()] = rate
    return limits


def _collect_value(name: str, value: Any) -> Any:
    if name == "collect_origins":
        return ";".join(parse_origins(str(value)))
    rate = float(value)
    if not 1.0 <= rate <= 1_000_000.0:  # nan fails too
        raise ValueError("must be 1..1000000 requests per minute")
    return rate


def parse_origins(text: str) -> tuple[str, ...]:
    """`https://shop.example;http://localhost:3000` -> the origins as browsers send them in
    `Origin` (scheme://host[:port], lower case, no path); ValueError when one is not an origin."""
    origins: list[str] = []
    for entry in (e.strip() for e in text.split(";") if e.strip()):
        parsed = urlparse(entry)
        try:
            port = parsed.port
        except ValueError:
            port = -1
        if parsed.scheme not in ("http", "https") or not parsed.hostname or port == -1:
            raise ValueError(f"{entry!r} is not an origin such as https://shop.example.com")
        if parsed.path not in ("", "/") or parsed.query or parsed.fragment or "@" in entry:
            raise ValueError(f"{entry!r} has more than scheme://host[:port] (an origin)")
        host = parsed.netloc.lower()
        if (parsed.scheme, port) in (("http", 80), ("https", 443)):  # browsers leave it out
            host = host.rsplit(":", 1)[0]
        origins.append(f"{parsed.scheme}://{host}")
    return tuple(origins)


def _broker_url(value: str) -> str:
    urls = []
    for part in value.split(";"):
        url = part.strip()
        if "://" not in url:
            url = "kafka://" + url
        parsed = urlparse(url)
        if parsed.scheme != "kafka" or not parsed.hostname or not parsed.port:
            raise ValueError("expected kafka://host:port (several separated by ';')")
        urls.append(url)
    return ";".join(urls)


def load_settings(
    flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings from flags (None values ignored), environment and config file."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    config = env.get("PERSONA_CONFIG")
    if config:
        path = Path(config).expanduser()
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise SettingsError(f"PERSONA_CONFIG={config!r} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"PERSONA_CONFIG={config!r} is not valid TOML: {exc}") from None
        section = data.get("persona", data)
        unknown = set(section) - set(_ENV)
        if unknown:
            raise SettingsError(
                f"unknown setting(s) in {config}: {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(_ENV))})"
            )
        raw.update(section)
    for name, var in _ENV.items():
        if var in env:
            raw[name] = env[var]
    for name, value in (flags or {}).items():
        if name not in _ENV:
            raise SettingsError(f"unknown setting {name!r}")
        if value is not None:
            raw[name] = value
    settings = replace(Settings(), **{name: _convert(name, value) for name, value in raw.items()})
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise SettingsError("PERSONA_TLS_CERT and PERSONA_TLS_KEY must be set together")
    if settings.tls_key is not None:  # the HTTPS private key: 0600, ours, no symbolic link
        check_secret_file(settings.tls_key, "PERSONA_TLS_KEY")
    if settings.webhook_urls and not settings.webhook_secret:
        raise SettingsError(
            "PERSONA_WEBHOOK_URLS is set but PERSONA_WEBHOOK_SECRET is not: webhooks are signed"
        )
    if settings.webhook_secret is not None and len(settings.webhook_secret) < MIN_SECRET:
        raise SettingsError(
            f"PERSONA_WEBHOOK_SECRET has {len(settings.webhook_secret)} characters; at least "
            f"{MIN_SECRET} are required"
        )
    return _check_cluster(_check_kafka(settings))


def _check_cluster(settings: Settings) -> Settings:
    """PERSONA_CLUSTER_SECRET, or read from PERSONA_CLUSTER_SECRET_FILE (0600, ours, no symbolic
    link: engine/files.py); at least MIN_CLUSTER_SECRET characters. Never shown in a message."""
    path = settings.cluster_secret_file
    if path is not None:
        if settings.cluster_secret is not None:
            raise SettingsError(
                "set PERSONA_CLUSTER_SECRET or PERSONA_CLUSTER_SECRET_FILE, not both"
            )
        check_secret_file(path, "PERSONA_CLUSTER_SECRET_FILE")
        settings = replace(
            settings, cluster_secret=_read_secret(path, "PERSONA_CLUSTER_SECRET_FILE")
        )
    secret = settings.cluster_secret
    if secret is not None and len(secret) < MIN_CLUSTER_SECRET:
        raise SettingsError(
            f"PERSONA_CLUSTER_SECRET has {len(secret)} characters; at least {MIN_CLUSTER_SECRET} "
            "are required (e.g. python -c 'import secrets; print(secrets.token_urlsafe(36))')"
        )
    return settings


def require_cluster_secret(settings: Settings) -> str:
    """The cluster secret a process on a broker needs (hops, registry and command records are
    signed with it), or SettingsError naming the setting."""
    if settings.cluster_secret is None:
        raise SettingsError(
            "PERSONA_CLUSTER_SECRET (or PERSONA_CLUSTER_SECRET_FILE) is required with a broker "
            f"URL: every worker, reader and `persona models` command signs with the same secret "
            f"of {MIN_CLUSTER_SECRET}+ characters (e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(36))'); the embedded default keeps its own in "
            "<data dir>/cluster-secret"
        )
    return settings.cluster_secret


def _check_kafka(settings: Settings) -> Settings:
    """The Kafka security settings must make one coherent client configuration; the password
    comes from PERSONA_KAFKA_PASSWORD_FILE when that is set. The private key and the password
    file hold secrets: 0600, ours, no symbolic link (engine/files.py)."""
    for name in ("kafka_key_file", "kafka_password_file"):
        path = getattr(settings, name)
        if path is not None:
            check_secret_file(path, _ENV[name])
    if settings.kafka_password_file is not None:
        if settings.kafka_password is not None:
            raise SettingsError(
                "set PERSONA_KAFKA_PASSWORD or PERSONA_KAFKA_PASSWORD_FILE, not both"
            )
        settings = replace(settings, kafka_password=_read_password(settings.kafka_password_file))
    protocol = settings.kafka_security
    _check_kafka_sasl(settings, protocol)
    files = [_ENV[n] for n in KAFKA_FILES[:3] if getattr(settings, n) is not None]
    if files and protocol not in ("ssl", "sasl_ssl"):
        raise SettingsError(
            f"{' and '.join(files)} set but PERSONA_KAFKA_SECURITY={protocol}: certificates "
            "are used with ssl or sasl_ssl"
        )
    if (settings.kafka_cert_file is None) != (settings.kafka_key_file is None):
        raise SettingsError(
            "PERSONA_KAFKA_CERT_FILE and PERSONA_KAFKA_KEY_FILE must be set together"
        )
    return settings


def _check_kafka_sasl(settings: Settings, protocol: str) -> None:
    names = ("kafka_sasl_mechanism", "kafka_username", "kafka_password")
    given = [_ENV[n] for n in names if getattr(settings, n) is not None]
    if not protocol.startswith("sasl_"):
        if given:
            raise SettingsError(
                f"{' and '.join(given)} set but PERSONA_KAFKA_SECURITY={protocol}: SASL "
                "is used with sasl_plaintext or sasl_ssl"
            )
        return
    missing = [_ENV[n] for n in names if getattr(settings, n) is None]
    if missing:
        raise SettingsError(
            f"PERSONA_KAFKA_SECURITY={protocol} needs {' and '.join(missing)} "
            f"(mechanisms: {', '.join(KAFKA_MECHANISMS)}; the password may come from "
            "PERSONA_KAFKA_PASSWORD_FILE)"
        )


def _read_password(path: Path) -> str:
    return _read_secret(path, "PERSONA_KAFKA_PASSWORD_FILE")


def _read_secret(path: Path, setting: str) -> str:
    try:
        secret = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{setting}={str(path)!r} cannot be read: {exc}") from None
    if not secret:
        raise SettingsError(f"{setting}={str(path)!r} is empty")
    return secret
