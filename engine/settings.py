"""One typed settings object, read only at entry points.

Precedence (highest first): command-line flags, `PERSONA_*` environment variables, the TOML file
named by `PERSONA_CONFIG`, defaults. An invalid value raises `SettingsError` naming the setting.

Every setting is declared once, with its field: its parser (engine/setting_types.py, which holds
the range), its help text, whether unset means None and whether it is a secret. `_convert` is the
one converter; `settings_table()` (docs/operations.md) and `example_toml()` (persona.example.toml)
are generated from the same declarations (`make docs`; tests/engine/test_settings_docs.py checks
that the committed files are current).
"""

from __future__ import annotations

import datetime
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from engine import setting_types as t
from engine.errors import SettingsError as SettingsError  # re-exported: callers import it here
from engine.files import check_secret_file, read_regular
from engine.setting_types import parse_catalog_feeds as parse_catalog_feeds  # re-exported
from engine.setting_types import parse_cpus as parse_cpus  # re-exported
from engine.setting_types import parse_origins as parse_origins  # re-exported
from engine.setting_types import parse_rate_limits as parse_rate_limits  # re-exported
from engine.suggest import closest, meaning
from engine.text import repr_cut

MIN_SECRET = 24  # characters of every secret (API keys: api/auth.py; the webhook secret)
KAFKA_PROTOCOLS = ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")
KAFKA_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
KAFKA_FILES = ("kafka_ca_file", "kafka_cert_file", "kafka_key_file", "kafka_password_file")
MIN_CLUSTER_SECRET = 32  # characters of PERSONA_CLUSTER_SECRET (engine/signing.py)
MAX_CONFIG_BYTES = 1 << 20  # the TOML file of PERSONA_CONFIG (every setting fits in a few KB)


@dataclass(frozen=True)
class Spec:
    """How one setting is read and documented."""

    parse: t.Parse  # raw value -> the field's value, or ValueError saying what is wanted
    help: str
    optional: bool = False  # unset or empty: None
    secret: bool = False  # never printed: not in repr, messages or examples
    shown_default: str = ""  # the default as the docs say it, when not the value itself
    example: str = ""  # a value for persona.example.toml's comment


def setting(
    default: Any,
    parse: t.Parse,
    help: str,
    *,
    optional: bool = False,
    secret: bool = False,
    shown_default: str = "",
    example: str = "",
) -> Any:
    """A settings field: its default and its Spec (in the field's metadata)."""
    spec = Spec(parse, help, optional, secret, shown_default, example)
    return field(default=default, repr=not secret, metadata={"spec": spec})


def optional(parse: t.Parse, help: str, **kw: Any) -> Any:
    """A setting that is None unless given."""
    return setting(None, parse, help, optional=True, **kw)


HTTP_URL = "must be an http(s) URL such as http://10.0.0.5:8080"


