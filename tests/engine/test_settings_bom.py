"""A settings file saved with a UTF-8 byte order mark (what Windows editors write) reads as the
TOML it holds: tomllib refused it as 'Invalid statement (at line 1, column 1)', which names
neither the mark nor a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import SettingsError
from engine.settings import load_settings


def test_a_utf8_bom_before_the_settings_is_read_past(tmp_path: Path) -> None:
    cfg = tmp_path / "persona.toml"
    cfg.write_bytes(b"\xef\xbb\xbf[persona]\nhttp_port = 9123\n")
    assert load_settings({}, env={"PERSONA_CONFIG": str(cfg)}).http_port == 9123


def test_a_bom_inside_the_file_is_still_invalid_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "persona.toml"
    cfg.write_bytes(b"http_port = 9123\n\xef\xbb\xbfpartitions = 4\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings({}, env={"PERSONA_CONFIG": str(cfg)})
