"""The settings' documentation is generated from their declarations and kept current."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields

import pytest

from engine import settings as s
from persona import settings_docs

LINE = re.compile(r"^# ([a-z_]+) = (.+)$")


def test_the_committed_table_and_example_are_what_make_docs_writes() -> None:
    assert settings_docs.stale() == []


def test_every_field_is_declared_with_a_parser_and_help() -> None:
    for f in fields(s.Settings):
        spec = f.metadata.get("spec")
        assert isinstance(spec, s.Spec), f.name
        assert spec.help.strip(), f.name
        assert f.repr is not spec.secret, f.name  # a secret never shows in repr


def test_the_table_names_every_setting_once() -> None:
    table = s.settings_table()
    for name in s.SPECS:
        assert table.count(f"| `PERSONA_{name.upper()}` |") == 1


def _example_lines() -> dict[str, str]:
    out = {}
    for line in s.example_toml().splitlines():
        m = LINE.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_the_example_holds_every_setting_with_a_value_its_parser_takes() -> None:
    lines = _example_lines()
    assert set(lines) == set(s.SPECS)
    skip = {"worker_cpus", "reader_cpus", *s.KAFKA_FILES}  # this machine's CPUs; files that exist
    for name, text in lines.items():
        spec = s.SPECS[name]
        value = tomllib.loads(f"v = {text}")["v"]
        if spec.secret:
            assert value == "...", name  # no secret, even an example one, in the file
        elif name not in skip:
            s._convert(name, value)  # raises SettingsError naming the setting if it does not parse


def test_an_invalid_secret_value_is_never_quoted() -> None:
    with pytest.raises(s.SettingsError, match="PERSONA_CATALOG_FEEDS=\\(hidden\\)") as err:
        s._convert("catalog_feeds", "https://feeds.example/x?token=tok-1234567890@0")
    assert "tok-1234567890" not in str(err.value)


def test_out_of_range_values_name_the_setting_and_the_range() -> None:
    with pytest.raises(s.SettingsError, match=r"PERSONA_HTTP_PORT='70000': must be 0..65535"):
        s._convert("http_port", "70000")
    with pytest.raises(s.SettingsError, match="PERSONA_LATENESS_DAYS='0': must be more than 0"):
        s._convert("lateness_days", "0")
    assert s._convert("retrain_promote", True) is True
    assert s._convert("retrain_hours", "") is None
    assert s._convert("block_items", "") == 6