@dataclass(frozen=True)
class Settings:
    broker_url: str | None = optional(
        t.broker_url,
        "`kafka://host:port` (several separated by `;`); unset: the embedded broker "
        "(`persona run` only)",
        example="kafka://127.0.0.1:9092",
    )
    data_dir: Path = setting(Path("data"), t.path, "RocksDB state, the local key, logs")
    http_host: str = setting("127.0.0.1", t.text, "where the API listens: the address")
    http_port: int = setting(8080, t.Integer(0, 65535), "where the API listens: the port")
    api_keys: str | None = optional(
        t.text,
        "`name:secret:scope,scope;...`; every secret at least 24 characters (shorter: start-up "
        "stops naming the entry, never the secret)",
        secret=True,
    )
    api_keys_file: Path | None = optional(
        t.path,
        "a file with one `name:secret:scopes` entry per line (secrets of 24+ characters); read "
        "again without a restart when it changes (looked at once a second) or on SIGHUP; a "
        "changed file that is refused keeps the keys in use (docs/security.md)",
        example="/etc/persona/api-keys",
    )
    rate_limits: str | None = optional(
        t.rate_limits,
        "`name:requests_per_second;...` per API key name, per process; over it: 429 with "
        "`Retry-After`; batch and render cost one token per distinct recipient (a request over "
        "the burst passes on a full bucket and leaves the key in debt)",
        example="esp:200;ads:50",
    )
    consent_default: str = setting(
        "granted",
        t.Choice(("granted", "required"), says="must be 'granted' or 'required'"),
        "`granted` or `required` for users who never sent a `consent` event",
    )
    partitions: int = setting(
        8, t.Integer(1, 1024), "partitions of the input topics and tables (create topics with it)"
    )
    block_items: int = setting(6, t.Integer(1, 1024), "items per block")
    churn_threshold: float = setting(
        0.5,
        t.Real(0.0, 1.0, says="must be between 0 and 1"),
        "churn score from which `winback` is personalized",
    )
    template_dir: Path | None = optional(
        t.path,
        "your own block templates",
        shown_default="the shipped `templates/`",
        example="/etc/persona/templates",
    )
    log_level: str = setting(
        "info",
        t.Choice(
            ("debug", "info", "warning", "error"), "lower", "must be debug, info, warning or error"
        ),
        "`debug`, `info`, `warning`, `error`; the command-line tools (`replay`, `catalog`, "
        "`models`, `backup`) show the Kafka client's INFO lines only at `debug`",
    )
    broker_session_timeout: float = setting(
        10.0,
        t.Real(1.0, 300.0, says="must be 1..300 seconds"),
        "seconds (the embedded broker delays joins by half of it)",
    )
    catch_up_chunk: int = setting(
        10_000,
        t.Integer(1_000, 1_000_000),
        "input records a worker that fell behind reads from the broker and folds at a time",
    )
    rocksdb_memory_mb: int = setting(
        256,
        t.Integer(16, 65_536),
        "MiB of memory the RocksDB tables of one process may hold: one block cache shared by "
        "every table partition (index and filter blocks in it), a quarter of it for memtables",
    )
    profile_cache_mb: int = setting(
        64,
        t.Integer(0, 65_536),
        "MiB of decoded profiles a worker keeps between its fold's batches (the users of one "
        "batch fold again in the next ones); 0 keeps none",
    )
    abandoned_cart_minutes: float = setting(
        60.0,
        t.Real(0.0, 525_600.0, "must be more than 0 minutes and at most a year", open_low=True),
        "event time after which an unchanged cart with no checkout fires `abandoned_cart`",
    )
    trigger_max_age_hours: float = setting(
        0.0,
        t.Real(0.0, 87_600.0, says="must be 0..87600 hours"),
        "triggers about something older than this against the wall clock (a cart's last change, "
        "the view or cart of a changed item, a churn crossing's event time) are recorded but "
        "not sent to the `triggers` topic or webhooks, so a replay of old events e-mails nobody "
        "about a cart they left long ago (72 is a sensible bound in production); 0, the "
        "default, sends them whatever their age, as the contract's event-time clock has a "
        "replay of last year's data fire as it would have then",
    )
    abandoned_cart_pending_max: int = setting(
        200_000,
        t.Integer(1, 10_000_000),
        "users whose abandoned-cart check a worker keeps scheduled in memory (about 200 bytes "
        "each); over it the tenth due last is dropped and scheduled again by a sweep of the "
        "worker's stored profiles once the earliest dropped one is due: no check is lost, but "
        "those may fire later and each such sweep reads every local profile",
    )
    webhook_urls: str | None = optional(
        t.url_list,
        "comma-separated URLs that receive every trigger and a `user_erased` notice at each "
        "erasure, signed (needs `PERSONA_WEBHOOK_SECRET`); "
        "each URL has its own queue of 10,000 and its own sender, so a slow receiver delays only "
        "itself",
        example="https://automation.example/persona",
        secret=True,  # receivers take tokens in the path and query (Slack-style URLs)
    )
    webhook_secret: str | None = optional(
        t.text,
        "HMAC-SHA256 key of the `X-Persona-Signature-256` (time and body) and "
        "`X-Persona-Signature` (body) headers of webhooks (24+ characters)",
        secret=True,
    )
    lateness_days: float = setting(
        7.0,
        t.Real(0.0, 3650.0, "must be more than 0 and at most 3650 days", open_low=True),
        "events further behind the newest event time of their topic-partition go to "
        "`dead-letters` as late",
    )
    max_clock_skew_seconds: float = setting(
        300.0,
        t.Real(0.0, 86_400.0, says="must be 0..86400 seconds"),
        "events further ahead of the wall clock go to `dead-letters` as `future`",
    )
    advertised_url: str | None = optional(
        t.http_url(HTTP_URL),
        "how other workers reach this worker's API (request routing)",
        shown_default="`http://<host>:<port>`",
        example="http://10.0.0.5:8080",
    )
    readers: int = setting(
        1,
        t.Integer(0, 64),
        "read-only API processes `persona run` starts beside the worker (0: the worker serves "
        "the API)",
    )
    worker_port: int = setting(
        0,
        t.Integer(0, 65535),
        "the loopback port of the worker behind the readers under `persona run` (its `/metrics` "
        "has the stream counters; 0: a free port at each start, printed)",
        example="9464",
    )
    max_restarts: int = setting(
        5,
        t.Integer(0, 1000),
        "failures in a row of one child (each up less than 60 s) that `persona run` restarts "
        "before it stops everything (0: stop at the first death; see "
        "[Crashes and restarts](#crashes-and-restarts))",
    )
    stop_timeout: float = setting(
        30.0,
        t.Real(1.0, 3600.0, says="must be 1..3600 seconds"),
        "seconds from SIGTERM or SIGINT to a `persona worker`'s or `persona reader`'s exit: what "
        "is still stopping then (a broker gone: the producer's flush, the consumer thread's "
        "retries) is named in a warning and the process exits 1, its tables' writes kept in "
        "their WAL (`persona run` kills its children sooner: 10 s in all; see "
        "[Stopping](#stopping))",
    )
    request_timeout: float = setting(
        10.0,
        t.Real(0.1, 600.0, says="must be 0.1..600 seconds"),
        "seconds a request may take before 503 (feeds are exempt: `PERSONA_FEED_TIMEOUT`)",
    )
    feed_timeout: float = setting(
        300.0,
        t.Real(1.0, 86_400.0, says="must be 1..86400 seconds"),
        "seconds one `GET /v1/feeds/{name}` response may take: then it stops and its connection "
        "is closed (a warning names the key); a client that stops reading holds a catalog "
        "iterator no longer than this",
    )
    feed_streams_per_key: int = setting(
        2,
        t.Integer(1, 1000),
        "feed responses one API key may be streaming at once, per process; one more is a 429 "
        "with `Retry-After`",
    )
    collect_origins: str | None = optional(
        t.origins,
        "`;`-separated origins whose pages may send browser events with a publishable key "
        "(`POST /v1/collect`)",
        example="https://shop.example.com;https://www.shop.example.com",
    )
    identify_secret: str | None = optional(
        t.text,
        "24+ characters: `identify` events from a publishable key (`POST /v1/collect`) must carry "
        "`props.user_hash`, the hex HMAC-SHA256 of the user id under this secret, computed by the "
        "shop's server (unset: any page holding the key may link an anonymous id to any user id)",
        secret=True,
    )
    repeat_items: str | None = optional(
        t.repeat_items,
        "`;`-separated items that may be recommended again after a purchase (consumables): "
        "`item:<item_id>@<days>` or `category:<category>@<days>` (and its sub-categories); left "
        "out only in the cart or within that many days of the last purchase (engine/repeat.py)",
        example="category:Pantry > Coffee@30;item:85123A@14",
    )
    collect_per_minute: float = setting(
        600.0,
        t.Real(1.0, 1_000_000.0, says="must be 1..1000000 requests per minute"),
        "`POST /v1/collect` requests per minute per client address",
    )
    tls_cert: Path | None = optional(
        t.path, "PEM certificate chain: serve HTTPS (with `PERSONA_TLS_KEY`)"
    )
    tls_key: Path | None = optional(t.path, "its PEM private key (0600, ours)")
    worker_cpus: frozenset[int] | None = optional(
        t.cpus,
        "CPUs (a Linux CPU list: `0`, `0-3,6`) for every thread of the worker and of the "
        "embedded broker (unset: the kernel places)",
        example="0",
    )
    reader_cpus: frozenset[int] | None = optional(
        t.cpus, "CPUs for every thread of the readers", example="1"
    )
    kafka_security: str = setting(
        "plaintext",
        t.Choice(KAFKA_PROTOCOLS, "lower"),
        "`plaintext`, `ssl`, `sasl_plaintext`, `sasl_ssl`: every Kafka client Persona makes "
        "(see [Kafka security](#kafka-security-tls-sasl))",
    )
    kafka_ca_file: Path | None = optional(
        t.readable_file, "PEM CAs that sign the brokers' certificates (unset: the system's CAs)"
    )
    kafka_cert_file: Path | None = optional(
        t.readable_file, "a client certificate (PEM), with `PERSONA_KAFKA_KEY_FILE`"
    )
    kafka_key_file: Path | None = optional(t.readable_file, "its private key (PEM, 0600, ours)")
    kafka_sasl_mechanism: str | None = optional(
        t.Choice(KAFKA_MECHANISMS, "upper"), "`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`"
    )
    kafka_username: str | None = optional(t.text, "SASL user name")
    kafka_password: str | None = optional(t.text, "SASL password", secret=True)
    kafka_password_file: Path | None = optional(
        t.readable_file, "the SASL password from a file instead (one line; 0600, ours)"
    )
    cluster_secret: str | None = optional(
        t.text,
        "signs hops and registry and command records between Persona processes; 32+ "
        "characters, the same in every process; required with a broker URL (the embedded "
        "default keeps one in `<data dir>/cluster-secret`)",
        secret=True,
    )
    cluster_secret_file: Path | None = optional(
        t.path, "the cluster secret from a file instead (0600, ours)"
    )
    retrain_hours: float | None = optional(
        t.Real(
            0.0,
            8760.0,
            "must be more than 0 and at most 8760 hours (fractions allowed)",
            open_low=True,
        ),
        "retrain both models from the events the engine has seen every this many hours "
        "(fractions accepted, at most 8760; unset: never); each new version is registered "
        "inactive with its evaluation and the active one's on the held-out recent window; set it "
        "on one worker ([scheduled retraining](data-scientists.md#scheduled-retraining))",
        example="24",
    )
    retrain_promote: bool = setting(
        False,
        t.boolean,
        "`true`: activate a retrained version that beats the active one on that window (HR@10 "
        "for recs, ROC AUC for churn), audited as `model_promoted`",
    )
    catalog_feeds: str | None = optional(
        t.catalog_feeds,
        "`url@minutes;...`: product feeds pulled as full syncs on a schedule (never printed: "
        "feed URLs carry tokens)",
        secret=True,
    )
    feed_title: str = setting("Persona product feed", t.text, "the ad feeds' channel title")
    click_url: str | None = optional(
        t.http_url(
            "must be the public http(s) URL of Persona's API, such as https://persona.shop.example"
        ),
        "links in e-mail blocks go through `<this URL>/c/<signed token>`, which records a `click` "
        "and redirects to the product (unset: blocks link to products directly)",
        example="https://persona.shop.example.com",
    )
    utm: str | None = optional(
        t.utm,
        "campaign parameters added to the product links of e-mail blocks and to the click "
        "redirect's target (`{block}` and `{variant}` are filled in; a parameter the product URL "
        "sets already is kept; at most 150 octets as written into a link, `&` counted as the 5 "
        "of `&amp;`, `{block}` as 15, `{variant}` as 32, so that no link passes an e-mail line)",
        example="utm_source=persona&utm_medium=email&utm_campaign={block}",
    )
    cart_url: str | None = optional(
        t.http_url_as_given("must be an http(s) URL, such as https://shop.example.com/cart"),
        "where the cart reminder's button leads (`{user_id}` is replaced by the user's id, "
        "URL-encoded); unset: the shop (PERSONA_FEED_LINK, else the products' site)",
        example="https://shop.example.com/cart?restore={user_id}",
    )
    feed_link: str | None = optional(
        t.http_url_as_given("must be the shop's http(s) URL, such as https://shop.example.com/"),
        "the shop's home page, the ad feeds' channel link",
        example="https://shop.example.com/",
    )

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
        if ":" in host and not host.startswith("["):  # an IPv6 address: bracketed in a URL
            host = f"[{host}]"
        return f"http://{host}:{self.http_port}"


