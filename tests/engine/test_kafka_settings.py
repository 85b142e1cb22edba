"""PERSONA_KAFKA_* settings (issue 15 item 3): validated at load with messages naming the setting,
and the password never shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.settings import Settings, SettingsError, load_settings

PASSWORD = "s3cret-kafka-password-value"


def _load(**env: str) -> Settings:
    return load_settings({}, {f"PERSONA_KAFKA_{k.upper()}": v for k, v in env.items()})


def _refused(**env: str) -> str:
    with pytest.raises(SettingsError) as info:
        _load(**env)
    return str(info.value)


def _file(tmp_path: Path, name: str, text: str = "-----BEGIN CERTIFICATE-----\n") -> str:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def test_plaintext_by_default() -> None:
    settings = load_settings({}, {})
    assert settings.kafka_security == "plaintext"
    assert settings.kafka_password is None and settings.kafka_ca_file is None


def test_unknown_protocol_names_the_setting() -> None:
    message = _refused(security="tls")
    assert "PERSONA_KAFKA_SECURITY" in message and "sasl_ssl" in message


def test_protocol_and_mechanism_are_case_insensitive() -> None:
    settings = _load(security="SASL_SSL", sasl_mechanism="scram-sha-256", username="u",
                     password=PASSWORD)  # fmt: skip
    assert (settings.kafka_security, settings.kafka_sasl_mechanism) == ("sasl_ssl", "SCRAM-SHA-256")


def test_unknown_mechanism_names_the_setting() -> None:
    message = _refused(security="sasl_ssl", sasl_mechanism="GSSAPI", username="u", password="p")
    assert "PERSONA_KAFKA_SASL_MECHANISM" in message and "SCRAM-SHA-512" in message


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({"sasl_mechanism": "PLAIN"}, ["PERSONA_KAFKA_USERNAME", "PERSONA_KAFKA_PASSWORD"]),
        ({"sasl_mechanism": "PLAIN", "username": "u"}, ["PERSONA_KAFKA_PASSWORD"]),
        ({"username": "u", "password": PASSWORD}, ["PERSONA_KAFKA_SASL_MECHANISM"]),
    ],
)
def test_sasl_needs_mechanism_username_and_password(
    given: dict[str, str], missing: list[str]
) -> None:
    message = _refused(security="sasl_plaintext", **given)
    assert all(name in message for name in missing), message
    assert PASSWORD not in message


def test_sasl_settings_without_a_sasl_protocol_are_refused() -> None:
    message = _refused(sasl_mechanism="PLAIN", username="u", password=PASSWORD)
    assert "PERSONA_KAFKA_SECURITY=plaintext" in message and "sasl_ssl" in message
    assert PASSWORD not in message


def test_missing_ca_file_names_the_setting(tmp_path: Path) -> None:
    message = _refused(security="ssl", ca_file=str(tmp_path / "nope.pem"))
    assert "PERSONA_KAFKA_CA_FILE" in message and "cannot be read" in message


def test_a_directory_is_not_a_ca_file(tmp_path: Path) -> None:
    message = _refused(security="ssl", ca_file=str(tmp_path))
    assert "PERSONA_KAFKA_CA_FILE" in message and "directory" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_key_file_names_the_setting(tmp_path: Path) -> None:
    key = _file(tmp_path, "client.key")
    os.chmod(key, 0)
    message = _refused(security="ssl", cert_file=_file(tmp_path, "c.pem"), key_file=key)
    assert "PERSONA_KAFKA_KEY_FILE" in message and "cannot be read" in message


def test_client_certificate_needs_its_key(tmp_path: Path) -> None:
    message = _refused(security="ssl", cert_file=_file(tmp_path, "client.pem"))
    assert "PERSONA_KAFKA_CERT_FILE and PERSONA_KAFKA_KEY_FILE" in message


def test_certificates_need_a_tls_protocol(tmp_path: Path) -> None:
    message = _refused(ca_file=_file(tmp_path, "ca.pem"), security="sasl_plaintext",
                       sasl_mechanism="PLAIN", username="u", password=PASSWORD)  # fmt: skip
    assert "PERSONA_KAFKA_CA_FILE" in message and "ssl or sasl_ssl" in message


def test_password_from_a_file(tmp_path: Path) -> None:
    path = _file(tmp_path, "password", PASSWORD + "\n")
    settings = _load(security="sasl_ssl", sasl_mechanism="SCRAM-SHA-512", username="persona",
                     password_file=path)  # fmt: skip
    assert settings.kafka_password == PASSWORD


def test_a_client_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = _file(tmp_path, "client.key", "-----BEGIN PRIVATE KEY-----\n")
    os.chmod(key, 0o644)
    message = _refused(security="ssl", cert_file=_file(tmp_path, "client.pem"), key_file=key)
    assert "PERSONA_KAFKA_KEY_FILE" in message and f"chmod 600 {key}" in message


def test_a_password_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, "password", PASSWORD)
    os.chmod(path, 0o640)
    message = _refused(security="sasl_ssl", sasl_mechanism="PLAIN", username="u",
                       password_file=path)  # fmt: skip
    assert "PERSONA_KAFKA_PASSWORD_FILE" in message and f"chmod 600 {path}" in message
    assert PASSWORD not in message


def test_a_password_file_behind_a_symlink_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(_file(tmp_path, "password", PASSWORD))
    message = _refused(security="sasl_ssl", sasl_mechanism="PLAIN", username="u",
                       password_file=str(link))  # fmt: skip
    assert "PERSONA_KAFKA_PASSWORD_FILE" in message and "symbolic link" in message


def test_password_and_password_file_together_are_refused(tmp_path: Path) -> None:
    message = _refused(security="sasl_ssl", sasl_mechanism="PLAIN", username="u",
                       password=PASSWORD, password_file=_file(tmp_path, "p", "other"))  # fmt: skip
    assert "PERSONA_KAFKA_PASSWORD_FILE" in message and PASSWORD not in message


def test_empty_password_file_is_refused(tmp_path: Path) -> None:
    message = _refused(security="sasl_ssl", sasl_mechanism="PLAIN", username="u",
                       password_file=_file(tmp_path, "p", "\n"))  # fmt: skip
    assert "PERSONA_KAFKA_PASSWORD_FILE" in message and "empty" in message


def test_password_is_not_in_the_settings_repr() -> None:
    settings = _load(security="sasl_ssl", sasl_mechanism="PLAIN", username="u", password=PASSWORD)
    assert settings.kafka_password == PASSWORD
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)


def test_password_from_toml_is_loaded_and_hidden(tmp_path: Path) -> None:
    config = tmp_path / "persona.toml"
    config.write_text(
        f'kafka_security = "sasl_plaintext"\nkafka_sasl_mechanism = "PLAIN"\n'
        f'kafka_username = "u"\nkafka_password = "{PASSWORD}"\n'
    )
    settings = load_settings({}, {"PERSONA_CONFIG": str(config)})
    assert settings.kafka_password == PASSWORD and PASSWORD not in repr(settings)
