"""Hostile setting values and settings files: every one ends in a SettingsError that names the
setting (or the file), never a traceback, a hang, unbounded memory or a silently changed value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.settings import MAX_CONFIG_BYTES, SettingsError, load_settings


def _config(tmp_path: Path, content: bytes | str) -> dict[str, str]:
    path = tmp_path / "persona.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return {"PERSONA_CONFIG": str(path)}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(256)) * 4, "is not UTF-8 text"),
        ("a = " + "[" * 50_000 + "]" * 50_000 + "\n", "nested too deeply"),
        ("x = " + "{a=" * 3_000 + "1" + "}" * 3_000 + "\n", "nested too deeply"),
        ("persona = 5\n", "[persona] must be a table"),
        ("[persona]\n[persona.sub]\nx = 1\n", "unknown setting"),
        ('http_host = ["0.0.0.0"]\n', "PERSONA_HTTP_HOST"),
        ("http_host = {a = 1}\n", "PERSONA_HTTP_HOST"),
        ("data_dir = 1979-05-27T07:32:00Z\n", "PERSONA_DATA_DIR"),
        ("partitions = 3.7\n", "PERSONA_PARTITIONS"),
        ("partitions = true\n", "PERSONA_PARTITIONS"),
        ("churn_threshold = true\n", "PERSONA_CHURN_THRESHOLD"),
    ],
)
def test_a_hostile_settings_file_is_a_settings_error(
    tmp_path: Path, content: bytes | str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_settings({}, env=_config(tmp_path, content))


def test_a_whole_number_given_as_a_toml_float_is_taken() -> None:
    assert load_settings({"partitions": 4.0}, env={}).partitions == 4


def test_a_settings_file_that_never_ends_is_refused_without_reading_it(tmp_path: Path) -> None:
    zero = tmp_path / "zero.toml"
    zero.symlink_to("/dev/zero")
    with pytest.raises(SettingsError, match=r"PERSONA_CONFIG.*not a regular file"):
        load_settings({}, env={"PERSONA_CONFIG": str(zero)})
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(SettingsError, match=r"PERSONA_CONFIG.*not a regular file"):
        load_settings({}, env={"PERSONA_CONFIG": str(fifo)})


def test_a_huge_settings_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.toml"
    with path.open("wb") as out:
        out.truncate(10 << 30)  # sparse: 10 GiB of NUL bytes
    with pytest.raises(SettingsError, match=f"larger than {MAX_CONFIG_BYTES} bytes"):
        load_settings({}, env={"PERSONA_CONFIG": str(path)})


@pytest.mark.parametrize(
    "name",
    ["PERSONA_HTTP_HOST", "PERSONA_DATA_DIR", "PERSONA_API_KEYS", "PERSONA_FEED_TITLE",
     "PERSONA_HTTP_PORT", "PERSONA_TEMPLATE_DIR", "PERSONA_CLUSTER_SECRET_FILE"],
)  # fmt: skip
@pytest.mark.parametrize("value", [" ", "\t \n"])
def test_a_blank_value_is_refused_naming_the_setting(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"{name}.*blank"):
        load_settings({}, env={name: value})


@pytest.mark.parametrize(
    "name",
    ["PERSONA_DATA_DIR", "PERSONA_API_KEYS_FILE", "PERSONA_TEMPLATE_DIR",
     "PERSONA_CLUSTER_SECRET_FILE", "PERSONA_TLS_KEY", "PERSONA_KAFKA_CA_FILE"],
)  # fmt: skip
@pytest.mark.parametrize("value", ["a\x00b", "x" * 5000, "/tmp/" + "y" * 300])
def test_a_path_no_file_system_takes_is_refused_naming_the_setting(name: str, value: str) -> None:
    env = {name: value}
    if name == "PERSONA_TLS_KEY":
        env["PERSONA_TLS_CERT"] = "cert.pem"
    with pytest.raises(SettingsError, match=name):
        load_settings({}, env=env)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PERSONA_HTTP_PORT", "\u0668\u0660\u0668\u0660"),  # Arabic-Indic: int() takes them
        ("PERSONA_HTTP_PORT", "\uff18\uff10\uff18\uff10"),  # full-width digits
        ("PERSONA_HTTP_PORT", "80_80"),
        ("PERSONA_PARTITIONS", "\u0661\u0662"),
        ("PERSONA_CHURN_THRESHOLD", "\u0660.\u0665"),
        ("PERSONA_REQUEST_TIMEOUT", "1_0"),
        ("PERSONA_HTTP_PORT", "9" * 5000),
        ("PERSONA_REQUEST_TIMEOUT", "nan"),
        ("PERSONA_REQUEST_TIMEOUT", "inf"),
        ("PERSONA_LATENESS_DAYS", "-1"),
        ("PERSONA_READERS", "1e9"),
        ("PERSONA_ABANDONED_CART_PENDING_MAX", "\uff15\uff10\uff10"),  # full-width 500
        ("PERSONA_ABANDONED_CART_PENDING_MAX", "200_000"),
        ("PERSONA_ABANDONED_CART_PENDING_MAX", "0x100"),
        ("PERSONA_ABANDONED_CART_PENDING_MAX", "9" * 5000),
    ],
)
def test_numbers_are_ascii_decimal_and_in_range(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({}, env={name: value})


def test_plain_numbers_with_surrounding_space_still_pass() -> None:
    s = load_settings({}, env={"PERSONA_HTTP_PORT": " 9000\n", "PERSONA_CHURN_THRESHOLD": "0.25"})
    assert s.http_port == 9000 and s.churn_threshold == 0.25


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo"])
def test_a_kafka_file_that_never_ends_is_refused_unread(tmp_path: Path, kind: str) -> None:
    path = Path(kind)
    if kind == "fifo":
        path = tmp_path / "ca.pem"
        os.mkfifo(path)  # opening it would wait for a writer forever
    env = {
        "PERSONA_BROKER_URL": "kafka://127.0.0.1:9093",
        "PERSONA_KAFKA_SECURITY": "ssl",
        "PERSONA_KAFKA_CA_FILE": str(path),
    }
    with pytest.raises(SettingsError, match=r"PERSONA_KAFKA_CA_FILE.*not a regular file"):
        load_settings({}, env=env)


def test_a_huge_secret_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "cluster-secret"
    with path.open("wb") as out:
        out.truncate(4 << 30)  # sparse; read whole it was a MemoryError
    path.chmod(0o600)
    with pytest.raises(SettingsError, match=r"PERSONA_CLUSTER_SECRET_FILE.*larger than"):
        load_settings({}, env={"PERSONA_CLUSTER_SECRET_FILE": str(path)})


def test_a_refused_webhook_url_list_is_not_shown() -> None:
    """Receivers take tokens in a webhook URL's path and query: a refused list is named, never
    echoed (an error shown at start-up lands in logs and terminals)."""
    token = "T0/B0/XXXXSECRETXXXX"
    urls = f"https://h.test/s/{token},ftp://h.test/?t=SECRET2"  # short: it was shown whole
    with pytest.raises(SettingsError) as refused:
        load_settings({}, env={"PERSONA_WEBHOOK_URLS": urls, "PERSONA_WEBHOOK_SECRET": "s" * 32})
    message = str(refused.value)
    assert "PERSONA_WEBHOOK_URLS" in message
    assert "XXXXSECRETXXXX" not in message and "SECRET2" not in message
    settings = load_settings(
        {},
        env={"PERSONA_WEBHOOK_URLS": f"https://hooks.example.test/services/{token}"}
        | {"PERSONA_WEBHOOK_SECRET": "s" * 32},
    )
    assert "XXXXSECRETXXXX" not in repr(settings)