SPECS: dict[str, Spec] = {f.name: f.metadata["spec"] for f in fields(Settings)}
_ENV = {name: f"PERSONA_{name.upper()}" for name in SPECS}
_SECRETS = frozenset(name for name, spec in SPECS.items() if spec.secret)  # never shown


def _convert(name: str, value: Any) -> Any:
    """Turn a raw value from env/TOML/flags into the field's type, or raise SettingsError."""
    spec = SPECS[name]
    if value is None or value == "":
        return None if spec.optional else getattr(Settings, name)
    shown = "(hidden)" if spec.secret else _shown(value)
    if isinstance(value, list | dict | datetime.date | datetime.time):
        kind = (
            "an array" if isinstance(value, list) else
            "a table" if isinstance(value, dict) else "a date or time"
        )  # fmt: skip
        raise SettingsError(
            f"invalid setting {_ENV[name]}={shown}: must be one string, number or boolean, not "
            f"{kind}"
        )
    if isinstance(value, str) and not value.strip():
        raise SettingsError(
            f"invalid setting {_ENV[name]}: it is blank (only white space); give a value, or "
            "leave it unset or empty for the default"
        )
    try:
        return spec.parse(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SettingsError(f"invalid setting {_ENV[name]}={shown}: {exc}") from None


def _shown(value: Any) -> str:
    """A value for a message: its repr, cut to a readable length."""
    return repr_cut(value, 80, 60, counted="str")


def _default_text(name: str, spec: Spec) -> str:
    if spec.shown_default:
        return spec.shown_default
    default = getattr(Settings, name)
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    return f"`{default}`"


def settings_table() -> str:
    """docs/operations.md's table of every setting, from the declarations."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for name, spec in SPECS.items():
        rows.append(f"| `{_ENV[name]}` | {_default_text(name, spec)} | {spec.help} |")
    return "\n".join(rows) + "\n"


def example_toml() -> str:
    """persona.example.toml: every setting, commented out at its default, with its help."""
    out = [
        "# Persona settings: name this file in PERSONA_CONFIG. Generated from engine/settings.py",
        "# (`make docs`); every line is commented out at its default. Flags and PERSONA_*",
        "# environment variables override this file. Secrets (keys, passwords, the cluster",
        "# secret, feed URLs) are better kept in PERSONA_* variables or their *_FILE settings.",
        "",
        "[persona]",
    ]
    for name, spec in SPECS.items():
        out.append("")
        out += [f"# {line}" for line in _wrap(_plain(spec.help), 94)]
        out.append(f"# {name} = {_toml_value(name, spec)}")
    return "\n".join(out) + "\n"


def _toml_value(name: str, spec: Spec) -> str:
    default = getattr(Settings, name)
    value: Any = spec.example or default
    if spec.secret:
        return '"..."'
    if value is None:
        return '""'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float) or str(value).isdigit():
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _plain(help: str) -> str:
    """A help text for a TOML comment: no backticks, links as "text (docs/page#anchor)"."""

    def link(m: re.Match[str]) -> str:
        target = m.group(2)
        return f"{m.group(1)} (docs/{'operations.md' if target.startswith('#') else ''}{target})"

    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", link, help).replace("`", "")


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line] if line else lines


def _read_config(config: str) -> dict[str, Any]:
    """The settings of the TOML file PERSONA_CONFIG names (its `[persona]` table, or the whole
    file): a regular file of at most MAX_CONFIG_BYTES of UTF-8 TOML, nested no deeper than the
    parser can go. A FIFO or a device (`/dev/zero`) is refused before it is read: one would
    wait for a writer forever, the other never end."""
    where = f"PERSONA_CONFIG={_shown(config)}"
    try:
        fd = os.open(Path(config).expanduser(), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{where} cannot be read: {exc}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SettingsError(f"{where} is not a regular file (a TOML settings file)")
        if info.st_size > MAX_CONFIG_BYTES:
            raise SettingsError(f"{where} is larger than {MAX_CONFIG_BYTES} bytes")
        try:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise SettingsError(f"{where} cannot be read: {exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:  # it grew meanwhile
        raise SettingsError(f"{where} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        # a leading UTF-8 byte order mark (Windows editors write one) is not TOML: read past it
        data = tomllib.loads(raw.decode("utf-8").removeprefix("\ufeff"))
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{where} is not UTF-8 text (byte {exc.start}): not TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{where} is not valid TOML: {exc}") from None
    except RecursionError:
        raise SettingsError(f"{where} holds arrays or tables nested too deeply") from None
    section = data.get("persona", data)
    if not isinstance(section, dict):
        raise SettingsError(f"{where}: [persona] must be a table of settings")
    return section


def load_settings(
    flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings from flags (None values ignored), environment and config file."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    config = env.get("PERSONA_CONFIG")
    if config:
        section = _read_config(config)
        unknown = set(section) - set(_ENV)
        if unknown:
            raise SettingsError(
                f"unknown setting(s) in {config}: "
                f"{', '.join(_meant(name) for name in sorted(unknown))} "
                f"(known: {', '.join(sorted(_ENV))})"
            )
        raw.update(section)
    from_file = {name: f"{name} in {config}" for name in raw}  # where a refused value came from
    _refuse_misspelled(env)
    for name, var in _ENV.items():
        if var in env:
            if _SERVICE_LINK_VALUE.fullmatch(env[var]):
                raise SettingsError(
                    f"{var}={_shown(env[var])} is a Kubernetes service link (a Service named "
                    f"{var.removesuffix('_PORT').lower().replace('_', '-')} in the namespace), "
                    "not a setting: rename the Service or set enableServiceLinks: false in the "
                    "pod spec"
                )
            raw[name] = env[var]
            from_file.pop(name, None)
    for name, value in (flags or {}).items():
        if name not in _ENV:
            raise SettingsError(f"unknown setting {name!r}")
        if value is not None:
            raw[name] = value
            from_file.pop(name, None)
    converted: dict[str, Any] = {}
    for name, value in raw.items():
        try:
            converted[name] = _convert(name, value)
        except SettingsError as exc:
            if name not in from_file:
                raise
            raise SettingsError(f"{exc} (set as {from_file[name]})") from None
    settings = replace(Settings(), **converted)
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise SettingsError("PERSONA_TLS_CERT and PERSONA_TLS_KEY must be set together")
    if settings.tls_key is not None:  # the HTTPS private key: 0600, ours, no symbolic link
        check_secret_file(settings.tls_key, "PERSONA_TLS_KEY")
    if settings.webhook_urls and not settings.webhook_secret:
        raise SettingsError(
            "PERSONA_WEBHOOK_URLS is set but PERSONA_WEBHOOK_SECRET is not: webhooks are signed"
        )
    if settings.identify_secret is not None and len(settings.identify_secret) < MIN_SECRET:
        raise SettingsError(
            f"PERSONA_IDENTIFY_SECRET has {len(settings.identify_secret)} characters; at least "
            f"{MIN_SECRET} are required"
        )
    if settings.webhook_secret is not None and len(settings.webhook_secret) < MIN_SECRET:
        raise SettingsError(
            f"PERSONA_WEBHOOK_SECRET has {len(settings.webhook_secret)} characters; at least "
            f"{MIN_SECRET} are required"
        )
    return _check_cluster(_check_kafka(settings))


# what Kubernetes gives every pod for each Service of its namespace (enableServiceLinks, on by
# default): SVC_SERVICE_HOST, SVC_SERVICE_PORT[_NAME], SVC_PORT=tcp://ip:port and
# SVC_PORT_<port>_<proto>[_PROTO|_PORT|_ADDR]; a Service named persona-broker gives PERSONA_BROKER_*
_SERVICE_LINK_NAME = re.compile(
    r"PERSONA(?:_[A-Z0-9]+)*?_(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
    r"|PORT_[0-9]+_(?:TCP|UDP|SCTP)(?:_PROTO|_PORT|_ADDR)?)"
)
_SERVICE_LINK_VALUE = re.compile(r"(?:tcp|udp|sctp)://[^\s/]+:[0-9]+", re.ASCII)


def _meant(name: str) -> str:
    """A config file's unknown name, with the setting meant when one is close to it or it is a
    variable's name (`PERSONA_HTTP_PORT`, `HTTP_PORT`: the file takes `http_port`)."""
    plain = str(name)[:100].lower().removeprefix("persona_")
    close = plain if plain in _ENV else closest(plain, _ENV)
    return f"{name[:100]} ({meaning(close)})" if close is not None else name[:100]


# as alike as a PERSONA_* variable must be to a setting to stop start-up: at engine.suggest's
# CUTOFF the README's PERSONA_KEY read as PERSONA_TLS_KEY, and `persona run`'s own
# PERSONA_RUN_DATA_DIR_LOCK as PERSONA_DATA_DIR
MISSPELLED_VARIABLE = 0.8


def _refuse_misspelled(env: Mapping[str, str]) -> None:
    """Stop on a `PERSONA_*` variable that is no setting but close to one (`PERSONA_PARTITONS`):
    it was ignored without a word and the engine ran with the default, where the same typo in
    the TOML file stops start-up. Other `PERSONA_*` names are left alone: `PERSONA_KEY` holds
    the secret in the README's shell, `persona run` tells its children `PERSONA_RUN_*`, and
    Kubernetes names a Service's address `PERSONA_BROKER_PORT` (for a Service `persona-broker`)."""
    known = [var.removeprefix("PERSONA_") for var in _ENV.values()] + ["CONFIG"]
    for var in sorted(env):
        if not var.startswith("PERSONA_") or var.removeprefix("PERSONA_") in known:
            continue
        if _SERVICE_LINK_NAME.fullmatch(var) or (
            var.endswith("_PORT") and _SERVICE_LINK_VALUE.fullmatch(env[var])
        ):
            continue  # a Kubernetes service link, not a misspelled setting
        close = closest(var.removeprefix("PERSONA_"), known, cutoff=MISSPELLED_VARIABLE)
        if close is not None:
            raise SettingsError(
                f"{var} is no setting: {meaning('PERSONA_' + close)} (correct or unset it)"
            )


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


EMBEDDED_SECRET_FILE = "cluster-secret"  # `persona run`'s embedded default: <data dir>/this


def with_cluster_secret_file(settings: Settings, path: Path) -> Settings:
    """`settings` with the cluster secret `path` holds (checked as PERSONA_CLUSTER_SECRET_FILE
    is): `persona run` makes the embedded default's and uses it too (streams/adopt.py)."""
    read = _check_cluster(replace(settings, cluster_secret=None, cluster_secret_file=path))
    return replace(settings, cluster_secret=read.cluster_secret)


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


MAX_SECRET_FILE = 64 << 10  # bytes of a file holding one secret


def _read_secret(path: Path, setting: str) -> str:
    try:
        secret = read_regular(path, MAX_SECRET_FILE).decode("utf-8").rstrip("\r\n")
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise SettingsError(f"{setting}={str(path)!r} cannot be read: {exc}") from None
    if not secret:
        raise SettingsError(f"{setting}={str(path)!r} is empty")
    return secret
